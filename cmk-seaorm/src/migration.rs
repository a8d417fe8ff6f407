//! cmk's tables (key registry and tenant configuration) for the application's migrations,
//! and the column definitions of sealed tables.
//!
//! With the feature `migration`, `CmkTables` is a `sea_orm_migration::MigrationTrait`
//! the application appends to its own `Migrator`, so its `migrate up/down/fresh` and
//! `seaql_migrations` bookkeeping stay the application's:
//!
//! ```rust
//! # #[cfg(feature = "migration")]
//! # mod migrator {
//! use sea_orm_migration::{MigrationTrait, MigratorTrait};
//! # mod m20260101_create_patients {
//! #     use sea_orm_migration::prelude::*;
//! #     #[derive(DeriveMigrationName)]
//! #     pub struct Migration;
//! #     #[async_trait::async_trait]
//! #     impl MigrationTrait for Migration {
//! #         async fn up(&self, _: &SchemaManager) -> Result<(), DbErr> {
//! #             Ok(())
//! #         }
//! #     }
//! # }
//!
//! pub struct Migrator;
//!
//! impl MigratorTrait for Migrator {
//!     fn migrations() -> Vec<Box<dyn MigrationTrait>> {
//!         vec![Box::new(m20260101_create_patients::Migration), Box::new(cmk_seaorm::migration::CmkTables)]
//!     }
//! }
//! # }
//! ```
//!
//! Without it, call [`create_cmk_tables`] from a migration of your own. The SQL is the one
//! the Diesel adapter ships (`cmk_core::sql`). Grant the application INSERT and SELECT only
//! on both tables: they are append-only, and only an operator purge deletes.

use cmk_core::sql::{Dialect, tables};
use sea_orm::sea_query::{Alias, ColumnDef};
use sea_orm::{ConnectionTrait, DbBackend, DbErr};

/// The dialect of a SeaORM backend.
pub fn dialect(backend: DbBackend) -> Dialect {
    match backend {
        DbBackend::Postgres => Dialect::Postgres,
        DbBackend::MySql => Dialect::Mysql,
        _ => Dialect::Sqlite,
    }
}

/// The statements of a shipped SQL text, one by one (drivers differ on several per call).
fn statements(sql: &str) -> impl Iterator<Item = String> {
    let code: Vec<&str> = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect();
    code.join("\n")
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect::<Vec<_>>()
        .into_iter()
}

/// Creates `cmk_key_registry` and `cmk_tenant_config`.
///
/// # Errors
/// The `DbErr` of the first statement that fails, for example because a table exists already.
pub async fn create_cmk_tables<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    for stmt in statements(tables(dialect(db.get_database_backend())).up) {
        db.execute_unprepared(&stmt).await?;
    }
    Ok(())
}

/// Drops them.
///
/// # Errors
/// The `DbErr` of the first statement that fails, for example because a table does not exist.
pub async fn drop_cmk_tables<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    for stmt in statements(tables(dialect(db.get_database_backend())).down) {
        db.execute_unprepared(&stmt).await?;
    }
    Ok(())
}

/// cmk's tables as one migration of the application's `Migrator`.
#[cfg(feature = "migration")]
#[derive(Debug, Clone, Copy, Default)]
// Exhaustive by design: a unit migration, named as a value in the Migrator.
#[allow(clippy::exhaustive_structs)]
pub struct CmkTables;

#[cfg(feature = "migration")]
impl sea_orm_migration::MigrationName for CmkTables {
    fn name(&self) -> &str {
        "m20261130_000000_cmk_tables"
    }
}

#[cfg(feature = "migration")]
#[async_trait::async_trait]
impl sea_orm_migration::MigrationTrait for CmkTables {
    async fn up(&self, manager: &sea_orm_migration::SchemaManager) -> Result<(), DbErr> {
        create_cmk_tables(manager.get_connection()).await
    }

    async fn down(&self, manager: &sea_orm_migration::SchemaManager) -> Result<(), DbErr> {
        drop_cmk_tables(manager.get_connection()).await
    }
}

/// Column definitions for the sealed columns of the application's own tables, per backend
/// (`Table::create().col(columns::ciphertext(backend, "ssn").null())`): on MySQL a 64 KiB
/// value does not fit `BLOB`, indexed columns need `VARBINARY`, and tenant ids need a binary
/// collation (under a case-insensitive one `acme` and `ACME` would match each other's rows).
pub mod columns {
    use super::*;

    fn custom(name: &str, ty: &str) -> ColumnDef {
        ColumnDef::new(Alias::new(name))
            .custom(Alias::new(ty))
            .to_owned()
    }

    /// A field ciphertext (or deterministic value): `BLOB`, `BYTEA`, `MEDIUMBLOB`.
    pub fn ciphertext(backend: DbBackend, name: &str) -> ColumnDef {
        match backend {
            DbBackend::MySql => custom(name, "MEDIUMBLOB"),
            _ => ColumnDef::new(Alias::new(name)).blob().to_owned(),
        }
    }

    /// A blind index: `BLOB`, `BYTEA`, `VARBINARY(64)` (indexable).
    pub fn blind_index(backend: DbBackend, name: &str) -> ColumnDef {
        match backend {
            DbBackend::MySql => ColumnDef::new(Alias::new(name)).var_binary(64).to_owned(),
            _ => ColumnDef::new(Alias::new(name)).blob().to_owned(),
        }
    }

    /// A key column: `BLOB`, `BYTEA`, `VARBINARY(255)` (its prefix is queryable).
    pub fn key_column(backend: DbBackend, name: &str) -> ColumnDef {
        match backend {
            DbBackend::MySql => ColumnDef::new(Alias::new(name)).var_binary(255).to_owned(),
            _ => ColumnDef::new(Alias::new(name)).blob().to_owned(),
        }
    }

    /// A tenant id, compared byte for byte: `TEXT`, `TEXT COLLATE "C"`,
    /// `VARCHAR(255) ... utf8mb4_bin`.
    pub fn tenant_id(backend: DbBackend, name: &str) -> ColumnDef {
        match backend {
            DbBackend::MySql => custom(
                name,
                "VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
            ),
            DbBackend::Postgres => custom(name, "TEXT COLLATE \"C\""),
            _ => ColumnDef::new(Alias::new(name)).text().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_sql_splits_into_its_create_statements() {
        for d in [DbBackend::Sqlite, DbBackend::Postgres, DbBackend::MySql] {
            let up: Vec<String> = statements(tables(dialect(d)).up).collect();
            assert_eq!(up.len(), 2, "{d:?}: {up:?}");
            assert!(up[0].starts_with("CREATE TABLE cmk_key_registry"));
            assert!(up[1].starts_with("CREATE TABLE cmk_tenant_config"));
            assert_eq!(statements(tables(dialect(d)).down).count(), 2);
        }
    }
}
