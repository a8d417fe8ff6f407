//! What security events cost: the enqueue on the request path, and the maximum unseal rate
//! with one event per row delivered to a JSON Lines file, against the same unseals whose
//! events are dropped unseen (event construction included in both), in one run.
//!
//! Three sinks, interleaved over rounds so drift of this shared machine hits all alike:
//! `NullSink` (takes and drops: the baseline), `TracingSink` (the default, without a
//! subscriber) and a `Pipeline` to a JSON Lines file (the worker writes and `fsync`s a
//! batch at a time on another thread). CPU time is the process's, all threads, so the
//! pipeline's worker is in it; its events are flushed to the file inside the timed span.
//!
//! `cargo bench -p cmk-core --bench events` (`CMK_BENCH_EVENTS=<rows per round>`)

#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cmk_core::audit::{JsonLinesFile, Pipeline, PipelineConfig};
use cmk_core::event::{EventName, EventSink, Outcome, SecurityEvent, SinkError, TracingSink};
use cmk_core::seal::StoredRow;

#[path = "common/baseline.rs"]
mod baseline;
#[path = "common/setup.rs"]
mod setup;

#[derive(Debug)]
struct NullSink;
impl EventSink for NullSink {
    fn emit(&self, e: SecurityEvent) -> Result<(), SinkError> {
        black_box(&e);
        Ok(())
    }
}

fn cpu_time() -> Duration {
    cpu_time::ProcessTime::now().as_duration()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let n: usize = std::env::var("CMK_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();

    // 1. The enqueue alone: pre-built events into a queue with room for all of them.
    let enqueue = {
        let pipeline = Pipeline::start(
            PipelineConfig::new(dir.path().join("spool-enqueue")).with_queue_capacity(n + 1),
            JsonLinesFile::new(dir.path().join("enqueue.jsonl"), 1 << 40, 2),
        )
        .unwrap();
        let ctx = cmk_core::RequestContext::new(cmk_core::TenantId::new("acme").unwrap());
        let mut rounds = Vec::new();
        for _ in 0..5 {
            let events: Vec<SecurityEvent> = (0..n)
                .map(|_| SecurityEvent::new(&ctx, EventName::DataDecrypt, Outcome::Success))
                .collect();
            let t = Instant::now();
            for e in events {
                let _ = pipeline.emit(e);
            }
            rounds.push(t.elapsed().as_nanos() as f64 / n as f64);
            assert!(pipeline.flush(Duration::from_secs(120)));
        }
        median(rounds)
    };

    // 2. Unseal at the maximum rate under each sink.
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let defaults = PipelineConfig::new(dir.path().join("spool"));
    let batch = env("CMK_BENCH_BATCH").map_or(defaults.batch_size, |b| b as usize);
    let linger = env("CMK_BENCH_LINGER_MS").map_or(defaults.linger, Duration::from_millis);
    let config = defaults.with_batch_size(batch).with_linger(linger);
    println!(
        "pipeline: batches of up to {}, linger {:?}, queue {}",
        config.batch_size, config.linger, config.queue_capacity
    );
    let pipeline = Arc::new(
        Pipeline::start(
            config,
            JsonLinesFile::new(dir.path().join("events.jsonl"), 1 << 40, 2),
        )
        .unwrap(),
    );
    let sinks: Vec<(&str, Arc<dyn EventSink>)> = vec![
        ("no delivery (NullSink)", Arc::new(NullSink)),
        (
            "TracingSink (default, no subscriber)",
            Arc::new(TracingSink),
        ),
        ("Pipeline to a JSON Lines file", pipeline.clone()),
    ];
    let setups: Vec<setup::Setup> = sinks
        .iter()
        .map(|(_, s)| setup::setup_with(Arc::clone(s)))
        .collect();
    let mut wall = vec![Vec::new(); sinks.len()];
    let mut cpu = vec![Vec::new(); sinks.len()];
    for _ in 0..7 {
        for (i, s) in setups.iter().enumerate() {
            let values: [Option<&[u8]>; 3] = [Some(&s.v[0]), Some(&s.v[1]), Some(&s.v[2])];
            let sealed = s.keys.seal(&s.schema, None, &values).unwrap();
            let kc: Vec<Option<&[u8]>> = sealed.key_columns.iter().map(|k| k.as_deref()).collect();
            let fs: Vec<Option<&[u8]>> = sealed.fields.iter().map(|f| f.as_deref()).collect();
            let row = StoredRow {
                tenant: "acme",
                row_id: None,
                key_columns: &kc,
                fields: &fs,
                indexes: &[],
            };
            let (c0, w0) = (cpu_time(), Instant::now());
            for _ in 0..n {
                black_box(s.keys.unseal(&s.schema, black_box(&row)).unwrap());
            }
            let w = w0.elapsed();
            if i == 2 {
                assert!(pipeline.flush(Duration::from_secs(120)));
            }
            wall[i].push(w.as_nanos() as f64 / n as f64);
            cpu[i].push((cpu_time() - c0).as_nanos() as f64 / n as f64);
        }
    }
    let (w, c): (Vec<f64>, Vec<f64>) = (
        wall.into_iter().map(median).collect(),
        cpu.into_iter().map(median).collect(),
    );
    let lost = pipeline
        .stats()
        .lost
        .load(std::sync::atomic::Ordering::Relaxed);
    let spooled = pipeline
        .stats()
        .spooled
        .load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "{n} unseals per round, medians over 7 interleaved rounds (one row: three 32-byte fields, two classes)"
    );
    println!(
        "{:<40} {:>12} {:>14} {:>12}",
        "sink", "wall ns/row", "rows/s (1 thr)", "cpu ns/row"
    );
    for (i, (name, _)) in sinks.iter().enumerate() {
        println!(
            "{name:<40} {:>12.0} {:>14.0} {:>12.0}",
            w[i],
            1e9 / w[i],
            c[i]
        );
    }
    println!(
        "slowdown at the maximum rate, JSON Lines pipeline against no delivery: {:+.1}% wall; CPU per delivered event {:.0} ns",
        (w[2] / w[0] - 1.0) * 100.0,
        c[2] - c[0]
    );
    println!(
        "enqueue on the request path (Pipeline::emit of a built event, queue not full): {enqueue:.0} ns"
    );
    println!("events lost: {lost}; spooled because the queue was full: {spooled}");
}
