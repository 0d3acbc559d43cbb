//! How the store reaches Redis: one server, a Redis Cluster, or a master found through Sentinel.
//!
//! The store's logic only needs [`ConnectionLike`] ([`Conn`]) plus, in cluster mode, a way to send a
//! command to one named node ([`Conn::on_node`]) and to read the cluster's node table
//! (`CLUSTER NODES`, parsed by [`parse_cluster_nodes`]) for the work that must run on every master
//! (`SCAN`, `INFO`, health).
//!
//! * **Single**: redis-rs's `ConnectionManager` to the configured URL.
//! * **Cluster**: redis-rs's async `ClusterConnection`, which discovers the slot map from the seed
//!   nodes, follows `MOVED`/`ASK`, and refreshes the map after a failover by itself.
//! * **Sentinel**: the master's address comes from the sentinels (redis-rs's `SentinelClient`, which
//!   also checks that the named node says it is master), then a `ConnectionManager` to it. When the
//!   master changes, the old connection fails (Sentinel's reconfiguration kills clients of a demoted
//!   master; a write that reaches it anyway answers `-READONLY`; a dead one refuses): the store drops
//!   the connection on those errors, and the next connect asks the sentinels again.

use super::config::{ConfigError, NodeAddr, RedisConfig, Topology};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Cmd, ConnectionAddr, Pipeline, RedisError, RedisFuture, RedisResult, Value};

/// How the store reaches Redis (see the module docs). One per store, built once: the size of its
/// variants does not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Connector {
    /// One server (or a primary behind a stable address).
    Single(redis::Client),
    /// A Redis Cluster.
    Cluster(redis::cluster::ClusterClient),
    /// A master found through Sentinel; resolved again on every (re)connect.
    Sentinel(Box<tokio::sync::Mutex<SentinelClient>>),
}

/// An open connection, cheap to clone (requests are multiplexed over it).
#[derive(Clone)]
pub(super) enum Conn {
    /// One server, or the master Sentinel named when this connection was made.
    Single(ConnectionManager),
    /// Every node of a cluster, routed by slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ClusterNode {
    /// `host:port` (the client port).
    pub(super) addr: String,
    /// `master` or `replica`.
    pub(super) role: &'static str,
    /// The node's flags as the answering node sees them (`fail`, `fail?`, `myself`, ...).
    pub(super) flags: String,
    /// Whether the cluster bus link to it is up.
    pub(super) connected: bool,
    /// Whether it serves slots (a master with at least one slot range).
    pub(super) has_slots: bool,
}

impl ClusterNode {
    /// Whether the cluster considers the node failed (or possibly failed).
    pub(super) fn failed(&self) -> bool {
        self.flags.split(',').any(|f| f == "fail" || f == "fail?")
    }
}

/// Parses `CLUSTER NODES` text.
pub(super) fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            // `ip:port@cport[,hostname]`
            let addr = f[1].split(['@', ',']).next()?.to_owned();
            if addr.starts_with(':') {
                return None; // a node that has not told its address yet
            }
            let flags = f[2].to_owned();
            let role = if flags.split(',').any(|x| x == "master") {
                "master"
            } else {
                "replica"
            };
            Some(ClusterNode {
                addr,
                role,
                flags,
                connected: f[7] == "connected",
                has_slots: f.len() > 8,
            })
        })
        .collect()
}

impl Conn {
    /// Sends `cmd` to the node at `addr` (`host:port`), in cluster mode; to the one server otherwise.
    pub(super) async fn on_node(&mut self, addr: &str, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => {
                let (host, port) = split_addr(addr).ok_or_else(|| {
                    RedisError::from((
                        redis::ErrorKind::Client,
                        "bad node address",
                        addr.to_owned(),
                    ))
                })?;
                c.route_command(
                    cmd.clone(),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port }),
                )
                .await
            }
        }
    }
}

/// `host:port` or `[v6]:port` → (host, port).
fn split_addr(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_owned(), port.parse().ok()?))
}

impl Connector {
    /// The connector for `config`'s topology. Does no I/O.
    pub(super) fn new(config: &RedisConfig) -> Result<Self, ConfigError> {
        let invalid = |e: RedisError| ConfigError::InvalidUrl {
            reason: e.to_string(),
        };
        match config.topology() {
            Topology::Single => {
                #[cfg(feature = "redis-tls")]
                if let (Some(pem), true) = (&config.tls_ca_cert, config.tls()) {
                    return redis::Client::build_with_tls(
                        config.url.as_str(),
                        redis::TlsCertificates {
                            client_tls: None,
                            root_cert: Some(pem.clone()),
                        },
                    )
                    .map(Connector::Single)
                    .map_err(invalid);
                }
                redis::Client::open(config.url.as_str())
                    .map(Connector::Single)
                    .map_err(invalid)
            }
            Topology::Cluster { nodes } => {
                if config.prefix.contains(['{', '}']) {
                    return Err(ConfigError::InvalidTopology {
                        reason: "in cluster mode the key prefix may not contain '{' or '}': \
                                 the store places its own hash tags"
                            .into(),
                    });
                }
                let urls: Vec<String> = nodes.iter().map(|n| config.node_url(n)).collect();
                let builder = ClusterClientBuilder::new(urls)
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.command_timeout)
                    // A few quick retries follow MOVED/TRYAGAIN during a slot move or failover;
                    // the store's own command timeout still bounds the whole call.
                    .retries(3)
                    .min_retry_wait(10)
                    .max_retry_wait(100);
                #[cfg(feature = "redis-tls")]
                let builder = match (&config.tls_ca_cert, config.tls()) {
                    (Some(pem), true) => builder.certs(redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem.clone()),
                    }),
                    _ => builder,
                };
                builder.build().map(Connector::Cluster).map_err(invalid)
            }
            Topology::Sentinel { sentinels, master } => {
                let info = redis::IntoConnectionInfo::into_connection_info(config.url.as_str())
                    .map_err(invalid)?;
                let settings = info.redis_settings();
                let tls = config.tls();
                let addrs = sentinels.iter().map(|n: &NodeAddr| {
                    if tls {
                        ConnectionAddr::TcpTls {
                            host: n.host.clone(),
                            port: n.port,
                            insecure: false,
                            tls_params: None,
                        }
                    } else {
                        ConnectionAddr::Tcp(n.host.clone(), n.port)
                    }
                });
                let mut b = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)
                    .map_err(invalid)?
                    .set_client_to_redis_db(settings.db());
                if let Some(user) = settings.username() {
                    b = b.set_client_to_redis_username(user);
                }
                if let Some(pw) = settings.password() {
                    b = b.set_client_to_redis_password(pw);
                }
                if let Some((user, pw)) = &config.sentinel_auth {
                    if let Some(user) = user {
                        b = b.set_client_to_sentinel_username(user);
                    }
                    b = b.set_client_to_sentinel_password(pw);
                }
                if tls {
                    b = b
                        .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
                    #[cfg(feature = "redis-tls")]
                    if let Some(pem) = &config.tls_ca_cert {
                        let certs = || redis::TlsCertificates {
                            client_tls: None,
                            root_cert: Some(pem.clone()),
                        };
                        b = b
                            .set_client_to_redis_certificates(certs())
                            .set_client_to_sentinel_certificates(certs());
                    }
                }
                let client = b.build().map_err(invalid)?;
                Ok(Connector::Sentinel(Box::new(tokio::sync::Mutex::new(
                    client,
                ))))
            }
        }
    }

    /// Opens a connection (the caller bounds the wait), with the master's client when Sentinel named
    /// it (the read cache follows the master).
    pub(super) async fn connect(
        &self,
        config: &RedisConfig,
    ) -> RedisResult<(Conn, Option<redis::Client>)> {
        let manager_config = || {
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                // No response timeout of redis-rs's own: every call the store makes is bounded by
                // its command timeout already (`RedisStore::exec_once`), and a second timer per
                // command is pure cost.
                .set_response_timeout(None)
                // One attempt per reconnect: our callers have deadlines, and the next call tries
                // again.
                .set_number_of_retries(0)
        };
        match self {
            Connector::Single(client) => {
                ConnectionManager::new_with_config(client.clone(), manager_config())
                    .await
                    .map(|c| (Conn::Single(c), None))
            }
            Connector::Cluster(client) => client
                .get_async_connection()
                .await
                .map(|c| (Conn::Cluster(c), None)),
            Connector::Sentinel(sentinel) => {
                // Ask the sentinels where the master is now (redis-rs checks the node's ROLE).
                let client = sentinel.lock().await.async_get_client().await?;
                tracing::debug!(master = ?client.get_connection_info().addr(),
                    "Sentinel named the Redis master");
                ConnectionManager::new_with_config(client.clone(), manager_config())
                    .await
                    .map(|c| (Conn::Single(c), Some(client)))
            }
        }
    }

    /// A one-off connection to the node at `addr` (`host:port`) with the configuration's credentials
    /// and TLS: for replicas, which a cluster connection does not hold (health and `INFO` per node).
    pub(super) async fn direct(config: &RedisConfig, addr: &str) -> RedisResult<Conn> {
        let (host, port) = split_addr(addr).ok_or_else(|| {
            RedisError::from((
                redis::ErrorKind::Client,
                "bad node address",
                addr.to_owned(),
            ))
        })?;
        let url = config.node_url(&NodeAddr { host, port });
        #[cfg(feature = "redis-tls")]
        let client = match (&config.tls_ca_cert, config.tls()) {
            (Some(pem), true) => redis::Client::build_with_tls(
                url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            )?,
            _ => redis::Client::open(url.as_str())?,
        };
        #[cfg(not(feature = "redis-tls"))]
        let client = redis::Client::open(url.as_str())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout))
            .set_number_of_retries(0);
        ConnectionManager::new_with_config(client, manager_config)
            .await
            .map(Conn::Single)
    }

    /// Whether this is a cluster.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Connector::Cluster(_))
    }

    /// The one server's client (`None` for a cluster or Sentinel, whose servers are found later).
    pub(super) fn single(&self) -> Option<&redis::Client> {
        match self {
            Connector::Single(c) => Some(c),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_text_is_parsed_into_roles_flags_and_links() {
        let text = "\
07c3 127.0.0.1:30004@31004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@31002,host.example master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@31003 master,fail - 1426238316000 1426238316000 3 disconnected 10923-16383
e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460
6ec2 :0@0 handshake - 0 0 0 connected
";
        let nodes = parse_cluster_nodes(text);
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes[0].addr, "127.0.0.1:30004");
        assert_eq!(nodes[0].role, "replica");
        assert!(!nodes[0].has_slots);
        assert_eq!(nodes[1].addr, "127.0.0.1:30002");
        assert_eq!(nodes[1].role, "master");
        assert!(nodes[1].has_slots && nodes[1].connected && !nodes[1].failed());
        assert!(nodes[2].failed() && !nodes[2].connected);
        assert_eq!(nodes[3].role, "master");
    }

    #[test]
    fn node_addresses_split_into_host_and_port() {
        assert_eq!(
            split_addr("127.0.0.1:7000"),
            Some(("127.0.0.1".into(), 7000))
        );
        assert_eq!(split_addr("[::1]:7000"), Some(("::1".into(), 7000)));
        assert_eq!(split_addr("nohost"), None);
    }
}
