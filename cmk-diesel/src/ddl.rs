//! The SQL of the tables cmk needs, for the application's own migrations.
//!
//! cmk does not run migrations itself: its tables would then be recorded in the
//! application's `__diesel_schema_migrations`, and `diesel migration revert` or `redo` would
//! look for a migration directory the application does not have. Instead the application
//! adds one migration of its own whose `up.sql` and `down.sql` are these texts (the files are
//! also shipped in cmk-core's `sql/<dialect>/` directory, shared with the SeaORM adapter):
//!
//! ```sh
//! diesel migration generate cmk_tables
//! # then copy cmk-core's sql/postgres/{up,down}.sql into migrations/*_cmk_tables/
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

pub use cmk_core::sql::{Dialect, Migration, tables};
