//! What a store tells about itself and its sessions: listing entries and pages, and open health and
//! usage descriptions that the admin service passes through without knowing the backend.

use crate::expiry::Timestamp;
use crate::id::StoreKey;
use serde::Serialize;
use serde_json::{Map, Value};

/// One entry of a session listing: metadata only, never a token.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Summary {
    /// The store key (for the native format a digest of the token, useless as a cookie).
    pub id: StoreKey,
    /// When the session was created.
    pub created_at: Timestamp,
    /// When it was last written.
    pub last_access: Timestamp,
    /// When it expires.
    pub expires: Timestamp,
    /// The user agent that created it.
    pub user_agent: Option<String>,
    /// Its user, if any.
    pub user: Option<String>,
    /// When it became its user's ([`Record::owned_since`](crate::store::Record::owned_since)).
    #[serde(skip)]
    pub user_since: Timestamp,
    /// Whether the entry is a [tombstone](crate::store::Record::tombstone) rather than a session:
    /// listings include them (a failover store finds the outage's deletes that way); whoever shows a
    /// listing leaves them out.
    #[serde(skip)]
    pub tombstone: bool,
}

/// Sorts a user's sessions the way [`SessionStore::user_sessions`](super::SessionStore::user_sessions)
/// answers them: oldest (by creation) first, then by key.
pub fn sort_user_sessions(sessions: &mut [Summary]) {
    sessions.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
}

/// A page of a listing.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Page {
    /// The sessions on this page.
    pub sessions: Vec<Summary>,
    /// Where the next page starts; `None` at the end.
    pub next_cursor: Option<String>,
}

impl Page {
    /// A page of `sessions`, continued at `next_cursor`.
    pub fn new(sessions: Vec<Summary>, next_cursor: Option<String>) -> Self {
        Page {
            sessions,
            next_cursor,
        }
    }
}

/// Whether a store can serve sessions now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum HealthStatus {
    /// Serving normally.
    Ok,
    /// Serving, but not fully: it cannot write (full, unreadable fallback), or it serves from a
    /// fallback. Requests may fail with 503 while it lasts.
    Degraded,
    /// Not serving sessions.
    Unavailable,
}

/// A backend behind a store and whether it answers: the admin's health shows each as
/// `"<name>":"healthy"|"unhealthy"` (the seed's `"redis":"healthy"`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backend {
    /// Its name (`"redis"`, `"postgres"`).
    pub name: &'static str,
    /// Whether it answers.
    pub healthy: bool,
}

/// A store's view of its own health: open data that the admin passes through.
///
/// The public health route shows the status, the serving store, its backends and the short `reason`;
/// `detail` and `extra` (error texts, cluster nodes, the last failover) go only to the admin's
/// authenticated health and the log, as they may name hosts or carry backend messages.
///
/// ```
/// use sessionforge::store::{Health, HealthStatus};
///
/// let h = Health::ok("postgres").with_backend("postgres", true).with_detail("pool: 3 of 10 busy");
/// assert_eq!(h.status, HealthStatus::Ok);
/// let full = Health::ok("file").degraded("store full");
/// assert_eq!(full.status, HealthStatus::Degraded);
/// assert_eq!(full.reason.as_deref(), Some("store full"));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Health {
    /// The name of the store serving sessions now (`sessionStore`).
    pub serving: &'static str,
    /// Ok, degraded or unavailable.
    pub status: HealthStatus,
    /// Remote backends behind the store (a failover store lists its primary's).
    pub backends: Vec<Backend>,
    /// A short reason when not ok, safe to show anyone ("store full"; never a backend's own message).
    pub reason: Option<String>,
    /// For operators: the last error, the failover state.
    pub detail: Option<String>,
    /// Anything else for operators, as JSON fields (cluster nodes, the last transition).
    pub extra: Map<String, Value>,
}

impl Health {
    /// A healthy store named `serving`.
    pub fn ok(serving: &'static str) -> Self {
        Health {
            serving,
            status: HealthStatus::Ok,
            backends: Vec::new(),
            reason: None,
            detail: None,
            extra: Map::new(),
        }
    }

    /// The same, marked degraded for `reason` (unless already unavailable).
    #[must_use]
    pub fn degraded(mut self, reason: impl Into<String>) -> Self {
        if self.status != HealthStatus::Unavailable {
            self.status = HealthStatus::Degraded;
        }
        self.reason.get_or_insert_with(|| reason.into());
        self
    }

    /// The same, marked unavailable for `reason`.
    #[must_use]
    pub fn unavailable(mut self, reason: impl Into<String>) -> Self {
        self.status = HealthStatus::Unavailable;
        self.reason = Some(reason.into());
        self
    }

    /// The same, listing a backend.
    #[must_use]
    pub fn with_backend(mut self, name: &'static str, healthy: bool) -> Self {
        self.backends.push(Backend { name, healthy });
        self
    }

    /// The same, with operator detail.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The same, with an extra field for operators.
    #[must_use]
    pub fn with_extra(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(name.into(), value.into());
        self
    }

    /// Whether the store serves sessions (ok or degraded).
    pub fn is_serving(&self) -> bool {
        self.status != HealthStatus::Unavailable
    }

    /// Whether the backend named `name` was reported, and healthy.
    pub fn backend(&self, name: &str) -> Option<bool> {
        self.backends
            .iter()
            .find(|b| b.name == name)
            .map(|b| b.healthy)
    }
}

/// What a store uses of its backend's resources: open figures that the admin's `/stats` shows under
/// `section` (`"memoryUsage"`, `"diskUsage"`), plus warnings for the operator.
///
/// ```
/// use sessionforge::store::Usage;
///
/// let u = Usage::new("diskUsage").with("files", 3).with("bytes", 1200);
/// assert_eq!(u.figures["files"], 3);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Usage {
    /// The field of `/stats` the figures are shown under.
    pub section: &'static str,
    /// The figures.
    pub figures: Map<String, Value>,
    /// Things the operator should know (an eviction policy that logs users out, memory nearly full).
    pub warnings: Vec<String>,
}

impl Usage {
    /// No figures yet, to be shown under `section`.
    pub fn new(section: &'static str) -> Self {
        Usage {
            section,
            figures: Map::new(),
            warnings: Vec::new(),
        }
    }

    /// The same, with a figure.
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.figures.insert(name.into(), value.into());
        self
    }

    /// The same, with a warning.
    #[must_use]
    pub fn warn(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }
}

/// Bytes the way Redis writes `used_memory_human`: `512B`, `1.50K`, `1.00M`, `2.25G` (powers of 1024).
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_reads_like_redis() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(1024), "1.00K");
        assert_eq!(human_bytes(1_024_000), "1000.00K");
        assert_eq!(human_bytes(1024 * 1024 * 3 / 2), "1.50M");
        assert_eq!(human_bytes(u64::MAX), "16384.00P");
    }

    #[test]
    fn an_unavailable_store_stays_unavailable_when_also_degraded() {
        let h = Health::ok("redis")
            .unavailable("not answering")
            .degraded("full");
        assert_eq!(h.status, HealthStatus::Unavailable);
        assert_eq!(h.reason.as_deref(), Some("not answering"));
        assert!(!h.is_serving());
        let h = Health::ok("x").with_backend("redis", false);
        assert_eq!(h.backend("redis"), Some(false));
        assert_eq!(h.backend("file"), None);
    }
}
