//! Jobs over a table through Diesel, on every enabled backend: KEK retirement re-wraps key
//! columns in resumable chunks (a run stopped after one chunk leaves every row readable; the
//! resumed run skips the completed chunk; a third run rewrites nothing), and the plaintext
//! backfill seals legacy rows between the expand and contract steps.

#![allow(missing_docs)] // diesel::table! generates public modules

mod common;

use std::ops::ControlFlow;
use std::time::Duration;

use cmk::diesel::jobs::{self, Chunks};
use cmk::diesel::ops;
use cmk::{Encrypted, LeasePolicy, SearchMode};
use diesel::prelude::*;

diesel::table! {
    use diesel::sql_types::*;
    use cmk::diesel::sql_types::*;
    accounts (id) {
        id -> BigInt,
        tenant_id -> Text,
        email -> CiphertextSql,
        ssn -> CiphertextSql,
        private_keys -> Nullable<KeyColumnSql>,
        restricted_keys -> Nullable<KeyColumnSql>,
    }
}

#[derive(Debug, Clone, PartialEq, Encrypted)]
#[diesel(table_name = accounts)]
#[cmk(tenant = tenant_id, id = id, ids = "app")]
pub struct Account {
    id: i64,
    tenant_id: String,
    #[cmk(class = "private")]
    email: String,
    #[cmk(class = "restricted")]
    ssn: String,
}

// Mid-migration: `email_plain` is the old plaintext column; `email` and `private_keys` were
// added (nullable in SQL) by the expand step. Diesel's view declares `email` non-null: only
// rows with key columns are ever loaded as sealed rows.
diesel::table! {
    use diesel::sql_types::*;
    use cmk::diesel::sql_types::*;
    members (id) {
        id -> BigInt,
        tenant_id -> Text,
        email_plain -> Nullable<Text>,
        email -> CiphertextSql,
        private_keys -> Nullable<KeyColumnSql>,
    }
}

#[derive(Debug, Clone, PartialEq, Encrypted)]
#[diesel(table_name = members)]
#[cmk(tenant = tenant_id, id = id, ids = "app")]
pub struct Member {
    id: i64,
    tenant_id: String,
    #[cmk(class = "private")]
    email: String,
}

fn schema(dialect: cmk::diesel::ddl::Dialect) -> String {
    use cmk::diesel::ddl::Dialect::*;
    let blob = match dialect {
        Sqlite => "BLOB",
        Postgres => "BYTEA",
        Mysql => "MEDIUMBLOB",
        other => panic!("no column type for {other:?} in this test"),
    };
    format!(
        "CREATE TABLE accounts (id BIGINT PRIMARY KEY, tenant_id VARCHAR(255) NOT NULL, \
           email {blob} NOT NULL, ssn {blob} NOT NULL, private_keys {blob}, restricted_keys {blob}); \
         CREATE TABLE members (id BIGINT PRIMARY KEY, tenant_id VARCHAR(255) NOT NULL, \
           email_plain TEXT, email {blob}, private_keys {blob});"
    )
}

fn dialect<C: cmk::diesel::StoreConnection>(
    _: &common::db::TestDb<C>,
) -> cmk::diesel::ddl::Dialect {
    C::DIALECT
}

macro_rules! backend_tests {
    ($backend:ident, $feature:literal, $make:path) => {
        #[cfg(feature = $feature)]
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kek_retirement_rewraps_in_resumable_idempotent_chunks() {
                let db = $make();
                db.execute(&schema(dialect(&db)));
                // A one-second renewal interval, so retirement's grace passes in the test.
                let (cmk, ctx) = common::onboarded(SearchMode::None, &[], |cfg, _| {
                    for p in cfg.policies.values_mut() {
                        p.lease = LeasePolicy::Leased {
                            hard_expiry_secs: 60,
                            renewal_secs: 1,
                            max_uses: None,
                        };
                    }
                })
                .await;
                let v1 = cmk.keys_for(&ctx, Account::CLASSES).await.unwrap();
                let people: Vec<Account> = (1..=250)
                    .map(|i| Account {
                        id: i,
                        tenant_id: "acme".into(),
                        email: format!("user{i}@example.com"),
                        ssn: format!("{i:09}"),
                    })
                    .collect();
                // A connection of the test's own: no lock held across the awaits below.
                let mut own = db.connect();
                let conn = &mut own;
                ops::insert_many(conn, &v1, &people).unwrap();

                for class in ["private", "restricted"] {
                    assert_eq!(cmk.roll_over_kek(&ctx, class).await.unwrap(), 2);
                }
                tokio::time::sleep(Duration::from_millis(1100)).await;
                for class in ["private", "restricted"] {
                    cmk.retire_kek(&ctx, class, 1).await.unwrap();
                }
                let keys = cmk.keys_for(&ctx, Account::CLASSES).await.unwrap();
                let load = |after: Option<&i64>, limit: i64| {
                    accounts::table
                        .filter(accounts::tenant_id.eq("acme"))
                        .filter(accounts::id.gt(after.copied().unwrap_or(i64::MIN)))
                        .order(accounts::id)
                        .limit(limit)
                        .select(SealedAccount::as_select())
                };
                let chunks = |resume_after| Chunks {
                    size: 100,
                    resume_after,
                };

                // A run that stops after its first chunk (a crash, as far as the table knows).
                let first = jobs::rekey_table::<Account, _, _, _, _>(
                    conn,
                    &keys,
                    chunks(None),
                    load,
                    |r| r.id,
                    |id| accounts::table.find(*id),
                    |_| ControlFlow::Break(()),
                )
                .unwrap();
                assert_eq!(
                    (first.chunks, first.scanned, first.rewritten),
                    (1, 100, 100)
                );
                assert_eq!(first.after, Some(100));
                let all: Vec<Account> =
                    ops::load_all(conn, &keys, accounts::table.order(accounts::id)).unwrap();
                assert_eq!(all, people, "every row reads mid-job");

                // Resumed from the checkpoint: the completed chunk is not read again.
                let mut seen = Vec::new();
                let rest = jobs::rekey_table::<Account, _, _, _, _>(
                    conn,
                    &keys,
                    chunks(first.after),
                    load,
                    |r| r.id,
                    |id| accounts::table.find(*id),
                    |p| {
                        seen.push(p.after);
                        ControlFlow::Continue(())
                    },
                )
                .unwrap();
                assert_eq!((rest.scanned, rest.rewritten), (150, 150));
                assert_eq!(seen, vec![Some(200), Some(250)]);
                assert!(rest.failed.is_empty());

                // Idempotent: a third run rewrites nothing.
                let again = jobs::rekey_table::<Account, _, _, _, _>(
                    conn,
                    &keys,
                    chunks(None),
                    load,
                    |r| r.id,
                    |id| accounts::table.find(*id),
                    |_| ControlFlow::Continue(()),
                )
                .unwrap();
                assert_eq!((again.scanned, again.rewritten), (250, 0));

                // Version 1 destroyed: every row still reads under version 2.
                for class in ["private", "restricted"] {
                    cmk.destroy_kek(&ctx, class, 1).await.unwrap();
                }
                let keys = cmk.keys_for(&ctx, Account::CLASSES).await.unwrap();
                let all: Vec<Account> =
                    ops::load_all(conn, &keys, accounts::table.order(accounts::id)).unwrap();
                assert_eq!(all, people);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn plaintext_backfill_seals_legacy_rows_and_resumes() {
                let db = $make();
                db.execute(&schema(dialect(&db)));
                let (cmk, ctx) = common::onboarded(SearchMode::None, &[], |_, _| {}).await;
                let keys = cmk.keys_for(&ctx, Member::CLASSES).await.unwrap();
                // A connection of the test's own: no lock held across the awaits below.
                let mut own = db.connect();
                let conn = &mut own;
                // Legacy rows: plaintext only (the application wrote them before cmk).
                for i in 1..=30i64 {
                    diesel::insert_into(members::table)
                        .values((
                            members::id.eq(i),
                            members::tenant_id.eq("acme"),
                            members::email_plain.eq(format!("member{i}@example.com")),
                        ))
                        .execute(conn)
                        .unwrap();
                }
                let load = |after: Option<&i64>, limit: i64| {
                    members::table
                        .filter(members::tenant_id.eq("acme"))
                        .filter(members::private_keys.is_null())
                        .filter(members::id.gt(after.copied().unwrap_or(i64::MIN)))
                        .order(members::id)
                        .limit(limit)
                        .select((members::id, members::tenant_id, members::email_plain))
                };
                let to_model = |(id, tenant_id, email): (i64, String, Option<String>)| {
                    (
                        id,
                        Member {
                            id,
                            tenant_id,
                            email: email.unwrap_or_default(),
                        },
                    )
                };
                let first = jobs::encrypt_plaintext::<Member, _, _, _, _, _>(
                    conn,
                    &keys,
                    Chunks {
                        size: 10,
                        resume_after: None,
                    },
                    load,
                    to_model,
                    |id| members::table.find(*id),
                    |_| ControlFlow::Break(()),
                )
                .unwrap();
                assert_eq!(
                    (first.scanned, first.rewritten, first.after),
                    (10, 10, Some(10))
                );
                let sealed: Vec<Member> = ops::load_all(
                    conn,
                    &keys,
                    members::table
                        .filter(members::private_keys.is_not_null())
                        .order(members::id),
                )
                .unwrap();
                assert_eq!(sealed.len(), 10);
                assert_eq!(sealed[0].email, "member1@example.com");

                // Resumed. The application writes row 15 itself (through another connection)
                // after the job read it and before the job writes it: the job's guarded write
                // leaves the application's value in place.
                let app_writes_15 = |legacy: (i64, String, Option<String>)| {
                    if legacy.0 == 15 {
                        let mine = Member {
                            id: 15,
                            tenant_id: "acme".into(),
                            email: "app-wrote@example.com".into(),
                        };
                        let mut other = db.conn.lock().unwrap();
                        ops::update(&mut *other, &keys, members::table.find(15), &mine).unwrap();
                    }
                    to_model(legacy)
                };
                let rest = jobs::encrypt_plaintext::<Member, _, _, _, _, _>(
                    conn,
                    &keys,
                    Chunks {
                        size: 10,
                        resume_after: first.after,
                    },
                    load,
                    app_writes_15,
                    |id| members::table.find(*id),
                    |_| ControlFlow::Continue(()),
                )
                .unwrap();
                assert_eq!(
                    (rest.scanned, rest.rewritten, rest.changed_meanwhile),
                    (20, 19, 1)
                );
                let fifteen: Member = ops::first(conn, &keys, members::table.find(15)).unwrap();
                assert_eq!(fifteen.email, "app-wrote@example.com");
                // Nothing left: the legacy filter finds no rows.
                let again = jobs::encrypt_plaintext::<Member, _, _, _, _, _>(
                    conn,
                    &keys,
                    Chunks {
                        size: 10,
                        resume_after: None,
                    },
                    load,
                    to_model,
                    |id| members::table.find(*id),
                    |_| ControlFlow::Continue(()),
                )
                .unwrap();
                assert_eq!(again.scanned, 0);

                // Contract: the plaintext column goes; every row reads from ciphertext.
                diesel::sql_query("ALTER TABLE members DROP COLUMN email_plain")
                    .execute(conn)
                    .unwrap();
                let all: Vec<Member> =
                    ops::load_all(conn, &keys, members::table.order(members::id)).unwrap();
                assert_eq!(all.len(), 30);
                assert_eq!(all[29].email, "member30@example.com");
                assert_eq!(all[14].email, "app-wrote@example.com");
            }
        }
    };
}

backend_tests!(sqlite, "diesel", common::db::sqlite);
backend_tests!(postgres, "postgres", common::db::postgres);
backend_tests!(mysql, "mysql", common::db::mysql);
