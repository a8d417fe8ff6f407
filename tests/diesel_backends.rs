//! A derived model through Diesel on every enabled backend (SQLite always; PostgreSQL and
//! MariaDB under their features): the one-call operations, transparent loads in a key scope
//! (a `Vec`, a tuple from a join, a blind-index filter), per-row failures, a 64 KiB value,
//! binary tenant collation, and a dump of the whole database that holds no plaintext.

#![allow(missing_docs)] // diesel::table! generates public modules

mod common;

use common::dump::find_in_dump;

use std::sync::Arc;

use cmk::diesel::ops;
use cmk::{Encrypted, RequestContext, SearchMode, TenantKeys};
use diesel::prelude::*;

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

diesel::table! {
    visits (id) {
        id -> BigInt,
        tenant_id -> Text,
        patient_id -> BigInt,
        reason -> Text,
    }
}

diesel::table! {
    planted (id) {
        id -> BigInt,
        note -> Text,
    }
}

diesel::joinable!(visits -> patients (patient_id));
diesel::allow_tables_to_appear_in_same_query!(patients, visits);

#[derive(Debug, Clone, PartialEq, Encrypted)]
#[diesel(table_name = patients)]
#[cmk(tenant = tenant_id, id = id, ids = "app")]
pub struct Patient {
    id: i64,
    tenant_id: String,
    #[cmk(class = "private", blind_index(normalize = "casefold"))]
    email: String,
    #[cmk(class = "restricted")]
    ssn: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = visits)]
pub struct Visit {
    id: i64,
    tenant_id: String,
    patient_id: i64,
    reason: String,
}

/// The application's tables, in each dialect's recommended column types (cmk::diesel::ddl).
fn schema(dialect: cmk::diesel::ddl::Dialect) -> String {
    use cmk::diesel::ddl::Dialect::*;
    let (tenant, ct, bidx, keys) = match dialect {
        Sqlite => ("TEXT", "BLOB", "BLOB", "BLOB"),
        Postgres => ("TEXT COLLATE \"C\"", "BYTEA", "BYTEA", "BYTEA"),
        Mysql => (
            "VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
            "MEDIUMBLOB",
            "VARBINARY(64)",
            "VARBINARY(255)",
        ),
        other => panic!("no column types for {other:?} in this test"),
    };
    format!(
        "CREATE TABLE patients (id BIGINT PRIMARY KEY, tenant_id {tenant} NOT NULL, \
           email {ct} NOT NULL, email_bidx {bidx} NOT NULL, ssn {ct}, \
           private_keys {keys}, restricted_keys {keys}); \
         CREATE INDEX patients_bidx ON patients (tenant_id, email_bidx); \
         CREATE TABLE visits (id BIGINT PRIMARY KEY, tenant_id {tenant} NOT NULL, \
           patient_id BIGINT NOT NULL, reason TEXT NOT NULL); \
         CREATE TABLE planted (id BIGINT PRIMARY KEY, note TEXT NOT NULL);"
    )
}

fn patient(id: i64, email: &str, ssn: Option<String>) -> Patient {
    Patient {
        id,
        tenant_id: "acme".into(),
        email: email.into(),
        ssn,
    }
}

async fn keys() -> (Arc<TenantKeys>, RequestContext) {
    let (cmk, ctx) = common::onboarded(SearchMode::BlindIndex, &[], |_, _| {}).await;
    (cmk.keys_for(&ctx, Patient::CLASSES).await.unwrap(), ctx)
}

macro_rules! backend_tests {
    ($backend:ident, $feature:literal, $make:path, $conn:ty) => {
        #[cfg(feature = $feature)]
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn one_call_operations_and_scoped_loads() {
                let db = $make();
                db.execute(&schema(db_dialect(&db)));
                let (keys, ctx) = keys().await;
                let big = "x".repeat(64 * 1024);
                let people = vec![
                    patient(1, "Ann@Example.com", Some("123-45-6789".into())),
                    patient(2, "bob@example.com", None),
                    patient(3, "carol@example.com", Some(big)),
                ];

                // The tokio pattern: keys fetched async, sealing and Diesel on the blocking pool.
                let conn = db.conn.clone();
                let (k, _, rows) = (keys.clone(), ctx.clone(), people.clone());
                let inserted = tokio::task::spawn_blocking(move || {
                    let mut conn = conn.lock().unwrap();
                    ops::insert_many(&mut *conn, &k, &rows)
                })
                .await
                .unwrap()
                .unwrap();
                assert_eq!(inserted, 3);

                let mut conn = db.conn.lock().unwrap();
                let conn = &mut *conn;
                let all: Vec<Patient> =
                    ops::load_all(conn, &keys, patients::table.order(patients::id)).unwrap();
                assert_eq!(all, people);

                // By blind index, plaintext in and tenant constrained.
                let ann: Patient = ops::first(
                    conn,
                    &keys,
                    patients::table.filter(Patient::by_email(&keys, b"ANN@example.com ").unwrap()),
                )
                .unwrap();
                assert_eq!(ann, people[0]);

                // An update re-seals with fresh DEKs in one statement.
                let before: SealedPatient = patients::table.find(1).first(conn).unwrap();
                let mut changed = ann.clone();
                changed.email = "ann@new.example".into();
                assert_eq!(
                    ops::update(conn, &keys, patients::table.find(1), &changed).unwrap(),
                    1
                );
                let after: SealedPatient = patients::table.find(1).first(conn).unwrap();
                assert_ne!(before.private_keys, after.private_keys);
                assert_ne!(before.restricted_keys, after.restricted_keys);
                let reread: Patient =
                    ops::first(conn, &keys, patients::table.find(1)).unwrap();
                assert_eq!(reread, changed);
                assert!(
                    patients::table
                        .filter(Patient::by_email(&keys, b"ann@example.com").unwrap())
                        .select(patients::id)
                        .load::<i64>(conn)
                        .unwrap()
                        .is_empty(),
                    "the old index value is gone"
                );

                // Transparent loads inside a scope: a Vec, a join into tuples.
                diesel::insert_into(visits::table)
                    .values(&Visit { id: 10, tenant_id: "acme".into(), patient_id: 2, reason: "checkup".into() })
                    .execute(conn)
                    .unwrap();
                keys.scope(|| {
                    let all: Vec<Patient> = patients::table.order(patients::id).load(conn).unwrap();
                    assert_eq!(all[1], people[1]);
                    let joined: Vec<(Visit, Patient)> = visits::table
                        .inner_join(patients::table)
                        .select((Visit::as_select(), Patient::as_select()))
                        .load(conn)
                        .unwrap();
                    assert_eq!(joined[0].1, people[1]);
                });

                // A row copied to tenant `ACME` (another tenant, under a binary collation) is
                // not matched by acme's filter, and does not unseal as acme's.
                diesel::sql_query(
                    "INSERT INTO patients (id, tenant_id, email, email_bidx, ssn, private_keys, restricted_keys) \
                     SELECT 4, 'ACME', email, email_bidx, ssn, private_keys, restricted_keys FROM patients WHERE id = 2",
                )
                .execute(conn)
                .unwrap();
                let matched: Vec<i64> = patients::table
                    .filter(Patient::by_email(&keys, b"bob@example.com").unwrap())
                    .select(patients::id)
                    .load(conn)
                    .unwrap();
                assert_eq!(matched, vec![2]);

                // Per-row failures: the copied row is reported in place, the rest returned.
                let rows: Vec<cmk::Result<Patient>> =
                    ops::load(conn, &keys, patients::table.order(patients::id)).unwrap();
                assert_eq!(rows.len(), 4);
                assert_eq!(rows[1].as_ref().unwrap(), &people[1]);
                assert!(rows[3].is_err());
                let strict = ops::load_all::<Patient, _, _>(conn, &keys, patients::table.order(patients::id));
                let strict = strict.unwrap_err();
                assert!(matches!(strict, cmk::diesel::Error::Row { position: 3, .. }), "{strict:?}");
                // The message names the operation and says a read failed, not a batch write.
                assert!(strict.to_string().starts_with("load_all: row 3 of the result failed to unseal"), "{strict}");

                // Errors pass through `conn.transaction` both ways.
                let err = conn
                    .transaction::<(), cmk::diesel::Error, _>(|conn| {
                        ops::first::<Patient, _, _>(conn, &keys, patients::table.find(4))?;
                        Ok(())
                    })
                    .unwrap_err();
                assert!(err.cmk().is_some(), "{err:?}");
                let err = conn
                    .transaction::<(), diesel::result::Error, _>(|conn| {
                        keys.scope(|| patients::table.find(4).first::<Patient>(conn))?;
                        Ok(())
                    })
                    .unwrap_err();
                let back = cmk::diesel::Error::from(err);
                assert!(matches!(back, cmk::diesel::Error::Cmk(_)), "{back:?}");
                // Delete, in one transaction with its DATA_DELETE event.
                assert_eq!(
                    ops::delete::<Patient, _, _>(conn, &keys, patients::table.filter(patients::id.eq(4))).unwrap(),
                    1
                );
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_updates_are_last_writer_wins_or_a_conflict() {
                let db = $make();
                db.execute(&schema(db_dialect(&db)));
                let (keys, ctx) = keys().await;
                let original = patient(1, "ann@example.com", Some("111".into()));
                ops::insert(&mut *db.conn.lock().unwrap(), &keys, &original)
                    .unwrap();
                for compare_and_set in [false, true] {
                    let barrier = Arc::new(std::sync::Barrier::new(2));
                    let writers: Vec<_> = ["a", "b"]
                        .into_iter()
                        .map(|who| {
                            let mut conn = db.connect();
                            let (keys, _, barrier) = (keys.clone(), ctx.clone(), barrier.clone());
                            std::thread::spawn(move || {
                                let read: SealedPatient =
                                    patients::table.find(1).first(&mut conn).unwrap();
                                // Both have read before either writes.
                                barrier.wait();
                                let mine = patient(1, &format!("{who}@example.com"), Some(format!("{who}-ssn")));
                                let target = patients::table.find(1);
                                let outcome = if compare_and_set {
                                    ops::update_if_unchanged(&mut conn, &keys, target, &read, &mine)
                                } else {
                                    ops::update(&mut conn, &keys, target, &mine).map(|_| ())
                                };
                                (mine, outcome)
                            })
                        })
                        .collect();
                    let results: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
                    // Every field decrypts, to one writer's values: never a mix, never a field
                    // under a DEK that is not stored.
                    let now: Patient =
                        ops::first(&mut *db.conn.lock().unwrap(), &keys, patients::table.find(1))
                            .unwrap();
                    if compare_and_set {
                        let won: Vec<_> = results.iter().filter(|(_, r)| r.is_ok()).collect();
                        assert_eq!(won.len(), 1, "exactly one compare-and-set wins");
                        let lost = results.iter().find(|(_, r)| r.is_err()).unwrap();
                        let err = lost.1.as_ref().unwrap_err();
                        assert!(matches!(err.cmk(), Some(cmk::Error::Conflict)), "{err:?}");
                        assert_eq!(now, won[0].0);
                    } else {
                        assert!(results.iter().all(|(_, r)| r.is_ok()));
                        assert!(results.iter().any(|(m, _)| *m == now), "{now:?}");
                    }
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_fail_closed_delete_without_its_event_is_rolled_back() {
                let db = $make();
                db.execute(&schema(db_dialect(&db)));
                let sink = Arc::new(cmk::event::MemorySink::new());
                let (cmk, ctx) = common::onboarded_with_sink(
                    Some(sink.clone()),
                    SearchMode::BlindIndex,
                    &[],
                    |cfg, _| {
                        for policy in cfg.policies.values_mut() {
                            policy.audit = cmk::AuditMode::FailClosed;
                        }
                    },
                )
                .await;
                let keys = cmk.keys_for(&ctx, Patient::CLASSES).await.unwrap();
                let mut conn = db.conn.lock().unwrap();
                let conn = &mut *conn;
                let rows = [patient(1, "a@example.com", None), patient(2, "b@example.com", None)];
                ops::insert_many(conn, &keys, &rows).unwrap();
                let count = |conn: &mut _| patients::table.count().get_result::<i64>(conn).unwrap();

                sink.set_failing(true);
                let err = ops::delete::<Patient, _, _>(conn, &keys, patients::table.find(1))
                    .unwrap_err();
                assert!(matches!(err.cmk(), Some(cmk::Error::AuditFailClosed(_))), "{err:?}");
                assert_eq!(count(conn), 2, "the delete was rolled back");

                sink.set_failing(false);
                assert_eq!(
                    ops::delete::<Patient, _, _>(conn, &keys, patients::table.find(1)).unwrap(),
                    1
                );
                assert_eq!(count(conn), 1);
                let deletes: Vec<_> = sink
                    .events()
                    .into_iter()
                    .filter(|e| e.name.as_str() == "DATA_DELETE")
                    .collect();
                assert_eq!(deletes.len(), 1);
                assert_eq!(deletes[0].table.as_deref(), Some("patients"));
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn one_pool_serves_cmk_tables_and_the_application_from_spawn_blocking() {
                use diesel::r2d2::{ConnectionManager, Pool};
                let db = $make().with_cmk_tables();
                db.execute(&schema(db_dialect(&db)));
                let pool = Arc::new(
                    Pool::builder()
                        .max_size(3)
                        .build(ConnectionManager::<$conn>::new(db.url()))
                        .unwrap(),
                );
                let kms = Arc::new(cmk::kms::local::LocalKms::in_memory());
                let cmk = cmk::Cmk::builder()
                    .kms(kms.clone())
                    .registry(Arc::new(cmk::diesel::DieselRegistry::new(pool.clone())))
                    .configs(Arc::new(cmk::diesel::DieselConfigStore::new(
                        pool.clone(),
                        cmk::tenant::ConfigVerifier::new(cmk::tenant::OperatorKey::new(
                            cmk::secret::SecretKey::random().unwrap(),
                        )),
                    )))
                    .build()
                    .unwrap();
                let ctx = RequestContext::new(cmk::TenantId::new("acme").unwrap());
                let key = kms.create_key("acme").unwrap();
                let mut cfg = cmk::TenantConfig::new(ctx.tenant().clone(), key);
                for p in cfg.policies.values_mut() {
                    p.search = SearchMode::BlindIndex;
                }
                cmk.configure_tenant(&ctx, &cfg).await.unwrap();
                cmk.onboard(&ctx).await.unwrap();

                // The request: keys async, then Diesel and sealing on the blocking pool, and the
                // plaintext model loaded inside a key scope on that thread.
                let keys = cmk.keys_for(&ctx, Patient::CLASSES).await.unwrap();
                let people = vec![patient(1, "ann@example.com", None), patient(2, "bob@example.com", Some("2".into()))];
                let (p, k, _, rows) = (pool.clone(), keys.clone(), ctx.clone(), people.clone());
                let loaded: Vec<Patient> = tokio::task::spawn_blocking(move || {
                    let mut conn = p.get().unwrap();
                    ops::insert_many(&mut *conn, &k, &rows).unwrap();
                    k.scope(|| patients::table.order(patients::id).load::<Patient>(&mut *conn))
                })
                .await
                .unwrap()
                .unwrap();
                assert_eq!(loaded, people);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_dump_of_the_database_holds_no_plaintext() {
                let db = $make();
                db.execute(&schema(db_dialect(&db)));
                let (keys, _) = keys().await;
                let canaries: Vec<String> =
                    (0..20).map(|i| format!("Canary-{i:02}-Zebra-Quokka")).collect();
                let rows: Vec<Patient> = canaries
                    .iter()
                    .enumerate()
                    .map(|(i, c)| patient(i as i64 + 1, &format!("{c}@example.com"), Some(c.clone())))
                    .collect();
                let planted = "Planted-Plaintext-Control-7";
                {
                    let mut conn = db.conn.lock().unwrap();
                    ops::insert_many(&mut *conn, &keys, &rows).unwrap();
                    diesel::insert_into(planted::table)
                        .values((planted::id.eq(1), planted::note.eq(planted)))
                        .execute(&mut *conn)
                        .unwrap();
                    let mut one = rows[0].clone();
                    one.ssn = Some("Canary-updated-Walrus".into());
                    ops::update(&mut *conn, &keys, patients::table.find(1), &one).unwrap();
                }
                let dump = db.dump();
                // The scan must be able to fail: the planted plaintext is found.
                assert!(find_in_dump(&dump, planted).is_some(), "the planted control is in the dump");
                for c in canaries.iter().map(String::as_str).chain(["Canary-updated-Walrus", "Zebra-Quokka"]) {
                    assert_eq!(find_in_dump(&dump, c), None, "canary {c} leaked");
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn update_with_is_a_read_modify_write_that_loses_no_concurrent_update() {
                let db = $make();
                db.execute(&schema(db_dialect(&db)));
                let (keys, _) = keys().await;
                {
                    let mut conn = db.conn.lock().unwrap();
                    ops::insert(&mut *conn, &keys, &patient(1, "ann@example.com", Some("0".into()))).unwrap();
                    let before: SealedPatient = patients::table.find(1).first(&mut *conn).unwrap();
                    let written = ops::update_with(&mut *conn, &keys, patients::table.find(1), |p: &mut Patient| {
                        p.email = "ann@new.example".into();
                    })
                    .unwrap();
                    assert_eq!(written.email, "ann@new.example");
                    let after: SealedPatient = patients::table.find(1).first(&mut *conn).unwrap();
                    assert_ne!(after.private_keys, before.private_keys, "fresh DEKs");
                    // The class that did not change keeps its ciphertext and DEK, its key
                    // column re-wrapped into this write (the row's write id).
                    assert_eq!(after.ssn, before.ssn);
                    assert_ne!(after.restricted_keys, before.restricted_keys);
                    let reread: Patient = ops::first(&mut *conn, &keys, patients::table.find(1)).unwrap();
                    assert_eq!(reread, written);
                    // A change of no classified value keeps every class as it was.
                    ops::update_with(&mut *conn, &keys, patients::table.find(1), |p: &mut Patient| {
                        p.email = "ann@new.example".into();
                    })
                    .unwrap();
                    let same: SealedPatient = patients::table.find(1).first(&mut *conn).unwrap();
                    assert_eq!(Patient::key_columns(&same), Patient::key_columns(&after));
                    // A change of the bound id is refused: the row would be unreadable.
                    let moved = ops::update_with(&mut *conn, &keys, patients::table.find(1), |p: &mut Patient| {
                        p.id = 7;
                    });
                    assert!(matches!(moved.map_err(cmk::Error::from), Err(cmk::Error::InvalidInput(_))));
                    let still: Patient = ops::first(&mut *conn, &keys, patients::table.find(1)).unwrap();
                    assert_eq!(still, written);
                    // No row: Diesel's NotFound, nothing written.
                    let missing = ops::update_with(&mut *conn, &keys, patients::table.find(99), |_: &mut Patient| {});
                    assert!(matches!(missing, Err(cmk::diesel::Error::Diesel(diesel::result::Error::NotFound))));
                }
                // Two writers each add 1 to the counter ten times, on their own connections:
                // every increment survives (a conflict is the caller's to retry, and counted).
                let writers: Vec<_> = (0..2)
                    .map(|_| {
                        let (keys, mut conn) = (keys.clone(), db.connect());
                        std::thread::spawn(move || {
                            let mut conflicts = 0;
                            for _ in 0..10 {
                                loop {
                                    let bump = |p: &mut Patient| {
                                        let n: u32 = p.ssn.as_deref().unwrap().parse().unwrap();
                                        p.ssn = Some((n + 1).to_string());
                                    };
                                    match ops::update_with(&mut conn, &keys, patients::table.find(1), bump) {
                                        Ok(_) => break,
                                        Err(e) if matches!(e.cmk(), Some(cmk::Error::Conflict)) => conflicts += 1,
                                        Err(e) => panic!("{e}"),
                                    }
                                }
                            }
                            conflicts
                        })
                    })
                    .collect();
                for w in writers {
                    w.join().unwrap();
                }
                let mut conn = db.conn.lock().unwrap();
                let last: Patient = ops::first(&mut *conn, &keys, patients::table.find(1)).unwrap();
                assert_eq!(last.ssn.as_deref(), Some("20"));
            }

            /// A writer copies one row's blind index onto another: the lookup must not return
            /// the other row as a match (issue 15 §1.2).
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_blind_index_copied_onto_another_row_is_never_a_match() {
                let db = $make();
                db.execute(&schema(db_dialect(&db)));
                let sink = Arc::new(cmk::event::MemorySink::new());
                let (cmk, ctx) =
                    common::onboarded_with_sink(Some(sink.clone()), SearchMode::BlindIndex, &[], |_, _| {}).await;
                let keys = cmk.keys_for(&ctx, Patient::CLASSES).await.unwrap();
                let mut conn = db.conn.lock().unwrap();
                let conn = &mut *conn;
                let (ann, bob) = (patient(1, "ann@example.com", None), patient(2, "bob@example.com", None));
                ops::insert_many(conn, &keys, &[ann.clone(), bob.clone()]).unwrap();
                let by_ann = || patients::table.filter(Patient::by_email(&keys, b"ann@example.com").unwrap());
                // Positive control: before the copy, the lookup finds Ann alone.
                let found: Vec<cmk::Result<Patient>> = ops::load(conn, &keys, by_ann().order(patients::id)).unwrap();
                assert_eq!(found.len(), 1);
                assert_eq!(found[0].as_ref().unwrap(), &ann);

                // The writer's edit, as raw SQL would do it: Ann's index value onto Bob's row.
                let ann_row: SealedPatient = patients::table.find(1).first(conn).unwrap();
                diesel::update(patients::table.find(2))
                    .set(patients::email_bidx.eq(ann_row.email_bidx.clone()))
                    .execute(conn)
                    .unwrap();
                let events_before = sink.events().len();

                // The database now matches both rows; Bob's is reported, never returned.
                let found: Vec<cmk::Result<Patient>> = ops::load(conn, &keys, by_ann().order(patients::id)).unwrap();
                assert_eq!(found.len(), 2);
                assert_eq!(found[0].as_ref().unwrap(), &ann);
                let err = found[1].as_ref().unwrap_err();
                assert!(matches!(err, cmk::Error::IndexMismatch { column } if column == "email"), "{err:?}");
                assert!(err.is_tampered());
                assert!(!err.to_string().contains("bob"), "{err}");
                let first = ops::first::<Patient, _, _>(conn, &keys, by_ann().order(patients::id.desc()));
                let first = first.unwrap_err();
                assert!(matches!(first.cmk(), Some(cmk::Error::IndexMismatch { .. })), "{first:?}");
                // Plain Diesel in a key scope: the same.
                let scoped = keys.scope(|| by_ann().order(patients::id).load::<Patient>(conn));
                assert!(scoped.is_err(), "{scoped:?}");
                // Each refusal is a failed DATA_DECRYPT event naming the kind, not the value.
                let failures: Vec<_> = sink.events()[events_before..]
                    .iter()
                    .filter(|e| e.name == cmk::event::EventName::DataDecrypt)
                    .filter(|e| matches!(&e.outcome, cmk::event::Outcome::Failure { error } if error == "index_mismatch"))
                    .map(|e| e.record_id.clone())
                    .collect();
                assert_eq!(failures, vec![Some("2".to_string()); 3], "{:?}", sink.events());
                // Bob's own row still reads by id (its value and key columns are genuine)
                // only once the index is restored; until then every read of it is refused.
                assert!(ops::first::<Patient, _, _>(conn, &keys, patients::table.find(2)).is_err());
                let bob_index = Patient::email_blind_index(&keys, b"bob@example.com").unwrap().remove(0);
                diesel::update(patients::table.find(2))
                    .set(patients::email_bidx.eq(bob_index))
                    .execute(conn)
                    .unwrap();
                assert_eq!(ops::first::<Patient, _, _>(conn, &keys, patients::table.find(2)).unwrap(), bob);
            }

            /// A writer restores one class of a row (its key column and fields) from a
            /// copy taken before a per-class update: the stitched row never reads (issue 15
            /// §1.1); the whole old row, all columns restored, still does (documented).
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_class_restored_from_an_earlier_write_never_reads() {
                let db = $make();
                db.execute(&schema(db_dialect(&db)));
                let (keys, _) = keys().await;
                let mut conn = db.conn.lock().unwrap();
                let conn = &mut *conn;
                let ann = patient(1, "ann@example.com", Some("100".into()));
                ops::insert(conn, &keys, &ann).unwrap();
                let old: SealedPatient = patients::table.find(1).first(conn).unwrap();
                let updated = ops::update_with(conn, &keys, patients::table.find(1), |p: &mut Patient| {
                    p.ssn = Some("200".into());
                })
                .unwrap();
                let new: SealedPatient = patients::table.find(1).first(conn).unwrap();
                assert_eq!(new.email, old.email, "the email class kept its ciphertext");
                // The writer's edits, as raw SQL would make them.
                let put = |conn: &mut $conn, row: &SealedPatient| {
                    diesel::update(patients::table.find(1)).set(row.clone()).execute(conn).unwrap();
                };
                let mut email_old = new.clone();
                (email_old.email, email_old.email_bidx, email_old.private_keys) =
                    (old.email.clone(), old.email_bidx.clone(), old.private_keys.clone());
                let mut ssn_old = new.clone();
                (ssn_old.ssn, ssn_old.restricted_keys) = (old.ssn.clone(), old.restricted_keys.clone());
                for (what, stitched) in [("email", email_old), ("ssn", ssn_old)] {
                    put(conn, &stitched);
                    let read = ops::first::<Patient, _, _>(conn, &keys, patients::table.find(1));
                    assert!(
                        matches!(read.as_ref().map_err(|e| e.cmk()), Err(Some(cmk::Error::Tampered))),
                        "{what} class of the old write: {read:?}"
                    );
                }
                // Positive controls: each whole write reads.
                put(conn, &new);
                assert_eq!(ops::first::<Patient, _, _>(conn, &keys, patients::table.find(1)).unwrap(), updated);
                put(conn, &old);
                assert_eq!(ops::first::<Patient, _, _>(conn, &keys, patients::table.find(1)).unwrap(), ann);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_duplicate_blind_index_is_a_unique_violation_that_names_no_value() {
                let db = $make();
                db.execute(&schema(db_dialect(&db)));
                db.execute("CREATE UNIQUE INDEX patients_email_unique ON patients (tenant_id, email_bidx)");
                let (keys, _) = keys().await;
                let mut conn = db.conn.lock().unwrap();
                let conn = &mut *conn;
                ops::insert(conn, &keys, &patient(1, "ann@example.com", None)).unwrap();
                let raw = ops::insert(conn, &keys, &patient(2, "Ann@Example.com", None)).unwrap_err();
                let index = Patient::email_blind_index(&keys, b"ann@example.com").unwrap();
                let hex: String = index[0].as_bytes().iter().map(|b| format!("{b:02x}")).collect();
                let details = match &raw {
                    cmk::diesel::Error::Diesel(diesel::result::Error::DatabaseError(_, info)) => {
                        info.details().unwrap_or_default().to_string()
                    }
                    other => panic!("expected a database error, got {other:?}"),
                };
                let raw_text = format!("{raw} {raw:?} {details}");
                // PostgreSQL's report (its details) names the duplicate index value: why the
                // folded error keeps none of it.
                if $feature == "postgres" {
                    assert!(raw_text.contains(&hex[..16]), "{raw_text}");
                }
                let folded = cmk::Error::from(raw);
                assert!(matches!(folded, cmk::Error::UniqueViolation { .. }), "{folded:?}");
                assert_eq!(folded.http_status(), 409);
                let text = format!("{folded} {folded:?}");
                assert!(!text.contains(&hex[..16]), "{text}");
            }
        }
    };
}

fn db_dialect<C: cmk::diesel::StoreConnection>(
    _: &common::db::TestDb<C>,
) -> cmk::diesel::ddl::Dialect {
    C::DIALECT
}

backend_tests!(
    sqlite,
    "diesel",
    common::db::sqlite,
    diesel::SqliteConnection
);
backend_tests!(
    postgres,
    "postgres",
    common::db::postgres,
    diesel::PgConnection
);
backend_tests!(mysql, "mysql", common::db::mysql, diesel::MysqlConnection);
