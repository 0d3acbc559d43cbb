//! [`FileStore`]: one file per session in a directory, for a single server or as the fallback when
//! Redis is away.
//!
//! ```no_run
//! # async fn run() -> Result<(), sessionforge::store::StoreError> {
//! use sessionforge::{SessionLayer, store::FileStore};
//! use std::time::Duration;
//!
//! let store = FileStore::builder("./sessions")
//!     .with_fsync(true)
//!     .with_max_files(50_000)
//!     .with_max_bytes(256 * 1024 * 1024)
//!     .build();
//! store.init().await?; // optional: fail at startup rather than on the first request
//! let reaper = store.spawn_reaper(Duration::from_secs(600));
//! let layer = SessionLayer::new(store);
//! // ... serve; on shutdown:
//! reaper.abort();
//! # Ok(()) }
//! ```
//!
//! # On disk
//!
//! * The directory (default `./sessions`) is created on first use with mode `0700`.
//! * A session lives in `<store key>.json`, mode `0600`, holding the record as the store's
//!   [format](crate::format) encodes it: for the native format readable JSON with its expiry inside
//!   (`"expires"`, milliseconds since the epoch). The native store key is the SHA-256 digest of the
//!   client's token, so nothing a client sends ever becomes part of a path, and a directory listing
//!   reveals no usable cookie.
//! * Every write goes to a temporary file in the same directory (`.<key>.<pid>.<n>.tmp`) which is then
//!   renamed over the session file: a reader sees the old record or the new one, never half of one.
//!   [`FileConfig::with_fsync`] also flushes the file and the directory, so a power cut cannot lose an
//!   acknowledged write (at the cost of a few milliseconds per write on most disks).
//! * A file that is not a session record (truncated, edited by hand, a directory in its place) counts as
//!   absent: it is logged and renamed to `<key>.corrupt`, counted apart in the usage figures
//!   (`setAside`), and removed by [`SessionStore::cleanup`].
//! * Files the store does not recognise are never touched.
//!
//! # Concurrency
//!
//! Operations on one session run one at a time: under an in-process lock (one of 256 stripes, chosen
//! by the key) and an exclusive `flock` of that stripe's lock file in `.locks/`, so several processes
//! sharing the directory (instances failed over to one volume) take a session in turn too. A save reads
//! the current file, applies the request's [`ChangeSet`] to it and writes the result without losing a
//! concurrent writer's keys, and never recreates a session deleted meanwhile ([`Saved::Gone`]). The
//! version is read from the file's first bytes ([`VersionRule`](crate::store::VersionRule)).
//!
//! # Quota
//!
//! Creating a session beyond [`FileConfig::with_max_files`] (default 100,000) or
//! [`FileConfig::with_max_bytes`] (default 1 GiB) fails with [`StoreError::Full`], so a flood of new
//! sessions cannot fill the disk. Existing sessions keep working: they may grow into a reserve of a
//! tenth of the byte quota above it. The figures are kept in memory, counted once from the directory on
//! first use and updated by every write. A disk that really is full is [`StoreError::Full`] too, and
//! health reports the store degraded while it lasts.
//!
//! # Expiry
//!
//! Expiry is checked against the store's clock ([`FileConfig::with_clock`]) whenever a file is read: an
//! expired session is absent and its file is removed. Files nobody asks for again are removed by
//! [`SessionStore::cleanup`] or periodically by [`FileStore::spawn_reaper`].
//!
//! # Blocking IO
//!
//! File IO runs on Tokio's blocking pool with `std::fs`, one `spawn_blocking` per operation (read, merge,
//! write, rename and fsync together). The session's lock guard moves into the blocking task, so the lock
//! is held until the IO is done even when the request that started it is cancelled.
//!
//! # Errors
//!
//! * The directory missing, not a directory, not writable or on a read-only file system:
//!   [`StoreError::Unavailable`], naming the directory. Nothing will work until an operator steps in;
//!   a failover store switches, the layer answers 503, health says why.
//! * No space left: [`StoreError::Full`] (503, health degraded). Any other IO failure:
//!   [`StoreError::Backend`].
//! * Corrupt or expired files are never errors: they are absent.
//!
//! # Pitfalls
//!
//! * The reaper holds only a weak reference to the store and ends by itself when the store is dropped;
//!   graceful shutdown should still stop it: abort the handle of [`FileStore::spawn_reaper`], or use
//!   [`FileStore::spawn_reaper_until`] with [`Shutdown::signal`](crate::shutdown::Shutdown::signal) and
//!   register it with the [`Shutdown`](crate::shutdown::Shutdown).
//! * Point each store at its own directory: cleanup removes `*.corrupt` files and stale `*.tmp` files
//!   it finds there.

mod disk;
mod quota;

use quota::{DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES};

use super::provided::target;
use super::{
    sort_user_sessions, ChangeSet, Created, Health, Loaded, Page, Record, Renewed, Replaced, Saved,
    SessionStore, StoreError, Summary, Usage, Version,
};
use crate::expiry::{Clock, SharedClock};
use crate::format::SharedFormat;
use crate::id::StoreKey;
use disk::{backend, stripe, Current, Disk, NAME};
use quota::Limits;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::OwnedMutexGuard;

/// Settings of a [`FileStore`]: gathered first, then [`built`](FileConfig::build) once.
#[derive(Clone)]
#[must_use]
pub struct FileConfig {
    dir: PathBuf,
    fsync: bool,
    limits: Limits,
    clock: SharedClock,
    format: SharedFormat,
}

impl std::fmt::Debug for FileConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileConfig")
            .field("dir", &self.dir)
            .field("fsync", &self.fsync)
            .field("max_files", &self.limits.files)
            .field("max_bytes", &self.limits.bytes)
            .field("format", &self.format.name())
            .finish_non_exhaustive()
    }
}

impl FileConfig {
    /// Whether every write is flushed to disk (the file, then the directory after the rename) before it
    /// is acknowledged (default `false`: the OS writes it back within seconds; a crash of the process
    /// alone never loses a write either way).
    pub fn with_fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// The most session files the store creates (default 100,000; `u64::MAX` for no limit).
    pub fn with_max_files(mut self, max: u64) -> Self {
        self.limits.files = max;
        self
    }

    /// The most bytes of session files before creating new sessions is refused (default 1 GiB;
    /// `u64::MAX` for no limit). Existing sessions may still grow by a tenth of this.
    pub fn with_max_bytes(mut self, max: u64) -> Self {
        self.limits.bytes = max;
        self
    }

    /// Reads time from `clock` to decide expiry (tests use
    /// [`ManualClock`](crate::expiry::ManualClock)); the layer over the store reads it too.
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Encodes records in `format` (default native): the express format writes session-file-store's
    /// layout, `<sid>.json`.
    pub fn with_format(mut self, format: SharedFormat) -> Self {
        self.format = format;
        self
    }

    /// The store. Does no IO: the directory is created on first use, or by [`FileStore::init`].
    pub fn build(self) -> FileStore {
        FileStore {
            inner: Arc::new(Inner {
                disk: Disk::new(self),
                ready: tokio::sync::OnceCell::new(),
            }),
        }
    }
}

struct Inner {
    disk: Disk,
    /// Set once the directory exists and the counters have been filled from it.
    ready: tokio::sync::OnceCell<()>,
}

/// Sessions as files in a directory. Cheap to clone; clones share locks and counters.
///
/// See the [module docs](self) for the layout, locking, quota and error mapping.
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("config", &self.inner.disk.cfg)
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// A store in `dir` with the default settings.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::builder(dir).build()
    }

    /// Settings for a store in `dir`, created (mode `0700`) on first use if missing. Defaults: no
    /// fsync, at most 100,000 files and 1 GiB, the system clock,
    /// the native format.
    pub fn builder(dir: impl Into<PathBuf>) -> FileConfig {
        FileConfig {
            dir: dir.into(),
            fsync: false,
            limits: Limits {
                files: DEFAULT_MAX_FILES,
                bytes: DEFAULT_MAX_BYTES,
            },
            clock: crate::expiry::system_clock(),
            format: crate::format::native(),
        }
    }

    /// The session directory.
    pub fn directory(&self) -> &Path {
        &self.inner.disk.cfg.dir
    }

    /// Creates the directory if needed, checks that a file can be written there and counts what it
    /// holds. Every operation does this on first use; call it at startup to find a missing or
    /// unwritable directory there (the error names the directory) rather than on a request.
    pub async fn init(&self) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        self.inner
            .ready
            .get_or_try_init(|| blocking(move || inner.disk.scan_counters()))
            .await
            .map(|_| ())
    }

    /// Starts a task that runs [`SessionStore::cleanup`] every `every` (expired sessions, corrupt and
    /// stale temporary files), logging what it removed or why it failed. The first pass runs after
    /// `every`. Must be called within a Tokio runtime.
    ///
    /// The task runs until aborted, or until every clone of the store is dropped (it holds only a weak
    /// reference). With the crate's [`Shutdown`](crate::shutdown::Shutdown), prefer
    /// [`FileStore::spawn_reaper_until`], which ends by itself so a drain reports clean.
    pub fn spawn_reaper(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        self.spawn_reaper_until(every, std::future::pending())
    }

    /// Like [`FileStore::spawn_reaper`], but the task also ends when `stop` resolves (between passes):
    ///
    /// ```no_run
    /// # async fn run() {
    /// use sessionforge::{shutdown::Shutdown, store::FileStore};
    /// use std::time::Duration;
    ///
    /// let shutdown = Shutdown::new();
    /// let store = FileStore::new("./sessions");
    /// shutdown.register(store.spawn_reaper_until(Duration::from_secs(600), shutdown.signal()));
    /// // ... serve until shutdown.signal() resolves, then:
    /// assert!(shutdown.drain(Duration::from_secs(5)).await.clean());
    /// # }
    /// ```
    pub fn spawn_reaper_until(
        &self,
        every: Duration,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let every = every.max(Duration::from_millis(10));
        tokio::spawn(async move {
            tokio::pin!(stop);
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate; the first pass runs after `every`
            loop {
                tokio::select! {
                    _ = &mut stop => {
                        tracing::debug!("session file reaper stopped");
                        return;
                    }
                    _ = tick.tick() => {}
                }
                let Some(inner) = weak.upgrade() else {
                    tracing::debug!("file session store dropped; reaper stops");
                    return;
                };
                let store = FileStore { inner };
                match store.cleanup().await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(removed = n, dir = %store.directory().display(), "reaped session files")
                    }
                    Err(e) => tracing::warn!(error = %e, "session file reaper failed"),
                }
            }
        })
    }

    async fn ready(&self) -> Result<(), StoreError> {
        if self.inner.ready.initialized() {
            return Ok(());
        }
        self.init().await
    }

    /// Runs `f` on the blocking pool with the locks of `keys` (one or two, deduplicated, taken in
    /// stripe order so two operations never wait on each other) held until it is done.
    async fn locked<T: Send + 'static>(
        &self,
        keys: &[StoreKey],
        f: impl FnOnce(&Disk, crate::expiry::Timestamp) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.ready().await?;
        let disk = &self.inner.disk;
        let mut stripes: Vec<usize> = keys.iter().map(stripe).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards: Vec<OwnedMutexGuard<()>> = Vec::with_capacity(stripes.len());
        for s in &stripes {
            guards.push(disk.locks[*s].clone().lock_owned().await);
        }
        // One lock file per stripe, in the same order.
        let mut lock_keys: Vec<StoreKey> = keys.to_vec();
        lock_keys.sort_by_key(stripe);
        lock_keys.dedup_by_key(|k| stripe(k));
        let inner = self.inner.clone();
        blocking(move || {
            let disk = &inner.disk;
            let now = disk.cfg.clock.now();
            let res = match lock_keys.as_slice() {
                [a] => disk.with_lock(a, |d| f(d, now)),
                [a, b] => disk.with_lock(a, |d| d.with_lock(b, |d| f(d, now))),
                _ => f(disk, now),
            };
            drop(guards);
            res
        })
        .await
    }

    /// Runs `f` on the blocking pool without a session lock (listing, counting, cleanup).
    async fn unlocked<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Disk) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.ready().await?;
        let inner = self.inner.clone();
        blocking(move || f(&inner.disk)).await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(backend)?
}

impl Disk {
    /// Writes `record` over the live file of `old_size` bytes holding `old`, within the quota's
    /// reserve. The record written is always later than the one it replaces (its `last_access` is the
    /// file's version), whatever the caller passed.
    fn overwrite(
        &self,
        key: &StoreKey,
        old_size: u64,
        old: &Record,
        mut record: Record,
    ) -> Result<(), StoreError> {
        record.last_access = record.last_access.max(old.last_access.next());
        let bytes = self.cfg.format.encode(&record);
        let new_size = bytes.len() as u64;
        self.counters()
            .reserve_growth(old_size, new_size, self.cfg.limits, &self.cfg.dir)?;
        self.write(key, &bytes).inspect_err(|_| {
            // The old file is still in place.
            self.counters().undo_growth(old_size, new_size);
        })
    }

    /// Writes `record` as a new file, within the quota.
    fn write_new(&self, key: &StoreKey, record: &Record) -> Result<(), StoreError> {
        let bytes = self.cfg.format.encode(record);
        let size = bytes.len() as u64;
        self.counters()
            .reserve_new(size, self.cfg.limits, &self.cfg.dir)?;
        self.write(key, &bytes)
            .inspect_err(|_| self.counters().release(size))
    }
}

impl SessionStore for FileStore {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Loaded>, StoreError> {
        let key = *key;
        self.locked(&[key], move |disk, now| {
            Ok(disk
                .live(&key, now)?
                .map(|(record, _, version)| Loaded::new(record, version)))
        })
        .await
    }

    async fn create(&self, key: &StoreKey, record: &Record) -> Result<Created, StoreError> {
        let key = *key;
        let record = record.clone();
        self.locked(&[key], move |disk, now| {
            if disk.live(&key, now)?.is_some() {
                return Ok(Created::Exists);
            }
            // `live` removed an expired or corrupt file: this is a new file either way.
            disk.write_new(&key, &record)?;
            Ok(Created::Created)
        })
        .await
    }

    async fn replace(
        &self,
        key: &StoreKey,
        expected: &Version,
        record: Option<&Record>,
    ) -> Result<Replaced, StoreError> {
        let key = *key;
        let expected = expected.clone();
        let record = record.cloned();
        self.locked(&[key], move |disk, now| {
            let Some((current, size, version)) = disk.live(&key, now)? else {
                return Ok(Replaced::Gone);
            };
            if version != expected {
                return Ok(Replaced::Changed);
            }
            match record {
                Some(r) => disk.overwrite(&key, size, &current, r)?,
                None => {
                    disk.remove(&key, size)?;
                }
            }
            Ok(Replaced::Replaced)
        })
        .await
    }

    async fn delete(&self, key: &StoreKey) -> Result<bool, StoreError> {
        let key = *key;
        self.locked(&[key], move |disk, now| match disk.current(&key, now)? {
            Current::Missing => Ok(false),
            Current::Live { record, size, .. } => Ok(disk.remove(&key, size)? && !record.tombstone),
            Current::Expired { size } | Current::Corrupt { size, .. } => {
                disk.remove(&key, size)?;
                Ok(false)
            }
        })
        .await
    }

    /// Reads, merges and writes under the session's locks: one step, whoever else writes.
    async fn save(
        &self,
        key: &StoreKey,
        base: &Version,
        ours: &Arc<Record>,
        changes: &ChangeSet,
    ) -> Result<Saved, StoreError> {
        let key = *key;
        let base = base.clone();
        let ours = ours.clone();
        let changes = changes.clone();
        self.locked(&[key], move |disk, now| {
            let Some((current, size, version)) = disk.live(&key, now)? else {
                return Ok(Saved::Gone);
            };
            if current.tombstone {
                return Ok(Saved::Gone);
            }
            let record = if version == base {
                Arc::unwrap_or_clone(ours)
            } else {
                crate::metrics::save_conflict();
                let mut merged = current.clone();
                merged.merge(&changes, &ours);
                merged
            };
            if target(&record, &changes).is_none() {
                disk.remove(&key, size)?;
                return Ok(Saved::Emptied);
            }
            disk.overwrite(&key, size, &current, record)?;
            Ok(Saved::Saved)
        })
        .await
    }

    /// Moves the session under both keys' locks: the new file is written before the old one goes.
    async fn renew(
        &self,
        old: &StoreKey,
        new: &StoreKey,
        base: &Version,
        ours: &Arc<Record>,
        changes: &ChangeSet,
    ) -> Result<Renewed, StoreError> {
        let (old, new) = (*old, *new);
        let base = base.clone();
        let ours = ours.clone();
        let changes = changes.clone();
        self.locked(&[old, new], move |disk, now| {
            if disk.live(&new, now)?.is_some() {
                return Err(StoreError::Conflict);
            }
            let Some((mut current, size, version)) = disk.live(&old, now)? else {
                return Ok(Renewed::Gone);
            };
            if current.tombstone {
                return Ok(Renewed::Gone);
            }
            let record = if version == base {
                Arc::unwrap_or_clone(ours)
            } else {
                current.merge(&changes, &ours);
                current
            };
            disk.write_new(&new, &record)?;
            disk.remove(&old, size)?;
            Ok(Renewed::Renewed)
        })
        .await
    }

    /// Reads every session file (O(files)): the file store keeps no per-user index, so there is none
    /// to fall out of step with the sessions.
    async fn user_sessions(&self, user: &str) -> Result<Vec<Summary>, StoreError> {
        let user = user.to_owned();
        self.unlocked(move |disk| {
            let now = disk.cfg.clock.now();
            let mut sessions: Vec<Summary> = disk
                .records(now)?
                .into_iter()
                .filter(|(_, r)| !r.tombstone && r.user.as_deref() == Some(user.as_str()))
                .map(|(k, r)| r.summary(k))
                .collect();
            sort_user_sessions(&mut sessions);
            Ok(sessions)
        })
        .await
    }

    /// Reads every session file to count the live ones: O(files), meant for admin and stats calls.
    async fn count(&self) -> Result<u64, StoreError> {
        self.unlocked(|disk| {
            let now = disk.cfg.clock.now();
            Ok(disk
                .records(now)?
                .iter()
                .filter(|(_, r)| !r.tombstone)
                .count() as u64)
        })
        .await
    }

    /// Pages in key order (tombstones included, marked); the cursor is the last key of the previous
    /// page. Lists the directory's names and reads only the files of this page.
    async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        let after = match cursor.map(StoreKey::parse) {
            None => None,
            Some(Ok(k)) => Some(k),
            Some(Err(_)) => return Err(StoreError::InvalidCursor),
        };
        self.unlocked(move |disk| {
            let now = disk.cfg.clock.now();
            let mut sessions = Vec::new();
            let mut more = false;
            for key in disk.keys()? {
                if after.as_ref().is_some_and(|a| &key <= a) {
                    continue;
                }
                if let Ok(Current::Live { record, .. }) = disk.current(&key, now) {
                    if sessions.len() == limit {
                        more = true;
                        break;
                    }
                    sessions.push(record.summary(key));
                }
            }
            let next = more
                .then(|| sessions.last().map(|s: &Summary| s.id.as_str().to_owned()))
                .flatten();
            Ok(Page::new(sessions, next))
        })
        .await
    }

    /// Removes expired session files, corrupt ones (set aside or not) and temporary files left by a crash
    /// (older than a minute); answers how many files went.
    async fn cleanup(&self) -> Result<u64, StoreError> {
        self.unlocked(|disk| disk.cleanup()).await
    }

    /// The in-memory figures: session files (live or not yet reaped), their bytes, and corrupt files
    /// set aside.
    async fn usage(&self) -> Result<Usage, StoreError> {
        self.ready().await?;
        let disk = &self.inner.disk;
        let c = *disk.counters();
        Ok(Usage::new("diskUsage")
            .with("directory", disk.cfg.dir.display().to_string())
            .with("files", c.files)
            .with("bytes", c.bytes)
            .with("human", super::human_bytes(c.bytes))
            .with("setAside", c.set_aside))
    }

    /// Ok when a small file can be written in the directory; degraded when the disk is full;
    /// unavailable when the directory cannot be written. The public reason names no path.
    async fn health(&self) -> Health {
        let probe = async {
            self.ready().await?;
            self.unlocked(|disk| disk.probe()).await
        };
        let health = Health::ok(NAME);
        match probe.await {
            Ok(()) => health,
            Err(e) if e.is_full() => health.degraded("store full").with_detail(e.to_string()),
            Err(e) => health
                .unavailable("session directory not writable")
                .with_detail(e.to_string()),
        }
    }

    fn format(&self) -> SharedFormat {
        self.inner.disk.cfg.format.clone()
    }

    fn clock(&self) -> SharedClock {
        self.inner.disk.cfg.clock.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::disk::{dir_error, file_error, session_key, STRIPES};
    use super::*;
    use crate::expiry::{ManualClock, SystemClock};
    use crate::id::Token;
    use crate::store::test_record as record;
    use std::io::{self, ErrorKind};

    #[test]
    fn only_well_formed_session_names_are_session_files() {
        let k = Token::generate().store_key();
        let native = crate::format::native();
        let key = |name: &str| session_key(name, &*native);
        assert_eq!(key(&format!("{k}.json")), Some(k));
        assert_eq!(key(&format!("{k}.corrupt")), None);
        assert_eq!(key(&format!(".{k}.1.2.tmp")), None);
        assert_eq!(key("../x.json"), None);
        assert_eq!(key(".json"), None);
        // A name the format could not have written: someone else's file.
        assert_eq!(key("notes.json"), None);
    }

    #[test]
    fn stripes_stay_in_range() {
        for _ in 0..100 {
            assert!(stripe(&Token::generate().store_key()) < STRIPES);
        }
    }

    #[test]
    fn an_unwritable_directory_is_unavailable_and_a_full_disk_full() {
        assert!(dir_error(io::Error::from(ErrorKind::NotFound)).is_unavailable());
        assert!(dir_error(io::Error::from(ErrorKind::PermissionDenied)).is_unavailable());
        assert!(dir_error(io::Error::from(ErrorKind::StorageFull)).is_full());
        assert!(file_error(io::Error::from(ErrorKind::StorageFull)).is_full());
        assert!(!file_error(io::Error::from(ErrorKind::NotFound)).is_unavailable());
    }

    #[tokio::test]
    async fn usage_counters_follow_creates_saves_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let now = SystemClock.now();
        let (a, b) = (Token::generate().store_key(), Token::generate().store_key());
        let rec = record(now, Duration::from_secs(60));
        store.create(&a, &rec).await.unwrap();
        store.create(&b, &rec).await.unwrap();
        let u = store.usage().await.unwrap();
        assert_eq!(u.section, "diskUsage");
        assert_eq!(u.figures["files"], 2);
        assert_eq!(u.figures["bytes"], 2 * rec.to_json().len() as u64);
        assert!(store.delete(&a).await.unwrap());
        assert!(!store.delete(&a).await.unwrap());
        let u = store.usage().await.unwrap();
        assert_eq!(u.figures["files"], 1);
        assert_eq!(u.figures["bytes"], rec.to_json().len() as u64);
        // A fresh store over the same directory counts the same.
        let again = FileStore::new(dir.path());
        assert_eq!(again.usage().await.unwrap(), u);
    }

    #[tokio::test]
    async fn two_stores_on_one_directory_take_a_session_in_turn() {
        // Two stores stand for two processes: each has its own in-process locks, so only the lock
        // files keep their read-merge-write steps apart.
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::starting_now();
        let a = FileStore::builder(dir.path())
            .with_clock(clock.clone())
            .build();
        let b = FileStore::builder(dir.path())
            .with_clock(clock.clone())
            .build();
        let key = Token::generate().store_key();
        let rec = record(clock.now(), Duration::from_secs(600));
        a.create(&key, &rec).await.unwrap();
        let base = a.load(&key).await.unwrap().unwrap().version;
        let mut tasks = Vec::new();
        for i in 0..40 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (rec, base) = (rec.clone(), base.clone());
            tasks.push(tokio::spawn(async move {
                let mut changes = ChangeSet::default();
                changes.increments.insert("n".into(), 1);
                store.save(&key, &base, &Arc::new(rec), &changes).await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), Saved::Saved);
        }
        let n = &a.load(&key).await.unwrap().unwrap().record.data["n"];
        // The first save wrote `ours` ({"n":1}) as it was; the 39 after it each added one.
        assert_eq!(n, &serde_json::json!(40));
    }

    #[cfg(feature = "test-util")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_file_store_keeps_the_whole_contract() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::starting_now();
        let store = FileStore::builder(dir.path())
            .with_clock(clock.clone())
            .build();
        crate::store::conformance::Conformance::new(store)
            .with_clock(clock)
            .with_user_index()
            .with_listing()
            .with_cleanup()
            .with_tombstones()
            .run()
            .await;
    }
}
