//! Jobs over a table through SeaORM, resumable and idempotent, with the logic the Diesel
//! adapter shares (`cmk_core::jobs`): KEK retirement ([`rekey_table`]) and the backfill of
//! existing plaintext ([`encrypt_plaintext`]).
//!
//! Each row is written by one guarded `UPDATE` (by primary key, while the row's key columns
//! still hold what the job read), so a job that stops anywhere — a crash, a deploy, a
//! `ControlFlow::Break` from the progress callback — leaves every row readable, and a
//! concurrent application write is never overwritten. Resume by passing the last
//! [`Progress::after`] as [`Chunks::resume_after`].
//!
//! The caller supplies what the job cannot know: the query for the next chunk (rows after a
//! given id, in id order, at most `limit`, constrained to the tenant) and the id of a row.

use std::ops::ControlFlow;
use std::sync::Arc;

use cmk_core::TenantKeys;
use cmk_core::jobs::{self, GuardedWrite};
use cmk_core::model::Encrypted;
use sea_orm::{ConnectionTrait, EntityTrait, ModelTrait, Select, Selector, SelectorTrait};

pub use cmk_core::jobs::{Chunks, Progress};

use crate::error::Result;
use crate::ops::write_guarded;

/// Re-wraps the DEKs of every row whose key columns are not under their class's active KEK,
/// leaving field ciphertexts untouched: the middle step of KEK retirement
/// (`Cmk::roll_over_kek`, after one renewal interval `Cmk::retire_kek`, this job, then
/// `Cmk::destroy_kek`). `keys` must be fetched after the roll-over.
///
/// # Errors
/// [`crate::Error::Db`] when loading a chunk or writing a row fails; the job stops there:
/// resume it from the last checkpoint `progress` saw. A row that fails to re-wrap (tampered,
/// another tenant's) is not an error of the job: it goes to [`Progress::failed`] and the job
/// goes on.
pub async fn rekey_table<M, E, C, Id>(
    db: &C,
    keys: &Arc<TenantKeys>,
    chunks: Chunks<Id>,
    mut load: impl FnMut(Option<&Id>, u64) -> Select<E>,
    id_of: impl Fn(&E::Model) -> Id,
    mut progress: impl FnMut(&Progress<Id>) -> ControlFlow<()>,
) -> Result<Progress<Id>>
where
    M: Encrypted,
    M::Sealed: ModelTrait<Entity = E>,
    E: EntityTrait<Model = M::Sealed>,
    E::ActiveModel: From<E::Model>,
    C: ConnectionTrait,
{
    let size = u64::try_from(chunks.size.max(1)).unwrap_or(1);
    let mut p = Progress::start(chunks.resume_after);
    loop {
        let rows = load(p.after.as_ref(), size).all(db).await?;
        let Some(last) = rows.last().map(&id_of) else {
            return Ok(p);
        };
        for row in rows {
            p.scanned += 1;
            let id = id_of(&row);
            match jobs::rekey_row::<M>(row, keys) {
                Ok(None) => {}
                Ok(Some(w)) => p.tally(write::<E, C>(db, w).await?),
                Err(e) => p.failed.push((id, e)),
            }
        }
        p.after = Some(last);
        p.chunks += 1;
        if progress(&p).is_break() {
            return Ok(p);
        }
    }
}

/// Seals rows that still hold plaintext: the backfill between the expand and contract
/// steps of a migration (DESIGN.md §3). `load` reads the next chunk of legacy rows (key
/// columns NULL) from the plaintext columns, for example
/// `Entity::find().filter(Column::PrivateKeys.is_null())...into_model::<Legacy>()`;
/// `to_model` turns one into its id and the model. Each row is sealed with fresh DEKs and
/// written only while its key columns are still NULL. The plaintext columns are not
/// cleared: dropping them is the contract step (docs/SECURITY.md says where plaintext
/// survives). cmk never reads plaintext columns, deliberately (see `cmk_diesel::jobs`).
///
/// # Errors
/// [`crate::Error::Db`] when loading a chunk or writing a row fails; the job stops there:
/// resume it from the last checkpoint `progress` saw. A row that fails to seal is not an error
/// of the job: it goes to [`Progress::failed`] and the job goes on.
pub async fn encrypt_plaintext<M, E, S, C, Id>(
    db: &C,
    keys: &TenantKeys,
    chunks: Chunks<Id>,
    mut load: impl FnMut(Option<&Id>, u64) -> Selector<S>,
    to_model: impl Fn(S::Item) -> (Id, M),
    mut progress: impl FnMut(&Progress<Id>) -> ControlFlow<()>,
) -> Result<Progress<Id>>
where
    M: Encrypted,
    M::Sealed: ModelTrait<Entity = E>,
    E: EntityTrait<Model = M::Sealed>,
    E::ActiveModel: From<E::Model>,
    S: SelectorTrait,
    C: ConnectionTrait,
    Id: Clone,
{
    let size = u64::try_from(chunks.size.max(1)).unwrap_or(1);
    let mut p = Progress::start(chunks.resume_after);
    loop {
        let rows = load(p.after.as_ref(), size).all(db).await?;
        if rows.is_empty() {
            return Ok(p);
        }
        for legacy in rows {
            p.scanned += 1;
            let (id, model) = to_model(legacy);
            p.after = Some(id.clone());
            match jobs::seal_legacy(&model, keys) {
                Ok(w) => p.tally(write::<E, C>(db, w).await?),
                Err(e) => p.failed.push((id, e)),
            }
        }
        p.chunks += 1;
        if progress(&p).is_break() {
            return Ok(p);
        }
    }
}

async fn write<E, C>(db: &C, w: GuardedWrite<E::Model>) -> Result<bool>
where
    E: EntityTrait,
    E::ActiveModel: From<E::Model>,
    C: ConnectionTrait,
{
    write_guarded::<E, C>(db, w.guard, w.sealed).await
}
