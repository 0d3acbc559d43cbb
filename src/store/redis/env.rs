//! [`RedisConfig::from_env`]: the settings from `REDIS_URL`, or `REDIS_HOST` and friends, and the
//! Cluster and Sentinel variables. A bad value is an error that names its variable.

use super::config::{ConfigError, RedisConfig};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Userinfo characters left as they are; everything else is percent-encoded (RFC 3986 unreserved).
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl RedisConfig {
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
}

/// Splits a `REDIS_CLUSTER_NODES` / `REDIS_SENTINELS` value at commas and white space.
fn split_list(value: &str) -> Vec<&str> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redis::config::{
        ConfigError, DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_PREFIX,
    };
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
