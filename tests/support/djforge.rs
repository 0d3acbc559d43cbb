//! The djforge example for the tests: in process (its own `build`, served on loopback with peer
//! addresses, as its `main` serves it) and as the example binary in a process of its own.
#![allow(dead_code)]

use djforge::settings::Settings;
use sessionforge::shutdown::Shutdown;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The app in this process.
pub struct Running {
    pub addr: SocketAddr,
    pub store: djforge::Store,
    pub shutdown: Shutdown,
}

/// The process-wide Prometheus recorder (one per test binary), for the app's metrics route.
pub fn metrics() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .expect("install the Prometheus recorder");
            sessionforge::metrics::describe();
            handle
        })
        .clone()
}

/// Builds the app from `vars` (the environment it would read; nothing else is read) and serves it
/// on a free loopback port, with peer addresses as the binary serves it.
pub async fn start(vars: &[(&str, &str)]) -> Running {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let settings = Settings::from_lookup(|name| vars.get(name).cloned()).expect("settings");
    let shutdown = Shutdown::new();
    let app = djforge::build(&settings, &shutdown, Some(metrics()))
        .await
        .expect("build the app");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let signal = shutdown.signal();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(signal)
        .await
        .unwrap();
    });
    Running {
        addr,
        store: app.store,
        shutdown,
    }
}

/// The example binary, which a full `cargo test` builds next to the test binaries (a filtered run
/// such as `cargo test --test djforge` does not: build it with `cargo build --example djforge`).
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("examples").join("djforge");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let newest_source = ["src", "examples/djforge/src"]
        .iter()
        .filter_map(|d| newest(&root.join(d)))
        .max();
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    assert!(
        built.is_some() && built >= newest_source,
        "{} is missing or older than its sources: run the whole `cargo test --all-features`, or \
         `cargo build --all-features --example djforge` first",
        bin.display()
    );
    bin
}

/// The newest modification time under `dir`.
fn newest(dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            if meta.is_dir() {
                newest(&e.path())
            } else {
                meta.modified().ok()
            }
        })
        .max()
}

/// The example binary running in a process of its own, its output collected line by line; killed
/// (SIGKILL) on drop if still running.
pub struct Process {
    child: Child,
    pub addr: SocketAddr,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts the binary with exactly `vars` (and `PATH`), on a free loopback port unless `PORT` is
    /// among them, and waits until it listens.
    pub fn spawn(vars: &[(&str, &str)]) -> Self {
        let mut child = Self::command(vars)
            .spawn()
            .expect("start the djforge binary");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let line = stdout.lock().unwrap().iter().find_map(|l| {
                l.strip_prefix("DJForge listening on http://")
                    .map(str::to_owned)
            });
            if let Some(a) = line {
                break a.parse().expect("a socket address");
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "djforge exited ({status}) before listening: {:?} {:?}",
                    stdout.lock().unwrap(),
                    stderr.lock().unwrap()
                );
            }
            assert!(Instant::now() < deadline, "djforge did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        };
        Process {
            child,
            addr,
            stdout,
            stderr,
        }
    }

    /// The command that runs the binary with exactly `vars`: for a start expected to fail.
    pub fn command(vars: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(binary());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("RUST_LOG", "warn")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`-STOP`, `-CONT`, `-TERM`).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill {sig} failed");
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                // Let the readers take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits up to `limit` for a line of standard error that `matches`.
    pub fn wait_for_stderr(
        &self,
        limit: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.stderr.lock().unwrap().iter().find(|l| matches(l)) {
                return Some(l.clone());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects a pipe's lines in the background.
fn collect(pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}
