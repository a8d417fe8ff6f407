//! The one error type of cmk.
//!
//! No variant carries plaintext or key material: messages name tenants, tables, columns,
//! classes and key identifiers only. Every failure to authenticate stored data (a flipped
//! bit, a truncated value, a ciphertext moved to another field, row, class or tenant) is
//! [`Error::Tampered`] with one fixed message, so the error gives an attacker no oracle.

use std::sync::Arc;

use crate::kms::KmsError;

/// Result alias used throughout cmk.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in cmk.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Stored ciphertext, key column, index value or registry entry failed authentication or
    /// could not be parsed. Deliberately carries no detail.
    #[error("stored ciphertext failed authentication")]
    Tampered,

    /// A stored value uses a format version older than the deployment accepts.
    #[error("stored value uses format version {found}, older than the minimum accepted {minimum}")]
    FormatTooOld {
        /// Version found in the value.
        found: u8,
        /// Oldest version this deployment accepts (set in code, never read from the database).
        minimum: u8,
    },

    /// The row, model or key handle belongs to a tenant other than the request's.
    #[error(
        "tenant mismatch: the request is for tenant `{expected}` but the data belongs to `{found}`"
    )]
    TenantMismatch {
        /// Tenant of the request context.
        expected: String,
        /// Tenant named by the data or handle.
        found: String,
    },

    /// The tenant has no entries in the key registry: it was never onboarded (nothing is
    /// provisioned implicitly) or it has been purged.
    #[error("tenant `{tenant}` is unknown: onboard it explicitly first")]
    UnknownTenant {
        /// The tenant.
        tenant: String,
    },

    /// The tenant has been crypto-shredded: its keys are gone for good.
    #[error("tenant `{tenant}` has been shredded")]
    TenantShredded {
        /// The tenant.
        tenant: String,
    },

    /// The actor lacks a reader role for a class.
    #[error("access denied: the actor may not read class `{class}`")]
    AccessDenied {
        /// The class withheld.
        class: String,
    },

    /// The class has no policy in the tenant's configuration.
    #[error("class `{class}` has no policy in the configuration of tenant `{tenant}`")]
    UnknownClass {
        /// The tenant.
        tenant: String,
        /// The class.
        class: String,
    },

    /// The key a value names is not available to this handle (not requested, destroyed, or
    /// never provisioned).
    #[error("key {kek_id:08x} version {version} of tenant `{tenant}` is not available")]
    KeyUnavailable {
        /// The tenant.
        tenant: String,
        /// The key id from the stored value.
        kek_id: u32,
        /// The key version from the stored value.
        version: u32,
    },

    /// A leased key can no longer be used: past its hard expiry while the KMS was
    /// unreachable, revoked by the tenant, or used up. The message names tenant and provider.
    #[error("lease of a key of tenant `{tenant}` (KMS `{provider}`) ended: {reason}")]
    LeaseEnded {
        /// The tenant.
        tenant: String,
        /// The KMS provider.
        provider: String,
        /// Why.
        reason: String,
    },

    /// Row-loading code ran outside a key scope (see `TenantKeys::scope`).
    #[error(
        "no key scope is active: enter one with TenantKeys::scope (sync) or TenantKeys::scope_async before loading encrypted rows"
    )]
    NoKeyScope,

    /// The class is in classic mode (a KMS call per row) and cannot be served synchronously.
    #[error(
        "class `{class}` is in classic mode (no lease): use Cmk::seal_classic / Cmk::unseal_classic (async)"
    )]
    ClassicModeNeedsAsync {
        /// The class.
        class: String,
    },

    /// A row has a classified value but no key column for its class (strict mode).
    #[error("column `{column}` has a value but the row has no key column listing it")]
    MissingKeyColumn {
        /// The column.
        column: String,
    },

    /// The KMS refused or failed an operation.
    #[error("KMS `{provider}` failed for tenant `{tenant}`: {source}")]
    Kms {
        /// Tenant the operation was for.
        tenant: String,
        /// Provider name (`local`, `aws`, `pkcs11`, `kmip`).
        provider: String,
        /// What the KMS said, classified.
        #[source]
        source: KmsError,
    },

    /// A tenant configuration record failed its MAC check.
    #[error("tenant configuration of `{tenant}` failed its integrity check")]
    ConfigIntegrity {
        /// The tenant.
        tenant: String,
    },

    /// A tenant configuration record is older than one already seen (a rollback).
    #[error(
        "tenant configuration of `{tenant}` has revision {offered}, older than revision {seen} already seen"
    )]
    ConfigRollback {
        /// The tenant.
        tenant: String,
        /// Highest revision seen.
        seen: u64,
        /// Revision offered.
        offered: u64,
    },

    /// Configuration or caller input is invalid; the message names what and how to fix it.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// Caller input is invalid (not data from the database); the message says why.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The key registry failed or refused an operation.
    #[error("key registry: {0}")]
    Registry(String),

    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Random,

    /// A fail-closed audit policy could not record the event, so the operation was refused.
    #[error("audit event could not be recorded and the policy is fail-closed: {0}")]
    AuditFailClosed(String),

    /// An I/O failure (keyring file, spool); the message names the path, never contents.
    #[error("i/o: {0}")]
    Io(String),

    /// The database failed (connection, query, constraint). The source is the ORM's own
    /// error, kept for inspection; messages of sealed tables name ciphertexts, never
    /// plaintext.
    #[error("database: {0}")]
    Database(Arc<dyn std::error::Error + Send + Sync>),

    /// A compare-and-set update found that another writer changed the row first.
    #[error("the row was changed by another writer (compare-and-set failed)")]
    Conflict,

    /// A write broke a unique constraint (an email already registered, through its blind
    /// index). The database's own message is not kept: PostgreSQL's names the duplicate
    /// value, which for a blind-index column is the index of the plaintext.
    #[error(
        "a row with the same unique value exists (table {}, constraint {})",
        table.as_deref().unwrap_or("unknown"),
        constraint.as_deref().unwrap_or("unknown")
    )]
    UniqueViolation {
        /// The table, when the database names it.
        table: Option<String>,
        /// The constraint or index, when the database names it.
        constraint: Option<String>,
    },

    /// A provider- or adapter-specific failure that fits no other variant.
    #[error("{0}")]
    Other(Arc<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// True when the error means stored data failed authentication.
    pub fn is_tampered(&self) -> bool {
        matches!(self, Error::Tampered)
    }

    /// The HTTP status a web application answers with when a request fails with this error
    /// (what `cmk::web`'s middlewares answer):
    ///
    /// | status | errors |
    /// |---|---|
    /// | 400 | invalid input (a malformed tenant id from a header) |
    /// | 403 | access denied (no reader role), another tenant's row, the tenant's KMS refusing (key disabled or revoked) |
    /// | 404 | unknown tenant |
    /// | 409 | compare-and-set conflict, unique violation |
    /// | 410 | tenant crypto-shredded |
    /// | 503 | KMS unreachable or throttled, a lease past its hard expiry, an audit sink down under fail-closed |
    /// | 500 | tampered or unreadable stored data, configuration integrity, anything else |
    ///
    /// Tampered data is a 500 on purpose: the client did nothing wrong, and the response
    /// must not tell an attacker which of their changes was noticed (the event and the log
    /// do).
    pub fn http_status(&self) -> u16 {
        use crate::kms::KmsErrorKind;
        match self {
            Error::InvalidInput(_) => 400,
            Error::AccessDenied { .. } | Error::TenantMismatch { .. } => 403,
            Error::Kms { source, .. } if source.kind == KmsErrorKind::Denied => 403,
            Error::UnknownTenant { .. } => 404,
            Error::Conflict | Error::UniqueViolation { .. } => 409,
            Error::TenantShredded { .. } => 410,
            Error::Kms { source, .. } if source.kind.is_transient() => 503,
            Error::LeaseEnded { .. } | Error::AuditFailClosed(_) => 503,
            _ => 500,
        }
    }

    /// A stable snake_case name of the variant, for events and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Tampered => "tampered",
            Error::FormatTooOld { .. } => "format_too_old",
            Error::TenantMismatch { .. } => "tenant_mismatch",
            Error::UnknownTenant { .. } => "unknown_tenant",
            Error::TenantShredded { .. } => "tenant_shredded",
            Error::AccessDenied { .. } => "access_denied",
            Error::UnknownClass { .. } => "unknown_class",
            Error::KeyUnavailable { .. } => "key_unavailable",
            Error::MissingKeyColumn { .. } => "missing_key_column",
            Error::LeaseEnded { .. } => "lease_ended",
            Error::NoKeyScope => "no_key_scope",
            Error::ClassicModeNeedsAsync { .. } => "classic_mode_needs_async",
            Error::Kms { source, .. } => match source.kind {
                crate::kms::KmsErrorKind::Unavailable => "kms_unavailable",
                crate::kms::KmsErrorKind::Throttled => "kms_throttled",
                crate::kms::KmsErrorKind::Denied => "kms_denied",
                crate::kms::KmsErrorKind::NotFound => "kms_not_found",
                crate::kms::KmsErrorKind::Invalid => "kms_invalid",
            },
            Error::ConfigIntegrity { .. } => "config_integrity",
            Error::ConfigRollback { .. } => "config_rollback",
            Error::InvalidConfig(_) => "invalid_config",
            Error::InvalidInput(_) => "invalid_input",
            Error::Registry(_) => "registry",
            Error::Random => "random",
            Error::AuditFailClosed(_) => "audit_fail_closed",
            Error::Io(_) => "io",
            Error::Database(_) => "database",
            Error::Conflict => "conflict",
            Error::UniqueViolation { .. } => "unique_violation",
            Error::Other(_) => "other",
        }
    }
}
