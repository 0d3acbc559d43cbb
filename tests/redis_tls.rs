//! The Redis store over TLS (feature `redis-tls`): a real `redis-server --tls-port` with a certificate
//! from a throwaway CA made by `openssl` for this test.
#![cfg(feature = "redis-tls")]

mod support;

use sessionforge::id::Token;
use sessionforge::store::redis::{RedisConfig, RedisStore};
use sessionforge::store::{HealthStatus, Record, SessionStore};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `openssl` with `args` in `dir`, failing with an install hint when it is missing.
fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| {
            panic!("openssl is needed for the TLS tests ({e}): apt-get install openssl")
        });
    assert!(status.success(), "openssl {args:?} failed");
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=sessionforge test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

/// A TLS-only redis-server, killed on drop.
struct TlsRedis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        certificates(dir.path());
        let port = support::free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args([
                "--tls-cert-file",
                "server.pem",
                "--tls-key-file",
                "server.key",
            ])
            .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: apt-get install redis-server");
        let server = TlsRedis { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("redis-cli")
                .args([
                    "--tls",
                    "--cacert",
                    "ca.pem",
                    "-p",
                    &port.to_string(),
                    "PING",
                ])
                .current_dir(server.dir.path())
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).trim() == "PONG" {
                return server;
            }
            assert!(Instant::now() < deadline, "TLS redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn record() -> Record {
    let now = sessionforge::expiry::Clock::now(&sessionforge::expiry::SystemClock);
    let mut r = Record::new(
        now,
        now.plus(Duration::from_secs(60)),
        now.plus(Duration::from_secs(600)),
    );
    r.data = serde_json::json!({"tls": true})
        .as_object()
        .unwrap()
        .clone();
    r
}

/// The store of `c` with test timeouts (and the default settings otherwise: the read cache is on).
fn build(c: RedisConfig) -> RedisStore {
    c.with_connect_timeout(Duration::from_secs(2))
        .with_command_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

#[tokio::test]
async fn sessions_round_trip_over_tls_with_the_ca_from_the_environment() {
    let redis = TlsRedis::start();
    let port = redis.port.to_string();
    let ca = redis.ca().display().to_string();
    let config = RedisConfig::from_lookup(|name| match name {
        "REDIS_HOST" => Some("127.0.0.1".into()),
        "REDIS_PORT" => Some(port.clone()),
        "REDIS_TLS" => Some("true".into()),
        "REDIS_TLS_CA_CERT" => Some(ca.clone()),
        _ => None,
    })
    .unwrap();
    assert!(config.tls());
    let store = build(config);
    let key = Token::generate().store_key();
    store.create(&key, &record()).await.unwrap();
    let loaded = store.load(&key).await.unwrap().expect("stored over TLS");
    assert_eq!(loaded.record.data["tls"], true);
    // The read cache (on by default) opens its own TLS connection with the same CA: once it is
    // open, loads of the session are answered from the cache.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = || {
        store
            .read_cache_stats()
            .expect("the read cache is on by default")
    };
    while stats().flushes == 0 {
        assert!(
            Instant::now() < deadline,
            "the read cache never opened its TLS connection: {:?}",
            stats()
        );
        let again = store.load(&key).await.unwrap().expect("stored over TLS");
        assert_eq!(again.record.data["tls"], true);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store.load(&key).await.unwrap().expect("stored over TLS");
    let hits = stats().hits;
    let again = store.load(&key).await.unwrap().expect("stored over TLS");
    assert_eq!(again.record.data["tls"], true);
    assert_eq!(stats().hits, hits + 1, "{:?}", stats());
    let health = store.health().await;
    assert_eq!(health.status, HealthStatus::Ok, "{health:?}");
    assert_eq!(health.backend("redis"), Some(true));
    assert!(store.delete(&key).await.unwrap());
    assert!(store.load(&key).await.unwrap().is_none());
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_promptly() {
    let redis = TlsRedis::start();
    // The system's roots do not include the test CA.
    let config = RedisConfig::new(format!("rediss://127.0.0.1:{}", redis.port)).unwrap();
    let store = build(config);
    let key = Token::generate().store_key();
    let start = Instant::now();
    let err = store.load(&key).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
    let health = store.health().await;
    assert_eq!(health.status, HealthStatus::Unavailable, "{health:?}");
    assert_eq!(health.backend("redis"), Some(false));
    let err = store.create(&key, &record()).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    // Plain text to a TLS port does not get through either.
    let plain = build(RedisConfig::new(format!("redis://127.0.0.1:{}", redis.port)).unwrap());
    let start = Instant::now();
    let err = plain.load(&key).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_ca_file_without_tls_or_unreadable_is_an_error_naming_the_variable() {
    let err = RedisConfig::from_lookup(|name| {
        (name == "REDIS_TLS_CA_CERT").then(|| "/nonexistent/ca.pem".to_owned())
    })
    .unwrap_err();
    assert!(err.to_string().contains("REDIS_TLS_CA_CERT"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not used").unwrap();
    let err = RedisConfig::from_lookup(|name| {
        (name == "REDIS_TLS_CA_CERT").then(|| ca.display().to_string())
    })
    .unwrap_err();
    assert!(err.to_string().contains("TLS is off"), "{err}");
}
