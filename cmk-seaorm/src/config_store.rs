//! Tenant configuration in the application's database (table `cmk_tenant_config`), through
//! SeaORM.
//!
//! Every save appends a row (tenant, revision, content, MAC); a load takes the highest
//! revision and verifies it with the [`ConfigVerifier`]: a record edited in the database
//! fails its MAC, and one rolled back (newer rows deleted) is refused once this process has
//! seen a newer revision, or always where deployment sets a revision floor.

use cmk_core::TenantId;
use cmk_core::sql::ConfigRecord;
use cmk_core::tenant::{ConfigVerifier, TenantConfig, TenantConfigStore};
use sea_orm::{ActiveValue, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};

use crate::registry::{db, inserted};
use crate::tables::config::{ActiveModel, Column, Entity};

/// A [`TenantConfigStore`] in a SeaORM database.
pub struct SeaOrmConfigStore {
    db: DatabaseConnection,
    verifier: ConfigVerifier,
}

impl SeaOrmConfigStore {
    /// A store whose queries use `db` and whose records `verifier` checks.
    pub fn new(db: DatabaseConnection, verifier: ConfigVerifier) -> Self {
        SeaOrmConfigStore { db, verifier }
    }
}

impl std::fmt::Debug for SeaOrmConfigStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeaOrmConfigStore").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TenantConfigStore for SeaOrmConfigStore {
    async fn load(&self, tenant: &TenantId) -> cmk_core::Result<TenantConfig> {
        let row = Entity::find()
            .filter(Column::TenantId.eq(tenant.as_str()))
            .order_by_desc(Column::Revision)
            .one(&self.db)
            .await
            .map_err(db)?
            .ok_or_else(|| cmk_core::Error::UnknownTenant {
                tenant: tenant.to_string(),
            })?;
        let record = ConfigRecord {
            tenant_id: row.tenant_id,
            revision: row.revision,
            content: row.content,
            mac: row.mac,
            created_at: row.created_at,
        }
        .into_signed(tenant)?;
        self.verifier.verify_loaded(tenant, &record)
    }

    async fn save(&self, config: &TenantConfig) -> cmk_core::Result<()> {
        let record = self.verifier.sign_for_save(config)?;
        let (tenant, revision) = (record.tenant.clone(), record.revision);
        let r = ConfigRecord::from_signed(record)?;
        let row = ActiveModel {
            tenant_id: ActiveValue::Set(r.tenant_id),
            revision: ActiveValue::Set(r.revision),
            content: ActiveValue::Set(r.content),
            mac: ActiveValue::Set(r.mac),
            created_at: ActiveValue::Set(r.created_at),
        };
        if inserted(Entity::insert(row).exec_without_returning(&self.db).await)? {
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
