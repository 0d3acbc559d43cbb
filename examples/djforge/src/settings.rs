//! The example's settings, from the environment. A bad value is an error that names its variable.

use sessionforge::store::redis::{ConfigError, RedisConfig};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How sessions are encoded and keyed (`SESSION_FORMAT`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// Native: digest keys, readable JSON with metadata.
    Native,
    /// express-session's, shared with a Node app: the secrets from `SESSION_SECRET`, first signs.
    Express { secrets: Vec<String> },
}

/// Everything the example reads from its environment.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `PORT` (3001).
    pub port: u16,
    /// `HOST` (0.0.0.0).
    pub host: IpAddr,
    /// `SESSION_DIR` (`./sessions`): the file fallback.
    pub dir: PathBuf,
    /// `SESSION_ADMIN_TOKEN`: the admin API's bearer token; loopback-only without one.
    pub admin_token: Option<String>,
    /// `SESSION_COOKIE_SECURE` (true).
    pub secure: bool,
    /// `SESSION_IDLE_TIMEOUT` (humantime, e.g. `30m`); the library's default (24 h) when unset.
    pub idle: Option<Duration>,
    /// `SESSION_ABSOLUTE_TIMEOUT` (humantime, e.g. `7d`); the library's default (7 days) when unset.
    pub absolute: Option<Duration>,
    /// `SESSION_READ_CACHE`: sessions kept in the Redis read cache (0 turns it off); the library's
    /// default (10,000) when unset.
    pub read_cache: Option<usize>,
    /// `SESSION_FORMAT` (`native` | `express`) with `SESSION_SECRET`.
    pub format: Format,
    /// `SESSION_COOKIE_NAME`: `id`, or `connect.sid` in the express format, when unset.
    pub cookie_name: Option<String>,
    /// `REDIS_URL`, or `REDIS_HOST` / `REDIS_PORT` / … (see `RedisConfig::from_env`).
    pub redis: RedisConfig,
}

/// A variable with a value the example cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    /// The variable.
    pub var: &'static str,
    /// What was wrong (never a secret's value).
    pub reason: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.var, self.reason)
    }
}

impl std::error::Error for SettingsError {}

impl From<ConfigError> for SettingsError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::InvalidVar { var, reason } => SettingsError { var, reason },
            other => SettingsError {
                var: "REDIS_URL",
                reason: other.to_string(),
            },
        }
    }
}

impl Settings {
    /// The settings from the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The settings from any source of variables (empty values count as unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let bad = |var: &'static str, reason: String| SettingsError { var, reason };
        let port = match get("PORT") {
            None => 3001,
            Some(v) => v
                .trim()
                .parse::<u16>()
                .map_err(|_| bad("PORT", format!("expected a port number, got {v:?}")))?,
        };
        let host = match get("HOST") {
            None => IpAddr::from([0, 0, 0, 0]),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| bad("HOST", format!("expected an IP address, got {v:?}")))?,
        };
        let secure = match get("SESSION_COOKIE_SECURE").as_deref().map(str::trim) {
            None => true,
            Some("true" | "1" | "yes" | "on") => true,
            Some("false" | "0" | "no" | "off") => false,
            Some(v) => {
                return Err(bad(
                    "SESSION_COOKIE_SECURE",
                    format!("expected true or false, got {v:?}"),
                ))
            }
        };
        let duration = |var: &'static str| -> Result<Option<Duration>, SettingsError> {
            get(var)
                .map(|v| {
                    humantime::parse_duration(v.trim())
                        .ok()
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| {
                            bad(
                                var,
                                format!("expected a duration such as 30m or 7d, got {v:?}"),
                            )
                        })
                })
                .transpose()
        };
        let read_cache = get("SESSION_READ_CACHE")
            .map(|v| {
                v.trim().parse::<usize>().map_err(|_| {
                    bad(
                        "SESSION_READ_CACHE",
                        format!("expected a number of sessions (0 turns the cache off), got {v:?}"),
                    )
                })
            })
            .transpose()?;
        let format = match get("SESSION_FORMAT").as_deref().map(str::trim) {
            None | Some("native") => Format::Native,
            Some("express") => {
                let secrets: Vec<String> = get("SESSION_SECRET")
                    .map(|s| {
                        s.split(',')
                            .map(|p| p.trim().to_owned())
                            .filter(|p| !p.is_empty())
                            .collect()
                    })
                    .unwrap_or_default();
                if secrets.is_empty() {
                    return Err(bad(
                        "SESSION_SECRET",
                        "required with SESSION_FORMAT=express: the express app's secret list, \
                         comma-separated, the signing one first"
                            .into(),
                    ));
                }
                Format::Express { secrets }
            }
            Some(v) => {
                return Err(bad(
                    "SESSION_FORMAT",
                    format!("expected native or express, got {v:?}"),
                ))
            }
        };
        Ok(Settings {
            port,
            host,
            dir: get("SESSION_DIR").map_or_else(|| "./sessions".into(), PathBuf::from),
            admin_token: get("SESSION_ADMIN_TOKEN"),
            secure,
            idle: duration("SESSION_IDLE_TIMEOUT")?,
            absolute: duration("SESSION_ABSOLUTE_TIMEOUT")?,
            read_cache,
            format,
            cookie_name: get("SESSION_COOKIE_NAME").map(|n| n.trim().to_owned()),
            redis: RedisConfig::from_lookup(&lookup)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(move |name| map.get(name).cloned())
    }

    #[test]
    fn defaults_are_the_seeds() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.port, 3001);
        assert_eq!(s.dir, PathBuf::from("./sessions"));
        assert!(s.secure);
        assert_eq!(s.format, Format::Native);
        assert_eq!((s.idle, s.absolute, s.read_cache), (None, None, None));
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        for (var, value) in [
            ("PORT", "abc"),
            ("HOST", "nowhere"),
            ("SESSION_COOKIE_SECURE", "maybe"),
            ("SESSION_IDLE_TIMEOUT", "soon"),
            ("SESSION_ABSOLUTE_TIMEOUT", "0s"),
            ("SESSION_READ_CACHE", "-1"),
            ("SESSION_FORMAT", "php"),
            ("REDIS_PORT", "abc"),
        ] {
            let e = settings(&[(var, value)]).unwrap_err();
            assert_eq!(e.var, var, "{e}");
            assert!(e.to_string().contains(var));
        }
        let e = settings(&[("SESSION_FORMAT", "express")]).unwrap_err();
        assert_eq!(e.var, "SESSION_SECRET");
    }

    #[test]
    fn durations_and_secret_lists_parse() {
        let s = settings(&[
            ("SESSION_IDLE_TIMEOUT", "30m"),
            ("SESSION_ABSOLUTE_TIMEOUT", "7d"),
            ("SESSION_FORMAT", "express"),
            ("SESSION_SECRET", "new, old ,"),
            ("SESSION_READ_CACHE", "0"),
        ])
        .unwrap();
        assert_eq!(s.idle, Some(Duration::from_secs(1800)));
        assert_eq!(s.absolute, Some(Duration::from_secs(7 * 86400)));
        assert_eq!(
            s.format,
            Format::Express {
                secrets: vec!["new".into(), "old".into()]
            }
        );
        assert_eq!(s.read_cache, Some(0));
    }
}
