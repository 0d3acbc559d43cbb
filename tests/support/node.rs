//! The Node side of the interop and dashboard tests: `tests/node/` (express 5, express-session,
//! connect-redis, session-file-store, playwright-core, pinned by its `package-lock.json`), its
//! packages installed with `npm ci` on first use, and its app as a child process.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// `tests/node`.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

/// The `node` binary, or a failed test saying how to install it.
pub fn node() -> &'static str {
    require("node", "nodejs");
    "node"
}

/// Fails with an install hint unless `bin --version` runs.
fn require(bin: &str, package: &str) {
    let ok = Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`{bin}` is not installed: the Node interop and dashboard tests need it. Install it with \
         `sudo apt-get install -y {package}` (or run .ci/run, which does)"
    );
}

/// Installs `tests/node`'s packages (`npm ci`) unless the lock file's exact tree is already there.
/// Once per test binary; cargo runs test binaries one at a time.
pub fn packages() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        node();
        let dir = dir();
        let lock =
            std::fs::read(dir.join("package-lock.json")).expect("tests/node/package-lock.json");
        let installed = std::fs::read(dir.join("node_modules/.sessionforge-lock")).ok();
        if installed.as_deref() == Some(&lock[..]) {
            return;
        }
        require("npm", "npm");
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("run npm ci");
        assert!(
            out.status.success(),
            "`npm ci` in tests/node failed (it needs the npm registry once): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // What was installed, to skip the next install while the lock file is unchanged.
        std::fs::write(dir.join("node_modules/.sessionforge-lock"), lock).unwrap();
    });
}

/// `tests/node/app.js` running: express-session over connect-redis (or session-file-store), killed on
/// drop.
pub struct NodeApp {
    child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl NodeApp {
    /// Starts the app with `vars` (see the top of `app.js`) on a free loopback port.
    pub fn start(vars: &[(&str, &str)]) -> Self {
        packages();
        let mut env: HashMap<&str, &str> = vars.iter().copied().collect();
        env.entry("PORT").or_insert("0");
        let mut child = Command::new(node())
            .arg("app.js")
            .current_dir(dir())
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tests/node/app.js");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let port: u16 = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(p) = line.strip_prefix("listening on ") {
                        break p.trim().parse().expect("a port");
                    }
                }
                Err(_) if Instant::now() > deadline => {
                    panic!("app.js did not start: {:?}", stderr.lock().unwrap())
                }
                Err(_) => {
                    if let Some(status) = child.try_wait().unwrap() {
                        panic!("app.js exited ({status}): {:?}", stderr.lock().unwrap());
                    }
                }
            }
        };
        NodeApp {
            child,
            addr: ([127, 0, 0, 1], port).into(),
            stderr,
        }
    }

    /// What the app wrote to standard error so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for NodeApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
