//! What the table jobs share: each tenant's keys, fetched once per chunk, and the stop flag
//! Ctrl-C raises between chunks, and the machinery that reads a chunk ahead and works on
//! both cores.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cmk_core::{Actor, TenantKeys};
use sea_orm::DatabaseConnection;

use crate::cmd::tenant::{admin_context, tenant_id};
use crate::exit::{CliError, CliResult, Exit};
use crate::home::Deployment;
use crate::table::{IdValue, Row, Table};

/// Raised by Ctrl-C (or SIGTERM): jobs stop after the row in hand, never inside one.
#[derive(Clone, Default)]
pub(crate) struct Stop(Arc<AtomicBool>);

impl Stop {
    /// A flag that SIGINT and SIGTERM raise.
    pub(crate) fn on_signals() -> Stop {
        let stop = Stop::default();
        let flag = stop.0.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            flag.store(true, Ordering::SeqCst);
        });
        stop
    }

    pub(crate) fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Each tenant's keys for one chunk of rows, with every reader role of its configuration
/// (the tool reads every class), or the kind of error that refused them.
pub(crate) struct TenantKeysCache<'a> {
    d: &'a Deployment,
    classes: Vec<String>,
    purpose: &'static str,
    keys: HashMap<String, Result<Arc<TenantKeys>, &'static str>>,
}

impl<'a> TenantKeysCache<'a> {
    pub(crate) fn new(d: &'a Deployment, classes: Vec<String>, purpose: &'static str) -> Self {
        TenantKeysCache {
            d,
            classes,
            purpose,
            keys: HashMap::new(),
        }
    }

    /// Forgets the handles, so a long job takes renewed leases (and sees a revocation).
    pub(crate) fn next_chunk(&mut self) {
        self.keys.clear();
    }

    pub(crate) async fn get(&mut self, tenant: &str) -> Result<Arc<TenantKeys>, &'static str> {
        if let Some(keys) = self.keys.get(tenant) {
            return keys.clone();
        }
        let keys = self.fetch(tenant).await;
        self.keys.insert(tenant.to_string(), keys.clone());
        keys
    }

    async fn fetch(&self, tenant: &str) -> Result<Arc<TenantKeys>, &'static str> {
        let id = tenant_id(tenant).map_err(|_| "invalid_tenant")?;
        let ctx = admin_context(&id).with_purpose(self.purpose);
        let keys = self
            .d
            .cmk
            .keys_for(&ctx, &self.classes)
            .await
            .map_err(|e| e.kind())?;
        let roles: Vec<String> = keys
            .config()
            .policies
            .values()
            .flat_map(|p| p.readers.iter().cloned())
            .collect();
        Ok(keys.as_actor(Actor::Service("cmk-cli".into()), roles))
    }
}

/// Each tenant's keys for one chunk, or the kind of error that refused them.
type KeysByTenant = HashMap<String, Result<Arc<TenantKeys>, &'static str>>;

/// The keys of every tenant with a row in `rows`, fetched before any work on the chunk (a
/// fetch may write the registry: never inside a chunk's transaction).
async fn keys_by_tenant(cache: &mut TenantKeysCache<'_>, rows: &[Row]) -> Arc<KeysByTenant> {
    cache.next_chunk();
    let mut keys = HashMap::new();
    for row in rows {
        if !keys.contains_key(&row.tenant) {
            keys.insert(row.tenant.clone(), cache.get(&row.tenant).await);
        }
    }
    Arc::new(keys)
}

/// What a job does to one row, given its tenant's keys.
pub(crate) type RowWork<T> = fn(&Table, &Row, Result<&Arc<TenantKeys>, &'static str>) -> T;

/// Runs `work` over every row of `chunk`, half on each core; results in row order.
async fn on_both_cores<T: Send + 'static>(
    table: &Arc<Table>,
    chunk: &Arc<Vec<Row>>,
    keys: &Arc<KeysByTenant>,
    work: RowWork<T>,
) -> CliResult<Vec<T>> {
    let half = chunk.len().div_ceil(2);
    let run = |range: std::ops::Range<usize>| {
        let (table, chunk, keys) = (Arc::clone(table), Arc::clone(chunk), Arc::clone(keys));
        tokio::task::spawn_blocking(move || {
            chunk[range]
                .iter()
                .map(|row| {
                    let row_keys = match keys.get(&row.tenant) {
                        Some(Ok(k)) => Ok(k),
                        Some(Err(kind)) => Err(*kind),
                        None => Err("no_keys"),
                    };
                    work(&table, row, row_keys)
                })
                .collect::<Vec<T>>()
        })
    };
    let (first, second) = tokio::join!(run(0..half), run(half..chunk.len()));
    let mut out = joined(first)?;
    out.extend(joined(second)?);
    Ok(out)
}

/// Reads chunk after chunk, the next one while the caller works on this one.
struct Prefetch {
    table: Arc<Table>,
    db: DatabaseConnection,
    tenant: Option<String>,
    limit: u64,
    next: Option<tokio::task::JoinHandle<CliResult<Vec<Row>>>>,
}

impl Prefetch {
    fn new(
        table: &Arc<Table>,
        db: &DatabaseConnection,
        tenant: Option<String>,
        limit: u64,
        after: Option<IdValue>,
    ) -> Prefetch {
        let mut p = Prefetch {
            table: Arc::clone(table),
            db: db.clone(),
            tenant,
            limit: limit.max(1),
            next: None,
        };
        p.start(after);
        p
    }

    fn start(&mut self, after: Option<IdValue>) {
        let (table, db, tenant, limit) = (
            Arc::clone(&self.table),
            self.db.clone(),
            self.tenant.clone(),
            self.limit,
        );
        self.next = Some(tokio::spawn(async move {
            table
                .chunk(&db, after.as_ref(), tenant.as_deref(), limit)
                .await
        }));
    }

    /// The next chunk (empty at the end), starting the read of the one after it.
    async fn next(&mut self) -> CliResult<Arc<Vec<Row>>> {
        let chunk = match self.next.take() {
            Some(handle) => joined(handle.await)??,
            None => Vec::new(),
        };
        if let Some(last) = chunk.last() {
            self.start(Some(last.id.clone()));
        }
        Ok(Arc::new(chunk))
    }
}

/// A task's result, or a clear error if it panicked.
fn joined<T>(r: Result<T, tokio::task::JoinError>) -> CliResult<T> {
    r.map_err(|e| CliError::new(Exit::Failure, format!("a worker task failed: {e}")))
}

/// One pass of a job over a table: chunks read ahead, each worked on both cores with its
/// tenants' keys.
pub(crate) struct TablePass<'a> {
    table: Arc<Table>,
    chunks: Prefetch,
    keys: TenantKeysCache<'a>,
}

/// What the next step of a pass brought.
pub(crate) enum Step<T> {
    /// A chunk and each row's result, in row order.
    Chunk(Arc<Vec<Row>>, Vec<T>),
    /// No rows left.
    Done,
    /// Ctrl-C: the chunks before were done whole.
    Interrupted,
}

impl<'a> TablePass<'a> {
    /// A pass over the rows after `after` (of `tenant` only, if given), `limit` per chunk,
    /// its key requests made for `purpose`.
    pub(crate) fn new(
        d: &'a Deployment,
        table: &Arc<Table>,
        tenant: Option<String>,
        limit: u64,
        after: Option<IdValue>,
        purpose: &'static str,
    ) -> Self {
        TablePass {
            table: Arc::clone(table),
            chunks: Prefetch::new(table, &d.db, tenant, limit, after),
            keys: TenantKeysCache::new(d, table.classes(), purpose),
        }
    }

    /// Works on the next chunk, unless the rows are done or Ctrl-C was pressed.
    pub(crate) async fn next<T: Send + 'static>(
        &mut self,
        stop: &Stop,
        work: RowWork<T>,
    ) -> CliResult<Step<T>> {
        let chunk = self.chunks.next().await?;
        if chunk.is_empty() {
            return Ok(Step::Done);
        }
        if stop.requested() {
            return Ok(Step::Interrupted);
        }
        let keys = keys_by_tenant(&mut self.keys, &chunk).await;
        let results = on_both_cores(&self.table, &chunk, &keys, work).await?;
        Ok(Step::Chunk(chunk, results))
    }
}
