//! The file store's I/O: reading, writing, removing and listing session files, under locks that hold
//! across processes. Everything here runs on Tokio's blocking pool.

use super::quota::Counters;
use super::FileConfig;
use crate::expiry::Timestamp;
use crate::format::Format;
use crate::id::StoreKey;
use crate::store::{Record, StoreError, Version};
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// Lock stripes; a power of two.
pub(super) const STRIPES: usize = 256;
/// A session file larger than this is not read (it cannot be one the layer wrote): it counts as corrupt.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Temporary files older than this are left over from a crash; cleanup removes them.
const STALE_TEMP: Duration = Duration::from_secs(60);
pub(super) const SESSION_EXT: &str = ".json";
pub(super) const CORRUPT_EXT: &str = ".corrupt";
const TEMP_EXT: &str = ".tmp";
/// The directory (inside the session directory) of the cross-process lock files.
const LOCK_DIR: &str = ".locks";

pub(super) const NAME: &str = "file";

/// What a session file holds now.
pub(super) enum Current {
    Missing,
    Live {
        /// Boxed: a record is large next to the other variants.
        record: Box<Record>,
        size: u64,
        version: Version,
    },
    Expired {
        size: u64,
    },
    Corrupt {
        size: u64,
        error: StoreError,
    },
}

/// The store's shared state: settings, locks, figures.
pub(super) struct Disk {
    pub(super) cfg: FileConfig,
    /// In-process stripes, taken before the stripe's lock file (which serialises processes).
    pub(super) locks: Vec<Arc<tokio::sync::Mutex<()>>>,
    pub(super) counters: Mutex<Counters>,
    temp_seq: AtomicU64,
}

pub(super) fn stripe(key: &StoreKey) -> usize {
    let h = key.as_str().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (h as usize) & (STRIPES - 1)
}

pub(super) fn backend(e: impl Into<crate::store::BoxError>) -> StoreError {
    StoreError::backend(NAME, e)
}

/// Maps an IO error of an operation on the directory (creating a temporary file, renaming, listing) to a
/// store error: the directory being gone or unwritable means the store is down, a full disk means it is
/// full, anything else is a failure of this operation.
pub(super) fn dir_error(e: io::Error) -> StoreError {
    match e.kind() {
        ErrorKind::NotFound
        | ErrorKind::PermissionDenied
        | ErrorKind::ReadOnlyFilesystem
        | ErrorKind::NotADirectory => StoreError::Unavailable {
            backend: NAME,
            source: Box::new(e),
        },
        _ => file_error(e),
    }
}

/// Maps an IO error reading, writing or removing one session's file: permission problems mean the
/// store cannot work, no space means it is full; anything else is this operation's failure.
pub(super) fn file_error(e: io::Error) -> StoreError {
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => StoreError::Unavailable {
            backend: NAME,
            source: Box::new(e),
        },
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => StoreError::Full {
            backend: NAME,
            detail: format!("the disk is full: {e}"),
        },
        _ => backend(e),
    }
}

/// The store key of a session file's name, if it is one that `format` could have written.
pub(super) fn session_key(name: &str, format: &dyn Format) -> Option<StoreKey> {
    StoreKey::parse(name.strip_suffix(SESSION_EXT)?)
        .ok()
        .filter(|k| format.accepts_key(k))
}

/// Holds a stripe's lock file exclusively (`flock`), so processes sharing the directory take one
/// session in turn; released when dropped.
struct FileLock(#[allow(dead_code)] Option<File>);

impl Disk {
    pub(super) fn new(cfg: FileConfig) -> Self {
        Disk {
            cfg,
            locks: (0..STRIPES)
                .map(|_| Arc::new(tokio::sync::Mutex::new(())))
                .collect(),
            counters: Mutex::new(Counters::default()),
            temp_seq: AtomicU64::new(0),
        }
    }

    fn path(&self, key: &StoreKey) -> PathBuf {
        self.cfg.dir.join(format!("{}{SESSION_EXT}", key.as_str()))
    }

    pub(super) fn counters(&self) -> MutexGuard<'_, Counters> {
        // Each update is a couple of integer writes; a poisoned lock holds consistent figures.
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cross-process lock of `key`'s stripe. The caller holds the stripe's in-process lock, so
    /// only one thread of this process waits here at a time.
    fn lock_file(&self, key: &StoreKey) -> Result<FileLock, StoreError> {
        #[cfg(unix)]
        {
            let path = self
                .cfg
                .dir
                .join(LOCK_DIR)
                .join(format!("{:02x}", stripe(key)));
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(dir_error)?;
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
                .map_err(|e| dir_error(e.into()))?;
            Ok(FileLock(Some(file)))
        }
        #[cfg(not(unix))]
        {
            let _ = key;
            Ok(FileLock(None))
        }
    }

    /// Runs `f` with `key`'s lock file held (the caller holds the in-process stripe).
    pub(super) fn with_lock<T>(
        &self,
        key: &StoreKey,
        f: impl FnOnce(&Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _held = self.lock_file(key)?;
        f(self)
    }

    /// Creates the directory (0700) and its lock directory if missing, and fills the counters from it.
    /// Errors name the directory: they are what an operator reads at startup.
    pub(super) fn scan_counters(&self) -> Result<(), StoreError> {
        let dir = &self.cfg.dir;
        let named = |e: io::Error| {
            let kind = e.kind();
            dir_error(io::Error::new(
                kind,
                format!("session directory {}: {e}", dir.display()),
            ))
        };
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(named)?;
        let meta = fs::metadata(dir).map_err(named)?;
        if !meta.is_dir() {
            return Err(named(io::Error::new(
                ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    dir = %dir.display(),
                    mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
                    "session directory is accessible to other users; 0700 is recommended"
                );
            }
        }
        builder.create(dir.join(LOCK_DIR)).map_err(named)?;
        self.probe().map_err(|e| match e {
            StoreError::Unavailable { source, .. } => StoreError::Unavailable {
                backend: NAME,
                source: format!(
                    "session directory {} is not writable: {source}",
                    dir.display()
                )
                .into(),
            },
            other => other,
        })?;
        let mut c = Counters::default();
        for entry in fs::read_dir(dir).map_err(named)? {
            let entry = entry.map_err(named)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if session_key(name, &*self.cfg.format).is_some() {
                if let Ok(m) = entry.metadata() {
                    c.files += 1;
                    c.bytes += m.len();
                }
            } else if name.ends_with(CORRUPT_EXT) {
                c.set_aside += 1;
            }
        }
        *self.counters() = c;
        tracing::debug!(dir = %dir.display(), files = c.files, bytes = c.bytes, "file session store ready");
        Ok(())
    }

    /// Reads a session file. The caller holds the session's lock.
    pub(super) fn current(&self, key: &StoreKey, now: Timestamp) -> Result<Current, StoreError> {
        let path = self.path(key);
        let not_ours = |size| Current::Corrupt {
            size,
            error: StoreError::Corrupt {
                detail: "session path is not a regular file",
                source: None,
            },
        };
        // Look before opening: a FIFO, socket or symlink planted under a session's name is not one of
        // ours, and opening a FIFO would block this thread.
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Ok(not_ours(0)),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Current::Missing),
            Err(e) => return Err(file_error(e)),
        }
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Current::Missing),
            Err(e) => return Err(file_error(e)),
        };
        let meta = file.metadata().map_err(file_error)?;
        let size = meta.len();
        if !meta.is_file() {
            return Ok(not_ours(0));
        }
        if size > MAX_FILE_BYTES {
            return Ok(Current::Corrupt {
                size,
                error: StoreError::Corrupt {
                    detail: "session file is larger than any session",
                    source: None,
                },
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(MAX_FILE_BYTES)
            .read_to_end(&mut bytes)
            .map_err(file_error)?;
        let format = &self.cfg.format;
        match format.decode(&bytes) {
            Ok(record) if record.is_expired(now) => Ok(Current::Expired { size }),
            Ok(record) => Ok(Current::Live {
                record: Box::new(record),
                size,
                version: format.version_rule().version_of(&bytes),
            }),
            Err(error) => Ok(Current::Corrupt { size, error }),
        }
    }

    /// Reads a session file, removing it when expired and setting it aside when corrupt. The caller
    /// holds the session's lock. Answers the live record (or tombstone), its size and version.
    pub(super) fn live(
        &self,
        key: &StoreKey,
        now: Timestamp,
    ) -> Result<Option<(Record, u64, Version)>, StoreError> {
        match self.current(key, now)? {
            Current::Missing => Ok(None),
            Current::Live {
                record,
                size,
                version,
            } => Ok(Some((*record, size, version))),
            Current::Expired { size } => {
                self.remove(key, size)?;
                Ok(None)
            }
            Current::Corrupt { size, error } => {
                self.set_aside(key, size, &error);
                Ok(None)
            }
        }
    }

    /// Removes a session file of `size` bytes (the caller holds its lock); `false` if it was not there.
    pub(super) fn remove(&self, key: &StoreKey, size: u64) -> Result<bool, StoreError> {
        match fs::remove_file(self.path(key)) {
            Ok(()) => {
                self.counters().forget(size);
                self.sync_dir()?;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(file_error(e)),
        }
    }

    /// Renames a corrupt session file to `<key>.corrupt`, logging it. Never fails the caller: if even
    /// the rename fails, the file stays and keeps counting as absent.
    fn set_aside(&self, key: &StoreKey, size: u64, error: &StoreError) {
        let from = self.path(key);
        let to = self.cfg.dir.join(format!("{}{CORRUPT_EXT}", key.as_str()));
        match fs::rename(&from, &to) {
            Ok(()) => {
                let mut c = self.counters();
                c.forget(size);
                c.set_aside += 1;
                tracing::warn!(store_key = %key, error = %error, moved_to = %to.display(), "corrupt session file set aside");
            }
            Err(e) => {
                tracing::warn!(store_key = %key, error = %error, rename_error = %e, "corrupt session file could not be set aside");
            }
        }
    }

    /// Writes `bytes` as `key`'s session file atomically: temporary file, optional fsync, rename.
    pub(super) fn write(&self, key: &StoreKey, bytes: &[u8]) -> Result<(), StoreError> {
        let seq = self.temp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self.cfg.dir.join(format!(
            ".{}.{}.{seq}{TEMP_EXT}",
            key.as_str(),
            std::process::id()
        ));
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut file = opts.open(&tmp).map_err(dir_error)?;
        let written = file
            .write_all(bytes)
            .and_then(|()| {
                if self.cfg.fsync {
                    file.sync_all()
                } else {
                    Ok(())
                }
            })
            .and_then(|()| {
                drop(file);
                fs::rename(&tmp, self.path(key))
            });
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(dir_error(e));
        }
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        if self.cfg.fsync {
            File::open(&self.cfg.dir)
                .and_then(|d| d.sync_all())
                .map_err(dir_error)?;
        }
        Ok(())
    }

    /// The session keys in the directory, sorted.
    pub(super) fn keys(&self) -> Result<Vec<StoreKey>, StoreError> {
        let mut keys = Vec::new();
        for entry in fs::read_dir(&self.cfg.dir).map_err(dir_error)? {
            let entry = entry.map_err(dir_error)?;
            if let Some(k) = entry
                .file_name()
                .to_str()
                .and_then(|n| session_key(n, &*self.cfg.format))
            {
                keys.push(k);
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Every live record (tombstones included) with its key, read without locks: files are replaced by
    /// rename, so an unlocked read sees a whole record.
    pub(super) fn records(&self, now: Timestamp) -> Result<Vec<(StoreKey, Record)>, StoreError> {
        Ok(self
            .keys()?
            .into_iter()
            .filter_map(|key| match self.current(&key, now) {
                Ok(Current::Live { record, .. }) => Some((key, *record)),
                _ => None,
            })
            .collect())
    }

    /// Removes expired and corrupt session files, files set aside earlier and stale temporary files.
    pub(super) fn cleanup(&self) -> Result<u64, StoreError> {
        let now = self.cfg.clock.now();
        let mut removed = 0;
        for entry in fs::read_dir(&self.cfg.dir).map_err(dir_error)? {
            let entry = entry.map_err(dir_error)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(key) = session_key(name, &*self.cfg.format) {
                // The same locks the hot path takes; this is a blocking-pool thread, so waiting is fine.
                let _guard = self.locks[stripe(&key)].blocking_lock();
                match self.with_lock(&key, |disk| disk.clean_one(&key, now)) {
                    Ok(true) => removed += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(store_key = %key, error = %e, "cleanup could not remove a session file")
                    }
                }
            } else if name.ends_with(CORRUPT_EXT) || self.stale_temp(name, &entry) {
                match fs::remove_file(entry.path()) {
                    Ok(()) => {
                        removed += 1;
                        if name.ends_with(CORRUPT_EXT) {
                            let mut c = self.counters();
                            c.set_aside = c.set_aside.saturating_sub(1);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(file = name, error = %e, "cleanup could not remove a file")
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Removes one session file if it has expired or is corrupt; answers whether it did.
    fn clean_one(&self, key: &StoreKey, now: Timestamp) -> Result<bool, StoreError> {
        let size = match self.current(key, now)? {
            Current::Expired { size } => size,
            Current::Corrupt { size, error } => {
                tracing::warn!(store_key = %key, error = %error, "removing corrupt session file");
                size
            }
            _ => return Ok(false),
        };
        self.remove(key, size)
    }

    fn stale_temp(&self, name: &str, entry: &fs::DirEntry) -> bool {
        name.starts_with('.')
            && name.ends_with(TEMP_EXT)
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age >= STALE_TEMP)
    }

    /// Writes and removes a small file in the directory: whether the store can write now.
    pub(super) fn probe(&self) -> Result<(), StoreError> {
        let seq = self.temp_seq.fetch_add(1, Ordering::Relaxed);
        let path = self
            .cfg
            .dir
            .join(format!(".health.{}.{seq}{TEMP_EXT}", std::process::id()));
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let written = opts
            .open(&path)
            .and_then(|mut f| f.write_all(&[b' '; 512]).and_then(|()| f.sync_data()));
        let _ = fs::remove_file(&path);
        written.map_err(dir_error)
    }
}
