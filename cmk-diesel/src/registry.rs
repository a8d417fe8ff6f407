//! The key registry in the application's database (table `cmk_key_registry`).
//!
//! Append-only: [`KeyRegistry::insert_if_absent`] is a plain `INSERT` whose unique violation
//! means another writer won, whose entry is then read back and returned. Nothing here caches:
//! cmk's tenant view re-reads the registry at least once per renewal interval, which is how
//! another instance's new KEK versions and shred tombstones are seen in time.

use std::sync::Arc;

use cmk_core::TenantId;
use cmk_core::registry::{InsertOutcome, KeyRegistry, RegistryEntry};
use cmk_core::sql::RegistryRecord;

use crate::schema::RegistryRow;
use crate::source::{ConnectionSource, db, run_blocking};
use crate::store::StoreConnection;

/// A [`KeyRegistry`] in a Diesel database.
pub struct DieselRegistry<S> {
    source: Arc<S>,
}

impl<S> DieselRegistry<S> {
    /// A registry whose queries use connections of `source`.
    pub fn new(source: Arc<S>) -> Self {
        DieselRegistry { source }
    }
}

impl<S> std::fmt::Debug for DieselRegistry<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DieselRegistry").finish_non_exhaustive()
    }
}

fn to_row(e: &RegistryEntry) -> cmk_core::Result<RegistryRow> {
    Ok(RegistryRecord::try_from(e)?.into())
}

fn from_row(row: RegistryRow) -> cmk_core::Result<RegistryEntry> {
    RegistryEntry::try_from(RegistryRecord::from(row))
}

#[async_trait::async_trait]
impl<S: ConnectionSource> KeyRegistry for DieselRegistry<S> {
    async fn insert_if_absent(&self, entry: RegistryEntry) -> cmk_core::Result<InsertOutcome> {
        let row = to_row(&entry)?;
        run_blocking(&self.source, move |conn| {
            if conn.insert_registry_row(&row).map_err(db)? {
                return Ok(InsertOutcome::Inserted);
            }
            let winner = conn
                .find_registry_row(&row)
                .map_err(db)?
                // A unique violation whose winner cannot be read back: an operator purge
                // between the two statements. Report it rather than guess.
                .ok_or_else(|| {
                    cmk_core::Error::Registry("a concurrent writer's entry vanished".into())
                })?;
            Ok(InsertOutcome::Existing(from_row(winner)?))
        })
        .await
    }

    async fn entries(&self, tenant: &TenantId) -> cmk_core::Result<Vec<RegistryEntry>> {
        let tenant = tenant.clone();
        run_blocking(&self.source, move |conn| {
            conn.registry_rows(tenant.as_str())
                .map_err(db)?
                .into_iter()
                .map(from_row)
                .collect()
        })
        .await
    }

    async fn purge(&self, tenant: &TenantId) -> cmk_core::Result<usize> {
        let tenant = tenant.clone();
        run_blocking(&self.source, move |conn| {
            conn.purge_registry(tenant.as_str()).map_err(db)
        })
        .await
    }
}
