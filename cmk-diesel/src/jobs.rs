//! Jobs over a table, in chunks by primary key, resumable and idempotent: KEK retirement
//! ([`rekey_table`]) and the backfill of existing plaintext ([`encrypt_plaintext`]).
//!
//! Each row is written by one guarded `UPDATE` (the row's key columns must still be what
//! the job read), so a job that stops anywhere — a crash, a deploy, a `ControlFlow::Break`
//! from the progress callback — leaves every row readable, and a concurrent application
//! write is never overwritten with what the job read before it. Resume by passing the
//! last [`Progress::after`] as [`Chunks::resume_after`]: completed chunks are not read
//! again. Several workers can split a table by giving each its own id range in `load`.
//!
//! The caller supplies the Diesel parts the job cannot know: the query for the next chunk
//! (rows after a given id, in id order, at most `limit`; constrained to the tenant), the id
//! of a row, and the update target of an id (`table.find(id)`).

use std::ops::ControlFlow;
use std::sync::Arc;

use cmk_core::TenantKeys;
use cmk_core::jobs::{self, GuardedWrite};
use cmk_core::model::Encrypted;
use diesel::RunQueryDsl;
use diesel::associations::HasTable;
use diesel::connection::Connection;
use diesel::query_builder::{AsChangeset, AsQuery, IntoUpdateTarget, UpdateStatement};
use diesel::query_dsl::methods::{ExecuteDsl, FilterDsl, LoadQuery};

use crate::error::Result;
use crate::ops::write_guarded;
use crate::unchanged::KeyColumnsUnchanged;

pub use cmk_core::jobs::{Chunks, Progress};

/// Re-wraps the DEKs of every row whose key columns are not under their class's active KEK,
/// leaving field ciphertexts untouched: the middle step of KEK retirement
/// (`Cmk::roll_over_kek`, then after one renewal interval `Cmk::retire_kek`, this job, then
/// `Cmk::destroy_kek`). `keys` must be fetched after the roll-over. To visit only rows under
/// one KEK version, filter `load` on the key column's queryable prefix (docs/FORMAT.md).
///
/// # Errors
/// [`crate::Error::Diesel`] when loading a chunk or writing a row fails; the job stops
/// there: resume it from the last checkpoint `progress` saw. A row that fails to re-wrap
/// (tampered, another tenant's) is not an error of the job: it goes to
/// [`Progress::failed`] and the job goes on.
#[allow(clippy::too_many_arguments)]
pub fn rekey_table<'q, M, C, Id, Q, T>(
    conn: &mut C,
    keys: &Arc<TenantKeys>,
    chunks: Chunks<Id>,
    mut load: impl FnMut(Option<&Id>, i64) -> Q,
    id_of: impl Fn(&M::Sealed) -> Id,
    target: impl Fn(&Id) -> T,
    mut progress: impl FnMut(&Progress<Id>) -> ControlFlow<()>,
) -> Result<Progress<Id>>
where
    M: Encrypted,
    C: Connection,
    Q: RunQueryDsl<C> + LoadQuery<'q, C, M::Sealed>,
    T: FilterDsl<KeyColumnsUnchanged>,
    T::Output: IntoUpdateTarget,
    M::Sealed: AsChangeset<Target = <T::Output as HasTable>::Table>,
    UpdateStatement<
        <T::Output as HasTable>::Table,
        <T::Output as IntoUpdateTarget>::WhereClause,
        <M::Sealed as AsChangeset>::Changeset,
    >: AsQuery + ExecuteDsl<C>,
{
    let mut p = Progress::start(chunks.resume_after);
    let write = |conn: &mut C, target: T, w: GuardedWrite<M::Sealed>| {
        write_guarded::<M, T, C>(
            conn,
            target,
            KeyColumnsUnchanged::from_guard(w.guard),
            w.sealed,
        )
    };
    loop {
        let rows: Vec<M::Sealed> = load(p.after.as_ref(), chunks.size).load(conn)?;
        let Some(last) = rows.last().map(&id_of) else {
            return Ok(p);
        };
        for row in rows {
            p.scanned += 1;
            let id = id_of(&row);
            match jobs::rekey_row::<M>(row, keys) {
                Ok(None) => {}
                Ok(Some(w)) => p.tally(write(conn, target(&id), w)?),
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
/// steps of a migration (DESIGN.md §3). The table has both the old plaintext columns and the
/// new ciphertext, index and key columns (nullable); `load` reads the next chunk of legacy
/// rows — those whose key columns are NULL — from the plaintext columns as `L`, which
/// `to_model` turns into the model. Each row is sealed with fresh DEKs and written only while
/// its key columns are still NULL. The job does not clear the plaintext columns: dropping
/// them is the contract step, and until then (and in dead tuples, WAL, free pages and
/// backups afterwards) the plaintext survives (docs/SECURITY.md).
///
/// Reads during the backfill: cmk is strict and never reads a plaintext column, so a
/// legacy row does not yield its plaintext through the derived model (a required field fails
/// to load; an optional one reads as NULL, which is what its NULL ciphertext says). The application reads legacy rows (`key columns IS NULL`) through its old
/// plaintext mapping and the rest through cmk until the job has finished. This is deliberate:
/// a "migration mode" that let cmk fall back to plaintext columns would let a database writer
/// who NULLs a row's key columns feed the application plaintext of their choosing.
///
/// # Errors
/// [`crate::Error::Diesel`] when loading a chunk or writing a row fails; the job stops
/// there: resume it from the last checkpoint `progress` saw. A row that fails to seal is
/// not an error of the job: it goes to [`Progress::failed`] and the job goes on.
#[allow(clippy::too_many_arguments)]
pub fn encrypt_plaintext<'q, M, L, C, Id, Q, T>(
    conn: &mut C,
    keys: &TenantKeys,
    chunks: Chunks<Id>,
    mut load: impl FnMut(Option<&Id>, i64) -> Q,
    to_model: impl Fn(L) -> (Id, M),
    target: impl Fn(&Id) -> T,
    mut progress: impl FnMut(&Progress<Id>) -> ControlFlow<()>,
) -> Result<Progress<Id>>
where
    M: Encrypted,
    C: Connection,
    Id: Clone,
    Q: RunQueryDsl<C> + LoadQuery<'q, C, L>,
    T: FilterDsl<KeyColumnsUnchanged>,
    T::Output: IntoUpdateTarget,
    M::Sealed: AsChangeset<Target = <T::Output as HasTable>::Table>,
    UpdateStatement<
        <T::Output as HasTable>::Table,
        <T::Output as IntoUpdateTarget>::WhereClause,
        <M::Sealed as AsChangeset>::Changeset,
    >: AsQuery + ExecuteDsl<C>,
{
    let mut p = Progress::start(chunks.resume_after);
    let write = |conn: &mut C, target: T, w: GuardedWrite<M::Sealed>| {
        write_guarded::<M, T, C>(
            conn,
            target,
            KeyColumnsUnchanged::from_guard(w.guard),
            w.sealed,
        )
    };
    loop {
        let rows: Vec<L> = load(p.after.as_ref(), chunks.size).load(conn)?;
        if rows.is_empty() {
            return Ok(p);
        }
        for legacy in rows {
            p.scanned += 1;
            let (id, model) = to_model(legacy);
            p.after = Some(id.clone());
            match jobs::seal_legacy(&model, keys) {
                Ok(w) => p.tally(write(conn, target(&id), w)?),
                Err(e) => p.failed.push((id, e)),
            }
        }
        p.chunks += 1;
        if progress(&p).is_break() {
            return Ok(p);
        }
    }
}
