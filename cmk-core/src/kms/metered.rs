//! Every KMS call timed and its failures counted (`crate::meter`), whatever the provider:
//! the service wraps the KMS it is given in this.

use std::sync::Arc;
use std::time::Instant;

use crate::kms::{KeyRef, Kms, KmsContext, KmsError};
use crate::meter::{KMS_ERRORS, KMS_SECONDS};
use crate::secret::SecretBytes;

/// A KMS whose calls are measured.
#[derive(Debug)]
pub(crate) struct Metered {
    inner: Arc<dyn Kms>,
}

impl Metered {
    pub(crate) fn new(inner: Arc<dyn Kms>) -> Self {
        Metered { inner }
    }
}

/// Records one call's latency and, if it failed, its kind.
fn record<T>(key: &KeyRef, op: &'static str, started: Instant, result: &Result<T, KmsError>) {
    // The provider of the key (a router's own name would say nothing).
    let provider = key.provider().to_string();
    metrics::histogram!(KMS_SECONDS, "provider" => provider.clone(), "op" => op)
        .record(started.elapsed().as_secs_f64());
    if let Err(e) = result {
        metrics::counter!(KMS_ERRORS, "provider" => provider, "op" => op, "kind" => e.kind.as_str())
            .increment(1);
    }
}

#[async_trait::async_trait]
impl Kms for Metered {
    fn provider(&self) -> &str {
        self.inner.provider()
    }

    async fn wrap(
        &self,
        key: &KeyRef,
        plaintext: &[u8],
        context: &KmsContext,
    ) -> Result<Vec<u8>, KmsError> {
        let started = Instant::now();
        let result = self.inner.wrap(key, plaintext, context).await;
        record(key, "wrap", started, &result);
        result
    }

    async fn unwrap(
        &self,
        key: &KeyRef,
        wrapped: &[u8],
        context: &KmsContext,
    ) -> Result<SecretBytes, KmsError> {
        let started = Instant::now();
        let result = self.inner.unwrap(key, wrapped, context).await;
        record(key, "unwrap", started, &result);
        result
    }

    async fn destroy_key(&self, key: &KeyRef) -> Result<bool, KmsError> {
        let started = Instant::now();
        let result = self.inner.destroy_key(key).await;
        record(key, "destroy", started, &result);
        result
    }
}
