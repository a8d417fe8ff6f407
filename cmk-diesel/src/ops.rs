//! One-call operations: seal and write, or read and unseal, with keys the caller obtained
//! first (`cmk.keys_for(&ctx, M::CLASSES).await`). The handle carries the request context:
//! every operation is checked and audited as that request. Sealing and unsealing are
//! synchronous CPU work, so these run in Diesel's synchronous code, `spawn_blocking` or a
//! pool's `interact`.
//!
//! ```rust
//! # use cmk::diesel::ops;
//! # use cmk::{Encrypted, Policy, RequestContext, SearchMode, TenantConfig, TenantId};
//! # use diesel::connection::SimpleConnection;
//! # use diesel::prelude::*;
//! # diesel::table! {
//! #     use diesel::sql_types::*;
//! #     use cmk::diesel::sql_types::*;
//! #     patients (id) {
//! #         id -> BigInt, tenant_id -> Text, email -> CiphertextSql,
//! #         email_bidx -> BlindIndexSql, private_keys -> Nullable<KeyColumnSql>,
//! #     }
//! # }
//! # #[derive(Debug, Clone, PartialEq, Encrypted)]
//! # #[diesel(table_name = patients)]
//! # #[cmk(tenant = tenant_id, id = id, ids = "app")]
//! # pub struct Patient {
//! #     pub id: i64,
//! #     pub tenant_id: String,
//! #     #[cmk(class = "private", blind_index(normalize = "casefold"))]
//! #     pub email: String,
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let embedded = cmk::embedded::Embedded::open(dir.path())?;
//! # let (cmk, acme) = (embedded.cmk(), TenantId::new("acme")?);
//! # let key = embedded.tenant_key(&acme)?;
//! # let config = TenantConfig::new(acme.clone(), key.clone())
//! #     .with_class("private", Policy::new(key).with_search(SearchMode::BlindIndex))?;
//! # cmk.ensure_tenant(&RequestContext::new(acme.clone()), &config).await?;
//! # let ctx = RequestContext::new(acme);
//! # let pool = std::sync::Arc::new(std::sync::Mutex::new(SqliteConnection::establish(":memory:")?));
//! # pool.lock().unwrap().batch_execute("CREATE TABLE patients (id BIGINT PRIMARY KEY,
//! #     tenant_id TEXT NOT NULL, email BLOB NOT NULL, email_bidx BLOB NOT NULL, private_keys BLOB)")?;
//! # let people = vec![Patient { id: 1, tenant_id: "acme".into(), email: "Ann@Example.com".into() }];
//! let keys = cmk.keys_for(&ctx, Patient::CLASSES).await?;          // async, KMS if cold
//! tokio::task::spawn_blocking(move || -> Result<(), cmk::diesel::Error> {
//!     let mut conn = pool.lock().unwrap();                          // a pool's connection
//!     ops::insert_many(&mut *conn, &keys, &people)?;
//!     let mut ann: Patient = ops::first(&mut *conn, &keys,
//!         patients::table.filter(Patient::by_email(&keys, b"ann@example.com")?))?;
//!     ann.email = "ann@example.org".into();
//!     ops::update(&mut *conn, &keys, patients::table.find(ann.id), &ann)?;
//!     Ok(())
//! }).await??;
//! # Ok(())
//! # }
//! ```

use cmk_core::TenantKeys;
use cmk_core::event::{EventName, sealing_as};
use cmk_core::model::Encrypted;
use diesel::associations::HasTable;
use diesel::connection::Connection;
use diesel::dsl::AsSelect;
use diesel::query_builder::{
    AsChangeset, AsQuery, DeleteStatement, InsertStatement, IntoUpdateTarget, UpdateStatement,
};
use diesel::query_dsl::methods::{ExecuteDsl, FilterDsl, LimitDsl, LoadQuery, SelectDsl};
use diesel::{Insertable, RunQueryDsl, Selectable, SelectableHelper};

use crate::error::{Error, Result};
use crate::unchanged::KeyColumnsUnchanged;

/// `query` selecting the sealed row's columns by name (`Selectable`), so the order of the
/// columns in `table!` does not matter.
type Selected<Q, M, C> =
    <Q as SelectDsl<AsSelect<<M as Encrypted>::Sealed, <C as Connection>::Backend>>>::Output;

/// The table a sealed row type belongs to (the derive implements `HasTable` for it).
type TableOf<M> = <<M as Encrypted>::Sealed as HasTable>::Table;

/// Seals `model` with a fresh DEK per class and inserts it into its table.
///
/// # Errors
/// [`crate::Error::Cmk`] when the model does not seal: for example
/// [`cmk_core::Error::ClassNotRequested`] (`keys` was not fetched for one of its classes),
/// [`cmk_core::Error::ValueTooLarge`] or [`cmk_core::Error::AuditFailClosed`].
/// [`crate::Error::Diesel`] when the insert fails, for example on a unique violation.
pub fn insert<M, C>(conn: &mut C, keys: &TenantKeys, model: &M) -> Result<usize>
where
    M: Encrypted,
    C: Connection,
    M::Sealed: HasTable + Insertable<TableOf<M>>,
    InsertStatement<TableOf<M>, <M::Sealed as Insertable<TableOf<M>>>::Values>: ExecuteDsl<C>,
{
    let sealed = model.seal(keys)?;
    Ok(diesel::insert_into(M::Sealed::table())
        .values(sealed)
        .execute(conn)?)
}

/// Seals every model (a fresh DEK per row and class; the KEKs were fetched once, by
/// `keys_for`) and inserts them in one statement. If any row fails to seal, nothing is
/// written and the error names its position.
///
/// # Errors
/// [`crate::Error::Row`] naming the position of the first model that does not seal, with its
/// cmk error (as for [`insert`]); nothing is written. [`crate::Error::Diesel`] when the insert
/// fails.
pub fn insert_many<M, C>(conn: &mut C, keys: &TenantKeys, models: &[M]) -> Result<usize>
where
    M: Encrypted,
    C: Connection,
    M::Sealed: HasTable,
    Vec<M::Sealed>: Insertable<TableOf<M>>,
    InsertStatement<TableOf<M>, <Vec<M::Sealed> as Insertable<TableOf<M>>>::Values>: ExecuteDsl<C>,
{
    let sealed = M::seal_many(models, keys)
        .into_iter()
        .enumerate()
        .map(|(position, r)| {
            r.map_err(|source| Error::Row {
                operation: "insert_many",
                position,
                source,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(diesel::insert_into(M::Sealed::table())
        .values(sealed)
        .execute(conn)?)
}

/// Runs `query` for sealed rows and unseals each: one result per row, in order, so one bad
/// row (tampered, another tenant's) is reported in place and the rest are returned.
///
/// # Errors
/// [`crate::Error::Diesel`] when the query fails. A row that does not unseal is not an error of
/// the call: its `Err` stands in its place in the result.
pub fn load<'q, M, Q, C>(
    conn: &mut C,
    keys: &TenantKeys,
    query: Q,
) -> Result<Vec<cmk_core::Result<M>>>
where
    M: Encrypted,
    C: Connection,
    M::Sealed: Selectable<C::Backend>,
    AsSelect<M::Sealed, C::Backend>: diesel::Expression,
    Q: SelectDsl<AsSelect<M::Sealed, C::Backend>>,
    Selected<Q, M, C>: LoadQuery<'q, C, M::Sealed>,
{
    let rows: Vec<M::Sealed> = query.select(M::Sealed::as_select()).load(conn)?;
    Ok(M::unseal_many_owned(rows, keys))
}

/// Like [`load`], but fails on the first row that does not unseal.
///
/// # Errors
/// [`crate::Error::Diesel`] when the query fails. [`crate::Error::Row`] naming the position of
/// the first row that does not unseal, with its cmk error: for example
/// [`cmk_core::Error::Tampered`] (the row fails authentication),
/// [`cmk_core::Error::TenantMismatch`] (another tenant's row) or
/// [`cmk_core::Error::AccessDenied`] (a class the actor may not read).
pub fn load_all<'q, M, Q, C>(conn: &mut C, keys: &TenantKeys, query: Q) -> Result<Vec<M>>
where
    M: Encrypted,
    C: Connection,
    M::Sealed: Selectable<C::Backend>,
    AsSelect<M::Sealed, C::Backend>: diesel::Expression,
    Q: SelectDsl<AsSelect<M::Sealed, C::Backend>>,
    Selected<Q, M, C>: LoadQuery<'q, C, M::Sealed>,
{
    load(conn, keys, query)?
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

/// The first row of `query`, unsealed; Diesel's `NotFound` when there is none.
///
/// # Errors
/// [`crate::Error::Diesel`] when the query fails, with `NotFound` when it selects no row.
/// [`crate::Error::Cmk`] when the row does not unseal: for example
/// [`cmk_core::Error::Tampered`] (the row fails authentication),
/// [`cmk_core::Error::TenantMismatch`] (another tenant's row) or
/// [`cmk_core::Error::AccessDenied`] (a class the actor may not read).
pub fn first<'q, M, Q, C>(conn: &mut C, keys: &TenantKeys, query: Q) -> Result<M>
where
    M: Encrypted,
    C: Connection,
    M::Sealed: Selectable<C::Backend>,
    AsSelect<M::Sealed, C::Backend>: diesel::Expression,
    Q: SelectDsl<AsSelect<M::Sealed, C::Backend>>,
    Selected<Q, M, C>: RunQueryDsl<C> + LimitDsl,
    <Selected<Q, M, C> as LimitDsl>::Output: LoadQuery<'q, C, M::Sealed>,
{
    let row: M::Sealed = query.select(M::Sealed::as_select()).first(conn)?;
    Ok(M::unseal_owned(row, keys)?)
}

/// Like [`load`], each row as its partial view: fields of classes the handle's actor may
/// not read come back [`cmk_core::model::Partial::Withheld`] instead of failing the row.
///
/// # Errors
/// [`crate::Error::Diesel`] when the query fails. A row that does not unseal (tampered, another
/// tenant's) is not an error of the call: its `Err` stands in its place in the result.
pub fn load_partial<'q, M, Q, C>(
    conn: &mut C,
    keys: &TenantKeys,
    query: Q,
) -> Result<Vec<cmk_core::Result<M::View>>>
where
    M: Encrypted,
    C: Connection,
    M::Sealed: Selectable<C::Backend>,
    AsSelect<M::Sealed, C::Backend>: diesel::Expression,
    Q: SelectDsl<AsSelect<M::Sealed, C::Backend>>,
    Selected<Q, M, C>: LoadQuery<'q, C, M::Sealed>,
{
    let rows: Vec<M::Sealed> = query.select(M::Sealed::as_select()).load(conn)?;
    Ok(rows.iter().map(|r| M::unseal_partial(r, keys)).collect())
}

/// The first row of `query` as its partial view (see [`load_partial`]); Diesel's `NotFound`
/// when there is none.
///
/// # Errors
/// [`crate::Error::Diesel`] when the query fails, with `NotFound` when it selects no row.
/// [`crate::Error::Cmk`] when the row does not unseal: for example
/// [`cmk_core::Error::Tampered`] (the row fails authentication) or
/// [`cmk_core::Error::TenantMismatch`] (another tenant's row). Classes the actor may not read
/// are withheld, not an error.
pub fn first_partial<'q, M, Q, C>(conn: &mut C, keys: &TenantKeys, query: Q) -> Result<M::View>
where
    M: Encrypted,
    C: Connection,
    M::Sealed: Selectable<C::Backend>,
    AsSelect<M::Sealed, C::Backend>: diesel::Expression,
    Q: SelectDsl<AsSelect<M::Sealed, C::Backend>>,
    Selected<Q, M, C>: RunQueryDsl<C> + LimitDsl,
    <Selected<Q, M, C> as LimitDsl>::Output: LoadQuery<'q, C, M::Sealed>,
{
    let row: M::Sealed = query.select(M::Sealed::as_select()).first(conn)?;
    Ok(M::unseal_partial(&row, keys)?)
}

/// Re-seals `model` with fresh DEKs for every class and writes every classified field, index
/// column and key column in one `UPDATE` of `target` (for example `table.find(id)`); the
/// primary key is not written. Concurrent updates of one row are last-writer-wins, as in
/// plain SQL; [`update_if_unchanged`] is the compare-and-set form.
///
/// # Errors
/// [`crate::Error::Cmk`] when the model does not seal (as for [`insert`]).
/// [`crate::Error::Diesel`] when the `UPDATE` fails. A `target` that selects no row is not an
/// error: the count is 0.
pub fn update<M, T, C>(conn: &mut C, keys: &TenantKeys, target: T, model: &M) -> Result<usize>
where
    M: Encrypted,
    C: Connection,
    T: IntoUpdateTarget,
    M::Sealed: AsChangeset<Target = T::Table>,
    UpdateStatement<T::Table, T::WhereClause, <M::Sealed as AsChangeset>::Changeset>:
        AsQuery + ExecuteDsl<C>,
{
    let sealed = sealing_as(EventName::DataUpdate, || model.seal(keys))?;
    Ok(diesel::update(target).set(sealed).execute(conn)?)
}

/// Compare-and-set: like [`update`], but writes only if the row's key columns still hold
/// what `read` holds (nobody wrote the row since it was read), else fails with
/// [`cmk_core::Error::Conflict`] and writes nothing (also when the row is gone). `target` must select the one row `read`
/// came from (for example `table.find(id)`).
///
/// # Errors
/// [`crate::Error::Cmk`] with [`cmk_core::Error::Conflict`] when the row's key columns no longer
/// hold what `read` holds, or the row is gone; [`crate::Error::Cmk`] when the model does not
/// seal (as for [`insert`]). [`crate::Error::Diesel`] when the `UPDATE` fails.
pub fn update_if_unchanged<M, T, C>(
    conn: &mut C,
    keys: &TenantKeys,
    target: T,
    read: &M::Sealed,
    model: &M,
) -> Result<()>
where
    M: Encrypted,
    C: Connection,
    T: FilterDsl<KeyColumnsUnchanged>,
    T::Output: IntoUpdateTarget,
    M::Sealed: AsChangeset<Target = <T::Output as HasTable>::Table>,
    UpdateStatement<
        <T::Output as HasTable>::Table,
        <T::Output as IntoUpdateTarget>::WhereClause,
        <M::Sealed as AsChangeset>::Changeset,
    >: AsQuery + ExecuteDsl<C>,
{
    let sealed = sealing_as(EventName::DataUpdate, || model.seal(keys))?;
    let read_keys = KeyColumnsUnchanged::new(M::key_columns(read));
    if write_guarded::<M, T, C>(conn, target, read_keys, sealed)? {
        Ok(())
    } else {
        Err(cmk_core::Error::Conflict.into())
    }
}

/// How many times [`update_with`] reads again after another writer came first.
pub const UPDATE_ATTEMPTS: usize = 5;

/// A read-modify-write of one row: reads the row of `target` (for example `table.find(id)`),
/// unseals it, applies `change`, re-seals the classes whose values changed with fresh DEKs
/// (the others keep their ciphertexts and DEK where the row's layout allows:
/// [`cmk_core::model::classes_to_keep`]) and writes the row, in one transaction, only if nobody wrote it in between (compare-and-set
/// on its key columns, which a write of any class changes). After a conflict it reads again, up to
/// [`UPDATE_ATTEMPTS`] times, then fails with [`cmk_core::Error::Conflict`]; `change` runs
/// once per attempt. The primary key is not written. Returns the model as written;
/// Diesel's `NotFound` when `target` selects no row.
///
/// On SQLite the transaction holds the database's write lock from its start
/// ([`crate::StoreConnection::write_transaction`]), so the read is already under it. On
/// PostgreSQL and MySQL the guarded `UPDATE` locks the row and checks it in one statement:
/// either way a concurrent update is never lost.
///
/// # Errors
/// [`crate::Error::Diesel`] when a query or the transaction fails, with `NotFound` when
/// `target` selects no row. [`crate::Error::Cmk`] with [`cmk_core::Error::Conflict`] when
/// another writer came first on every attempt, with [`cmk_core::Error::InvalidInput`] when
/// `change` altered the row's bound id, and with what fails unsealing the row read (as for
/// [`first`]) or sealing the model (as for [`insert`]).
pub fn update_with<'q, M, T, C>(
    conn: &mut C,
    keys: &TenantKeys,
    target: T,
    mut change: impl FnMut(&mut M),
) -> Result<M>
where
    M: Encrypted + Clone,
    C: crate::StoreConnection,
    T: Clone + FilterDsl<KeyColumnsUnchanged>,
    M::Sealed: Selectable<C::Backend>,
    AsSelect<M::Sealed, C::Backend>: diesel::Expression,
    T: SelectDsl<AsSelect<M::Sealed, C::Backend>>,
    Selected<T, M, C>: RunQueryDsl<C> + LimitDsl,
    <Selected<T, M, C> as LimitDsl>::Output: LoadQuery<'q, C, M::Sealed>,
    <T as FilterDsl<KeyColumnsUnchanged>>::Output: IntoUpdateTarget,
    M::Sealed:
        AsChangeset<Target = <<T as FilterDsl<KeyColumnsUnchanged>>::Output as HasTable>::Table>,
    UpdateStatement<
        <<T as FilterDsl<KeyColumnsUnchanged>>::Output as HasTable>::Table,
        <<T as FilterDsl<KeyColumnsUnchanged>>::Output as IntoUpdateTarget>::WhereClause,
        <M::Sealed as AsChangeset>::Changeset,
    >: AsQuery + ExecuteDsl<C>,
{
    for _ in 0..UPDATE_ATTEMPTS {
        let written = conn.write_transaction(|conn| -> Result<Option<M>> {
            let read: M::Sealed = target.clone().select(M::Sealed::as_select()).first(conn)?;
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
            let guard = KeyColumnsUnchanged::new(M::key_columns(&read));
            Ok(write_guarded::<M, T, C>(conn, target.clone(), guard, sealed)?.then_some(model))
        })?;
        if let Some(model) = written {
            return Ok(model);
        }
    }
    Err(cmk_core::Error::Conflict.into())
}

/// Writes `sealed` to `target` only while the row's key columns match `guard`; `false` when
/// they did not (another writer came first, or the row is gone).
pub(crate) fn write_guarded<M, T, C>(
    conn: &mut C,
    target: T,
    guard: KeyColumnsUnchanged,
    sealed: M::Sealed,
) -> Result<bool>
where
    M: Encrypted,
    C: Connection,
    T: FilterDsl<KeyColumnsUnchanged>,
    T::Output: IntoUpdateTarget,
    M::Sealed: AsChangeset<Target = <T::Output as HasTable>::Table>,
    UpdateStatement<
        <T::Output as HasTable>::Table,
        <T::Output as IntoUpdateTarget>::WhereClause,
        <M::Sealed as AsChangeset>::Changeset,
    >: AsQuery + ExecuteDsl<C>,
{
    Ok(diesel::update(target.filter(guard))
        .set(sealed)
        .execute(conn)?
        > 0)
}

/// Deletes the rows of `target` and records a `DATA_DELETE` event, in one transaction: when
/// the event cannot be recorded and a class of the table is fail-closed, the delete is
/// rolled back and the error returned. cmk cannot see inside `target`: constrain it to the
/// key handle's tenant (`table.filter(tenant_id.eq(keys.tenant().as_str()))`).
///
/// # Errors
/// [`crate::Error::Diesel`] when the `DELETE` or the transaction fails. [`crate::Error::Cmk`]
/// with [`cmk_core::Error::AuditFailClosed`] when the event cannot be recorded and a class of
/// the table is fail-closed; the delete is then rolled back.
pub fn delete<M, T, C>(conn: &mut C, keys: &TenantKeys, target: T) -> Result<usize>
where
    M: Encrypted,
    C: Connection,
    T: IntoUpdateTarget,
    DeleteStatement<T::Table, T::WhereClause>: ExecuteDsl<C>,
{
    let schema = M::schema()?;
    conn.transaction(|conn| match diesel::delete(target).execute(conn) {
        Ok(deleted) => {
            keys.audit_delete(schema, &Ok(deleted))?;
            Ok(deleted)
        }
        Err(e) => {
            let failed = cmk_core::Error::Database(std::sync::Arc::new(std::io::Error::other(
                e.to_string(),
            )));
            // The delete failed already; its event is best effort.
            let _ = keys.audit_delete(schema, &Err(failed));
            Err(e.into())
        }
    })
}
