//! # cmk: Customer Managed Keys for Rust applications
//!
//! The facade crate: it re-exports the public API of `cmk-core` (and, as they arrive, the
//! derive and the ORM adapters). See the workspace README for the overview.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub use cmk_core::*;
