//! cmk for SeaORM 2.
//!
//! **Not implemented yet.** This crate is a documented placeholder so the workspace has its
//! final shape; value types, async operations, the save guard, migrations and jobs are the
//! subject of the project's issue 6. It has no dependencies yet, so it costs nothing to build.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
