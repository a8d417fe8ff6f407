//! Tenant configuration in the application's database (table `cmk_tenant_config`).
//!
//! Every save appends a row (tenant, revision, content, MAC); a load takes the highest
//! revision and verifies it with the [`ConfigVerifier`]: a record edited in the database
//! fails its MAC, and one rolled back (newer rows deleted) is refused once this process has
//! seen a newer revision, or always where deployment sets a revision floor.

use std::sync::Arc;

use cmk_core::TenantId;
use cmk_core::sql::ConfigRecord;
use cmk_core::tenant::{ConfigVerifier, TenantConfig, TenantConfigStore};

use crate::schema::ConfigRow;
use crate::source::{ConnectionSource, db, run_blocking};
use crate::store::StoreConnection;

/// A [`TenantConfigStore`] in a Diesel database.
pub struct DieselConfigStore<S> {
    source: Arc<S>,
    verifier: ConfigVerifier,
}

impl<S> DieselConfigStore<S> {
    /// A store whose queries use connections of `source` and whose records `verifier` checks.
    pub fn new(source: Arc<S>, verifier: ConfigVerifier) -> Self {
        DieselConfigStore { source, verifier }
    }
}

impl<S> std::fmt::Debug for DieselConfigStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DieselConfigStore").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl<S: ConnectionSource> TenantConfigStore for DieselConfigStore<S> {
    async fn load(&self, tenant: &TenantId) -> cmk_core::Result<TenantConfig> {
        let wanted = tenant.clone();
        let row = run_blocking(&self.source, move |conn| {
            conn.latest_config_row(wanted.as_str()).map_err(db)
        })
        .await?
        .ok_or_else(|| cmk_core::Error::UnknownTenant {
            tenant: tenant.to_string(),
        })?;
        let record = ConfigRecord::from(row).into_signed(tenant)?;
        self.verifier.verify_loaded(tenant, &record)
    }

    async fn save(&self, config: &TenantConfig) -> cmk_core::Result<()> {
        let record = self.verifier.sign_for_save(config)?;
        let (tenant, revision) = (record.tenant.clone(), record.revision);
        let row = ConfigRow::from(ConfigRecord::from_signed(record)?);
        let inserted = run_blocking(&self.source, move |conn| {
            conn.insert_config_row(&row).map_err(db)
        })
        .await?;
        if inserted {
            Ok(())
        } else {
            // Another writer saved this revision first: ours is not the newest.
            Err(cmk_core::Error::ConfigRollback {
                tenant,
                seen: revision,
                offered: revision,
            })
        }
    }
}
