//! The request path of a web application: middleware that resolves each request's tenant
//! and actor (with a closure the application gives), fetches the keys of the classes the
//! application names, and runs the handler inside the key scope.
//!
//! - [`actix`] (feature `actix`): an actix-web 4 middleware and the [`Keys`] extractor.
//! - [`tower`] (feature `tower`): a tower `Layer` for axum, tonic and other tower stacks;
//!   handlers take the keys as `Extension<cmk::web::Keys>`.
//!
//! Inside the handler, async code (SeaORM) finds the keys in the task's key scope; code on
//! another thread (Diesel inside `web::block` or `spawn_blocking`) takes [`Keys`] from the
//! request and enters [`TenantKeys::scope`] there, or passes the keys to
//! `cmk::diesel::ops`. A failed key fetch is logged (target `cmk::web`, with the tenant and
//! the error kind) and answered with the status of [`crate::Error::http_status`].

#[cfg(feature = "actix")]
pub mod actix;
#[cfg(feature = "tower")]
pub mod tower;

use std::sync::Arc;

use cmk_core::{Cmk, RequestContext, TenantKeys};

/// The keys of the current request, as the middleware put them in the request's extensions.
#[derive(Debug, Clone)]
// Exhaustive by design: an extractor handlers destructure: `Keys(keys)`.
#[allow(clippy::exhaustive_structs)]
pub struct Keys(pub Arc<TenantKeys>);

impl std::ops::Deref for Keys {
    type Target = Arc<TenantKeys>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// What both middlewares share: the service and the classes every request needs.
#[derive(Debug, Clone)]
struct Fetch {
    cmk: Cmk,
    classes: Arc<[String]>,
}

impl Fetch {
    fn new<C: AsRef<str>>(cmk: Cmk, classes: impl IntoIterator<Item = C>) -> Self {
        Fetch {
            cmk,
            classes: classes
                .into_iter()
                .map(|c| c.as_ref().to_string())
                .collect(),
        }
    }

    /// Fetches the keys for `ctx`, logging a failure: a request refused for want of keys
    /// must never go unexplained.
    async fn keys(&self, ctx: &RequestContext) -> Result<Arc<TenantKeys>, cmk_core::Error> {
        self.cmk
            .keys_for(ctx, &self.classes)
            .await
            .inspect_err(|e| {
                tracing::warn!(
                    target: "cmk::web",
                    tenant = %ctx.tenant().as_str().escape_debug(),
                    error_kind = e.kind(),
                    status = e.http_status(),
                    "keys for the request could not be fetched: {}",
                e.to_string().escape_debug()
                );
            })
    }
}

/// Logs a request the application's resolver refused (no tenant, an invalid one).
fn log_unresolved(e: &cmk_core::Error) {
    tracing::info!(
        target: "cmk::web",
        error_kind = e.kind(),
        status = e.http_status(),
        "the request's tenant and actor could not be resolved: {}",
        e.to_string().escape_debug()
    );
}
