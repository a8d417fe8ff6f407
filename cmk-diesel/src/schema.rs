//! Diesel's view of the library's own tables (the SQL is in [`crate::ddl`]).

#![allow(missing_docs)] // `table!` generates public items

diesel::table! {
    cmk_key_registry (seq) {
        seq -> BigInt,
        tenant_id -> Text,
        purpose -> Text,
        policy -> Text,
        kek_id -> BigInt,
        version -> BigInt,
        cmk_ref -> Text,
        state -> Text,
        wrapped -> Binary,
        created_at -> BigInt,
    }
}

diesel::table! {
    cmk_tenant_config (tenant_id, revision) {
        tenant_id -> Text,
        revision -> BigInt,
        content -> Binary,
        mac -> Binary,
        created_at -> BigInt,
    }
}

/// A registry row as stored (without its sequence number).
#[derive(Debug, Clone, PartialEq, Eq, diesel::Queryable, diesel::Insertable)]
#[diesel(table_name = cmk_key_registry)]
pub struct RegistryRow {
    pub tenant_id: String,
    pub purpose: String,
    pub policy: String,
    pub kek_id: i64,
    pub version: i64,
    pub cmk_ref: String,
    pub state: String,
    pub wrapped: Vec<u8>,
    pub created_at: i64,
}

/// A tenant configuration record as stored.
#[derive(Debug, Clone, PartialEq, Eq, diesel::Queryable, diesel::Insertable)]
#[diesel(table_name = cmk_tenant_config)]
pub struct ConfigRow {
    pub tenant_id: String,
    pub revision: i64,
    pub content: Vec<u8>,
    pub mac: Vec<u8>,
    pub created_at: i64,
}

impl From<cmk_core::sql::RegistryRecord> for RegistryRow {
    fn from(r: cmk_core::sql::RegistryRecord) -> Self {
        RegistryRow {
            tenant_id: r.tenant_id,
            purpose: r.purpose,
            policy: r.policy,
            kek_id: r.kek_id,
            version: r.version,
            cmk_ref: r.cmk_ref,
            state: r.state,
            wrapped: r.wrapped,
            created_at: r.created_at,
        }
    }
}

impl From<RegistryRow> for cmk_core::sql::RegistryRecord {
    fn from(r: RegistryRow) -> Self {
        cmk_core::sql::RegistryRecord {
            tenant_id: r.tenant_id,
            purpose: r.purpose,
            policy: r.policy,
            kek_id: r.kek_id,
            version: r.version,
            cmk_ref: r.cmk_ref,
            state: r.state,
            wrapped: r.wrapped,
            created_at: r.created_at,
        }
    }
}

impl From<cmk_core::sql::ConfigRecord> for ConfigRow {
    fn from(r: cmk_core::sql::ConfigRecord) -> Self {
        ConfigRow {
            tenant_id: r.tenant_id,
            revision: r.revision,
            content: r.content,
            mac: r.mac,
            created_at: r.created_at,
        }
    }
}

impl From<ConfigRow> for cmk_core::sql::ConfigRecord {
    fn from(r: ConfigRow) -> Self {
        cmk_core::sql::ConfigRecord {
            tenant_id: r.tenant_id,
            revision: r.revision,
            content: r.content,
            mac: r.mac,
            created_at: r.created_at,
        }
    }
}
