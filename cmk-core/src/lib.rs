#![doc = include_str!("../README.md")]
// One justified unsafe block (pthread_atfork registration in crypto/rng.rs); all else is safe.
#![deny(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod admin;
pub mod audit;
mod classic;
pub mod clock;
pub mod context;
pub mod crypto;
pub mod error;
pub mod event;
pub mod format;
pub mod guard;
mod hex;
pub mod jobs;
pub mod keys;
pub mod kms;
pub mod lease;
mod leasing;
pub mod model;
mod plan;
pub mod policy;
pub mod registry;
pub mod schema;
pub mod scope;
pub mod seal;
pub mod secret;
mod service;
pub mod sql;
pub mod tenant;

pub use context::{Actor, RequestContext, TenantId};
pub use error::{Error, Result};
pub use keys::TenantKeys;
pub use leasing::RenewReport;
pub use policy::{AuditMode, Class, LeasePolicy, Policy, SearchMode};
pub use service::{Cmk, CmkBuilder, CmkSettings, EnsureReport, OnboardReport};
pub use tenant::TenantConfig;

/// Hex helpers, exposed for tools and docs (lower-case encode, either-case decode).
pub mod hexfmt {
    pub use crate::hex::{decode, encode};
}
