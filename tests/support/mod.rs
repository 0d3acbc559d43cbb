//! Test support: an RAII `redis-server` on a free loopback port.
//!
//! Every test that needs Redis starts its own server with [`RedisServer::start`] (or
//! [`RedisServer::with_args`] for `requirepass` and the like). The server lives in a temporary
//! directory, never persists (`--save "" --appendonly no`), listens on 127.0.0.1 only, and is killed
//! when the value is dropped. The machine's own Redis on 6379 is never touched.
//!
//! Include it from a test file with `mod support;`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer PING after being started.
const READY_DEADLINE: Duration = Duration::from_secs(10);

/// A running `redis-server`, stopped (SIGKILL) on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    password: Option<String>,
}

impl RedisServer {
    /// A plain server on a free loopback port.
    pub fn start() -> Self {
        Self::with_args(&[])
    }

    /// A server with extra `redis-server` arguments, e.g. `&["--requirepass", "secret"]`.
    pub fn with_args(args: &[&str]) -> Self {
        let extra: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let password = extra
            .iter()
            .position(|a| a == "--requirepass")
            .and_then(|i| extra.get(i + 1).cloned());
        // A port picked by binding :0 can be taken by someone else before redis-server binds it:
        // try a few fresh ports before giving up.
        let mut last_err = String::new();
        for _ in 0..5 {
            let mut server = RedisServer {
                child: None,
                port: free_port(),
                dir: tempfile::tempdir().expect("create a temporary directory for redis-server"),
                extra: extra.clone(),
                password: password.clone(),
            };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) => last_err = e,
            }
        }
        panic!("redis-server did not start on a free loopback port: {last_err}");
    }

    /// `redis://127.0.0.1:<port>` (no credentials).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the server with SIGKILL (a crash, not a shutdown) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server with SIGSTOP: connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server with SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Starts the server again on the same port (killing it first if it still runs). Data is gone:
    /// the server never persists.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("redis-server did not restart on port {}: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Runs `redis-cli` against the server (authenticated when the server has a password) and
    /// answers its standard output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null());
        if let Some(pw) = &self.password {
            // REDISCLI_AUTH instead of `-a`: no warning on stderr, no password in `ps`.
            cmd.env("REDISCLI_AUTH", pw);
        }
        let out = run_with_deadline(cmd, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("redis-cli {args:?}: {e}"));
        String::from_utf8_lossy(&out).trim_end().to_owned()
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid().expect("the redis-server is not running");
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill {sig} {pid} failed");
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let child = spawn(self.port, self.dir.path(), &self.extra)?;
        self.child = Some(child);
        match wait_ready(self.port, self.child.as_mut().expect("just spawned")) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.kill();
                let log =
                    std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                Err(format!("{e}; log: {}", log.lines().last().unwrap_or("")))
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL works on a stopped (SIGSTOP) process too.
        self.kill();
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free loopback port")
}

fn spawn(port: u16, dir: &Path, extra: &[String]) -> Result<Child, String> {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--daemonize", "no"])
        .args(["--dir"])
        .arg(dir)
        .args(["--logfile"])
        .arg(dir.join("redis.log"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            panic!(
                "redis-server is not installed (the Redis tests start their own server): \
                 apt-get install redis-server"
            )
        }
        format!("spawn redis-server: {e}")
    })
}

/// Polls the port with an inline PING until the server answers (`+PONG`, or `-NOAUTH` when it has a
/// password), the process exits, or the deadline passes.
fn wait_ready(port: u16, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + READY_DEADLINE;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis-server exited early with {status}"));
        }
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 64];
            if s.write_all(b"PING\r\n").is_ok() {
                if let Ok(n) = s.read(&mut buf) {
                    let reply = &buf[..n];
                    if reply.starts_with(b"+PONG") || reply.starts_with(b"-NOAUTH") {
                        return Ok(());
                    }
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!("no PONG on port {port} within {READY_DEADLINE:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command, killing it if it outlives `limit`; answers its stdout.
fn run_with_deadline(mut cmd: Command, limit: Duration) -> Result<Vec<u8>, String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    // Read on a thread so a large output cannot fill the pipe and stall the child.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not finish within {limit:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(e.to_string()),
        }
    }
    reader
        .join()
        .map_err(|_| "stdout reader panicked".to_owned())
}
