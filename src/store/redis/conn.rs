//! How the Redis store talks to Redis: one shared connection (opened on first use, replaced after a
//! failure), every command bounded by the command timeout, and redis-rs errors turned into store
//! errors.

use super::topology::Conn;
use super::RedisStore;
use crate::store::StoreError;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, ScriptInvocation, ServerErrorKind};
use std::time::{Duration, Instant};

/// The store's name in errors and health.
pub(super) const NAME: &str = "redis";

/// What to send: a command, a script or a pipeline.
pub(super) enum Op<'a> {
    Cmd(&'a Cmd),
    Script(&'a ScriptInvocation<'a>),
    Pipe(&'a Pipeline),
    /// A command for one cluster node (`host:port`); the one server when not a cluster.
    OnNode(&'a str, &'a Cmd),
}

/// How one attempt at a command failed.
pub(super) enum Attempt {
    /// The connection was dropped: worth one retry on a new connection.
    Dropped(StoreError),
    /// Anything else.
    Failed(StoreError),
}

impl Attempt {
    pub(super) fn into_error(self) -> StoreError {
        match self {
            Attempt::Dropped(e) | Attempt::Failed(e) => e,
        }
    }
}

/// A command's answer, and whether it took a second attempt on a fresh connection (the first one's
/// connection dropped: it may have run).
pub(super) struct Answer<T> {
    pub(super) value: T,
    pub(super) retried: bool,
}

impl RedisStore {
    fn current(&self) -> Option<(u64, Conn)> {
        self.inner.conn.read().ok().and_then(|c| c.clone())
    }

    /// Forgets connection `generation` after a failure that may have left it unusable, so the next
    /// call opens a fresh one. (The connection manager reconnects by itself after I/O errors, but
    /// keeps a failed handshake, e.g. `LOADING` or a refused `AUTH`, and cannot see a half-open
    /// socket that only ever times out.)
    fn reset(&self, generation: u64) {
        if let Ok(mut slot) = self.inner.conn.write() {
            if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
                *slot = None;
            }
        }
    }

    /// The open connection, connecting (bounded by the connect timeout) when there is none.
    pub(super) async fn conn(&self) -> Result<(u64, Conn), StoreError> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let limit = self.inner.config.connect_timeout;
        // Boxed: connecting is rare, and its future is large; inline it would make every store
        // call's future (moved into a box per call) kilobytes bigger.
        tokio::time::timeout(limit, Box::pin(self.connect()))
            .await
            .unwrap_or(Err(StoreError::Timeout {
                backend: NAME,
                after: limit,
            }))
    }

    async fn connect(&self) -> Result<(u64, Conn), StoreError> {
        let _one_at_a_time = self.inner.connecting.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let cfg = &self.inner.config;
        let (conn, master) = self.inner.connector.connect(cfg).await.map_err(|e| {
            tracing::debug!(error = %e, redis = %cfg, "cannot connect to Redis");
            if e.is_timeout() {
                StoreError::Timeout {
                    backend: NAME,
                    after: cfg.connect_timeout,
                }
            } else {
                // Whatever stopped the handshake (refused, reset, AUTH, LOADING), Redis is not
                // usable now.
                StoreError::Unavailable {
                    backend: NAME,
                    source: Box::new(e),
                }
            }
        })?;
        if let (Some(cache), Some(master)) = (&self.inner.cache, master) {
            // Sentinel named a master: the read cache follows it (and empties when it moved).
            cache.follow(master);
        }
        let generation = self
            .inner
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut slot) = self.inner.conn.write() {
            *slot = Some((generation, conn.clone()));
        }
        tracing::debug!(redis = %cfg, "connected to Redis");
        Ok((generation, conn))
    }

    /// Runs one command, script or pipeline: at most the connect plus the command timeout in all.
    pub(super) async fn exec<T: redis::FromRedisValue>(&self, op: Op<'_>) -> Result<T, StoreError> {
        self.exec_retrying(op).await.map(|a| a.value)
    }

    /// As [`RedisStore::exec`], saying whether the command went twice. An established connection
    /// closed under us (a proxy's or Redis's idle timeout, `CLIENT KILL`, a restart) gets one more try
    /// on a fresh connection, so a dropped connection alone is not an outage; a Redis that is really
    /// gone refuses the reconnect at once. The retry only gets what is left of one call's budget, so
    /// the whole call never takes longer than a call without it could. A write sent twice must be one
    /// a replay cannot apply twice (the scripts see to it, or the caller checks `retried`).
    pub(super) async fn exec_retrying<T: redis::FromRedisValue>(
        &self,
        op: Op<'_>,
    ) -> Result<Answer<T>, StoreError> {
        self.exec_or_replay(&op, &op).await
    }

    /// As [`RedisStore::exec_retrying`], sending `replay` (the same write, marked as sent again) for
    /// the second attempt.
    pub(super) async fn exec_or_replay<T: redis::FromRedisValue>(
        &self,
        op: &Op<'_>,
        replay: &Op<'_>,
    ) -> Result<Answer<T>, StoreError> {
        let budget = self.inner.config.connect_timeout + self.inner.config.command_timeout;
        let started = Instant::now();
        let conn = self.conn().await?;
        match self.exec_on(conn, op).await {
            Ok(value) => Ok(Answer {
                value,
                retried: false,
            }),
            Err(Attempt::Dropped(e)) => {
                let left = budget.saturating_sub(started.elapsed());
                let again = async {
                    let conn = self.conn().await.map_err(Attempt::Failed)?;
                    self.exec_on(conn, replay).await
                };
                match tokio::time::timeout(left, Box::pin(again)).await {
                    Ok(res) => res.map_err(Attempt::into_error).map(|value| Answer {
                        value,
                        retried: true,
                    }),
                    Err(_) => Err(e),
                }
            }
            Err(Attempt::Failed(e)) => Err(e),
        }
    }

    /// One attempt on the connection `(generation, conn)`, bounded by the command timeout.
    pub(super) async fn exec_on<T: redis::FromRedisValue>(
        &self,
        (generation, mut conn): (u64, Conn),
        op: &Op<'_>,
    ) -> Result<T, Attempt> {
        let after = self.inner.config.command_timeout;
        let fut = async {
            match op {
                Op::Cmd(cmd) => cmd.query_async(&mut conn).await,
                Op::Script(inv) => inv.invoke_async(&mut conn).await,
                Op::Pipe(pipe) => pipe.query_async(&mut conn).await,
                // Boxed: admin-only, and the cluster's routing future is large.
                Op::OnNode(addr, cmd) => Box::pin(conn.on_node(addr, cmd))
                    .await
                    .and_then(|v| redis::from_redis_value(v).map_err(Into::into)),
            }
        };
        match tokio::time::timeout(after, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if is_connection_problem(&e) {
                    self.reset(generation);
                }
                if e.is_connection_dropped() {
                    Err(Attempt::Dropped(map_error(e, after)))
                } else {
                    Err(Attempt::Failed(map_error(e, after)))
                }
            }
            Err(_) => {
                self.reset(generation);
                Err(Attempt::Failed(StoreError::Timeout {
                    backend: NAME,
                    after,
                }))
            }
        }
    }

    /// Sends `PING` and answers the round-trip time (connecting first if needed). Bounded by the
    /// connect and command timeouts.
    pub(super) async fn ping(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        let reply: String = self.exec(Op::Cmd(&redis::cmd("PING"))).await?;
        if reply != "PONG" {
            return Err(backend(format!("unexpected PING reply {reply:?}")));
        }
        Ok(start.elapsed())
    }
}

/// Whether an error says the connection itself may be broken (as opposed to Redis answering our
/// command with an error).
pub(super) fn is_connection_problem(e: &RedisError) -> bool {
    match e.kind() {
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::ClusterDown,
        ) => true,
        ErrorKind::Server(_) | ErrorKind::Extension | ErrorKind::UnexpectedReturnType => false,
        _ => true,
    }
}

/// Whether Redis refused a write for want of memory (`-OOM command not allowed when used memory >
/// 'maxmemory'`), also when a script's write met it.
fn is_out_of_memory(e: &RedisError) -> bool {
    e.code() == Some("OOM") || e.to_string().contains("OOM command not allowed")
}

/// Refused, reset, dropped and other I/O errors: unavailable; timeouts: timeout; OOM: full; the rest:
/// backend.
pub(super) fn map_error(e: RedisError, after: Duration) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout {
            backend: NAME,
            after,
        }
    } else if is_out_of_memory(&e) {
        StoreError::Full {
            backend: NAME,
            detail: "Redis refused a write: used memory is at maxmemory (noeviction)".into(),
        }
    } else if e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::TryAgain
            )
        )
    {
        StoreError::Unavailable {
            backend: NAME,
            source: Box::new(e),
        }
    } else {
        StoreError::backend(NAME, e)
    }
}

pub(super) fn backend(msg: impl Into<String>) -> StoreError {
    StoreError::backend(NAME, msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connection_level_errors_reset_the_connection() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_connection_problem(&refused));
        assert!(map_error(refused, Duration::from_secs(1)).is_unavailable());
        let timeout = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(matches!(
            map_error(timeout, Duration::from_secs(1)),
            StoreError::Timeout { .. }
        ));
        let typed = RedisError::from((ErrorKind::UnexpectedReturnType, "not a number"));
        assert!(!is_connection_problem(&typed));
        assert!(matches!(
            map_error(typed, Duration::from_secs(1)),
            StoreError::Backend { .. }
        ));
    }
}
