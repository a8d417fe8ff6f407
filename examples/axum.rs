//! An axum application with cmk on its request path: the tower `CmkLayer` resolves each
//! request's tenant and actor from its headers, fetches the keys, and runs the handler in the
//! key scope; handlers take the keys as `Extension<Keys>`. Users' emails (blind-indexed) and
//! bios are encrypted; posts join users.
//!
//! `cargo run --example axum --features tower`, then the same requests as the actix example
//! (port 8081).

#![allow(missing_docs)] // diesel::table! generates public modules

#[path = "web/users.rs"]
pub(crate) mod users;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use cmk::web::Keys;
use cmk::web::tower::CmkLayer;

use users::{Db, PostJson, UserJson};

/// A cmk error as the response: the status of `http_status`, the kind as the body.
struct HttpError(cmk::Error);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, self.0.kind()).into_response()
    }
}

/// Runs a route's Diesel work on tokio's blocking pool.
async fn blocking<R: Send + 'static>(
    work: impl FnOnce() -> cmk::Result<R> + Send + 'static,
) -> Result<R, HttpError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| HttpError(cmk::Error::Other(std::sync::Arc::new(e))))?
        .map_err(HttpError)
}

async fn create_user(
    State(db): State<Db>,
    Extension(keys): Extension<Keys>,
    Json(user): Json<UserJson>,
) -> Result<StatusCode, HttpError> {
    blocking(move || users::create_user(&db, &keys, user)).await?;
    Ok(StatusCode::CREATED)
}

async fn user_by_email(
    State(db): State<Db>,
    Extension(keys): Extension<Keys>,
    Path(email): Path<String>,
) -> Result<Response, HttpError> {
    Ok(
        match blocking(move || users::user_by_email(&db, &keys, &email)).await? {
            Some(user) => Json(user).into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        },
    )
}

async fn add_post(
    State(db): State<Db>,
    Extension(keys): Extension<Keys>,
    Path(id): Path<i64>,
    title: String,
) -> Result<StatusCode, HttpError> {
    blocking(move || users::add_post(&db, &keys, id, title)).await?;
    Ok(StatusCode::CREATED)
}

async fn posts_of(
    State(db): State<Db>,
    Extension(keys): Extension<Keys>,
    Path(id): Path<i64>,
) -> Result<Json<Vec<PostJson>>, HttpError> {
    Ok(Json(
        blocking(move || users::posts_of(&db, &keys, id)).await?,
    ))
}

/// Code deep in the request finds the keys in the scope, with the request's context.
async fn whoami() -> Result<String, HttpError> {
    users::whoami().map_err(HttpError)
}

/// The application's routes behind the cmk layer.
pub(crate) fn app(cmk: cmk::Cmk, db: Db) -> Router {
    Router::new()
        .route("/users", post(create_user))
        .route("/users/by-email/{email}", get(user_by_email))
        .route("/users/{id}/posts", post(add_post).get(posts_of))
        .route("/whoami", get(whoami))
        .layer(CmkLayer::new(
            cmk,
            users::CLASSES,
            |req: &axum::http::Request<axum::body::Body>| {
                users::context_from_headers(|name| {
                    req.headers().get(name).and_then(|v| v.to_str().ok())
                })
            },
        ))
        .with_state(db)
}

#[tokio::main]
#[allow(dead_code)] // the HTTP tests use `app` without `main`
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (embedded, db) = users::setup(std::path::Path::new("target/cmk-axum")).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(embedded.cmk().clone(), db)).await?;
    Ok(())
}
