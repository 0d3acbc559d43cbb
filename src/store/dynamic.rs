//! The object-safe face of a [`SessionStore`]: one boxed future per call, each timed for the metrics.
//! The session handle and the admin service hold their store this way, so handlers see one concrete
//! type whatever the backend.

use super::{
    ChangeSet, Created, Health, Loaded, Page, Record, Renewed, Saved, SessionStore, StoreError,
    Summary, Usage, Version,
};
use crate::id::StoreKey;
use serde_json::{Map, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A shared, type-erased store.
pub(crate) type SharedStore = Arc<dyn DynStore>;

/// [`SessionStore`] with boxed futures. Implemented for every store.
pub(crate) trait DynStore: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn load<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Result<Option<Loaded>, StoreError>>;
    fn create<'a>(
        &'a self,
        key: &'a StoreKey,
        record: &'a Record,
    ) -> BoxFuture<'a, Result<Created, StoreError>>;
    fn delete<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        base: &'a Version,
        ours: &'a Arc<Record>,
        changes: &'a ChangeSet,
    ) -> BoxFuture<'a, Result<Saved, StoreError>>;
    fn renew<'a>(
        &'a self,
        old: &'a StoreKey,
        new: &'a StoreKey,
        base: &'a Version,
        ours: &'a Arc<Record>,
        changes: &'a ChangeSet,
    ) -> BoxFuture<'a, Result<Renewed, StoreError>>;
    fn user_sessions<'a>(
        &'a self,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Summary>, StoreError>>;
    fn revoke_user_sessions<'a>(
        &'a self,
        user: &'a str,
        keep: Option<&'a StoreKey>,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
    // The management calls below serve the admin router (feature `axum`).
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    fn count(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    fn list<'a>(
        &'a self,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Page, StoreError>>;
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    fn cleanup(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    fn usage(&self) -> BoxFuture<'_, Result<Usage, StoreError>>;
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    fn health(&self) -> BoxFuture<'_, Health>;
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    fn info(&self) -> BoxFuture<'_, Result<Option<Map<String, Value>>, StoreError>>;
}

pin_project_lite::pin_project! {
    /// A store call, timed and its failure counted. A plain future around the call (an `async fn`
    /// would hold the call's future twice, as its argument and as what it awaits, doubling the box).
    ///
    /// The clock is read only once the call has to wait: a call answered by its first poll (a cache
    /// hit, the memory store) did no I/O and is recorded as taking no time, which saves two clock
    /// reads on such calls. A waiting call is timed from the end of its first poll (where it sent its
    /// request).
    struct Timed<F> {
        #[pin]
        fut: F,
        op: &'static str,
        start: Option<Instant>,
    }
}

impl<F, T> Future for Timed<F>
where
    F: Future<Output = Result<T, StoreError>>,
{
    type Output = Result<T, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = match this.fut.poll(cx) {
            Poll::Ready(res) => res,
            Poll::Pending => {
                this.start.get_or_insert_with(Instant::now);
                return Poll::Pending;
            }
        };
        let took = this.start.map_or(Duration::ZERO, |s| s.elapsed());
        crate::metrics::store_call(this.op, took, res.as_ref().err());
        Poll::Ready(res)
    }
}

fn timed<'a, T>(
    op: &'static str,
    fut: impl Future<Output = Result<T, StoreError>> + Send + 'a,
) -> BoxFuture<'a, Result<T, StoreError>> {
    Box::pin(Timed {
        fut,
        op,
        start: None,
    })
}

impl<S: SessionStore> DynStore for S {
    fn name(&self) -> &'static str {
        SessionStore::name(self)
    }
    fn load<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Result<Option<Loaded>, StoreError>> {
        timed("load", SessionStore::load(self, key))
    }
    fn create<'a>(
        &'a self,
        key: &'a StoreKey,
        record: &'a Record,
    ) -> BoxFuture<'a, Result<Created, StoreError>> {
        timed("create", SessionStore::create(self, key, record))
    }
    fn delete<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Result<bool, StoreError>> {
        timed("delete", SessionStore::delete(self, key))
    }
    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        base: &'a Version,
        ours: &'a Arc<Record>,
        changes: &'a ChangeSet,
    ) -> BoxFuture<'a, Result<Saved, StoreError>> {
        timed("save", SessionStore::save(self, key, base, ours, changes))
    }
    fn renew<'a>(
        &'a self,
        old: &'a StoreKey,
        new: &'a StoreKey,
        base: &'a Version,
        ours: &'a Arc<Record>,
        changes: &'a ChangeSet,
    ) -> BoxFuture<'a, Result<Renewed, StoreError>> {
        timed(
            "renew",
            SessionStore::renew(self, old, new, base, ours, changes),
        )
    }
    fn user_sessions<'a>(
        &'a self,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Summary>, StoreError>> {
        timed("user_sessions", SessionStore::user_sessions(self, user))
    }
    fn revoke_user_sessions<'a>(
        &'a self,
        user: &'a str,
        keep: Option<&'a StoreKey>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        timed(
            "revoke_user_sessions",
            SessionStore::revoke_user_sessions(self, user, keep),
        )
    }
    fn count(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        timed("count", SessionStore::count(self))
    }
    fn list<'a>(
        &'a self,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Page, StoreError>> {
        timed("list", SessionStore::list(self, cursor, limit))
    }
    fn cleanup(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        timed("cleanup", SessionStore::cleanup(self))
    }
    fn usage(&self) -> BoxFuture<'_, Result<Usage, StoreError>> {
        Box::pin(SessionStore::usage(self))
    }
    fn health(&self) -> BoxFuture<'_, Health> {
        Box::pin(SessionStore::health(self))
    }
    fn info(&self) -> BoxFuture<'_, Result<Option<Map<String, Value>>, StoreError>> {
        Box::pin(SessionStore::info(self))
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use super::*;
    use crate::metrics::testing;

    #[tokio::test(flavor = "current_thread")]
    async fn a_store_call_that_waits_is_timed_and_one_answered_at_once_counts_as_zero() {
        let (snap, _guard) = testing::local();
        let waited: Result<(), StoreError> = timed("delete", async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(())
        })
        .await;
        waited.unwrap();
        let at_once: Result<(), StoreError> =
            timed("delete", std::future::ready(Err(StoreError::Conflict))).await;
        assert!(at_once.is_err());
        let observed = testing::take(&snap);
        let seen = observed.histogram(
            "sessionforge_store_call_duration_seconds",
            &[("op", "delete")],
        );
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen[0] >= 0.005, "{seen:?}");
        assert_eq!(seen[1], 0.0);
        assert_eq!(
            observed.counter("sessionforge_store_errors_total", &[("kind", "other")]),
            1
        );
    }
}
