//! [`RedisConfig`]: where the Redis store connects and how it names and times its keys.

use crate::expiry::{Clock, SharedClock, SystemClock};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "session:";
/// The default limit for opening a connection (TCP, TLS, `AUTH`, `SELECT`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The default limit for one command's answer.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// The default number of merge-and-retry rounds a contended save may take.
pub const DEFAULT_MAX_SAVE_ATTEMPTS: u32 = 32;

/// The cargo feature that brings TLS (`rediss://`) support.
pub const TLS_FEATURE: &str = "redis-tls";

/// Userinfo characters left as they are; everything else is percent-encoded (RFC 3986 unreserved).
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

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
}

impl RedisConfig {
    /// Settings for the server at `url` (`redis://[user[:password]@]host[:port][/db]`, or `rediss://`
    /// with the `redis-tls` feature), with the defaults: prefix `session:`, 1 s connect and command
    /// timeouts, the system clock.
    pub fn new(url: impl Into<String>) -> Result<Self, ConfigError> {
        let url = url.into();
        check_url(&url)?;
        Ok(RedisConfig {
            url,
            prefix: DEFAULT_PREFIX.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            max_save_attempts: DEFAULT_MAX_SAVE_ATTEMPTS,
            clock: Arc::new(SystemClock),
            tls_ca_cert: None,
            topology: Topology::Single,
            sentinel_auth: None,
            replica_acks: None,
            read_cache: 0,
        })
    }

    /// Settings from the process environment (see the type's docs for the variables).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Settings from any source of variables: `lookup("REDIS_PORT")` answers the value, if set.
    /// Empty values count as unset. `REDIS_TLS_CA_CERT`, when set, names a PEM file of root
    /// certificates to trust instead of the system's (a private CA, a self-signed server).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let config = Self::url_from_lookup(&lookup)?;
        let config = Self::topology_from_lookup(config, &lookup)?;
        match lookup("REDIS_TLS_CA_CERT").filter(|v| !v.trim().is_empty()) {
            None => Ok(config),
            Some(path) => {
                let pem = std::fs::read(path.trim()).map_err(|e| ConfigError::InvalidVar {
                    var: "REDIS_TLS_CA_CERT",
                    reason: format!("cannot read {path:?}: {e}"),
                })?;
                if !config.tls() {
                    return Err(ConfigError::InvalidVar {
                        var: "REDIS_TLS_CA_CERT",
                        reason: "set, but TLS is off (set REDIS_TLS=true or use rediss://)".into(),
                    });
                }
                Ok(config.with_tls_ca_cert(pem))
            }
        }
    }

    /// `REDIS_CLUSTER_NODES`, or `REDIS_SENTINELS` with `REDIS_SENTINEL_MASTER` (and the sentinels'
    /// own `REDIS_SENTINEL_USERNAME` / `REDIS_SENTINEL_PASSWORD`).
    fn topology_from_lookup(
        config: Self,
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let cluster = get("REDIS_CLUSTER_NODES");
        let sentinels = get("REDIS_SENTINELS");
        let master = get("REDIS_SENTINEL_MASTER");
        let named = |var: &'static str| {
            move |e: ConfigError| match e {
                ConfigError::InvalidTopology { reason } | ConfigError::InvalidUrl { reason } => {
                    ConfigError::InvalidVar { var, reason }
                }
                other => other,
            }
        };
        match (cluster, sentinels, master) {
            (Some(_), Some(_), _) => Err(ConfigError::InvalidVar {
                var: "REDIS_SENTINELS",
                reason: "set either REDIS_CLUSTER_NODES or REDIS_SENTINELS, not both".into(),
            }),
            (Some(nodes), None, None) => {
                if config.db() != 0 {
                    return Err(ConfigError::InvalidVar {
                        var: "REDIS_DB",
                        reason: "Redis Cluster has only database 0".into(),
                    });
                }
                config
                    .with_cluster_nodes(split_list(&nodes))
                    .map_err(named("REDIS_CLUSTER_NODES"))
            }
            (Some(_), None, Some(_)) => Err(ConfigError::InvalidVar {
                var: "REDIS_SENTINEL_MASTER",
                reason: "set, but REDIS_SENTINELS is not (and REDIS_CLUSTER_NODES is)".into(),
            }),
            (None, Some(list), Some(master)) => {
                let config = config
                    .with_sentinel(split_list(&list), master.trim())
                    .map_err(named("REDIS_SENTINELS"))?;
                match lookup("REDIS_SENTINEL_PASSWORD").filter(|p| !p.is_empty()) {
                    Some(pw) => Ok(config.with_sentinel_auth(get("REDIS_SENTINEL_USERNAME"), pw)),
                    None => Ok(config),
                }
            }
            (None, Some(_), None) => Err(ConfigError::InvalidVar {
                var: "REDIS_SENTINEL_MASTER",
                reason: "REDIS_SENTINELS is set: name the monitored master too".into(),
            }),
            (None, None, Some(_)) => Err(ConfigError::InvalidVar {
                var: "REDIS_SENTINELS",
                reason: "REDIS_SENTINEL_MASTER is set: list the sentinels (host:port,...)".into(),
            }),
            (None, None, None) => Ok(config),
        }
    }

    fn url_from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        if let Some(url) = get("REDIS_URL") {
            return Self::new(url.trim()).map_err(|e| match e {
                ConfigError::InvalidUrl { reason } => ConfigError::InvalidVar {
                    var: "REDIS_URL",
                    reason,
                },
                other => other,
            });
        }
        let host = get("REDIS_HOST").unwrap_or_else(|| "localhost".to_owned());
        let host = host.trim();
        if host.contains(['/', '@', '?', '#', ' ']) {
            return Err(ConfigError::InvalidVar {
                var: "REDIS_HOST",
                reason: "expected a host name or an IP address".to_owned(),
            });
        }
        let port: u16 = match get("REDIS_PORT") {
            None => 6379,
            Some(p) => match p.trim().parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => {
                    return Err(ConfigError::InvalidVar {
                        var: "REDIS_PORT",
                        reason: format!("expected a port number 1-65535, got {p:?}"),
                    })
                }
            },
        };
        let db: u32 = match get("REDIS_DB") {
            None => 0,
            Some(d) => d.trim().parse().map_err(|_| ConfigError::InvalidVar {
                var: "REDIS_DB",
                reason: format!("expected a database number, got {d:?}"),
            })?,
        };
        let tls = match get("REDIS_TLS") {
            None => false,
            Some(t) => match t.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => {
                    return Err(ConfigError::InvalidVar {
                        var: "REDIS_TLS",
                        reason: format!("expected true or false, got {t:?}"),
                    })
                }
            },
        };
        let user = get("REDIS_USERNAME");
        // A password may legitimately start or end with spaces: only an empty one counts as unset.
        let password = lookup("REDIS_PASSWORD").filter(|p| !p.is_empty());
        let userinfo = match (&user, &password) {
            (None, None) => String::new(),
            (Some(u), None) => format!("{}@", utf8_percent_encode(u.trim(), USERINFO)),
            (u, Some(p)) => format!(
                "{}:{}@",
                utf8_percent_encode(u.as_deref().map(str::trim).unwrap_or(""), USERINFO),
                utf8_percent_encode(p, USERINFO)
            ),
        };
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]") // an IPv6 literal
        } else {
            host.to_owned()
        };
        let scheme = if tls { "rediss" } else { "redis" };
        Self::new(format!("{scheme}://{userinfo}{host}:{port}/{db}")).map_err(|e| match e {
            ConfigError::InvalidUrl { reason } => ConfigError::InvalidVar {
                var: "REDIS_HOST",
                reason,
            },
            other => other,
        })
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

    fn parse_nodes<I, S>(
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

    /// Keeps up to `sessions` recently loaded sessions in this process, kept correct by Redis itself:
    /// a second connection speaks RESP3 with `CLIENT TRACKING` on, and Redis tells it the moment any
    /// client changes, deletes or expires a cached session (default 0: off). A load of a cached
    /// session then costs no round trip, and a save one round trip that also refreshes the cache
    /// (the save script and a re-read, pipelined). Needs Redis 6 or later and a single
    /// server (with a cluster or Sentinel the setting is ignored, with a warning); where tracking is
    /// refused the store logs a warning and loads uncached. See [`RedisStore`](super::RedisStore)
    /// for the guarantees.
    pub fn with_read_cache(mut self, sessions: usize) -> Self {
        self.read_cache = sessions;
        self
    }

    /// Where the store reads the time to turn `expires` into a TTL (default: the system clock).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
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
    fn parse(entry: &str, tls: bool, default_port: Option<u16>) -> Result<Self, ConfigError> {
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

/// Splits a `REDIS_CLUSTER_NODES` / `REDIS_SENTINELS` value at commas and white space.
fn split_list(value: &str) -> Vec<&str> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn defaults_point_at_localhost_6379_db_0() {
        let c = RedisConfig::from_lookup(lookup(&[])).unwrap();
        assert_eq!(c.url, "redis://localhost:6379/0");
        assert_eq!(c.prefix(), DEFAULT_PREFIX);
        assert_eq!(c.connect_timeout(), DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(c.command_timeout(), DEFAULT_COMMAND_TIMEOUT);
    }

    #[test]
    fn redis_url_wins_over_the_parts() {
        let c = RedisConfig::from_lookup(lookup(&[
            ("REDIS_URL", "redis://10.1.2.3:7000/4"),
            ("REDIS_HOST", "elsewhere"),
            ("REDIS_PORT", "not-even-a-number"),
        ]))
        .unwrap();
        assert_eq!(c.url, "redis://10.1.2.3:7000/4");
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        for (var, value) in [
            ("REDIS_PORT", "abc"),
            ("REDIS_PORT", "0"),
            ("REDIS_PORT", "70000"),
            ("REDIS_DB", "x"),
            ("REDIS_DB", "-1"),
            ("REDIS_TLS", "maybe"),
            ("REDIS_HOST", "a/b"),
            ("REDIS_URL", "http://example.com"),
        ] {
            let err = RedisConfig::from_lookup(lookup(&[(var, value)])).unwrap_err();
            match &err {
                ConfigError::InvalidVar { var: named, .. } => assert_eq!(*named, var, "{err}"),
                other => panic!("{var}={value}: {other:?}"),
            }
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn credentials_are_percent_encoded_and_never_shown() {
        let c = RedisConfig::from_lookup(lookup(&[
            ("REDIS_USERNAME", "app user"),
            ("REDIS_PASSWORD", "p@ss:w/rd"),
            ("REDIS_HOST", "127.0.0.1"),
            ("REDIS_PORT", "6380"),
            ("REDIS_DB", "2"),
        ]))
        .unwrap();
        assert_eq!(c.url, "redis://app%20user:p%40ss%3Aw%2Frd@127.0.0.1:6380/2");
        for shown in [format!("{c:?}"), c.to_string(), c.redacted_url()] {
            assert!(!shown.contains("p%40ss"), "{shown}");
            assert!(!shown.contains("p@ss"), "{shown}");
            assert!(shown.contains("****"), "{shown}");
        }
        let info = redis::IntoConnectionInfo::into_connection_info(c.url.as_str()).unwrap();
        assert_eq!(info.redis_settings().password(), Some("p@ss:w/rd"));
        assert_eq!(info.redis_settings().username(), Some("app user"));
        assert_eq!(info.redis_settings().db(), 2);
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let c = RedisConfig::from_lookup(lookup(&[("REDIS_HOST", "::1")])).unwrap();
        assert_eq!(c.url, "redis://[::1]:6379/0");
    }

    #[cfg(not(feature = "redis-tls"))]
    #[test]
    fn tls_without_the_feature_names_the_feature() {
        for vars in [
            &[("REDIS_TLS", "true")][..],
            &[("REDIS_URL", "rediss://cache:6380")][..],
        ] {
            let err = RedisConfig::from_lookup(lookup(vars)).unwrap_err();
            assert_eq!(
                err,
                ConfigError::TlsNotEnabled {
                    feature: TLS_FEATURE
                }
            );
            assert!(err.to_string().contains("redis-tls"));
        }
    }

    #[cfg(feature = "redis-tls")]
    #[test]
    fn tls_builds_a_rediss_url() {
        let c = RedisConfig::from_lookup(lookup(&[("REDIS_TLS", "true")])).unwrap();
        assert!(c.tls());
        assert_eq!(c.url, "rediss://localhost:6379/0");
    }
}
