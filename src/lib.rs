#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

#[cfg(feature = "axum")]
pub mod admin;
mod commit;
mod config;
mod error;
pub mod expiry;
#[cfg(feature = "axum")]
mod extract;
pub mod format;
mod future;
pub mod id;
mod layer;
mod log;
pub mod metrics;
mod service;
mod session;
pub mod shutdown;
pub mod store;
mod transport;

pub use config::StoreErrorPolicy;
pub use error::SessionError;
#[cfg(feature = "axum")]
pub use extract::MissingSessionLayer;
pub use future::{ResponseFuture, SessionBody};
pub use layer::SessionLayer;
pub use service::SessionService;
pub use session::Session;

/// Re-exported for signing keys ([`SessionLayer::with_signing_keys`]) and `SameSite`.
pub use cookie;
