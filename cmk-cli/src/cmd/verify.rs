//! `cmk verify`: unseals every row of a table and reports the rows that fail, by id and kind.

use std::sync::Arc;

use cmk_core::TenantKeys;
use serde_json::json;

use crate::cli::TableArgs;
use crate::exit::{CliError, CliResult, Exit};
use crate::home::Deployment;
use crate::output::print;
use crate::progress::Progress;
use crate::scan::{Step, Stop, TablePass};
use crate::table::{IdValue, Row, Table};

/// Unseals one row: `Ok` or the kind of its failure.
fn check_row(
    table: &Table,
    row: &Row,
    keys: Result<&Arc<TenantKeys>, &'static str>,
) -> Result<(), &'static str> {
    keys?
        .unseal(&table.schema, &table.view(row).stored())
        .map(|_| ())
        .map_err(|e| e.kind())
}

/// At most this many failures are listed (all are counted).
const LISTED: usize = 1000;

struct Failure {
    id: IdValue,
    tenant: String,
    kind: &'static str,
}

pub(crate) async fn run(d: &Deployment, json: bool, args: TableArgs, stop: &Stop) -> CliResult {
    let manifest = args.manifest_path(&d.paths.dir);
    let table = Arc::new(Table::load(&manifest, d.db.get_database_backend())?);
    table.probe(&d.db).await?;
    let total = table.count(&d.db, None, args.tenant.as_deref()).await?;
    let mut progress = Progress::new(format!("verify {}", table.name()), total);
    let (mut rows, mut failed) = (0u64, 0u64);
    let mut failures: Vec<Failure> = Vec::new();
    let mut interrupted = false;
    let mut pass = TablePass::new(d, &table, args.tenant.clone(), args.chunk, None, "verify");
    loop {
        let (chunk, results) = match pass.next(stop, check_row).await? {
            Step::Chunk(chunk, results) => (chunk, results),
            Step::Done => break,
            Step::Interrupted => {
                interrupted = true;
                break;
            }
        };
        for (row, result) in chunk.iter().zip(results) {
            rows += 1;
            if let Err(kind) = result {
                failed += 1;
                if failures.len() < LISTED {
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
