//! An actix-web 4 application with cmk on its request path: the `CmkKeys` middleware resolves
//! each request's tenant and actor from its headers, fetches the keys, and runs the handler in
//! the key scope. Users' emails (blind-indexed) and bios are encrypted; posts join users.
//!
//! `cargo run --example actix --features actix`, then for example:
//!
//! ```text
//! curl -H 'x-tenant: acme' -H 'x-user: u1' -H 'content-type: application/json' \
//!      -d '{"id":1,"email":"Ann@Example.com","bio":"hi"}' localhost:8080/users
//! curl -H 'x-tenant: acme' localhost:8080/users/by-email/ann@example.com
//! ```

#![allow(missing_docs)] // diesel::table! generates public modules

#[path = "web/users.rs"]
pub(crate) mod users;

use actix_web::dev::{Server, ServiceRequest};
use actix_web::{App, HttpResponse, HttpServer, web};
use cmk::web::Keys;
use cmk::web::actix::{CmkKeys, HttpError};

use users::{Db, PostJson, UserJson};

/// Runs a route's Diesel work on actix's blocking pool (never on the request's thread).
async fn blocking<R: Send + 'static>(
    work: impl FnOnce() -> cmk::Result<R> + Send + 'static,
) -> Result<R, actix_web::Error> {
    Ok(web::block(work).await?.map_err(HttpError)?)
}

async fn create_user(
    keys: Keys,
    db: web::Data<Db>,
    user: web::Json<UserJson>,
) -> Result<HttpResponse, actix_web::Error> {
    let db = db.get_ref().clone();
    blocking(move || users::create_user(&db, &keys, user.into_inner())).await?;
    Ok(HttpResponse::Created().finish())
}

async fn user_by_email(
    keys: Keys,
    db: web::Data<Db>,
    email: web::Path<String>,
) -> Result<HttpResponse, actix_web::Error> {
    let db = db.get_ref().clone();
    Ok(
        match blocking(move || users::user_by_email(&db, &keys, &email)).await? {
            Some(user) => HttpResponse::Ok().json(user),
            None => HttpResponse::NotFound().finish(),
        },
    )
}

async fn add_post(
    keys: Keys,
    db: web::Data<Db>,
    id: web::Path<i64>,
    title: String,
) -> Result<HttpResponse, actix_web::Error> {
    let db = db.get_ref().clone();
    blocking(move || users::add_post(&db, &keys, *id, title)).await?;
    Ok(HttpResponse::Created().finish())
}

async fn posts_of(
    keys: Keys,
    db: web::Data<Db>,
    id: web::Path<i64>,
) -> Result<web::Json<Vec<PostJson>>, actix_web::Error> {
    let db = db.get_ref().clone();
    Ok(web::Json(
        blocking(move || users::posts_of(&db, &keys, *id)).await?,
    ))
}

/// Code deep in the request finds the keys in the scope, with the request's context.
async fn whoami() -> Result<String, actix_web::Error> {
    Ok(users::whoami().map_err(HttpError)?)
}

/// The server on `listener`, one worker (enough for the example and its tests).
pub(crate) fn server(
    cmk: cmk::Cmk,
    db: Db,
    listener: std::net::TcpListener,
) -> std::io::Result<Server> {
    let db = web::Data::new(db);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(db.clone())
            .wrap(CmkKeys::new(
                cmk.clone(),
                users::CLASSES,
                |req: &ServiceRequest| {
                    users::context_from_headers(|name| {
                        req.headers().get(name).and_then(|v| v.to_str().ok())
                    })
                },
            ))
            .route("/users", web::post().to(create_user))
            .route("/users/by-email/{email}", web::get().to(user_by_email))
            .route("/users/{id}/posts", web::post().to(add_post))
            .route("/users/{id}/posts", web::get().to(posts_of))
            .route("/whoami", web::get().to(whoami))
    })
    .workers(1)
    .listen(listener)?
    .run())
}

#[tokio::main]
#[allow(dead_code)] // the HTTP tests use `server` without `main`
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (embedded, db) = users::setup(std::path::Path::new("target/cmk-actix")).await?;
    let listener = std::net::TcpListener::bind("127.0.0.1:8080")?;
    println!("listening on http://{}", listener.local_addr()?);
    server(embedded.cmk().clone(), db, listener)?.await?;
    Ok(())
}
