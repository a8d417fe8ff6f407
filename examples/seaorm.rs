//! The quickstart through SeaORM 2: a SQLite file, the local KMS (a keyring file), cmk's key
//! registry and tenant configuration as tables in the same file (created by cmk's
//! migration), an entity whose `Model` is the sealed row and whose `ActiveModel` refuses
//! anything but cmk's output.
//!
//! `cargo run --example seaorm`

use std::sync::Arc;

use cmk::event::MemorySink;
use cmk::kms::local::LocalKms;
use cmk::seaorm::{SeaOrmConfigStore, SeaOrmRegistry, ops};
use cmk::secret::SecretKey;
use cmk::tenant::{ConfigVerifier, OperatorKey};
use cmk::{
    Actor, Class, Cmk, Encrypted, LeasePolicy, Policy, RequestContext, SearchMode, TenantConfig,
    TenantId,
};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ConnectionTrait, Database, EntityTrait, QueryFilter, QueryOrder,
    Schema,
};

/// The entity: `#[derive(Encrypted)]` generates its `Model` (the sealed row), `Column`,
/// `ActiveModel` and the rest of SeaORM's entity from the plaintext struct.
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
        #[cmk(class = "public")]
        pub name: String,
        #[cmk(class = "private", blind_index(normalize = "casefold"))]
        pub email: String,
        #[cmk(class = "restricted")]
        pub ssn: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    /// The guard: a save through `ActiveModel::insert`/`update`/`save` must carry cmk's
    /// output in every classified column it writes.
    #[async_trait::async_trait]
    impl ActiveModelBehavior for ActiveModel {
        async fn before_save<C: ConnectionTrait>(
            self,
            _db: &C,
            insert: bool,
        ) -> Result<Self, DbErr> {
            cmk::seaorm::guard::<Patient, _>(self, insert)
        }
    }
}

use patient::Patient;

fn hex_prefix(bytes: &[u8]) -> String {
    let shown: String = bytes.iter().take(24).map(|b| format!("{b:02x}")).collect();
    format!("{shown}… ({} bytes)", bytes.len())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. Deployment: a SQLite file, a keyring file, an operator key from deployment secrets.
    let dir = tempfile::tempdir()?;
    let db_path = dir.path().join("seaorm.db");
    let db = Database::connect(format!("sqlite://{}?mode=rwc", db_path.display())).await?;
    // In an application: `cmk::seaorm::migration::CmkTables` in its own `Migrator`.
    cmk::seaorm::migration::create_cmk_tables(&db).await?;
    let backend = db.get_database_backend();
    db.execute(&Schema::new(backend).create_table_from_entity(patient::Entity))
        .await?;
    let kms = Arc::new(LocalKms::open(dir.path().join("cmk.keyring"))?);
    let sink = Arc::new(MemorySink::new());
    let cmk = Cmk::builder()
        .kms(kms.clone())
        .registry(Arc::new(SeaOrmRegistry::new(db.clone())))
        .configs(Arc::new(SeaOrmConfigStore::new(
            db.clone(),
            ConfigVerifier::new(OperatorKey::new(SecretKey::random()?)),
        )))
        .sink(sink.clone())
        .build()?;
    println!("database: {}", db_path.display());

    // 2. Two tenants, each with its own master key, onboarded explicitly.
    for tenant in ["acme", "globex"] {
        let master = kms.create_key(tenant)?;
        let admin = RequestContext::new(TenantId::new(tenant)?)
            .with_actor(Actor::Service("onboarding".into()));
        let mut config = TenantConfig::new(admin.tenant().clone(), master.clone());
        // Leases of 1 s (renewal) and 2 s (hard expiry) so that revocation shows up quickly
        // here; the defaults are 20 min and 1 h.
        let lease = LeasePolicy::Leased {
            hard_expiry_secs: 2,
            renewal_secs: 1,
            max_uses: None,
        };
        for policy in config.policies.values_mut() {
            policy.lease = lease;
        }
        let private = Policy::new(master.clone())
            .with_search(SearchMode::BlindIndex)
            .with_lease(lease);
        config.policies.insert(Class::new("private")?, private);
        let restricted = Policy::new(master.clone())
            .with_readers(["doctor"])
            .with_lease(lease);
        config
            .policies
            .insert(Class::new("restricted")?, restricted);
        cmk.configure_tenant(&admin, &config).await?;
        let report = cmk.onboard(&admin).await?;
        println!(
            "onboarded {tenant}: proved {:?}, wrote {} registry entries",
            report.proven_keys, report.entries_written
        );
    }

    // 3. Insert: fetch keys (leases; the KMS only when cold), then seal and write.
    let ctx = RequestContext::new(TenantId::new("acme")?)
        .with_actor(Actor::User("dr-who".into()))
        .with_role("doctor");
    let keys = cmk.keys_for(&ctx, Patient::CLASSES).await?;
    let people = [
        Patient {
            id: 1,
            tenant_id: "acme".into(),
            name: "Ann".into(),
            email: "Ann@Example.com".into(),
            ssn: Some("123-45-6789".into()),
        },
        Patient {
            id: 2,
            tenant_id: "acme".into(),
            name: "Bob".into(),
            email: "bob@example.com".into(),
            ssn: None,
        },
    ];
    ops::insert_many(&db, &keys, &people).await?;

    // 4. Query by blind index: plaintext in, the tenant constrained.
    let by_email = Patient::by_email(&keys, b"ann@EXAMPLE.com")?;
    let ann: Option<Patient> =
        ops::one(&db, &keys, patient::Entity::find().filter(by_email)).await?;
    println!("found by email: {ann:?}");

    // 5. Ordinary SeaORM queries load the plaintext model inside a task-local key scope.
    let everyone: Vec<Patient> = keys
        .scope_async(|| {
            patient::Entity::find()
                .order_by_asc(patient::Column::Id)
                .into_model::<Patient>()
                .all(&db)
        })
        .await?;
    println!(
        "in a key scope, Entity::find().into_model::<Patient>() gives {} patients",
        everyone.len()
    );

    // 6. What the database holds.
    let raw = patient::Entity::find_by_id(1)
        .one(&db)
        .await?
        .ok_or("row 1")?;
    println!("raw row 1:");
    println!("  tenant_id       = {}", raw.tenant_id);
    println!("  name            = {}", hex_prefix(raw.name.as_bytes()));
    println!("  email           = {}", hex_prefix(raw.email.as_bytes()));
    println!(
        "  email_bidx      = {}",
        hex_prefix(raw.email_bidx.as_bytes())
    );
    for (name, column) in [
        ("public_keys", &raw.public_keys),
        ("private_keys", &raw.private_keys),
        ("restricted_keys", &raw.restricted_keys),
    ] {
        if let Some(column) = column {
            println!("  {name:<15} = {}", hex_prefix(column.as_bytes()));
        }
    }

    // 7. Update: a guarded read-modify-write, re-sealed with fresh DEKs.
    let moved = ops::update(
        &db,
        &keys,
        patient::Entity::find_by_id(1),
        |p: &mut Patient| p.email = "ann@example.org".into(),
    )
    .await?;
    let after = patient::Entity::find_by_id(1)
        .one(&db)
        .await?
        .ok_or("row 1")?;
    println!(
        "update rotated the DEKs: {}",
        after.private_keys != raw.private_keys
    );

    // 8. The guard: plaintext written through the ActiveModel is refused before the database.
    let mut sneaky = patient::ActiveModel::from(after.clone());
    sneaky.name = ActiveValue::Set(sea_orm::sea_query::ValueType::try_from(
        sea_orm::Value::Bytes(Some(b"Mallory".to_vec())),
    )?);
    sneaky.public_keys = ActiveValue::Set(after.public_keys.clone());
    match sneaky.update(&db).await {
        Err(e) => println!("a plaintext save is refused: {e}"),
        Ok(_) => return Err("the guard must refuse plaintext".into()),
    }

    // 9. A nurse may not read `restricted`: a partial read withholds it.
    // The same keys acting for her: no KMS call, her roles (none).
    let nurse = keys.as_actor(Actor::User("nurse-1".into()), [] as [&str; 0]);
    println!("nurse sees: {:?}", Patient::unseal_partial(&after, &nurse)?);

    // 10. globex cannot read acme's row, even with its own valid keys.
    let globex = RequestContext::new(TenantId::new("globex")?);
    let globex_keys = cmk.keys_for(&globex, Patient::CLASSES).await?;
    match Patient::unseal(&after, &globex_keys) {
        Err(e) => println!("globex reading acme's row: {e}"),
        Ok(_) => return Err("another tenant must not read acme's rows".into()),
    }

    // 11. acme's master key rotates: registry entries re-wrapped, rows untouched.
    let admin =
        RequestContext::new(TenantId::new("acme")?).with_actor(Actor::Service("key-admin".into()));
    let new_master = kms.create_key("acme-2027")?;
    let rotated = cmk.rotate_master_key(&admin, &new_master).await?;
    println!("rotated acme's master key: {rotated:?}");
    let keys = cmk.keys_for(&ctx, Patient::CLASSES).await?;
    let reread: Option<Patient> = ops::one(&db, &keys, patient::Entity::find_by_id(1)).await?;
    println!(
        "row 1 still reads after the rotation: {}",
        reread.as_ref() == Some(&moved)
    );

    // 12. acme disables its master key: within one renewal interval reads stop.
    kms.disable("acme-2027")?;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let report = cmk.renew_due().await;
    println!("renewal pass: {report:?}");
    match ops::one::<Patient, _, _>(&db, &keys, patient::Entity::find_by_id(1)).await {
        Err(e) => println!("the handle in hand now fails: {e}"),
        Ok(_) => return Err("a revoked lease must stop reads".into()),
    }

    // 13. The security events all of this caused.
    println!("security events:");
    for e in sink.events() {
        println!(
            "  {} {:<28} tenant={:<7} table={:<9} record={:<2} outcome={:?}",
            e.id,
            e.name.as_str(),
            e.tenant,
            e.table.as_deref().unwrap_or("-"),
            e.record_id.as_deref().unwrap_or("-"),
            e.outcome
        );
    }
    Ok(())
}
