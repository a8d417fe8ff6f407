//! Seal and unseal of one row (three 32-byte fields in two classes, keys already unwrapped)
//! against a hand-written envelope doing the same work with raw AES-256-GCM, in one run.
//!
//! The baseline: one random DEK per class, one AES-256-GCM encryption per field with an
//! associated data of the same length as cmk's, each DEK wrapped under a KEK whose key
//! schedule is expanded once, the same buffered OS randomness. It skips what cmk adds: the
//! byte layout with column lists, policy and reader checks, and the security event per row
//! (here delivered to a sink that only counts, so event construction is measured, delivery
//! not).
//!
//! cmk seals the way the derive does, into arrays the caller owns
//! (`TenantKeys::seal_into`), as the baseline fills arrays; `seal/cmk_vec` measures
//! `TenantKeys::seal`, which returns the row in `Vec`s (two more allocations).
//!
//! `cargo bench -p cmk-core --bench seal`

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group};

use cmk_core::TenantKeys;
use cmk_core::event::{EventName, EventSink, Outcome, SecurityEvent};
use cmk_core::model::derive_support::SealSlots;
use cmk_core::schema::RowSchema;
use cmk_core::seal::StoredRow;

#[path = "common/baseline.rs"]
mod baseline;
#[path = "common/setup.rs"]
mod setup;
use setup::{CountingSink, Setup};

fn setup() -> Setup {
    setup::setup_with(Arc::new(CountingSink::default()))
}

/// The row sealed the way the derive seals a model: into arrays the caller owns
/// (`TenantKeys::seal_into`), as the baseline writes into its arrays. `keys.seal`, which
/// returns the row in `Vec`s, is measured beside it (`seal/cmk_vec`).
fn seal_into_arrays(
    keys: &TenantKeys,
    schema: &RowSchema,
    values: &[Option<&[u8]>; 3],
) -> SealSlots<2, 3> {
    let mut out = SealSlots::<2, 3>::new();
    keys.seal_into(schema, None, values, out.as_out()).unwrap();
    out
}

fn benches(c: &mut Criterion) {
    let Setup {
        ctx: _,
        keys,
        schema,
        base,
        v,
    } = setup();
    let values: [Option<&[u8]>; 3] = [Some(&v[0]), Some(&v[1]), Some(&v[2])];

    let mut g = c.benchmark_group("row_3x32B_2_classes");
    g.bench_function("seal/cmk", |b| {
        b.iter(|| seal_into_arrays(&keys, &schema, black_box(&values)))
    });
    g.bench_function("seal/cmk_vec", |b| {
        b.iter(|| keys.seal(&schema, None, black_box(&values)).unwrap())
    });
    g.bench_function("seal/raw_aes_gcm", |b| {
        b.iter(|| base.seal(black_box(&[&v[0], &v[1], &v[2]])))
    });

    let sealed = keys.seal(&schema, None, &values).unwrap();
    let kc: Vec<Option<&[u8]>> = sealed.key_columns.iter().map(|k| k.as_deref()).collect();
    let fs: Vec<Option<&[u8]>> = sealed.fields.iter().map(|f| f.as_deref()).collect();
    let row = StoredRow {
        tenant: "acme",
        row_id: None,
        key_columns: &kc,
        fields: &fs,
        indexes: &[],
    };
    let base_row = base.seal(&[&v[0], &v[1], &v[2]]);
    g.bench_function("unseal/cmk", |b| {
        b.iter(|| keys.unseal(&schema, black_box(&row)).unwrap())
    });
    g.bench_function("unseal/raw_aes_gcm", |b| {
        b.iter(|| base.unseal(black_box(&base_row)))
    });
    g.finish();

    let sizes = (
        sealed
            .key_columns
            .iter()
            .flatten()
            .map(Vec::len)
            .collect::<Vec<_>>(),
        sealed
            .fields
            .iter()
            .flatten()
            .map(Vec::len)
            .collect::<Vec<_>>(),
    );
    println!(
        "sizes: key columns {:?} bytes, fields {:?} bytes for 32-byte plaintexts",
        sizes.0, sizes.1
    );
}

/// Ratios measured interleaved: each round times cmk and the baseline back to back, so drift
/// of this shared machine hits both; the median over rounds is reported.
fn interleaved_ratios() {
    let Setup {
        ctx,
        keys,
        schema,
        base,
        v,
    } = setup();
    let values: [Option<&[u8]>; 3] = [Some(&v[0]), Some(&v[1]), Some(&v[2])];
    let sealed = keys.seal(&schema, None, &values).unwrap();
    let kc: Vec<Option<&[u8]>> = sealed.key_columns.iter().map(|k| k.as_deref()).collect();
    let fs: Vec<Option<&[u8]>> = sealed.fields.iter().map(|f| f.as_deref()).collect();
    let row = StoredRow {
        tenant: "acme",
        row_id: None,
        key_columns: &kc,
        fields: &fs,
        indexes: &[],
    };
    let base_row = base.seal(&[&v[0], &v[1], &v[2]]);
    const ROUNDS: usize = 31;
    const ITERS: u32 = 4000;
    let time = |f: &mut dyn FnMut()| {
        let t = std::time::Instant::now();
        for _ in 0..ITERS {
            f();
        }
        t.elapsed().as_nanos() as f64 / f64::from(ITERS)
    };
    let sink = CountingSink::default();
    let mut ns: [Vec<f64>; 6] = Default::default();
    for _ in 0..ROUNDS {
        ns[4].push(time(&mut || {
            let _ = sink.emit(SecurityEvent::new(
                &ctx,
                EventName::DataDecrypt,
                Outcome::Success,
            ));
        }));
        ns[0].push(time(&mut || {
            drop(black_box(seal_into_arrays(
                &keys,
                &schema,
                black_box(&values),
            )))
        }));
        ns[5].push(time(&mut || {
            drop(black_box(
                keys.seal(&schema, None, black_box(&values)).unwrap(),
            ))
        }));
        ns[1].push(time(&mut || {
            drop(black_box(base.seal(black_box(&[&v[0], &v[1], &v[2]]))))
        }));
        ns[2].push(time(&mut || {
            drop(black_box(keys.unseal(&schema, black_box(&row)).unwrap()))
        }));
        ns[3].push(time(&mut || {
            drop(black_box(base.unseal(black_box(&base_row))))
        }));
    }
    let median = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    let ratio = |a: &[f64], b: &[f64]| median(a.iter().zip(b).map(|(x, y)| x / y).collect());
    println!(
        "interleaved medians over {ROUNDS} rounds of {ITERS}: seal cmk {:.0} ns, raw {:.0} ns, ratio {:.2}; \
         unseal cmk {:.0} ns, raw {:.0} ns, ratio {:.2}; of which the security event {:.0} ns; \
         seal returning Vecs (TenantKeys::seal) {:.0} ns, ratio {:.2}",
        median(ns[0].clone()),
        median(ns[1].clone()),
        ratio(&ns[0], &ns[1]),
        median(ns[2].clone()),
        median(ns[3].clone()),
        ratio(&ns[2], &ns[3]),
        median(ns[4].clone()),
        median(ns[5].clone()),
        ratio(&ns[5], &ns[1]),
    );
}

criterion_group! {
    name = seal;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = benches
}

/// `CMK_BENCH_ONLY=<op> CMK_BENCH_N=<n>` runs one operation n times and exits, for counting
/// instructions under `valgrind --tool=callgrind` (stable where wall time is not).
fn only(op: &str, n: u32) {
    let Setup {
        ctx,
        keys,
        schema,
        base,
        v,
    } = setup();
    let values: [Option<&[u8]>; 3] = [Some(&v[0]), Some(&v[1]), Some(&v[2])];
    let sealed = keys.seal(&schema, None, &values).unwrap();
    let kc: Vec<Option<&[u8]>> = sealed.key_columns.iter().map(|k| k.as_deref()).collect();
    let fs: Vec<Option<&[u8]>> = sealed.fields.iter().map(|f| f.as_deref()).collect();
    let row = StoredRow {
        tenant: "acme",
        row_id: None,
        key_columns: &kc,
        fields: &fs,
        indexes: &[],
    };
    let base_row = base.seal(&[&v[0], &v[1], &v[2]]);
    for _ in 0..n {
        match op {
            "seal_cmk" => drop(black_box(seal_into_arrays(
                &keys,
                &schema,
                black_box(&values),
            ))),
            "seal_cmk_vec" => drop(black_box(
                keys.seal(&schema, None, black_box(&values)).unwrap(),
            )),
            "seal_raw" => drop(black_box(base.seal(black_box(&[&v[0], &v[1], &v[2]])))),
            "unseal_cmk" => drop(black_box(keys.unseal(&schema, black_box(&row)).unwrap())),
            "unseal_raw" => drop(black_box(base.unseal(black_box(&base_row)))),
            "event" => {
                let _ = CountingSink::default().emit(SecurityEvent::new(
                    &ctx,
                    EventName::DataDecrypt,
                    Outcome::Success,
                ));
            }
            _ => {}
        }
    }
}

fn main() {
    if let Ok(op) = std::env::var("CMK_BENCH_ONLY") {
        let n = std::env::var("CMK_BENCH_N")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(10_000);
        return only(&op, n);
    }
    seal();
    Criterion::default().configure_from_args().final_summary();
    // Only under `cargo bench` (not `cargo test --benches` or a profiler run).
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--profile-time") {
        interleaved_ratios();
    }
}
