//! Latency of one wrap and one unwrap of 32 bytes of key material per provider, against its
//! stand-in on loopback (`eval "$(bash scripts/kms-services start)"` first):
//!
//! `cargo bench -p cmk-kms-tests --features aws,pkcs11,kmip --bench providers`
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use cmk_kms_tests::{context, stand_ins};

const ROUNDS: usize = 200;

fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = v.iter().sum::<Duration>() / u32::try_from(v.len()).unwrap();
    format!(
        "median {:>8.1} µs, p95 {:>8.1} µs, mean {:>8.1} µs",
        us(v[v.len() / 2]),
        us(v[v.len() * 95 / 100]),
        us(mean)
    )
}

async fn run() {
    let (have, missing, _dir) = stand_ins::all().await;
    println!(
        "{ROUNDS} wraps and {ROUNDS} unwraps per provider, one at a time, after 10 warm-up calls"
    );
    for s in have {
        let key = (s.new_key)().await;
        let ctx = context("acme", 1);
        let material = [7u8; 32];
        for _ in 0..10 {
            let blob = s.kms.wrap(&key, &material, &ctx).await.unwrap();
            s.kms.unwrap(&key, &blob, &ctx).await.unwrap();
        }
        let (mut wraps, mut unwraps) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let blob = s.kms.wrap(&key, &material, &ctx).await.unwrap();
            wraps.push(t.elapsed());
            let t = Instant::now();
            let back = s.kms.unwrap(&key, &blob, &ctx).await.unwrap();
            unwraps.push(t.elapsed());
            assert_eq!(back.expose_secret(), material);
        }
        println!("{:<18} wrap:   {}", s.name, summary(wraps));
        println!("{:<18} unwrap: {}", s.name, summary(unwraps));
    }
    for m in missing {
        println!("not run: {m}");
    }
}

fn main() {
    cmk_kms_tests::bench_main(run);
}
