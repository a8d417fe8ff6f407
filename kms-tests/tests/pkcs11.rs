//! The conformance suite on a PKCS#11 HSM: SoftHSM2 with the token that
//! `scripts/kms-services` initialises (`CMK_TEST_PKCS11_MODULE`, `CMK_TEST_PKCS11_TOKEN`,
//! `CMK_TEST_PKCS11_PIN`, `SOFTHSM2_CONF`).
#![cfg(feature = "pkcs11")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cmk_core::kms::pkcs11::Pkcs11Kms;
use cmk_core::kms::{KeyRef, Kms, KmsErrorKind};
use cmk_kms_tests::*;

struct SoftHsm {
    kms: Arc<Pkcs11Kms>,
    token: String,
    run: String,
    next: AtomicUsize,
}

impl SoftHsm {
    fn new() -> SoftHsm {
        let token = required("CMK_TEST_PKCS11_TOKEN");
        let kms = Pkcs11Kms::new(required("CMK_TEST_PKCS11_MODULE"))
            .unwrap()
            .with_token(&token, required("CMK_TEST_PKCS11_PIN"));
        // The token outlives test runs: labels are unique per run.
        let run = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        SoftHsm {
            kms: Arc::new(kms),
            token,
            run,
            next: AtomicUsize::new(0),
        }
    }
}

#[async_trait::async_trait]
impl Harness for SoftHsm {
    fn kms(&self) -> Arc<dyn Kms> {
        self.kms.clone()
    }
    async fn new_key(&self) -> KeyRef {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        self.kms
            .create_key(&self.token, &format!("cmk-{}-{n}", self.run))
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_softhsm() {
    let h = SoftHsm::new();
    round_trip(&h).await;
    wrong_key(&h).await;
    wrong_context(&h).await;
    corrupt_ciphertext(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_is_denied_destroyed_is_not_found_and_restored_recovers() {
    let h = SoftHsm::new();
    let key = h.new_key().await;
    let kms = h.kms();
    let blob = wrapped(kms.as_ref(), &key).await;
    h.kms.set_permitted(&key, false).await.unwrap(); // the HSM owner's revocation
    assert_refused(kms.as_ref(), &key, &blob, KmsErrorKind::Denied).await;
    h.kms.set_permitted(&key, true).await.unwrap();
    assert!(unwraps(kms.as_ref(), &key, &blob).await);
    h.kms.destroy_object(&key).await.unwrap();
    assert_refused(kms.as_ref(), &key, &blob, KmsErrorKind::NotFound).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_no_slot_is_unavailable() {
    let absent = Pkcs11Kms::new(required("CMK_TEST_PKCS11_MODULE"))
        .unwrap()
        .with_token("cmk-absent-token", "1234");
    let on_absent = KeyRef::new("pkcs11:cmk-absent-token/any").unwrap();
    unreachable_is_unavailable(&absent, &on_absent, Duration::from_secs(2)).await;
}

#[test]
fn the_pin_never_prints() {
    let pin = "pin-that-must-not-print";
    let kms = Pkcs11Kms::new(required("CMK_TEST_PKCS11_MODULE"))
        .unwrap()
        .with_token("some-token", pin);
    let shown = format!("{kms:?}");
    assert!(
        shown.contains("some-token"),
        "the check sees the output: {shown}"
    );
    assert!(!shown.contains(pin), "{shown}");
    // Nor does a failure: the token is in no slot, so no login is tried, and the error
    // names the token only.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(kms.unwrap(
            &KeyRef::new("pkcs11:some-token/k").unwrap(),
            &[1; 64],
            &context("acme", 1),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("some-token"), "{err}");
    assert!(!err.to_string().contains(pin), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_from_a_pool_serve_concurrent_callers() {
    let h = SoftHsm::new();
    let key = h.new_key().await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (kms, key) = (h.kms(), key.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let blob = wrapped(kms.as_ref(), &key).await;
                assert!(unwraps(kms.as_ref(), &key, &blob).await);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_management_from_several_tasks_at_once_succeeds() {
    let h = Arc::new(SoftHsm::new());
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                h.new_key().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
