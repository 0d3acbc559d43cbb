//! A loopback HTTP/1.1 load driver: N connections, each one client with its own cookie jar, for a fixed
//! time. Shared by `benches/load` and `benches/compare` (included with `#[path]`), so both libraries are
//! measured by the same code.
#![allow(dead_code)]

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// What each client asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Every request reads the session's counter and increments it (`GET /write`).
    Write,
    /// Nine requests in ten only read the counter (`GET /read`); the tenth increments it.
    ReadMostly,
}

impl Workload {
    pub const ALL: [Workload; 2] = [Workload::Write, Workload::ReadMostly];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Write => "write-every-request",
            Workload::ReadMostly => "read-mostly (90% read)",
        }
    }

    fn path(self, i: u64) -> &'static str {
        match self {
            Workload::Write => "/write",
            Workload::ReadMostly if i % 10 == 9 => "/write",
            Workload::ReadMostly => "/read",
        }
    }
}

/// What one timed run measured.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latencies in microseconds, sorted.
    pub latencies_us: Vec<u32>,
    /// CPU time the driver's thread used during the measured run, in nanoseconds.
    pub driver_ns: u64,
}

impl Stats {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// The progress line printed after run `rep` (from 0) of `reps`, for `name` (a mode or a library
    /// padded to `width`) and `workload`.
    pub fn progress(
        &self,
        rep: usize,
        reps: usize,
        name: &str,
        width: usize,
        workload: Workload,
    ) -> String {
        format!(
            "run {}/{reps} {name:<width$} {:<24} {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
            rep + 1,
            workload.name(),
            self.rps(),
            self.percentile_ms(0.5),
            self.percentile_ms(0.99),
            self.errors
        )
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }
}

/// An HTTP/1.1 connection to `addr` (`TCP_NODELAY`), its connection task spawned: what every
/// benchmark client sends its requests on.
pub async fn http1<B>(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<B>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One client: a connection and a cookie jar (the session cookie it was last given).
struct Client {
    addr: SocketAddr,
    sender: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>,
    cookie: Option<String>,
}

impl Client {
    async fn connect(&mut self) -> Result<(), String> {
        self.sender = Some(http1(self.addr).await?);
        Ok(())
    }

    /// One request; `Ok(status)` once the whole body was read.
    async fn request(&mut self, path: &str) -> Result<StatusCode, String> {
        if self.sender.is_none() {
            self.connect().await?;
        }
        let sender = self.sender.as_mut().expect("connected");
        let mut req = Request::get(path).header(header::HOST, "127.0.0.1");
        if let Some(c) = &self.cookie {
            req = req.header(header::COOKIE, c.as_str());
        }
        let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
        let res = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(e.to_string());
            }
        };
        for set in res.headers().get_all(header::SET_COOKIE) {
            let Ok(set) = set.to_str() else { continue };
            let pair = set.split(';').next().unwrap_or("").trim();
            let removal = set.contains("Max-Age=0") || pair.ends_with('=');
            self.cookie = if removal { None } else { Some(pair.to_owned()) };
        }
        let status = res.status();
        res.into_body().collect().await.map_err(|e| e.to_string())?;
        Ok(status)
    }
}

/// Gives each of `clients` connections a session (one write request each), then runs `workload` for
/// `duration` and answers the figures. The driver runs on its own single-threaded runtime (like one
/// `wrk` thread), on the calling thread.
pub fn run(addr: SocketAddr, clients: usize, workload: Workload, duration: Duration) -> Stats {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("driver runtime");
    rt.block_on(async move {
        let mut tasks = Vec::with_capacity(clients);
        // Everyone connects and gets a session first; the clock starts when all are ready.
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(clients + 1));
        for n in 0..clients {
            let start = start.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = Client {
                    addr,
                    sender: None,
                    cookie: None,
                };
                for _ in 0..3 {
                    if matches!(c.request("/write").await, Ok(s) if s.is_success() && c.cookie.is_some())
                    {
                        break;
                    }
                }
                start.wait().await;
                let t0 = Instant::now();
                let deadline = t0 + duration;
                let mut lat = Vec::with_capacity(16 * 1024);
                let mut i = n as u64; // stagger the read-mostly pattern between clients
                let mut requests = 0u64;
                let mut errors = 0u64;
                loop {
                    let t = Instant::now();
                    if t >= deadline {
                        break;
                    }
                    let ok = matches!(c.request(workload.path(i)).await, Ok(s) if s.is_success());
                    lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    requests += 1;
                    if !ok {
                        errors += 1;
                    }
                    i += 1;
                }
                (requests, errors, lat, t0.elapsed())
            }));
        }
        start.wait().await;
        let cpu0 = super::cpu::this_thread_ns();
        let mut stats = Stats::default();
        let mut longest = Duration::ZERO;
        for t in tasks {
            let (r, e, l, el) = t.await.expect("client task");
            stats.requests += r;
            stats.errors += e;
            stats.latencies_us.extend(l);
            longest = longest.max(el);
        }
        stats.elapsed = longest;
        stats.driver_ns = super::cpu::this_thread_ns().saturating_sub(cpu0);
        stats.latencies_us.sort_unstable();
        stats
    })
}

/// The variable `name` parsed as `T`, or `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub use crate::median::median_spread;

/// Repetition by repetition, `ours[i] / theirs[i]`: the median and spread of the ratios of runs made
/// seconds apart. On a noisy machine this pairs each run with its neighbour, so a slow minute slows
/// both sides of a ratio instead of one of two medians.
pub fn paired_ratio(ours: &[f64], theirs: &[f64]) -> (f64, String) {
    let ratios: Vec<f64> = ours.iter().zip(theirs).map(|(a, b)| a / b).collect();
    median_spread(&ratios, 2)
}
