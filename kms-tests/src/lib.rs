//! One conformance suite for every KMS provider: the same test functions run against the
//! local keyring and, with their features, against AWS KMS (moto server), PKCS#11
//! (SoftHSM2) and KMIP (PyKMIP), each on loopback.
//!
//! A provider's test file builds a [`Harness`] and calls the cases it can run; a case its
//! stand-in cannot show (moto does not enforce key state) is proven another way in that file,
//! under a name that says how.
#![forbid(unsafe_code)]

pub mod stand_ins;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cmk_core::format::aad::Aad;
use cmk_core::kms::{KeyRef, Kms, KmsContext, KmsError, KmsErrorKind};

/// A provider under test and the operator's hands on its stand-in.
#[async_trait::async_trait]
pub trait Harness: Send + Sync {
    /// The provider.
    fn kms(&self) -> Arc<dyn Kms>;
    /// Creates a fresh master key on the stand-in and returns its reference.
    async fn new_key(&self) -> KeyRef;
}

/// A context like a KEK wrap's.
pub fn context(tenant: &str, version: u32) -> KmsContext {
    KmsContext::new(
        Aad::new("cmk/registry")
            .u8(1)
            .text("kek")
            .text(tenant)
            .text("private")
            .u32(7)
            .u32(version),
    )
    .with("cmk:purpose", "kek")
    .with("cmk:tenant", tenant)
    .with("cmk:version", version.to_string())
}

const MATERIAL: [u8; 32] = [0x5a; 32];

/// A wrap unwraps to the same bytes; two wraps of the same bytes differ.
pub async fn round_trip(h: &dyn Harness) {
    let kms = h.kms();
    let key = h.new_key().await;
    let ctx = context("acme", 1);
    let a = kms.wrap(&key, &MATERIAL, &ctx).await.unwrap();
    let b = kms.wrap(&key, &MATERIAL, &ctx).await.unwrap();
    assert_ne!(a, b, "wraps are randomised");
    assert!(
        !a.windows(MATERIAL.len()).any(|w| w == MATERIAL),
        "no plaintext in the blob"
    );
    for blob in [&a, &b] {
        let back = kms.unwrap(&key, blob, &ctx).await.unwrap();
        assert_eq!(back.expose_secret(), MATERIAL);
    }
}

/// A blob unwrapped under another key is refused (not a transient failure).
pub async fn wrong_key(h: &dyn Harness) {
    let kms = h.kms();
    let (one, other) = (h.new_key().await, h.new_key().await);
    let ctx = context("acme", 1);
    let blob = kms.wrap(&one, &MATERIAL, &ctx).await.unwrap();
    let err = kms.unwrap(&other, &blob, &ctx).await.unwrap_err();
    assert!(!err.kind.is_transient(), "{err}");
}

/// A blob unwrapped with other associated data (another tenant, another version) is
/// *invalid*.
pub async fn wrong_context(h: &dyn Harness) {
    let kms = h.kms();
    let key = h.new_key().await;
    let blob = kms
        .wrap(&key, &MATERIAL, &context("acme", 1))
        .await
        .unwrap();
    for other in [context("globex", 1), context("acme", 2)] {
        let err = kms.unwrap(&key, &blob, &other).await.unwrap_err();
        assert_eq!(err.kind, KmsErrorKind::Invalid, "{err}");
    }
}

/// Every truncation and a flip of each byte (of the first 256) is an error, never other
/// bytes and never a panic.
pub async fn corrupt_ciphertext(h: &dyn Harness) {
    let kms = h.kms();
    let key = h.new_key().await;
    let ctx = context("acme", 1);
    let blob = kms.wrap(&key, &MATERIAL, &ctx).await.unwrap();
    for len in [0, 1, blob.len() / 2, blob.len() - 1] {
        assert!(
            kms.unwrap(&key, &blob[..len], &ctx).await.is_err(),
            "length {len}"
        );
    }
    for i in 0..blob.len().min(256) {
        let mut bad = blob.clone();
        bad[i] ^= 0x01;
        match kms.unwrap(&key, &bad, &ctx).await {
            Ok(back) => panic!(
                "byte {i} flipped and unwrapped to {} bytes",
                back.expose_secret().len()
            ),
            Err(e) => assert!(!e.kind.is_transient(), "byte {i}: {e}"),
        }
    }
}

/// A refusal of the kind expected, from both wrap and unwrap.
pub async fn assert_refused(
    kms: &dyn Kms,
    key: &KeyRef,
    blob: &[u8],
    kind: KmsErrorKind,
) -> KmsError {
    let ctx = context("acme", 1);
    let err = kms.unwrap(key, blob, &ctx).await.unwrap_err();
    assert_eq!(err.kind, kind, "unwrap: {err}");
    let wrap = kms.wrap(key, &MATERIAL, &ctx).await.unwrap_err();
    assert_eq!(wrap.kind, kind, "wrap: {wrap}");
    err
}

/// Wraps material under `key` for the lifecycle cases.
pub async fn wrapped(kms: &dyn Kms, key: &KeyRef) -> Vec<u8> {
    kms.wrap(key, &MATERIAL, &context("acme", 1)).await.unwrap()
}

/// Unwraps what [`wrapped`] made.
pub async fn unwraps(kms: &dyn Kms, key: &KeyRef, blob: &[u8]) -> bool {
    kms.unwrap(key, blob, &context("acme", 1))
        .await
        .is_ok_and(|b| b.expose_secret() == MATERIAL)
}

/// A provider that cannot reach its server fails *unavailable*, within `bound`.
pub async fn unreachable_is_unavailable(kms: &dyn Kms, key: &KeyRef, bound: Duration) {
    let start = Instant::now();
    let err = kms
        .unwrap(key, &[1; 64], &context("acme", 1))
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.kind, KmsErrorKind::Unavailable, "{err}");
    assert!(took <= bound, "took {took:?}, bound {bound:?}");
}

/// A TCP server on loopback that accepts connections and never answers (nor closes them),
/// for as long as the returned guard lives.
pub fn silent_server() -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let mut held = Vec::new();
        // Bounded: a test makes a handful of connections.
        for stream in listener.incoming().take(64) {
            match stream {
                Ok(s) => held.push(s),
                Err(_) => break,
            }
        }
    });
    (addr, handle)
}

/// A loopback port with nothing listening (bound, then released).
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Runs a bench binary's body on a two-worker runtime; does nothing when Cargo only builds
/// the bench (`cargo test --benches` passes no `--bench`).
pub fn bench_main<F: std::future::Future<Output = ()>>(body: impl FnOnce() -> F) {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(body());
}

/// The value of a variable the test-all script sets for an enabled provider; a build that
/// enables the provider without its stand-in fails here, never skips.
pub fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: this build enables the provider, so its tests must run \
             (`eval \"$(bash scripts/kms-services start)\"` sets it)"
        )
    })
}
