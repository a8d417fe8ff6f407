//! The queries of the library's own tables, once per backend.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::ddl::Dialect;
use crate::schema::{ConfigRow, RegistryRow, cmk_key_registry, cmk_tenant_config};

/// A Diesel connection that can hold cmk's tables: `SqliteConnection`,
/// `PgConnection` and `MysqlConnection` under the features of the same names. The methods
/// are the adapter's own; applications use [`crate::DieselRegistry`] and
/// [`crate::DieselConfigStore`].
pub trait StoreConnection: Connection + Send + 'static {
    /// The connection's dialect.
    const DIALECT: Dialect;

    /// Creates cmk's tables (the `up.sql` of [`crate::ddl::tables`]); for tests and tools
    /// whose schema has no migrations of its own.
    ///
    /// # Errors
    /// Diesel's error when a statement fails, for example because a table exists already.
    fn create_cmk_tables(&mut self) -> QueryResult<()> {
        self.batch_execute(crate::ddl::tables(Self::DIALECT).up)
    }

    /// Creates cmk's tables unless they exist (`CREATE TABLE IF NOT EXISTS`, which all three
    /// databases take): for an embedded deployment or an example that starts again on the
    /// same database. Applications with migrations put [`crate::ddl::tables`] in them.
    ///
    /// # Errors
    /// Diesel's error when a statement fails (a lost connection, no right to create tables).
    fn create_cmk_tables_if_missing(&mut self) -> QueryResult<()> {
        // The migrations create tables only (checked by a test): each gets IF NOT EXISTS.
        let up = crate::ddl::tables(Self::DIALECT)
            .up
            .replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ");
        self.batch_execute(&up)
    }

    /// Runs `f` in a transaction that will write after reading: SQLite takes its write lock
    /// at the start (`BEGIN IMMEDIATE`), so the read is already under it and the write
    /// cannot fail with "database is locked" because another connection wrote in between;
    /// PostgreSQL and MySQL begin as usual.
    ///
    /// # Errors
    /// The error `f` returns, after the transaction is rolled back; Diesel's error, converted
    /// into `E`, when the transaction cannot begin, commit or roll back.
    fn write_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<DieselError>;

    /// Drops them (the `down.sql`).
    ///
    /// # Errors
    /// Diesel's error when a statement fails, for example because a table does not exist.
    fn drop_cmk_tables(&mut self) -> QueryResult<()> {
        self.batch_execute(crate::ddl::tables(Self::DIALECT).down)
    }

    #[doc(hidden)]
    fn insert_registry_row(&mut self, row: &RegistryRow) -> QueryResult<bool>;
    #[doc(hidden)]
    fn find_registry_row(&mut self, key: &RegistryRow) -> QueryResult<Option<RegistryRow>>;
    #[doc(hidden)]
    fn registry_rows(&mut self, tenant: &str) -> QueryResult<Vec<RegistryRow>>;
    #[doc(hidden)]
    fn purge_registry(&mut self, tenant: &str) -> QueryResult<usize>;
    #[doc(hidden)]
    fn insert_config_row(&mut self, row: &ConfigRow) -> QueryResult<bool>;
    #[doc(hidden)]
    fn latest_config_row(&mut self, tenant: &str) -> QueryResult<Option<ConfigRow>>;
}

/// `Ok(false)` for a unique violation: the insert-if-absent of DESIGN.md §2, portable across
/// backends (no `ON CONFLICT`/`INSERT IGNORE` dialects; `INSERT IGNORE` would also swallow
/// truncation on MySQL).
fn inserted(result: QueryResult<usize>) -> QueryResult<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => Ok(false),
        Err(e) => Err(e),
    }
}

macro_rules! store_connection {
    ($feature:literal, $conn:ty, $dialect:expr, $write_transaction:ident) => {
        #[cfg(feature = $feature)]
        impl StoreConnection for $conn {
            const DIALECT: Dialect = $dialect;

            fn write_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
            where
                F: FnOnce(&mut Self) -> Result<T, E>,
                E: From<DieselError>,
            {
                self.$write_transaction(f)
            }

            fn insert_registry_row(&mut self, row: &RegistryRow) -> QueryResult<bool> {
                inserted(
                    diesel::insert_into(cmk_key_registry::table)
                        .values(row)
                        .execute(self),
                )
            }

            fn find_registry_row(&mut self, key: &RegistryRow) -> QueryResult<Option<RegistryRow>> {
                use cmk_key_registry::dsl as r;
                r::cmk_key_registry
                    .filter(r::tenant_id.eq(&key.tenant_id))
                    .filter(r::purpose.eq(&key.purpose))
                    .filter(r::policy.eq(&key.policy))
                    .filter(r::version.eq(key.version))
                    .filter(r::cmk_ref.eq(&key.cmk_ref))
                    .filter(r::state.eq(&key.state))
                    .select(registry_columns())
                    .first(self)
                    .optional()
            }

            fn registry_rows(&mut self, tenant: &str) -> QueryResult<Vec<RegistryRow>> {
                use cmk_key_registry::dsl as r;
                r::cmk_key_registry
                    .filter(r::tenant_id.eq(tenant))
                    .order(r::seq)
                    .select(registry_columns())
                    .load(self)
            }

            fn purge_registry(&mut self, tenant: &str) -> QueryResult<usize> {
                use cmk_key_registry::dsl as r;
                diesel::delete(r::cmk_key_registry.filter(r::tenant_id.eq(tenant))).execute(self)
            }

            fn insert_config_row(&mut self, row: &ConfigRow) -> QueryResult<bool> {
                inserted(
                    diesel::insert_into(cmk_tenant_config::table)
                        .values(row)
                        .execute(self),
                )
            }

            fn latest_config_row(&mut self, tenant: &str) -> QueryResult<Option<ConfigRow>> {
                use cmk_tenant_config::dsl as c;
                c::cmk_tenant_config
                    .filter(c::tenant_id.eq(tenant))
                    .order(c::revision.desc())
                    .first(self)
                    .optional()
            }
        }
    };
}

/// The registry columns in [`RegistryRow`]'s order.
#[allow(clippy::type_complexity)]
fn registry_columns() -> (
    cmk_key_registry::tenant_id,
    cmk_key_registry::purpose,
    cmk_key_registry::policy,
    cmk_key_registry::kek_id,
    cmk_key_registry::version,
    cmk_key_registry::cmk_ref,
    cmk_key_registry::state,
    cmk_key_registry::wrapped,
    cmk_key_registry::created_at,
) {
    use cmk_key_registry::dsl as r;
    (
        r::tenant_id,
        r::purpose,
        r::policy,
        r::kek_id,
        r::version,
        r::cmk_ref,
        r::state,
        r::wrapped,
        r::created_at,
    )
}

store_connection!(
    "sqlite",
    diesel::sqlite::SqliteConnection,
    Dialect::Sqlite,
    immediate_transaction
);
store_connection!(
    "postgres",
    diesel::pg::PgConnection,
    Dialect::Postgres,
    transaction
);
store_connection!(
    "mysql",
    diesel::mysql::MysqlConnection,
    Dialect::Mysql,
    transaction
);

#[cfg(test)]
mod tests {
    use crate::ddl::{Dialect, tables};

    #[test]
    fn the_migrations_create_tables_only_so_if_not_exists_covers_them() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres, Dialect::Mysql] {
            let up = tables(dialect).up;
            let creates = up.matches("CREATE ").count();
            assert_eq!(creates, up.matches("CREATE TABLE ").count(), "{dialect:?}");
            assert_eq!(creates, 2, "{dialect:?}");
        }
    }
}
