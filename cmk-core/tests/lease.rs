//! Leases, key handles, roll-over, rotation, retirement and shredding, driven by a
//! controllable clock through the same code production runs.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cmk_core::format::aad::RowId;
use cmk_core::kms::{KeyRef, KmsErrorKind};
use cmk_core::registry::{KeyRegistry, MemoryRegistry, Purpose};
use cmk_core::schema::{FieldSpec, RowSchema};
use cmk_core::secret::SecretKey;
use cmk_core::tenant::{MemoryConfigStore, OperatorKey};
use cmk_core::{Cmk, CmkSettings, Error, LeasePolicy, Policy};
use common::*;

const MIN: Duration = Duration::from_secs(60);

fn names(fx: &Fixture) -> Vec<&'static str> {
    fx.sink.take().iter().map(|e| e.name.as_str()).collect()
}

fn one_field() -> RowSchema {
    RowSchema::new("notes", vec![FieldSpec::new("body", class("private"))]).unwrap()
}

fn another(fx: &Fixture, settings: CmkSettings) -> Cmk {
    Cmk::builder()
        .settings(settings.with_clock(fx.clock.clone()))
        .kms(fx.kms.clone())
        .registry(fx.registry.clone())
        .configs(fx.configs.clone())
        .sink(fx.sink.clone())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_for_one_key_make_one_kms_call() {
    let fx = Fixture::new(&["acme"]).await;
    fx.kms.gated.store(true, Ordering::SeqCst);
    let entered = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (cmk, entered, finished) = (fx.cmk.clone(), entered.clone(), finished.clone());
        tasks.push(tokio::spawn(async move {
            entered.fetch_add(1, Ordering::SeqCst);
            let r = cmk.keys_for(&ctx("acme"), &["restricted"]).await;
            finished.fetch_add(1, Ordering::SeqCst);
            r
        }));
    }
    while entered.load(Ordering::SeqCst) < 8 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The first call is held in the KMS; the other seven wait for it, none has finished.
    assert_eq!(fx.kms.unwraps.load(Ordering::SeqCst), 1);
    assert_eq!(finished.load(Ordering::SeqCst), 0);
    fx.kms.gate.add_permits(1000);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // One KEK (restricted does not allow search, so no roots): exactly one call in all.
    assert_eq!(fx.kms.unwraps.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_handle_fetches_all_its_keys_at_once() {
    let fx = Fixture::new(&["acme"]).await;
    fx.kms.gated.store(true, Ordering::SeqCst);
    let cmk = fx.cmk.clone();
    let task = tokio::spawn(async move { cmk.keys_for(&doctor("acme"), &ALL).await });
    // Three KEKs and two search roots: all five unwraps are in flight together while the
    // KMS holds every call (one after another, only the first would be).
    for _ in 0..500 {
        if fx.kms.unwraps.load(Ordering::SeqCst) == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(fx.kms.unwraps.load(Ordering::SeqCst), 5);
    assert!(!task.is_finished());
    fx.kms.gate.add_permits(1000);
    task.await.unwrap().unwrap();
    assert_eq!(fx.kms.unwraps.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn kms_calls_stay_at_one_per_key_per_renewal_interval() {
    let fx = Fixture::new(&["acme"]).await;
    let c = doctor("acme");
    let schema = patients();
    let mut reads = 0;
    // Three renewal intervals (3 × 20 min) in one-minute steps, a renewal pass every 5 min.
    for minute in 0..=60 {
        let keys = fx.cmk.keys_for(&c, &ALL).await.unwrap();
        let id = RowId::Int(minute);
        let sealed = keys
            .seal(
                &schema,
                Some(&id),
                &[Some(b"e@x"), Some(b"n"), Some(b"s"), Some(b"c")],
            )
            .unwrap();
        Stored::from_sealed("acme", &sealed)
            .with(Some(&id), |r| keys.unseal(&schema, r))
            .unwrap();
        reads += 1;
        if minute % 5 == 0 {
            fx.cmk.renew_due().await;
        }
        fx.clock.advance(MIN);
    }
    // Five keys (three KEKs, two roots): the first unwrap plus one renewal per interval.
    let calls = fx.kms.unwraps.load(Ordering::SeqCst);
    assert_eq!(reads, 61);
    assert!(calls <= 5 * 4, "{calls} KMS calls");
    assert!(calls >= 5 * 3, "renewals happened: {calls}");
}

#[tokio::test]
async fn an_outage_is_ridden_out_until_hard_expiry_then_fails_clearly() {
    let fx = Fixture::new(&["acme"]).await;
    let c = ctx("acme");
    let schema = one_field();
    let keys = fx.cmk.keys_for(&c, &["private"]).await.unwrap();
    let sealed = keys.seal(&schema, None, &[Some(b"x")]).unwrap();
    let row = Stored::from_sealed("acme", &sealed);
    fx.sink.take();

    fx.kms.set_fault(1); // the KMS goes away
    fx.clock.advance(21 * MIN);
    let report = fx.cmk.renew_due().await;
    assert!(report.unreachable >= 1, "{report:?}");
    assert!(names(&fx).contains(&"KMS_UNREACHABLE"));
    // Still serving: the handle in hand and new handles.
    assert!(row.with(None, |r| keys.unseal(&schema, r)).is_ok());
    let again = fx.cmk.keys_for(&c, &["private"]).await.unwrap();
    assert!(again.seal(&schema, None, &[Some(b"y")]).is_ok());

    fx.clock.advance(40 * MIN); // 61 min: past the 60 min hard expiry
    let err = row.with(None, |r| keys.unseal(&schema, r)).unwrap_err();
    assert!(
        matches!(&err, Error::LeaseEnded { tenant, provider, .. } if tenant == "acme" && provider == "local"),
        "{err}"
    );
    assert!(err.to_string().contains("hard expiry"), "{err}");
    let err = fx.cmk.keys_for(&c, &["private"]).await.unwrap_err();
    assert!(
        matches!(&err, Error::Kms { tenant, provider, source } if tenant == "acme" && provider == "local" && source.kind == KmsErrorKind::Unavailable),
        "{err}"
    );
    assert!(fx.cmk.renew_due().await.expired >= 1);
    assert!(names(&fx).contains(&"KMS_LEASE_EXPIRED"));

    fx.kms.set_fault(0); // back
    assert!(fx.cmk.keys_for(&c, &["private"]).await.is_ok());
}

#[tokio::test]
async fn throttling_is_ridden_out_like_an_outage() {
    let fx = Fixture::new(&["acme"]).await;
    let c = ctx("acme");
    let keys = fx.cmk.keys_for(&c, &["restricted"]).await.unwrap();
    fx.kms.set_fault(2);
    fx.clock.advance(21 * MIN);
    let report = fx.cmk.renew_due().await;
    assert_eq!((report.unreachable, report.revoked), (1, 0), "{report:?}");
    assert!(keys.seal(&one_restricted(), None, &[Some(b"x")]).is_ok());
    fx.kms.set_fault(0);
    fx.clock.advance(2 * MIN); // past the retry back-off
    assert_eq!(fx.cmk.renew_due().await.renewed, 1);
}

fn one_restricted() -> RowSchema {
    RowSchema::new("notes", vec![FieldSpec::new("body", class("restricted"))]).unwrap()
}

#[tokio::test]
async fn a_denial_revokes_within_one_renewal_and_is_remembered_for_a_bounded_time() {
    let fx = Fixture::new(&["acme"]).await;
    let c = ctx("acme");
    let schema = one_field();
    let keys = fx.cmk.keys_for(&c, &["private"]).await.unwrap();
    let sealed = keys.seal(&schema, None, &[Some(b"x")]).unwrap();
    let row = Stored::from_sealed("acme", &sealed);
    fx.sink.take();

    fx.local.disable("acme").unwrap(); // the tenant's kill switch
    assert!(
        row.with(None, |r| keys.unseal(&schema, r)).is_ok(),
        "until the next renewal"
    );
    fx.clock.advance(20 * MIN);
    // The class KEK and the two search roots share the disabled master key.
    assert_eq!(fx.cmk.renew_due().await.revoked, 3);
    assert!(names(&fx).contains(&"KMS_LEASE_REVOKED"));
    // The handle held across the denial fails, from that same handle.
    let err = row.with(None, |r| keys.unseal(&schema, r)).unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");

    // Re-enabled: the denial is remembered for a while (no KMS call), then forgotten.
    fx.local.enable("acme").unwrap();
    let before = fx.kms.unwraps.load(Ordering::SeqCst);
    assert!(fx.cmk.keys_for(&c, &["private"]).await.is_err());
    assert_eq!(
        fx.kms.unwraps.load(Ordering::SeqCst),
        before,
        "denial served from memory"
    );
    fx.clock.advance(Duration::from_secs(61));
    let fresh = fx.cmk.keys_for(&c, &["private"]).await.unwrap();
    assert!(row.with(None, |r| fresh.unseal(&schema, r)).is_ok());
}

#[tokio::test]
async fn a_cap_on_uses_ends_the_lease_and_keys_for_starts_a_new_one() {
    let fx = Fixture::new(&[]).await;
    let key = fx.local.create_key("acme").unwrap();
    let mut cfg = config_for("acme", key.clone());
    let capped = LeasePolicy::Leased {
        hard_expiry_secs: 3600,
        renewal_secs: 1200,
        max_uses: Some(3),
    };
    cfg.policies
        .insert(class("private"), Policy::new(key).with_lease(capped));
    let c = ctx("acme");
    fx.cmk.configure_tenant(&c, &cfg).await.unwrap();
    fx.cmk.onboard(&c).await.unwrap();
    let schema = one_field();
    let keys = fx.cmk.keys_for(&c, &["private"]).await.unwrap();
    for _ in 0..3 {
        keys.seal(&schema, None, &[Some(b"x")]).unwrap();
    }
    let err = keys.seal(&schema, None, &[Some(b"x")]).unwrap_err();
    assert!(err.to_string().contains("cap on uses"), "{err}");
    let before = fx.kms.unwraps.load(Ordering::SeqCst);
    let renewed = fx.cmk.keys_for(&c, &["private"]).await.unwrap();
    assert!(renewed.seal(&schema, None, &[Some(b"x")]).is_ok());
    assert_eq!(fx.kms.unwraps.load(Ordering::SeqCst), before + 1);
}

#[tokio::test]
async fn kek_rolls_over_by_wrap_count_and_old_rows_read_inside_a_scope() {
    let fx = Fixture::new(&["acme"]).await;
    let cmk = another(&fx, CmkSettings::default().with_kek_max_wraps(5));
    let c = ctx("acme");
    let schema = one_field();
    let v1 = cmk.keys_for(&c, &["private"]).await.unwrap();
    let old: Vec<Stored> = (0..5)
        .map(|i| {
            Stored::from_sealed(
                "acme",
                &v1.seal(&schema, None, &[Some(format!("row {i}").as_bytes())])
                    .unwrap(),
            )
        })
        .collect();
    let v2 = cmk.keys_for(&c, &["private"]).await.unwrap();
    let id = cmk_core::registry::kek_id("private");
    assert_eq!(v2.active_kek(&class("private")), Some((id, 2)));
    let new = Stored::from_sealed("acme", &v2.seal(&schema, None, &[Some(b"row 5")]).unwrap());
    assert_eq!(
        &new.key_columns[0].as_ref().unwrap()[5..9],
        &2u32.to_be_bytes()
    );
    // Row-loading code finds the keys in the scope; rows under version 1 still read.
    v2.scope(|| {
        let keys = cmk_core::scope::current_keys().unwrap();
        for (i, row) in old.iter().enumerate() {
            let out = row.with(None, |r| keys.unseal(&schema, r)).unwrap();
            assert_eq!(out.values[0].value(), Some(format!("row {i}").as_bytes()));
        }
    });
    assert!(matches!(
        cmk_core::scope::current_keys(),
        Err(Error::NoKeyScope)
    ));
}

#[tokio::test]
async fn kek_rolls_over_by_age() {
    let fx = Fixture::new(&["acme"]).await;
    let cmk = another(&fx, CmkSettings::default().with_kek_max_age(Duration::ZERO));
    let keys = cmk.keys_for(&ctx("acme"), &["private"]).await.unwrap();
    // Every version is already "too old" with a zero age limit: each fetch rolls once.
    assert_eq!(keys.active_kek(&class("private")).map(|k| k.1), Some(2));
}

#[tokio::test]
async fn two_instances_rolling_over_at_once_agree_on_one_version() {
    let fx = Fixture::new(&["acme"]).await;
    let a = another(&fx, CmkSettings::default().with_kek_max_wraps(2));
    let b = another(&fx, CmkSettings::default().with_kek_max_wraps(2));
    let c = ctx("acme");
    let schema = one_field();
    for cmk in [&a, &b] {
        let keys = cmk.keys_for(&c, &["private"]).await.unwrap();
        keys.seal(&schema, None, &[Some(b"1")]).unwrap();
        keys.seal(&schema, None, &[Some(b"2")]).unwrap();
    }
    let (ka, kb) = tokio::join!(a.keys_for(&c, &["private"]), b.keys_for(&c, &["private"]));
    let (ka, kb) = (ka.unwrap(), kb.unwrap());
    let versions: Vec<u32> = fx
        .registry
        .entries(c.tenant())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.purpose == Purpose::Kek && e.policy == "private")
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, vec![1, 2], "one winner for version 2");
    assert_eq!(
        ka.active_kek(&class("private")),
        kb.active_kek(&class("private"))
    );
    let sealed = ka.seal(&schema, None, &[Some(b"shared")]).unwrap();
    let out = Stored::from_sealed("acme", &sealed)
        .with(None, |r| kb.unseal(&schema, r))
        .unwrap();
    assert_eq!(out.values[0].value(), Some(&b"shared"[..]));
}

/// Another instance rolls the KEK over and writes at once; this instance's view (fresh for one
/// renewal interval) does not know the new version. The first read cannot tell the row from a
/// forged version and fails as `Tampered`; it marks the view stale, so `keys_for` re-reads
/// the registry (at most once a second) and the next read succeeds. A forged version stays
/// `Tampered` after the re-read.
#[tokio::test]
async fn a_version_from_another_instances_roll_over_is_read_after_one_registry_re_read() {
    let fx = Fixture::new(&["acme"]).await;
    let a = another(&fx, CmkSettings::default());
    let b = another(&fx, CmkSettings::default());
    let c = ctx("acme");
    let schema = one_field();
    let kb = b.keys_for(&c, &["private"]).await.unwrap();
    assert_eq!(a.roll_over_kek(&c, "private").await.unwrap(), 2);
    let ka = a.keys_for(&c, &["private"]).await.unwrap();
    let sealed = ka.seal(&schema, None, &[Some(b"from a")]).unwrap();
    let stored = Stored::from_sealed("acme", &sealed);
    let version = |s: &Stored| s.key_columns[0].as_ref().unwrap()[5..9].to_vec();
    assert_eq!(
        version(&stored),
        2u32.to_be_bytes(),
        "A writes with version 2"
    );

    let read = |keys: &cmk_core::TenantKeys, s: &Stored| s.with(None, |r| keys.unseal(&schema, r));
    assert!(matches!(read(&kb, &stored), Err(Error::Tampered)));
    // Within a second of its load the view is not re-read (forged versions cannot turn every
    // read into a registry read).
    let kb = b.keys_for(&c, &["private"]).await.unwrap();
    assert!(matches!(read(&kb, &stored), Err(Error::Tampered)));
    fx.clock.advance(Duration::from_secs(2));
    let kb = b.keys_for(&c, &["private"]).await.unwrap();
    let out = read(&kb, &stored).unwrap();
    assert_eq!(out.values[0].value(), Some(&b"from a"[..]));

    // A version nobody provisioned: still `Tampered` after the re-read it causes.
    let mut forged = stored.clone();
    forged.key_columns[0].as_mut().unwrap()[5..9].copy_from_slice(&7u32.to_be_bytes());
    assert!(matches!(read(&kb, &forged), Err(Error::Tampered)));
    fx.clock.advance(Duration::from_secs(2));
    let kb = b.keys_for(&c, &["private"]).await.unwrap();
    assert!(matches!(read(&kb, &forged), Err(Error::Tampered)));
    assert_eq!(
        read(&kb, &stored).unwrap().values[0].value(),
        Some(&b"from a"[..])
    );
}

#[tokio::test]
async fn master_key_rotation_rewraps_registry_entries_only() {
    let fx = Fixture::new(&["acme"]).await;
    let c = doctor("acme");
    let schema = patients();
    let keys = fx.cmk.keys_for(&c, &ALL).await.unwrap();
    let id = RowId::Int(1);
    let sealed = keys
        .seal(
            &schema,
            Some(&id),
            &[Some(b"e@x"), Some(b"n"), Some(b"s"), Some(b"c")],
        )
        .unwrap();
    let row = Stored::from_sealed("acme", &sealed);
    let before = fx.registry.entries(c.tenant()).await.unwrap().len();

    let new_key = fx.local.create_key("acme-2026").unwrap();
    let report = fx.cmk.rotate_master_key(&c, &new_key).await.unwrap();
    // Four class KEKs and two roots, re-wrapped; no row was touched (it reads as it was).
    assert_eq!(report.rewrapped, 6);
    assert_eq!(report.revision, 2);
    assert_eq!(
        fx.registry.entries(c.tenant()).await.unwrap().len(),
        before + 6
    );
    assert_eq!(
        fx.cmk
            .rotate_master_key(&c, &new_key)
            .await
            .unwrap()
            .rewrapped,
        0,
        "resumable"
    );

    // The old master key is destroyed; a fresh process reads the old row under the new one.
    fx.local.destroy("acme").unwrap();
    let fresh = another(&fx, CmkSettings::default());
    let keys = fresh.keys_for(&c, &ALL).await.unwrap();
    let out = row.with(Some(&id), |r| keys.unseal(&schema, r)).unwrap();
    assert_eq!(out.values[2].value(), Some(&b"s"[..]));
}

#[tokio::test]
async fn kek_retirement_moves_to_decrypt_only_rewraps_key_columns_then_destroys() {
    let fx = Fixture::new(&["acme"]).await;
    let c = ctx("acme");
    let tenant = c.tenant().clone();
    let schema = one_field();
    let keys = fx.cmk.keys_for(&c, &["private"]).await.unwrap();
    let old = [1, 2].map(|i| {
        let value = format!("{i}");
        Stored::from_sealed(
            "acme",
            &keys.seal(&schema, None, &[Some(value.as_bytes())]).unwrap(),
        )
    });

    assert_eq!(fx.cmk.roll_over_kek(&c, "private").await.unwrap(), 2);
    // Too early: other instances may still write with version 1 for one renewal interval.
    let err = fx.cmk.retire_kek(&c, "private", 1).await.unwrap_err();
    assert!(err.to_string().contains("renewal interval"), "{err}");
    // Let the interval pass: version 2's entry, as if written an hour ago (a raw registry row).
    let mut aged = fx
        .registry
        .entries(&tenant)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.purpose == Purpose::Kek && e.policy == "private" && e.version == 2)
        .unwrap();
    aged.created_at -= 3600;
    fx.registry.insert_raw(aged).unwrap();

    fx.cmk.retire_kek(&c, "private", 1).await.unwrap();
    let keys = fx.cmk.keys_for(&c, &["private"]).await.unwrap();
    assert_eq!(
        keys.active_kek(&class("private")).map(|k| k.1),
        Some(2),
        "writes use version 2"
    );
    // Re-wrap the first row's key column; the second stays on version 1.
    let rekeyed = old[0]
        .with(None, |r| keys.rekey_key_column(&schema, 0, r))
        .unwrap()
        .unwrap();
    assert_eq!(&rekeyed[5..9], &2u32.to_be_bytes());
    assert!(
        fx.sink
            .events()
            .iter()
            .any(|e| e.name.as_str() == "DATA_REKEY")
    );
    let mut moved = old[0].clone();
    moved.key_columns[0] = Some(rekeyed);
    assert_eq!(moved.fields, old[0].fields, "field ciphertext untouched");
    assert!(moved.with(None, |r| keys.unseal(&schema, r)).is_ok());
    assert!(
        old[1].with(None, |r| keys.unseal(&schema, r)).is_ok(),
        "decrypt-only still reads"
    );
    assert_eq!(
        moved
            .with(None, |r| keys.rekey_key_column(&schema, 0, r))
            .unwrap(),
        None,
        "idempotent"
    );

    // Destroyed: the row left on version 1 is unreadable, the re-wrapped one reads.
    fx.cmk.destroy_kek(&c, "private", 1).await.unwrap();
    let keys = fx.cmk.keys_for(&c, &["private"]).await.unwrap();
    assert!(matches!(
        old[1].with(None, |r| keys.unseal(&schema, r)),
        Err(Error::KeyUnavailable { .. })
    ));
    let out = moved.with(None, |r| keys.unseal(&schema, r)).unwrap();
    assert_eq!(out.values[0].value(), Some(&b"1"[..]));
}

#[tokio::test]
async fn a_row_is_rekeyed_in_one_call_with_one_event_naming_the_classes_rewrapped() {
    let fx = Fixture::new(&["acme"]).await;
    let c = ctx("acme");
    let schema = RowSchema::new(
        "notes",
        vec![
            FieldSpec::new("body", class("private")),
            FieldSpec::new("title", class("public")),
        ],
    )
    .unwrap();
    let keys = fx.cmk.keys_for(&c, &["private", "public"]).await.unwrap();
    let row = Stored::from_sealed(
        "acme",
        &keys.seal(&schema, None, &[Some(b"b"), Some(b"t")]).unwrap(),
    );
    fx.cmk.roll_over_kek(&c, "private").await.unwrap();
    let keys = fx.cmk.keys_for(&c, &["private", "public"]).await.unwrap();
    fx.sink.take();
    let columns = row
        .with(None, |r| keys.rekey_key_columns(&schema, r))
        .unwrap();
    assert_eq!(columns.len(), 2);
    assert!(columns[0].is_some(), "private moved to version 2");
    assert!(columns[1].is_none(), "public is current");
    let events: Vec<_> = fx
        .sink
        .take()
        .into_iter()
        .filter(|e| e.name.as_str() == "DATA_REKEY")
        .collect();
    assert_eq!(events.len(), 1, "one event for the row");
    assert_eq!(&*events[0].classes, ["private".to_string()]);
    // The re-wrapped row reads, and a second pass has nothing to do (and says nothing).
    let mut moved = row.clone();
    moved.key_columns[0] = columns[0].clone();
    assert!(moved.with(None, |r| keys.unseal(&schema, r)).is_ok());
    fx.sink.take();
    let again = moved
        .with(None, |r| keys.rekey_key_columns(&schema, r))
        .unwrap();
    assert_eq!(again, vec![None, None]);
    assert!(
        !fx.sink
            .take()
            .iter()
            .any(|e| e.name.as_str() == "DATA_REKEY")
    );
}

#[tokio::test]
async fn shredding_stops_every_instance_within_one_renewal_and_defeats_a_restored_backup() {
    let fx = Fixture::new(&["acme"]).await;
    let c = ctx("acme");
    let schema = one_field();
    let b = another(&fx, CmkSettings::default());
    let ka = fx.cmk.keys_for(&c, &["private"]).await.unwrap();
    let kb = b.keys_for(&c, &["private"]).await.unwrap();
    let row = Stored::from_sealed("acme", &ka.seal(&schema, None, &[Some(b"x")]).unwrap());
    let backup: Vec<_> = fx.registry.entries(c.tenant()).await.unwrap();

    let report = fx.cmk.shred_tenant(&c).await.unwrap();
    assert_eq!(
        report.master_keys_destroyed,
        vec![KeyRef::new("local:acme").unwrap()]
    );
    assert!(report.operator_must_destroy.is_empty());
    assert!(
        row.with(None, |r| ka.unseal(&schema, r)).is_err(),
        "this instance stops at once"
    );
    assert!(matches!(
        fx.cmk.keys_for(&c, &["private"]).await,
        Err(Error::TenantShredded { .. })
    ));
    // The other instance's warm lease serves until its next renewal, then stops.
    assert!(row.with(None, |r| kb.unseal(&schema, r)).is_ok());
    fx.clock.advance(20 * MIN);
    assert!(b.renew_due().await.revoked >= 1);
    assert!(row.with(None, |r| kb.unseal(&schema, r)).is_err());

    // A registry restored from before the shred is useless: the master key is gone.
    let restored = Arc::new(MemoryRegistry::new());
    for e in backup {
        restored.insert_raw(e).unwrap();
    }
    let after_restore = Cmk::builder()
        .kms(fx.kms.clone())
        .registry(restored)
        .configs(fx.configs.clone())
        .build()
        .unwrap();
    let err = after_restore.keys_for(&c, &["private"]).await.unwrap_err();
    assert!(
        matches!(&err, Error::Kms { source, .. } if source.kind == KmsErrorKind::NotFound),
        "{err}"
    );
}

#[tokio::test]
async fn shredding_after_a_master_key_rotation_defeats_a_backup_from_before_the_rotation() {
    let fx = Fixture::new(&["acme"]).await;
    let c = ctx("acme");
    fx.cmk.keys_for(&c, &["private"]).await.unwrap();
    // The backup: the registry and the configuration as they were before the rotation.
    let backup: Vec<_> = fx.registry.entries(c.tenant()).await.unwrap();
    let backup_config = fx.configs.raw(c.tenant()).unwrap();
    let new_key = fx.local.create_key("acme-2").unwrap();
    fx.cmk.rotate_master_key(&c, &new_key).await.unwrap();

    let report = fx.cmk.shred_tenant(&c).await.unwrap();
    // Before the fix only `acme-2`, the key the configuration named, was destroyed, and the
    // backup below still unwrapped under `acme`.
    assert_eq!(
        report.master_keys_destroyed,
        vec![KeyRef::new("local:acme").unwrap(), new_key]
    );
    let restored = Arc::new(MemoryRegistry::new());
    for e in backup {
        restored.insert_raw(e).unwrap();
    }
    let restored_configs = Arc::new(MemoryConfigStore::new(OperatorKey::new(
        SecretKey::from_bytes([42; 32]),
    )));
    restored_configs.put_raw(backup_config).unwrap();
    let after_restore = Cmk::builder()
        .kms(fx.kms.clone())
        .registry(restored)
        .configs(restored_configs)
        .build()
        .unwrap();
    let err = after_restore.keys_for(&c, &["private"]).await.unwrap_err();
    assert!(
        matches!(&err, Error::Kms { source, .. } if source.kind == KmsErrorKind::NotFound),
        "{err}"
    );
}

#[tokio::test]
async fn scopes_are_per_thread_and_per_task() {
    let fx = Fixture::new(&["acme", "globex"]).await;
    let acme = fx.cmk.keys_for(&ctx("acme"), &["private"]).await.unwrap();
    let globex = fx.cmk.keys_for(&ctx("globex"), &["private"]).await.unwrap();
    assert!(matches!(
        cmk_core::scope::current_keys(),
        Err(Error::NoKeyScope)
    ));
    acme.scope(|| {
        assert_eq!(
            cmk_core::scope::current_keys().unwrap().tenant().as_str(),
            "acme"
        );
        globex.scope(|| {
            assert_eq!(
                cmk_core::scope::current_keys().unwrap().tenant().as_str(),
                "globex"
            )
        });
        assert_eq!(
            cmk_core::scope::current_keys().unwrap().tenant().as_str(),
            "acme"
        );
        // Another thread does not see this thread's scope.
        std::thread::scope(|s| {
            s.spawn(|| assert!(cmk_core::scope::current_keys().is_err()));
        });
    });
    // A task-local scope survives awaits; spawn_blocking gets its own thread scope.
    let inner = acme.clone();
    acme.scope_async(|| async move {
        tokio::task::yield_now().await;
        assert_eq!(
            cmk_core::scope::current_keys().unwrap().tenant().as_str(),
            "acme"
        );
        let blocking = tokio::task::spawn_blocking(move || {
            inner.scope(|| cmk_core::scope::current_keys().map(|k| k.tenant().clone()))
        });
        assert_eq!(blocking.await.unwrap().unwrap().as_str(), "acme");
    })
    .await;
    // Another tenant's row inside acme's scope: a clear error.
    let schema = one_field();
    let row = Stored::from_sealed(
        "globex",
        &globex.seal(&schema, None, &[Some(b"x")]).unwrap(),
    );
    acme.scope(|| {
        let keys = cmk_core::scope::current_keys().unwrap();
        let err = row.with(None, |r| keys.unseal(&schema, r)).unwrap_err();
        assert!(matches!(err, Error::TenantMismatch { .. }), "{err:?}");
    });
}

#[tokio::test]
async fn classic_mode_makes_one_kms_call_per_row_and_refuses_the_sync_path() {
    let fx = Fixture::new(&[]).await;
    let key = fx.local.create_key("acme").unwrap();
    let mut cfg = config_for("acme", key.clone());
    cfg.policies.insert(
        class("private"),
        Policy::new(key.clone())
            .with_lease(LeasePolicy::None)
            .with_readers(["clerk"]),
    );
    let c = ctx("acme").with_role("clerk").with_role("doctor");
    fx.cmk.configure_tenant(&c, &cfg).await.unwrap();
    fx.cmk.onboard(&c).await.unwrap();
    // private is classic, restricted is leased: one table mixes both.
    let schema = RowSchema::new(
        "mixed",
        vec![
            FieldSpec::new("note", class("private")),
            FieldSpec::new("ssn", class("restricted")),
        ],
    )
    .unwrap();
    let keys = fx
        .cmk
        .keys_for(&c, &["private", "restricted"])
        .await
        .unwrap();
    assert_eq!(keys.classic_classes(), &[class("private")]);
    let err = keys
        .seal(&schema, None, &[Some(b"x"), Some(b"y")])
        .unwrap_err();
    assert!(
        matches!(&err, Error::ClassicModeNeedsAsync { class } if class == "private"),
        "{err}"
    );
    assert!(err.to_string().contains("seal_classic"), "{err}");

    fx.kms.reset();
    let id = RowId::Int(9);
    let mut rows = Vec::new();
    for _ in 0..3 {
        let sealed = fx
            .cmk
            .seal_classic(&c, &schema, Some(&id), &[Some(b"classic"), Some(b"leased")])
            .await
            .unwrap();
        assert_eq!(
            sealed.key_columns[0].as_ref().unwrap()[0],
            0x04,
            "classic key column, with a write id"
        );
        assert_eq!(
            sealed.key_columns[1].as_ref().unwrap()[0],
            0x03,
            "leased key column"
        );
        rows.push(Stored::from_sealed("acme", &sealed));
    }
    assert_eq!(
        fx.kms.wraps.load(Ordering::SeqCst),
        3,
        "one KMS wrap per row"
    );
    for row in &rows {
        let out = row
            .with(Some(&id), |r| {
                futures_lite(fx.cmk.unseal_classic(&c, &schema, r))
            })
            .unwrap();
        assert_eq!(out.values[0].value(), Some(&b"classic"[..]));
        assert_eq!(out.values[1].value(), Some(&b"leased"[..]));
    }
    assert_eq!(
        fx.kms.unwraps.load(Ordering::SeqCst),
        3,
        "one KMS unwrap per row, leased KEK warm"
    );
    // The synchronous path names the class; a reader without the role costs no KMS call.
    let err = rows[0]
        .with(Some(&id), |r| keys.unseal(&schema, r))
        .unwrap_err();
    assert!(
        matches!(err, Error::ClassicModeNeedsAsync { .. }),
        "{err:?}"
    );
    let stranger = ctx("acme").with_role("doctor");
    let err = rows[0]
        .with(Some(&id), |r| {
            futures_lite(fx.cmk.unseal_classic(&stranger, &schema, r))
        })
        .unwrap_err();
    assert!(matches!(err, Error::AccessDenied { .. }), "{err:?}");
    assert_eq!(fx.kms.unwraps.load(Ordering::SeqCst), 3);
    // A classic key column moved to another row id fails in the KMS (bound associated data).
    let other = RowId::Int(10);
    assert!(
        rows[0]
            .with(Some(&other), |r| futures_lite(
                fx.cmk.unseal_classic(&c, &schema, r)
            ))
            .is_err()
    );
}

/// Runs a future to completion on a fresh current-thread runtime in a helper thread (the
/// test's own runtime is busy awaiting this test).
fn futures_lite<F: std::future::Future + Send>(f: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f)
        })
        .join()
        .unwrap()
    })
}

#[tokio::test]
async fn lease_events_are_emitted() {
    let fx = Fixture::new(&["acme"]).await;
    let c = ctx("acme");
    fx.cmk.keys_for(&c, &["private"]).await.unwrap();
    fx.clock.advance(20 * MIN);
    fx.cmk.renew_due().await;
    let seen = names(&fx);
    assert!(
        seen.contains(&"KMS_UNWRAP") && seen.contains(&"KMS_LEASE_RENEWED"),
        "{seen:?}"
    );
}

/// A registry that can be made unreachable.
#[derive(Debug)]
struct FlakyRegistry {
    inner: Arc<MemoryRegistry>,
    down: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl cmk_core::registry::KeyRegistry for FlakyRegistry {
    async fn insert_if_absent(
        &self,
        entry: cmk_core::registry::RegistryEntry,
    ) -> cmk_core::Result<cmk_core::registry::InsertOutcome> {
        self.inner.insert_if_absent(entry).await
    }
    async fn entries(
        &self,
        tenant: &cmk_core::TenantId,
    ) -> cmk_core::Result<Vec<cmk_core::registry::RegistryEntry>> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::Registry("connection refused (simulated)".into()));
        }
        self.inner.entries(tenant).await
    }
    async fn purge(&self, tenant: &cmk_core::TenantId) -> cmk_core::Result<usize> {
        self.inner.purge(tenant).await
    }
}

#[tokio::test]
async fn a_revocation_is_seen_even_while_the_registry_is_unreachable() {
    let fx = Fixture::new(&["acme"]).await;
    let flaky = Arc::new(FlakyRegistry {
        inner: fx.registry.clone(),
        down: false.into(),
    });
    let cmk = Cmk::builder()
        .clock(fx.clock.clone())
        .kms(fx.kms.clone())
        .registry(flaky.clone())
        .configs(fx.configs.clone())
        .build()
        .unwrap();
    let c = ctx("acme");
    let keys = cmk.keys_for(&c, &["restricted"]).await.unwrap();
    flaky.down.store(true, Ordering::SeqCst);
    fx.local.disable("acme").unwrap();
    fx.clock.advance(20 * MIN);
    assert_eq!(cmk.renew_due().await.revoked, 1);
    assert!(keys.seal(&one_restricted(), None, &[Some(b"x")]).is_err());
}

#[tokio::test]
async fn new_lease_limits_apply_from_the_next_renewal() {
    let fx = Fixture::new(&["acme"]).await;
    let c = ctx("acme");
    let schema = one_restricted();
    let keys = fx.cmk.keys_for(&c, &["restricted"]).await.unwrap();
    for _ in 0..5 {
        keys.seal(&schema, None, &[Some(b"x")]).unwrap();
    }
    // The tenant caps restricted keys at two uses per lease.
    let key = KeyRef::new("local:acme").unwrap();
    let mut cfg = config_for("acme", key.clone());
    cfg.revision = 2;
    let capped = LeasePolicy::Leased {
        hard_expiry_secs: 3600,
        renewal_secs: 1200,
        max_uses: Some(2),
    };
    cfg.policies.insert(
        class("restricted"),
        Policy::new(key).with_readers(["doctor"]).with_lease(capped),
    );
    fx.cmk.configure_tenant(&c, &cfg).await.unwrap();
    fx.clock.advance(20 * MIN);
    fx.cmk.renew_due().await;
    let keys = fx.cmk.keys_for(&c, &["restricted"]).await.unwrap();
    keys.seal(&schema, None, &[Some(b"x")]).unwrap();
    keys.seal(&schema, None, &[Some(b"x")]).unwrap();
    let err = keys.seal(&schema, None, &[Some(b"x")]).unwrap_err();
    assert!(err.to_string().contains("cap on uses"), "{err}");
}
