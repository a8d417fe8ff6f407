//! cmk for Diesel (SQLite, PostgreSQL, MySQL).
//!
//! **Not implemented yet.** This crate is a documented placeholder so the workspace has its
//! final shape; column types, one-call operations, the key registry and tenant configuration
//! tables, and rekey and migration jobs are the subject of the project's issue 5. It has no
//! dependencies yet, so it costs nothing to build.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
