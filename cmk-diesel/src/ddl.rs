//! The SQL of the tables cmk needs, for the application's own migrations.
//!
//! cmk does not run migrations itself: its tables would then be recorded in the
//! application's `__diesel_schema_migrations`, and `diesel migration revert` or `redo` would
//! look for a migration directory the application does not have. Instead the application
//! adds one migration of its own whose `up.sql` and `down.sql` are these texts (the files are
//! also shipped in this crate's `migrations/<dialect>/` directory):
//!
//! ```text
//! diesel migration generate cmk_tables
//! # then copy cmk-diesel's migrations/postgres/{up,down}.sql into migrations/*_cmk_tables/
//! ```
//!
//! or writes them from code once:
//! `std::fs::write(dir.join("up.sql"), ddl::tables(Dialect::Postgres).up)`.
//!
//! Grant the application INSERT and SELECT only on both tables: they are append-only, and
//! only an operator purge deletes (docs/SECURITY.md).
//!
//! # Sealed tables
//!
//! Column types for the application's sealed tables, per dialect:
//!
//! | column | SQLite | PostgreSQL | MySQL / MariaDB |
//! | --- | --- | --- | --- |
//! | ciphertext (`CiphertextSql`) | `BLOB` | `BYTEA` | `MEDIUMBLOB` (a 64 KiB value does not fit `BLOB`) |
//! | key column (`KeyColumnSql`) | `BLOB` | `BYTEA` | `VARBINARY(255)` (queryable prefix) |
//! | blind index (`BlindIndexSql`) | `BLOB` | `BYTEA` | `VARBINARY(64)` (indexable) |
//! | tenant id | `TEXT` | `TEXT COLLATE "C"` | `VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin` |
//!
//! `diesel print-schema` prints sealed columns as `Binary`; the recipe in this crate's
//! `print-schema/` directory (`import_types` plus a `patch_file`, checked against the real
//! CLI) makes it print cmk's types.
//!
//! A binary collation for tenant ids matters: under a case-insensitive collation `acme` and
//! `ACME` would match each other's rows in a tenant-constrained filter.

/// A database dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
            up: include_str!("../migrations/sqlite/up.sql"),
            down: include_str!("../migrations/sqlite/down.sql"),
        },
        Dialect::Postgres => Migration {
            up: include_str!("../migrations/postgres/up.sql"),
            down: include_str!("../migrations/postgres/down.sql"),
        },
        Dialect::Mysql => Migration {
            up: include_str!("../migrations/mysql/up.sql"),
            down: include_str!("../migrations/mysql/down.sql"),
        },
    }
}
