//! The load driver for the DJForge comparison: N HTTP/1.1 connections, each one client with its own
//! cookie jar, speaking DJForge's API (`GET /api/me`, `GET /api/prefs`, `PUT /api/prefs/{key}` with a
//! JSON body). Every client first stores one preference of the run's session size (`PUT
//! /api/prefs/blob`, which creates its session), then the clients warm up together, then the measured
//! run. The figures it reads around the measured run (CPU, Redis) are taken by a callback while every
//! client waits at the starting line, so they cover exactly the measured requests.

use crate::driver::Stats;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

/// One request may take this long before it counts as an error (and the connection is opened again):
/// every run stays bounded even if a server stops answering.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What each client asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Work {
    /// Every request is `GET /api/me`: it reads and increments `visits`, a write every request.
    Write,
    /// Every request is `GET /api/prefs`: read only.
    Read,
    /// Nine requests in ten are `GET /api/prefs`, the tenth `PUT /api/prefs/theme` with a small JSON
    /// object (a new value each time), staggered between clients.
    Mixed,
}

impl Work {
    pub const ALL: [Work; 3] = [Work::Write, Work::Read, Work::Mixed];

    pub fn name(self) -> &'static str {
        match self {
            Work::Write => "write (GET /api/me)",
            Work::Read => "read (GET /api/prefs)",
            Work::Mixed => "mixed 90% read / 10% PUT",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Work::Write => "write",
            Work::Read => "read",
            Work::Mixed => "mixed",
        }
    }

    /// Whether request `i` of a client is a write.
    fn is_write(self, i: u64) -> bool {
        match self {
            Work::Write => true,
            Work::Read => false,
            Work::Mixed => i % 10 == 9,
        }
    }
}

/// What one measured run answers: the driver's figures and how many of its requests were writes.
pub struct Run {
    pub stats: Stats,
    pub writes: u64,
}

/// One client: a connection and a cookie jar (the session cookie it was last given).
struct Client {
    addr: SocketAddr,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    cookie: Option<String>,
}

impl Client {
    async fn connect(&mut self) -> Result<(), String> {
        self.sender = Some(crate::driver::http1(self.addr).await?);
        Ok(())
    }

    /// One request, bounded by [`REQUEST_TIMEOUT`]; `Ok(status)` once the whole body was read.
    async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<StatusCode, String> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.request_inner(method, path, body)).await {
            Ok(r) => r,
            Err(_) => {
                self.sender = None;
                Err("timed out".into())
            }
        }
    }

    async fn request_inner(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<StatusCode, String> {
        if self.sender.is_none() {
            self.connect().await?;
        }
        let sender = self.sender.as_mut().expect("connected");
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "127.0.0.1");
        if let Some(c) = &self.cookie {
            req = req.header(header::COOKIE, c.as_str());
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| e.to_string())?;
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

    /// Request `i` of `work`.
    async fn step(&mut self, work: Work, i: u64) -> bool {
        let r = if work.is_write(i) {
            match work {
                Work::Write => self.request(Method::GET, "/api/me", None).await,
                _ => {
                    let body = Bytes::from(format!("{{\"n\":{i}}}"));
                    self.request(Method::PUT, "/api/prefs/theme", Some(body))
                        .await
                }
            }
        } else {
            self.request(Method::GET, "/api/prefs", None).await
        };
        matches!(r, Ok(s) if s.is_success())
    }
}

/// The JSON body of the set-up write: a string of `size` bytes (quotes included).
pub fn blob(size: usize) -> Bytes {
    let mut s = String::with_capacity(size.max(2));
    s.push('"');
    // Printable, varied characters (no escaping needed), so nothing along the way shrinks it.
    for i in 0..size.saturating_sub(2) {
        s.push(char::from(b'a' + (i % 26) as u8));
    }
    s.push('"');
    Bytes::from(s)
}

/// Sets up `clients` clients (each stores a preference of `size` bytes, creating its session), warms
/// up for `warmup`, then runs `work` for `duration`. `around` is called once with `true` just before
/// the measured run starts and once with `false` just after every client has finished (while no
/// request is in flight), to read counters. `sessions`: whether the server is expected to hand out
/// a session cookie. The driver runs on its own single-threaded runtime, on the calling thread.
#[allow(clippy::too_many_arguments)]
pub fn run(
    addr: SocketAddr,
    clients: usize,
    work: Work,
    size: usize,
    sessions: bool,
    warmup: Duration,
    duration: Duration,
    mut around: impl FnMut(bool),
) -> Run {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("driver runtime");
    rt.block_on(async move {
        let ready = Arc::new(Barrier::new(clients + 1));
        let warm = Arc::new(Barrier::new(clients + 1));
        let go = Arc::new(Barrier::new(clients + 1));
        let body = blob(size);
        let mut tasks = Vec::with_capacity(clients);
        for n in 0..clients {
            let (ready, warm, go, body) = (ready.clone(), warm.clone(), go.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = Client {
                    addr,
                    sender: None,
                    cookie: None,
                };
                let mut set_up = false;
                for _ in 0..3 {
                    let r = c
                        .request(Method::PUT, "/api/prefs/blob", Some(body.clone()))
                        .await;
                    if matches!(r, Ok(s) if s.is_success()) && (!sessions || c.cookie.is_some()) {
                        set_up = true;
                        break;
                    }
                }
                ready.wait().await;
                let mut i = n as u64; // stagger the mixed pattern between clients
                let warm_until = Instant::now() + warmup;
                while Instant::now() < warm_until {
                    c.step(work, i).await;
                    i += 1;
                }
                warm.wait().await;
                go.wait().await;
                let t0 = Instant::now();
                let deadline = t0 + duration;
                let mut lat = Vec::with_capacity(16 * 1024);
                let (mut requests, mut errors, mut writes) = (0u64, 0u64, 0u64);
                loop {
                    let t = Instant::now();
                    if t >= deadline {
                        break;
                    }
                    let write = work.is_write(i);
                    let ok = c.step(work, i).await;
                    lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    requests += 1;
                    writes += u64::from(write);
                    errors += u64::from(!ok);
                    i += 1;
                }
                (set_up, requests, errors, writes, lat, t0.elapsed())
            }));
        }
        ready.wait().await;
        warm.wait().await;
        // Every client is at the starting line: read the counters, then let them go.
        around(true);
        go.wait().await;
        let cpu0 = crate::cpu::this_thread_ns();
        let mut stats = Stats::default();
        let mut longest = Duration::ZERO;
        let mut writes = 0;
        let mut not_set_up = 0;
        for t in tasks {
            let (ok, r, e, w, l, el) = t.await.expect("client task");
            not_set_up += u64::from(!ok);
            stats.requests += r;
            stats.errors += e;
            writes += w;
            stats.latencies_us.extend(l);
            longest = longest.max(el);
        }
        stats.driver_ns = crate::cpu::this_thread_ns().saturating_sub(cpu0);
        around(false);
        // A client whose set-up failed has no session of the run's size: count it as an error.
        stats.errors += not_set_up;
        stats.elapsed = longest;
        stats.latencies_us.sort_unstable();
        Run { stats, writes }
    })
}
