//! The SQL of the tables cmk needs (key registry and tenant configuration), per dialect,
//! for the application's own migrations; one text shared by the Diesel and SeaORM adapters
//! (`cmk_diesel::ddl`, `cmk_seaorm::migration`).

use crate::error::{Error, Result};
use crate::keys::registry::{KeyState, Purpose, RegistryEntry};
use crate::kms::KeyRef;
use crate::tenant::config::SignedTenantConfig;
use crate::tenant::context::TenantId;

/// A database dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// SQLite 3.
    Sqlite,
    /// PostgreSQL 12 or later.
    Postgres,
    /// MySQL 8 or MariaDB 10.5 or later.
    Mysql,
}

/// The `up.sql` and `down.sql` of one migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Migration {
    /// Creates the tables.
    pub up: &'static str,
    /// Drops them.
    pub down: &'static str,
}

/// The migration that creates the key registry (`cmk_key_registry`) and tenant
/// configuration (`cmk_tenant_config`) tables.
pub fn tables(dialect: Dialect) -> Migration {
    match dialect {
        Dialect::Sqlite => Migration {
            up: include_str!("../../sql/sqlite/up.sql"),
            down: include_str!("../../sql/sqlite/down.sql"),
        },
        Dialect::Postgres => Migration {
            up: include_str!("../../sql/postgres/up.sql"),
            down: include_str!("../../sql/postgres/down.sql"),
        },
        Dialect::Mysql => Migration {
            up: include_str!("../../sql/mysql/up.sql"),
            down: include_str!("../../sql/mysql/down.sql"),
        },
    }
}

/// A key-registry entry as the `cmk_key_registry` columns hold it (SQL integers are signed);
/// converting back checks every column, so a malformed row is an error, not a guess.
#[derive(Debug, Clone, PartialEq, Eq)]
// Exhaustive by design: a stored record, one field per column: the adapters build it from a row.
#[allow(clippy::exhaustive_structs)]
pub struct RegistryRecord {
    /// `tenant_id`.
    pub tenant_id: String,
    /// `purpose`.
    pub purpose: String,
    /// `policy`.
    pub policy: String,
    /// `kek_id`.
    pub kek_id: i64,
    /// `version`.
    pub version: i64,
    /// `cmk_ref`.
    pub cmk_ref: String,
    /// `state`.
    pub state: String,
    /// `wrapped`.
    pub wrapped: Vec<u8>,
    /// `created_at` (seconds since the Unix epoch).
    pub created_at: i64,
}

fn malformed(what: &str) -> Error {
    Error::Registry(format!("stored registry row has a malformed {what}"))
}

impl TryFrom<&RegistryEntry> for RegistryRecord {
    type Error = Error;
    fn try_from(e: &RegistryEntry) -> Result<Self> {
        Ok(RegistryRecord {
            tenant_id: e.tenant.as_str().to_owned(),
            purpose: e.purpose.as_str().to_owned(),
            policy: e.policy.clone(),
            kek_id: i64::from(e.kek_id),
            version: i64::from(e.version),
            cmk_ref: e.cmk_ref.as_str().to_owned(),
            state: e.state.as_str().to_owned(),
            wrapped: e.wrapped.clone(),
            created_at: i64::try_from(e.created_at).map_err(|_| malformed("timestamp"))?,
        })
    }
}

impl TryFrom<RegistryRecord> for RegistryEntry {
    type Error = Error;
    fn try_from(row: RegistryRecord) -> Result<Self> {
        Ok(RegistryEntry {
            tenant: TenantId::new(row.tenant_id)?,
            purpose: Purpose::parse(&row.purpose)?,
            policy: row.policy,
            kek_id: u32::try_from(row.kek_id).map_err(|_| malformed("KEK id"))?,
            version: u32::try_from(row.version).map_err(|_| malformed("version"))?,
            cmk_ref: KeyRef::new(row.cmk_ref).map_err(|_| malformed("master-key reference"))?,
            state: KeyState::parse(&row.state)?,
            wrapped: row.wrapped,
            created_at: u64::try_from(row.created_at).map_err(|_| malformed("timestamp"))?,
        })
    }
}

/// A tenant-configuration record as the `cmk_tenant_config` columns hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
// Exhaustive by design: a stored record, one field per column: the adapters build it from a row.
#[allow(clippy::exhaustive_structs)]
pub struct ConfigRecord {
    /// `tenant_id`.
    pub tenant_id: String,
    /// `revision`.
    pub revision: i64,
    /// `content` (the configuration as JSON).
    pub content: Vec<u8>,
    /// `mac` (HMAC-SHA256 under the operator key).
    pub mac: Vec<u8>,
    /// `created_at` (seconds since the Unix epoch; informational, not MACed).
    pub created_at: i64,
}

impl ConfigRecord {
    /// The record to insert for a signed configuration.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] when the revision does not fit in 63 bits (SQL integers
    /// are signed).
    pub fn from_signed(record: SignedTenantConfig) -> Result<Self> {
        Ok(ConfigRecord {
            revision: i64::try_from(record.revision)
                .map_err(|_| Error::InvalidConfig("a revision must fit in 63 bits".into()))?,
            tenant_id: record.tenant,
            content: record.content,
            mac: record.mac.to_vec(),
            created_at: now_secs(),
        })
    }

    /// The signed configuration this row claims to hold, for the verifier (a malformed row
    /// is an integrity error of `tenant`).
    ///
    /// # Errors
    /// [`crate::Error::ConfigIntegrity`] of `tenant` when the revision is negative or the MAC is
    /// not 32 bytes.
    pub fn into_signed(self, tenant: &TenantId) -> Result<SignedTenantConfig> {
        let integrity = || Error::ConfigIntegrity {
            tenant: tenant.to_string(),
        };
        Ok(SignedTenantConfig {
            revision: u64::try_from(self.revision).map_err(|_| integrity())?,
            mac: self.mac.as_slice().try_into().map_err(|_| integrity())?,
            tenant: self.tenant_id,
            content: self.content,
        })
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
