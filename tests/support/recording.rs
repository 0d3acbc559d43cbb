//! A store wrapper that records every call, and fails on demand.
#![allow(dead_code)]

use sessionforge::id::StoreKey;
use sessionforge::store::{
    ChangeSet, Created, Health, Loaded, Page, Record, Replaced, Saved, SessionStore, StoreError,
    Summary, Usage, Version,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One store call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Load(StoreKey),
    Create(StoreKey),
    Replace(StoreKey),
    Save(StoreKey),
    Delete(StoreKey),
    UserSessions(String),
    /// count, list or cleanup.
    Count,
}

/// Wraps a store, logging each call in order; `fail` makes every call fail as "unavailable", and
/// health report the store down (which is how the failover store sees a primary go away).
#[derive(Clone)]
pub struct Recording<S> {
    pub inner: S,
    pub calls: Arc<Mutex<Vec<Call>>>,
    pub fail: Arc<AtomicBool>,
    /// Only loads fail (a listing still works), and health says so: a directory whose files cannot
    /// be read.
    pub fail_loads: Arc<AtomicBool>,
}

impl<S> Recording<S> {
    pub fn new(inner: S) -> Self {
        Recording {
            inner,
            calls: Default::default(),
            fail: Default::default(),
            fail_loads: Default::default(),
        }
    }

    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut self.calls.lock().unwrap())
    }

    fn log(&self, c: Call) -> Result<(), StoreError> {
        self.calls.lock().unwrap().push(c);
        if self.fail.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable {
                backend: "recording",
                source: "injected failure".into(),
            })
        } else {
            Ok(())
        }
    }
}

impl<S: SessionStore> SessionStore for Recording<S> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn load(&self, key: &StoreKey) -> Result<Option<Loaded>, StoreError> {
        self.log(Call::Load(*key))?;
        if self.fail_loads.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                backend: "recording",
                source: "injected read failure".into(),
            });
        }
        self.inner.load(key).await
    }
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<Created, StoreError> {
        self.log(Call::Create(*key))?;
        self.inner.create(key, record).await
    }
    async fn replace(
        &self,
        key: &StoreKey,
        expected: &Version,
        record: Option<&Record>,
    ) -> Result<Replaced, StoreError> {
        self.log(Call::Replace(*key))?;
        self.inner.replace(key, expected, record).await
    }
    async fn save(
        &self,
        key: &StoreKey,
        base: &Version,
        ours: &Arc<Record>,
        changes: &ChangeSet,
    ) -> Result<Saved, StoreError> {
        self.log(Call::Save(*key))?;
        self.inner.save(key, base, ours, changes).await
    }
    async fn delete(&self, key: &StoreKey) -> Result<bool, StoreError> {
        self.log(Call::Delete(*key))?;
        self.inner.delete(key).await
    }
    async fn user_sessions(&self, user: &str) -> Result<Vec<Summary>, StoreError> {
        self.log(Call::UserSessions(user.to_owned()))?;
        self.inner.user_sessions(user).await
    }
    async fn count(&self) -> Result<u64, StoreError> {
        self.log(Call::Count)?;
        self.inner.count().await
    }
    async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        self.log(Call::Count)?;
        self.inner.list(cursor, limit).await
    }
    async fn cleanup(&self) -> Result<u64, StoreError> {
        self.log(Call::Count)?;
        self.inner.cleanup().await
    }
    async fn health(&self) -> Health {
        if self.fail_loads.load(Ordering::SeqCst) {
            return Health::ok(self.inner.name()).degraded("injected read failure");
        }
        if self.fail.load(Ordering::SeqCst) {
            Health::ok(self.inner.name())
                .unavailable("injected outage")
                .with_backend(self.inner.name(), false)
        } else {
            self.inner.health().await
        }
    }
    async fn usage(&self) -> Result<Usage, StoreError> {
        self.inner.usage().await
    }
    fn format(&self) -> sessionforge::format::SharedFormat {
        self.inner.format()
    }
    fn clock(&self) -> sessionforge::expiry::SharedClock {
        self.inner.clock()
    }
}
