//! tower (axum, tonic, hyper): [`CmkLayer`] fetches the keys and runs the inner service in
//! the key scope; handlers take `Extension<cmk::web::Keys>`.
//!
//! ```no_run
//! use axum::{Extension, Router, routing::get};
//! use cmk::web::{Keys, tower::CmkLayer};
//! use cmk::{RequestContext, TenantId};
//!
//! async fn me(Extension(keys): Extension<Keys>) -> String {
//!     format!("tenant {}", keys.tenant())
//! }
//!
//! # fn app(cmk: cmk::Cmk) -> Router {
//! Router::new()
//!     .route("/me", get(me))
//!     .layer(CmkLayer::new(cmk, ["private"], |req: &http::Request<axum::body::Body>| {
//!         let tenant = req.headers().get("x-tenant").and_then(|v| v.to_str().ok());
//!         Ok(RequestContext::new(TenantId::new(tenant.unwrap_or_default())?))
//!     }))
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use cmk_core::RequestContext;
use http::{Request, Response, StatusCode};

use super::{Fetch, Keys, log_unresolved};

/// The layer: keys of the named classes for the context `resolve` gives each request.
/// A failure is answered with the status of [`cmk_core::Error::http_status`] and an empty
/// body of the inner service's type (the message goes to the log).
pub struct CmkLayer<F> {
    fetch: Fetch,
    resolve: Arc<F>,
}

impl<F> Clone for CmkLayer<F> {
    fn clone(&self) -> Self {
        CmkLayer {
            fetch: self.fetch.clone(),
            resolve: Arc::clone(&self.resolve),
        }
    }
}

impl<F> CmkLayer<F> {
    /// Keys of `classes` for every request, for the context `resolve` gives.
    pub fn new<C: AsRef<str>>(
        cmk: cmk_core::Cmk,
        classes: impl IntoIterator<Item = C>,
        resolve: F,
    ) -> Self {
        CmkLayer {
            fetch: Fetch::new(cmk, classes),
            resolve: Arc::new(resolve),
        }
    }
}

impl<S, F> tower_layer::Layer<S> for CmkLayer<F> {
    type Service = CmkService<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        CmkService {
            inner,
            fetch: self.fetch.clone(),
            resolve: Arc::clone(&self.resolve),
        }
    }
}

/// The service [`CmkLayer`] wraps around the application's.
pub struct CmkService<S, F> {
    inner: S,
    fetch: Fetch,
    resolve: Arc<F>,
}

impl<S: Clone, F> Clone for CmkService<S, F> {
    fn clone(&self) -> Self {
        CmkService {
            inner: self.inner.clone(),
            fetch: self.fetch.clone(),
            resolve: Arc::clone(&self.resolve),
        }
    }
}

impl<S, F, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for CmkService<S, F>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
    F: Fn(&Request<ReqBody>) -> cmk_core::Result<RequestContext> + Send + Sync + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The instance that was polled ready serves this request; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fetch = self.fetch.clone();
        let resolved = (self.resolve)(&req);
        Box::pin(async move {
            let refused = |e: &cmk_core::Error| {
                let mut response = Response::new(ResBody::default());
                *response.status_mut() = StatusCode::from_u16(e.http_status())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                Ok(response)
            };
            let ctx = match resolved {
                Ok(ctx) => ctx,
                Err(e) => {
                    log_unresolved(&e);
                    return refused(&e);
                }
            };
            let keys = match fetch.keys(&ctx).await {
                Ok(keys) => keys,
                Err(e) => return refused(&e),
            };
            req.extensions_mut().insert(Keys(Arc::clone(&keys)));
            keys.scope_async(|| inner.call(req)).await
        })
    }
}
