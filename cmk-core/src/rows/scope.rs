//! Key scopes: the keys a request entered, found by row-loading code that cannot take them as
//! an argument (ORM `Queryable` / `FromQueryResult` implementations).
//!
//! Synchronous code (Diesel) uses a thread-local scope, async code (SeaORM) a tokio
//! task-local one. Row loading outside any scope fails with [`Error::NoKeyScope`]; a row of
//! another tenant than the scope's fails with `TenantMismatch` when it is unsealed.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::rows::handle::TenantKeys;

thread_local! {
    static THREAD_SCOPE: RefCell<Vec<Arc<TenantKeys>>> = const { RefCell::new(Vec::new()) };
}

tokio::task_local! {
    static TASK_SCOPE: Arc<TenantKeys>;
}

/// Pops the thread scope even if the closure panics.
struct Exit;

impl Drop for Exit {
    fn drop(&mut self) {
        THREAD_SCOPE.with(|s| {
            s.borrow_mut().pop();
        });
    }
}

/// The body of [`TenantKeys::scope`].
pub(crate) fn scope<R>(keys: &Arc<TenantKeys>, f: impl FnOnce() -> R) -> R {
    THREAD_SCOPE.with(|s| s.borrow_mut().push(Arc::clone(keys)));
    let _exit = Exit;
    f()
}

/// The body of [`TenantKeys::scope_async`].
pub(crate) async fn scope_async<F: Future>(
    keys: &Arc<TenantKeys>,
    work: impl FnOnce() -> F,
) -> F::Output {
    TASK_SCOPE
        .scope(Arc::clone(keys), async move { work().await })
        .await
}

/// The keys of the innermost scope: the thread's, else the task's.
///
/// # Errors
/// [`crate::Error::NoKeyScope`] when neither the thread nor the task is inside a key scope:
/// enter one with [`TenantKeys::scope`] or [`TenantKeys::scope_async`].
pub fn current_keys() -> Result<Arc<TenantKeys>> {
    if let Some(keys) = THREAD_SCOPE.with(|s| s.borrow().last().cloned()) {
        return Ok(keys);
    }
    TASK_SCOPE
        .try_with(Arc::clone)
        .map_err(|_| Error::NoKeyScope)
}
