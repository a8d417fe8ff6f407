#![doc = include_str!("../README.md")]
// One justified unsafe block (pthread_atfork registration in crypto/rng.rs); all else is safe.
#![deny(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
// As rustls sets them: a public type is #[non_exhaustive] unless it says why it is not.
#![warn(clippy::exhaustive_structs, clippy::exhaustive_enums)]

// Layers, bottom up: each imports only from the layers below it.
// - error, clock, hex; byte formats; crypto (with secret key buffers); KMS providers;
// - tenant identity, policies and configuration; security events and their delivery (audit);
// - keys: registry and leases;
// - rows: the key handle of a request, schemas, plans, sealing, the model trait;
// - the service (`Cmk`: key fetching, classic mode, key administration, cmk's tables).
pub mod audit;
pub mod clock;
pub mod crypto;
pub mod error;
pub mod format;
mod hex;
pub mod keys;
pub mod kms;
pub mod meter;
pub mod rows;
mod service;
pub mod tenant;

// The paths of the flat layout, kept while the adapters and applications move to the new
// homes.
pub use audit::event;
pub use crypto::secret;
pub use keys::{lease, registry};
pub use rows::jobs;
pub use rows::{guard, manifest, model, schema, scope, seal};
pub use service::admin;
pub use service::sql;
pub use tenant::{context, policy};

pub use error::{Error, Result};
pub use rows::handle::TenantKeys;
pub use service::leasing::RenewReport;
pub use service::{Cmk, CmkBuilder, CmkSettings, EnsureReport, OnboardReport};
pub use tenant::config::TenantConfig;
pub use tenant::context::{Actor, RequestContext, TenantId};
pub use tenant::policy::{AuditMode, Class, LeasePolicy, Policy, SearchMode};

/// Hex helpers, exposed for tools and docs (lower-case encode, either-case decode).
pub mod hexfmt {
    pub use crate::hex::{decode, encode};
}
