//! The key registry and onboarding: entries are bound to tenant, purpose and policy; the
//! database cannot make cmk write under a key it knows; nothing is provisioned implicitly.

mod common;

use cmk_core::format::aad::Aad;
use cmk_core::kms::{KeyRef, Kms, KmsErrorKind};
use cmk_core::registry::{KeyRegistry, KeyState, Purpose, RegistryEntry, entry_aad, kek_id};
use cmk_core::schema::{FieldSpec, RowSchema};
use cmk_core::tenant::TenantConfigStore;
use cmk_core::{Error, TenantId};
use common::*;

async fn entry(fx: &Fixture, tenant: &str, purpose: Purpose, policy: &str) -> RegistryEntry {
    fx.registry
        .entries(&TenantId::new(tenant).unwrap())
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.purpose == purpose && e.policy == policy)
        .unwrap()
}

fn kms_kind(e: &Error) -> Option<KmsErrorKind> {
    match e {
        Error::Kms { source, .. } => Some(source.kind),
        _ => None,
    }
}

/// Two tenants that share one master key (a hosted tier), so only the associated data
/// tells their entries apart.
async fn shared_key_fixture() -> Fixture {
    let fx = Fixture::new(&[]).await;
    let key = fx.local.create_key("shared").unwrap();
    for t in ["acme", "globex"] {
        fx.cmk
            .configure_tenant(&ctx(t), &config_for(t, key.clone()))
            .await
            .unwrap();
        fx.cmk.onboard(&ctx(t)).await.unwrap();
    }
    fx
}

/// A write of class `private` for `tenant`: a copied or forged newest version of the class
/// becomes its write key, which the KMS will not unwrap.
async fn writes_of_private(fx: &Fixture, tenant: &str) -> cmk_core::Result<()> {
    let keys = fx.cmk.keys_for(&ctx(tenant), &["private"]).await?;
    let schema = RowSchema::new("t", vec![FieldSpec::new("p", class("private"))]).unwrap();
    keys.seal(&schema, None, &[Some(b"x")]).map(drop)
}

/// The same stores, KMS and clock in a new `Cmk`: a fresh process, with no cached view.
fn fresh_process(fx: &Fixture) -> cmk_core::Cmk {
    cmk_core::Cmk::builder()
        .clock(fx.clock.clone())
        .kms(fx.kms.clone())
        .registry(fx.registry.clone())
        .configs(fx.configs.clone())
        .sink(fx.sink.clone())
        .build()
        .unwrap()
}

/// Issue 15 §1.4: a forged newer version of one class's KEK (an entry under the tenant's own
/// key, with bytes no KMS unwraps) used to fail `keys_for` for every class, so no row could
/// be read. Now rows under the versions that unwrap read, other classes write, and only
/// writes that would use the forged version fail, with the KMS's refusal.
#[tokio::test]
async fn a_forged_newer_kek_version_stops_only_the_writes_it_would_take() {
    let fx = Fixture::new(&["acme"]).await;
    let doc = doctor("acme");
    let schema = patients();
    let values: [Option<&[u8]>; 4] = [
        Some(b"ann@example.com"),
        Some(b"Ann"),
        Some(b"123-45-6789"),
        Some(b"A7"),
    ];
    let keys = fx.cmk.keys_for(&doc, &ALL).await.unwrap();
    let sealed = Stored::from_sealed("acme", &keys.seal(&schema, None, &values).unwrap());
    let mut forged = entry(&fx, "acme", Purpose::Kek, "private").await;
    forged.version = 2;
    forged.wrapped = vec![0x5a; forged.wrapped.len()];
    fx.registry.insert_raw(forged).unwrap();

    let cmk = fresh_process(&fx);
    let keys = cmk.keys_for(&doc, &ALL).await.unwrap();
    let back = sealed.with(None, |r| keys.unseal(&schema, r)).unwrap();
    assert_eq!(back.values[0].value(), Some(&b"ann@example.com"[..]));
    assert_eq!(back.values[2].value(), Some(&b"123-45-6789"[..]));
    let err = keys.seal(&schema, None, &values).unwrap_err();
    assert_eq!(kms_kind(&err), Some(KmsErrorKind::Invalid), "{err:?}");
    let restricted =
        RowSchema::new("notes", vec![FieldSpec::new("n", class("restricted"))]).unwrap();
    keys.seal(&restricted, None, &[Some(b"x")]).unwrap();
    // The refusal is audited as a failed unwrap.
    assert!(fx.sink.take().iter().any(|e| e.name.as_str() == "KMS_UNWRAP"
        && matches!(&e.outcome, cmk_core::event::Outcome::Failure { error } if error.contains("invalid"))));

    // The same for a forged newer root: values under the genuine root still read and are
    // still found; new values, which would take the forged root, are refused.
    let mut root = entry(&fx, "acme", Purpose::DeterministicRoot, "").await;
    root.version = 2;
    root.wrapped = vec![0x5a; root.wrapped.len()];
    fx.registry.insert_raw(root).unwrap();
    let cmk = fresh_process(&fx);
    let keys = cmk.keys_for(&doc, &ALL).await.unwrap();
    let back = sealed.with(None, |r| keys.unseal(&schema, r)).unwrap();
    assert_eq!(back.values[3].value(), Some(&b"A7"[..]));
    assert_eq!(
        keys.deterministic_query(&schema, "code", b"A7").unwrap(),
        sealed.fields[3].clone().unwrap()
    );
    let secret_only = RowSchema::new(
        "codes",
        vec![FieldSpec::new("c", class("secret")).deterministic()],
    )
    .unwrap();
    let err = keys.seal(&secret_only, None, &[Some(b"B8")]).unwrap_err();
    assert_eq!(kms_kind(&err), Some(KmsErrorKind::Invalid), "{err:?}");
}

#[tokio::test]
async fn an_entry_copied_to_another_tenant_fails_to_unwrap() {
    let fx = shared_key_fixture().await;
    let mut copied = entry(&fx, "acme", Purpose::Kek, "private").await;
    copied.tenant = TenantId::new("globex").unwrap();
    copied.version = 2;
    fx.registry.insert_raw(copied).unwrap();
    let err = writes_of_private(&fx, "globex").await.unwrap_err();
    assert_eq!(kms_kind(&err), Some(KmsErrorKind::Invalid), "{err:?}");
    // The same bytes under their own tenant still unwrap: the binding is what failed.
    assert!(fx.cmk.keys_for(&ctx("acme"), &["private"]).await.is_ok());
}

#[tokio::test]
async fn an_entry_copied_to_another_purpose_or_class_fails_to_unwrap() {
    let fx = shared_key_fixture().await;
    let root = entry(&fx, "acme", Purpose::IndexRoot, "").await;
    let as_kek = RegistryEntry {
        purpose: Purpose::Kek,
        policy: "private".into(),
        kek_id: kek_id("private"),
        version: 2,
        ..root
    };
    fx.registry.insert_raw(as_kek).unwrap();
    let err = writes_of_private(&fx, "acme").await.unwrap_err();
    assert_eq!(kms_kind(&err), Some(KmsErrorKind::Invalid), "{err:?}");

    let restricted = entry(&fx, "globex", Purpose::Kek, "restricted").await;
    let as_private = RegistryEntry {
        policy: "private".into(),
        kek_id: kek_id("private"),
        version: 2,
        ..restricted
    };
    fx.registry.insert_raw(as_private).unwrap();
    let err = writes_of_private(&fx, "globex").await.unwrap_err();
    assert_eq!(kms_kind(&err), Some(KmsErrorKind::Invalid), "{err:?}");
}

#[tokio::test]
async fn a_database_writer_cannot_make_cmk_write_under_a_key_it_knows() {
    let fx = Fixture::new(&["acme"]).await;
    // The attacker controls a master key of its own and forges a version 2 KEK under it,
    // with correct associated data, so its own KMS would unwrap it happily.
    let attacker_key = fx.local.create_key("attacker").unwrap();
    let known_kek = [0x66u8; 32];
    let tenant = TenantId::new("acme").unwrap();
    let aad = entry_aad(
        Purpose::Kek,
        &tenant,
        "private",
        kek_id("private"),
        2,
        &attacker_key,
    );
    let wrapped = fx
        .kms
        .wrap(
            &attacker_key,
            &known_kek,
            &cmk_core::kms::KmsContext::new(aad),
        )
        .await
        .unwrap();
    fx.registry
        .insert_raw(RegistryEntry {
            tenant: tenant.clone(),
            purpose: Purpose::Kek,
            policy: "private".into(),
            kek_id: kek_id("private"),
            version: 2,
            cmk_ref: attacker_key,
            state: KeyState::Active,
            wrapped,
            created_at: 0,
        })
        .unwrap();
    let c = ctx("acme");
    let keys = fx.cmk.keys_for(&c, &["private"]).await.unwrap();
    // Writes stay on version 1, wrapped under the tenant's configured key.
    assert_eq!(
        keys.active_kek(&class("private")),
        Some((kek_id("private"), 1))
    );
    let schema = RowSchema::new("t", vec![FieldSpec::new("p", class("private"))]).unwrap();
    let sealed = keys.seal(&schema, None, &[Some(b"x")]).unwrap();
    assert_eq!(
        &sealed.key_columns[0].as_ref().unwrap()[5..9],
        &1u32.to_be_bytes()
    );
}

#[tokio::test]
async fn a_forged_state_entry_can_only_restrict() {
    let fx = Fixture::new(&["acme"]).await;
    let mut destroyed = entry(&fx, "acme", Purpose::Kek, "private").await;
    destroyed.state = KeyState::Destroyed;
    destroyed.wrapped.clear();
    fx.registry.insert_raw(destroyed).unwrap();
    // Version 1 is now destroyed as far as anyone can tell: denial of service, no widening.
    let err = fx
        .cmk
        .keys_for(&ctx("acme"), &["private"])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::KeysDestroyed { .. }), "{err:?}");
    // The message tells the operator what happened and where the remedy is; it no longer
    // says to onboard (onboarding never revives a destroyed key).
    let message = err.to_string();
    assert!(
        message.contains("recorded as destroyed") && message.contains("SECURITY.md"),
        "{message}"
    );
    assert!(!message.contains("onboard"), "{message}");
}

#[tokio::test]
async fn unknown_tenants_are_errors_and_nothing_is_provisioned_implicitly() {
    let fx = Fixture::new(&[]).await;
    let c = ctx("acme");
    let err = fx.cmk.keys_for(&c, &["private"]).await.unwrap_err();
    assert!(matches!(err, Error::UnknownTenant { .. }), "{err:?}");
    // Configured but not onboarded: still unknown, and the registry stays empty.
    let key = fx.local.create_key("acme").unwrap();
    fx.cmk
        .configure_tenant(&c, &config_for("acme", key))
        .await
        .unwrap();
    let err = fx.cmk.keys_for(&c, &["private"]).await.unwrap_err();
    assert!(matches!(err, Error::UnknownTenant { .. }), "{err:?}");
    assert!(fx.registry.entries(c.tenant()).await.unwrap().is_empty());
    // Onboarding without a configuration is refused.
    assert!(matches!(
        fx.cmk.onboard(&ctx("nobody")).await,
        Err(Error::UnknownTenant { .. })
    ));
}

#[tokio::test]
async fn onboarding_proves_the_master_key_first_and_writes_nothing_if_it_fails() {
    let fx = Fixture::new(&[]).await;
    let c = ctx("acme");
    let key = fx.local.create_key("acme").unwrap();
    fx.cmk
        .configure_tenant(&c, &config_for("acme", key))
        .await
        .unwrap();
    fx.local.disable("acme").unwrap();
    let err = fx.cmk.onboard(&c).await.unwrap_err();
    assert_eq!(kms_kind(&err), Some(KmsErrorKind::Denied), "{err:?}");
    assert!(fx.registry.entries(c.tenant()).await.unwrap().is_empty());
    let events = fx.sink.take();
    let last = events.last().unwrap();
    assert_eq!(last.name.as_str(), "ADMIN_TENANT_ONBOARDED");
    assert!(
        matches!(&last.outcome, cmk_core::event::Outcome::Failure { error } if error == "kms_denied")
    );

    fx.local.enable("acme").unwrap();
    let report = fx.cmk.onboard(&c).await.unwrap();
    assert_eq!(report.proven_keys, vec![KeyRef::new("local:acme").unwrap()]);
    // Four built-in classes, index root, deterministic root.
    assert_eq!(report.entries_written, 6);
    assert_eq!(
        fx.cmk.onboard(&c).await.unwrap().entries_written,
        0,
        "idempotent"
    );
}

/// Issue 16: the configuration is saved last, so a tenant is never configured without the
/// keys its configuration names: a master key that fails its round trip leaves no
/// configuration (before, `configure_tenant` then `onboard` left one that every request
/// failed on), and the retry reuses what the failed attempt provisioned.
#[tokio::test]
async fn configuring_and_onboarding_saves_the_configuration_only_once_its_keys_exist() {
    let fx = Fixture::new(&[]).await;
    let c = ctx("acme");
    let key = fx.local.create_key("acme").unwrap();
    let second = fx.local.create_key("acme-secret").unwrap();
    let config = config_for("acme", key)
        .with_class("payroll", cmk_core::Policy::new(second))
        .unwrap();
    fx.local.disable("acme-secret").unwrap();
    let err = fx.cmk.configure_and_onboard(&c, &config).await.unwrap_err();
    assert_eq!(kms_kind(&err), Some(KmsErrorKind::Denied), "{err:?}");
    assert!(matches!(
        fx.configs.load(c.tenant()).await,
        Err(Error::UnknownTenant { .. })
    ));
    let names = |fx: &Fixture| -> Vec<String> {
        let events = fx.sink.take();
        events.iter().map(|e| e.name.as_str().to_string()).collect()
    };
    assert_eq!(
        names(&fx),
        ["ADMIN_TENANT_ONBOARDED"],
        "no configuration event: nothing saved"
    );

    fx.local.enable("acme-secret").unwrap();
    let report = fx.cmk.configure_and_onboard(&c, &config).await.unwrap();
    assert_eq!(report.proven_keys.len(), 2);
    assert_eq!(fx.configs.load(c.tenant()).await.unwrap(), config);
    assert_eq!(
        names(&fx),
        ["ADMIN_TENANT_ONBOARDED", "ADMIN_TENANT_CONFIG_CHANGED"]
    );
    fx.cmk.keys_for(&c, &["payroll", "private"]).await.unwrap();
}

#[tokio::test]
async fn a_class_added_later_is_provisioned_by_onboarding_again_only() {
    let fx = Fixture::new(&["acme"]).await;
    let c = ctx("acme");
    let key = KeyRef::new("local:acme").unwrap();
    let mut cfg = config_for("acme", key.clone());
    cfg.revision = 2;
    cfg.policies
        .insert(class("payroll"), cmk_core::Policy::new(key));
    fx.cmk.configure_tenant(&c, &cfg).await.unwrap();
    let err = fx.cmk.keys_for(&c, &["payroll"]).await.unwrap_err();
    assert!(
        matches!(&err, cmk_core::Error::ClassNotProvisioned { class, .. } if class == "payroll"),
        "{err:?}"
    );
    assert!(err.to_string().contains("onboard the class"), "{err}");
    assert_eq!(fx.cmk.onboard(&c).await.unwrap().entries_written, 1);
    assert!(fx.cmk.keys_for(&c, &["payroll"]).await.is_ok());
}

#[tokio::test]
async fn two_instances_onboarding_at_once_agree_on_one_key() {
    let fx = Fixture::new(&[]).await;
    let c = ctx("acme");
    let key = fx.local.create_key("acme").unwrap();
    fx.cmk
        .configure_tenant(&c, &config_for("acme", key))
        .await
        .unwrap();
    let other = cmk_core::Cmk::builder()
        .kms(fx.kms.clone())
        .registry(fx.registry.clone())
        .configs(fx.configs.clone())
        .sink(fx.sink.clone())
        .build()
        .unwrap();
    let (a, b) = tokio::join!(fx.cmk.onboard(&c), other.onboard(&c));
    assert_eq!(a.unwrap().entries_written + b.unwrap().entries_written, 6);
    let entries = fx.registry.entries(c.tenant()).await.unwrap();
    assert_eq!(entries.len(), 6, "one entry per key, whoever won");
    let schema = RowSchema::new("t", vec![FieldSpec::new("p", class("private"))]).unwrap();
    let ka = fx.cmk.keys_for(&c, &["private"]).await.unwrap();
    let kb = other.keys_for(&c, &["private"]).await.unwrap();
    let sealed = ka.seal(&schema, None, &[Some(b"shared")]).unwrap();
    let out = Stored::from_sealed("acme", &sealed)
        .with(None, |r| kb.unseal(&schema, r))
        .unwrap();
    assert_eq!(out.values[0].value(), Some(&b"shared"[..]));
}

#[tokio::test]
async fn configuration_changes_are_audited_and_bound_to_the_tenant() {
    let fx = Fixture::new(&["acme"]).await;
    let key = KeyRef::new("local:acme").unwrap();
    let mut cfg = config_for("acme", key);
    cfg.revision = 2;
    // Saving acme's configuration from globex's context is refused.
    assert!(matches!(
        fx.cmk.configure_tenant(&ctx("globex"), &cfg).await,
        Err(Error::TenantMismatch { .. })
    ));
    fx.cmk.configure_tenant(&ctx("acme"), &cfg).await.unwrap();
    let names: Vec<_> = fx
        .sink
        .take()
        .iter()
        .map(|e| (e.name.as_str(), e.outcome.clone()))
        .collect();
    assert_eq!(names.len(), 2);
    assert!(
        names
            .iter()
            .all(|(n, _)| *n == "ADMIN_TENANT_CONFIG_CHANGED")
    );
    assert_eq!(names[1].1, cmk_core::event::Outcome::Success);
}

#[tokio::test]
async fn the_kms_sees_only_bound_associated_data() {
    // Sanity of the test double: the local KMS refuses other associated data.
    let fx = Fixture::new(&["acme"]).await;
    let e = entry(&fx, "acme", Purpose::Kek, "private").await;
    let wrong = Aad::new("cmk/registry").text("something else");
    let err = fx
        .kms
        .unwrap(
            &e.cmk_ref,
            &e.wrapped,
            &cmk_core::kms::KmsContext::new(wrong),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, KmsErrorKind::Invalid);
}

/// A KMS that drops the associated data it is given (a misconfigured server, a provider
/// bug): wraps still round-trip, but bind nothing.
#[derive(Debug)]
struct IgnoresContext(cmk_core::kms::local::LocalKms);

#[async_trait::async_trait]
impl Kms for IgnoresContext {
    fn provider(&self) -> &str {
        "local"
    }
    async fn wrap(
        &self,
        key: &KeyRef,
        plaintext: &[u8],
        _context: &cmk_core::kms::KmsContext,
    ) -> Result<Vec<u8>, cmk_core::kms::KmsError> {
        let none = cmk_core::kms::KmsContext::from_bytes(b"");
        self.0.wrap(key, plaintext, &none).await
    }
    async fn unwrap(
        &self,
        key: &KeyRef,
        wrapped: &[u8],
        _context: &cmk_core::kms::KmsContext,
    ) -> Result<cmk_core::secret::SecretBytes, cmk_core::kms::KmsError> {
        let none = cmk_core::kms::KmsContext::from_bytes(b"");
        self.0.unwrap(key, wrapped, &none).await
    }
}

#[tokio::test]
async fn onboarding_refuses_a_kms_that_does_not_bind_the_context() {
    let local = cmk_core::kms::local::LocalKms::in_memory();
    let key = local.create_key("acme").unwrap();
    let registry = std::sync::Arc::new(cmk_core::registry::MemoryRegistry::new());
    let cmk = cmk_core::Cmk::builder()
        .kms(std::sync::Arc::new(IgnoresContext(local)))
        .registry(registry.clone())
        .configs(std::sync::Arc::new(
            cmk_core::tenant::MemoryConfigStore::new(cmk_core::tenant::OperatorKey::new(
                cmk_core::secret::SecretKey::from_bytes([1; 32]),
            )),
        ))
        .build()
        .unwrap();
    let c = ctx("acme");
    cmk.configure_tenant(&c, &config_for("acme", key))
        .await
        .unwrap();
    let err = cmk.onboard(&c).await.unwrap_err();
    assert_eq!(kms_kind(&err), Some(KmsErrorKind::Invalid), "{err:?}");
    assert!(err.to_string().contains("does not bind"), "{err}");
    assert!(registry.entries(c.tenant()).await.unwrap().is_empty());
}

#[tokio::test]
async fn ensure_tenant_does_only_what_is_missing_and_nothing_when_all_matches() {
    let fx = Fixture::new(&[]).await;
    let c = ctx("acme");
    let key = fx.local.create_key("acme").unwrap();
    let config = config_for("acme", key.clone());

    let first = fx.cmk.ensure_tenant(&c, &config).await.unwrap();
    assert!(first.configured);
    assert!(first.onboarded.as_ref().unwrap().entries_written >= 5);
    fx.cmk.keys_for(&c, &["private"]).await.unwrap();

    // A restart with the same configuration: no write, no KMS call.
    fx.kms.reset();
    let again = fx.cmk.ensure_tenant(&c, &config).await.unwrap();
    assert_eq!((again.configured, again.onboarded), (false, None));
    assert_eq!(fx.kms.calls(), 0);

    // A new class: the configuration is saved as the next revision and only its KEK is made.
    let mut grown = config.clone();
    grown
        .policies
        .insert(class("finance"), cmk_core::Policy::new(key));
    let third = fx.cmk.ensure_tenant(&c, &grown).await.unwrap();
    assert!(third.configured);
    assert_eq!(third.onboarded.unwrap().entries_written, 1);
    assert_eq!(fx.configs.load(c.tenant()).await.unwrap().revision, 2);
    fx.cmk.keys_for(&c, &["finance"]).await.unwrap();
}

#[tokio::test]
async fn ensure_tenant_never_writes_over_a_tampered_configuration_nor_revives_a_shred() {
    let fx = Fixture::new(&["acme"]).await;
    let c = ctx("acme");
    let config = fx.configs.load(c.tenant()).await.unwrap();
    let mut record = fx.configs.raw(c.tenant()).unwrap();
    record.mac[0] ^= 1; // a database writer edits the stored record
    fx.configs.put_raw(record.clone()).unwrap();
    let err = fx.cmk.ensure_tenant(&c, &config).await.unwrap_err();
    assert!(matches!(err, Error::ConfigIntegrity { .. }), "{err:?}");
    assert_eq!(
        fx.configs.raw(c.tenant()).unwrap(),
        record,
        "left for the operator"
    );

    let fx = Fixture::new(&["acme"]).await;
    let config = fx.configs.load(c.tenant()).await.unwrap();
    fx.cmk.shred_tenant(&c).await.unwrap();
    let err = fx.cmk.ensure_tenant(&c, &config).await.unwrap_err();
    assert!(matches!(err, Error::TenantShredded { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_starting_at_once_both_ensure_the_tenant() {
    let fx = Fixture::new(&[]).await;
    let key = fx.local.create_key("acme").unwrap();
    let config = config_for("acme", key);
    let other = cmk_core::Cmk::builder()
        .kms(fx.kms.clone())
        .registry(fx.registry.clone())
        .configs(fx.configs.clone())
        .build()
        .unwrap();
    let c = ctx("acme");
    for _ in 0..20 {
        let (a, b) = tokio::join!(
            fx.cmk.ensure_tenant(&c, &config),
            other.ensure_tenant(&c, &config)
        );
        a.unwrap();
        b.unwrap();
    }
    assert_eq!(fx.configs.load(c.tenant()).await.unwrap().revision, 1);
    other.keys_for(&c, &["private"]).await.unwrap();
}

/// The `ADMIN_INTEGRITY_FAILURE` events' error kinds, taken from `sink`.
fn integrity_alerts(sink: &cmk_core::event::MemorySink) -> Vec<String> {
    sink.take()
        .into_iter()
        .filter(|e| e.name == cmk_core::event::EventName::AdminIntegrityFailure)
        .map(|e| {
            let json = serde_json::to_string(&e).unwrap();
            assert!(!json.contains("planted-forgery"), "forged content: {json}");
            match e.outcome {
                cmk_core::event::Outcome::Failure { error } => error,
                other => panic!("{other:?}"),
            }
        })
        .collect()
}

/// Issue 15 §1.3: a configuration record that fails its MAC, and a shred tombstone (forged or
/// not: cmk cannot tell), are `ADMIN_INTEGRITY_FAILURE` events, sent to the tenant's last known
/// sink and to the operator's, with nothing of the forged record in them. Before, none was
/// emitted.
#[tokio::test]
async fn integrity_failures_alert_the_tenant_and_the_operator() {
    use cmk_core::audit::Router;
    use cmk_core::event::MemorySink;
    use std::sync::Arc;
    let fx = Fixture::new(&["acme"]).await;
    let c = doctor("acme");
    let (siem, operator) = (Arc::new(MemorySink::new()), Arc::new(MemorySink::new()));
    let process = |sink: Arc<Router>| {
        cmk_core::Cmk::builder()
            .clock(fx.clock.clone())
            .kms(fx.kms.clone())
            .registry(fx.registry.clone())
            .configs(fx.configs.clone())
            .sink(sink)
            .build()
            .unwrap()
    };
    let router = || Arc::new(Router::new(operator.clone()).with_sink("siem-acme", siem.clone()));
    let cmk = process(router());
    let mut config = fx.configs.load(c.tenant()).await.unwrap();
    config.audit_sink = Some("siem-acme".into());
    config.revision += 1;
    cmk.configure_tenant(&c, &config).await.unwrap();
    cmk.keys_for(&c, &ALL).await.unwrap();
    // Positive control: the tenant's events reach its SIEM, not the operator's sink.
    assert!(!siem.take().is_empty());
    assert!(operator.take().is_empty());

    // A database writer rewrites the record: its MAC no longer matches.
    let mut record = fx.configs.raw(c.tenant()).unwrap();
    let forged = String::from_utf8(record.content.clone()).unwrap();
    assert!(forged.contains("siem-acme"));
    record.content = forged.replace("siem-acme", "planted-forgery").into_bytes();
    fx.configs.put_raw(record).unwrap();
    fx.clock.advance(std::time::Duration::from_secs(3600)); // the view is reloaded
    let err = cmk.keys_for(&c, &ALL).await.unwrap_err();
    assert!(matches!(err, Error::ConfigIntegrity { .. }), "{err:?}");
    assert_eq!(integrity_alerts(&siem), ["config_integrity"]);
    assert_eq!(integrity_alerts(&operator), ["config_integrity"]);
    // A fresh process knows no route for the tenant: the operator's sink has it.
    let fresh = process(router());
    assert!(fresh.keys_for(&c, &ALL).await.is_err());
    let err = fresh.ensure_tenant(&c, &config).await.unwrap_err();
    assert!(matches!(err, Error::ConfigIntegrity { .. }), "{err:?}");
    assert_eq!(
        integrity_alerts(&operator),
        ["config_integrity", "config_integrity"]
    );
    assert!(integrity_alerts(&siem).is_empty());

    // A shred tombstone: every request for the tenant is refused, and alerts.
    let fx = Fixture::new(&["acme"]).await;
    fx.cmk.shred_tenant(&c).await.unwrap();
    fx.sink.take();
    assert!(fx.cmk.keys_for(&c, &ALL).await.is_err());
    assert_eq!(integrity_alerts(&fx.sink), ["tenant_shredded"]);
}
