//! actix-web 4: [`CmkKeys`] wraps an `App` or a scope; handlers take [`Keys`].
//!
//! ```no_run
//! use actix_web::{App, HttpServer, web};
//! use cmk::web::{Keys, actix::CmkKeys};
//! use cmk::{RequestContext, TenantId};
//!
//! async fn me(keys: Keys) -> String {
//!     format!("tenant {}", keys.tenant())
//! }
//!
//! # async fn run(cmk: cmk::Cmk) -> std::io::Result<()> {
//! HttpServer::new(move || {
//!     App::new()
//!         .wrap(CmkKeys::new(cmk.clone(), ["private"], |req| {
//!             let tenant = req.headers().get("x-tenant").and_then(|v| v.to_str().ok());
//!             Ok(RequestContext::new(TenantId::new(tenant.unwrap_or_default())?))
//!         }))
//!         .route("/me", web::get().to(me))
//! })
//! .bind("127.0.0.1:8080")?
//! .run()
//! .await
//! # }
//! ```

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use cmk_core::RequestContext;

use super::{Fetch, Keys, log_unresolved};

/// A cmk error as an actix-web response: the status of [`cmk_core::Error::http_status`] and
/// the error's kind as the body (the message stays in the log: it names tenants and keys).
#[derive(Debug)]
// Exhaustive by design: a newtype applications destructure.
#[allow(clippy::exhaustive_structs)]
pub struct HttpError(pub cmk_core::Error);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .content_type("application/json")
            .body(format!("{{\"error\":\"{}\"}}", self.0.kind()))
    }
}

impl From<cmk_core::Error> for HttpError {
    fn from(e: cmk_core::Error) -> Self {
        HttpError(e)
    }
}

/// The middleware: `App::new().wrap(CmkKeys::new(cmk, classes, resolve))`. `resolve` turns
/// a request into its [`RequestContext`] (tenant, actor, roles, request id); an error it
/// returns is the response (its [`cmk_core::Error::http_status`]).
pub struct CmkKeys<F> {
    fetch: Fetch,
    resolve: Rc<F>,
}

impl<F> CmkKeys<F>
where
    F: Fn(&ServiceRequest) -> cmk_core::Result<RequestContext> + 'static,
{
    /// Keys of `classes` for every request, for the context `resolve` gives.
    pub fn new<C: AsRef<str>>(
        cmk: cmk_core::Cmk,
        classes: impl IntoIterator<Item = C>,
        resolve: F,
    ) -> Self {
        CmkKeys {
            fetch: Fetch::new(cmk, classes),
            resolve: Rc::new(resolve),
        }
    }
}

impl<S, B, F> Transform<S, ServiceRequest> for CmkKeys<F>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
    F: Fn(&ServiceRequest) -> cmk_core::Result<RequestContext> + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = CmkKeysService<S, F>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(CmkKeysService {
            service: Rc::new(service),
            fetch: self.fetch.clone(),
            resolve: Rc::clone(&self.resolve),
        }))
    }
}

/// The service [`CmkKeys`] wraps around the application's.
pub struct CmkKeysService<S, F> {
    service: Rc<S>,
    fetch: Fetch,
    resolve: Rc<F>,
}

impl<S, B, F> Service<ServiceRequest> for CmkKeysService<S, F>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
    F: Fn(&ServiceRequest) -> cmk_core::Result<RequestContext> + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let fetch = self.fetch.clone();
        let resolved = (self.resolve)(&req);
        Box::pin(async move {
            let ctx = resolved.inspect_err(log_unresolved).map_err(HttpError)?;
            let keys = fetch.keys(&ctx).await.map_err(HttpError)?;
            req.extensions_mut().insert(Keys(Arc::clone(&keys)));
            // The handler's future is made inside the scope (see `scope_async`).
            keys.scope_async(|| service.call(req)).await
        })
    }
}

/// The request's keys, for a handler behind [`CmkKeys`].
impl FromRequest for Keys {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(req.extensions().get::<Keys>().cloned().ok_or_else(|| {
            tracing::error!(
                target: "cmk::web",
                path = req.path(),
                "a handler asked for cmk keys but no CmkKeys middleware wraps its route"
            );
            actix_web::error::ErrorInternalServerError("cmk keys are not configured for this route")
        }))
    }
}
