//! Matching a request to an admin route, and the handlers.

use super::json::{self, Reject, Resp};
use crate::id::StoreKey;
use crate::metrics::Metrics;
use crate::store::{ManagedStore, StoreKind, Usage};
use http::{Method, StatusCode};
use percent_encoding::percent_decode_str;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// Paths longer than this are refused with 414 before any matching.
const MAX_PATH: usize = 2048;
/// Cursors longer than this are refused with 400 (no store hands out anything near it).
const MAX_CURSOR: usize = 1024;
/// User ids longer than this (in bytes, decoded) are refused with 400.
pub(crate) const MAX_USER: usize = 512;

/// An admin route, matched on the end of the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Stats,
    List,
    /// The id as it appeared in the path (validated by the handler).
    Delete(String),
    Cleanup,
    /// `GET /users/{user}/sessions`, the user as it appeared in the path (decoded by the handler).
    UserSessions(String),
    /// `DELETE /users/{user}/sessions`.
    RevokeUser(String),
    RedisInfo,
    Health,
    Metrics,
}

impl Route {
    /// Whether the route answers anyone. Only health does.
    pub(crate) fn is_public(&self) -> bool {
        matches!(self, Route::Health)
    }
}

/// Matches `method` and `path` to a route, or the 404/405/414 response to send.
///
/// The route is read from the last path segment (or the last two for `sessions/{id}`), so the service
/// answers the same under any prefix, stripped or not.
pub(crate) fn route(method: &Method, path: &str) -> Result<Route, Reject> {
    if path.len() > MAX_PATH {
        return Err(Reject::new(StatusCode::URI_TOO_LONG, "path too long"));
    }
    let not_found = || {
        Reject::new(
            StatusCode::NOT_FOUND,
            "no such admin route (try /stats, /sessions, /cleanup, /redis-info, /health, /metrics)",
        )
    };
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(not_found());
    }
    let last = segments[segments.len() - 1];
    let prev = segments.len().checked_sub(2).map(|i| segments[i]);
    let is_get = method == Method::GET || method == Method::HEAD;
    let user = segments
        .len()
        .checked_sub(3)
        .filter(|&i| segments[i] == "users")
        .map(|i| segments[i + 1]);
    let (route, allowed, allow) = match last {
        "sessions" if user.is_some() => {
            let user = user.unwrap_or_default().to_owned();
            if method == Method::DELETE {
                (Route::RevokeUser(user), true, "")
            } else {
                (Route::UserSessions(user), is_get, "GET, HEAD, DELETE")
            }
        }
        "stats" => (Route::Stats, is_get, "GET, HEAD"),
        "sessions" => (Route::List, is_get, "GET, HEAD"),
        "cleanup" => (Route::Cleanup, method == Method::POST, "POST"),
        "redis-info" => (Route::RedisInfo, is_get, "GET, HEAD"),
        "health" => (Route::Health, is_get, "GET, HEAD"),
        "metrics" => (Route::Metrics, is_get, "GET, HEAD"),
        id if prev == Some("sessions")
            && (method == Method::DELETE || StoreKey::parse(id).is_ok()) =>
        {
            (
                Route::Delete(id.to_owned()),
                method == Method::DELETE,
                "DELETE",
            )
        }
        _ => return Err(not_found()),
    };
    if allowed {
        Ok(route)
    } else {
        Err(Reject {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("method {method} not allowed here; use {allow}"),
            allow: Some(allow),
        })
    }
}

/// `limit` and `cursor` of `GET /sessions`, or the 400 to send.
pub(crate) fn list_query(
    query: Option<&str>,
    max_page: usize,
) -> Result<(usize, Option<String>), Reject> {
    let bad = |msg: String| Reject::new(StatusCode::BAD_REQUEST, msg);
    let mut limit = None;
    let mut cursor = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "limit" => &mut limit,
            "cursor" => &mut cursor,
            _ => continue,
        };
        let value = value.replace('+', " ");
        let value = percent_decode_str(&value)
            .decode_utf8()
            .map_err(|_| bad(format!("query parameter {name:?} is not UTF-8")))?;
        if slot.replace(value.into_owned()).is_some() {
            return Err(bad(format!("query parameter {name:?} given twice")));
        }
    }
    let default = 50.min(max_page);
    let limit = match limit.as_deref() {
        None | Some("") => default,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max_page).contains(&n) => n,
            _ => {
                return Err(bad(format!(
                    "limit must be a whole number from 1 to {max_page}"
                )))
            }
        },
    };
    let cursor = cursor.filter(|c| !c.is_empty());
    if let Some(c) = &cursor {
        if c.len() > MAX_CURSOR || c.chars().any(char::is_control) {
            return Err(bad("invalid cursor".to_owned()));
        }
    }
    Ok((limit, cursor))
}

pub(crate) async fn stats<S: ManagedStore>(store: Arc<S>) -> Resp {
    let count = match store.count().await {
        Ok(n) => n,
        Err(e) => return json::store_error(&e),
    };
    let usage = match store.usage().await {
        Ok(u) => u,
        Err(e) => return json::store_error(&e),
    };
    let mut body = json::Stats {
        session_store: store.kind().as_str(),
        session_count: count,
        memory_usage: None,
        disk_usage: None,
        warnings: Vec::new(),
        timestamp: json::now(),
    };
    match usage {
        Usage::Redis {
            used_memory,
            used_memory_human,
            maxmemory,
            maxmemory_policy,
        } => {
            let mut m = BTreeMap::new();
            m.insert("used_memory", used_memory.to_string());
            m.insert("used_memory_human", used_memory_human);
            if let Some(max) = maxmemory {
                m.insert("maxmemory", max.to_string());
            }
            if let Some(policy) = maxmemory_policy {
                if let Some(w) = eviction_warning(&policy) {
                    body.warnings.push(w);
                }
                m.insert("maxmemory_policy", policy);
            }
            body.memory_usage = Some(m);
        }
        Usage::Disk {
            directory,
            files,
            bytes,
        } => {
            body.disk_usage = Some(json::DiskUsage {
                directory,
                files,
                bytes,
                human: json::human_bytes(bytes),
            });
        }
        Usage::Memory { entries, bytes } => {
            let mut m = BTreeMap::new();
            m.insert("used_memory", bytes.to_string());
            m.insert("used_memory_human", json::human_bytes(bytes));
            m.insert("entries", entries.to_string());
            body.memory_usage = Some(m);
        }
    }
    json::json(StatusCode::OK, &body)
}

/// The warning for a Redis eviction policy that drops keys without a TTL-based preference.
pub(crate) fn eviction_warning(policy: &str) -> Option<String> {
    policy.starts_with("allkeys-").then(|| {
        format!(
            "Redis maxmemory-policy is {policy}: under memory pressure Redis silently evicts live \
             sessions and their users are logged out. Use volatile-lru or volatile-ttl (evict keys \
             with a TTL, soonest-expiring first for volatile-ttl) or noeviction (writes fail loudly \
             instead)."
        )
    })
}

pub(crate) async fn list<S: ManagedStore>(
    store: Arc<S>,
    limit: usize,
    cursor: Option<String>,
) -> Resp {
    let page = match store.list(cursor.as_deref(), limit).await {
        Ok(p) => p,
        Err(e) => return json::store_error(&e),
    };
    let total = match store.count().await {
        Ok(n) => n,
        Err(e) => return json::store_error(&e),
    };
    json::json(
        StatusCode::OK,
        &json::SessionList {
            sessions: page.sessions.into_iter().map(Into::into).collect(),
            total,
            next_cursor: page.next_cursor,
            timestamp: json::now(),
        },
    )
}

pub(crate) async fn delete<S: ManagedStore>(store: Arc<S>, id: String) -> Resp {
    // Parsed before the store sees it: nothing but a well-formed store key reaches a backend.
    let Ok(key) = StoreKey::parse(&id) else {
        return json::error(
            StatusCode::BAD_REQUEST,
            "not a session id: ids are the 43-character store keys shown by GET /sessions",
        );
    };
    match store.delete(&key).await {
        Ok(true) => json::json(
            StatusCode::OK,
            &json::Deleted {
                success: true,
                message: format!("Session {key} deleted"),
            },
        ),
        Ok(false) => json::error(
            StatusCode::NOT_FOUND,
            format!(
                "no session {key} (already gone, or a cookie value rather than an id from GET /sessions)"
            ),
        ),
        Err(e) => json::store_error(&e),
    }
}

/// The user id of a `/users/{user}/…` path segment, percent-decoded, or the 400 to send.
pub(crate) fn user_segment(raw: &str) -> Result<String, Reject> {
    let bad = |msg: &str| Reject::new(StatusCode::BAD_REQUEST, msg);
    let user = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| bad("user id is not UTF-8"))?;
    if user.is_empty() {
        return Err(bad("empty user id"));
    }
    if user.len() > MAX_USER {
        return Err(bad("user id too long"));
    }
    Ok(user.into_owned())
}

/// `GET /users/{user}/sessions`: 200 with an empty list for a user without sessions (whether the user
/// exists is not the session store's to say).
pub(crate) async fn user_sessions<S: ManagedStore>(store: Arc<S>, user: String) -> Resp {
    match store.user_sessions(&user).await {
        Ok(sessions) => json::json(
            StatusCode::OK,
            &json::UserSessions {
                user,
                total: sessions.len() as u64,
                sessions: sessions.into_iter().map(Into::into).collect(),
                timestamp: json::now(),
            },
        ),
        Err(e) => json::store_error(&e),
    }
}

/// `DELETE /users/{user}/sessions`: log the user out everywhere.
pub(crate) async fn revoke_user<S: ManagedStore>(store: Arc<S>, user: String) -> Resp {
    match store.revoke_user_sessions(&user, None).await {
        Ok(n) => {
            tracing::info!(sessions = n, "admin revoked a user's sessions");
            json::json(
                StatusCode::OK,
                &json::Cleanup {
                    success: true,
                    deleted_sessions: n,
                    message: format!("Revoked {n} sessions of the user"),
                },
            )
        }
        Err(e) => json::store_error(&e),
    }
}

pub(crate) async fn cleanup<S: ManagedStore>(store: Arc<S>) -> Resp {
    match store.cleanup().await {
        Ok(n) => json::json(
            StatusCode::OK,
            &json::Cleanup {
                success: true,
                deleted_sessions: n,
                message: format!("Cleaned up {n} expired sessions"),
            },
        ),
        Err(e) => json::store_error(&e),
    }
}

pub(crate) async fn redis_info<S: ManagedStore>(store: Arc<S>) -> Resp {
    match store.redis_info().await {
        Ok(Some(info)) => json::json(
            StatusCode::OK,
            &json::RedisInfoBody {
                redis: info,
                // Per-node INFO is a bonus: a node that fails to answer shows as an error entry,
                // and a failure to list the nodes leaves them out rather than failing the route.
                nodes: store.redis_node_info().await.ok().flatten(),
                timestamp: json::now(),
            },
        ),
        Ok(None) => json::error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "Redis is not serving sessions now (the {} store is)",
                store.kind()
            ),
        ),
        Err(e) => json::store_error(&e),
    }
}

/// Health, and the HTTP status that goes with it.
///
/// `status` is `"ok"` (200) while the backend serving sessions works, including the file fallback while
/// Redis is down (then `"redis":"unhealthy"`); it is `"unavailable"` (503) when the serving backend
/// does not work (Redis serving and not answering, an unwritable session directory), so a load
/// balancer takes the instance out.
pub(crate) async fn health<S: ManagedStore>(store: Arc<S>) -> Resp {
    let h = store.health().await;
    let nodes = store
        .node_health()
        .await
        .into_iter()
        .map(|n| json::NodeBody {
            address: n.address,
            role: n.role,
            status: if n.healthy { "healthy" } else { "unhealthy" },
            detail: n.detail,
        })
        .collect();
    let (status, code) = if !h.healthy {
        ("unavailable", StatusCode::SERVICE_UNAVAILABLE)
    } else {
        ("ok", StatusCode::OK)
    };
    json::json(
        code,
        &json::Health {
            status,
            timestamp: json::now(),
            session_store: h.serving.as_str(),
            redis: h
                .redis_healthy
                .map(|ok| if ok { "healthy" } else { "unhealthy" }),
            detail: h.detail,
            nodes,
        },
    )
}

pub(crate) async fn metrics<S: ManagedStore>(store: Arc<S>) -> Resp {
    let mut text = Metrics::global().render();
    // The gauges only the store knows. A failing count leaves its gauge out rather than failing the
    // scrape: metrics matter most while the store is in trouble.
    if let Ok(n) = store.count().await {
        let _ = writeln!(
            text,
            "# HELP sessionforge_sessions Sessions stored now.\n# TYPE sessionforge_sessions gauge\nsessionforge_sessions {n}"
        );
    }
    let _ = writeln!(
        text,
        "# HELP sessionforge_store_mode The backend serving sessions now (1 for the active one).\n# TYPE sessionforge_store_mode gauge"
    );
    let serving = store.kind();
    for kind in [StoreKind::Redis, StoreKind::File, StoreKind::Memory] {
        let _ = writeln!(
            text,
            "sessionforge_store_mode{{store=\"{kind}\"}} {}",
            u8::from(kind == serving)
        );
    }
    if let Some(up) = store.health().await.redis_healthy {
        let _ = writeln!(
            text,
            "# HELP sessionforge_redis_up Whether the Redis behind the session store answers.\n# TYPE sessionforge_redis_up gauge\nsessionforge_redis_up {}",
            u8::from(up)
        );
    }
    json::with_body(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        text.into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(method: Method, path: &str) -> Route {
        route(&method, path).unwrap_or_else(|r| panic!("{path}: {}", r.status))
    }

    fn status(method: Method, path: &str) -> StatusCode {
        route(&method, path).map_or_else(|r| r.status, |_| StatusCode::OK)
    }

    #[test]
    fn routes_match_with_or_without_the_prefix() {
        assert_eq!(ok(Method::GET, "/stats"), Route::Stats);
        assert_eq!(ok(Method::GET, "/api/sessions/stats"), Route::Stats);
        assert_eq!(ok(Method::GET, "/sessions"), Route::List);
        assert_eq!(ok(Method::GET, "/api/sessions/sessions"), Route::List);
        assert_eq!(ok(Method::POST, "/cleanup"), Route::Cleanup);
        assert_eq!(ok(Method::HEAD, "/health"), Route::Health);
        let id = crate::id::Token::generate().store_key();
        let p = format!("/api/sessions/sessions/{id}");
        assert_eq!(ok(Method::DELETE, &p), Route::Delete(id.to_string()));
        assert_eq!(
            ok(Method::DELETE, "/sessions/nonsense"),
            Route::Delete("nonsense".into())
        );
    }

    #[test]
    fn wrong_methods_are_405_and_unknown_or_odd_paths_404() {
        assert_eq!(
            status(Method::POST, "/stats"),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let r = route(&Method::GET, "/cleanup").unwrap_err();
        assert_eq!(r.allow, Some("POST"));
        let id = crate::id::Token::generate().store_key();
        let r = route(&Method::GET, &format!("/sessions/{id}")).unwrap_err();
        assert_eq!(r.allow, Some("DELETE"));
        for p in [
            "",
            "/",
            "//",
            "/stats/",
            "//stats",
            "/nope",
            "/sessions/nonsense",
            "/%2e%2e/stats%2f",
        ] {
            assert_eq!(status(Method::GET, p), StatusCode::NOT_FOUND, "{p:?}");
        }
        let long = format!("/{}/stats", "a".repeat(5000));
        assert_eq!(status(Method::GET, &long), StatusCode::URI_TOO_LONG);
    }

    #[test]
    fn list_query_defaults_bounds_and_refuses_garbage() {
        assert_eq!(list_query(None, 1000).unwrap(), (50, None));
        assert_eq!(list_query(Some("limit=7&x=%zz"), 1000).unwrap(), (7, None));
        assert_eq!(list_query(None, 10).unwrap(), (10, None));
        assert_eq!(
            list_query(Some("cursor=a%2Bb+c&limit="), 100).unwrap(),
            (50, Some("a+b c".to_owned()))
        );
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=-1",
            "limit=abc",
            "limit=1&limit=2",
            "cursor=%ff",
            "cursor=%00",
        ] {
            let r = list_query(Some(bad), 1000).unwrap_err();
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn only_allkeys_policies_warn() {
        assert!(eviction_warning("allkeys-lru").is_some());
        assert!(eviction_warning("allkeys-random").is_some());
        assert!(eviction_warning("volatile-lru").is_none());
        assert!(eviction_warning("noeviction").is_none());
    }
}
