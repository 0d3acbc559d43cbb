//! The file store's quota: how many session files and bytes it holds, kept in memory (counted once
//! from the directory, then updated by every write) so a create never lists the directory.

use crate::store::StoreError;
use std::path::Path;

/// Default [`FileConfig::with_max_files`](super::FileConfig::with_max_files).
pub(super) const DEFAULT_MAX_FILES: u64 = 100_000;
/// Default [`FileConfig::with_max_bytes`](super::FileConfig::with_max_bytes): 1 GiB.
pub(super) const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// The figures.
#[derive(Default, Debug, Clone, Copy)]
pub(super) struct Counters {
    pub(super) files: u64,
    pub(super) bytes: u64,
    /// Corrupt files set aside (`*.corrupt`), waiting for cleanup.
    pub(super) set_aside: u64,
}

/// The limits.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub(super) files: u64,
    pub(super) bytes: u64,
}

impl Counters {
    fn full(&self, what: &str, limits: Limits, dir: &Path) -> StoreError {
        StoreError::Full {
            backend: super::disk::NAME,
            detail: format!(
                "{what}: {} files, {} bytes in {} (limits: {} files, {} bytes)",
                self.files,
                self.bytes,
                dir.display(),
                limits.files,
                limits.bytes
            ),
        }
    }

    /// Reserves room for a new file of `size` bytes, or refuses.
    pub(super) fn reserve_new(
        &mut self,
        size: u64,
        limits: Limits,
        dir: &Path,
    ) -> Result<(), StoreError> {
        if self.files >= limits.files {
            return Err(self.full("session file limit reached", limits, dir));
        }
        if self.bytes.saturating_add(size) > limits.bytes {
            return Err(self.full("session byte limit reached", limits, dir));
        }
        self.files += 1;
        self.bytes += size;
        Ok(())
    }

    /// Accounts for an existing file going from `old` to `new` bytes. Growth may use a reserve of a
    /// tenth of the byte quota above it, so existing sessions keep working when new ones are refused.
    pub(super) fn reserve_growth(
        &mut self,
        old: u64,
        new: u64,
        limits: Limits,
        dir: &Path,
    ) -> Result<(), StoreError> {
        if new > old {
            let hard = limits.bytes.saturating_add(limits.bytes / 10);
            if self.bytes.saturating_add(new - old) > hard {
                return Err(self.full("session byte limit and reserve reached", limits, dir));
            }
        }
        self.bytes = self.bytes.saturating_add(new).saturating_sub(old);
        Ok(())
    }

    /// Undoes [`Counters::reserve_growth`] after a failed write.
    pub(super) fn undo_growth(&mut self, old: u64, new: u64) {
        self.bytes = self.bytes.saturating_add(old).saturating_sub(new);
    }

    /// Undoes [`Counters::reserve_new`] after a failed write.
    pub(super) fn release(&mut self, size: u64) {
        self.forget(size);
    }

    /// A file of `size` bytes went.
    pub(super) fn forget(&mut self, size: u64) {
        self.files = self.files.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_files_stop_at_the_quota_while_growth_may_use_a_reserve() {
        let limits = Limits {
            files: 2,
            bytes: 100,
        };
        let dir = Path::new("/tmp/x");
        let mut c = Counters::default();
        c.reserve_new(40, limits, dir).unwrap();
        c.reserve_new(40, limits, dir).unwrap();
        let e = c.reserve_new(1, limits, dir).unwrap_err();
        assert!(e.is_full(), "{e}");
        // 80 + 25 = 105: over the quota, within its tenth of reserve.
        c.reserve_growth(40, 65, limits, dir).unwrap();
        assert!(c.reserve_growth(65, 71, limits, dir).is_err());
        c.undo_growth(40, 65);
        assert_eq!((c.files, c.bytes), (2, 80));
        c.forget(40);
        assert_eq!((c.files, c.bytes), (1, 40));
    }
}
