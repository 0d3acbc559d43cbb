//! The layer's settings, shared by the layer, its services, their response futures and the sessions
//! they hand out. Built by [`SessionLayer`](crate::SessionLayer); nothing here depends on those types,
//! so the modules above use it without depending on each other.

use crate::expiry::{Expiry, SharedClock};
use crate::format::SharedFormat;
use crate::shutdown::Shutdown;
use crate::store::dynamic::SharedStore;
use crate::transport::{Signer, Transport};
use std::sync::Arc;

/// What the layer answers when the store fails while saving a session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorPolicy {
    /// Replace the response with a JSON error: `503 {"error":"session store unavailable"}` for an
    /// unavailable or full store, 413 for an oversized session, 500 otherwise. gRPC requests get
    /// `grpc-status: 14` (UNAVAILABLE) instead. The default: a client is never told a change was kept
    /// when it was not.
    #[default]
    Fail,
    /// Log the error and send the handler's response unchanged (the change is lost).
    Ignore,
}

/// What a [`Session`](crate::Session) needs: where sessions live and how long they last.
#[derive(Clone)]
pub(crate) struct SessionConfig {
    pub(crate) store: SharedStore,
    pub(crate) format: SharedFormat,
    pub(crate) clock: SharedClock,
    pub(crate) expiry: Expiry,
    /// Bytes of JSON a session's data may take.
    pub(crate) max_size: usize,
    pub(crate) max_sessions_per_user: Option<usize>,
    /// Whether cookies outlive the browser session unless a session says otherwise.
    pub(crate) persistent: bool,
}

/// What the service and its response future need beyond that.
#[derive(Clone)]
pub(crate) struct LayerConfig {
    pub(crate) session: Arc<SessionConfig>,
    pub(crate) transport: Transport,
    pub(crate) signer: Signer,
    pub(crate) policy: StoreErrorPolicy,
    pub(crate) shutdown: Option<Shutdown>,
}

/// The deepest a session value may be nested (arrays and objects): far below what any decoder of a
/// stored record refuses (serde_json stops at 128 levels, counting the record's own two), so what is
/// accepted can always be read back.
pub(crate) const MAX_DEPTH: usize = 64;
