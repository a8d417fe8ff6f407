//! The axum example (tower layer) over real HTTP on loopback (feature `tower`).
#![cfg(feature = "tower")]
#![allow(missing_docs)] // diesel::table! generates public modules

mod common;

#[path = "../examples/axum.rs"]
#[allow(dead_code)]
mod example;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_example_serves_encrypted_users_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let (embedded, db) = example::users::setup(dir.path()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = example::app(embedded.cmk().clone(), db);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let path = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || common::web::scenario(addr, &path))
        .await
        .unwrap();
    server.abort();
}
