//! Async one-call operations: keys are fetched first (`cmk.keys_for(&ctx, M::CLASSES)`),
//! then rows are sealed or unsealed synchronously and written or read through SeaORM.
//!
//! `M` is the plaintext model of `#[derive(Encrypted)]` and `E` its SeaORM entity (the
//! sealed type is `E::Model`), inferred from the arguments.
//!
//! ```rust
//! # use std::sync::Arc;
//! # use cmk::kms::local::LocalKms;
//! # use cmk::seaorm::{SeaOrmConfigStore, SeaOrmRegistry, ops};
//! # use cmk::secret::SecretKey;
//! # use cmk::tenant::{ConfigVerifier, OperatorKey};
//! # use cmk::{Cmk, Encrypted, Policy, RequestContext, SearchMode, TenantConfig, TenantId};
//! # use sea_orm::{ConnectionTrait, Database, EntityTrait, QueryFilter, Schema};
//! # mod patient {
//! #     use cmk::Encrypted;
//! #     use sea_orm::entity::prelude::*;
//! #     #[derive(Debug, Clone, PartialEq, Encrypted)]
//! #     #[sea_orm(table_name = "patients")]
//! #     #[cmk(tenant = tenant_id, id = id, ids = "app")]
//! #     pub struct Patient {
//! #         #[sea_orm(primary_key, auto_increment = false)]
//! #         pub id: i64,
//! #         pub tenant_id: String,
//! #         #[cmk(class = "private", blind_index(normalize = "casefold"))]
//! #         pub email: String,
//! #         #[cmk(class = "restricted")]
//! #         pub ssn: Option<String>,
//! #     }
//! #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
//! #     pub enum Relation {}
//! #     impl ActiveModelBehavior for ActiveModel {}
//! # }
//! # use patient::Patient;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let db = Database::connect("sqlite::memory:").await?;
//! # cmk::seaorm::migration::create_cmk_tables(&db).await?;
//! # let schema = Schema::new(db.get_database_backend());
//! # db.execute(&schema.create_table_from_entity(patient::Entity)).await?;
//! # let kms = Arc::new(LocalKms::in_memory());
//! # let key = kms.create_key("acme")?;
//! # let cmk = Cmk::builder()
//! #     .kms(kms)
//! #     .registry(Arc::new(SeaOrmRegistry::new(db.clone())))
//! #     .configs(Arc::new(SeaOrmConfigStore::new(
//! #         db.clone(),
//! #         ConfigVerifier::new(OperatorKey::new(SecretKey::random()?)),
//! #     )))
//! #     .build()?;
//! # let acme = TenantId::new("acme")?;
//! # let config = TenantConfig::new(acme.clone(), key.clone())
//! #     .with_class("private", Policy::new(key.clone()).with_search(SearchMode::BlindIndex))?;
//! # cmk.ensure_tenant(&RequestContext::new(acme.clone()), &config).await?;
//! # let ctx = RequestContext::new(acme);
//! # let people = vec![Patient {
//! #     id: 1, tenant_id: "acme".into(), email: "Ann@Example.com".into(), ssn: Some("1".into()),
//! # }];
//! let keys = cmk.keys_for(&ctx, Patient::CLASSES).await?;      // KMS only if cold
//! ops::insert_many(&db, &keys, &people).await?;
//! let ann: Option<Patient> = ops::one(&db, &keys,
//!     patient::Entity::find().filter(Patient::by_email(&keys, b"ann@example.com")?)).await?;
//! ops::update(&db, &keys, patient::Entity::find_by_id(1), |p: &mut Patient| {
//!     p.ssn = None;
//! }).await?;
//! # assert!(ann.is_some());
//! # Ok(())
//! # }
//! ```

use cmk_core::TenantKeys;
use cmk_core::event::{EventName, sealing_as};
use cmk_core::model::Encrypted;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbErr, DeleteMany, EntityTrait,
    IdenStatic, Iterable, ModelTrait, PrimaryKeyToColumn, QueryFilter, Select, TransactionSession,
    TransactionTrait, Value,
};

use crate::error::{Error, Result};

/// How often [`update`] re-reads and retries after another writer came first.
pub const UPDATE_ATTEMPTS: usize = 4;

/// The entity column stored under `name`.
pub(crate) fn column<E: EntityTrait>(name: &str) -> Result<E::Column> {
    E::Column::iter()
        .find(|c| c.as_str() == name)
        .ok_or_else(|| {
            cmk_core::Error::InvalidInput(format!("the entity has no column `{name}`")).into()
        })
}

/// Seals `model` with a fresh DEK per class and inserts it.
///
/// # Errors
/// [`crate::Error::Cmk`] when the model does not seal: for example
/// [`cmk_core::Error::ClassNotRequested`] (`keys` was not fetched for one of its classes),
/// [`cmk_core::Error::ValueTooLarge`] or [`cmk_core::Error::AuditFailClosed`].
/// [`crate::Error::Db`] when the insert fails, for example on a unique violation.
pub async fn insert<M, E, C>(db: &C, keys: &TenantKeys, model: &M) -> Result<()>
where
    M: Encrypted,
    M::Sealed: ModelTrait<Entity = E>,
    E: EntityTrait<Model = M::Sealed>,
    E::ActiveModel: From<E::Model>,
    C: ConnectionTrait,
{
    let row: E::ActiveModel = model.seal(keys)?.into();
    E::insert(row.reset_all())
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Seals every model (a fresh DEK per row and class; the KEKs were fetched once, by
/// `keys_for`) and inserts them in one statement. If any row fails to seal, nothing is
/// written and the error names its position.
///
/// # Errors
/// [`crate::Error::Row`] naming the position of the first model that does not seal, with its
/// cmk error (as for [`insert`]); nothing is written. [`crate::Error::Db`] when the insert
/// fails.
pub async fn insert_many<M, E, C>(db: &C, keys: &TenantKeys, models: &[M]) -> Result<u64>
where
    M: Encrypted,
    M::Sealed: ModelTrait<Entity = E>,
    E: EntityTrait<Model = M::Sealed>,
    E::ActiveModel: From<E::Model>,
    C: ConnectionTrait,
{
    let rows = M::seal_many(models, keys)
        .into_iter()
        .enumerate()
        .map(|(position, r)| {
            r.map(|sealed| E::ActiveModel::from(sealed).reset_all())
                .map_err(|source| Error::Row {
                    operation: "insert_many",
                    position,
                    source,
                })
        })
        .collect::<Result<Vec<_>>>()?;
    if rows.is_empty() {
        return Ok(0);
    }
    Ok(E::insert_many(rows).exec_without_returning(db).await?)
}

/// Runs `select` and unseals each row: one result per row, in order, so one bad row
/// (tampered, another tenant's) is reported in place and the rest are returned.
///
/// # Errors
/// [`crate::Error::Db`] when the query fails. A row that does not unseal is not an error of the
/// call: its `Err` stands in its place in the result.
pub async fn load<M, E, C>(
    db: &C,
    keys: &TenantKeys,
    select: Select<E>,
) -> Result<Vec<cmk_core::Result<M>>>
where
    M: Encrypted,
    M::Sealed: ModelTrait<Entity = E>,
    E: EntityTrait<Model = M::Sealed>,
    C: ConnectionTrait,
{
    let rows = select.all(db).await?;
    Ok(M::unseal_many_owned(rows, keys))
}

/// Like [`load`], but fails on the first row that does not unseal.
///
/// # Errors
/// [`crate::Error::Db`] when the query fails. [`crate::Error::Row`] naming the position of the
/// first row that does not unseal, with its cmk error: for example
/// [`cmk_core::Error::Tampered`] (the row fails authentication),
/// [`cmk_core::Error::TenantMismatch`] (another tenant's row) or
/// [`cmk_core::Error::AccessDenied`] (a class the actor may not read).
pub async fn load_all<M, E, C>(db: &C, keys: &TenantKeys, select: Select<E>) -> Result<Vec<M>>
where
    M: Encrypted,
    M::Sealed: ModelTrait<Entity = E>,
    E: EntityTrait<Model = M::Sealed>,
    C: ConnectionTrait,
{
    load(db, keys, select)
        .await?
        .into_iter()
        .enumerate()
        .map(|(position, r)| {
            r.map_err(|source| Error::Row {
                operation: "load_all",
                position,
                source,
            })
        })
        .collect()
}

/// The first row of `select`, unsealed, if there is one.
///
/// # Errors
/// [`crate::Error::Db`] when the query fails. [`crate::Error::Cmk`] when the row does not
/// unseal: for example [`cmk_core::Error::Tampered`] (the row fails authentication),
/// [`cmk_core::Error::TenantMismatch`] (another tenant's row) or
/// [`cmk_core::Error::AccessDenied`] (a class the actor may not read).
pub async fn one<M, E, C>(db: &C, keys: &TenantKeys, select: Select<E>) -> Result<Option<M>>
where
    M: Encrypted,
    M::Sealed: ModelTrait<Entity = E>,
    E: EntityTrait<Model = M::Sealed>,
    C: ConnectionTrait,
{
    match select.one(db).await? {
        Some(row) => Ok(Some(M::unseal_owned(row, keys)?)),
        None => Ok(None),
    }
}

/// Like [`load`], each row as its partial view: fields of classes the handle's actor may
/// not read come back [`cmk_core::model::Partial::Withheld`] instead of failing the row.
///
/// # Errors
/// [`crate::Error::Db`] when the query fails. A row that does not unseal (tampered, another
/// tenant's) is not an error of the call: its `Err` stands in its place in the result.
pub async fn load_partial<M, E, C>(
    db: &C,
    keys: &TenantKeys,
    select: Select<E>,
) -> Result<Vec<cmk_core::Result<M::View>>>
where
    M: Encrypted,
    M::Sealed: ModelTrait<Entity = E>,
    E: EntityTrait<Model = M::Sealed>,
    C: ConnectionTrait,
{
    let rows = select.all(db).await?;
    Ok(rows.iter().map(|r| M::unseal_partial(r, keys)).collect())
}

/// The first row of `select` as its partial view (see [`load_partial`]), if there is one.
///
/// # Errors
/// [`crate::Error::Db`] when the query fails. [`crate::Error::Cmk`] when the row does not
/// unseal: for example [`cmk_core::Error::Tampered`] (the row fails authentication) or
/// [`cmk_core::Error::TenantMismatch`] (another tenant's row). Classes the actor may not read
/// are withheld, not an error.
pub async fn one_partial<M, E, C>(
    db: &C,
    keys: &TenantKeys,
    select: Select<E>,
) -> Result<Option<M::View>>
where
    M: Encrypted,
    M::Sealed: ModelTrait<Entity = E>,
    E: EntityTrait<Model = M::Sealed>,
    C: ConnectionTrait,
{
    match select.one(db).await? {
        Some(row) => Ok(Some(M::unseal_partial(&row, keys)?)),
        None => Ok(None),
    }
}

/// A guarded read-modify-write of one row: reads the first row of `select`, unseals it,
/// applies `change`, re-seals the classes whose values changed with fresh DEKs (the others
/// keep their ciphertexts and DEK where the row's layout allows:
/// [`cmk_core::model::classes_to_keep`]) and writes it only if nobody wrote the row in
/// between (compare-and-set on its key columns); after a conflict
/// it starts again, up to [`UPDATE_ATTEMPTS`] times, then fails with
/// [`cmk_core::Error::Conflict`]. The primary key is not written. Returns the model as
/// written; `DbErr::RecordNotFound` when `select` finds no row.
///
/// # Errors
/// [`crate::Error::Db`] when a query fails, with `DbErr::RecordNotFound` when `select` finds no
/// row. [`crate::Error::Cmk`] with [`cmk_core::Error::Conflict`] when another writer came first
/// on every attempt, with [`cmk_core::Error::InvalidInput`] when `change` altered the primary
/// key or the row's bound id, and with what fails unsealing the row read (as for [`one`]) or
/// sealing the model (as for [`insert`]).
pub async fn update<M, E, C>(
    db: &C,
    keys: &TenantKeys,
    select: Select<E>,
    mut change: impl FnMut(&mut M),
) -> Result<M>
where
    M: Encrypted + Clone,
    M::Sealed: ModelTrait<Entity = E>,
    E: EntityTrait<Model = M::Sealed>,
    E::ActiveModel: From<E::Model>,
    C: ConnectionTrait,
{
    for _ in 0..UPDATE_ATTEMPTS {
        let Some(read) = select.clone().one(db).await? else {
            return Err(DbErr::RecordNotFound("no row to update".into()).into());
        };
        let before = M::unseal(&read, keys)?;
        let mut model = before.clone();
        change(&mut model);
        cmk_core::model::check_row_id_kept(&before, &model)?;
        let changed = before.changed_classes(&model)?;
        let mut sealed = sealing_as(EventName::DataUpdate, || model.seal(keys))?;
        // Classes whose values did not change keep their ciphertexts and DEK (when the row's
        // layout allows); unclassified and deterministic fields are always written.
        let keep = cmk_core::model::classes_to_keep::<M>(&read, &sealed, &changed);
        M::keep_classes(&mut sealed, &read, &keep, keys)?;
        same_primary_key::<E>(&read, &sealed)?;
        let guard = cmk_core::jobs::owned(M::key_columns(&read));
        if write_guarded::<E, C>(db, guard, sealed).await? {
            return Ok(model);
        }
    }
    Err(cmk_core::Error::Conflict.into())
}

/// Compare-and-set: re-seals `model` with fresh DEKs and writes it over the row `read` came
/// from, only if the row's key columns still hold what `read` holds (nobody wrote it since
/// it was read); else [`cmk_core::Error::Conflict`], writing nothing (also when the row is
/// gone). `model` must keep `read`'s primary key.
///
/// # Errors
/// [`crate::Error::Cmk`] with [`cmk_core::Error::Conflict`] when the row's key columns no longer
/// hold what `read` holds, or the row is gone; with [`cmk_core::Error::InvalidInput`] when
/// `model`'s primary key is not `read`'s; or with what fails sealing the model (as for
/// [`insert`]). [`crate::Error::Db`] when the `UPDATE` fails.
pub async fn update_if_unchanged<M, E, C>(
    db: &C,
    keys: &TenantKeys,
    read: &E::Model,
    model: &M,
) -> Result<()>
where
    M: Encrypted,
    M::Sealed: ModelTrait<Entity = E>,
    E: EntityTrait<Model = M::Sealed>,
    E::ActiveModel: From<E::Model>,
    C: ConnectionTrait,
{
    let sealed = sealing_as(EventName::DataUpdate, || model.seal(keys))?;
    same_primary_key::<E>(read, &sealed)?;
    let guard = cmk_core::jobs::owned(M::key_columns(read));
    if write_guarded::<E, C>(db, guard, sealed).await? {
        Ok(())
    } else {
        Err(cmk_core::Error::Conflict.into())
    }
}

/// Refuses a write of `sealed` over `read` whose primary key differs.
fn same_primary_key<E: EntityTrait>(read: &E::Model, sealed: &E::Model) -> Result<()> {
    for pk in E::PrimaryKey::iter() {
        let col = pk.into_column();
        if read.get(col) != sealed.get(col) {
            return Err(cmk_core::Error::InvalidInput(
                "the model's primary key differs from the row it was read from".into(),
            )
            .into());
        }
    }
    Ok(())
}

/// Writes `sealed` over the row with its primary key, only while the row's key columns
/// equal `guard`; `false` when they did not (another writer came first, or the row is
/// gone).
pub(crate) async fn write_guarded<E, C>(
    db: &C,
    guard: cmk_core::jobs::KeyGuard,
    sealed: E::Model,
) -> Result<bool>
where
    E: EntityTrait,
    E::ActiveModel: From<E::Model>,
    C: ConnectionTrait,
{
    let mut filter = Condition::all();
    for pk in E::PrimaryKey::iter() {
        let col = pk.into_column();
        filter = filter.add(col.eq(sealed.get(col)));
    }
    for (name, value) in guard {
        let col = column::<E>(name)?;
        filter = filter.add(match value {
            Some(bytes) => col.eq(Value::Bytes(Some(bytes))),
            None => col.is_null(),
        });
    }
    let mut row = E::ActiveModel::from(sealed).reset_all();
    for pk in E::PrimaryKey::iter() {
        row.not_set(pk.into_column());
    }
    let updated = E::update_many().set(row).filter(filter).exec(db).await?;
    Ok(updated.rows_affected > 0)
}

/// Deletes the rows of `delete` and records a `DATA_DELETE` event, in one transaction:
/// when the event cannot be recorded and a class of the table is fail-closed, the delete is
/// rolled back and the error returned. cmk cannot see inside `delete`: constrain it to the
/// key handle's tenant (`.filter(Column::TenantId.eq(keys.tenant().as_str()))`).
///
/// # Errors
/// [`crate::Error::Db`] when the `DELETE` or the transaction fails. [`crate::Error::Cmk`] with
/// [`cmk_core::Error::AuditFailClosed`] when the event cannot be recorded and a class of the
/// table is fail-closed; the delete is then rolled back.
pub async fn delete<M, E, C>(db: &C, keys: &TenantKeys, delete: DeleteMany<E>) -> Result<u64>
where
    M: Encrypted,
    M::Sealed: ModelTrait<Entity = E>,
    E: EntityTrait<Model = M::Sealed>,
    C: ConnectionTrait + TransactionTrait,
{
    let schema = M::schema()?;
    let txn = db.begin().await?;
    match delete.exec(&txn).await {
        Ok(done) => {
            let deleted = usize::try_from(done.rows_affected).unwrap_or(usize::MAX);
            // On an error here the transaction is dropped, which rolls the delete back.
            keys.audit_delete(schema, &Ok(deleted))?;
            txn.commit().await?;
            Ok(done.rows_affected)
        }
        Err(e) => {
            let failed = cmk_core::Error::Database(std::sync::Arc::new(e.clone()));
            // The delete failed already; its event is best effort.
            let _ = keys.audit_delete(schema, &Err(failed));
            Err(e.into())
        }
    }
}
