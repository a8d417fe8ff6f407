//! The ORM-independent part of the jobs over a table (KEK retirement and the plaintext
//! backfill): how a job walks the table, what it reports, and what it writes for one row.
//! Each ORM adapter supplies the reads and the guarded writes (`cmk_diesel::jobs`,
//! `cmk_seaorm::jobs`).
//!
//! Every row is written by one guarded `UPDATE`: it succeeds only while the row's key
//! columns still hold what the job read (for the backfill: are still NULL). So a job that
//! stops anywhere leaves every row readable, and a concurrent application write is never
//! overwritten with what the job read before it.

use std::sync::Arc;

use crate::error::Result;
use crate::rows::handle::TenantKeys;
use crate::rows::model::Encrypted;

/// How a job walks the table.
#[derive(Debug, Clone, PartialEq, Eq)]
// Exhaustive by design: the adapters build it with the chunk size and the ids they read.
#[allow(clippy::exhaustive_structs)]
pub struct Chunks<Id> {
    /// Rows per chunk.
    pub size: i64,
    /// Start after this id (the checkpoint of an earlier run), or at the beginning.
    pub resume_after: Option<Id>,
}

/// Where a job stands, reported after every chunk and returned at the end.
#[derive(Debug)]
#[non_exhaustive]
pub struct Progress<Id> {
    /// Chunks completed in this run.
    pub chunks: usize,
    /// Rows read in this run.
    pub scanned: usize,
    /// Rows this run rewrote.
    pub rewritten: usize,
    /// Rows another writer changed between the job's read and its write (that writer
    /// already sealed them under current keys); left as they are.
    pub changed_meanwhile: usize,
    /// Rows that could not be processed (tampered, another tenant's...), by id; the job goes
    /// on without them.
    pub failed: Vec<(Id, crate::Error)>,
    /// The checkpoint: the last id of the last completed chunk.
    pub after: Option<Id>,
}

impl<Id> Progress<Id> {
    /// A run starting after `after`.
    pub fn start(after: Option<Id>) -> Self {
        Progress {
            chunks: 0,
            scanned: 0,
            rewritten: 0,
            changed_meanwhile: 0,
            failed: Vec::new(),
            after,
        }
    }

    /// Counts a guarded write: `written` is false when another writer came first.
    pub fn tally(&mut self, written: bool) {
        if written {
            self.rewritten += 1;
        } else {
            self.changed_meanwhile += 1;
        }
    }
}

/// Key columns as read, `(column, value)`: the guard of a job's write.
pub type KeyGuard = Vec<(&'static str, Option<Vec<u8>>)>;

/// What a job writes for one row: `sealed`, only while the row's key columns equal `guard`.
#[derive(Debug)]
#[non_exhaustive]
pub struct GuardedWrite<S> {
    /// The key columns the row must still hold.
    pub guard: KeyGuard,
    /// The row to write.
    pub sealed: S,
}

/// KEK retirement for one row: re-wraps the key columns not under their class's active KEK.
/// `None` when the row is already current (nothing to write).
///
/// # Errors
/// As [`Encrypted::rekey`].
pub fn rekey_row<M: Encrypted>(
    mut row: M::Sealed,
    keys: &Arc<TenantKeys>,
) -> Result<Option<GuardedWrite<M::Sealed>>> {
    let guard = owned(M::key_columns(&row));
    Ok(match M::rekey(&mut row, keys)? {
        0 => None,
        _ => Some(GuardedWrite { guard, sealed: row }),
    })
}

/// The backfill for one legacy row: seals `model` with fresh DEKs (its event is
/// `DATA_MIGRATE`), to be written only while the row's key columns are still NULL.
///
/// # Errors
/// As [`Encrypted::seal`].
pub fn seal_legacy<M: Encrypted>(model: &M, keys: &TenantKeys) -> Result<GuardedWrite<M::Sealed>> {
    let sealed =
        crate::audit::event::sealing_as(crate::audit::event::EventName::DataMigrate, || {
            model.seal(keys)
        })?;
    let guard = M::KEY_COLUMNS.iter().map(|c| (*c, None)).collect();
    Ok(GuardedWrite { guard, sealed })
}

/// A borrowed key-column list as a [`KeyGuard`].
pub fn owned(columns: Vec<(&'static str, Option<&[u8]>)>) -> KeyGuard {
    columns
        .into_iter()
        .map(|(c, v)| (c, v.map(<[u8]>::to_vec)))
        .collect()
}
