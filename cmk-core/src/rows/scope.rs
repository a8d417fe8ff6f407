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

impl TenantKeys {
    /// Runs `f` with these keys as the thread's current keys (for synchronous code such as
    /// Diesel, `spawn_blocking` or a pool's `interact`). Scopes nest; the innermost wins.
    pub fn scope<R>(self: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        THREAD_SCOPE.with(|s| s.borrow_mut().push(Arc::clone(self)));
        let _exit = Exit;
        f()
    }

    /// Runs the future that `work` builds with these keys as the task's current keys (for
    /// async code such as SeaORM): `keys.scope_async(|| service.call(req))`.
    ///
    /// `work` is a closure so that the future is built inside the scope: some futures do
    /// their work when they are made (a web framework's `service.call(req)` runs the handler
    /// up to its first await), and passing one made outside would run that part without keys.
    /// A future in place of the closure does not compile.
    ///
    /// Code on another thread (`spawn_blocking`, a pool's `interact`) does not see a task's
    /// scope: enter [`TenantKeys::scope`] there.
    pub async fn scope_async<F: Future>(self: &Arc<Self>, work: impl FnOnce() -> F) -> F::Output {
        TASK_SCOPE
            .scope(Arc::clone(self), async move { work().await })
            .await
    }
}

/// The keys of the innermost scope: the thread's, else the task's.
pub fn current_keys() -> Result<Arc<TenantKeys>> {
    if let Some(keys) = THREAD_SCOPE.with(|s| s.borrow().last().cloned()) {
        return Ok(keys);
    }
    TASK_SCOPE
        .try_with(Arc::clone)
        .map_err(|_| Error::NoKeyScope)
}
