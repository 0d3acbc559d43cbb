#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod admin;
pub mod expiry;
#[cfg(feature = "axum")]
mod extract;
mod future;
pub mod id;
mod layer;
pub mod metrics;
mod service;
mod session;
pub mod shutdown;
pub mod store;
mod transport;

#[cfg(feature = "axum")]
pub use extract::MissingSessionLayer;
pub use future::{ResponseFuture, SessionBody};
pub use layer::{SessionLayer, StoreErrorPolicy};
pub use service::SessionService;
pub use session::{Session, SessionError};

/// Re-exported for signing keys ([`SessionLayer::with_signing_keys`]) and `SameSite`.
pub use cookie;
