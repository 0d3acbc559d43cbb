//! A TCP proxy in front of a `redis-server` that misbehaves on demand: it drops a share of Redis's
//! replies (closing the client's connection after Redis ran the command, so the client cannot know
//! whether it did), goes down (closes every connection and refuses new ones until it is up again), or
//! falls silent (a partition: connections stay open and nothing gets through, no FIN, no RST).
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The proxy's controls; cheap to clone.
#[derive(Clone, Default)]
pub struct Chaos {
    /// Replies dropped per million.
    drop_per_million: Arc<AtomicU32>,
    down: Arc<AtomicBool>,
    /// Bytes are read and dropped both ways, connections left open.
    silent: Arc<AtomicBool>,
    /// Bumped when the proxy goes down: connections of an older generation close.
    generation: Arc<AtomicU64>,
    /// Replies dropped so far.
    pub dropped: Arc<AtomicU64>,
}

impl Chaos {
    /// Drops about `share` (0.0 to 1.0) of the replies from now on.
    pub fn drop_replies(&self, share: f64) {
        self.drop_per_million
            .store((share.clamp(0.0, 1.0) * 1e6) as u32, Ordering::SeqCst);
    }

    /// Closes every connection and refuses new ones.
    pub fn go_down(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Accepts connections again.
    pub fn come_up(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    /// Lets nothing through either way while `on`, with every connection left open.
    pub fn fall_silent(&self, on: bool) {
        self.silent.store(on, Ordering::SeqCst);
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    fn roll(&self) -> bool {
        let p = self.drop_per_million.load(Ordering::Relaxed);
        p > 0 && getrandom::u32().unwrap_or(u32::MAX) % 1_000_000 < p
    }
}

/// Starts the proxy in front of `upstream` on a free loopback port; answers the port.
pub async fn proxy(upstream: u16, chaos: Chaos) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            if chaos.is_down() {
                drop(client);
                continue;
            }
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                continue;
            };
            let chaos = chaos.clone();
            let generation = chaos.generation.load(Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let c2 = chaos.clone();
                let up = tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if c2.generation.load(Ordering::SeqCst) != generation {
                            return;
                        }
                        if c2.silent.load(Ordering::SeqCst) {
                            continue;
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if chaos.generation.load(Ordering::SeqCst) != generation {
                        break;
                    }
                    if chaos.silent.load(Ordering::SeqCst) {
                        continue;
                    }
                    if chaos.roll() {
                        // Redis ran it; the client never hears.
                        chaos.dropped.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                up.abort();
            });
        }
    });
    port
}
