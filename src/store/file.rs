//! [`FileStore`]: one JSON file per session in a directory, for a single server or as the fallback when
//! Redis is away.
//!
//! ```no_run
//! # async fn run() -> Result<(), sessionforge::store::StoreError> {
//! use sessionforge::{SessionLayer, store::FileStore};
//! use std::time::Duration;
//!
//! let store = FileStore::new("./sessions")
//!     .with_fsync(true)
//!     .with_max_files(50_000)
//!     .with_max_bytes(256 * 1024 * 1024);
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
//! * A session lives in `<store key>.json`, mode `0600`, holding [`Record::to_json`]: readable JSON with
//!   its expiry inside (`"expires"`, milliseconds since the epoch). The store key is the SHA-256 digest
//!   of the client's token (43 base64url characters, see [`StoreKey`]), so nothing a client sends ever
//!   becomes part of a path, and a directory listing reveals no usable cookie.
//! * Every write goes to a temporary file in the same directory (`.<key>.<pid>.<n>.tmp`) which is then
//!   renamed over the session file: a reader sees the old record or the new one, never half of one.
//!   [`FileStore::with_fsync`] also flushes the file and the directory, so a power cut cannot lose an
//!   acknowledged write (at the cost of a few milliseconds per write on most disks).
//! * A file that is not a session record (truncated, edited by hand, a directory in its place) counts as
//!   absent: it is logged and renamed to `<key>.corrupt`, and [`ManagedStore::cleanup`] removes it.
//! * Files the store does not recognise are never touched.
//!
//! # Concurrency
//!
//! Operations on one session run one at a time under an in-process lock (one of 256 stripes, chosen by
//! the key), so a save reads the current file, applies the request's [`ChangeSet`] to it and writes the
//! result without losing a concurrent writer's keys; a save never recreates a session deleted
//! meanwhile ([`Saved::Gone`]). The version handed out by `load` is a digest of the file's bytes.
//!
//! The locks are per process: two processes (or two `FileStore` values) sharing a directory never see
//! torn files, but their concurrent saves to one session may lose one writer's change. Share sessions
//! between processes with Redis.
//!
//! # Quota
//!
//! Creating a session beyond [`FileStore::with_max_files`] (default 100,000) or
//! [`FileStore::with_max_bytes`] (default 1 GiB) fails with [`StoreError::QuotaExceeded`], so a flood of
//! new sessions cannot fill the disk. Existing sessions keep working: they may grow into a reserve of a
//! tenth of the byte quota above it, and only a save that would pass that too is refused (the stored
//! session is left as it was). The figures are kept in memory, counted once from the directory on first
//! use and updated by every write, so a create does not list the directory. Files changed behind the
//! store's back make them drift until the next start.
//!
//! # Expiry
//!
//! Expiry is checked against the store's clock ([`FileStore::with_clock`]) whenever a file is read: an
//! expired session is absent and its file is removed. Files nobody asks for again are removed by
//! [`ManagedStore::cleanup`] or periodically by [`FileStore::spawn_reaper`].
//!
//! # Blocking IO
//!
//! File IO runs on Tokio's blocking pool with `std::fs`, one `spawn_blocking` per operation (read, merge,
//! write, rename and fsync together), rather than `tokio::fs`, which hops to the pool for every single
//! call. The session's lock guard moves into the blocking task, so the lock is held until the IO is
//! done even when the request that started it is cancelled.
//!
//! # Errors
//!
//! * The directory missing, not a directory, not writable or on a read-only file system:
//!   [`StoreError::Unavailable`]. Nothing will work until an operator steps in; the store reports itself
//!   down (a failover layer switches, the layer answers 503, health says why).
//! * Any other IO failure, including a full disk: [`StoreError::Backend`]. Reads, deletes and cleanup
//!   still work then, so the store is degraded, not gone; the request fails with 500 and keeps its source.
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

use super::{
    ChangeSet, Created, Loaded, ManagedStore, Page, Record, Saved, SessionStore, StoreError,
    StoreHealth, StoreKind, Summary, Usage, Version,
};
use crate::expiry::{Clock, SharedClock, SystemClock, Timestamp};
use crate::id::StoreKey;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};
use tokio::sync::OwnedMutexGuard;

/// Default [`FileStore::with_max_files`].
pub const DEFAULT_MAX_FILES: u64 = 100_000;
/// Default [`FileStore::with_max_bytes`]: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// Lock stripes; a power of two.
const STRIPES: usize = 256;
/// A session file larger than this is not read (it cannot be one the layer wrote): it counts as corrupt.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Temporary files older than this are left over from a crash; cleanup removes them.
const STALE_TEMP: Duration = Duration::from_secs(60);
const SESSION_EXT: &str = ".json";
const CORRUPT_EXT: &str = ".corrupt";
const TEMP_EXT: &str = ".tmp";

#[derive(Clone)]
struct Config {
    dir: PathBuf,
    fsync: bool,
    max_files: u64,
    max_bytes: u64,
    clock: SharedClock,
}

#[derive(Default, Debug, Clone, Copy)]
struct Counters {
    files: u64,
    bytes: u64,
}

struct Inner {
    cfg: Config,
    locks: Vec<Arc<tokio::sync::Mutex<()>>>,
    /// Set once the directory exists and the counters have been filled from it.
    ready: tokio::sync::OnceCell<()>,
    counters: Mutex<Counters>,
    temp_seq: AtomicU64,
}

/// Sessions as JSON files in a directory. Cheap to clone; clones share locks and counters.
///
/// See the [module docs](self) for the layout, locking, quota and error mapping.
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.inner.cfg;
        f.debug_struct("FileStore")
            .field("dir", &c.dir)
            .field("fsync", &c.fsync)
            .field("max_files", &c.max_files)
            .field("max_bytes", &c.max_bytes)
            .finish_non_exhaustive()
    }
}

impl Default for FileStore {
    /// A store in `./sessions`.
    fn default() -> Self {
        FileStore::new("./sessions")
    }
}

/// What a session file holds now.
enum Current {
    Missing,
    Live {
        record: Record,
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

fn digest(bytes: &[u8]) -> Version {
    Version::new(URL_SAFE_NO_PAD.encode(&Sha256::digest(bytes)[..18]))
}

fn stripe(key: &StoreKey) -> usize {
    // The key is itself a digest, so any few of its characters spread evenly.
    let h = key.as_str().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (h as usize) & (STRIPES - 1)
}

fn backend(e: impl Into<super::BoxError>) -> StoreError {
    StoreError::Backend {
        backend: StoreKind::File,
        source: e.into(),
    }
}

/// Maps an IO error of an operation on the directory (creating a temporary file, renaming, listing) to a
/// store error: the directory being gone or unwritable means the store is down, anything else (a full
/// disk included) is a failure of this operation.
fn dir_error(e: io::Error) -> StoreError {
    match e.kind() {
        ErrorKind::NotFound
        | ErrorKind::PermissionDenied
        | ErrorKind::ReadOnlyFilesystem
        | ErrorKind::NotADirectory => StoreError::Unavailable {
            backend: StoreKind::File,
            source: Box::new(e),
        },
        _ => backend(e),
    }
}

/// Maps an IO error reading or removing one session's file: permission problems mean the store cannot
/// work; anything else is this operation's failure.
fn file_error(e: io::Error) -> StoreError {
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => StoreError::Unavailable {
            backend: StoreKind::File,
            source: Box::new(e),
        },
        _ => backend(e),
    }
}

/// The store key of a session file's name, if it is one.
fn session_key(name: &str) -> Option<StoreKey> {
    StoreKey::parse(name.strip_suffix(SESSION_EXT)?).ok()
}

impl FileStore {
    /// A store keeping sessions in `dir`, created (mode `0700`) on first use if missing.
    ///
    /// Defaults: no fsync, at most [`DEFAULT_MAX_FILES`] (100,000) files and [`DEFAULT_MAX_BYTES`]
    /// (1 GiB), the system clock. Nothing touches the disk until the first operation or
    /// [`FileStore::init`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::build(Config {
            dir: dir.into(),
            fsync: false,
            max_files: DEFAULT_MAX_FILES,
            max_bytes: DEFAULT_MAX_BYTES,
            clock: Arc::new(SystemClock),
        })
    }

    fn build(cfg: Config) -> Self {
        FileStore {
            inner: Arc::new(Inner {
                cfg,
                locks: (0..STRIPES)
                    .map(|_| Arc::new(tokio::sync::Mutex::new(())))
                    .collect(),
                ready: tokio::sync::OnceCell::new(),
                counters: Mutex::new(Counters::default()),
                temp_seq: AtomicU64::new(0),
            }),
        }
    }

    fn rebuild(self, f: impl FnOnce(&mut Config)) -> Self {
        let mut cfg = self.inner.cfg.clone();
        f(&mut cfg);
        Self::build(cfg)
    }

    /// Whether every write is flushed to disk (the file, then the directory after the rename) before it
    /// is acknowledged (default `false`: the OS writes it back within seconds; a crash of the process
    /// alone never loses a write either way).
    #[must_use]
    pub fn with_fsync(self, fsync: bool) -> Self {
        self.rebuild(|c| c.fsync = fsync)
    }

    /// The most session files the store creates (default 100,000; `u64::MAX` for no limit).
    #[must_use]
    pub fn with_max_files(self, max: u64) -> Self {
        self.rebuild(|c| c.max_files = max)
    }

    /// The most bytes of session files before creating new sessions is refused (default 1 GiB;
    /// `u64::MAX` for no limit). Existing sessions may still grow by a tenth of this.
    #[must_use]
    pub fn with_max_bytes(self, max: u64) -> Self {
        self.rebuild(|c| c.max_bytes = max)
    }

    /// Reads time from `clock` to decide expiry (tests use
    /// [`ManualClock`](crate::expiry::ManualClock)).
    #[must_use]
    pub fn with_clock(self, clock: impl Clock) -> Self {
        self.rebuild(|c| c.clock = Arc::new(clock))
    }

    /// The session directory.
    pub fn directory(&self) -> &Path {
        &self.inner.cfg.dir
    }

    /// Creates the directory if needed and counts what it holds. Every operation does this on first use;
    /// call it at startup to find a missing or unwritable directory there rather than on a request.
    pub async fn init(&self) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        self.inner
            .ready
            .get_or_try_init(|| blocking(move || inner.scan_counters()))
            .await
            .map(|_| ())
    }

    /// Starts a task that runs [`ManagedStore::cleanup`] every `every` (expired sessions, corrupt and
    /// stale temporary files), logging what it removed or why it failed. The first pass runs after
    /// `every`. Must be called within a Tokio runtime.
    ///
    /// The task runs until aborted, or until every clone of the store is dropped (it holds only a weak
    /// reference). Graceful shutdown stops it with
    /// [`JoinHandle::abort`](tokio::task::JoinHandle::abort); a pass already on the blocking pool
    /// finishes the file it is on, so nothing is left half-written. With the crate's
    /// [`Shutdown`](crate::shutdown::Shutdown), prefer [`FileStore::spawn_reaper_until`], which ends by
    /// itself so a drain reports clean.
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

    /// Runs `f` on the blocking pool with the session's lock held until it is done.
    async fn locked<T: Send + 'static>(
        &self,
        key: &StoreKey,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.ready().await?;
        let guard: OwnedMutexGuard<()> = self.inner.locks[stripe(key)].clone().lock_owned().await;
        let inner = self.inner.clone();
        blocking(move || {
            let res = f(&inner);
            drop(guard);
            res
        })
        .await
    }

    /// Runs `f` on the blocking pool without a session lock (listing, counting, cleanup).
    async fn unlocked<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.ready().await?;
        let inner = self.inner.clone();
        blocking(move || f(&inner)).await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(backend)?
}

impl Inner {
    fn path(&self, key: &StoreKey) -> PathBuf {
        self.cfg.dir.join(format!("{}{SESSION_EXT}", key.as_str()))
    }

    fn counters(&self) -> MutexGuard<'_, Counters> {
        // Each update is a couple of integer writes; a poisoned lock holds consistent figures.
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates the directory (0700) if missing and fills the counters from it.
    fn scan_counters(&self) -> Result<(), StoreError> {
        let dir = &self.cfg.dir;
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(dir_error)?;
        let meta = fs::metadata(dir).map_err(dir_error)?;
        if !meta.is_dir() {
            return Err(dir_error(io::Error::new(
                ErrorKind::NotADirectory,
                "the session directory path is not a directory",
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
        let mut c = Counters::default();
        for entry in fs::read_dir(dir).map_err(dir_error)? {
            let entry = entry.map_err(dir_error)?;
            let name = entry.file_name();
            if name.to_str().and_then(session_key).is_none() {
                continue;
            }
            if let Ok(m) = entry.metadata() {
                c.files += 1;
                c.bytes += m.len();
            }
        }
        *self.counters() = c;
        tracing::debug!(dir = %dir.display(), files = c.files, bytes = c.bytes, "file session store ready");
        Ok(())
    }

    /// Reads a session file. The caller holds the session's lock.
    fn current(&self, key: &StoreKey, now: Timestamp) -> Result<Current, StoreError> {
        let path = self.path(key);
        // Look before opening: a FIFO, socket or symlink planted under a session's name is not one of
        // ours, and opening a FIFO would block this thread.
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Ok(Current::Corrupt {
                    size: 0,
                    error: StoreError::Corrupt {
                        detail: "session path is not a regular file",
                        source: None,
                    },
                })
            }
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
            return Ok(Current::Corrupt {
                size: 0,
                error: StoreError::Corrupt {
                    detail: "session path is not a regular file",
                    source: None,
                },
            });
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
        match Record::from_json(&bytes) {
            Ok(record) if record.is_expired(now) => Ok(Current::Expired { size }),
            Ok(record) => Ok(Current::Live {
                record,
                size,
                version: digest(&bytes),
            }),
            Err(error) => Ok(Current::Corrupt { size, error }),
        }
    }

    /// Reads a session file, removing it when expired and setting it aside when corrupt. The caller
    /// holds the session's lock. Answers the live record, its size and version, if any.
    fn live(
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
            } => Ok(Some((record, size, version))),
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
    fn remove(&self, key: &StoreKey, size: u64) -> Result<bool, StoreError> {
        match fs::remove_file(self.path(key)) {
            Ok(()) => {
                self.forget(size);
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
                self.forget(size);
                tracing::warn!(store_key = %key, error = %error, moved_to = %to.display(), "corrupt session file set aside");
            }
            Err(e) => {
                tracing::warn!(store_key = %key, error = %error, rename_error = %e, "corrupt session file could not be set aside");
            }
        }
    }

    fn forget(&self, size: u64) {
        let mut c = self.counters();
        c.files = c.files.saturating_sub(1);
        c.bytes = c.bytes.saturating_sub(size);
    }

    /// Writes `bytes` as `key`'s session file atomically: temporary file, optional fsync, rename.
    fn write(&self, key: &StoreKey, bytes: &[u8]) -> Result<(), StoreError> {
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

    fn quota_error(&self, what: &str, c: Counters) -> StoreError {
        StoreError::QuotaExceeded {
            detail: format!(
                "{what}: {} files, {} bytes in {} (limits: {} files, {} bytes)",
                c.files,
                c.bytes,
                self.cfg.dir.display(),
                self.cfg.max_files,
                self.cfg.max_bytes
            ),
        }
    }

    /// Reserves room for a new file of `size` bytes, or refuses.
    fn reserve_new(&self, size: u64) -> Result<(), StoreError> {
        let mut c = self.counters();
        if c.files >= self.cfg.max_files {
            return Err(self.quota_error("session file limit reached", *c));
        }
        if c.bytes.saturating_add(size) > self.cfg.max_bytes {
            return Err(self.quota_error("session byte limit reached", *c));
        }
        c.files += 1;
        c.bytes += size;
        Ok(())
    }

    /// Accounts for an existing file going from `old` to `new` bytes. Growth may use a reserve of a tenth
    /// of the byte quota above it, so existing sessions keep working when new ones are refused.
    fn reserve_growth(&self, old: u64, new: u64) -> Result<(), StoreError> {
        let mut c = self.counters();
        if new > old {
            let hard = self.cfg.max_bytes.saturating_add(self.cfg.max_bytes / 10);
            if c.bytes.saturating_add(new - old) > hard {
                return Err(self.quota_error("session byte limit and reserve reached", *c));
            }
        }
        c.bytes = c.bytes.saturating_add(new).saturating_sub(old);
        Ok(())
    }

    /// Undoes [`Inner::reserve_growth`] after a failed write.
    fn undo_growth(&self, old: u64, new: u64) {
        let mut c = self.counters();
        c.bytes = c.bytes.saturating_add(old).saturating_sub(new);
    }

    fn release(&self, files: u64, bytes: u64) {
        let mut c = self.counters();
        c.files = c.files.saturating_sub(files);
        c.bytes = c.bytes.saturating_sub(bytes);
    }

    /// The session keys in the directory, sorted.
    fn keys(&self) -> Result<Vec<StoreKey>, StoreError> {
        let mut keys = Vec::new();
        for entry in fs::read_dir(&self.cfg.dir).map_err(dir_error)? {
            let entry = entry.map_err(dir_error)?;
            if let Some(k) = entry.file_name().to_str().and_then(session_key) {
                keys.push(k);
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Removes expired and corrupt session files, files set aside earlier and stale temporary files.
    fn cleanup(&self) -> Result<u64, StoreError> {
        let now = self.cfg.clock.now();
        let mut removed = 0;
        for entry in fs::read_dir(&self.cfg.dir).map_err(dir_error)? {
            let entry = entry.map_err(dir_error)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(key) = session_key(name) {
                // The same lock the hot path takes; this is a blocking-pool thread, so waiting is fine.
                let _guard = self.locks[stripe(&key)].blocking_lock();
                let size = match self.current(&key, now) {
                    Ok(Current::Expired { size }) => size,
                    Ok(Current::Corrupt { size, error }) => {
                        tracing::warn!(store_key = %key, error = %error, "removing corrupt session file");
                        size
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(store_key = %key, error = %e, "cleanup could not read a session file");
                        continue;
                    }
                };
                // One entry that cannot be removed (a directory under a session's name) does not stop
                // the pass.
                match self.remove(&key, size) {
                    Ok(true) => removed += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(store_key = %key, error = %e, "cleanup could not remove a session file")
                    }
                }
            } else if name.ends_with(CORRUPT_EXT) || self.stale_temp(name, &entry) {
                match fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(file = name, error = %e, "cleanup could not remove a file")
                    }
                }
            }
        }
        Ok(removed)
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

    fn probe(&self) -> Result<(), StoreError> {
        let seq = self.temp_seq.fetch_add(1, Ordering::Relaxed);
        let path = self
            .cfg
            .dir
            .join(format!(".health.{}.{seq}{TEMP_EXT}", std::process::id()));
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        opts.open(&path).map_err(dir_error)?;
        fs::remove_file(&path).map_err(dir_error)
    }
}

impl SessionStore for FileStore {
    async fn load(&self, key: &StoreKey) -> Result<Option<Loaded>, StoreError> {
        let key = *key;
        self.locked(&key.clone(), move |inner| {
            let now = inner.cfg.clock.now();
            Ok(inner.live(&key, now)?.map(|(record, _, version)| Loaded {
                record: Arc::new(record),
                version,
            }))
        })
        .await
    }

    async fn create(&self, key: &StoreKey, record: &Record) -> Result<Created, StoreError> {
        let key = *key;
        let bytes = record.to_json();
        self.locked(&key.clone(), move |inner| {
            let now = inner.cfg.clock.now();
            if inner.live(&key, now)?.is_some() {
                return Ok(Created::Exists);
            }
            // `live` removed an expired or corrupt file: this is a new file either way.
            let size = bytes.len() as u64;
            inner.reserve_new(size)?;
            if let Err(e) = inner.write(&key, &bytes) {
                inner.release(1, size);
                return Err(e);
            }
            Ok(Created::Created)
        })
        .await
    }

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
        self.locked(&key.clone(), move |inner| {
            let now = inner.cfg.clock.now();
            let Some((mut current, old_size, version)) = inner.live(&key, now)? else {
                return Ok(Saved::Gone);
            };
            let bytes = if version == base {
                ours.to_json()
            } else {
                crate::metrics::Metrics::global().count(crate::metrics::Event::SaveConflict);
                current.merge(&changes, &ours);
                current.to_json()
            };
            let new_size = bytes.len() as u64;
            inner.reserve_growth(old_size, new_size)?;
            if let Err(e) = inner.write(&key, &bytes) {
                // The old file is still in place.
                inner.undo_growth(old_size, new_size);
                return Err(e);
            }
            Ok(Saved::Saved)
        })
        .await
    }

    async fn delete(&self, key: &StoreKey) -> Result<bool, StoreError> {
        let key = *key;
        self.locked(&key.clone(), move |inner| {
            let now = inner.cfg.clock.now();
            match inner.current(&key, now)? {
                Current::Missing => Ok(false),
                Current::Live { size, .. } => inner.remove(&key, size),
                Current::Expired { size } | Current::Corrupt { size, .. } => {
                    inner.remove(&key, size)?;
                    Ok(false)
                }
            }
        })
        .await
    }

    /// Reads every session file (O(files), like [`ManagedStore::count`]): the file store keeps no
    /// per-user index, so there is none to fall out of step with the sessions, and a session deleted,
    /// expired or given another user simply stops matching.
    async fn user_sessions(&self, user: &str) -> Result<Vec<Summary>, StoreError> {
        let user = user.to_owned();
        self.unlocked(move |inner| {
            let now = inner.cfg.clock.now();
            let mut sessions = Vec::new();
            for key in inner.keys()? {
                // Files are replaced by rename, so an unlocked read sees a whole record.
                if let Ok(Current::Live { record, .. }) = inner.current(&key, now) {
                    if record.user.as_deref() == Some(user.as_str()) {
                        sessions.push(record.summary(key));
                    }
                }
            }
            super::sort_user_sessions(&mut sessions);
            Ok(sessions)
        })
        .await
    }
}

impl ManagedStore for FileStore {
    fn kind(&self) -> StoreKind {
        StoreKind::File
    }

    /// Reads every session file to count the live ones: O(files), meant for admin and stats calls.
    async fn count(&self) -> Result<u64, StoreError> {
        self.unlocked(|inner| {
            let now = inner.cfg.clock.now();
            let mut n = 0;
            for key in inner.keys()? {
                // Files are replaced by rename, so an unlocked read sees a whole record.
                if let Ok(Current::Live { .. }) = inner.current(&key, now) {
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
    }

    /// Pages in key order; the cursor is the last key of the previous page. Lists the directory's names
    /// and reads only the files of this page.
    async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        let after = match cursor.map(StoreKey::parse) {
            None => None,
            Some(Ok(k)) => Some(k),
            Some(Err(_)) => return Err(StoreError::InvalidCursor),
        };
        self.unlocked(move |inner| {
            let now = inner.cfg.clock.now();
            let mut sessions = Vec::new();
            let mut more = false;
            for key in inner.keys()? {
                if after.as_ref().is_some_and(|a| &key <= a) {
                    continue;
                }
                if let Ok(Current::Live { record, .. }) = inner.current(&key, now) {
                    if sessions.len() == limit {
                        more = true;
                        break;
                    }
                    sessions.push(record.summary(key));
                }
            }
            let next_cursor = if more {
                sessions.last().map(|s| s.id.as_str().to_owned())
            } else {
                None
            };
            Ok(Page {
                sessions,
                next_cursor,
            })
        })
        .await
    }

    /// Removes expired session files, corrupt ones (set aside or not) and temporary files left by a crash
    /// (older than a minute); answers how many files went.
    async fn cleanup(&self) -> Result<u64, StoreError> {
        self.unlocked(|inner| inner.cleanup()).await
    }

    /// Healthy (no detail) when a file can be created in the directory; otherwise the detail says why
    /// (without the directory's path, as health is often public).
    async fn health(&self) -> StoreHealth {
        let res = self.unlocked(|inner| inner.probe()).await;
        StoreHealth {
            serving: StoreKind::File,
            healthy: res.is_ok(),
            redis_healthy: None,
            // Shown by the public `/health`: the IO error, not the directory's path.
            detail: res
                .err()
                .map(|e| format!("session directory is not writable: {e}")),
        }
    }

    /// The in-memory figures: session files (live or not yet reaped) and their bytes.
    async fn usage(&self) -> Result<Usage, StoreError> {
        self.ready().await?;
        let c = *self.inner.counters();
        Ok(Usage::Disk {
            directory: self.inner.cfg.dir.display().to_string(),
            files: c.files,
            bytes: c.bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expiry::ManualClock;
    use crate::id::Token;

    use crate::store::test_record as record;

    #[test]
    fn only_well_formed_session_names_are_session_files() {
        let k = Token::generate().store_key();
        assert_eq!(session_key(&format!("{k}.json")), Some(k));
        assert_eq!(session_key(&format!("{k}.corrupt")), None);
        assert_eq!(session_key(&format!(".{k}.1.2.tmp")), None);
        assert_eq!(session_key("../x.json"), None);
        assert_eq!(session_key(".json"), None);
    }

    #[test]
    fn stripes_stay_in_range() {
        for _ in 0..100 {
            assert!(stripe(&Token::generate().store_key()) < STRIPES);
        }
    }

    #[test]
    fn a_missing_or_unwritable_directory_is_unavailable_but_a_full_disk_is_not() {
        assert!(dir_error(io::Error::from(ErrorKind::NotFound)).is_unavailable());
        assert!(dir_error(io::Error::from(ErrorKind::PermissionDenied)).is_unavailable());
        assert!(!dir_error(io::Error::from(ErrorKind::StorageFull)).is_unavailable());
        assert!(!file_error(io::Error::from(ErrorKind::NotFound)).is_unavailable());
    }

    #[tokio::test]
    async fn save_against_an_old_version_merges_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::starting_now();
        let store = FileStore::new(dir.path()).with_clock(clock.clone());
        let (key, rec) = crate::store::assert_stale_saves_merge(&store, clock.now()).await;
        assert_eq!(store.create(&key, &rec).await.unwrap(), Created::Exists);
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
        let Usage::Disk { files, bytes, .. } = store.usage().await.unwrap() else {
            panic!("not disk usage")
        };
        assert_eq!(files, 2);
        assert_eq!(bytes, 2 * rec.to_json().len() as u64);
        assert!(store.delete(&a).await.unwrap());
        assert!(!store.delete(&a).await.unwrap());
        let Usage::Disk { files, bytes, .. } = store.usage().await.unwrap() else {
            panic!("not disk usage")
        };
        assert_eq!((files, bytes), (1, rec.to_json().len() as u64));
        // A fresh store over the same directory counts the same.
        let again = FileStore::new(dir.path());
        assert_eq!(again.usage().await.unwrap(), store.usage().await.unwrap());
    }
}
