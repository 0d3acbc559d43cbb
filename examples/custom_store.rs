//! # Write your own session store
//!
//! A store written outside the crate, with nothing but sessionforge's public API: sessions in a
//! `tokio::sync::Mutex<HashMap>`, no per-user index, no listing. It serves the Axum counter:
//!
//! ```text
//! cargo run --example custom_store          # PORT (default 3000)
//! curl -c jar -b jar http://127.0.0.1:3000/ # 1, 2, 3 ... per cookie jar
//! ```
//!
//! ## What to implement
//!
//! [`SessionStore`] has five required methods; everything else is provided on top of them:
//!
//! 1. `name()`: how health, stats and errors name your store (`"postgres"`, `"dynamo"`…).
//! 2. `load(key)`: the [`Record`] stored under the key with a [`Version`] of it, or `None` when there
//!    is none or it has expired (`record.is_expired(now)`).
//! 3. `create(key, record)`: store it only if nothing live is stored under the key; otherwise answer
//!    [`Created::Exists`].
//! 4. `replace(key, expected, record)`: a compare-and-swap. If what is stored still has the version
//!    `expected`, write `record` (or remove the session when it is `None`) and answer
//!    [`Replaced::Replaced`]; if another version is stored answer [`Replaced::Changed`]; if nothing is,
//!    [`Replaced::Gone`]. It must be atomic against every other write to the key (a row lock, a
//!    `WHERE version = $expected`, a conditional put): this is what makes the rest lossless.
//! 5. `delete(key)`: remove the session; `true` when there was a live one.
//!
//! A version is whatever your backend compares cheaply. A counter bumped on every write works (this
//! store's); so does the record's `last_access`, which the crate moves forward on every write.
//!
//! ## What you get
//!
//! * **`save`**: a request's change-set applied to what is stored now: concurrent requests that set
//!   different keys both land, concurrent `increment`s all count, a session emptied by a request is
//!   removed, and a session deleted meanwhile (logout, revoke) is never written again.
//! * **`renew`**: `cycle_id` at login moves the session to a new key, the new one written first; a
//!   session revoked meanwhile stays revoked.
//! * **Optional capabilities** answer "not supported" until you implement them: `user_sessions` (then
//!   "log out everywhere", the per-user cap and the admin's user routes work), `count` and `list`
//!   (the admin's stats and listing), `cleanup`, `usage`, `health`. The admin service answers the
//!   routes a store cannot serve with `501 {"error":"this session store cannot list sessions"}`.
//!
//! Override a provided method only to do the same in fewer steps (the Redis store saves in one Lua
//! script round trip). Check your store with the conformance kit (feature `test-util`), as this file's
//! test does: `Conformance::new(store).with_clock(clock).run().await`, plus `.with_user_index()`,
//! `.with_listing()`, `.with_cleanup()` for the capabilities you add.

use axum::routing::get;
use axum::Router;
use sessionforge::expiry::SharedClock;
use sessionforge::id::StoreKey;
use sessionforge::store::{Created, Loaded, Record, Replaced, SessionStore, StoreError, Version};
use sessionforge::{Session, SessionError, SessionLayer};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Sessions in a map behind an async mutex, each with a version counter.
#[derive(Clone)]
pub struct MutexStore {
    sessions: Arc<Mutex<HashMap<StoreKey, (Record, u64)>>>,
    clock: SharedClock,
}

impl MutexStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(sessionforge::expiry::system_clock())
    }

    /// An empty store reading time from `clock` (the layer over it reads the same clock).
    pub fn with_clock(clock: SharedClock) -> Self {
        MutexStore {
            sessions: Arc::default(),
            clock,
        }
    }
}

impl Default for MutexStore {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionStore for MutexStore {
    fn name(&self) -> &'static str {
        "mutex-map"
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Loaded>, StoreError> {
        let now = self.clock.now();
        let sessions = self.sessions.lock().await;
        Ok(sessions
            .get(key)
            .filter(|(record, _)| !record.is_expired(now))
            .map(|(record, v)| Loaded::new(record.clone(), Version::new(v.to_string()))))
    }

    async fn create(&self, key: &StoreKey, record: &Record) -> Result<Created, StoreError> {
        let now = self.clock.now();
        let mut sessions = self.sessions.lock().await;
        if sessions.get(key).is_some_and(|(r, _)| !r.is_expired(now)) {
            return Ok(Created::Exists);
        }
        sessions.insert(*key, (record.clone(), 0));
        Ok(Created::Created)
    }

    async fn replace(
        &self,
        key: &StoreKey,
        expected: &Version,
        record: Option<&Record>,
    ) -> Result<Replaced, StoreError> {
        let now = self.clock.now();
        let mut sessions = self.sessions.lock().await;
        let Some((stored, version)) = sessions.get_mut(key).filter(|(r, _)| !r.is_expired(now))
        else {
            return Ok(Replaced::Gone);
        };
        if version.to_string() != expected.as_str() {
            return Ok(Replaced::Changed);
        }
        match record {
            Some(r) => {
                *stored = r.clone();
                *version += 1;
            }
            None => {
                sessions.remove(key);
            }
        }
        Ok(Replaced::Replaced)
    }

    async fn delete(&self, key: &StoreKey) -> Result<bool, StoreError> {
        let now = self.clock.now();
        Ok(self
            .sessions
            .lock()
            .await
            .remove(key)
            .is_some_and(|(r, _)| !r.is_expired(now)))
    }

    fn clock(&self) -> SharedClock {
        self.clock.clone()
    }
}

/// `GET /`: counts this visitor's requests.
async fn count(session: Session) -> Result<String, SessionError> {
    let n = session.increment("n", 1).await?;
    Ok(format!("{n}\n"))
}

/// The counter on `store`.
pub fn app(store: MutexStore) -> Router {
    Router::new()
        .route("/", get(count))
        .layer(SessionLayer::new(store))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(MutexStore::new())).await
}

#[cfg(all(test, feature = "test-util"))]
mod tests {
    use super::*;
    use sessionforge::expiry::ManualClock;
    use sessionforge::store::conformance::Conformance;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_keeps_the_contract() {
        let clock = ManualClock::starting_now();
        Conformance::new(MutexStore::with_clock(Arc::new(clock.clone())))
            .with_clock(clock)
            .run()
            .await;
    }

    #[tokio::test]
    async fn the_counter_counts_per_cookie_over_real_http() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app(MutexStore::new())).await });
        let get = |cookie: Option<String>| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let cookie = cookie.map_or(String::new(), |c| format!("cookie: {c}\r\n"));
            let req =
                format!("GET / HTTP/1.1\r\nhost: localhost\r\n{cookie}connection: close\r\n\r\n");
            tokio::io::AsyncWriteExt::write_all(&mut stream, req.as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut out)
                .await
                .unwrap();
            out
        };
        let first = get(None).await;
        assert!(first.ends_with("1\n"), "{first}");
        let cookie = first
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: "))
            .and_then(|c| c.split(';').next())
            .unwrap()
            .to_owned();
        assert!(get(Some(cookie.clone())).await.ends_with("2\n"));
        assert!(get(Some(cookie)).await.ends_with("3\n"));
        assert!(
            get(None).await.ends_with("1\n"),
            "another visitor starts at 1"
        );
    }
}
