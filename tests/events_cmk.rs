//! Security events of real cmk operations through the delivery pipeline: a fail-closed read
//! whose process is killed with SIGKILL right after it returned plaintext has its event
//! delivered by the next process; a full spool fails fail-closed tenants only, and the loss
//! is counted and reported as an `AUDIT_EVENTS_LOST` event; no field value ever appears in
//! an event, in JSON or in syslog form (the scan first finds a planted value).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cmk::audit::format::syslog_5424;
use cmk::audit::http::{HttpBatches, HttpFormat};
use cmk::audit::{JsonLinesFile, Pipeline, PipelineConfig};
use cmk::event::EventSink;
use cmk::kms::local::LocalKms;
use cmk::registry::MemoryRegistry;
use cmk::secret::SecretKey;
use cmk::tenant::{MemoryConfigStore, OperatorKey};
use cmk::{AuditMode, Cmk, Encrypted, RequestContext, TenantConfig, TenantId};
use common::dump::find_in_dump;
use common::receivers::{FileReceiver, HttpReceiver, Mode, Receiver};

#[derive(Debug, Clone, PartialEq, Encrypted)]
#[cmk(table = "notes", tenant = tenant_id, id = id, ids = "app")]
struct Note {
    id: i64,
    tenant_id: String,
    #[cmk(class = "private")]
    title: String,
    #[cmk(class = "restricted")]
    body: Option<String>,
}

fn config(spool: &Path) -> PipelineConfig {
    PipelineConfig::new(spool)
        .with_retry(Duration::from_millis(20), Duration::from_millis(200))
        .with_flush_interval(Duration::from_millis(20))
}

/// A `Cmk` whose events go to `sink`, with `tenants` onboarded (`audit` for every class;
/// `restricted` readable by the role `doctor` only).
async fn cmk_with(sink: Arc<dyn EventSink>, tenants: &[(&str, AuditMode)]) -> Cmk {
    let kms = Arc::new(LocalKms::in_memory());
    let cmk = Cmk::builder()
        .kms(kms.clone())
        .registry(Arc::new(MemoryRegistry::new()))
        .configs(Arc::new(MemoryConfigStore::new(OperatorKey::new(
            SecretKey::from_bytes([3; 32]),
        ))))
        .sink(sink)
        .build()
        .unwrap();
    for (tenant, audit) in tenants {
        let ctx = RequestContext::new(TenantId::new(*tenant).unwrap());
        let mut cfg = TenantConfig::new(ctx.tenant().clone(), kms.create_key(tenant).unwrap());
        for (class, p) in cfg.policies.iter_mut() {
            p.audit = *audit;
            if class.as_str() == "restricted" {
                *p = p.clone().with_readers(["doctor"]);
            }
        }
        cmk.configure_tenant(&ctx, &cfg).await.unwrap();
        cmk.onboard(&ctx).await.unwrap();
    }
    cmk
}

fn note(tenant: &str, id: i64, title: &str, body: &str) -> Note {
    Note {
        id,
        tenant_id: tenant.into(),
        title: title.into(),
        body: Some(body.into()),
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every JSON event in the receiver's files.
fn delivered(rx: &FileReceiver) -> Vec<serde_json::Value> {
    let _ = rx.ids(); // the files exist and parse
    let mut out = Vec::new();
    for f in std::fs::read_dir(rx.path.parent().unwrap()).unwrap() {
        let p = f.unwrap().path();
        if p.is_file()
            && p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("events.jsonl")
        {
            for line in std::fs::read_to_string(&p).unwrap().lines() {
                out.push(serde_json::from_str(line).unwrap());
            }
        }
    }
    out
}

/// The child's worker is stuck for the whole test in a delivery to a receiver that accepts
/// and never answers, so the read's event reaches disk only if the read itself put it there
/// before returning the plaintext.
#[test]
fn a_fail_closed_read_killed_right_after_is_delivered_by_the_next_process() {
    let dir = tempfile::tempdir().unwrap();
    let rx = HttpReceiver::start(false);
    rx.set_mode(Mode::Hang);
    let spool = dir.path().join("spool");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_reads_fail_closed",
            "--nocapture",
        ])
        .env("CMK_CHILD_TARGET", rx.url())
        .env("CMK_CHILD_SPOOL", &spool)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let read = lines.find(|l| l.as_ref().is_ok_and(|l| l == "READ"));
    assert!(read.is_some(), "the child read the row");
    child.kill().unwrap(); // SIGKILL, right after the plaintext came back
    child.wait().unwrap();
    assert!(
        rx.events().is_empty(),
        "nothing was delivered before the kill"
    );
    rx.set_mode(Mode::Up);
    let _next = Pipeline::start(
        config(&spool),
        HttpBatches::new(rx.url(), HttpFormat::JsonArray, Duration::from_secs(2)),
    )
    .unwrap();
    wait_until("the read's event", || {
        rx.events().iter().any(|e| {
            e["name"] == "DATA_DECRYPT"
                && e["table"] == "notes"
                && e["record_id"] == "7"
                && e["outcome"]["status"] == "success"
        })
    });
}

#[test]
#[ignore = "the child process of the fail-closed SIGKILL test; run by it"]
fn child_reads_fail_closed() {
    let var = |k: &str| std::env::var(k).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let pipeline = Arc::new(
        Pipeline::start(
            config(Path::new(&var("CMK_CHILD_SPOOL"))),
            HttpBatches::new(
                var("CMK_CHILD_TARGET"),
                HttpFormat::JsonArray,
                Duration::from_secs(600),
            ),
        )
        .unwrap(),
    );
    let cmk = rt.block_on(cmk_with(pipeline, &[("acme", AuditMode::FailClosed)]));
    let ctx = RequestContext::new(TenantId::new("acme").unwrap()).with_role("doctor");
    let keys = rt.block_on(cmk.keys_for(&ctx, Note::CLASSES)).unwrap();
    let sealed = note("acme", 7, "t", "b").seal(&keys).unwrap();
    let read = Note::unseal(&sealed, &keys).unwrap();
    assert_eq!(read.id, 7);
    println!("READ");
    std::thread::sleep(Duration::from_secs(600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_fails_fail_closed_tenants_only_and_the_loss_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let rx = FileReceiver::new(dir.path());
    rx.set_down(true);
    let pipeline = Arc::new(
        Pipeline::start(
            config(&dir.path().join("spool")).with_spool_cap_bytes(16 * 1024),
            JsonLinesFile::new(&rx.path, 1 << 20, 3),
        )
        .unwrap(),
    );
    let cmk = cmk_with(
        pipeline.clone(),
        // Tenant ids of one length: their events take the same room in the spool.
        &[
            ("acme", AuditMode::FailClosed),
            ("beta", AuditMode::BestEffort),
        ],
    )
    .await;
    let acme = RequestContext::new(TenantId::new("acme").unwrap()).with_role("doctor");
    let beta = RequestContext::new(TenantId::new("beta").unwrap()).with_role("doctor");
    let acme_keys = cmk.keys_for(&acme, Note::CLASSES).await.unwrap();
    let beta_keys = cmk.keys_for(&beta, Note::CLASSES).await.unwrap();
    let a = note("acme", 1, "t", "b").seal(&acme_keys).unwrap();
    let g = note("beta", 2, "t", "b").seal(&beta_keys).unwrap();

    // beta's reads fill the spool while the receiver is down, and then go on.
    let lost = || pipeline.stats().lost.load(Ordering::Relaxed);
    let mut reads = 0;
    while lost() == 0 {
        Note::unseal(&g, &beta_keys).unwrap();
        reads += 1;
        assert!(reads < 100_000, "the spool never filled");
        if reads % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    for _ in 0..10 {
        Note::unseal(&g, &beta_keys).unwrap();
    }
    // acme is fail-closed: without room for its event, no plaintext.
    let err = Note::unseal(&a, &acme_keys).unwrap_err();
    assert!(matches!(err, cmk::Error::AuditFailClosed(_)), "{err:?}");
    assert!(pipeline.spooled_bytes() <= 16 * 1024);

    // The receiver comes back: the spool drains and the loss is reported per tenant.
    rx.set_down(false);
    wait_until("the loss report", || {
        delivered(&rx)
            .iter()
            .any(|e| e["name"] == "AUDIT_EVENTS_LOST" && e["tenant"] == "beta")
    });
    let events = delivered(&rx);
    let report = events
        .iter()
        .find(|e| e["name"] == "AUDIT_EVENTS_LOST" && e["tenant"] == "beta")
        .unwrap();
    let reported: u64 = report["metadata"]["lost"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(reported >= 10, "{report}");
    assert_eq!(report["category"], "AUDIT");
    assert!(
        events
            .iter()
            .any(|e| e["name"] == "AUDIT_EVENTS_LOST" && e["tenant"] == "acme"),
        "acme's refused read counts as a lost event too"
    );
    // And acme reads again now that its events can be recorded.
    wait_until("an empty spool", || pipeline.spooled_bytes() == 0);
    assert!(Note::unseal(&a, &acme_keys).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_field_value_appears_in_any_event() {
    let dir = tempfile::tempdir().unwrap();
    let rx = FileReceiver::new(dir.path());
    let pipeline = Arc::new(
        Pipeline::start(
            config(&dir.path().join("spool")),
            JsonLinesFile::new(&rx.path, 1 << 20, 3),
        )
        .unwrap(),
    );
    let cmk = cmk_with(pipeline.clone(), &[("acme", AuditMode::BestEffort)]).await;
    // The planted control: request metadata is the application's to put in events.
    let planted = "Planted-Metadata-Marmot";
    let ctx = RequestContext::new(TenantId::new("acme").unwrap())
        .with_role("doctor")
        .with_metadata("ticket", planted);
    let keys = cmk.keys_for(&ctx, Note::CLASSES).await.unwrap();
    let canaries = ["Canary-Title-Pelican", "Canary-Body-Narwhal"];
    let sealed = note("acme", 1, canaries[0], canaries[1])
        .seal(&keys)
        .unwrap();
    Note::unseal(&sealed, &keys).unwrap();
    // A reader without the role (denied, partial), a tampered row (failure), another tenant.
    let nurse = keys
        .with_context(
            RequestContext::new(TenantId::new("acme").unwrap()).with_metadata("ticket", planted),
        )
        .unwrap();
    let _ = Note::unseal(&sealed, &nurse);
    let _ = Note::unseal_partial(&sealed, &nurse);
    let mut tampered = sealed.clone();
    tampered.title[20] ^= 1;
    assert!(Note::unseal(&tampered, &keys).is_err());
    let mut moved = sealed.clone();
    moved.id = 2;
    assert!(Note::unseal(&moved, &keys).is_err());
    assert!(pipeline.flush(Duration::from_secs(10)));
    wait_until("the events", || delivered(&rx).len() >= 6);

    let json = std::fs::read(&rx.path).unwrap();
    let syslog: String = delivered(&rx)
        .into_iter()
        .map(|v| syslog_5424(&serde_json::from_value(v).unwrap(), "host", 1) + "\n")
        .collect();
    for text in [&json[..], syslog.as_bytes()] {
        assert!(
            find_in_dump(text, planted).is_some(),
            "the scan finds the planted value"
        );
        for c in canaries {
            assert_eq!(find_in_dump(text, c), None, "field value {c} in an event");
        }
    }
}

#[tokio::test]
async fn events_name_the_operation_and_leases_count_their_cached_uses() {
    use cmk::clock::ManualClock;
    use cmk::event::{EventName, MemorySink, sealing_as};
    let sink = Arc::new(MemorySink::new());
    let clock = Arc::new(ManualClock::new());
    let kms = Arc::new(LocalKms::in_memory());
    let cmk = Cmk::builder()
        .kms(kms.clone())
        .registry(Arc::new(MemoryRegistry::new()))
        .configs(Arc::new(MemoryConfigStore::new(OperatorKey::new(
            SecretKey::from_bytes([3; 32]),
        ))))
        .sink(sink.clone())
        .clock(clock.clone())
        .build()
        .unwrap();
    let ctx = RequestContext::new(TenantId::new("acme").unwrap());
    let cfg = TenantConfig::new(ctx.tenant().clone(), kms.create_key("acme").unwrap());
    cmk.configure_tenant(&ctx, &cfg).await.unwrap();
    cmk.onboard(&ctx).await.unwrap();
    let keys = cmk.keys_for(&ctx, Note::CLASSES).await.unwrap();
    let n = note("acme", 1, "t", "b");
    let sealed = n.seal(&keys).unwrap();
    let updated = sealing_as(EventName::DataUpdate, || n.seal(&keys)).unwrap();
    let migrated = sealing_as(EventName::DataMigrate, || n.seal(&keys)).unwrap();
    assert!(
        n.seal(&keys).is_ok(),
        "the name applies inside the closure only"
    );
    for s in [&sealed, &updated, &migrated] {
        Note::unseal(s, &keys).unwrap();
    }
    let names: Vec<&str> = sink
        .events()
        .iter()
        .filter(|e| e.table.as_deref() == Some("notes"))
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "DATA_ENCRYPT",
            "DATA_UPDATE",
            "DATA_MIGRATE",
            "DATA_ENCRYPT",
            "DATA_DECRYPT",
            "DATA_DECRYPT",
            "DATA_DECRYPT"
        ]
    );
    // One renewal interval later: each renewed KEK lease reports the uses it served.
    clock.advance(Duration::from_secs(21 * 60));
    cmk.renew_due().await;
    let renewed: Vec<_> = sink
        .events()
        .into_iter()
        .filter(|e| e.name == EventName::KmsLeaseRenewed && !e.classes.is_empty())
        .collect();
    assert!(!renewed.is_empty());
    let private = renewed
        .iter()
        .find(|e| e.classes[0] == "private")
        .expect("the private KEK lease renewed");
    assert_eq!(
        private.cached_uses,
        Some(7),
        "4 seals and 3 unseals of the private class"
    );
}

#[tokio::test]
async fn tenants_are_routed_to_their_sink_and_endpoints_must_be_allowed() {
    use cmk::audit::{AllowList, Router};
    use cmk::event::MemorySink;
    let default = Arc::new(MemorySink::new());
    let eu = Arc::new(MemorySink::new());
    let router = Arc::new(
        Router::new(default.clone())
            .with_sink("siem-eu", eu.clone())
            .with_endpoints(
                AllowList::new()
                    .allow("syslog+tcp://siem.acme.example:6514")
                    .unwrap(),
                |endpoint| Err(cmk::event::SinkError(format!("not built here: {endpoint}"))),
            ),
    );
    let kms = Arc::new(LocalKms::in_memory());
    let cmk = Cmk::builder()
        .kms(kms.clone())
        .registry(Arc::new(MemoryRegistry::new()))
        .configs(Arc::new(MemoryConfigStore::new(OperatorKey::new(
            SecretKey::from_bytes([3; 32]),
        ))))
        .sink(router)
        .build()
        .unwrap();
    for (tenant, sink) in [("acme", Some("siem-eu")), ("globex", None)] {
        let ctx = RequestContext::new(TenantId::new(tenant).unwrap());
        let mut cfg = TenantConfig::new(ctx.tenant().clone(), kms.create_key(tenant).unwrap());
        cfg.audit_sink = sink.map(str::to_string);
        cmk.configure_tenant(&ctx, &cfg).await.unwrap();
        cmk.onboard(&ctx).await.unwrap();
        let keys = cmk.keys_for(&ctx, Note::CLASSES).await.unwrap();
        note(tenant, 1, "t", "b").seal(&keys).unwrap();
    }
    let tenants = |s: &MemorySink| -> std::collections::BTreeSet<String> {
        s.events().iter().map(|e| e.tenant.to_string()).collect()
    };
    assert_eq!(tenants(&eu), ["acme".to_string()].into());
    assert!(
        !tenants(&default).contains("acme"),
        "the route precedes acme's first event"
    );
    assert!(tenants(&default).contains("globex"));
    // An endpoint off the allow-list, or a sink nobody registered: the configuration is
    // refused and the route stays.
    let ctx = RequestContext::new(TenantId::new("acme").unwrap());
    let key = kms.create_key("acme-2").unwrap();
    for bad in ["syslog+tcp://attacker.example:514", "siem-us"] {
        let mut cfg = TenantConfig::new(ctx.tenant().clone(), key.clone());
        cfg.audit_sink = Some(bad.into());
        let err = cmk.configure_tenant(&ctx, &cfg).await.unwrap_err();
        assert!(matches!(err, cmk::Error::InvalidConfig(_)), "{err:?}");
    }
}

#[test]
fn the_events_document_names_every_event() {
    let doc = include_str!("../docs/EVENTS.md");
    for name in cmk::event::EventName::ALL {
        assert!(doc.contains(&format!("`{}`", name.as_str())), "{name:?}");
    }
    assert!(doc.contains(cmk::audit::format::JSON_SCHEMA));
}
