//! Test support: a real Redis Cluster and a real Sentinel set-up on loopback ports.
//!
//! * [`RedisCluster::start`]: `masters` × `redis-server --cluster-enabled yes` plus `replicas` per
//!   master, joined by `redis-cli --cluster create --cluster-yes --cluster-replicas N`, ready once
//!   every node reports `cluster_state:ok` with all 16384 slots and sees every other node. Each node
//!   is a [`RedisServer`] (free port, temporary directory, SIGKILL on drop); the cluster bus gets its
//!   own free port (`cluster-port`), so no `port + 10000` arithmetic can collide or overflow.
//! * [`SentinelSetup::start`]: one master, one replica and three `redis-server --sentinel` processes
//!   monitoring it with quorum 2, ready once every sentinel knows the replica and its peers.
//!
//! Include it from a test file next to `mod support;` with
//! `#[path = "support/cluster.rs"] mod cluster;`.
#![allow(dead_code)]

use crate::support::{free_port, RedisServer};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a cluster or sentinel set-up may take to become ready.
const FORM_DEADLINE: Duration = Duration::from_secs(30);

/// `cluster-node-timeout` of the test cluster: how long a master may be silent before its replica
/// takes over. Short, so a failover test takes seconds.
pub const NODE_TIMEOUT_MS: u64 = 1000;

/// A running Redis Cluster on loopback; every node is killed on drop.
pub struct RedisCluster {
    /// The nodes, masters first as created (roles change after a failover: ask [`Self::masters`]).
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// `masters` masters with `replicas` replicas each.
    pub fn start(masters: usize, replicas: usize) -> Self {
        let total = masters * (replicas + 1);
        let nodes: Vec<RedisServer> = (0..total)
            .map(|_| {
                let bus = free_port().to_string();
                let timeout = NODE_TIMEOUT_MS.to_string();
                RedisServer::with_args(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    &bus,
                    "--cluster-node-timeout",
                    &timeout,
                    // A replica of a master that was killed may take over even if it had lost its
                    // link for a while: the tests want a quick failover, not a cautious one.
                    "--cluster-replica-validity-factor",
                    "0",
                    "--appendonly",
                    "no",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let mut cmd = Command::new("redis-cli");
        cmd.args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = cmd.output().expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok(total);
        cluster
    }

    /// Seed addresses `127.0.0.1:<port>` of every node, as `REDIS_CLUSTER_NODES` takes them.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect()
    }

    /// Runs `redis-cli -c` (following `MOVED` redirections) against the first running node; answers
    /// its standard output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let node = self
            .nodes
            .iter()
            .find(|n| n.pid().is_some())
            .expect("a running node");
        let out = Command::new("redis-cli")
            .args(["-c", "-h", "127.0.0.1", "-p", &node.port().to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .expect("run redis-cli -c");
        assert!(out.status.success(), "redis-cli -c {args:?} failed");
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// Waits until every running node says `cluster_state:ok`, covers all slots and knows `known`
    /// nodes.
    pub fn wait_ok(&self, known: usize) {
        let deadline = Instant::now() + FORM_DEADLINE;
        loop {
            let ok = self.nodes.iter().filter(|n| n.pid().is_some()).all(|n| {
                let info = inline(n.port(), "CLUSTER INFO").unwrap_or_default();
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && info.contains(&format!("cluster_known_nodes:{known}"))
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become ready within {FORM_DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every running node reports `cluster_state:ok` and agrees on the masters.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + FORM_DEADLINE;
        loop {
            let running: Vec<&RedisServer> =
                self.nodes.iter().filter(|n| n.pid().is_some()).collect();
            let ok = running.iter().all(|n| {
                inline(n.port(), "CLUSTER INFO")
                    .unwrap_or_default()
                    .contains("cluster_state:ok")
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not recover within {FORM_DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Indexes (into [`Self::nodes`]) of the running nodes whose `ROLE` is master.
    pub fn masters(&self) -> Vec<usize> {
        self.role_indexes("master")
    }

    /// Indexes of the running nodes whose `ROLE` is slave.
    pub fn replicas(&self) -> Vec<usize> {
        self.role_indexes("slave")
    }

    fn role_indexes(&self, role: &str) -> Vec<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.pid().is_some())
            .filter(|(_, n)| {
                inline(n.port(), "ROLE")
                    .map(|r| r.contains(role))
                    .unwrap_or(false)
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// The index of the replica of master `master`.
    pub fn replica_of(&self, master: usize) -> usize {
        let port = format!("master_port:{}", self.nodes[master].port());
        self.replicas()
            .into_iter()
            .find(|&r| self.nodes[r].cli(&["INFO", "replication"]).contains(&port))
            .expect("the master has a replica")
    }

    /// Waits until replica `replica` has caught up with its master's replication offset.
    pub fn wait_replicated(&self, master: usize, replica: usize) {
        let deadline = Instant::now() + FORM_DEADLINE;
        loop {
            let m = offset(
                &self.nodes[master].cli(&["INFO", "replication"]),
                "master_repl_offset",
            );
            let r = offset(
                &self.nodes[replica].cli(&["INFO", "replication"]),
                "slave_repl_offset",
            );
            if m.is_some() && m == r {
                return;
            }
            assert!(Instant::now() < deadline, "the replica did not catch up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `CLUSTER FAILOVER` on `replica` (a coordinated, lossless hand-over: the master stops writes
    /// until the replica has its offset), then waits until it is master and the cluster is ok.
    pub fn manual_failover(&self, replica: usize) {
        let reply = self.nodes[replica].cli(&["CLUSTER", "FAILOVER"]);
        assert_eq!(reply, "OK", "CLUSTER FAILOVER");
        self.wait_role(replica, "master");
        self.wait_healthy();
    }

    /// SIGKILLs node `i` (a crash).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Waits until node `i` reports `role` (`master` or `slave`).
    pub fn wait_role(&self, i: usize, role: &str) {
        let deadline = Instant::now() + FORM_DEADLINE;
        loop {
            if inline(self.nodes[i].port(), "ROLE").is_some_and(|r| r.contains(role)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} did not become {role} within {FORM_DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One master, one replica and three sentinels (quorum 2) on loopback; all killed on drop.
pub struct SentinelSetup {
    /// The data nodes: the master first as started (roles swap on failover: ask [`Self::master`]).
    pub servers: Vec<RedisServer>,
    /// The sentinels.
    pub sentinels: Vec<Sentinel>,
}

/// The master name the sentinels monitor.
pub const MASTER_NAME: &str = "mymaster";

impl SentinelSetup {
    /// Master, replica and three sentinels, ready when each sentinel knows the replica and two peers.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Same, with extra `redis-server` arguments for the data nodes (e.g. `--requirepass`).
    pub fn start_with(args: &[&str]) -> Self {
        let master = RedisServer::with_args(args);
        let mut replica_args: Vec<&str> = args.to_vec();
        let port = master.port().to_string();
        replica_args.extend(["--replicaof", "127.0.0.1", &port]);
        let password = args
            .iter()
            .position(|a| *a == "--requirepass")
            .map(|i| args[i + 1].to_owned());
        if let Some(pw) = &password {
            replica_args.extend(["--masterauth", pw.as_str()]);
        }
        let replica = RedisServer::with_args(&replica_args);
        let sentinels = (0..3)
            .map(|_| Sentinel::start(master.port(), password.as_deref()))
            .collect();
        let setup = SentinelSetup {
            servers: vec![master, replica],
            sentinels,
        };
        setup.wait_ready();
        setup
    }

    /// Sentinel addresses `127.0.0.1:<port>`, as `REDIS_SENTINELS` takes them.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    /// The port of the master according to the first sentinel.
    pub fn master_port(&self) -> u16 {
        let reply = self.sentinels[0].cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]);
        reply
            .lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .expect("the sentinel names a master")
    }

    /// The index into [`Self::servers`] of the master the sentinels name.
    pub fn master(&self) -> usize {
        let port = self.master_port();
        self.servers
            .iter()
            .position(|s| s.port() == port)
            .expect("the sentinels' master is one of ours")
    }

    /// Waits until the replica has everything the master had written when this was called: its
    /// `slave_repl_offset` reaches the `master_repl_offset` the master reports first. (Replication is
    /// asynchronous, and `SENTINEL FAILOVER` does not wait for the replica to catch up.)
    pub fn wait_replicated(&self) {
        let master = self.master();
        let replica = 1 - master;
        let target = offset(
            &self.servers[master].cli(&["INFO", "replication"]),
            "master_repl_offset",
        )
        .expect("the master reports its replication offset");
        let deadline = Instant::now() + FORM_DEADLINE;
        loop {
            let at = offset(
                &self.servers[replica].cli(&["INFO", "replication"]),
                "slave_repl_offset",
            );
            if at.is_some_and(|at| at >= target) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the replica did not reach offset {target} within {FORM_DEADLINE:?} (at {at:?})"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + FORM_DEADLINE;
        loop {
            let synced = self.servers[0]
                .cli(&["INFO", "replication"])
                .contains("state=online");
            let known = self.sentinels.iter().all(|s| {
                let master = s.cli(&["SENTINEL", "MASTER", MASTER_NAME]);
                field(&master, "num-slaves") == Some("1")
                    && field(&master, "num-other-sentinels") == Some("2")
            });
            if synced && known {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinels did not settle within {FORM_DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `SENTINEL FAILOVER` and waits until every sentinel names the new master, it says it is
    /// master, and the old master replicates from it.
    pub fn failover(&self) {
        let old = self.master();
        let reply = self.sentinels[0].cli(&["SENTINEL", "FAILOVER", MASTER_NAME]);
        assert_eq!(reply, "OK", "SENTINEL FAILOVER");
        let new = 1 - old;
        let deadline = Instant::now() + FORM_DEADLINE;
        let new_port = self.servers[new].port().to_string();
        loop {
            let named = self.sentinels.iter().all(|s| {
                s.cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])
                    .contains(&new_port)
            });
            let promoted =
                inline(self.servers[new].port(), "ROLE").is_some_and(|r| r.contains("master"));
            let demoted =
                inline(self.servers[old].port(), "ROLE").is_some_and(|r| r.contains("slave"));
            if named && promoted && demoted {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinel failover did not complete within {FORM_DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A `redis-server --sentinel` on a free loopback port, killed on drop.
pub struct Sentinel {
    child: Child,
    /// The sentinel's port.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Sentinel {
    fn start(master_port: u16, password: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("a directory for the sentinel");
        let port = free_port();
        let mut conf = format!(
            "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\nlogfile {dir}/sentinel.log\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 5000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            dir = dir.path().display()
        );
        if let Some(pw) = password {
            conf.push_str(&format!("sentinel auth-pass {MASTER_NAME} {pw}\n"));
        }
        let path = dir.path().join("sentinel.conf");
        std::fs::write(&path, conf).expect("write sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&path)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server --sentinel");
        let mut s = Sentinel { child, port, dir };
        let deadline = Instant::now() + FORM_DEADLINE;
        while inline(port, "PING").as_deref() != Some("+PONG") {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("the sentinel exited early with {status}");
            }
            assert!(Instant::now() < deadline, "the sentinel did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Keep the child in the struct even on the panicking paths above.
        s.port = port;
        s
    }

    /// Runs `redis-cli` against the sentinel; answers its output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One inline command over a raw socket (no redis-cli process: cheap enough to poll). Answers the
/// reply text, or `None` when the port does not answer within half a second.
pub fn inline(port: u16, command: &str) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0;
    // Read until the reply looks complete (a short pause after the last bytes).
    loop {
        match s.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                let _ = s.set_read_timeout(Some(Duration::from_millis(30)));
                if n == buf.len() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).trim_end().to_owned())
}

/// `name:value` from `INFO` text.
fn offset(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}:")))
        .and_then(|v| v.trim().parse().ok())
}

/// The value after `name` in a flat `redis-cli` field/value listing (one per line).
fn field<'a>(listing: &'a str, name: &str) -> Option<&'a str> {
    let mut lines = listing.lines();
    while let Some(l) = lines.next() {
        if l.trim() == name {
            return lines.next().map(str::trim);
        }
    }
    None
}
