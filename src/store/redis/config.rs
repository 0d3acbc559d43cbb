//! [`RedisConfig`]: where the Redis store connects and how it names and times its keys.

use crate::expiry::{Clock, SharedClock};
use crate::format::SharedFormat;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The default key prefix.
pub(super) const DEFAULT_PREFIX: &str = "session:";
/// The default limit for opening a connection (TCP, TLS, `AUTH`, `SELECT`).
pub(super) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The default limit for one command's answer.
pub(super) const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// The default number of merge-and-retry rounds a contended save may take.
const DEFAULT_MAX_SAVE_ATTEMPTS: u32 = 32;
/// The default size of the read cache, in sessions: a few megabytes for typical sessions.
pub(super) const DEFAULT_READ_CACHE: usize = 10_000;

/// The cargo feature that brings TLS (`rediss://`) support.
pub(super) const TLS_FEATURE: &str = "redis-tls";

/// Why a Redis configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// An environment variable has a value that cannot be used.
    InvalidVar {
        /// The variable, e.g. `REDIS_PORT`.
        var: &'static str,
        /// What was wrong (never the value of a secret).
        reason: String,
    },
    /// The connection URL cannot be used (the URL itself is not repeated: it may hold a password).
    InvalidUrl {
        /// What was wrong.
        reason: String,
    },
    /// A Redis Cluster or Sentinel setting cannot be used (a node list given to a builder method, a
    /// key prefix with a hash tag in cluster mode).
    InvalidTopology {
        /// What was wrong.
        reason: String,
    },
    /// TLS was asked for (`REDIS_TLS=true` or a `rediss://` URL) but this build has no TLS support.
    TlsNotEnabled {
        /// The cargo feature to enable.
        feature: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InvalidVar { var, reason } => write!(f, "invalid {var}: {reason}"),
            ConfigError::InvalidUrl { reason } => write!(f, "invalid Redis URL: {reason}"),
            ConfigError::InvalidTopology { reason } => {
                write!(f, "invalid Redis Cluster/Sentinel setting: {reason}")
            }
            ConfigError::TlsNotEnabled { feature } => write!(
                f,
                "Redis TLS was requested but sessionforge was built without the `{feature}` feature"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Settings of a [`RedisStore`](super::RedisStore).
///
/// From the environment ([`RedisConfig::from_env`]): `REDIS_URL` wins when set; otherwise the URL is
/// built from `REDIS_HOST` (default `localhost`), `REDIS_PORT` (6379), `REDIS_USERNAME`,
/// `REDIS_PASSWORD` (both percent-encoded into the URL), `REDIS_DB` (0) and `REDIS_TLS`
/// (`true`/`false`). Then adjust it with the consuming `with_*` methods:
///
/// ```
/// use sessionforge::store::redis::RedisConfig;
/// use std::time::Duration;
///
/// let env = |name: &str| match name {
///     "REDIS_HOST" => Some("cache.internal".to_owned()),
///     "REDIS_PASSWORD" => Some("p@ss:w/rd".to_owned()),
///     "REDIS_DB" => Some("1".to_owned()),
///     _ => None,
/// };
/// let config = RedisConfig::from_lookup(env)
///     .unwrap()
///     .with_prefix("djforge:sess:")
///     .with_command_timeout(Duration::from_millis(500));
/// assert_eq!(config.prefix(), "djforge:sess:");
/// // Debug and Display never show the password.
/// assert!(!format!("{config:?}").contains("p@ss"));
/// assert_eq!(config.to_string(), "redis://:****@cache.internal:6379/1");
///
/// // A bad value is an error naming the variable.
/// let err = RedisConfig::from_lookup(|n| (n == "REDIS_PORT").then(|| "abc".to_owned())).unwrap_err();
/// assert!(err.to_string().contains("REDIS_PORT"));
/// ```
#[derive(Clone)]
#[must_use]
pub struct RedisConfig {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) max_save_attempts: u32,
    pub(crate) clock: SharedClock,
    pub(crate) tls_ca_cert: Option<Vec<u8>>,
    pub(crate) topology: Topology,
    pub(crate) sentinel_auth: Option<(Option<String>, String)>,
    pub(crate) replica_acks: Option<(u32, Duration)>,
    /// Sessions kept by the client-side read cache; 0: off.
    pub(crate) read_cache: usize,
    pub(crate) format: SharedFormat,
}

impl RedisConfig {
    /// Settings for the server at `url` (`redis://[user[:password]@]host[:port][/db]`, or `rediss://`
    /// with the `redis-tls` feature), with the defaults: prefix `session:`, 1 s connect and command
    /// timeouts, a read cache of 10,000 sessions, the native format, the system clock.
    pub fn new(url: impl Into<String>) -> Result<Self, ConfigError> {
        let url = url.into();
        check_url(&url)?;
        Ok(RedisConfig {
            url,
            prefix: DEFAULT_PREFIX.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            max_save_attempts: DEFAULT_MAX_SAVE_ATTEMPTS,
            clock: crate::expiry::system_clock(),
            tls_ca_cert: None,
            topology: Topology::Single,
            sentinel_auth: None,
            replica_acks: None,
            read_cache: DEFAULT_READ_CACHE,
            format: crate::format::native(),
        })
    }

    /// The store. Does no I/O: Redis may be down.
    pub fn build(self) -> Result<super::RedisStore, ConfigError> {
        super::RedisStore::build(self)
    }

    /// The key prefix (default `session:`): a session lives at `<prefix><store key>`, the listing
    /// index at `<prefix>index`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The limit for opening a connection, including `AUTH` and `SELECT` (default 1 s).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The limit for one command's answer (default 1 s). No store call waits longer on a frozen
    /// server than this (plus the connect timeout when it must connect first).
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How many merge-and-retry rounds a contended save may take before failing (default 32).
    pub fn with_max_save_attempts(mut self, attempts: u32) -> Self {
        self.max_save_attempts = attempts.max(1);
        self
    }

    /// Trusts these root certificates (PEM) for `rediss://` instead of the system's: for a Redis
    /// behind a private CA or with a self-signed certificate. Ignored without TLS.
    pub fn with_tls_ca_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_ca_cert = Some(pem.into());
        self
    }

    /// Talks to a Redis Cluster through these seed nodes (`host:port`, `[v6]:port`, or
    /// `redis://host:port` / `rediss://host:port`; a few are enough, the rest are discovered).
    ///
    /// Credentials and TLS come from this configuration's URL (its user, password and scheme; its
    /// host and port are not used), exactly as for one server; the database must be 0. Node entries
    /// carry no credentials of their own.
    ///
    /// ```
    /// use sessionforge::store::redis::{RedisConfig, Topology};
    ///
    /// let config = RedisConfig::new("redis://:secret@localhost")
    ///     .unwrap()
    ///     .with_cluster_nodes(["10.0.0.1:7000", "10.0.0.2:7000"])
    ///     .unwrap();
    /// assert!(matches!(config.topology(), Topology::Cluster { nodes } if nodes.len() == 2));
    /// assert_eq!(config.to_string(), "redis://:****@10.0.0.1:7000,10.0.0.2:7000 (cluster)");
    /// ```
    pub fn with_cluster_nodes<I, S>(mut self, nodes: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nodes = self.parse_nodes(nodes, None)?;
        if self.db() != 0 {
            return Err(ConfigError::InvalidTopology {
                reason: "Redis Cluster has only database 0".into(),
            });
        }
        self.topology = Topology::Cluster { nodes };
        Ok(self)
    }

    /// Finds the master named `master` through these Sentinel nodes (`host:port`, port 26379 when
    /// left out), and finds it again after a failover. Credentials, database and TLS for the master
    /// come from this configuration's URL, as for one server; the sentinels' own password, if they
    /// have one, from [`RedisConfig::with_sentinel_auth`].
    ///
    /// ```
    /// use sessionforge::store::redis::{RedisConfig, Topology};
    ///
    /// let config = RedisConfig::new("redis://localhost/2")
    ///     .unwrap()
    ///     .with_sentinel(["10.0.0.1", "10.0.0.2:26380"], "sessions")
    ///     .unwrap();
    /// assert!(matches!(config.topology(), Topology::Sentinel { master, .. } if master == "sessions"));
    /// assert_eq!(
    ///     config.to_string(),
    ///     "redis://10.0.0.1:26379,10.0.0.2:26380/2 (sentinel master sessions)"
    /// );
    /// ```
    pub fn with_sentinel<I, S>(
        mut self,
        sentinels: I,
        master: impl Into<String>,
    ) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let sentinels = self.parse_nodes(sentinels, Some(26379))?;
        let master = master.into();
        if master.trim().is_empty() || master.contains(char::is_whitespace) {
            return Err(ConfigError::InvalidTopology {
                reason: "the Sentinel master name must be one word".into(),
            });
        }
        self.topology = Topology::Sentinel { sentinels, master };
        Ok(self)
    }

    /// The sentinels' own credentials (`requirepass` / ACL user of the Sentinel processes), when
    /// they differ from having none. The master's credentials stay those of the URL.
    pub fn with_sentinel_auth(mut self, username: Option<String>, password: String) -> Self {
        self.sentinel_auth = Some((username, password));
        self
    }

    pub(super) fn parse_nodes<I, S>(
        &self,
        nodes: I,
        default_port: Option<u16>,
    ) -> Result<Vec<NodeAddr>, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let tls = self.tls();
        if self.url.starts_with("unix") || self.url.starts_with("redis+unix") {
            return Err(ConfigError::InvalidTopology {
                reason: "a cluster or sentinel set-up is reached over TCP, not a unix socket"
                    .into(),
            });
        }
        let mut out = Vec::new();
        for entry in nodes {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            out.push(NodeAddr::parse(entry, tls, default_port)?);
        }
        if out.is_empty() {
            return Err(ConfigError::InvalidTopology {
                reason: "no node given (expected host:port,host:port,...)".into(),
            });
        }
        Ok(out)
    }

    /// Makes every session write wait until `replicas` replicas have it (`WAIT`), for at most
    /// `timeout`; a write that does not get there counts as the store being unavailable, so no client
    /// is told a write was kept that a failover could discard (under [`FailoverStore`] it goes to the
    /// fallback instead). Costs one more round trip per write. Redis replication is asynchronous:
    /// without this, a master that fails over (Sentinel promotes its replica) can discard writes it
    /// acknowledged in the meantime. For a single server or Sentinel; a cluster refuses it (its
    /// `WAIT` would reach an arbitrary node).
    ///
    /// [`FailoverStore`]: crate::store::FailoverStore
    pub fn with_replica_acks(mut self, replicas: u32, timeout: Duration) -> Self {
        self.replica_acks =
            (replicas > 0).then_some((replicas, timeout.max(Duration::from_millis(1))));
        self
    }

    /// Keeps up to `sessions` recently used sessions in this process, kept correct by Redis itself
    /// (default 10,000; 0 turns it off): a second connection speaks RESP3 with `CLIENT TRACKING` on,
    /// and Redis tells it the moment any client changes, deletes or expires a cached session. A load
    /// of a cached session then costs no round trip, and a save one round trip that also refreshes the
    /// cache. Needs Redis 6 or later; on a single server and under Sentinel (following the current
    /// master), not on a cluster (ignored there, with a warning). Where tracking is refused the store
    /// logs a warning and loads uncached. See the [read cache](super#the-read-cache) for the
    /// guarantees.
    pub fn with_read_cache(mut self, sessions: usize) -> Self {
        self.read_cache = sessions;
        self
    }

    /// Where the store reads the time to turn `expires` into a TTL (default: the system clock); the
    /// layer over the store reads it too.
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How records are encoded and keyed (default native): the express format shares sessions with an
    /// express-session + connect-redis application on the same Redis and prefix.
    pub fn with_format(mut self, format: SharedFormat) -> Self {
        self.format = format;
        self
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The command timeout.
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// One server, a cluster or a Sentinel-watched master.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The database number of the URL (0 when it names none).
    pub(crate) fn db(&self) -> i64 {
        redis::IntoConnectionInfo::into_connection_info(self.url.as_str())
            .map(|i| i.redis_settings().db())
            .unwrap_or(0)
    }

    /// The URL of `node`: this configuration's URL (scheme, credentials, database) with the node's
    /// host and port.
    pub(crate) fn node_url(&self, node: &NodeAddr) -> String {
        with_authority_host(&self.url, &node.to_string())
    }

    /// Whether the connection uses TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        self.url.starts_with("rediss://")
    }

    /// The connection URL with any password replaced by `****`, safe to log.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("max_save_attempts", &self.max_save_attempts)
            .field("read_cache", &self.read_cache)
            .field("format", &self.format.name())
            .field("topology", &self.topology)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for RedisConfig {
    /// The redacted URL; for a cluster or sentinel set-up, with the node list as its host and the
    /// kind after it, e.g. `redis://:****@10.0.0.1:7000,10.0.0.2:7000 (cluster)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |nodes: &[NodeAddr]| {
            nodes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        match &self.topology {
            Topology::Single => f.write_str(&self.redacted_url()),
            Topology::Cluster { nodes } => write!(
                f,
                "{} (cluster)",
                with_authority_host(&self.redacted_url(), &list(nodes))
            ),
            Topology::Sentinel { sentinels, master } => write!(
                f,
                "{} (sentinel master {master})",
                with_authority_host(&self.redacted_url(), &list(sentinels))
            ),
        }
    }
}

/// Where the Redis behind a store lives.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Topology {
    /// One server at the configuration's URL (or a primary behind a stable address).
    Single,
    /// A Redis Cluster, found through these seed nodes ([`RedisConfig::with_cluster_nodes`],
    /// `REDIS_CLUSTER_NODES`).
    Cluster {
        /// Seed nodes.
        nodes: Vec<NodeAddr>,
    },
    /// A master found (and found again after a failover) through Sentinel
    /// ([`RedisConfig::with_sentinel`], `REDIS_SENTINELS` and `REDIS_SENTINEL_MASTER`).
    Sentinel {
        /// The Sentinel nodes.
        sentinels: Vec<NodeAddr>,
        /// The name the sentinels monitor the master under.
        master: String,
    },
}

/// A node's address: host (name, IPv4 or IPv6 literal) and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeAddr {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl NodeAddr {
    /// `host:port`, `[v6]:port`, optionally with a `redis://` or `rediss://` scheme that must agree
    /// with the configuration's TLS setting; no credentials, path or query.
    pub(super) fn parse(
        entry: &str,
        tls: bool,
        default_port: Option<u16>,
    ) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::InvalidTopology {
            reason: format!("node {entry:?}: {why}"),
        };
        let rest = match entry.split_once("://") {
            None => entry,
            Some((scheme, rest)) => {
                let entry_tls = match scheme {
                    "redis" | "valkey" => false,
                    "rediss" | "valkeys" => true,
                    _ => return Err(bad("expected host:port or redis://host:port")),
                };
                if entry_tls != tls {
                    return Err(bad(
                        "its scheme disagrees with the TLS setting (REDIS_TLS / the URL's scheme)",
                    ));
                }
                rest.trim_end_matches('/')
            }
        };
        if rest.contains('@') {
            return Err(ConfigError::InvalidTopology {
                // Never repeat an entry that holds a password.
                reason: "a node entry holds credentials: give them once, in REDIS_USERNAME / \
                         REDIS_PASSWORD or the configuration's URL"
                    .into(),
            });
        }
        if rest.contains(['/', '?', '#', ' ']) {
            return Err(bad("expected host:port"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            (host, after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => return Err(bad("put IPv6 hosts in brackets")),
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match (port, default_port) {
            (Some(p), _) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(bad("expected a port number 1-65535")),
            },
            (None, Some(p)) => p,
            (None, None) => return Err(bad("no port (expected host:port)")),
        };
        Ok(NodeAddr {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for NodeAddr {
    /// `host:port`, IPv6 hosts in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `scheme://userinfo@host:port/db` with `host:port` replaced by `authority_host`.
fn with_authority_host(url: &str, authority_host: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => format!("{scheme}://{userinfo}@{authority_host}{tail}"),
        None => format!("{scheme}://{authority_host}{tail}"),
    }
}

/// Checks the scheme, and that redis-rs accepts the URL, without repeating it in errors.
fn check_url(url: &str) -> Result<(), ConfigError> {
    let scheme = url.split("://").next().unwrap_or("");
    match scheme {
        "redis" | "valkey" => {}
        "rediss" | "valkeys" => {
            if !cfg!(feature = "redis-tls") {
                return Err(ConfigError::TlsNotEnabled {
                    feature: TLS_FEATURE,
                });
            }
        }
        "redis+unix" | "unix" => {}
        _ => {
            return Err(ConfigError::InvalidUrl {
                reason: "expected a redis://, rediss:// or unix:// URL".to_owned(),
            })
        }
    }
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| ConfigError::InvalidUrl {
            // redis-rs's parse errors describe the problem, not the URL.
            reason: e.to_string(),
        })
}

/// `scheme://user:secret@host` → `scheme://user:****@host`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:****@{host}{tail}"),
            None => format!("{scheme}://{userinfo}@{host}{tail}"),
        },
        None => url.to_owned(),
    }
}
