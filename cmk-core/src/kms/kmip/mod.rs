//! KMIP 1.x key management servers over mutual TLS (feature `kmip`): Thales CipherTrust,
//! Fortanix DSM, Entrust KeyControl, HashiCorp Vault Enterprise, PyKMIP.
//!
//! Key references are `kmip:UID`, the key's KMIP Unique Identifier; a deployment with several
//! KMIP servers names each provider ([`KmipKms::named`]: `kmip-acme:UID`). Wraps are KMIP
//! `Encrypt` and `Decrypt` with AES-GCM inside the server: a random 96-bit IV chosen here,
//! a 16-byte tag, and the [`KmsContext`]'s canonical associated data as the authenticated
//! additional data. Wrapped blob: `0x01 ‖ IV (12) ‖ ciphertext ‖ tag (16)`
//! (docs/FORMAT.md §8c). Requests speak KMIP 1.4, the first version that carries GCM's
//! additional data and tag.
//!
//! **Why not `cosmian_kmip`.** That crate is licensed BUSL-1.1 (not open source for
//! production use, unlike cmk's MIT/Apache-2.0) and pulls an OpenTelemetry and gRPC stack
//! (about 190 crates) through its logger. cmk needs a dozen TTLV items of one request and one
//! response per operation, so it encodes them itself (module `ttlv`, KMIP 1.4 §9.1; a framing
//! format, not cryptography), tested against the PyKMIP server.
//!
//! **Errors.** `Item Not Found` → *not found*; `Permission Denied`, `Illegal Operation`
//! (wrong key state) and `Authentication Not Successful` (the server refused this client's
//! certificate) → *denied*; a failed GCM check (`General Failure` or `Cryptographic Failure`
//! while decrypting) and malformed requests → *invalid*; the server refusing this client's
//! certificate during the TLS handshake → *denied*; connection, other TLS and timeout
//! failures, and answers that are not a well-formed KMIP response → *unavailable*.
//!
//! **Revocation.** A KMIP `Revoke` moves a key to *Deactivated* (or *Compromised*), and a
//! `Destroy` removes it. Servers that follow the specification still let a Deactivated key
//! decrypt (PyKMIP does not); there, the tenant's kill switch is a revocation with reason
//! *key compromise* or a destruction.

mod transport;
pub(crate) mod ttlv;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::{KeyRef, Kms, KmsContext, KmsError, KmsErrorKind};
use crate::crypto::aead::{NONCE_LEN, TAG_LEN};
use crate::crypto::rng;
use crate::crypto::secret::SecretBytes;
use transport::Transport;
use ttlv::{Item, tag};

/// The default provider name in key references (`kmip:UID`).
pub const PROVIDER: &str = "kmip";

/// KMIP operation codes (KMIP 1.4 §9.1.3.2.27).
mod op {
    pub(super) const CREATE: u32 = 0x01;
    pub(super) const ACTIVATE: u32 = 0x12;
    pub(super) const REVOKE: u32 = 0x13;
    pub(super) const DESTROY: u32 = 0x14;
    pub(super) const ENCRYPT: u32 = 0x1F;
    pub(super) const DECRYPT: u32 = 0x20;
}

/// Result reasons cmk tells apart (KMIP 1.4 §9.1.3.2.29).
mod reason {
    pub(super) const ITEM_NOT_FOUND: u32 = 0x01;
    pub(super) const AUTHENTICATION_NOT_SUCCESSFUL: u32 = 0x03;
    pub(super) const CRYPTOGRAPHIC_FAILURE: u32 = 0x0A;
    pub(super) const ILLEGAL_OPERATION: u32 = 0x0B;
    pub(super) const PERMISSION_DENIED: u32 = 0x0C;
    pub(super) const OBJECT_ARCHIVED: u32 = 0x0D;
    pub(super) const GENERAL_FAILURE: u32 = 0x100;
}

/// How to reach a KMIP server and prove this client to it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KmipSettings {
    /// `host:port` of the server (port 5696 by convention).
    pub address: String,
    /// The name the server's certificate must carry (a DNS name or an IP address).
    pub server_name: String,
    /// PEM file of the CA certificates that sign the server's certificate.
    pub ca_pem: PathBuf,
    /// PEM file of this client's certificate chain.
    pub client_cert_pem: PathBuf,
    /// PEM file of this client's private key (PKCS#8, SEC1 or PKCS#1).
    pub client_key_pem: PathBuf,
    /// Time to establish the TCP connection (default 2 s).
    pub connect_timeout: Duration,
    /// Time for a whole exchange, TLS handshake included (default 10 s).
    pub operation_timeout: Duration,
    /// Largest response accepted (default 64 KiB).
    pub max_response_bytes: usize,
}

impl KmipSettings {
    /// Settings with the default timeouts and response cap.
    pub fn new(
        address: impl Into<String>,
        server_name: impl Into<String>,
        ca_pem: impl Into<PathBuf>,
        client_cert_pem: impl Into<PathBuf>,
        client_key_pem: impl Into<PathBuf>,
    ) -> Self {
        KmipSettings {
            address: address.into(),
            server_name: server_name.into(),
            ca_pem: ca_pem.into(),
            client_cert_pem: client_cert_pem.into(),
            client_key_pem: client_key_pem.into(),
            connect_timeout: Duration::from_secs(2),
            operation_timeout: Duration::from_secs(10),
            max_response_bytes: 64 * 1024,
        }
    }

    /// Sets the connect and whole-exchange timeouts.
    pub fn with_timeouts(mut self, connect: Duration, operation: Duration) -> Self {
        self.connect_timeout = connect;
        self.operation_timeout = operation;
        self
    }
}

/// A KMIP server as a [`Kms`] provider.
#[derive(Clone)]
pub struct KmipKms {
    name: String,
    transport: Arc<Transport>,
}

impl std::fmt::Debug for KmipKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmipKms")
            .field("name", &self.name)
            .field("address", &self.transport.address)
            .finish_non_exhaustive()
    }
}

fn config_error(what: impl std::fmt::Display) -> KmsError {
    KmsError::new(KmsErrorKind::Invalid, format!("KMIP configuration: {what}"))
}

impl KmipKms {
    /// Loads the certificates and key of `settings` and makes the TLS configuration (TLS 1.2
    /// and 1.3, the server verified against `ca_pem`, this client's certificate offered).
    ///
    /// ```no_run
    /// # fn f() -> Result<(), cmk_core::kms::KmsError> {
    /// use std::sync::Arc;
    /// use cmk_core::kms::KmsRouter;
    /// use cmk_core::kms::kmip::{KmipKms, KmipSettings};
    ///
    /// let kmip = KmipKms::new(KmipSettings::new(
    ///     "kms.acme.example:5696",
    ///     "kms.acme.example",
    ///     "/etc/cmk/acme-ca.pem",
    ///     "/etc/cmk/client.pem",
    ///     "/etc/cmk/client.key",
    /// ))?;
    /// let router = KmsRouter::new().with(Arc::new(kmip));
    /// // a tenant's configuration then names `kmip:<the key's unique identifier>`
    /// # let _ = router; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A file cannot be read or holds no certificate or key, or the server name is invalid
    /// (*invalid*).
    pub fn new(settings: KmipSettings) -> Result<Self, KmsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&settings.ca_pem)
            .map_err(|e| config_error(format!("{}: {e}", settings.ca_pem.display())))?
        {
            let cert =
                cert.map_err(|e| config_error(format!("{}: {e}", settings.ca_pem.display())))?;
            roots
                .add(cert)
                .map_err(|e| config_error(format!("{}: {e}", settings.ca_pem.display())))?;
        }
        if roots.is_empty() {
            return Err(config_error(format!(
                "{} holds no CA certificate",
                settings.ca_pem.display()
            )));
        }
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&settings.client_cert_pem)
                .and_then(|certs| certs.collect())
                .map_err(|e| {
                    config_error(format!("{}: {e}", settings.client_cert_pem.display()))
                })?;
        if chain.is_empty() {
            return Err(config_error(format!(
                "{} holds no certificate",
                settings.client_cert_pem.display()
            )));
        }
        // The key's path may be printed; its contents never are.
        let key = PrivateKeyDer::from_pem_file(&settings.client_key_pem).map_err(|_| {
            config_error(format!(
                "{} holds no readable private key",
                settings.client_key_pem.display()
            ))
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(config_error)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(config_error)?;
        let server_name = ServerName::try_from(settings.server_name.clone()).map_err(|_| {
            config_error(format!("`{}` is not a server name", settings.server_name))
        })?;
        Ok(KmipKms {
            name: PROVIDER.to_string(),
            transport: Arc::new(Transport {
                address: settings.address,
                server_name,
                tls: Arc::new(tls),
                connect_timeout: settings.connect_timeout,
                operation_timeout: settings.operation_timeout,
                max_response_bytes: settings.max_response_bytes,
            }),
        })
    }

    /// Registers this server under another provider name (`kmip-acme`), so that one
    /// deployment can reach several KMIP servers.
    pub fn named(mut self, provider: impl Into<String>) -> Self {
        self.name = provider.into();
        self
    }

    /// Creates and activates an AES-256 key permitted to encrypt and decrypt, and returns its
    /// reference. For operators' tools and tests; tenants usually create keys in their own
    /// console.
    ///
    /// # Errors
    /// The server refuses or cannot be reached.
    pub async fn create_key(&self) -> Result<KeyRef, KmsError> {
        let attribute = |name: &str, value: Item| {
            Item::structure(
                tag::ATTRIBUTE,
                vec![Item::text(tag::ATTRIBUTE_NAME, name), value],
            )
        };
        let payload = vec![
            Item::enumeration(tag::OBJECT_TYPE, 0x02), // symmetric key
            Item::structure(
                tag::TEMPLATE_ATTRIBUTE,
                vec![
                    attribute(
                        "Cryptographic Algorithm",
                        Item::enumeration(tag::ATTRIBUTE_VALUE, 0x03), // AES
                    ),
                    attribute(
                        "Cryptographic Length",
                        Item::integer(tag::ATTRIBUTE_VALUE, 256),
                    ),
                    attribute(
                        "Cryptographic Usage Mask",
                        Item::integer(tag::ATTRIBUTE_VALUE, 0x04 | 0x08), // encrypt, decrypt
                    ),
                ],
            ),
        ];
        let response = self.call(op::CREATE, payload, false).await?;
        let uid = unique_identifier(&response)?;
        self.call(
            op::ACTIVATE,
            vec![Item::text(tag::UNIQUE_IDENTIFIER, &uid)],
            false,
        )
        .await?;
        KeyRef::new(format!("{}:{uid}", self.name))
            .map_err(|e| KmsError::new(KmsErrorKind::Invalid, e.to_string()))
    }

    /// Revokes the key: *Deactivated*, or *Compromised* with `compromised` (the strongest
    /// kill switch on servers that let Deactivated keys decrypt).
    ///
    /// # Errors
    /// The server refuses or cannot be reached.
    pub async fn revoke(&self, key: &KeyRef, compromised: bool) -> Result<(), KmsError> {
        let uid = self.uid(key)?;
        let code = if compromised { 0x02 } else { 0x06 }; // key compromise, cessation of operation
        self.call(
            op::REVOKE,
            vec![
                Item::text(tag::UNIQUE_IDENTIFIER, uid),
                Item::structure(
                    tag::REVOCATION_REASON,
                    vec![Item::enumeration(tag::REVOCATION_REASON_CODE, code)],
                ),
            ],
            false,
        )
        .await
        .map(|_| ())
    }

    /// Destroys the key (KMIP servers refuse to destroy an active key: revoke it first).
    ///
    /// # Errors
    /// The server refuses or cannot be reached.
    pub async fn destroy(&self, key: &KeyRef) -> Result<(), KmsError> {
        let uid = self.uid(key)?;
        self.call(
            op::DESTROY,
            vec![Item::text(tag::UNIQUE_IDENTIFIER, uid)],
            false,
        )
        .await
        .map(|_| ())
    }

    fn uid<'k>(&self, key: &'k KeyRef) -> Result<&'k str, KmsError> {
        if key.provider() != self.name {
            return Err(KmsError::new(
                KmsErrorKind::NotFound,
                format!("not a `{}` key reference", self.name),
            ));
        }
        Ok(key.key_id())
    }

    /// One operation: builds the request, exchanges it on tokio's blocking pool, and returns
    /// the response payload of a successful result.
    async fn call(
        &self,
        operation: u32,
        payload: Vec<Item>,
        decrypting: bool,
    ) -> Result<Item, KmsError> {
        let request = request_message(operation, payload).to_bytes();
        let transport = Arc::clone(&self.transport);
        // The exchange bounds itself; the outer timeout is the caller's guarantee.
        let bound = self.transport.operation_timeout + Duration::from_secs(1);
        let response = tokio::time::timeout(
            bound,
            tokio::task::spawn_blocking(move || transport.exchange(&request)),
        )
        .await
        .map_err(|_| KmsError::new(KmsErrorKind::Unavailable, "KMIP: timed out"))?
        .map_err(|_| KmsError::new(KmsErrorKind::Unavailable, "KMIP call did not finish"))??;
        let message = Item::decode(&response).map_err(|why| {
            KmsError::new(
                KmsErrorKind::Unavailable,
                format!("KMIP: unreadable response: {why}"),
            )
        })?;
        payload_of(message, decrypting)
    }
}

fn request_message(operation: u32, payload: Vec<Item>) -> Item {
    Item::structure(
        tag::REQUEST_MESSAGE,
        vec![
            Item::structure(
                tag::REQUEST_HEADER,
                vec![
                    Item::structure(
                        tag::PROTOCOL_VERSION,
                        vec![
                            Item::integer(tag::PROTOCOL_VERSION_MAJOR, 1),
                            Item::integer(tag::PROTOCOL_VERSION_MINOR, 4),
                        ],
                    ),
                    Item::integer(tag::BATCH_COUNT, 1),
                ],
            ),
            Item::structure(
                tag::BATCH_ITEM,
                vec![
                    Item::enumeration(tag::OPERATION, operation),
                    Item::structure(tag::REQUEST_PAYLOAD, payload),
                ],
            ),
        ],
    )
}

/// The payload of a successful batch item, or the failure classified.
fn payload_of(message: Item, decrypting: bool) -> Result<Item, KmsError> {
    let malformed = |what: &str| {
        KmsError::new(
            KmsErrorKind::Unavailable,
            format!("KMIP: malformed response: {what}"),
        )
    };
    if message.tag != tag::RESPONSE_MESSAGE {
        return Err(malformed("not a response message"));
    }
    let mut items = match message.value {
        ttlv::Value::Structure(items) => items,
        _ => return Err(malformed("not a structure")),
    };
    let at = items
        .iter()
        .position(|i| i.tag == tag::BATCH_ITEM)
        .ok_or_else(|| malformed("no batch item"))?;
    let item = items.swap_remove(at);
    let status = item
        .child(tag::RESULT_STATUS)
        .and_then(Item::as_enumeration)
        .ok_or_else(|| malformed("no result status"))?;
    if status == 0 {
        return match item.value {
            ttlv::Value::Structure(children) => children
                .into_iter()
                .find(|c| c.tag == tag::RESPONSE_PAYLOAD)
                .ok_or_else(|| malformed("no response payload")),
            _ => Err(malformed("batch item is not a structure")),
        };
    }
    let why = item
        .child(tag::RESULT_REASON)
        .and_then(Item::as_enumeration);
    let message = item
        .child(tag::RESULT_MESSAGE)
        .and_then(Item::as_text)
        .unwrap_or("")
        .chars()
        .take(200)
        .collect::<String>();
    use KmsErrorKind::*;
    let kind = match (status, why) {
        // Pending or undone: the server will answer later, or undid it.
        (2 | 3, _) => Unavailable,
        (_, Some(reason::ITEM_NOT_FOUND)) => NotFound,
        (
            _,
            Some(
                reason::PERMISSION_DENIED
                | reason::ILLEGAL_OPERATION
                | reason::AUTHENTICATION_NOT_SUCCESSFUL
                | reason::OBJECT_ARCHIVED,
            ),
        ) => Denied,
        (_, Some(reason::GENERAL_FAILURE | reason::CRYPTOGRAPHIC_FAILURE)) if decrypting => Invalid,
        (_, Some(reason::GENERAL_FAILURE)) => Unavailable,
        _ => Invalid,
    };
    let reason = why.map_or("none".to_string(), |r| format!("{r:#x}"));
    Err(KmsError::new(
        kind,
        format!("KMIP: operation failed (reason {reason}): {message}"),
    ))
}

fn unique_identifier(payload: &Item) -> Result<String, KmsError> {
    payload
        .child(tag::UNIQUE_IDENTIFIER)
        .and_then(Item::as_text)
        .map(str::to_string)
        .ok_or_else(|| {
            KmsError::new(
                KmsErrorKind::Unavailable,
                "KMIP: malformed response: no unique identifier",
            )
        })
}

fn gcm_parameters() -> Item {
    Item::structure(
        tag::CRYPTOGRAPHIC_PARAMETERS,
        vec![
            Item::enumeration(tag::BLOCK_CIPHER_MODE, 0x09), // GCM
            Item::enumeration(tag::CRYPTOGRAPHIC_ALGORITHM, 0x03), // AES
            Item::integer(tag::TAG_LENGTH, 16),
        ],
    )
}

fn invalid_blob() -> KmsError {
    KmsError::new(
        KmsErrorKind::Invalid,
        "ciphertext or associated data invalid",
    )
}

#[async_trait::async_trait]
impl Kms for KmipKms {
    fn provider(&self) -> &str {
        &self.name
    }

    async fn wrap(
        &self,
        key: &KeyRef,
        plaintext: &[u8],
        context: &KmsContext,
    ) -> Result<Vec<u8>, KmsError> {
        let uid = self.uid(key)?;
        let iv: [u8; NONCE_LEN] =
            rng::array().map_err(|_| KmsError::new(KmsErrorKind::Unavailable, "no randomness"))?;
        let payload = vec![
            Item::text(tag::UNIQUE_IDENTIFIER, uid),
            gcm_parameters(),
            Item::bytes(tag::DATA, plaintext),
            Item::bytes(tag::IV_COUNTER_NONCE, &iv),
            Item::bytes(tag::AE_ADDITIONAL_DATA, context.aad()),
        ];
        let response = self.call(op::ENCRYPT, payload, false).await?;
        // A server that chose an IV of its own made a blob this one cannot describe.
        if response
            .child(tag::IV_COUNTER_NONCE)
            .and_then(Item::as_bytes)
            .is_some_and(|theirs| theirs != iv)
        {
            return Err(KmsError::new(
                KmsErrorKind::Invalid,
                "KMIP: the server replaced the IV it was given",
            ));
        }
        let ciphertext = response.child(tag::DATA).and_then(Item::as_bytes);
        let gcm_tag = response.child(tag::AE_TAG).and_then(Item::as_bytes);
        match (ciphertext, gcm_tag) {
            (Some(c), Some(t)) if c.len() == plaintext.len() && t.len() == TAG_LEN => {
                Ok(super::gcm_blob::frame(&iv, &[c, t]))
            }
            _ => Err(KmsError::new(
                KmsErrorKind::Unavailable,
                "KMIP: malformed response: no ciphertext and 16-byte tag",
            )),
        }
    }

    async fn unwrap(
        &self,
        key: &KeyRef,
        wrapped: &[u8],
        context: &KmsContext,
    ) -> Result<SecretBytes, KmsError> {
        let uid = self.uid(key)?;
        let parts = super::gcm_blob::parse(wrapped)?;
        let (iv, ciphertext, gcm_tag) = (&parts.iv, parts.ciphertext, parts.tag);
        let payload = vec![
            Item::text(tag::UNIQUE_IDENTIFIER, uid),
            gcm_parameters(),
            Item::bytes(tag::DATA, ciphertext),
            Item::bytes(tag::IV_COUNTER_NONCE, iv),
            Item::bytes(tag::AE_ADDITIONAL_DATA, context.aad()),
            Item::bytes(tag::AE_TAG, gcm_tag),
        ];
        let response = self.call(op::DECRYPT, payload, true).await?;
        let plaintext = response
            .child(tag::DATA)
            .and_then(Item::as_bytes)
            .filter(|p| p.len() == ciphertext.len())
            .ok_or_else(invalid_blob)?;
        Ok(SecretBytes::new(plaintext.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u32, reason: Option<u32>) -> Item {
        let mut batch = vec![
            Item::enumeration(tag::OPERATION, op::DECRYPT),
            Item::enumeration(tag::RESULT_STATUS, status),
        ];
        if let Some(r) = reason {
            batch.push(Item::enumeration(tag::RESULT_REASON, r));
            batch.push(Item::text(tag::RESULT_MESSAGE, "no"));
        } else {
            batch.push(Item::structure(
                tag::RESPONSE_PAYLOAD,
                vec![Item::bytes(tag::DATA, b"k")],
            ));
        }
        Item::structure(
            tag::RESPONSE_MESSAGE,
            vec![Item::structure(tag::BATCH_ITEM, batch)],
        )
    }

    #[test]
    fn results_map_to_the_five_kinds() {
        use KmsErrorKind::*;
        assert!(payload_of(response(0, None), true).is_ok());
        for (reason, decrypting, kind) in [
            (reason::ITEM_NOT_FOUND, true, NotFound),
            (reason::PERMISSION_DENIED, true, Denied),
            (reason::ILLEGAL_OPERATION, false, Denied),
            (reason::AUTHENTICATION_NOT_SUCCESSFUL, false, Denied),
            (reason::GENERAL_FAILURE, true, Invalid),
            (reason::GENERAL_FAILURE, false, Unavailable),
            (0x07, true, Invalid),
        ] {
            let err = payload_of(response(1, Some(reason)), decrypting).unwrap_err();
            assert_eq!(err.kind, kind, "{reason:#x}");
        }
        assert_eq!(
            payload_of(response(2, None), false).unwrap_err().kind,
            Unavailable
        );
        assert_eq!(
            payload_of(Item::integer(tag::BATCH_COUNT, 1), false)
                .unwrap_err()
                .kind,
            Unavailable
        );
    }
}
