//! Concurrency on a real database (issue 15 §3): 8 writers and readers over 100 tenants on
//! PostgreSQL, mixing inserts, per-class updates (two writers updating different classes of
//! one row at once), selects, KEK roll-overs and rekey jobs, for a bounded number of
//! operations. Every read returns what was last committed for that row (never an older
//! value, never a mix of writes), the KMS is called within the lease bound, and the run ends
//! within its time bound.

#![allow(missing_docs)] // diesel::table! generates public modules

mod common;

#[cfg(feature = "postgres")]
mod on_postgres {
    use std::collections::HashMap;
    use std::ops::ControlFlow;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use cmk::diesel::jobs::{self, Chunks};
    use cmk::diesel::ops;
    use cmk::kms::local::LocalKms;
    use cmk::kms::{KeyRef, Kms, KmsContext, KmsError};
    use cmk::registry::MemoryRegistry;
    use cmk::secret::{SecretBytes, SecretKey};
    use cmk::tenant::{MemoryConfigStore, OperatorKey};
    use cmk::{Cmk, Encrypted, RequestContext, TenantConfig, TenantId};
    use diesel::prelude::*;

    diesel::table! {
        use diesel::sql_types::*;
        use cmk::diesel::sql_types::*;
        accounts (id) {
            id -> BigInt,
            tenant_id -> Text,
            email -> CiphertextSql,
            salary -> CiphertextSql,
            private_keys -> Nullable<KeyColumnSql>,
            restricted_keys -> Nullable<KeyColumnSql>,
        }
    }

    #[derive(Debug, Clone, PartialEq, Encrypted)]
    #[diesel(table_name = accounts)]
    #[cmk(tenant = tenant_id, id = id, ids = "app")]
    pub(crate) struct Account {
        id: i64,
        tenant_id: String,
        #[cmk(class = "private")]
        email: String,
        #[cmk(class = "restricted")]
        salary: String,
    }

    const TENANTS: usize = 100;
    const WORKERS: usize = 8;
    const OPS_PER_WORKER: usize = 300;
    /// Rows every worker owns a field of, so that updates of one row's two classes meet.
    const HOT: [i64; 4] = [0, 1, 100, 101];
    const ROWS_PER_TENANT: i64 = 2;
    const TIME_BOUND: Duration = Duration::from_secs(300);

    /// The local KMS, counting calls.
    #[derive(Debug)]
    struct CountingKms {
        inner: LocalKms,
        wraps: AtomicUsize,
        unwraps: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Kms for CountingKms {
        fn provider(&self) -> &str {
            "local"
        }
        async fn wrap(&self, k: &KeyRef, p: &[u8], c: &KmsContext) -> Result<Vec<u8>, KmsError> {
            self.wraps.fetch_add(1, Ordering::SeqCst);
            self.inner.wrap(k, p, c).await
        }
        async fn unwrap(
            &self,
            k: &KeyRef,
            w: &[u8],
            c: &KmsContext,
        ) -> Result<SecretBytes, KmsError> {
            self.unwraps.fetch_add(1, Ordering::SeqCst);
            self.inner.unwrap(k, w, c).await
        }
    }

    /// What the test knows of one stored row: each field has one owner (the only worker that
    /// updates it) and a counter of its committed writes; its value names the counter.
    #[derive(Debug, Clone)]
    struct Known {
        tenant: usize,
        email: u64,
        salary: u64,
    }

    fn email(id: i64, n: u64) -> String {
        format!("row{id}-email{n}@example.com")
    }
    fn salary(id: i64, n: u64) -> String {
        format!("row{id}-salary{n}")
    }
    fn counter(value: &str, marker: &str) -> u64 {
        let digits: String = value
            .split(marker)
            .nth(1)
            .unwrap_or_default()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap()
    }
    fn tenant_ctx(t: usize) -> RequestContext {
        RequestContext::new(TenantId::new(format!("t{t:03}")).unwrap())
    }
    /// Which worker owns a field of row `id` (email: 0, salary: 1): different workers, so
    /// the two classes of one row are updated concurrently. Each hot row's fields belong to
    /// two workers of their own.
    fn owner(id: i64, field: usize) -> usize {
        match HOT.iter().position(|&h| h == id) {
            Some(h) => 2 * h + field,
            None => (id as usize + field * 3) % WORKERS,
        }
    }

    /// A small generator for the workers' choices (not keys).
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    #[derive(Default, Debug)]
    struct Tally {
        inserts: AtomicUsize,
        updates: AtomicUsize,
        conflicts: AtomicUsize,
        reads: AtomicUsize,
        roll_overs: AtomicUsize,
        rekeyed: AtomicUsize,
    }

    struct Shared {
        cmk: Cmk,
        rt: tokio::runtime::Handle,
        known: Mutex<HashMap<i64, Known>>,
        tally: Tally,
    }

    impl Shared {
        fn keys(&self, t: usize) -> Arc<cmk::TenantKeys> {
            self.rt
                .block_on(self.cmk.keys_for(&tenant_ctx(t), Account::CLASSES))
                .unwrap()
        }

        fn snapshot(&self, id: i64) -> Known {
            self.known.lock().unwrap()[&id].clone()
        }
    }

    /// One worker: `OPS_PER_WORKER` operations chosen at random.
    fn work(shared: &Shared, me: usize, mut conn: PgConnection) {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (me as u64 + 1).wrapping_mul(0x2545_f491));
        let mut next_insert = 0i64;
        for _ in 0..OPS_PER_WORKER {
            let ids: Vec<i64> = shared.known.lock().unwrap().keys().copied().collect();
            match rng.below(100) {
                // Insert a row for a random tenant.
                0..15 => {
                    next_insert += 1;
                    let id = 1_000_000 + (me as i64) * 10_000 + next_insert;
                    let t = rng.below(TENANTS);
                    let keys = shared.keys(t);
                    let row = Account {
                        id,
                        tenant_id: format!("t{t:03}"),
                        email: email(id, 0),
                        salary: salary(id, 0),
                    };
                    ops::insert(&mut conn, &keys, &row).unwrap();
                    let known = Known {
                        tenant: t,
                        email: 0,
                        salary: 0,
                    };
                    shared.known.lock().unwrap().insert(id, known);
                    shared.tally.inserts.fetch_add(1, Ordering::Relaxed);
                }
                // Update one field this worker owns, on a row of any tenant.
                15..50 => {
                    // Half the updates go to the hot rows, where two workers update the two
                    // classes of one row at the same time.
                    let pool: &[i64] = if rng.below(2) == 0 { &HOT } else { &ids };
                    let mine: Vec<(i64, usize)> = pool
                        .iter()
                        .flat_map(|&id| (0..2).map(move |f| (id, f)))
                        .filter(|&(id, f)| owner(id, f) == me)
                        .collect();
                    let Some(&(id, field)) = mine.get(rng.below(mine.len().max(1))) else {
                        continue;
                    };
                    let before = shared.snapshot(id);
                    let keys = shared.keys(before.tenant);
                    let n = if field == 0 {
                        before.email
                    } else {
                        before.salary
                    } + 1;
                    let written = ops::update_with(
                        &mut conn,
                        &keys,
                        accounts::table.find(id),
                        |a: &mut Account| {
                            if field == 0 {
                                a.email = email(id, n);
                            } else {
                                a.salary = salary(id, n);
                            }
                        },
                    );
                    match written {
                        Ok(_) => {
                            let mut known = shared.known.lock().unwrap();
                            let k = known.get_mut(&id).unwrap();
                            if field == 0 {
                                k.email = n;
                            } else {
                                k.salary = n;
                            }
                            shared.tally.updates.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if matches!(e.cmk(), Some(cmk::Error::Conflict)) => {
                            shared.tally.conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("update of row {id}: {e}"),
                    }
                }
                // Roll a random tenant's class over to a new KEK version.
                50..53 => {
                    let t = rng.below(TENANTS);
                    let class = ["private", "restricted"][rng.below(2)];
                    shared
                        .rt
                        .block_on(shared.cmk.roll_over_kek(&tenant_ctx(t), class))
                        .unwrap();
                    shared.tally.roll_overs.fetch_add(1, Ordering::Relaxed);
                }
                // Rekey a random tenant's rows to their active KEKs, in chunks.
                53..56 => {
                    let t = rng.below(TENANTS);
                    let tenant = format!("t{t:03}");
                    let keys = shared.keys(t);
                    let done = jobs::rekey_table::<Account, _, _, _, _>(
                        &mut conn,
                        &keys,
                        Chunks {
                            size: 2,
                            resume_after: None,
                        },
                        |after: Option<&i64>, limit| {
                            accounts::table
                                .filter(accounts::tenant_id.eq(tenant.clone()))
                                .filter(accounts::id.gt(after.copied().unwrap_or(i64::MIN)))
                                .order(accounts::id)
                                .limit(limit)
                                .select(SealedAccount::as_select())
                        },
                        |r| r.id,
                        |id| accounts::table.find(*id),
                        |_| ControlFlow::Continue(()),
                    )
                    .unwrap();
                    assert!(done.failed.is_empty(), "{:?}", done.failed);
                    shared
                        .tally
                        .rekeyed
                        .fetch_add(done.rewritten, Ordering::Relaxed);
                }
                // Read a random row: what was committed before the read began, or newer.
                _ => {
                    let Some(&id) = ids.get(rng.below(ids.len().max(1))) else {
                        continue;
                    };
                    let before = shared.snapshot(id);
                    let keys = shared.keys(before.tenant);
                    let read: Account =
                        ops::first(&mut conn, &keys, accounts::table.find(id)).unwrap();
                    let after = shared.snapshot(id);
                    assert_eq!(read.tenant_id, format!("t{:03}", before.tenant));
                    let (e, s) = (
                        counter(&read.email, "email"),
                        counter(&read.salary, "salary"),
                    );
                    assert_eq!(read.email, email(id, e), "row {id}");
                    assert_eq!(read.salary, salary(id, s), "row {id}");
                    // Never older than the last commit before the read; at most the one
                    // write of each field in flight during it.
                    assert!(
                        (before.email..=after.email + 1).contains(&e),
                        "row {id}: email {e} read, {} to {} committed",
                        before.email,
                        after.email
                    );
                    assert!(
                        (before.salary..=after.salary + 1).contains(&s),
                        "row {id}: salary {s} read, {} to {} committed",
                        before.salary,
                        after.salary
                    );
                    shared.tally.reads.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn eight_workers_over_a_hundred_tenants_read_what_was_committed() {
        let db = crate::common::db::postgres();
        db.execute(
            "CREATE TABLE accounts (id BIGINT PRIMARY KEY, tenant_id TEXT COLLATE \"C\" NOT NULL, \
             email BYTEA NOT NULL, salary BYTEA NOT NULL, private_keys BYTEA, restricted_keys BYTEA)",
        );
        let kms = Arc::new(CountingKms {
            inner: LocalKms::in_memory(),
            wraps: AtomicUsize::new(0),
            unwraps: AtomicUsize::new(0),
        });
        let sink = Arc::new(cmk::event::MemorySink::new());
        let cmk = Cmk::builder()
            .sink(sink.clone())
            .kms(kms.clone())
            .registry(Arc::new(MemoryRegistry::new()))
            .configs(Arc::new(MemoryConfigStore::new(OperatorKey::new(
                SecretKey::random().unwrap(),
            ))))
            .build()
            .unwrap();
        let mut known = HashMap::new();
        {
            let mut conn = db.connect();
            for t in 0..TENANTS {
                let ctx = tenant_ctx(t);
                let key = kms.inner.create_key(&format!("t{t:03}")).unwrap();
                cmk.configure_tenant(&ctx, &TenantConfig::new(ctx.tenant().clone(), key))
                    .await
                    .unwrap();
                cmk.onboard(&ctx).await.unwrap();
                let keys = cmk.keys_for(&ctx, Account::CLASSES).await.unwrap();
                let rows: Vec<Account> = (0..ROWS_PER_TENANT)
                    .map(|j| {
                        let id = t as i64 * 100 + j;
                        known.insert(
                            id,
                            Known {
                                tenant: t,
                                email: 0,
                                salary: 0,
                            },
                        );
                        Account {
                            id,
                            tenant_id: format!("t{t:03}"),
                            email: email(id, 0),
                            salary: salary(id, 0),
                        }
                    })
                    .collect();
                ops::insert_many(&mut conn, &keys, &rows).unwrap();
            }
        }
        // Onboarding proved each tenant's keys, and its first handle leased its two KEKs.
        kms.unwraps.store(0, Ordering::SeqCst);
        kms.wraps.store(0, Ordering::SeqCst);

        let shared = Arc::new(Shared {
            cmk,
            rt: tokio::runtime::Handle::current(),
            known: Mutex::new(known),
            tally: Tally::default(),
        });
        let workers: Vec<_> = (0..WORKERS)
            .map(|me| {
                let (shared, conn) = (shared.clone(), db.connect());
                tokio::task::spawn_blocking(move || work(&shared, me, conn))
            })
            .collect();
        let all = async {
            for w in workers {
                w.await.unwrap();
            }
        };
        tokio::time::timeout(TIME_BOUND, all)
            .await
            .expect("the run ends within its bound");

        let t = &shared.tally;
        let (roll_overs, updates) = (
            t.roll_overs.load(Ordering::SeqCst),
            t.updates.load(Ordering::SeqCst),
        );
        println!(
            "{} inserts, {updates} updates ({} conflicts), {} reads, {roll_overs} roll-overs, \
             {} rows rekeyed; KMS: {} wraps, {} unwraps",
            t.inserts.load(Ordering::SeqCst),
            t.conflicts.load(Ordering::SeqCst),
            t.reads.load(Ordering::SeqCst),
            t.rekeyed.load(Ordering::SeqCst),
            kms.wraps.load(Ordering::SeqCst),
            kms.unwraps.load(Ordering::SeqCst),
        );
        assert!(updates > 100 && t.reads.load(Ordering::SeqCst) > 200);
        // Every read and write was an event, and none failed. A sealed update that lost its
        // compare-and-set to a concurrent writer was sealed again: its DATA_UPDATE events
        // outnumber the updates, which shows that updates of one row did meet.
        let events = sink.take();
        let sealed_updates = events
            .iter()
            .filter(|e| e.name == cmk::event::EventName::DataUpdate)
            .count();
        println!("{} update seals for {updates} updates", sealed_updates);
        assert!(sealed_updates > updates, "no two updates of one row met");
        assert!(events.len() >= updates + t.reads.load(Ordering::SeqCst));
        assert!(
            events
                .iter()
                .all(|e| e.outcome == cmk::event::Outcome::Success),
            "a failed event"
        );
        // The lease bound: a KMS call per new KEK version (its wrap when rolled over, one
        // unwrap when first used in this process); none per row, read or update.
        assert_eq!(kms.wraps.load(Ordering::SeqCst), roll_overs);
        assert!(kms.unwraps.load(Ordering::SeqCst) <= roll_overs);

        // At rest: every row reads exactly its last committed values.
        let known = shared.known.lock().unwrap().clone();
        let mut conn = db.connect();
        for (id, k) in &known {
            let keys = shared
                .cmk
                .keys_for(&tenant_ctx(k.tenant), Account::CLASSES)
                .await
                .unwrap();
            let read: Account = ops::first(&mut conn, &keys, accounts::table.find(*id)).unwrap();
            assert_eq!(
                (read.email, read.salary),
                (email(*id, k.email), salary(*id, k.salary)),
                "row {id}"
            );
        }
        assert!(known.len() > TENANTS * ROWS_PER_TENANT as usize);
    }
}
