//! `#[derive(Encrypted)]` for cmk.
//!
//! **Not implemented yet.** This crate is a documented placeholder so the workspace has its
//! final shape; the derive (sealed companion types, transparent ORM row loading, compile-time
//! errors with spans) is the subject of the project's issue 4. Until then, use
//! `cmk_core::schema::RowSchema` with `TenantKeys::seal` and `TenantKeys::unseal` directly,
//! as `examples/quickstart.rs` does.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
