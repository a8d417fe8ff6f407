//! Who a request acts for and what a tenant's policies are: tenant and request identity
//! ([`context`]), classes and their policies ([`policy`]), and the authenticated per-tenant
//! configuration ([`config`]). Above the byte formats, crypto and KMS providers; below keys.

pub mod config;
pub mod context;
#[cfg(feature = "config-file")]
pub mod file;
mod floor;
pub mod policy;

pub use config::*;
#[cfg(feature = "config-file")]
pub use file::FileConfigStore;
