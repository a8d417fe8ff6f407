//! # cmk: Customer Managed Keys for Rust applications
//!
//! The facade crate: it re-exports the public API of `cmk-core` (and, as they arrive, the
//! derive and the ORM adapters). See the workspace README for the overview.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use cmk_core::*;
