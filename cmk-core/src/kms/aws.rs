//! AWS KMS through the official AWS SDK for Rust (feature `aws`).
//!
//! Key references are `aws:KEY` where `KEY` is what AWS KMS accepts as a `KeyId`: a key id,
//! a key ARN, an alias name (`alias/acme`) or an alias ARN. A tenant grants the deployment's
//! principal `kms:Encrypt` and `kms:Decrypt` on its key; revoking the grant, disabling the key
//! or scheduling its deletion stops cmk within one renewal interval.
//!
//! **What a wrap binds.** `Encrypt` and `Decrypt` carry an encryption context (AWS KMS
//! authenticates it as associated data and writes it to the tenant's CloudTrail): the readable
//! pairs of the [`KmsContext`] (`cmk:purpose`, `cmk:tenant`, `cmk:policy`, `cmk:kek-id`,
//! `cmk:version`, `cmk:key`) and `cmk:aad-sha256`, the digest of the canonical associated data,
//! so the context binds everything the local provider binds. `Decrypt` names the key too, so a
//! blob is never decrypted under another key than the reference says.
//!
//! **Never a hang.** The client has explicit connect, per-attempt and whole-operation timeouts
//! and a bounded number of attempts ([`AwsKmsSettings`]): the SDK's defaults wait forever on a
//! server that accepts a connection and never answers.
//!
//! **Credentials.** [`AwsKms::from_env`] uses the standard chain of `aws-config` as cmk builds
//! it (environment, profile files, web identity, ECS and EC2 metadata); SSO profiles and
//! `credential_process` need `aws-config`'s `sso` and `credentials-process` features, which
//! an application enables by depending on `aws-config` with them (features unify).
//!
//! **Errors** map to the five kinds the leases act on: disabled key, invalid key state and
//! access denied → *denied*; throttling → *throttled*; connection failures, timeouts, internal
//! and dependency failures → *unavailable*; a missing key → *not found*; a wrong context,
//! ciphertext or key → *invalid*. Failures of the deployment's own credentials (unrecognised,
//! expired, bad signature) are *unavailable*: they are the operator's to fix, not a tenant's
//! kill switch, so leases ride them out until their hard expiry.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;

use super::{KeyRef, Kms, KmsContext, KmsError, KmsErrorKind};
use crate::crypto::secret::SecretBytes;

/// The provider name in key references (`aws:...`).
pub const PROVIDER: &str = "aws";

/// Timeouts, retries and the endpoint of an [`AwsKms`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AwsKmsSettings {
    /// An endpoint other than AWS's own (a VPC endpoint, FIPS endpoint or a stand-in).
    pub endpoint_url: Option<String>,
    /// The region; `None` takes it from the standard chain (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// Time to establish a connection (default 2 s).
    pub connect_timeout: Duration,
    /// Time for one attempt, connection included (default 5 s).
    pub attempt_timeout: Duration,
    /// Time for a whole operation, retries included (default 12 s).
    pub operation_timeout: Duration,
    /// Attempts per operation, the first included (default 3); transient failures and
    /// throttling are retried with the SDK's standard backoff.
    pub max_attempts: u32,
}

impl Default for AwsKmsSettings {
    fn default() -> Self {
        AwsKmsSettings {
            endpoint_url: None,
            region: None,
            connect_timeout: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(12),
            max_attempts: 3,
        }
    }
}

impl AwsKmsSettings {
    /// Sets an endpoint override (for example `http://127.0.0.1:5123` for a stand-in).
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Sets the region.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets the connect, per-attempt and whole-operation timeouts.
    pub fn with_timeouts(
        mut self,
        connect: Duration,
        attempt: Duration,
        operation: Duration,
    ) -> Self {
        self.connect_timeout = connect;
        self.attempt_timeout = attempt;
        self.operation_timeout = operation;
        self
    }

    /// Sets the number of attempts per operation (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }
}

/// AWS KMS as a [`Kms`] provider.
#[derive(Debug, Clone)]
pub struct AwsKms {
    name: String,
    client: aws_sdk_kms::Client,
}

impl AwsKms {
    /// Credentials and region from the standard provider chain (environment, profile, web
    /// identity, ECS and EC2 metadata), with `settings` applied.
    ///
    /// ```no_run
    /// # async fn f() -> cmk_core::Result<()> {
    /// use std::sync::Arc;
    /// use cmk_core::kms::KmsRouter;
    /// use cmk_core::kms::aws::{AwsKms, AwsKmsSettings};
    ///
    /// let aws = AwsKms::from_env(AwsKmsSettings::default().with_region("eu-west-1")).await;
    /// let router = KmsRouter::new().with(Arc::new(aws));
    /// // a tenant's configuration then names `aws:arn:aws:kms:eu-west-1:111122223333:key/...`
    /// # let _ = router; Ok(()) }
    /// ```
    pub async fn from_env(settings: AwsKmsSettings) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        Self::from_sdk_config(&sdk, &settings)
    }

    /// Builds on the application's own SDK configuration (credentials, region, HTTP client),
    /// with cmk's timeouts, retry bound and endpoint from `settings` applied over it.
    pub fn from_sdk_config(sdk: &aws_config::SdkConfig, settings: &AwsKmsSettings) -> Self {
        let mut conf = aws_sdk_kms::config::Builder::from(sdk)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(settings.connect_timeout)
                    .operation_attempt_timeout(settings.attempt_timeout)
                    .operation_timeout(settings.operation_timeout)
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts.max(1)));
        if let Some(url) = &settings.endpoint_url {
            conf = conf.endpoint_url(url.clone());
        }
        if let Some(region) = &settings.region {
            conf = conf.region(aws_sdk_kms::config::Region::new(region.clone()));
        }
        AwsKms {
            name: PROVIDER.to_string(),
            client: aws_sdk_kms::Client::from_conf(conf.build()),
        }
    }

    /// Wraps a client the application built itself. Its own timeouts and retry policy apply:
    /// set them (see [`AwsKmsSettings`]), or a KMS that accepts and never answers hangs it.
    pub fn from_client(client: aws_sdk_kms::Client) -> Self {
        AwsKms {
            name: PROVIDER.to_string(),
            client,
        }
    }

    /// Registers this client under another provider name (`aws-eu`, `aws-acme`), so that one
    /// deployment can reach keys in several regions or through several sets of credentials:
    /// a reference `aws-eu:arn:...` goes to the client named `aws-eu`.
    pub fn named(mut self, provider: impl Into<String>) -> Self {
        self.name = provider.into();
        self
    }

    /// The SDK client (for operators' tools: creating or describing keys).
    pub fn client(&self) -> &aws_sdk_kms::Client {
        &self.client
    }

    /// Creates a symmetric encryption key (`SYMMETRIC_DEFAULT`) described by `description`,
    /// for an operator's tool; returns its reference, `PROVIDER:<key id>` (this client's
    /// provider name).
    ///
    /// # Errors
    /// A [`KmsError`] classified as for every other call (denied, throttled, unavailable), or
    /// [`KmsErrorKind::Invalid`] when the response names no key.
    pub async fn create_key(&self, description: &str) -> Result<KeyRef, KmsError> {
        let out = self
            .client
            .create_key()
            .description(description)
            .send()
            .await
            .map_err(|e| classify("CreateKey", e))?;
        let invalid = || {
            KmsError::new(
                KmsErrorKind::Invalid,
                "AWS KMS CreateKey: no key id in the response",
            )
        };
        let id = out.key_metadata().map(|m| m.key_id()).ok_or_else(invalid)?;
        KeyRef::new(format!("{}:{id}", self.name)).map_err(|_| invalid())
    }
}

impl AwsKms {
    fn key_id<'k>(&self, key: &'k KeyRef) -> Result<&'k str, KmsError> {
        if key.provider() != self.name {
            return Err(KmsError::new(
                KmsErrorKind::NotFound,
                format!("not a `{}` key reference", self.name),
            ));
        }
        Ok(key.key_id())
    }
}

fn context_map(context: &KmsContext) -> HashMap<String, String> {
    context.encryption_context().into_iter().collect()
}

/// Classifies an SDK failure. Modeled and unmodeled service errors are told apart by their
/// error code, which the SDK parses from the response the same way for both.
fn classify<E>(op: &str, err: SdkError<E, aws_sdk_kms::config::http::HttpResponse>) -> KmsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use KmsErrorKind::*;
    let (kind, detail) = match &err {
        SdkError::TimeoutError(_) => (Unavailable, "timed out".to_string()),
        SdkError::DispatchFailure(d) if d.is_timeout() => {
            (Unavailable, "timed out connecting or reading".to_string())
        }
        SdkError::DispatchFailure(_) => (Unavailable, "could not reach the KMS".to_string()),
        SdkError::ResponseError(_) => (Unavailable, "unreadable response".to_string()),
        SdkError::ServiceError(s) => {
            let e = s.err();
            let code = e.code().unwrap_or("");
            let status = s.raw().status().as_u16();
            let kind = match code {
                "DisabledException"
                | "KMSInvalidStateException"
                | "AccessDeniedException"
                | "InvalidGrantTokenException" => Denied,
                "ThrottlingException" | "LimitExceededException" | "TooManyRequestsException" => {
                    Throttled
                }
                "NotFoundException" => NotFound,
                "InvalidCiphertextException"
                | "IncorrectKeyException"
                | "InvalidKeyUsageException"
                | "ValidationException" => Invalid,
                "KMSInternalException"
                | "DependencyTimeoutException"
                | "KeyUnavailableException"
                | "ServiceUnavailableException"
                | "InternalFailure"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "ExpiredTokenException"
                | "IncompleteSignature"
                | "MissingAuthenticationToken" => Unavailable,
                _ if status >= 500 => Unavailable,
                _ if status == 429 => Throttled,
                // Anything else is a refusal we do not know: fail closed.
                _ => Invalid,
            };
            let message = e.message().unwrap_or("");
            let code = if code.is_empty() {
                "no error code"
            } else {
                code
            };
            (kind, format!("{code} (HTTP {status}): {message}"))
        }
        _ => (Invalid, "request could not be built".to_string()),
    };
    KmsError::new(kind, format!("AWS KMS {op}: {detail}"))
}

#[async_trait::async_trait]
impl Kms for AwsKms {
    fn provider(&self) -> &str {
        &self.name
    }

    async fn wrap(
        &self,
        key: &KeyRef,
        plaintext: &[u8],
        context: &KmsContext,
    ) -> Result<Vec<u8>, KmsError> {
        let out = self
            .client
            .encrypt()
            .key_id(self.key_id(key)?)
            .plaintext(Blob::new(plaintext))
            .set_encryption_context(Some(context_map(context)))
            .send()
            .await
            .map_err(|e| classify("Encrypt", e))?;
        out.ciphertext_blob
            .map(Blob::into_inner)
            .ok_or_else(|| KmsError::new(KmsErrorKind::Invalid, "AWS KMS Encrypt: no ciphertext"))
    }

    async fn unwrap(
        &self,
        key: &KeyRef,
        wrapped: &[u8],
        context: &KmsContext,
    ) -> Result<SecretBytes, KmsError> {
        let out = self
            .client
            .decrypt()
            .key_id(self.key_id(key)?)
            .ciphertext_blob(Blob::new(wrapped))
            .set_encryption_context(Some(context_map(context)))
            .send()
            .await
            .map_err(|e| classify("Decrypt", e))?;
        out.plaintext
            .map(|b| SecretBytes::new(b.into_inner()))
            .ok_or_else(|| KmsError::new(KmsErrorKind::Invalid, "AWS KMS Decrypt: no plaintext"))
    }
}
