//! The conformance suite on the local KMS (a keyring file).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cmk_core::kms::local::LocalKms;
use cmk_core::kms::{KeyRef, Kms, KmsErrorKind};
use cmk_kms_tests::*;

struct Local {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    kms: Arc<LocalKms>,
    next: AtomicUsize,
}

impl Local {
    fn new() -> Local {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.keyring");
        let kms = Arc::new(LocalKms::open(&path).unwrap());
        Local {
            _dir: dir,
            path,
            kms,
            next: AtomicUsize::new(0),
        }
    }
}

#[async_trait::async_trait]
impl Harness for Local {
    fn kms(&self) -> Arc<dyn Kms> {
        self.kms.clone()
    }
    async fn new_key(&self) -> KeyRef {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        self.kms.create_key(&format!("key-{n}")).unwrap()
    }
}

#[tokio::test]
async fn conformance() {
    let h = Local::new();
    round_trip(&h).await;
    wrong_key(&h).await;
    wrong_context(&h).await;
    corrupt_ciphertext(&h).await;
}

#[tokio::test]
async fn disabled_is_denied_destroyed_is_not_found_and_reenabled_recovers() {
    let h = Local::new();
    let key = h.new_key().await;
    let kms = h.kms();
    let blob = wrapped(kms.as_ref(), &key).await;
    h.kms.disable(key.key_id()).unwrap();
    assert_refused(kms.as_ref(), &key, &blob, KmsErrorKind::Denied).await;
    h.kms.enable(key.key_id()).unwrap();
    assert!(unwraps(kms.as_ref(), &key, &blob).await);
    h.kms.destroy(key.key_id()).unwrap();
    assert_refused(kms.as_ref(), &key, &blob, KmsErrorKind::NotFound).await;
}

#[tokio::test]
async fn an_unreadable_keyring_is_unavailable() {
    let h = Local::new();
    let key = h.new_key().await;
    std::fs::write(&h.path, b"not a keyring").unwrap();
    unreachable_is_unavailable(h.kms.as_ref(), &key, Duration::from_secs(1)).await;
}
