//! Graceful shutdown under load: clients drive a server (Redis primary, files fallback) while the test
//! process receives a real SIGTERM. The server stops accepting, finishes what is in flight, drains the
//! saves; afterwards every change whose response was acknowledged is in the store.
//!
//! This file holds one test on purpose: the SIGTERM goes to the whole test process, whose handler
//! (`Shutdown::listen_for_os_signals`) only this test installs.

#[path = "support/load.rs"]
mod load;
mod support;

use sessionforge::shutdown::Shutdown;
use sessionforge::store::redis::RedisConfig;
use sessionforge::store::{FailoverStore, FileStore};
use sessionforge::SessionLayer;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use support::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_loses_no_acknowledged_change() {
    tokio::time::timeout(Duration::from_secs(40), async {
        let panics = load::count_panics();
        let redis = RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let shutdown = Shutdown::new();
        shutdown.listen_for_os_signals();
        let store = FailoverStore::builder(
            RedisConfig::new(redis.url())
                .unwrap()
                .with_prefix("sd:sess:")
                .build()
                .unwrap(),
            FileStore::new(dir.path()),
        )
        .start(&shutdown)
        .await;
        let layer = SessionLayer::new(store.clone())
            .with_secure(false)
            .with_shutdown(&shutdown);
        let app = load::app().layer(layer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn({
            let signal = shutdown.signal();
            async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(signal)
                    .await
                    .unwrap()
            }
        });

        // Clients run until their requests start failing (the server is gone) or 2000 each.
        let never = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..8)
            .map(|c| {
                tokio::spawn(load::run_client(
                    addr,
                    format!("c{c}"),
                    2000,
                    never.clone(),
                    Duration::from_secs(5),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(700)).await;
        // A real SIGTERM to this process.
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server stopped after SIGTERM")
            .unwrap();
        assert!(shutdown.is_started());
        let report = shutdown.drain(Duration::from_secs(5)).await;

        let mut tally = load::Tally::default();
        for c in clients {
            tally.absorb(c.await.unwrap());
        }
        let (lost_keys, lost_sessions) = load::verify(&store, &tally.acked).await;
        eprintln!(
            "SHUTDOWN REPORT: sent {}, acknowledged {}, refused or cut off after SIGTERM {}, \
             changes lost {lost_keys}, sessions lost {lost_sessions}, drain {report:?}",
            tally.sent,
            tally.acked.len(),
            tally.non_2xx
        );
        assert!(tally.acked.len() > 50, "the load ran before the signal");
        assert!(tally.non_2xx > 0, "the signal stopped the server mid-run");
        assert_eq!(lost_keys, 0, "acknowledged changes lost");
        assert_eq!(lost_sessions, 0);
        assert!(report.clean(), "{report:?}");
        assert_eq!(load::count_panics(), panics, "no panics");
    })
    .await
    .expect("finished in time");
}
