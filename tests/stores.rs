//! cmk's own tables through each ORM adapter (Diesel, SeaORM), on every enabled backend: the
//! key registry (append-only, first writer wins), the tenant configuration (MAC and revision
//! checks), the shipped migration (up, down, up again) and two instances sharing one
//! database.

#![allow(missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use cmk::clock::ManualClock;
use cmk::diesel::{DieselConfigStore, DieselRegistry, StoreConnection};
use cmk::kms::KeyRef;
use cmk::kms::local::LocalKms;
use cmk::registry::{InsertOutcome, KeyRegistry, KeyState, Purpose, RegistryEntry};
use cmk::seaorm::{SeaOrmConfigStore, SeaOrmRegistry};
use cmk::secret::SecretKey;
use cmk::tenant::{ConfigVerifier, OperatorKey, TenantConfigStore};
use cmk::{Cmk, Encrypted, Error, RequestContext, TenantConfig, TenantId};
use common::db::TestDb;
use diesel::connection::SimpleConnection;

const MIN: Duration = Duration::from_secs(60);

/// Which adapter's implementations of the stores a test uses.
#[derive(Debug, Clone, Copy)]
enum Orm {
    Diesel,
    SeaOrm,
}

async fn registry<C: StoreConnection>(db: &TestDb<C>, orm: Orm) -> Arc<dyn KeyRegistry> {
    match orm {
        Orm::Diesel => Arc::new(DieselRegistry::new(db.conn.clone())),
        Orm::SeaOrm => Arc::new(SeaOrmRegistry::new(db.sea().await)),
    }
}

async fn configs<C: StoreConnection>(
    db: &TestDb<C>,
    orm: Orm,
    verifier: ConfigVerifier,
) -> Arc<dyn TenantConfigStore> {
    match orm {
        Orm::Diesel => Arc::new(DieselConfigStore::new(db.conn.clone(), verifier)),
        Orm::SeaOrm => Arc::new(SeaOrmConfigStore::new(db.sea().await, verifier)),
    }
}

fn entry(tenant: &str, version: u32, state: KeyState, wrapped: &[u8]) -> RegistryEntry {
    RegistryEntry {
        tenant: TenantId::new(tenant).unwrap(),
        purpose: Purpose::Kek,
        policy: "private".into(),
        kek_id: cmk::registry::kek_id("private"),
        version,
        cmk_ref: KeyRef::new(format!("local:{tenant}")).unwrap(),
        state,
        wrapped: wrapped.to_vec(),
        created_at: 1_700_000_000,
    }
}

async fn registry_is_append_only_and_the_first_writer_wins<C: StoreConnection>(
    db: TestDb<C>,
    orm: Orm,
) {
    let db = db.with_cmk_tables();
    let registry = registry(&db, orm).await;
    let first = entry("acme", 1, KeyState::Active, b"first");
    assert!(matches!(
        registry.insert_if_absent(first.clone()).await.unwrap(),
        InsertOutcome::Inserted
    ));
    // A second writer with the same uniqueness key loses and gets the winner back.
    match registry
        .insert_if_absent(entry("acme", 1, KeyState::Active, b"second"))
        .await
        .unwrap()
    {
        InsertOutcome::Existing(winner) => assert_eq!(winner, first),
        other => panic!("expected the first writer's entry, got {other:?}"),
    }
    // A state change is a new row; entries come back in insertion order.
    let retired = entry("acme", 1, KeyState::DecryptOnly, b"first");
    registry.insert_if_absent(retired.clone()).await.unwrap();
    let v2 = entry("acme", 2, KeyState::Active, b"v2");
    registry.insert_if_absent(v2.clone()).await.unwrap();
    // A tenant whose id differs only in case is another tenant (binary collation).
    registry
        .insert_if_absent(entry("ACME", 1, KeyState::Active, b"other"))
        .await
        .unwrap();
    let acme = TenantId::new("acme").unwrap();
    assert_eq!(
        registry.entries(&acme).await.unwrap(),
        vec![first.clone(), retired.clone(), v2.clone()]
    );
    // Several at once (a master-key rotation): the one that exists comes back as the winner,
    // the others are written, in order (on PostgreSQL the losing insert must not abort the
    // others' transaction).
    let v3 = entry("acme", 3, KeyState::Active, b"v3");
    let v4 = entry("acme", 4, KeyState::Active, b"v4");
    let outcomes = registry
        .insert_all_if_absent(vec![
            v3.clone(),
            entry("acme", 2, KeyState::Active, b"late"),
            v4.clone(),
        ])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            InsertOutcome::Inserted,
            InsertOutcome::Existing(v2.clone()),
            InsertOutcome::Inserted
        ]
    );
    assert_eq!(
        registry.entries(&acme).await.unwrap(),
        vec![first, retired, v2, v3, v4]
    );
    // Only an operator purge deletes, and only that tenant's rows.
    assert_eq!(registry.purge(&acme).await.unwrap(), 5);
    assert!(registry.entries(&acme).await.unwrap().is_empty());
    let upper = TenantId::new("ACME").unwrap();
    assert_eq!(registry.entries(&upper).await.unwrap().len(), 1);
}
on_every_backend!(
    registry_append_only_diesel,
    registry_is_append_only_and_the_first_writer_wins,
    Orm::Diesel
);
on_every_backend!(
    registry_append_only_seaorm,
    registry_is_append_only_and_the_first_writer_wins,
    Orm::SeaOrm
);

fn operator_key() -> OperatorKey {
    OperatorKey::new(SecretKey::from_bytes([7; 32]))
}

async fn tenant_configuration_refuses_edits_and_rollbacks<C: StoreConnection>(
    db: TestDb<C>,
    orm: Orm,
) {
    let db = db.with_cmk_tables();
    // This instance keeps its revision floors in a local file (issue 15 §1.5).
    let host = tempfile::tempdir().unwrap();
    let floors = host.path().join("config-floors.json");
    let with_floor_file = || {
        ConfigVerifier::new(operator_key())
            .with_floor_file(&floors)
            .unwrap()
    };
    let store = configs(&db, orm, with_floor_file()).await;
    let acme = TenantId::new("acme").unwrap();
    let mut cfg = TenantConfig::new(acme.clone(), KeyRef::new("local:acme").unwrap());
    assert!(matches!(
        store.load(&acme).await,
        Err(Error::UnknownTenant { .. })
    ));
    store.save(&cfg).await.unwrap();
    cfg.revision = 2;
    store.save(&cfg).await.unwrap();
    assert_eq!(store.load(&acme).await.unwrap(), cfg);

    // Saving an old revision again is refused.
    let mut stale = cfg.clone();
    stale.revision = 1;
    assert!(matches!(
        store.save(&stale).await,
        Err(Error::ConfigRollback { .. })
    ));

    // A database writer deletes the newest revision: this process has seen revision 2 and
    // refuses; a fresh process without a floor cannot tell (docs/SECURITY.md), one with a
    // floor from deployment can.
    db.execute("DELETE FROM cmk_tenant_config WHERE revision = 2");
    assert!(matches!(
        store.load(&acme).await,
        Err(Error::ConfigRollback { .. })
    ));
    let fresh = configs(&db, orm, ConfigVerifier::new(operator_key())).await;
    assert_eq!(fresh.load(&acme).await.unwrap().revision, 1);
    // The same instance restarted: its floor file remembers revision 2, without the
    // database's help (before, a restart accepted the rollback as `fresh` does).
    let restarted = configs(&db, orm, with_floor_file()).await;
    assert!(matches!(
        restarted.load(&acme).await,
        Err(Error::ConfigRollback {
            seen: 2,
            offered: 1,
            ..
        })
    ));
    let floored = configs(
        &db,
        orm,
        ConfigVerifier::new(operator_key()).with_floor(&acme, 2),
    )
    .await;
    assert!(matches!(
        floored.load(&acme).await,
        Err(Error::ConfigRollback { .. })
    ));

    // A database writer edits the content (adds a reader, say): the MAC fails.
    db.execute("UPDATE cmk_tenant_config SET content = mac WHERE revision = 1");
    let fresh = configs(&db, orm, ConfigVerifier::new(operator_key())).await;
    assert!(matches!(
        fresh.load(&acme).await,
        Err(Error::ConfigIntegrity { .. })
    ));
}
on_every_backend!(
    config_edits_and_rollbacks_diesel,
    tenant_configuration_refuses_edits_and_rollbacks,
    Orm::Diesel
);
on_every_backend!(
    config_edits_and_rollbacks_seaorm,
    tenant_configuration_refuses_edits_and_rollbacks,
    Orm::SeaOrm
);

async fn the_shipped_migration_reverts_and_redoes<C: StoreConnection>(db: TestDb<C>) {
    let db = db.with_cmk_tables();
    let select = "SELECT COUNT(*) FROM cmk_key_registry";
    db.conn.lock().unwrap().batch_execute(select).unwrap();
    db.conn.lock().unwrap().drop_cmk_tables().unwrap();
    assert!(db.conn.lock().unwrap().batch_execute(select).is_err());
    db.conn.lock().unwrap().create_cmk_tables().unwrap();
    let registry = DieselRegistry::new(db.conn.clone());
    registry
        .insert_if_absent(entry("acme", 1, KeyState::Active, b"x"))
        .await
        .unwrap();
}
on_every_backend!(
    migration_revert_redo,
    the_shipped_migration_reverts_and_redoes
);

/// The SeaORM form of the same migration, as one `MigrationTrait` of an application's
/// `Migrator` (its bookkeeping table is the application's): up, down, up again.
async fn the_seaorm_migration_runs_in_the_applications_migrator<C: StoreConnection>(db: TestDb<C>) {
    use sea_orm_migration::{MigrationTrait, MigratorTrait};
    struct Migrator;
    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![Box::new(cmk::seaorm::migration::CmkTables)]
        }
    }
    let sea = db.sea().await;
    let select = "SELECT COUNT(*) FROM cmk_key_registry";
    Migrator::up(&sea, None).await.unwrap();
    db.conn.lock().unwrap().batch_execute(select).unwrap();
    Migrator::down(&sea, None).await.unwrap();
    assert!(db.conn.lock().unwrap().batch_execute(select).is_err());
    Migrator::up(&sea, None).await.unwrap();
    SeaOrmRegistry::new(sea)
        .insert_if_absent(entry("acme", 1, KeyState::Active, b"x"))
        .await
        .unwrap();
}
on_every_backend!(
    seaorm_migrator,
    the_seaorm_migration_runs_in_the_applications_migrator
);

#[derive(Debug, Clone, PartialEq, Encrypted)]
#[cmk(table = "notes", tenant = tenant_id)]
struct Note {
    tenant_id: String,
    #[cmk(class = "private")]
    body: String,
}

async fn instance<C: StoreConnection>(
    db: &TestDb<C>,
    orm: Orm,
    kms: &Arc<LocalKms>,
    clock: &Arc<ManualClock>,
) -> Cmk {
    Cmk::builder()
        .kms(kms.clone())
        .registry(registry(db, orm).await)
        .configs(configs(db, orm, ConfigVerifier::new(operator_key())).await)
        .clock(clock.clone())
        .build()
        .unwrap()
}

async fn two_instances_see_roll_overs_and_shreds_within_one_renewal<C: StoreConnection>(
    db: TestDb<C>,
    orm: Orm,
) {
    let db = db.with_cmk_tables();
    let kms = Arc::new(LocalKms::in_memory());
    let clock = Arc::new(ManualClock::new());
    let a = instance(&db, orm, &kms, &clock).await;
    let b = instance(&db, orm, &kms, &clock).await;
    let ctx = RequestContext::new(TenantId::new("acme").unwrap());
    let key = kms.create_key("acme").unwrap();
    a.configure_tenant(&ctx, &TenantConfig::new(ctx.tenant().clone(), key))
        .await
        .unwrap();
    a.onboard(&ctx).await.unwrap();

    let note = Note {
        tenant_id: "acme".into(),
        body: "written by a".into(),
    };
    let ka = a.keys_for(&ctx, Note::CLASSES).await.unwrap();
    let kb = b.keys_for(&ctx, Note::CLASSES).await.unwrap();
    let sealed = note.seal(&ka).unwrap();
    assert_eq!(Note::unseal(&sealed, &kb).unwrap(), note);

    // A rolls the KEK over; B writes with the new version after its next renewal.
    let v2 = a.roll_over_kek(&ctx, "private").await.unwrap();
    assert_eq!(v2, 2);
    clock.advance(20 * MIN);
    b.renew_due().await;
    let kb = b.keys_for(&ctx, Note::CLASSES).await.unwrap();
    let from_b = note.seal(&kb).unwrap();
    let prefix = |s: &SealedNote| s.private_keys.as_ref().unwrap()[..10].to_vec();
    assert_ne!(prefix(&from_b), prefix(&sealed), "B seals under version 2");
    let ka = a.keys_for(&ctx, Note::CLASSES).await.unwrap();
    assert_eq!(Note::unseal(&from_b, &ka).unwrap(), note);

    // A shreds the tenant; B's warm lease stops at its next renewal.
    a.shred_tenant(&ctx).await.unwrap();
    assert!(Note::unseal(&sealed, &kb).is_ok());
    clock.advance(20 * MIN);
    assert!(b.renew_due().await.revoked >= 1);
    assert!(Note::unseal(&sealed, &kb).is_err());
    assert!(matches!(
        b.keys_for(&ctx, Note::CLASSES).await,
        Err(Error::TenantShredded { .. })
    ));
}
on_every_backend!(
    two_instances_diesel,
    two_instances_see_roll_overs_and_shreds_within_one_renewal,
    Orm::Diesel
);
on_every_backend!(
    two_instances_seaorm,
    two_instances_see_roll_overs_and_shreds_within_one_renewal,
    Orm::SeaOrm
);

#[test]
fn a_test_database_is_really_separate() {
    // The helper's databases do not share tables: a planted table in one is absent in the
    // next (so the per-test isolation the other tests rely on holds).
    let one = common::db::sqlite();
    one.execute("CREATE TABLE planted (x INTEGER)");
    let two = common::db::sqlite();
    assert!(
        two.conn
            .lock()
            .unwrap()
            .batch_execute("SELECT * FROM planted")
            .is_err()
    );
}
