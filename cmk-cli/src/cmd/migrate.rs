//! `cmk migrate`: the plaintext backfill. Rows whose key columns are all NULL still hold
//! plaintext in the columns `--from` names; each is sealed (its event is `DATA_MIGRATE`) and
//! written over its sealed columns only while its key columns are still NULL. Sealed rows are
//! never selected again, so a run after an interruption continues where the last one stopped;
//! one transaction per chunk. The plaintext columns are not cleared: dropping them is the
//! contract step of the application's migration (docs/SECURITY.md).

use cmk_core::event::{EventName, sealing_as};
use sea_orm::TransactionTrait;
use serde_json::json;

use crate::cli::Migrate;
use crate::exit::{CliError, CliResult, Exit};
use crate::home::Deployment;
use crate::output::print;
use crate::progress::Progress;
use crate::scan::{Stop, TenantKeysCache};
use crate::table::{IdValue, LegacyRow, Table};

pub(crate) async fn run(d: &Deployment, json: bool, args: Migrate, stop: &Stop) -> CliResult {
    let manifest = args.table.manifest_path(&d.paths.dir);
    let table = Table::load(&manifest, d.db.get_database_backend())?;
    let plain = table.plaintext_columns(&args.from)?;
    table.probe(&d.db).await?;
    let tenant = args.table.tenant.as_deref();
    let limit = args.table.chunk.max(1);
    let mut keys = TenantKeysCache::new(d, table.classes(), "migrate");
    let (mut rows, mut migrated, mut changed) = (0u64, 0u64, 0u64);
    let mut failures: Vec<(IdValue, &'static str)> = Vec::new();
    let mut after: Option<IdValue> = None;
    let mut interrupted = false;
    let total = table.legacy_count(&d.db, tenant).await?;
    let mut progress = Progress::new(format!("migrate {}", table.name()), total);
    loop {
        let chunk = table
            .legacy_chunk(&d.db, after.as_ref(), tenant, limit, &plain)
            .await?;
        if chunk.is_empty() {
            break;
        }
        if stop.requested() {
            interrupted = true;
            break;
        }
        keys.next_chunk();
        let mut sealed = Vec::with_capacity(chunk.len());
        for row in &chunk {
            sealed.push(seal(&table, &mut keys, row).await);
        }
        let txn = d.db.begin().await?;
        for (row, result) in chunk.iter().zip(sealed) {
            match result {
                Ok(s) if table.write_sealed(&txn, &row.id, &s).await? => migrated += 1,
                Ok(_) => changed += 1,
                Err(kind) => failures.push((row.id.clone(), kind)),
            }
        }
        txn.commit().await?;
        rows += chunk.len() as u64;
        after = chunk.last().map(|r| r.id.clone());
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    let listed: Vec<_> = failures
        .iter()
        .map(|(id, kind)| json!({ "id": id.to_json(), "kind": kind }))
        .collect();
    print(
        json,
        &json!({ "table": table.name(), "rows": rows, "migrated": migrated,
                 "changed_meanwhile": changed, "failed": failures.len(), "failures": listed,
                 "interrupted": interrupted }),
        || {
            let mut out = format!(
                "{}: {rows} plaintext rows read, {migrated} sealed, {changed} sealed meanwhile by another writer, {} failed",
                table.name(),
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
            "interrupted between chunks: run the same command again to continue",
        ));
    }
    if !failures.is_empty() {
        return Err(CliError::new(
            Exit::Failure,
            format!(
                "{} rows could not be sealed (they keep their plaintext)",
                failures.len()
            ),
        ));
    }
    Ok(())
}

/// Seals one legacy row, or the kind of error that refused it.
async fn seal(
    table: &Table,
    keys: &mut TenantKeysCache<'_>,
    row: &LegacyRow,
) -> Result<cmk_core::seal::SealedRow, &'static str> {
    if table
        .manifest
        .fields
        .iter()
        .zip(&row.values)
        .any(|(f, v)| !f.nullable && v.is_none())
    {
        return Err("null_in_non_nullable_column");
    }
    let keys = keys.get(&row.tenant).await?;
    let values: Vec<Option<&[u8]>> = row.values.iter().map(|v| v.as_deref()).collect();
    let row_id = table.bound_row_id(&row.id);
    sealing_as(EventName::DataMigrate, || {
        keys.seal(&table.schema, row_id.as_ref(), &values)
    })
    .map_err(|e| e.kind())
}
