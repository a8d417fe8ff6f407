//! The actix-web example over real HTTP on loopback (feature `actix`).
#![cfg(feature = "actix")]
#![allow(missing_docs)] // diesel::table! generates public modules

mod common;

#[path = "../examples/actix.rs"]
#[allow(dead_code)]
mod example;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actix_example_serves_encrypted_users_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let (embedded, db) = example::users::setup(dir.path()).await.unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = example::server(embedded.cmk().clone(), db, listener).unwrap();
    let handle = server.handle();
    tokio::spawn(server);
    let path = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || common::web::scenario(addr, &path))
        .await
        .unwrap();
    handle.stop(true).await;
}
