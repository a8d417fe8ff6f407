//! The one error type of cmk.
//!
//! No variant carries plaintext or key material: messages name tenants, tables, columns,
//! classes and key identifiers only. Every failure to authenticate stored data (a flipped
//! bit, a truncated value, a ciphertext moved to another field, row, class or tenant) is
//! [`Error::Tampered`] with one fixed message, so the error gives an attacker no oracle.

use std::sync::Arc;

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

    /// A row's stored blind index does not match the value the row decrypts to: the index
    /// column was edited (copied from another row, for example), so a lookup on it may have
    /// returned a row that does not match the query. The row is not returned.
    #[error(
        "the blind index of column `{column}` does not match the row's value: the index was altered in the database"
    )]
    IndexMismatch {
        /// The blind-indexed column.
        column: String,
    },

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

    /// The tenant has been crypto-shredded: its keys are gone for good. The registry's
    /// tombstone says so; if nobody shredded the tenant, the registry was altered (a forged
    /// tombstone): docs/SECURITY.md says what an operator does.
    #[error(
        "tenant `{tenant}` has been shredded; if nobody shredded it, the key registry was altered (see docs/SECURITY.md, forged states and tombstones)"
    )]
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

    /// A tenant configuration file failed a check at a known place: the file, its line, the
    /// tenant and the field are named; `problem` is what the check found
    /// ([`Error::ConfigIntegrity`], [`Error::ConfigRollback`] or [`Error::InvalidConfig`]).
    /// No value of the file is repeated: only names, numbers and the check's verdict.
    #[error("{path}:{line}: tenant `{tenant}`, field `{field}`: {problem}")]
    ConfigFile {
        /// The file.
        path: String,
        /// Its line (1-based) where the field, or the tenant's table, is.
        line: usize,
        /// The tenant whose table failed.
        tenant: String,
        /// The field, as a dotted path within the tenant's table (`classes.secret.lease`).
        field: String,
        /// What the check found.
        problem: Box<Error>,
    },

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

    /// An I/O failure (keyring file, operator key, spool), with the operating system's
    /// error when there is one; the context names the path, never contents.
    #[error("i/o: {context}")]
    Io {
        /// What failed, and on which path.
        context: String,
        /// The operating system's error (none for an internal lock found poisoned).
        #[source]
        source: Option<Arc<std::io::Error>>,
    },

    /// A name (tenant id, class, local key name) breaks its rule: input to reject (HTTP 400
    /// when it came from a request). The name is shown cut to 64 bytes, escaped.
    #[error("invalid {what} `{name}`: {rule}")]
    InvalidName {
        /// What the name is for.
        what: &'static str,
        /// The name as given (at most 64 bytes of it).
        name: String,
        /// The rule it breaks.
        rule: &'static str,
    },

    /// A class the key handle needs has no key for the tenant: the tenant was not onboarded
    /// for it (`Cmk::ensure_tenant` provisions it).
    #[error(
        "class `{class}` has no key for tenant `{tenant}`: onboard the class (Cmk::ensure_tenant)"
    )]
    ClassNotProvisioned {
        /// The tenant.
        tenant: String,
        /// The class.
        class: String,
    },

    /// Every key version of a class is recorded as destroyed: its rows cannot be read again.
    /// Onboarding does not help (it never revives a destroyed key). If nobody retired the
    /// class's keys, the key registry was altered: docs/SECURITY.md ("Forged states and
    /// tombstones") says what an operator does.
    #[error(
        "every key of class `{class}` of tenant `{tenant}` is recorded as destroyed; if nobody destroyed them, the key registry was altered (see docs/SECURITY.md, forged states and tombstones)"
    )]
    KeysDestroyed {
        /// The tenant.
        tenant: String,
        /// The class.
        class: String,
    },

    /// A model or row has a class the key handle was not fetched for.
    #[error("class `{class}` was not requested when the keys were fetched: add it to keys_for")]
    ClassNotRequested {
        /// The class.
        class: String,
    },

    /// An unsealed value does not decode as its field's Rust type (a type changed, or NULL in
    /// a field that is not an `Option`). The value is authentic; the model does not fit it.
    #[error("column `{column}`: {reason}")]
    Decode {
        /// The column.
        column: String,
        /// Why.
        reason: &'static str,
    },

    /// A value is larger than cmk seals (HTTP 413 when it came from a request).
    #[error("column `{column}`: the value exceeds {limit} bytes")]
    ValueTooLarge {
        /// The column.
        column: String,
        /// The limit in bytes.
        limit: usize,
    },

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
    /// An I/O failure with the operating system's error.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// An internal lock found poisoned (a panic elsewhere while it was held).
    pub(crate) fn poisoned(what: &str) -> Self {
        Error::Io {
            context: format!("{what} lock poisoned"),
            source: None,
        }
    }

    /// An invalid name, shown cut to 64 bytes (it may come from a request).
    pub(crate) fn invalid_name(what: &'static str, name: &str, rule: &'static str) -> Self {
        let mut end = name.len().min(64);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        // Escaped: a name from a request must not put line breaks or escapes into logs.
        Error::InvalidName {
            what,
            name: name[..end].escape_debug().to_string(),
            rule,
        }
    }

    /// True when the error means stored data failed authentication.
    pub fn is_tampered(&self) -> bool {
        matches!(self, Error::Tampered | Error::IndexMismatch { .. })
    }

    /// The HTTP status a web application answers with when a request fails with this error
    /// (what `cmk::web`'s middlewares answer):
    ///
    /// | status | errors |
    /// |---|---|
    /// | 400 | invalid input, an invalid name (a malformed tenant id from a header) |
    /// | 403 | access denied (no reader role), another tenant's row, the tenant's KMS refusing (key disabled or revoked) |
    /// | 404 | unknown tenant |
    /// | 409 | compare-and-set conflict, unique violation |
    /// | 413 | a value larger than cmk seals |
    /// | 410 | tenant crypto-shredded, every key of a class destroyed |
    /// | 503 | KMS unreachable or throttled, a lease past its hard expiry, an audit sink down under fail-closed |
    /// | 500 | tampered or unreadable stored data, configuration integrity, anything else |
    ///
    /// Tampered data is a 500 on purpose: the client did nothing wrong, and the response
    /// must not tell an attacker which of their changes was noticed (the event and the log
    /// do).
    pub fn http_status(&self) -> u16 {
        match self.underlying() {
            Error::InvalidInput(_) | Error::InvalidName { .. } => 400,
            Error::ValueTooLarge { .. } => 413,
            Error::AccessDenied { .. } | Error::TenantMismatch { .. } => 403,
            Error::Kms { source, .. } if source.kind == KmsErrorKind::Denied => 403,
            Error::UnknownTenant { .. } => 404,
            Error::Conflict | Error::UniqueViolation { .. } => 409,
            Error::TenantShredded { .. } | Error::KeysDestroyed { .. } => 410,
            Error::Kms { source, .. } if source.kind.is_transient() => 503,
            Error::LeaseEnded { .. } | Error::AuditFailClosed(_) => 503,
            _ => 500,
        }
    }

    /// The error itself, or for [`Error::ConfigFile`] the problem the check found there: match
    /// on this to treat a forged record alike whichever store it came from.
    pub fn underlying(&self) -> &Error {
        match self {
            Error::ConfigFile { problem, .. } => problem.underlying(),
            e => e,
        }
    }

    /// A stable snake_case name of the variant, for events and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Tampered => "tampered",
            Error::IndexMismatch { .. } => "index_mismatch",
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
                KmsErrorKind::Unavailable => "kms_unavailable",
                KmsErrorKind::Throttled => "kms_throttled",
                KmsErrorKind::Denied => "kms_denied",
                KmsErrorKind::NotFound => "kms_not_found",
                KmsErrorKind::Invalid => "kms_invalid",
            },
            Error::ConfigIntegrity { .. } => "config_integrity",
            Error::ConfigRollback { .. } => "config_rollback",
            Error::InvalidConfig(_) => "invalid_config",
            Error::ConfigFile { problem, .. } => problem.kind(),
            Error::InvalidInput(_) => "invalid_input",
            Error::Registry(_) => "registry",
            Error::Random => "random",
            Error::AuditFailClosed(_) => "audit_fail_closed",
            Error::Io { .. } => "io",
            Error::InvalidName { .. } => "invalid_name",
            Error::ClassNotProvisioned { .. } => "class_not_provisioned",
            Error::KeysDestroyed { .. } => "keys_destroyed",
            Error::ClassNotRequested { .. } => "class_not_requested",
            Error::Decode { .. } => "decode",
            Error::ValueTooLarge { .. } => "value_too_large",
            Error::Database(_) => "database",
            Error::Conflict => "conflict",
            Error::UniqueViolation { .. } => "unique_violation",
            Error::Other(_) => "other",
        }
    }
}

/// How a KMS failure is classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KmsErrorKind {
    /// The KMS could not be reached or did not answer in time (transient).
    Unavailable,
    /// The KMS refused for rate reasons (transient).
    Throttled,
    /// The caller may not use the key now: permission removed, grant revoked, key disabled,
    /// revoked or in a state that refuses the operation (pending deletion).
    Denied,
    /// The key or key version does not exist (deleted, destroyed).
    NotFound,
    /// The ciphertext, its associated data (context) or the key it names does not match: a
    /// wrong or tampered blob, or a refusal the provider does not explain.
    Invalid,
}

impl KmsErrorKind {
    /// True for failures that a lease rides out (unavailable, throttled).
    pub fn is_transient(self) -> bool {
        matches!(self, KmsErrorKind::Unavailable | KmsErrorKind::Throttled)
    }

    /// A stable lower-case name for events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            KmsErrorKind::Unavailable => "unavailable",
            KmsErrorKind::Throttled => "throttled",
            KmsErrorKind::Denied => "denied",
            KmsErrorKind::NotFound => "not_found",
            KmsErrorKind::Invalid => "invalid",
        }
    }
}

/// A classified KMS failure; its message never holds key material.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} ({message})", kind.as_str())]
#[non_exhaustive]
pub struct KmsError {
    /// The classification.
    pub kind: KmsErrorKind,
    /// What the provider said, for operators.
    pub message: String,
}

impl KmsError {
    /// Makes an error.
    pub fn new(kind: KmsErrorKind, message: impl Into<String>) -> Self {
        KmsError {
            kind,
            message: message.into(),
        }
    }
}
