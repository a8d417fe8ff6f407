//! Every metric of `cmk_core::meter` read back from a recorder, as an exporter sees them;
//! and every name listed in docs/EVENTS.md. One test: the recorder is process-global.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cmk_core::audit::{JsonLinesFile, Pipeline, PipelineConfig};
use cmk_core::event::{EventName, EventSink, Outcome, SecurityEvent};
use cmk_core::meter;
use common::*;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// One series: its name and labels, as `name{k=v,...}`.
fn series(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

#[derive(Default)]
struct Cell {
    counter: AtomicU64,
    gauge: Mutex<f64>,
    samples: Mutex<Vec<f64>>,
}

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.counter.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.counter.store(value, Ordering::Relaxed);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        *self.gauge.lock().unwrap() += value;
    }
    fn decrement(&self, value: f64) {
        *self.gauge.lock().unwrap() -= value;
    }
    fn set(&self, value: f64) {
        *self.gauge.lock().unwrap() = value;
    }
}

impl HistogramFn for Cell {
    fn record(&self, value: f64) {
        self.samples.lock().unwrap().push(value);
    }
}

/// A recorder that keeps every series in memory.
#[derive(Default)]
struct Memory {
    cells: Mutex<BTreeMap<String, Arc<Cell>>>,
    /// Gauges' highest values seen (a gauge may be back at 0 when read).
    described: Mutex<Vec<String>>,
}

impl Memory {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        Arc::clone(self.cells.lock().unwrap().entry(series(key)).or_default())
    }

    /// The sum of a counter's series whose name and labels contain `pattern`.
    fn count(&self, pattern: &str) -> u64 {
        self.cells
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.contains(pattern))
            .map(|(_, c)| c.counter.load(Ordering::Relaxed))
            .sum()
    }

    fn samples(&self, pattern: &str) -> usize {
        self.cells
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.contains(pattern))
            .map(|(_, c)| c.samples.lock().unwrap().len())
            .sum()
    }

    fn gauge(&self, name: &str) -> Option<f64> {
        let cells = self.cells.lock().unwrap();
        cells
            .get(&format!("{name}{{}}"))
            .map(|c| *c.gauge.lock().unwrap())
    }

    fn names(&self) -> Vec<String> {
        let cells = self.cells.lock().unwrap();
        let mut names: Vec<String> = cells
            .keys()
            .map(|k| k.split('{').next().unwrap().to_string())
            .collect();
        names.dedup();
        names
    }
}

impl Recorder for &'static Memory {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.described
            .lock()
            .unwrap()
            .push(key.as_str().to_string());
    }
    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.described
            .lock()
            .unwrap()
            .push(key.as_str().to_string());
    }
    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.described
            .lock()
            .unwrap()
            .push(key.as_str().to_string());
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.cell(key))
    }
}

fn recorder() -> &'static Memory {
    static MEMORY: OnceLock<&'static Memory> = OnceLock::new();
    MEMORY.get_or_init(|| {
        let memory: &'static Memory = Box::leak(Box::default());
        metrics::set_global_recorder(memory).unwrap();
        memory
    })
}

#[tokio::test]
async fn every_metric_is_recorded_and_documented() {
    let m = recorder();
    meter::describe();
    assert_eq!(
        *m.described.lock().unwrap(),
        meter::ALL,
        "every metric described"
    );

    // Onboarding wraps under the KMS: timed per provider and operation.
    let fx = Fixture::new(&["acme"]).await;
    assert!(m.samples("cmk_kms_request_seconds{op=wrap,provider=local}") >= 4);

    // A cold request misses and unwraps; a warm one hits.
    let c = ctx("acme");
    fx.cmk.keys_for(&c, &["private"]).await.unwrap();
    let misses = m.count(meter::LEASE_MISSES);
    assert!(misses >= 1);
    assert!(m.samples("cmk_kms_request_seconds{op=unwrap,provider=local}") >= 1);
    let hits = m.count(meter::LEASE_HITS);
    fx.cmk.keys_for(&c, &["private"]).await.unwrap();
    assert!(m.count(meter::LEASE_HITS) > hits, "warm");
    assert_eq!(m.count(meter::LEASE_MISSES), misses, "no new miss");

    // Renewal by the KMS.
    fx.clock.advance(Duration::from_secs(21 * 60));
    fx.cmk.renew_due().await;
    assert!(m.count(meter::LEASE_RENEWALS) >= 1);

    // The tenant disables its key: the next renewal is refused and the lease revoked.
    fx.local.disable("acme").unwrap();
    fx.clock.advance(Duration::from_secs(21 * 60));
    fx.cmk.renew_due().await;
    assert!(m.count(meter::LEASE_REVOCATIONS) >= 1);
    assert!(m.count("cmk_kms_errors_total{kind=denied,op=unwrap,provider=local}") >= 1);

    // The audit pipeline: events delivered; then a transport that fails fills the spool
    // (its gauge rises) and a spool at its cap loses events (counted).
    let dir = tempfile::tempdir().unwrap();
    let good = Pipeline::start(
        PipelineConfig::new(dir.path().join("spool-a")),
        JsonLinesFile::new(dir.path().join("events.jsonl"), 1 << 20, 2),
    )
    .unwrap();
    for _ in 0..10 {
        good.emit(event()).unwrap();
    }
    assert!(good.flush(Duration::from_secs(5)));
    assert!(m.count(meter::AUDIT_DELIVERED) >= 10);
    assert_eq!(m.gauge(meter::AUDIT_QUEUE_DEPTH), Some(0.0), "drained");

    let blocked = dir.path().join("not-a-file");
    std::fs::create_dir(&blocked).unwrap();
    let failing = Pipeline::start(
        PipelineConfig::new(dir.path().join("spool-b"))
            .with_spool_cap_bytes(8 * 1024)
            .with_retry(Duration::from_secs(60), Duration::from_secs(60)),
        JsonLinesFile::new(&blocked, 1 << 20, 2),
    )
    .unwrap();
    for _ in 0..200 {
        let _ = failing.emit(event());
    }
    failing.flush(Duration::from_millis(500));
    // One more round of the worker publishes the gauges after the spool filled.
    let _ = failing.emit(event());
    failing.flush(Duration::from_millis(500));
    let spooled = m.gauge(meter::AUDIT_SPOOL_BYTES).unwrap();
    assert!(spooled > 0.0 && spooled <= 8.0 * 1024.0, "{spooled}");
    assert_eq!(spooled as u64, failing.spooled_bytes());
    assert!(
        m.count(meter::AUDIT_LOST) > 0,
        "a full spool loses events, counted"
    );
    // Its SIEM never comes back: do not wait for it.
    failing.shutdown(Duration::from_millis(50));

    // Every metric was recorded, and each is documented.
    let recorded = m.names();
    let events_md =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/EVENTS.md")).unwrap();
    for name in meter::ALL {
        assert!(
            recorded.iter().any(|r| r == name),
            "{name} never recorded: {recorded:?}"
        );
        assert!(
            events_md.contains(&format!("`{name}`")),
            "{name} not in docs/EVENTS.md"
        );
    }
}

fn event() -> SecurityEvent {
    SecurityEvent::new(&ctx("acme"), EventName::DataDecrypt, Outcome::Success)
}
