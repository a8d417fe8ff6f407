//! The providers on their stand-ins, as the benches build them from the variables that
//! `scripts/kms-services` sets; `None` when this build or this machine lacks one.

use std::sync::Arc;

use cmk_core::kms::{KeyRef, Kms};

/// A fresh master key, on its way.
pub type KeyFuture = std::pin::Pin<Box<dyn std::future::Future<Output = KeyRef> + Send>>;

/// A provider ready for use, with a way to make fresh master keys on its stand-in.
// Exhaustive by design: test support: the suites build it.
#[allow(clippy::exhaustive_structs)]
pub struct StandIn {
    /// The provider's name.
    pub name: &'static str,
    /// The provider.
    pub kms: Arc<dyn Kms>,
    /// Makes a fresh master key.
    pub new_key: Box<dyn Fn() -> KeyFuture + Send + Sync>,
}

/// The local keyring in a temporary file (kept alive by the returned directory).
pub fn local() -> (StandIn, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let kms =
        Arc::new(cmk_core::kms::local::LocalKms::open(dir.path().join("bench.keyring")).unwrap());
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let maker = kms.clone();
    let new_key = Box::new(move || {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let key = maker.create_key(&format!("bench-{n}")).unwrap();
        Box::pin(async move { key }) as KeyFuture
    });
    (
        StandIn {
            name: "local",
            kms,
            new_key,
        },
        dir,
    )
}

/// AWS KMS on moto (`CMK_TEST_AWS_KMS_ENDPOINT`).
#[cfg(feature = "aws")]
pub async fn aws() -> Option<StandIn> {
    use cmk_core::kms::aws::{AwsKms, AwsKmsSettings};
    let endpoint = std::env::var("CMK_TEST_AWS_KMS_ENDPOINT").ok()?;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "test", "test", None, None, "bench",
        ))
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    let kms = Arc::new(AwsKms::from_sdk_config(
        &sdk,
        &AwsKmsSettings::default().with_endpoint(endpoint),
    ));
    let maker = kms.clone();
    let new_key = Box::new(move || {
        let maker = maker.clone();
        Box::pin(async move {
            let out = maker.client().create_key().send().await.unwrap();
            KeyRef::new(format!("aws:{}", out.key_metadata().unwrap().key_id())).unwrap()
        }) as KeyFuture
    });
    Some(StandIn {
        name: "aws (moto)",
        kms,
        new_key,
    })
}

/// SoftHSM2 (`CMK_TEST_PKCS11_*`).
#[cfg(feature = "pkcs11")]
pub fn pkcs11() -> Option<StandIn> {
    use cmk_core::kms::pkcs11::Pkcs11Kms;
    let module = std::env::var("CMK_TEST_PKCS11_MODULE").ok()?;
    let token = std::env::var("CMK_TEST_PKCS11_TOKEN").ok()?;
    let pin = std::env::var("CMK_TEST_PKCS11_PIN").ok()?;
    let kms = Arc::new(Pkcs11Kms::new(module).ok()?.with_token(&token, pin));
    let maker = kms.clone();
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let run = std::process::id();
    let new_key = Box::new(move || {
        let (maker, token) = (maker.clone(), token.clone());
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            maker
                .create_key(&token, &format!("bench-{run}-{n}"))
                .await
                .unwrap()
        }) as KeyFuture
    });
    Some(StandIn {
        name: "pkcs11 (SoftHSM2)",
        kms,
        new_key,
    })
}

/// PyKMIP (`CMK_TEST_KMIP_ADDR`, `CMK_TEST_KMIP_PKI`).
#[cfg(feature = "kmip")]
pub fn kmip() -> Option<StandIn> {
    use cmk_core::kms::kmip::{KmipKms, KmipSettings};
    let addr = std::env::var("CMK_TEST_KMIP_ADDR").ok()?;
    let pki = std::path::PathBuf::from(std::env::var("CMK_TEST_KMIP_PKI").ok()?);
    let settings = KmipSettings::new(
        addr,
        "127.0.0.1",
        pki.join("ca.crt"),
        pki.join("client.crt"),
        pki.join("client.key"),
    );
    let kms = Arc::new(KmipKms::new(settings).ok()?);
    let maker = kms.clone();
    let new_key = Box::new(move || {
        let maker = maker.clone();
        Box::pin(async move { maker.create_key().await.unwrap() }) as KeyFuture
    });
    Some(StandIn {
        name: "kmip (PyKMIP)",
        kms,
        new_key,
    })
}

/// Every provider this build and machine offer, and the names of those it lacks.
pub async fn all() -> (Vec<StandIn>, Vec<&'static str>, tempfile::TempDir) {
    let (local, dir) = local();
    #[allow(unused_mut)] // no provider feature: nothing is added
    let mut have = vec![local];
    #[allow(unused_mut)]
    let mut missing = Vec::new();
    #[cfg(feature = "aws")]
    match aws().await {
        Some(s) => have.push(s),
        None => missing.push("aws: CMK_TEST_AWS_KMS_ENDPOINT not set"),
    }
    #[cfg(not(feature = "aws"))]
    missing.push("aws: feature `aws` off");
    #[cfg(feature = "pkcs11")]
    match pkcs11() {
        Some(s) => have.push(s),
        None => missing.push("pkcs11: CMK_TEST_PKCS11_* not set"),
    }
    #[cfg(not(feature = "pkcs11"))]
    missing.push("pkcs11: feature `pkcs11` off");
    #[cfg(feature = "kmip")]
    match kmip() {
        Some(s) => have.push(s),
        None => missing.push("kmip: CMK_TEST_KMIP_* not set"),
    }
    #[cfg(not(feature = "kmip"))]
    missing.push("kmip: feature `kmip` off");
    (have, missing, dir)
}
