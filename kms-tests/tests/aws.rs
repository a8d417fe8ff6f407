//! The conformance suite on AWS KMS, against moto server on loopback
//! (`CMK_TEST_AWS_KMS_ENDPOINT`), and the key-state error mappings through the SDK's response
//! mocks (`aws-smithy-mocks`): moto enforces the encryption context but not key state (after
//! DisableKey or ScheduleKeyDeletion it still encrypts and decrypts), so those refusals are
//! fed to the real SDK as the HTTP responses AWS KMS sends, and parsed by it.
#![cfg(feature = "aws")]

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kms::config::Credentials;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use cmk_core::kms::aws::{AwsKms, AwsKmsSettings};
use cmk_core::kms::{KeyRef, Kms, KmsErrorKind};
use cmk_kms_tests::*;

async fn client_for(endpoint: &str, settings: AwsKmsSettings) -> AwsKms {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .credentials_provider(Credentials::new("test", "test", None, None, "cmk-tests"))
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    AwsKms::from_sdk_config(&sdk, &settings.with_endpoint(endpoint))
}

struct Moto {
    kms: Arc<AwsKms>,
}

impl Moto {
    async fn new() -> Moto {
        let endpoint = required("CMK_TEST_AWS_KMS_ENDPOINT");
        Moto {
            kms: Arc::new(client_for(&endpoint, AwsKmsSettings::default()).await),
        }
    }
}

#[async_trait::async_trait]
impl Harness for Moto {
    fn kms(&self) -> Arc<dyn Kms> {
        self.kms.clone()
    }
    async fn new_key(&self) -> KeyRef {
        let out = self
            .kms
            .client()
            .create_key()
            .description("cmk conformance")
            .send()
            .await
            .unwrap();
        let arn = out.key_metadata().unwrap().arn().unwrap();
        KeyRef::new(format!("aws:{arn}")).unwrap()
    }
}

#[tokio::test]
async fn conformance_on_moto() {
    let h = Moto::new().await;
    round_trip(&h).await;
    wrong_key(&h).await;
    wrong_context(&h).await;
    corrupt_ciphertext(&h).await;
}

#[tokio::test]
async fn an_alias_names_the_same_key_and_a_missing_key_is_not_found() {
    let h = Moto::new().await;
    let key = h.new_key().await;
    let alias = "alias/cmk-conformance-acme";
    h.kms
        .client()
        .create_alias()
        .alias_name(alias)
        .target_key_id(key.key_id())
        .send()
        .await
        .unwrap();
    let by_alias = KeyRef::new(format!("aws:{alias}")).unwrap();
    let blob = wrapped(h.kms.as_ref(), &by_alias).await;
    assert!(unwraps(h.kms.as_ref(), &key, &blob).await);
    let missing = KeyRef::new(
        "aws:arn:aws:kms:us-east-1:123456789012:key/00000000-0000-4000-8000-000000000000",
    )
    .unwrap();
    let err = h
        .kms
        .wrap(&missing, &[0; 32], &context("acme", 1))
        .await
        .unwrap_err();
    assert_eq!(err.kind, KmsErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn a_stopped_server_is_unavailable_within_the_timeouts() {
    let settings = AwsKmsSettings::default()
        .with_timeouts(
            Duration::from_millis(500),
            Duration::from_millis(800),
            Duration::from_secs(2),
        )
        .with_max_attempts(2);
    let key = KeyRef::new("aws:alias/anything").unwrap();
    // Nothing listens: connection refused.
    let refused = client_for(&format!("http://{}", closed_port()), settings.clone()).await;
    unreachable_is_unavailable(&refused, &key, Duration::from_secs(3)).await;
    // A server that accepts and never answers: the default client would wait forever.
    let (addr, _server) = silent_server();
    let silent = client_for(&format!("http://{addr}"), settings).await;
    unreachable_is_unavailable(&silent, &key, Duration::from_secs(3)).await;
}

/// The refusal AWS KMS sends for `code`, parsed by the real SDK from a mocked HTTP response.
async fn refusal(op: &str, status: u16, code: &str) -> cmk_core::kms::KmsError {
    let body = format!(r#"{{"__type":"{code}","message":"mocked {code}"}}"#);
    let rule = match op {
        "Encrypt" => mock!(aws_sdk_kms::Client::encrypt)
            .sequence()
            .http_status(status, Some(body))
            .build(),
        _ => mock!(aws_sdk_kms::Client::decrypt)
            .sequence()
            .http_status(status, Some(body))
            .build(),
    };
    let client = mock_client!(aws_sdk_kms, RuleMode::Sequential, [&rule], |b| b
        .retry_config(RetryConfig::disabled()));
    let kms = AwsKms::from_client(client);
    let key = KeyRef::new("aws:alias/acme").unwrap();
    let ctx = context("acme", 1);
    let err = match op {
        "Encrypt" => kms.wrap(&key, &[0; 32], &ctx).await.unwrap_err(),
        _ => kms.unwrap(&key, &[0; 64], &ctx).await.unwrap_err(),
    };
    assert_eq!(rule.num_calls(), 1);
    err
}

#[tokio::test]
async fn key_state_and_service_errors_map_to_the_five_kinds_with_response_mocks() {
    use KmsErrorKind::*;
    let cases = [
        (400, "DisabledException", Denied),
        (400, "KMSInvalidStateException", Denied),
        (400, "AccessDeniedException", Denied),
        (400, "ThrottlingException", Throttled),
        (400, "NotFoundException", NotFound),
        (400, "InvalidCiphertextException", Invalid),
        (400, "IncorrectKeyException", Invalid),
        (500, "KMSInternalException", Unavailable),
        (500, "DependencyTimeoutException", Unavailable),
        (400, "UnrecognizedClientException", Unavailable),
        (400, "SomethingNewException", Invalid),
    ];
    for op in ["Decrypt", "Encrypt"] {
        for (status, code, kind) in cases {
            let err = refusal(op, status, code).await;
            assert_eq!(err.kind, kind, "{op} {code}: {err}");
            assert!(err.message.contains(code), "{err}");
        }
    }
}
