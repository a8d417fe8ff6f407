//! `cmk rekey`: re-wraps every key column of a table that is not under its class's active
//! KEK (KEK retirement); field ciphertexts are untouched. Resumable: a checkpoint file in
//! HOME/jobs records the last row done, written after each chunk's transaction commits; Ctrl-C
//! stops between chunks. Each chunk's rows are re-wrapped on both cores (the next chunk is read
//! meanwhile) and written in compare-and-set UPDATEs, so an interruption never leaves half a
//! row.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use cmk_core::TenantKeys;
use sea_orm::{DatabaseConnection, TransactionTrait};
use serde_json::json;

use crate::cli::TableJob;
use crate::exit::{CliError, CliResult, Exit};
use crate::home::{Deployment, create_private_dir};
use crate::output::print;
use crate::progress::Progress;
use crate::scan::{Step, Stop, TablePass};
use crate::table::{IdValue, Rewrapped, Row, Table};

/// A row's key columns re-wrapped: (key class, new key column).
type NewColumns = Vec<(usize, Vec<u8>)>;

/// What a row came to.
enum Outcome {
    /// These key columns (by key class), re-wrapped, to write if the row is unchanged.
    Rewrap(NewColumns),
    Current,
    Failed(&'static str),
}

pub(crate) async fn run(d: &Deployment, json: bool, job: TableJob, stop: &Stop) -> CliResult {
    let manifest = job.table.manifest_path(&d.paths.dir);
    let table = Table::load(&manifest, d.db.get_database_backend())?;
    table.probe(&d.db).await?;
    let tenant = job.table.tenant.as_deref();
    let checkpoint = checkpoint_path(d, table.name(), tenant);
    let mut after = if job.from_start {
        None
    } else {
        read_checkpoint(&checkpoint)?
    };
    let resumed = after.clone();
    let total = table.count(&d.db, after.as_ref(), tenant).await?;
    let mut progress = Progress::new(format!("rekey {}", table.name()), total);
    let (mut rows, mut rewrapped, mut changed) = (0u64, 0u64, 0u64);
    let mut failures: Vec<(IdValue, &'static str)> = Vec::new();
    let mut interrupted = false;
    let table = Arc::new(table);
    let tenant_only = job.table.tenant.clone();
    let mut pass = TablePass::new(
        d,
        &table,
        tenant_only,
        job.table.chunk,
        after.clone(),
        "rekey",
    );
    // Chunk n is written (its own connection, its own transaction) while chunk n + 1 is
    // read and re-wrapped: the write and the re-wrapping share the two cores instead of
    // taking turns. A chunk's checkpoint is written once its transaction has committed.
    let mut writing: Option<tokio::task::JoinHandle<CliResult<Written>>> = None;
    loop {
        let step = pass.next(stop, rewrap_row).await;
        if let Some(handle) = writing.take() {
            let done = handle
                .await
                .map_err(|e| CliError::new(Exit::Failure, format!("a write task failed: {e}")))??;
            rewrapped += done.written;
            changed += done.pending - done.written;
            rows += done.rows;
            progress.advance(done.rows);
            if let Some(last) = &done.last {
                write_checkpoint(&checkpoint, table.name(), last)?;
            }
            after = done.last;
        }
        let (chunk, outcomes) = match step? {
            Step::Chunk(chunk, outcomes) => (chunk, outcomes),
            Step::Done => break,
            Step::Interrupted => {
                interrupted = true;
                break;
            }
        };
        let mut news: Vec<Option<NewColumns>> = Vec::with_capacity(chunk.len());
        for (row, outcome) in chunk.iter().zip(outcomes) {
            news.push(match outcome {
                Outcome::Rewrap(new) => Some(new),
                Outcome::Current => None,
                Outcome::Failed(kind) => {
                    failures.push((row.id.clone(), kind));
                    None
                }
            });
        }
        writing = Some(tokio::spawn(write_chunk(
            d.db.clone(),
            Arc::clone(&table),
            chunk,
            news,
        )));
    }
    progress.finish();
    if !interrupted {
        // Done: the next run starts from the first row again.
        let _ = std::fs::remove_file(&checkpoint);
    }
    let listed: Vec<_> = failures
        .iter()
        .map(|(id, kind)| json!({ "id": id.to_json(), "kind": kind }))
        .collect();
    print(
        json,
        &json!({ "table": table.name(), "resumed_after": resumed.as_ref().map(IdValue::to_json),
                 "rows": rows, "rewrapped": rewrapped, "changed_meanwhile": changed,
                 "failed": failures.len(), "failures": listed, "interrupted": interrupted }),
        || {
            let mut out = format!(
                "{}: {rows} rows read{}, {rewrapped} re-wrapped, {changed} changed meanwhile, {} failed",
                table.name(),
                resumed.as_ref().map_or(String::new(), |id| format!(
                    " (resumed after row {})",
                    id.label()
                )),
                failures.len()
            );
            for (id, kind) in &failures {
                out.push_str(&format!("\n  row {}: {kind}", id.label()));
            }
            out
        },
    );
    if interrupted {
        return Err(CliError::new(
            Exit::Interrupted,
            format!(
                "interrupted after row {}: run the same command again to resume",
                after.as_ref().map_or("(none)".into(), IdValue::label)
            ),
        ));
    }
    if !failures.is_empty() {
        return Err(CliError::new(
            Exit::Failure,
            format!("{} rows could not be re-wrapped", failures.len()),
        ));
    }
    Ok(())
}

/// What one chunk's write came to.
struct Written {
    rows: u64,
    pending: u64,
    written: u64,
    last: Option<IdValue>,
}

/// Writes a chunk's re-wrapped key columns in one transaction: one commit (one fsync) per
/// chunk, not per row, so a crash redoes at most the chunks whose checkpoint was not written.
async fn write_chunk(
    db: DatabaseConnection,
    table: Arc<Table>,
    chunk: Arc<Vec<Row>>,
    news: Vec<Option<NewColumns>>,
) -> CliResult<Written> {
    let pending: Vec<Rewrapped<'_>> = chunk
        .iter()
        .zip(news)
        .filter_map(|(row, new)| new.map(|new| (row, new)))
        .collect();
    let txn = db.begin().await?;
    let written = table.write_key_columns(&txn, &pending).await?;
    txn.commit().await?;
    Ok(Written {
        rows: chunk.len() as u64,
        pending: pending.len() as u64,
        written,
        last: chunk.last().map(|r| r.id.clone()),
    })
}

/// The key columns of `row` that are not under the active KEK, re-wrapped.
fn rewrap_row(table: &Table, row: &Row, keys: Result<&Arc<TenantKeys>, &'static str>) -> Outcome {
    let keys = match keys {
        Ok(keys) => keys,
        Err(kind) => return Outcome::Failed(kind),
    };
    let view = table.view(row);
    let stored = view.stored();
    let new: Vec<(usize, Vec<u8>)> = match keys.rekey_key_columns(&table.schema, &stored) {
        Ok(columns) => columns
            .into_iter()
            .enumerate()
            .filter_map(|(k, c)| c.map(|bytes| (k, bytes)))
            .collect(),
        Err(e) => return Outcome::Failed(e.kind()),
    };
    if new.is_empty() {
        Outcome::Current
    } else {
        Outcome::Rewrap(new)
    }
}

fn checkpoint_path(d: &Deployment, table: &str, tenant: Option<&str>) -> PathBuf {
    let scope = tenant.map_or(String::new(), |t| format!("-{t}"));
    d.paths.jobs().join(format!("rekey-{table}{scope}.json"))
}

fn read_checkpoint(path: &Path) -> CliResult<Option<IdValue>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CliError::file(path, e)),
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| CliError::file(path, e))?;
    IdValue::from_json(&value["after"])
        .map(Some)
        .ok_or_else(|| {
            CliError::file(
                path,
                "no `after` row id (delete it, or run with --from-start)",
            )
        })
}

/// Writes the checkpoint atomically (a crash leaves the old one or the new one).
fn write_checkpoint(path: &Path, table: &str, after: &IdValue) -> CliResult {
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let body = json!({ "table": table, "after": after.to_json() }).to_string();
    let fail = |e: std::io::Error| {
        CliError::new(Exit::Failure, format!("checkpoint {}: {e}", path.display()))
    };
    std::fs::write(&tmp, body).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}
