//! A derived model through SeaORM 2 on every enabled backend (SQLite always; PostgreSQL and
//! MariaDB under their features): the async operations, transparent loads in a task-local
//! key scope (a `Vec`, a join, `Checked`, a clear error outside a scope), per-row failures, a guarded read-modify-write under concurrency, a fail-closed
//! delete, the jobs, one format shared with Diesel (each ORM reads what the other wrote), and
//! a dump of the whole database that holds no plaintext.

#![allow(missing_docs)] // diesel::table! generates public modules

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cmk::diesel::StoreConnection;
use cmk::event::MemorySink;
use cmk::seaorm::jobs::{self, Chunks};
use cmk::seaorm::migration::columns;
use cmk::seaorm::ops;
use cmk::{Encrypted, LeasePolicy, RequestContext, SearchMode, TenantKeys};
use common::db::TestDb;
use common::dump::find_in_dump;
use sea_orm::sea_query::{Alias, ColumnDef, Expr, Index, Table};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

mod patient {
    use cmk::Encrypted;
    use sea_orm::entity::prelude::*;

    #[derive(Debug, Clone, PartialEq, Encrypted)]
    #[sea_orm(table_name = "patients")]
    #[cmk(tenant = tenant_id, id = id, ids = "app")]
    pub(crate) struct Patient {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub tenant_id: String,
        #[cmk(class = "private", blind_index(normalize = "casefold"))]
        pub email: String,
        #[cmk(class = "restricted")]
        pub ssn: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {
        #[sea_orm(has_many = "super::visit::Entity")]
        Visit,
    }

    impl Related<super::visit::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Visit.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

mod visit {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "visits")]
    pub(crate) struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub tenant_id: String,
        pub patient_id: i64,
        pub reason: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {
        #[sea_orm(
            belongs_to = "super::patient::Entity",
            from = "Column::PatientId",
            to = "super::patient::Column::Id"
        )]
        Patient,
    }

    impl Related<super::patient::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Patient.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

/// A table with a plaintext column left over from before cmk (the backfill's input).
mod member {
    use cmk::Encrypted;
    use sea_orm::entity::prelude::*;

    #[derive(Debug, Clone, PartialEq, Encrypted)]
    #[sea_orm(table_name = "members")]
    #[cmk(tenant = tenant_id, id = id, ids = "app")]
    pub(crate) struct Member {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub tenant_id: String,
        #[cmk(class = "private")]
        pub email: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use member::Member;
use patient::Patient;

/// The same table as Diesel sees it: one stored format, two ORMs.
mod diesel_side {
    use cmk::Encrypted;

    diesel::table! {
        use diesel::sql_types::*;
        use cmk::diesel::sql_types::*;
        patients (id) {
            id -> BigInt,
            tenant_id -> Text,
            email -> CiphertextSql,
            email_bidx -> BlindIndexSql,
            ssn -> Nullable<CiphertextSql>,
            private_keys -> Nullable<KeyColumnSql>,
            restricted_keys -> Nullable<KeyColumnSql>,
        }
    }

    #[derive(Debug, Clone, PartialEq, Encrypted)]
    #[diesel(table_name = patients)]
    #[cmk(tenant = tenant_id, id = id, ids = "app")]
    pub(crate) struct Patient {
        pub id: i64,
        pub tenant_id: String,
        #[cmk(class = "private", blind_index(normalize = "casefold"))]
        pub email: String,
        #[cmk(class = "restricted")]
        pub ssn: Option<String>,
    }
}

/// The application's tables, created through SeaORM with cmk's per-backend column types.
async fn create_tables(db: &DatabaseConnection) {
    let b = db.get_database_backend();
    let id = |name: &str| {
        ColumnDef::new(Alias::new(name))
            .big_integer()
            .not_null()
            .to_owned()
    };
    let patients = Table::create()
        .table(Alias::new("patients"))
        .col(id("id").primary_key().to_owned())
        .col(columns::tenant_id(b, "tenant_id").not_null().to_owned())
        .col(columns::ciphertext(b, "email").not_null().to_owned())
        .col(columns::blind_index(b, "email_bidx").not_null().to_owned())
        .col(columns::ciphertext(b, "ssn").null().to_owned())
        .col(columns::key_column(b, "private_keys").null().to_owned())
        .col(columns::key_column(b, "restricted_keys").null().to_owned())
        .to_owned();
    db.execute(&patients).await.unwrap();
    db.execute(
        &Index::create()
            .name("patients_bidx")
            .table(Alias::new("patients"))
            .col(Alias::new("tenant_id"))
            .col(Alias::new("email_bidx"))
            .to_owned(),
    )
    .await
    .unwrap();
    let visits = Table::create()
        .table(Alias::new("visits"))
        .col(id("id").primary_key().to_owned())
        .col(columns::tenant_id(b, "tenant_id").not_null().to_owned())
        .col(id("patient_id"))
        .col(ColumnDef::new(Alias::new("reason")).text().not_null())
        .to_owned();
    db.execute(&visits).await.unwrap();
    // Mid-migration: `email_plain` is the old column; `email` and `private_keys` were added
    // (nullable) by the expand step.
    let members = Table::create()
        .table(Alias::new("members"))
        .col(id("id").primary_key().to_owned())
        .col(columns::tenant_id(b, "tenant_id").not_null().to_owned())
        .col(ColumnDef::new(Alias::new("email_plain")).text().null())
        .col(columns::ciphertext(b, "email").null().to_owned())
        .col(columns::key_column(b, "private_keys").null().to_owned())
        .to_owned();
    db.execute(&members).await.unwrap();
    let planted = Table::create()
        .table(Alias::new("planted"))
        .col(id("id").primary_key().to_owned())
        .col(ColumnDef::new(Alias::new("note")).text().not_null())
        .to_owned();
    db.execute(&planted).await.unwrap();
}

fn patient(id: i64, email: &str, ssn: Option<&str>) -> Patient {
    Patient {
        id,
        tenant_id: "acme".into(),
        email: email.into(),
        ssn: ssn.map(str::to_owned),
    }
}

async fn setup<C: StoreConnection>(
    db: &TestDb<C>,
    sink: Option<Arc<MemorySink>>,
) -> (DatabaseConnection, Arc<TenantKeys>, RequestContext) {
    let sea = db.sea().await;
    create_tables(&sea).await;
    let (cmk, ctx) =
        common::onboarded_with_sink(sink, SearchMode::BlindIndex, &[], |_, _| {}).await;
    let keys = cmk.keys_for(&ctx, Patient::CLASSES).await.unwrap();
    (sea, keys, ctx)
}

fn by_id() -> sea_orm::Select<patient::Entity> {
    patient::Entity::find().order_by_asc(patient::Column::Id)
}

async fn operations_and_scoped_loads<C: StoreConnection>(db: TestDb<C>) {
    let sink = Arc::new(MemorySink::new());
    let (sea, keys, _) = setup(&db, Some(sink.clone())).await;
    let big = "x".repeat(64 * 1024);
    let people = vec![
        patient(1, "Ann@Example.com", Some("123-45-6789")),
        patient(2, "bob@example.com", None),
        patient(3, "carol@example.com", Some(&big)),
    ];
    ops::insert_many(&sea, &keys, &people).await.unwrap();
    let all: Vec<Patient> = ops::load_all(&sea, &keys, by_id()).await.unwrap();
    assert_eq!(all, people);

    // By blind index: plaintext in, normalised, the key handle's tenant constrained.
    let ann: Option<Patient> = ops::one(
        &sea,
        &keys,
        patient::Entity::find().filter(Patient::by_email(&keys, b" ANN@example.com").unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(ann.as_ref(), Some(&people[0]));

    // Transparent reads inside a task-local scope: a Vec and a join.
    let v = visit::Model {
        id: 10,
        tenant_id: "acme".into(),
        patient_id: 1,
        reason: "checkup".into(),
    };
    visit::ActiveModel::from(v.clone())
        .reset_all()
        .insert(&sea)
        .await
        .unwrap();
    keys.scope_async(|| async {
        let scoped: Vec<Patient> = by_id().into_model::<Patient>().all(&sea).await.unwrap();
        assert_eq!(scoped, people);
        let joined = visit::Entity::find()
            .find_also_related(patient::Entity)
            .into_model::<visit::Model, Patient>()
            .all(&sea)
            .await
            .unwrap();
        assert_eq!(joined, vec![(v.clone(), Some(people[0].clone()))]);
    })
    .await;

    // The guarded read-modify-write: the change applied, the changed class's key column new.
    let before = patient::Entity::find_by_id(2)
        .one(&sea)
        .await
        .unwrap()
        .unwrap();
    let bob = ops::update(
        &sea,
        &keys,
        patient::Entity::find_by_id(2),
        |p: &mut Patient| p.ssn = Some("987-65-4321".into()),
    )
    .await
    .unwrap();
    assert_eq!(bob.ssn.as_deref(), Some("987-65-4321"));
    let after = patient::Entity::find_by_id(2)
        .one(&sea)
        .await
        .unwrap()
        .unwrap();
    // Only the class that changed is re-sealed under a fresh DEK; the other keeps its DEK
    // and ciphertexts, its key column re-wrapped into this write (the row's write id).
    assert_ne!(after.restricted_keys, before.restricted_keys);
    assert_ne!(after.ssn, before.ssn, "re-sealed under a fresh DEK");
    assert_eq!(
        (&after.email, &after.email_bidx),
        (&before.email, &before.email_bidx)
    );
    assert_ne!(after.private_keys, before.private_keys, "re-wrapped");
    let reread: Option<Patient> = ops::one(&sea, &keys, patient::Entity::find_by_id(2))
        .await
        .unwrap();
    assert_eq!(reread, Some(bob.clone()));
    // Compare-and-set with a stale read: a conflict, nothing written.
    let err = ops::update_if_unchanged(&sea, &keys, &before, &people[1])
        .await
        .unwrap_err();
    assert!(matches!(err.cmk(), Some(cmk::Error::Conflict)), "{err:?}");
    let unchanged: Option<Patient> = ops::one(&sea, &keys, patient::Entity::find_by_id(2))
        .await
        .unwrap();
    assert_eq!(unchanged, Some(bob.clone()));
    // A model whose primary key differs from the row read is refused.
    let err = ops::update_if_unchanged(&sea, &keys, &after, &people[0])
        .await
        .unwrap_err();
    assert!(
        matches!(err.cmk(), Some(cmk::Error::InvalidInput(_))),
        "{err:?}"
    );

    // A ciphertext moved to another row (through `update_many`, which no hook sees): that
    // row is reported in place, the others are returned.
    let ann_ssn = patient::Entity::find_by_id(1)
        .one(&sea)
        .await
        .unwrap()
        .unwrap()
        .ssn;
    patient::Entity::update_many()
        .col_expr(
            patient::Column::Ssn,
            Expr::value(ann_ssn.map(|c| c.as_bytes().to_vec())),
        )
        .filter(patient::Column::Id.eq(3))
        .exec(&sea)
        .await
        .unwrap();
    let rows: Vec<cmk::Result<Patient>> = ops::load(&sea, &keys, by_id()).await.unwrap();
    assert_eq!(rows[0].as_ref().unwrap(), &people[0]);
    assert_eq!(rows[1].as_ref().unwrap(), &bob);
    assert!(
        matches!(rows[2], Err(cmk::Error::Tampered)),
        "{:?}",
        rows[2]
    );
    let err = ops::load_all::<Patient, _, _>(&sea, &keys, by_id())
        .await
        .unwrap_err();
    assert!(
        matches!(err, cmk::seaorm::Error::Row { position: 2, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("load_all: row 2 of the result failed to unseal"),
        "{err}"
    );

    // Outside a key scope the plaintext model does not load: a clear error that keeps
    // cmk's as its source.
    let err = by_id().into_model::<Patient>().all(&sea).await.unwrap_err();
    assert!(err.to_string().contains("no key scope"), "{err}");
    // ... and comes back out of SeaORM's error as itself.
    assert!(matches!(
        cmk::seaorm::cmk_error(err),
        cmk::Error::NoKeyScope
    ));
    keys.scope_async(|| async {
        // `Checked<Patient>` reports the moved ciphertext in place and returns the others.
        let rows = by_id()
            .into_model::<cmk::Checked<Patient>>()
            .all(&sea)
            .await
            .unwrap();
        assert!(matches!(rows[2].0, Err(cmk::Error::Tampered)));
        assert_eq!(rows[1].0.as_ref().unwrap(), &bob);
        // A join whose related row does not unseal fails instead of yielding `None`.
        visit::ActiveModel::from(visit::Model {
            id: 11,
            tenant_id: "acme".into(),
            patient_id: 3,
            reason: "follow-up".into(),
        })
        .reset_all()
        .insert(&sea)
        .await
        .unwrap();
        let err = visit::Entity::find()
            .find_also_related(patient::Entity)
            .into_model::<visit::Model, Patient>()
            .all(&sea)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("failed authentication"), "{err}");
    })
    .await;

    // Delete, with its event.
    let deleted = ops::delete::<Patient, _, _>(
        &sea,
        &keys,
        patient::Entity::delete_many()
            .filter(patient::Column::TenantId.eq(keys.tenant().as_str()))
            .filter(patient::Column::Id.eq(3)),
    )
    .await
    .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(by_id().all(&sea).await.unwrap().len(), 2);
    let count = |name: &str| {
        sink.events()
            .into_iter()
            .filter(|e| e.name.as_str() == name)
            .count()
    };
    assert_eq!(count("DATA_DELETE"), 1);
    // Inserts are DATA_ENCRYPT, the read-modify-write a DATA_UPDATE (the failed
    // compare-and-sets sealed too, before their conflict).
    assert_eq!(count("DATA_ENCRYPT"), 3);
    assert!(count("DATA_UPDATE") >= 1);
}
on_every_backend!(operations, operations_and_scoped_loads);

/// A writer copies one row's blind index onto another: a SeaORM lookup must not return the
/// other row as a match (issue 15 §1.2).
async fn a_copied_blind_index_is_never_a_match<C: StoreConnection>(db: TestDb<C>) {
    let sink = Arc::new(MemorySink::new());
    let (sea, keys, _) = setup(&db, Some(sink.clone())).await;
    let (ann, bob) = (
        patient(1, "ann@example.com", None),
        patient(2, "bob@example.com", None),
    );
    ops::insert_many(&sea, &keys, &[ann.clone(), bob.clone()])
        .await
        .unwrap();
    let by_ann = || {
        patient::Entity::find()
            .filter(Patient::by_email(&keys, b"ann@example.com").unwrap())
            .order_by_asc(patient::Column::Id)
    };
    // Positive control: before the copy, the lookup finds Ann alone.
    let found: Vec<cmk::Result<Patient>> = ops::load(&sea, &keys, by_ann()).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].as_ref().unwrap(), &ann);

    let ann_row = patient::Entity::find_by_id(1)
        .one(&sea)
        .await
        .unwrap()
        .unwrap();
    patient::Entity::update_many()
        .col_expr(patient::Column::EmailBidx, Expr::value(ann_row.email_bidx))
        .filter(patient::Column::Id.eq(2))
        .exec(&sea)
        .await
        .unwrap();
    let events_before = sink.events().len();

    let found: Vec<cmk::Result<Patient>> = ops::load(&sea, &keys, by_ann()).await.unwrap();
    assert_eq!(found.len(), 2, "the database matches both rows");
    assert_eq!(found[0].as_ref().unwrap(), &ann);
    let err = found[1].as_ref().unwrap_err();
    assert!(
        matches!(err, cmk::Error::IndexMismatch { column } if column == "email"),
        "{err:?}"
    );
    let newest_first = patient::Entity::find()
        .filter(Patient::by_email(&keys, b"ann@example.com").unwrap())
        .order_by_desc(patient::Column::Id);
    let last = ops::one::<Patient, _, _>(&sea, &keys, newest_first).await;
    assert!(last.is_err(), "{last:?}");
    let scoped = keys
        .scope_async(|| async { by_ann().into_model::<Patient>().all(&sea).await })
        .await;
    assert!(scoped.is_err(), "{scoped:?}");
    let failures = sink.events()[events_before..]
        .iter()
        .filter(|e| e.name == cmk::event::EventName::DataDecrypt)
        .filter(|e| {
            matches!(&e.outcome, cmk::event::Outcome::Failure { error } if error == "index_mismatch")
        })
        .count();
    assert_eq!(failures, 3, "{:?}", sink.events());
}
on_every_backend!(copied_blind_index, a_copied_blind_index_is_never_a_match);

/// A writer restores one class of a row (its key column and fields) from a copy taken
/// before a per-class update: the stitched row never reads (issue 15 §1.1), while the whole
/// old row, restored with all its columns, still does (a whole-row rollback, documented).
async fn a_class_restored_from_an_earlier_write_never_reads<C: StoreConnection>(db: TestDb<C>) {
    let (sea, keys, _) = setup(&db, None).await;
    let ann = patient(1, "ann@example.com", Some("100"));
    ops::insert(&sea, &keys, &ann).await.unwrap();
    let row = || patient::Entity::find_by_id(1);
    let old = row().one(&sea).await.unwrap().unwrap();
    let updated = ops::update(&sea, &keys, row(), |p: &mut Patient| {
        p.email = "ann@new.example".into();
    })
    .await
    .unwrap();
    let new = row().one(&sea).await.unwrap().unwrap();
    assert_eq!(new.ssn, old.ssn, "the salary class kept its ciphertext");
    let put = |m: &patient::Model| {
        let mut active = patient::ActiveModel::from(m.clone()).reset_all();
        active.id = sea_orm::ActiveValue::Unchanged(m.id);
        active
    };
    // Each class of the old write over the new one: its key column with its fields.
    let mut email_old = new.clone();
    (
        email_old.email,
        email_old.email_bidx,
        email_old.private_keys,
    ) = (
        old.email.clone(),
        old.email_bidx.clone(),
        old.private_keys.clone(),
    );
    let mut ssn_old = new.clone();
    (ssn_old.ssn, ssn_old.restricted_keys) = (old.ssn.clone(), old.restricted_keys.clone());
    for (what, stitched) in [("email", email_old), ("ssn", ssn_old)] {
        put(&stitched).update(&sea).await.unwrap();
        let read = ops::one::<Patient, _, _>(&sea, &keys, row()).await;
        assert!(
            matches!(&read, Err(cmk::seaorm::Error::Cmk(cmk::Error::Tampered))),
            "{what} class of the old write: {read:?}"
        );
    }
    // Positive controls: the whole new write, and the whole old one, each read.
    put(&new).update(&sea).await.unwrap();
    let read = ops::one::<Patient, _, _>(&sea, &keys, row()).await.unwrap();
    assert_eq!(read, Some(updated));
    put(&old).update(&sea).await.unwrap();
    let read = ops::one::<Patient, _, _>(&sea, &keys, row()).await.unwrap();
    assert_eq!(read, Some(ann));
}
on_every_backend!(
    class_restored,
    a_class_restored_from_an_earlier_write_never_reads
);

async fn concurrent_read_modify_writes_lose_no_update<C: StoreConnection>(db: TestDb<C>) {
    let (sea, keys, _) = setup(&db, None).await;
    ops::insert(&sea, &keys, &patient(1, "a@example.com", None))
        .await
        .unwrap();
    // Both updaters read before either writes (they meet in the change, first attempt
    // only); one of them then meets a conflict, reads again and applies its change on top.
    // The meeting times out rather than hang, and the call count proves it happened.
    let arrived = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let run = |change: fn(&mut Patient)| {
        let (sea, keys) = (sea.clone(), keys.clone());
        let (arrived, calls) = (arrived.clone(), calls.clone());
        tokio::spawn(async move {
            let mut first = true;
            ops::update(
                &sea,
                &keys,
                patient::Entity::find_by_id(1),
                |p: &mut Patient| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    if std::mem::take(&mut first) {
                        arrived.fetch_add(1, Ordering::SeqCst);
                        // Off the worker, so its queued tasks (the other updater) run.
                        tokio::task::block_in_place(|| {
                            let start = std::time::Instant::now();
                            while arrived.load(Ordering::SeqCst) < 2
                                && start.elapsed() < Duration::from_secs(10)
                            {
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        });
                    }
                    change(p)
                },
            )
            .await
        })
    };
    let a = run(|p| p.email = "new@example.com".into());
    let b = run(|p| p.ssn = Some("555".into()));
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    assert_eq!(arrived.load(Ordering::SeqCst), 2);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "exactly one updater retried"
    );
    let last: Option<Patient> = ops::one(&sea, &keys, patient::Entity::find_by_id(1))
        .await
        .unwrap();
    assert_eq!(
        last,
        Some(Patient {
            email: "new@example.com".into(),
            ssn: Some("555".into()),
            ..patient(1, "", None)
        })
    );
}
on_every_backend!(
    concurrent_updates,
    concurrent_read_modify_writes_lose_no_update
);

async fn a_fail_closed_delete_without_its_event_is_rolled_back<C: StoreConnection>(db: TestDb<C>) {
    let sea = db.sea().await;
    create_tables(&sea).await;
    let sink = Arc::new(MemorySink::new());
    let (cmk, ctx) =
        common::onboarded_with_sink(Some(sink.clone()), SearchMode::BlindIndex, &[], |cfg, _| {
            for policy in cfg.policies.values_mut() {
                policy.audit = cmk::AuditMode::FailClosed;
            }
        })
        .await;
    let keys = cmk.keys_for(&ctx, Patient::CLASSES).await.unwrap();
    let rows = [
        patient(1, "a@example.com", None),
        patient(2, "b@example.com", None),
    ];
    ops::insert_many(&sea, &keys, &rows).await.unwrap();
    let one = || patient::Entity::delete_many().filter(patient::Column::Id.eq(1));

    sink.set_failing(true);
    let err = ops::delete::<Patient, _, _>(&sea, &keys, one())
        .await
        .unwrap_err();
    assert!(
        matches!(err.cmk(), Some(cmk::Error::AuditFailClosed(_))),
        "{err:?}"
    );
    assert_eq!(by_id().all(&sea).await.unwrap().len(), 2, "rolled back");

    sink.set_failing(false);
    assert_eq!(
        ops::delete::<Patient, _, _>(&sea, &keys, one())
            .await
            .unwrap(),
        1
    );
    assert_eq!(by_id().all(&sea).await.unwrap().len(), 1);
}
on_every_backend!(
    fail_closed_delete,
    a_fail_closed_delete_without_its_event_is_rolled_back
);

/// Diesel needs the concrete connection type: one test per backend.
macro_rules! one_format_two_orms {
    ($backend:ident, $feature:literal, $make:path) => {
        #[cfg(feature = $feature)]
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $backend() {
            use diesel::prelude::*;
            let db = $make();
            let (sea, keys, _) = setup(&db, None).await;
            let from_sea = patient(1, "Sea@Example.com", Some("111"));
            ops::insert(&sea, &keys, &from_sea).await.unwrap();
            let from_diesel = diesel_side::Patient {
                id: 2,
                tenant_id: "acme".into(),
                email: "Diesel@Example.com".into(),
                ssn: None,
            };
            let mut conn = db.connect();
            cmk::diesel::ops::insert(&mut conn, &keys, &from_diesel).unwrap();

            // Diesel reads both, and finds the SeaORM row by its blind index.
            use diesel_side::patients;
            let through_diesel: Vec<diesel_side::Patient> =
                cmk::diesel::ops::load_all(&mut conn, &keys, patients::table.order(patients::id))
                    .unwrap();
            assert_eq!(through_diesel[0].email, from_sea.email);
            assert_eq!(through_diesel[0].ssn, from_sea.ssn);
            assert_eq!(through_diesel[1], from_diesel);
            let found: diesel_side::Patient = cmk::diesel::ops::first(
                &mut conn,
                &keys,
                patients::table
                    .filter(diesel_side::Patient::by_email(&keys, b"sea@example.com").unwrap()),
            )
            .unwrap();
            assert_eq!(found.id, 1);

            // SeaORM reads both, and finds the Diesel row by its blind index.
            let through_sea: Vec<Patient> = ops::load_all(&sea, &keys, by_id()).await.unwrap();
            assert_eq!(through_sea[0], from_sea);
            assert_eq!(through_sea[1].email, from_diesel.email);
            let found: Option<Patient> = ops::one(
                &sea,
                &keys,
                patient::Entity::find()
                    .filter(Patient::by_email(&keys, b"DIESEL@example.com").unwrap()),
            )
            .await
            .unwrap();
            assert_eq!(found.map(|p| p.id), Some(2));

            // And an update through one ORM reads through the other.
            ops::update(
                &sea,
                &keys,
                patient::Entity::find_by_id(2),
                |p: &mut Patient| p.ssn = Some("222".into()),
            )
            .await
            .unwrap();
            let again: diesel_side::Patient = cmk::diesel::ops::first(
                &mut conn,
                &keys,
                patients::table.filter(patients::id.eq(2)),
            )
            .unwrap();
            assert_eq!(again.ssn.as_deref(), Some("222"));
        }
    };
}

mod one_format_two_orms {
    use super::*;
    one_format_two_orms!(sqlite, "diesel", common::db::sqlite);
    one_format_two_orms!(postgres, "postgres", common::db::postgres);
    one_format_two_orms!(mysql, "mysql", common::db::mysql);
}

async fn kek_retirement_rewraps_in_resumable_idempotent_chunks<C: StoreConnection>(db: TestDb<C>) {
    let sea = db.sea().await;
    create_tables(&sea).await;
    // A one-second renewal interval, so retirement's grace passes in the test.
    let (cmk, ctx) = common::onboarded(SearchMode::BlindIndex, &[], |cfg, _| {
        for p in cfg.policies.values_mut() {
            p.lease = LeasePolicy::Leased {
                hard_expiry_secs: 60,
                renewal_secs: 1,
                max_uses: None,
            };
        }
    })
    .await;
    let v1 = cmk.keys_for(&ctx, Patient::CLASSES).await.unwrap();
    let people: Vec<Patient> = (1..=25)
        .map(|i| patient(i, &format!("user{i}@example.com"), Some(&format!("{i:09}"))))
        .collect();
    ops::insert_many(&sea, &v1, &people).await.unwrap();
    for class in ["private", "restricted"] {
        assert_eq!(cmk.roll_over_kek(&ctx, class).await.unwrap(), 2);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for class in ["private", "restricted"] {
        cmk.retire_kek(&ctx, class, 1).await.unwrap();
    }
    let keys = cmk.keys_for(&ctx, Patient::CLASSES).await.unwrap();
    let load = |after: Option<&i64>, limit: u64| {
        patient::Entity::find()
            .filter(patient::Column::TenantId.eq("acme"))
            .filter(patient::Column::Id.gt(after.copied().unwrap_or(i64::MIN)))
            .order_by_asc(patient::Column::Id)
            .limit(limit)
    };
    let chunks = |resume_after| Chunks {
        size: 10,
        resume_after,
    };
    // A run that stops after its first chunk: every row still reads.
    let first = jobs::rekey_table::<Patient, _, _, _>(
        &sea,
        &keys,
        chunks(None),
        load,
        |r| r.id,
        |_| ControlFlow::Break(()),
    )
    .await
    .unwrap();
    assert_eq!((first.chunks, first.scanned, first.rewritten), (1, 10, 10));
    assert_eq!(first.after, Some(10));
    let all: Vec<Patient> = ops::load_all(&sea, &keys, by_id()).await.unwrap();
    assert_eq!(all, people, "every row reads mid-job");
    // Resumed: the completed chunk is not read again.
    let mut seen = Vec::new();
    let rest = jobs::rekey_table::<Patient, _, _, _>(
        &sea,
        &keys,
        chunks(first.after),
        load,
        |r| r.id,
        |p| {
            seen.push(p.after);
            ControlFlow::Continue(())
        },
    )
    .await
    .unwrap();
    assert_eq!((rest.scanned, rest.rewritten), (15, 15));
    assert_eq!(seen, vec![Some(20), Some(25)]);
    // Idempotent.
    let again = jobs::rekey_table::<Patient, _, _, _>(
        &sea,
        &keys,
        chunks(None),
        load,
        |r| r.id,
        |_| ControlFlow::Continue(()),
    )
    .await
    .unwrap();
    assert_eq!((again.scanned, again.rewritten), (25, 0));
    // Version 1 destroyed: every row reads under version 2.
    for class in ["private", "restricted"] {
        cmk.destroy_kek(&ctx, class, 1).await.unwrap();
    }
    let keys = cmk.keys_for(&ctx, Patient::CLASSES).await.unwrap();
    let all: Vec<Patient> = ops::load_all(&sea, &keys, by_id()).await.unwrap();
    assert_eq!(all, people);
}
on_every_backend!(
    kek_retirement,
    kek_retirement_rewraps_in_resumable_idempotent_chunks
);

#[derive(Debug, sea_orm::FromQueryResult)]
struct LegacyMember {
    id: i64,
    tenant_id: String,
    email_plain: Option<String>,
}

async fn plaintext_backfill_seals_legacy_rows_and_resumes<C: StoreConnection>(db: TestDb<C>) {
    let sea = db.sea().await;
    create_tables(&sea).await;
    let (cmk, ctx) = common::onboarded(SearchMode::None, &[], |_, _| {}).await;
    let keys = cmk.keys_for(&ctx, Member::CLASSES).await.unwrap();
    for i in 1..=7 {
        let email = if i == 4 {
            "NULL".to_string()
        } else {
            format!("'m{i}@example.com'")
        };
        sea.execute_unprepared(&format!(
            "INSERT INTO members (id, tenant_id, email_plain) VALUES ({i}, 'acme', {email})"
        ))
        .await
        .unwrap();
    }
    let load = |after: Option<&i64>, limit: u64| {
        member::Entity::find()
            .select_only()
            .column(member::Column::Id)
            .column(member::Column::TenantId)
            .column_as(Expr::col(Alias::new("email_plain")), "email_plain")
            .filter(member::Column::PrivateKeys.is_null())
            .filter(member::Column::Id.gt(after.copied().unwrap_or(i64::MIN)))
            .order_by_asc(member::Column::Id)
            .limit(limit)
            .into_model::<LegacyMember>()
    };
    let to_model = |l: LegacyMember| {
        (
            l.id,
            Member {
                id: l.id,
                tenant_id: l.tenant_id,
                email: l.email_plain,
            },
        )
    };
    let chunks = |resume_after| Chunks {
        size: 3,
        resume_after,
    };
    let first = jobs::encrypt_plaintext::<Member, _, _, _, _>(
        &sea,
        &keys,
        chunks(None),
        load,
        to_model,
        |_| ControlFlow::Break(()),
    )
    .await
    .unwrap();
    assert_eq!(
        (first.scanned, first.rewritten, first.after),
        (3, 3, Some(3))
    );
    let rest = jobs::encrypt_plaintext::<Member, _, _, _, _>(
        &sea,
        &keys,
        chunks(first.after),
        load,
        to_model,
        |_| ControlFlow::Continue(()),
    )
    .await
    .unwrap();
    assert_eq!((rest.scanned, rest.rewritten), (4, 4));
    let again = jobs::encrypt_plaintext::<Member, _, _, _, _>(
        &sea,
        &keys,
        chunks(None),
        load,
        to_model,
        |_| ControlFlow::Continue(()),
    )
    .await
    .unwrap();
    assert_eq!(again.scanned, 0, "no legacy rows are left");
    let sealed: Vec<Member> = ops::load_all(
        &sea,
        &keys,
        member::Entity::find().order_by_asc(member::Column::Id),
    )
    .await
    .unwrap();
    let emails: Vec<Option<String>> = sealed.into_iter().map(|m| m.email).collect();
    let expected: Vec<Option<String>> = (1..=7)
        .map(|i| (i != 4).then(|| format!("m{i}@example.com")))
        .collect();
    assert_eq!(emails, expected);
}
on_every_backend!(
    plaintext_backfill,
    plaintext_backfill_seals_legacy_rows_and_resumes
);

async fn a_dump_of_the_database_holds_no_plaintext<C: StoreConnection>(db: TestDb<C>) {
    let (sea, keys, _) = setup(&db, None).await;
    let canaries: Vec<String> = (0..20)
        .map(|i| format!("Canary-{i:02}-Otter-Lynx"))
        .collect();
    let rows: Vec<Patient> = canaries
        .iter()
        .enumerate()
        .map(|(i, c)| patient(i as i64 + 1, &format!("{c}@example.com"), Some(c)))
        .collect();
    ops::insert_many(&sea, &keys, &rows).await.unwrap();
    ops::update(
        &sea,
        &keys,
        patient::Entity::find_by_id(1),
        |p: &mut Patient| p.ssn = Some("Canary-updated-Heron".into()),
    )
    .await
    .unwrap();
    let planted = "Planted-Plaintext-Control-9";
    sea.execute_unprepared(&format!(
        "INSERT INTO planted (id, note) VALUES (1, '{planted}')"
    ))
    .await
    .unwrap();
    drop(sea);
    let dump = db.dump();
    // The scan must be able to fail: the planted plaintext is found.
    assert!(
        find_in_dump(&dump, planted).is_some(),
        "the planted control is in the dump"
    );
    for c in canaries
        .iter()
        .map(String::as_str)
        .chain(["Canary-updated-Heron", "Otter-Lynx"])
    {
        assert_eq!(find_in_dump(&dump, c), None, "canary {c} leaked");
    }
}
on_every_backend!(
    dump_holds_no_plaintext,
    a_dump_of_the_database_holds_no_plaintext
);
