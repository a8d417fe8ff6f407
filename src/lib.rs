#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
// As rustls sets them: a public type is #[non_exhaustive] unless it says why it is not.
#![warn(clippy::exhaustive_structs, clippy::exhaustive_enums)]

// The public surface is listed here, item by item: what an application names. The engine's
// internals (byte formats, crypto, the write guard, SQL text, the jobs' plumbing) stay in
// `cmk_core`, which the adapters use directly.

pub use cmk_core::admin::{RotateReport, ShredReport};
pub use cmk_core::model::Encrypted;
pub use cmk_core::{
    Actor, AuditMode, Class, Cmk, CmkBuilder, CmkSettings, EnsureReport, Error, LeasePolicy,
    OnboardReport, Policy, RenewReport, RequestContext, Result, SearchMode, TenantConfig, TenantId,
    TenantKeys,
};
pub use cmk_core::{audit, clock, kms, meter, registry, secret};

/// What most modules of an application need: `use cmk::prelude::*;`.
pub mod prelude {
    pub use crate::Encrypted;
    pub use cmk_core::{
        Actor, Class, Cmk, Error, RequestContext, Result, TenantConfig, TenantId, TenantKeys,
    };
}

/// Security events: what happened, to whom, with what outcome, and the sinks they go to
/// (delivery to each tenant's SIEM is [`audit`]).
pub mod event {
    pub use cmk_core::audit::event::*;
}

/// Tenant configuration beyond the types at the crate root: the operator key that
/// authenticates it, its stores, and the verifier that refuses a forged or rolled-back record.
pub mod tenant {
    pub use cmk_core::tenant::config::{
        ConfigVerifier, MemoryConfigStore, OperatorKey, SignedTenantConfig, TenantConfig,
        TenantConfigStore,
    };
    /// The TOML file store (feature `config-file`): one signed table per tenant.
    #[cfg(feature = "config-file")]
    pub use cmk_core::tenant::file::FileConfigStore;
}

/// Models: the trait the derive implements, partial reads, field encodings and row ids.
pub mod model {
    pub use cmk_core::format::aad::RowId;
    pub use cmk_core::manifest::{
        Encoding, MANIFEST_SCHEMA, Manifest, ManifestField, ManifestKeyColumn, RowIdColumn,
        TenantColumn, write_manifests,
    };
    pub use cmk_core::model::{Encrypted, IntoRowId, Partial, RawField};
}

/// Sealing rows without the derive: a table's schema, the stored row, what unsealing reveals,
/// and the key scope row-loading code reads its keys from.
pub mod rows {
    pub use cmk_core::schema::{FieldSearch, FieldSpec, RowSchema};
    pub use cmk_core::scope::current_keys;
    pub use cmk_core::seal::{
        MAX_VALUE_LEN, Revealed, RowValues, SealedRow, StoredRow, UnsealedRow,
    };
}

/// The progress and chunking of the table jobs (KEK retirement, plaintext backfill) that the
/// adapters run (`cmk::diesel::jobs`, `cmk::seaorm::jobs`).
pub mod jobs {
    pub use cmk_core::jobs::{Chunks, Progress};
}
/// Derives [`Encrypted`] and the sealed companion row type (see `cmk-derive`).
#[doc(inline)]
pub use cmk_derive::Encrypted;

/// Paths the derive's generated code uses; not a stable API.
#[doc(hidden)]
pub mod __private {
    #[cfg(feature = "diesel")]
    pub use ::diesel;
    #[cfg(feature = "seaorm")]
    pub use ::sea_orm;
    pub use cmk_core::crypto::normalize::Normalizer;
    pub use cmk_core::format::aad::RowId;
    pub use cmk_core::model::derive_support::*;
    pub use cmk_core::model::{Encrypted, IntoRowId, Partial, RawField, decode_json, encode_json};
    pub use cmk_core::schema::{FieldSpec, RowSchema};
    pub use cmk_core::seal::{Revealed, StoredRow};
    pub use cmk_core::{Class, RequestContext, Result, TenantKeys};
    #[cfg(feature = "diesel")]
    pub use cmk_diesel::{BlindIndex, Ciphertext, KeyColumn};
    #[cfg(feature = "seaorm")]
    pub use cmk_seaorm as sea;
    pub use std::sync::OnceLock;
}

/// One loaded row: the model, or why it could not be unsealed. Load `Checked<Model>` instead
/// of `Model` when one bad row must not fail the whole load: each row carries its own result.
#[derive(Debug)]
// Exhaustive by design: a newtype applications destructure.
#[allow(clippy::exhaustive_structs)]
pub struct Checked<M>(pub Result<M>);

impl<M> Checked<M> {
    /// The result.
    ///
    /// # Errors
    /// The row's own error: [`crate::Error::NoKeyScope`] when it was loaded outside a key scope,
    /// else any error of [`crate::model::Encrypted::unseal`].
    pub fn into_result(self) -> Result<M> {
        self.0
    }
}

#[cfg(feature = "diesel")]
mod diesel_checked {
    use super::Checked;
    use cmk_core::model::Encrypted;
    use diesel::backend::Backend;
    use diesel::deserialize::{self, Queryable};

    impl<ST, DB, M> Queryable<ST, DB> for Checked<M>
    where
        DB: Backend,
        M: Encrypted,
        M::Sealed: Queryable<ST, DB>,
    {
        type Row = <M::Sealed as Queryable<ST, DB>>::Row;
        fn build(row: Self::Row) -> deserialize::Result<Self> {
            // A row the database cannot even deliver still fails the load; a row that does not
            // unseal is reported in place.
            let sealed = <M::Sealed as Queryable<ST, DB>>::build(row)?;
            Ok(Checked(
                cmk_core::model::derive_support::unseal_in_scope::<M>(&sealed),
            ))
        }
    }

    impl<DB: Backend, M> diesel::Selectable<DB> for Checked<M>
    where
        M: Encrypted,
        M::Sealed: diesel::Selectable<DB>,
    {
        type SelectExpression = <M::Sealed as diesel::Selectable<DB>>::SelectExpression;
        fn construct_selection() -> Self::SelectExpression {
            <M::Sealed as diesel::Selectable<DB>>::construct_selection()
        }
    }
}

#[cfg(feature = "seaorm")]
mod seaorm_checked {
    use super::Checked;
    use cmk_core::model::Encrypted;
    use sea_orm::{DbErr, FromQueryResult, QueryResult};

    impl<M> FromQueryResult for Checked<M>
    where
        M: Encrypted,
        M::Sealed: FromQueryResult,
    {
        fn from_query_result(res: &QueryResult, pre: &str) -> Result<Self, DbErr> {
            // A row the database cannot even deliver still fails the load; a row that does not
            // unseal is reported in place.
            let sealed = <M::Sealed as FromQueryResult>::from_query_result(res, pre)?;
            Ok(Checked(
                cmk_core::model::derive_support::unseal_in_scope::<M>(&sealed),
            ))
        }
    }
}

/// Diesel column types of sealed rows (`table!` uses `cmk::diesel::sql_types::*`).
#[cfg(feature = "diesel")]
#[doc(inline)]
pub use cmk_diesel as diesel;

/// SeaORM value types of sealed rows.
#[cfg(feature = "seaorm")]
#[doc(inline)]
pub use cmk_seaorm as seaorm;

#[cfg(any(feature = "actix", feature = "tower"))]
pub mod web;

/// The embedded default in one call: the local keyring, an operator key kept beside it,
/// cmk's tables in SQLite and events to a JSON Lines file, in one directory.
#[cfg(feature = "diesel")]
#[doc(inline)]
pub use cmk_diesel::embedded;

// The examples of the crates' READMEs run as doctests of the facade (they use `cmk`).
#[cfg(doctest)]
#[doc = include_str!("../cmk-diesel/README.md")]
struct DieselReadme;

#[cfg(doctest)]
#[doc = include_str!("../cmk-seaorm/README.md")]
struct SeaOrmReadme;

#[cfg(doctest)]
#[doc = include_str!("../cmk-derive/README.md")]
struct DeriveReadme;

#[cfg(doctest)]
#[doc = include_str!("../cmk-derive/ATTRIBUTES.md")]
struct DeriveAttributes;
