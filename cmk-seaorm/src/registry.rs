//! The key registry in the application's database (table `cmk_key_registry`), through
//! SeaORM.
//!
//! Append-only: [`KeyRegistry::insert_if_absent`] is a plain `INSERT` whose unique violation
//! means another writer won, whose entry is then read back and returned. Nothing here
//! caches: cmk's tenant view re-reads the registry at least once per renewal interval, which
//! is how another instance's new KEK versions and shred tombstones are seen in time.

use cmk_core::TenantId;
use cmk_core::registry::{InsertOutcome, KeyRegistry, RegistryEntry};
use cmk_core::sql::RegistryRecord;
use sea_orm::{
    ActiveValue, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    SqlErr, TransactionTrait,
};

use crate::tables::registry::{ActiveModel, Column, Entity, Model};

/// A [`KeyRegistry`] in a SeaORM database.
#[derive(Debug, Clone)]
pub struct SeaOrmRegistry {
    db: DatabaseConnection,
}

impl SeaOrmRegistry {
    /// A registry whose queries use `db` (a pool; cloning it is cheap).
    pub fn new(db: DatabaseConnection) -> Self {
        SeaOrmRegistry { db }
    }
}

pub(crate) fn db(e: DbErr) -> cmk_core::Error {
    cmk_core::Error::Database(std::sync::Arc::new(e))
}

/// `Ok(false)` for a unique violation: the insert-if-absent of DESIGN.md §2, portable across
/// backends.
pub(crate) fn inserted<T>(result: Result<T, DbErr>) -> cmk_core::Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => Ok(false),
        Err(e) => Err(db(e)),
    }
}

fn from_model(m: Model) -> cmk_core::Result<RegistryEntry> {
    RegistryEntry::try_from(RegistryRecord {
        tenant_id: m.tenant_id,
        purpose: m.purpose,
        policy: m.policy,
        kek_id: m.kek_id,
        version: m.version,
        cmk_ref: m.cmk_ref,
        state: m.state,
        wrapped: m.wrapped,
        created_at: m.created_at,
    })
}

fn active_model(r: &RegistryRecord) -> ActiveModel {
    ActiveModel {
        seq: ActiveValue::NotSet,
        tenant_id: ActiveValue::Set(r.tenant_id.clone()),
        purpose: ActiveValue::Set(r.purpose.clone()),
        policy: ActiveValue::Set(r.policy.clone()),
        kek_id: ActiveValue::Set(r.kek_id),
        version: ActiveValue::Set(r.version),
        cmk_ref: ActiveValue::Set(r.cmk_ref.clone()),
        state: ActiveValue::Set(r.state.clone()),
        wrapped: ActiveValue::Set(r.wrapped.clone()),
        created_at: ActiveValue::Set(r.created_at),
    }
}

impl SeaOrmRegistry {
    /// The entry that won the uniqueness key `r` (after a unique violation).
    async fn winner(&self, r: RegistryRecord) -> cmk_core::Result<InsertOutcome> {
        let winner = Entity::find()
            .filter(Column::TenantId.eq(r.tenant_id))
            .filter(Column::Purpose.eq(r.purpose))
            .filter(Column::Policy.eq(r.policy))
            .filter(Column::Version.eq(r.version))
            .filter(Column::CmkRef.eq(r.cmk_ref))
            .filter(Column::State.eq(r.state))
            .one(&self.db)
            .await
            .map_err(db)?
            // A unique violation whose winner cannot be read back: an operator purge
            // between the two statements. Report it rather than guess.
            .ok_or_else(|| {
                cmk_core::Error::Registry("a concurrent writer's entry vanished".into())
            })?;
        Ok(InsertOutcome::Existing(from_model(winner)?))
    }
}

#[async_trait::async_trait]
impl KeyRegistry for SeaOrmRegistry {
    async fn insert_if_absent(&self, entry: RegistryEntry) -> cmk_core::Result<InsertOutcome> {
        let r = RegistryRecord::try_from(&entry)?;
        if inserted(
            Entity::insert(active_model(&r))
                .exec_without_returning(&self.db)
                .await,
        )? {
            return Ok(InsertOutcome::Inserted);
        }
        self.winner(r).await
    }

    async fn insert_all_if_absent(
        &self,
        entries: Vec<RegistryEntry>,
    ) -> cmk_core::Result<Vec<InsertOutcome>> {
        let records: Vec<RegistryRecord> = entries
            .iter()
            .map(RegistryRecord::try_from)
            .collect::<cmk_core::Result<_>>()?;
        let txn = self.db.begin().await.map_err(db)?;
        let mut fresh = Vec::with_capacity(records.len());
        for r in &records {
            // A savepoint each: on PostgreSQL a unique violation would abort the whole
            // transaction; rolled back to the savepoint, the others still commit.
            let savepoint = txn.begin().await.map_err(db)?;
            let ok = inserted(
                Entity::insert(active_model(r))
                    .exec_without_returning(&savepoint)
                    .await,
            )?;
            if ok {
                savepoint.commit().await.map_err(db)?;
            } else {
                savepoint.rollback().await.map_err(db)?;
            }
            fresh.push(ok);
        }
        txn.commit().await.map_err(db)?;
        let mut outcomes = Vec::with_capacity(records.len());
        for (r, ok) in records.into_iter().zip(fresh) {
            outcomes.push(if ok {
                InsertOutcome::Inserted
            } else {
                self.winner(r).await?
            });
        }
        Ok(outcomes)
    }

    async fn entries(&self, tenant: &TenantId) -> cmk_core::Result<Vec<RegistryEntry>> {
        Entity::find()
            .filter(Column::TenantId.eq(tenant.as_str()))
            .order_by_asc(Column::Seq)
            .all(&self.db)
            .await
            .map_err(db)?
            .into_iter()
            .map(from_model)
            .collect()
    }

    async fn purge(&self, tenant: &TenantId) -> cmk_core::Result<usize> {
        let deleted = Entity::delete_many()
            .filter(Column::TenantId.eq(tenant.as_str()))
            .exec(&self.db)
            .await
            .map_err(db)?;
        Ok(usize::try_from(deleted.rows_affected).unwrap_or(usize::MAX))
    }
}
