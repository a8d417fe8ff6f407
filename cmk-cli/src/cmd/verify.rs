//! `cmk verify`: unseals every row of a table and reports the rows that fail, by id and kind.

use std::collections::HashMap;
use std::sync::Arc;

use cmk_core::TenantKeys;
use serde_json::json;

use crate::cli::TableArgs;
use crate::exit::{CliError, CliResult, Exit};
use crate::home::Deployment;
use crate::output::print;
use crate::progress::Progress;
use crate::scan::{Stop, TenantKeysCache};
use crate::table::{IdValue, Row, Table};

type KeysByTenant = HashMap<String, Result<Arc<TenantKeys>, &'static str>>;

/// Unseals each row: `Ok` or the kind of its failure.
fn check_rows(table: &Table, rows: &[Row], keys: &KeysByTenant) -> Vec<Result<(), &'static str>> {
    rows.iter()
        .map(|row| match keys.get(&row.tenant) {
            Some(Ok(k)) => k
                .unseal(&table.schema, &table.view(row).stored())
                .map(|_| ())
                .map_err(|e| e.kind()),
            Some(Err(kind)) => Err(*kind),
            None => Err("no_keys"),
        })
        .collect()
}

/// A task's result, or a clear error if it panicked.
fn joined<T>(r: Result<T, tokio::task::JoinError>) -> CliResult<T> {
    r.map_err(|e| CliError::new(Exit::Failure, format!("a verify task failed: {e}")))
}

/// At most this many failures are listed (all are counted).
const LISTED: usize = 1000;

struct Failure {
    id: IdValue,
    tenant: String,
    kind: &'static str,
}

pub(crate) async fn run(d: &Deployment, json: bool, args: TableArgs, stop: &Stop) -> CliResult {
    let table = Arc::new(Table::load(&args.manifest, d.db.get_database_backend())?);
    table.probe(&d.db).await?;
    let tenant = args.tenant.clone();
    let total = table.count(&d.db, None, tenant.as_deref()).await?;
    let mut progress = Progress::new(format!("verify {}", table.name()), total);
    let mut keys = TenantKeysCache::new(d, table.classes(), "verify");
    let (mut rows, mut failed) = (0u64, 0u64);
    let mut failures: Vec<Failure> = Vec::new();
    let mut interrupted = false;
    let limit = args.chunk.max(1);
    let fetch = |after: Option<IdValue>| {
        let (table, db, tenant) = (Arc::clone(&table), d.db.clone(), tenant.clone());
        tokio::spawn(async move {
            table
                .chunk(&db, after.as_ref(), tenant.as_deref(), limit)
                .await
        })
    };
    // The next chunk is read while this one is checked on both cores.
    let mut next = fetch(None);
    loop {
        let chunk = Arc::new(joined(next.await)??);
        if chunk.is_empty() {
            break;
        }
        if let Some(last) = chunk.last() {
            next = fetch(Some(last.id.clone()));
        } else {
            break;
        }
        if stop.requested() {
            interrupted = true;
            break;
        }
        keys.next_chunk();
        let mut chunk_keys = HashMap::new();
        for row in chunk.iter() {
            if !chunk_keys.contains_key(&row.tenant) {
                chunk_keys.insert(row.tenant.clone(), keys.get(&row.tenant).await);
            }
        }
        let chunk_keys = Arc::new(chunk_keys);
        let half = chunk.len().div_ceil(2);
        let check = |range: std::ops::Range<usize>| {
            let (table, chunk, keys) = (
                Arc::clone(&table),
                Arc::clone(&chunk),
                Arc::clone(&chunk_keys),
            );
            tokio::task::spawn_blocking(move || check_rows(&table, &chunk[range], &keys))
        };
        let (first, second) = tokio::join!(check(0..half), check(half..chunk.len()));
        for (i, result) in joined(first)?
            .into_iter()
            .chain(joined(second)?)
            .enumerate()
        {
            rows += 1;
            if let Err(kind) = result {
                failed += 1;
                if failures.len() < LISTED {
                    let row = &chunk[i];
                    failures.push(Failure {
                        id: row.id.clone(),
                        tenant: row.tenant.clone(),
                        kind,
                    });
                }
            }
        }
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    let listed: Vec<_> = failures
        .iter()
        .map(|f| json!({ "id": f.id.to_json(), "tenant": f.tenant, "kind": f.kind }))
        .collect();
    print(
        json,
        &json!({ "table": table.name(), "rows": rows, "ok": rows - failed, "failed": failed,
                 "failures": listed, "interrupted": interrupted }),
        || {
            let mut out = format!(
                "{}: {rows} rows, {} read, {failed} failed",
                table.name(),
                rows - failed
            );
            for f in &failures {
                out.push_str(&format!(
                    "\n  row {} (tenant {}): {}",
                    f.id.label(),
                    f.tenant,
                    f.kind
                ));
            }
            if failed as usize > failures.len() {
                out.push_str(&format!(
                    "\n  ... and {} more",
                    failed as usize - failures.len()
                ));
            }
            out
        },
    );
    if interrupted {
        return Err(CliError::new(
            Exit::Interrupted,
            "interrupted: the rows above were verified",
        ));
    }
    if failed > 0 {
        return Err(CliError::new(
            Exit::Failure,
            format!(
                "{failed} of {rows} rows of {} failed to unseal",
                table.name()
            ),
        ));
    }
    Ok(())
}
