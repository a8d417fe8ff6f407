//! The conformance suite on a KMIP server: PyKMIP over mutual TLS 1.2 with the EC P-256
//! certificates `scripts/kms-services` makes (`CMK_TEST_KMIP_ADDR`, `CMK_TEST_KMIP_PKI`).
#![cfg(feature = "kmip")]

use std::sync::Arc;
use std::time::Duration;

use cmk_core::kms::kmip::{KmipKms, KmipSettings};
use cmk_core::kms::{KeyRef, Kms, KmsErrorKind};
use cmk_kms_tests::*;

fn settings(address: &str) -> KmipSettings {
    let pki = std::path::PathBuf::from(required("CMK_TEST_KMIP_PKI"));
    KmipSettings::new(
        address,
        "127.0.0.1",
        pki.join("ca.crt"),
        pki.join("client.crt"),
        pki.join("client.key"),
    )
}

struct PyKmip {
    kms: Arc<KmipKms>,
}

impl PyKmip {
    fn new() -> PyKmip {
        let kms = KmipKms::new(settings(&required("CMK_TEST_KMIP_ADDR"))).unwrap();
        PyKmip { kms: Arc::new(kms) }
    }
}

#[async_trait::async_trait]
impl Harness for PyKmip {
    fn kms(&self) -> Arc<dyn Kms> {
        self.kms.clone()
    }
    async fn new_key(&self) -> KeyRef {
        self.kms.create_key().await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_pykmip() {
    let h = PyKmip::new();
    round_trip(&h).await;
    wrong_key(&h).await;
    wrong_context(&h).await;
    corrupt_ciphertext(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_is_denied_and_destroyed_is_not_found() {
    let h = PyKmip::new();
    let key = h.new_key().await;
    let kms = h.kms();
    let blob = wrapped(kms.as_ref(), &key).await;
    assert!(unwraps(kms.as_ref(), &key, &blob).await);
    h.kms.revoke(&key, false).await.unwrap(); // the tenant's kill switch
    assert_refused(kms.as_ref(), &key, &blob, KmsErrorKind::Denied).await;
    h.kms.destroy(&key).await.unwrap();
    assert_refused(kms.as_ref(), &key, &blob, KmsErrorKind::NotFound).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_or_silent_server_is_unavailable_within_the_timeout() {
    let key = KeyRef::new("kmip:1").unwrap();
    let short = |addr: String| {
        KmipKms::new(
            settings(&addr).with_timeouts(Duration::from_millis(500), Duration::from_secs(1)),
        )
        .unwrap()
    };
    let refused = short(closed_port().to_string());
    unreachable_is_unavailable(&refused, &key, Duration::from_secs(2)).await;
    let (addr, _server) = silent_server();
    let silent = short(addr.to_string());
    unreachable_is_unavailable(&silent, &key, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_refused() {
    // The client's own certificate is not a CA: trusting it alone, the real server's
    // certificate cannot verify, and no key operation happens.
    let pki = std::path::PathBuf::from(required("CMK_TEST_KMIP_PKI"));
    let mut s = settings(&required("CMK_TEST_KMIP_ADDR"));
    s.ca_pem = pki.join("client.crt");
    let untrusting = KmipKms::new(s).unwrap();
    let key = KeyRef::new("kmip:1").unwrap();
    unreachable_is_unavailable(&untrusting, &key, Duration::from_secs(5)).await;
}
