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
//! `cargo bench -p cmk-core --bench seal`

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use criterion::{Criterion, criterion_group};

use cmk_core::crypto::rng;
use cmk_core::event::{EventName, EventSink, Outcome, SecurityEvent, SinkError};
use cmk_core::format::aad::Aad;
use cmk_core::kms::local::LocalKms;
use cmk_core::registry::MemoryRegistry;
use cmk_core::schema::{FieldSpec, RowSchema};
use cmk_core::seal::StoredRow;
use cmk_core::secret::SecretKey;
use cmk_core::tenant::{MemoryConfigStore, OperatorKey};
use cmk_core::{Class, Cmk, RequestContext, TenantConfig, TenantId};

#[derive(Debug, Default)]
struct CountingSink(AtomicU64);
impl EventSink for CountingSink {
    fn emit(&self, e: SecurityEvent) -> Result<(), SinkError> {
        black_box(&e);
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

const TABLE: &str = "bench_rows";
const COLUMNS: [&str; 3] = ["alpha", "bravo", "charlie"];

/// The hand-written envelope.
struct Baseline {
    kek: Aes256Gcm,
    /// Associated data as long as cmk's for the same field / DEK wrap.
    field_aad: Vec<Vec<u8>>,
    dek_aad: [Vec<u8>; 2],
}

struct BaselineRow {
    /// nonce ‖ encrypted DEK ‖ tag, one owned buffer per class (it must be stored, as cmk's
    /// key column is).
    wrapped: [Vec<u8>; 2],
    fields: [Vec<u8>; 3],
}

impl Baseline {
    fn new() -> Self {
        // Same lengths as cmk's associated data (built with cmk's encoder, then replaced by
        // filler: only the length matters to GHASH's cost).
        let field_aad_len = |col: &str, class: &str| {
            Aad::new("cmk/field")
                .u8(1)
                .u8(0)
                .text("acme")
                .text(TABLE)
                .text(col)
                .text(class)
                .row_id(None)
                .as_bytes()
                .len()
        };
        let dek_aad_len = |class: &str, list: usize| {
            Aad::new("cmk/dek")
                .u8(1)
                .text("acme")
                .text(TABLE)
                .text(class)
                .u32(0)
                .u32(1)
                .row_id(None)
                .bytes(&vec![0; list])
                .as_bytes()
                .len()
        };
        Baseline {
            kek: Aes256Gcm::new(&[7u8; 32].into()),
            field_aad: vec![
                vec![1; field_aad_len(COLUMNS[0], "private")],
                vec![2; field_aad_len(COLUMNS[1], "private")],
                vec![3; field_aad_len(COLUMNS[2], "restricted")],
            ],
            dek_aad: [
                vec![4; dek_aad_len("private", 12)],
                vec![5; dek_aad_len("restricted", 8)],
            ],
        }
    }

    fn seal(&self, values: &[&[u8]; 3]) -> BaselineRow {
        let mut row = BaselineRow {
            wrapped: Default::default(),
            fields: Default::default(),
        };
        let classes: [&[usize]; 2] = [&[0, 1], &[2]];
        for (k, members) in classes.iter().enumerate() {
            let dek: [u8; 32] = rng::array().unwrap();
            let cipher = Aes256Gcm::new(&dek.into());
            for &i in *members {
                let nonce: [u8; 12] = rng::array().unwrap();
                let mut out = Vec::with_capacity(12 + values[i].len() + 16);
                out.extend_from_slice(&nonce);
                out.extend_from_slice(values[i]);
                let tag = cipher
                    .encrypt_in_place_detached(
                        Nonce::from_slice(&nonce),
                        &self.field_aad[i],
                        &mut out[12..],
                    )
                    .unwrap();
                out.extend_from_slice(&tag);
                row.fields[i] = out;
            }
            let nonce: [u8; 12] = rng::array().unwrap();
            let mut w = Vec::with_capacity(60);
            w.extend_from_slice(&nonce);
            w.extend_from_slice(&dek);
            let tag = self
                .kek
                .encrypt_in_place_detached(
                    Nonce::from_slice(&nonce),
                    &self.dek_aad[k],
                    &mut w[12..],
                )
                .unwrap();
            w.extend_from_slice(&tag);
            row.wrapped[k] = w;
        }
        row
    }

    fn unseal(&self, row: &BaselineRow) -> Vec<Vec<u8>> {
        let classes: [&[usize]; 2] = [&[0, 1], &[2]];
        let mut out = vec![Vec::new(), Vec::new(), Vec::new()];
        for (k, members) in classes.iter().enumerate() {
            let w = &row.wrapped[k];
            let mut dek = [0u8; 32];
            dek.copy_from_slice(&w[12..44]);
            self.kek
                .decrypt_in_place_detached(
                    Nonce::from_slice(&w[..12]),
                    &self.dek_aad[k],
                    &mut dek,
                    Tag::from_slice(&w[44..]),
                )
                .unwrap();
            let cipher = Aes256Gcm::new(&dek.into());
            for &i in *members {
                let f = &row.fields[i];
                let mut buf = f[12..f.len() - 16].to_vec();
                cipher
                    .decrypt_in_place_detached(
                        Nonce::from_slice(&f[..12]),
                        &self.field_aad[i],
                        &mut buf,
                        Tag::from_slice(&f[f.len() - 16..]),
                    )
                    .unwrap();
                out[i] = buf;
            }
        }
        out
    }
}

struct Setup {
    ctx: RequestContext,
    keys: Arc<cmk_core::TenantKeys>,
    schema: RowSchema,
    base: Baseline,
    v: [[u8; 32]; 3],
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let kms = Arc::new(LocalKms::in_memory());
    let key = kms.create_key("acme").unwrap();
    let cmk = Cmk::builder()
        .kms(kms)
        .registry(Arc::new(MemoryRegistry::new()))
        .configs(Arc::new(MemoryConfigStore::new(OperatorKey::new(
            SecretKey::from_bytes([1; 32]),
        ))))
        .sink(Arc::new(CountingSink::default()))
        .build()
        .unwrap();
    let ctx = RequestContext::new(TenantId::new("acme").unwrap());
    let keys = rt.block_on(async {
        cmk.configure_tenant(&ctx, &TenantConfig::new(ctx.tenant().clone(), key))
            .await
            .unwrap();
        cmk.onboard(&ctx).await.unwrap();
        cmk.keys_for(&ctx, &["private", "restricted"])
            .await
            .unwrap()
    });
    let class = |s: &str| Class::new(s).unwrap();
    let schema = RowSchema::new(
        TABLE,
        vec![
            FieldSpec::new(COLUMNS[0], class("private")),
            FieldSpec::new(COLUMNS[1], class("private")),
            FieldSpec::new(COLUMNS[2], class("restricted")),
        ],
    )
    .unwrap();
    Setup {
        ctx,
        keys,
        schema,
        base: Baseline::new(),
        v: [[0x41u8; 32], [0x42; 32], [0x43; 32]],
    }
}

fn benches(c: &mut Criterion) {
    let Setup {
        ctx,
        keys,
        schema,
        base,
        v,
    } = setup();
    let values: [Option<&[u8]>; 3] = [Some(&v[0]), Some(&v[1]), Some(&v[2])];

    let mut g = c.benchmark_group("row_3x32B_2_classes");
    g.bench_function("seal/cmk", |b| {
        b.iter(|| keys.seal(&ctx, &schema, None, black_box(&values)).unwrap())
    });
    g.bench_function("seal/raw_aes_gcm", |b| {
        b.iter(|| base.seal(black_box(&[&v[0], &v[1], &v[2]])))
    });

    let sealed = keys.seal(&ctx, &schema, None, &values).unwrap();
    let kc: Vec<Option<&[u8]>> = sealed.key_columns.iter().map(|k| k.as_deref()).collect();
    let fs: Vec<Option<&[u8]>> = sealed.fields.iter().map(|f| f.as_deref()).collect();
    let row = StoredRow {
        tenant: "acme",
        row_id: None,
        key_columns: &kc,
        fields: &fs,
    };
    let base_row = base.seal(&[&v[0], &v[1], &v[2]]);
    g.bench_function("unseal/cmk", |b| {
        b.iter(|| keys.unseal(&ctx, &schema, black_box(&row)).unwrap())
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
    let sealed = keys.seal(&ctx, &schema, None, &values).unwrap();
    let kc: Vec<Option<&[u8]>> = sealed.key_columns.iter().map(|k| k.as_deref()).collect();
    let fs: Vec<Option<&[u8]>> = sealed.fields.iter().map(|f| f.as_deref()).collect();
    let row = StoredRow {
        tenant: "acme",
        row_id: None,
        key_columns: &kc,
        fields: &fs,
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
    let mut ns = [Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        ns[4].push(time(&mut || {
            let _ = sink.emit(SecurityEvent::new(
                &ctx,
                EventName::DataDecrypt,
                Outcome::Success,
            ));
        }));
        ns[0].push(time(&mut || {
            drop(black_box(
                keys.seal(&ctx, &schema, None, black_box(&values)).unwrap(),
            ))
        }));
        ns[1].push(time(&mut || {
            drop(black_box(base.seal(black_box(&[&v[0], &v[1], &v[2]]))))
        }));
        ns[2].push(time(&mut || {
            drop(black_box(
                keys.unseal(&ctx, &schema, black_box(&row)).unwrap(),
            ))
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
         unseal cmk {:.0} ns, raw {:.0} ns, ratio {:.2}; of which the security event {:.0} ns",
        median(ns[0].clone()),
        median(ns[1].clone()),
        ratio(&ns[0], &ns[1]),
        median(ns[2].clone()),
        median(ns[3].clone()),
        ratio(&ns[2], &ns[3]),
        median(ns[4].clone()),
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
    let sealed = keys.seal(&ctx, &schema, None, &values).unwrap();
    let kc: Vec<Option<&[u8]>> = sealed.key_columns.iter().map(|k| k.as_deref()).collect();
    let fs: Vec<Option<&[u8]>> = sealed.fields.iter().map(|f| f.as_deref()).collect();
    let row = StoredRow {
        tenant: "acme",
        row_id: None,
        key_columns: &kc,
        fields: &fs,
    };
    let base_row = base.seal(&[&v[0], &v[1], &v[2]]);
    for _ in 0..n {
        match op {
            "seal_cmk" => drop(black_box(
                keys.seal(&ctx, &schema, None, black_box(&values)).unwrap(),
            )),
            "seal_raw" => drop(black_box(base.seal(black_box(&[&v[0], &v[1], &v[2]])))),
            "unseal_cmk" => drop(black_box(
                keys.unseal(&ctx, &schema, black_box(&row)).unwrap(),
            )),
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
