//! The sessionforge servers the load benchmark drives: one Axum app (`/write` reads the session's
//! counter and increments it, `/read` only reads it) over each store, on its own 2-thread runtime.
#![allow(dead_code)]

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use sessionforge::shutdown::Shutdown;
use sessionforge::store::redis::{RedisConfig, RedisStore};
use sessionforge::store::{FailoverStore, FileStore, MemoryStore};
use sessionforge::{Session, SessionLayer};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Which store serves sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// The same handlers without the layer (they answer a constant): the ceiling.
    NoSessions,
    Memory,
    Redis,
    /// Redis with the client-side read cache (RESP3 tracking).
    RedisCached,
    /// `FailoverStore` over Redis (serving from Redis) with files as the fallback.
    Failover,
    File,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::NoSessions => "no sessions",
            Mode::Memory => "memory",
            Mode::Redis => "redis",
            Mode::RedisCached => "redis + read cache",
            Mode::Failover => "failover (on redis)",
            Mode::File => "file",
        }
    }

    pub fn uses_redis(self) -> bool {
        matches!(self, Mode::Redis | Mode::RedisCached | Mode::Failover)
    }
}

async fn write(session: Session) -> Result<String, StatusCode> {
    let n: u64 = session
        .get("counter")
        .await
        .map_err(|e| e.status())?
        .unwrap_or(0);
    session
        .insert("counter", n + 1)
        .await
        .map_err(|e| e.status())?;
    Ok((n + 1).to_string())
}

async fn read(session: Session) -> Result<String, StatusCode> {
    let n: u64 = session
        .get("counter")
        .await
        .map_err(|e| e.status())?
        .unwrap_or(0);
    Ok(n.to_string())
}

async fn constant() -> &'static str {
    "0"
}

/// The Redis store's settings: the read cache only when `cached` (it is on by default; the plain
/// Redis mode measures the store without it).
fn redis_config(url: &str, cached: bool) -> RedisConfig {
    let config = RedisConfig::new(url)
        .expect("redis url")
        .with_prefix("bench:sess:");
    if cached {
        with_cache(config)
    } else {
        config.with_read_cache(0)
    }
}

fn redis_store(config: RedisConfig) -> RedisStore {
    config.build().expect("redis store")
}

fn with_cache(config: RedisConfig) -> RedisConfig {
    config.with_read_cache(10_000)
}

fn routes() -> Router {
    Router::new()
        .route("/write", get(write))
        .route("/read", get(read))
}

async fn app(mode: Mode, redis_url: Option<&str>, dir: PathBuf, shutdown: &Shutdown) -> Router {
    let layer = |l: SessionLayer| l.with_secure(false);
    match mode {
        Mode::NoSessions => Router::new()
            .route("/write", get(constant))
            .route("/read", get(constant)),
        Mode::Memory => routes().layer(layer(SessionLayer::new(MemoryStore::new()))),
        Mode::Redis | Mode::RedisCached => {
            let store = redis_store(redis_config(
                redis_url.expect("redis url"),
                mode == Mode::RedisCached,
            ));
            routes().layer(layer(SessionLayer::new(store)))
        }
        Mode::Failover => {
            let redis = redis_store(redis_config(redis_url.expect("redis url"), false));
            let files = FileStore::new(dir);
            files.init().await.expect("file store directory");
            let store = FailoverStore::builder(redis, files).start(shutdown).await;
            routes().layer(layer(SessionLayer::new(store)))
        }
        Mode::File => {
            let files = FileStore::new(dir);
            files.init().await.expect("file store directory");
            routes().layer(layer(SessionLayer::new(files)))
        }
    }
}

/// A server running on its own thread; stopped on drop.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts the app for `mode` on a free loopback port, on a 2-worker multi-thread runtime.
    pub fn start(mode: Mode, redis_url: Option<String>, dir: PathBuf) -> Server {
        Self::spawn(move |shutdown| {
            Box::pin(async move { app(mode, redis_url.as_deref(), dir, shutdown).await })
        })
    }

    /// Serves the router that `make` builds.
    pub fn spawn<F>(make: F) -> Server
    where
        F: for<'a> FnOnce(
                &'a Shutdown,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Router> + Send + 'a>,
            > + Send
            + 'static,
    {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sut-main".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(super::driver::env_or("LOAD_SERVER_WORKERS", 2))
                    .thread_name("sut-worker")
                    .enable_all()
                    .build()
                    .expect("server runtime");
                rt.block_on(async move {
                    let shutdown = Shutdown::new();
                    let router = make(&shutdown).await;
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind");
                    addr_tx.send(listener.local_addr().expect("addr")).ok();
                    axum::serve(listener, router)
                        .with_graceful_shutdown(async move {
                            let _ = stop_rx.await;
                        })
                        .await
                        .expect("serve");
                    shutdown.trigger();
                    let _ = shutdown.drain(std::time::Duration::from_secs(2)).await;
                });
            })
            .expect("server thread");
        let addr = addr_rx.recv().expect("server started");
        if super::cpu::pinning() {
            super::cpu::pin_threads(super::cpu::SERVER_THREAD, &super::cpu::server_cpus());
        }
        Server {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
