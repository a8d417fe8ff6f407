//! One request handle, one context: the keys carry the request they were fetched for, and
//! every seal, unseal, Diesel operation and scoped load is checked and audited as it.
#![allow(missing_docs)] // diesel::table! generates public modules

mod common;

use std::sync::Arc;

use cmk::diesel::ops;
use cmk::event::{EventName, MemorySink};
use cmk::{Actor, Encrypted, Error, RequestContext, SearchMode, TenantId};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

diesel::table! {
    use diesel::sql_types::*;
    use cmk::diesel::sql_types::*;
    notes (id) {
        id -> BigInt,
        tenant_id -> Text,
        body -> CiphertextSql,
        private_keys -> Nullable<KeyColumnSql>,
    }
}

#[derive(Debug, Clone, PartialEq, Encrypted)]
#[diesel(table_name = notes)]
#[cmk(tenant = tenant_id, id = id, ids = "app")]
struct Note {
    id: i64,
    tenant_id: String,
    #[cmk(class = "private")]
    body: String,
}

fn note(id: i64) -> Note {
    Note {
        id,
        tenant_id: "acme".into(),
        body: format!("note {id}"),
    }
}

async fn setup() -> (cmk::Cmk, RequestContext, Arc<MemorySink>, SqliteConnection) {
    let sink = Arc::new(MemorySink::new());
    let (cmk, _) =
        common::onboarded_with_sink(Some(sink.clone()), SearchMode::None, &[], |_, _| {}).await;
    let ctx = RequestContext::new(TenantId::new("acme").unwrap())
        .with_actor(Actor::User("u-1".into()))
        .with_request_id("req-1");
    let mut conn = SqliteConnection::establish(":memory:").unwrap();
    conn.batch_execute(
        "CREATE TABLE notes (id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, body BLOB NOT NULL,
         private_keys BLOB)",
    )
    .unwrap();
    (cmk, ctx, sink, conn)
}

/// (actor, request id) of the events named `name`, in order.
fn audited(sink: &MemorySink, name: EventName) -> Vec<(Option<String>, Option<String>)> {
    sink.events()
        .into_iter()
        .filter(|e| e.name == name)
        .map(|e| (e.actor.clone(), e.request_id.clone()))
        .collect()
}

#[tokio::test]
async fn operations_and_scoped_loads_audit_the_handles_request() {
    let (cmk, ctx, sink, mut conn) = setup().await;
    let keys = cmk.keys_for(&ctx, Note::CLASSES).await.unwrap();
    // The table comes from the sealed type: no table argument, no context argument.
    ops::insert(&mut conn, &keys, &note(1)).unwrap();
    ops::insert_many(&mut conn, &keys, &[note(2), note(3)]).unwrap();
    // Plain Diesel in a key scope, as repository code deep in a request does.
    let loaded: Vec<Note> = keys
        .scope(|| notes::table.order(notes::id).load(&mut conn))
        .unwrap();
    assert_eq!(loaded, vec![note(1), note(2), note(3)]);

    let request = (Some("user:u-1".to_string()), Some("req-1".to_string()));
    assert_eq!(
        audited(&sink, EventName::DataEncrypt),
        vec![request.clone(); 3]
    );
    assert_eq!(audited(&sink, EventName::DataDecrypt), vec![request; 3]);
}

#[tokio::test]
async fn another_actor_acts_with_the_same_leases_and_is_audited_as_itself() {
    let (cmk, ctx, sink, mut conn) = setup().await;
    let keys = cmk.keys_for(&ctx, Note::CLASSES).await.unwrap();
    ops::insert(&mut conn, &keys, &note(1)).unwrap();
    let job = keys.as_actor(Actor::Service("export".into()), ["auditor"]);
    assert_eq!(job.context().roles(), ["auditor".to_string()]);
    let read: Note = ops::first(&mut conn, &job, notes::table.find(1)).unwrap();
    assert_eq!(read, note(1));
    // The request id stays; the actor is the job's.
    assert_eq!(
        audited(&sink, EventName::DataDecrypt),
        vec![(Some("service:export".into()), Some("req-1".into()))]
    );
    // No lease was fetched for it: the handle shares the request's.
    assert_eq!(
        job.active_kek(&cmk::Class::new("private").unwrap()),
        keys.active_kek(&cmk::Class::new("private").unwrap())
    );
}

#[tokio::test]
async fn a_context_of_another_tenant_is_refused() {
    let (cmk, ctx, _, _) = setup().await;
    let keys = cmk.keys_for(&ctx, Note::CLASSES).await.unwrap();
    let globex = RequestContext::new(TenantId::new("globex").unwrap());
    assert!(matches!(
        keys.with_context(globex),
        Err(Error::TenantMismatch { .. })
    ));
    // A model of another tenant is refused at sealing, whatever the handle.
    let theirs = Note {
        tenant_id: "globex".into(),
        ..note(1)
    };
    assert!(matches!(
        theirs.seal(&keys),
        Err(Error::TenantMismatch { .. })
    ));
    // In a batch, the message names the operation and the row, and nothing is written.
    let (_, _, _, mut conn) = setup().await;
    let err = ops::insert_many(&mut conn, &keys, &[note(1), theirs]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("insert_many: row 1 of the batch failed to seal, nothing was written"),
        "{err}"
    );
    let count: i64 = notes::table.count().get_result(&mut conn).unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn a_cmk_error_inside_a_plain_diesel_load_comes_back_as_itself() {
    let (cmk, ctx, _, mut conn) = setup().await;
    let keys = cmk.keys_for(&ctx, Note::CLASSES).await.unwrap();
    ops::insert(&mut conn, &keys, &note(1)).unwrap();
    // A database writer moves the row under another id: its ciphertext no longer verifies.
    diesel::update(notes::table.find(1))
        .set(notes::id.eq(2))
        .execute(&mut conn)
        .unwrap();
    let err = keys
        .scope(|| notes::table.load::<Note>(&mut conn))
        .unwrap_err();
    let err = cmk::diesel::cmk_error(err);
    assert!(matches!(err, Error::Tampered), "{err:?}");
    assert_eq!(err.http_status(), 500);
    // Outside a key scope: a clear error of its own.
    let err = cmk::diesel::cmk_error(notes::table.load::<Note>(&mut conn).unwrap_err());
    assert!(matches!(err, Error::NoKeyScope), "{err:?}");
}
