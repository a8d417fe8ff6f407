//! PKCS#11 hardware security modules through `cryptoki` (feature `pkcs11`): Thales Luna,
//! Entrust nShield, AWS CloudHSM, YubiHSM, SoftHSM2 and any other PKCS#11 module.
//!
//! Key references are `pkcs11:TOKEN/LABEL`: the token's label (it must not contain `/`) and
//! the label of an AES-256 secret key on it. The slot is found by token label (slot ids are
//! not stable across restarts), the key by its label on every call, so a key destroyed or
//! re-created on the token is seen at once.
//!
//! **Wrap format.** AES-256-GCM inside the HSM (`CKM_AES_GCM`, 128-bit tag) with the
//! [`KmsContext`]'s canonical associated data as GCM additional data and a random 96-bit IV
//! from the operating system:
//! `0x01 ‖ IV (12) ‖ ciphertext ‖ tag (16)` (docs/FORMAT.md §8b). Master keys wrap only key
//! material (a few wraps per tenant and day), so random IVs stay far below 2^32 per key.
//!
//! **Processes, threads, sessions.** One library context per module per process (a second
//! `C_Initialize` in the same process would fail), shared by every [`Pkcs11Kms`]; sessions are
//! not shareable between threads, so each call takes one from a pool (opening and logging in
//! a new one when the pool is empty) and gives it back; HSM calls run on tokio's blocking
//! pool. The user PIN comes from configuration ([`Pkcs11Kms::with_token`]) and is never
//! printed, logged or put in an error.
//!
//! **Revocation.** Clearing the key's `CKA_ENCRYPT`/`CKA_DECRYPT` (or the token owner changing
//! its PIN) is *denied*; a destroyed key (or no key of that label) is *not found*; a token
//! missing from every slot or a failing device is *unavailable*. SoftHSM2 reports a GCM tag
//! mismatch as `CKR_GENERAL_ERROR`, newer releases as `CKR_ENCRYPTED_DATA_INVALID`: during a
//! decryption both are *invalid*.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::{KeyRef, Kms, KmsContext, KmsError, KmsErrorKind};
use crate::crypto::aead::{NONCE_LEN, TAG_LEN};
use crate::crypto::rng;
use crate::secret::SecretBytes;

/// The provider name in key references (`pkcs11:...`).
pub const PROVIDER: &str = "pkcs11";
const BLOB_VERSION: u8 = 0x01;
const TAG_BITS: u64 = 128;
/// Sessions kept open per token between calls.
const POOL_MAX: usize = 16;

/// One library context per module path per process.
fn library(module: &Path) -> Result<Pkcs11, KmsError> {
    static LIBRARIES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut libraries = LIBRARIES
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| KmsError::new(KmsErrorKind::Unavailable, "PKCS#11 library lock poisoned"))?;
    if let Some(p) = libraries.get(module) {
        return Ok(p.clone());
    }
    let p = Pkcs11::new(module).map_err(|e| {
        KmsError::new(
            KmsErrorKind::Unavailable,
            format!("loading PKCS#11 module {}: {e}", module.display()),
        )
    })?;
    match p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(classify("C_Initialize", e, false)),
    }
    libraries.insert(module.to_path_buf(), p.clone());
    Ok(p)
}

/// Token-object writes (key management) exclude every other call of this process on any
/// token; wraps, unwraps and logins share. SoftHSM2 fails a token-object write that runs
/// alongside another session's call with `CKR_GENERAL_ERROR` (measured: creating keys while
/// other tasks wrapped failed in most runs), and key management is rare enough to wait.
static TOKEN_WRITES: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn lock_poisoned() -> KmsError {
    KmsError::new(KmsErrorKind::Unavailable, "PKCS#11 lock poisoned")
}

/// Classifies a PKCS#11 failure; `decrypting` turns a general error into *invalid* (how
/// SoftHSM2 reports a GCM tag that does not verify).
fn classify(op: &str, e: CkError, decrypting: bool) -> KmsError {
    use KmsErrorKind::*;
    let kind = match &e {
        CkError::Pkcs11(rv, _) => match rv {
            RvError::KeyFunctionNotPermitted
            | RvError::KeyNotNeeded
            | RvError::PinIncorrect
            | RvError::PinLocked
            | RvError::PinExpired
            | RvError::PinInvalid
            | RvError::PinLenRange
            | RvError::UserNotLoggedIn => Denied,
            RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid => NotFound,
            RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::DataInvalid
            | RvError::DataLenRange
            | RvError::KeyTypeInconsistent
            | RvError::KeySizeRange
            | RvError::MechanismInvalid
            | RvError::MechanismParamInvalid
            | RvError::ArgumentsBad => Invalid,
            RvError::GeneralError if decrypting => Invalid,
            RvError::DeviceError
            | RvError::DeviceMemory
            | RvError::DeviceRemoved
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::SessionCount
            | RvError::HostMemory
            | RvError::FunctionFailed
            | RvError::FunctionCanceled
            | RvError::SlotIdInvalid
            | RvError::CryptokiNotInitialized
            | RvError::GeneralError => Unavailable,
            _ => Invalid,
        },
        CkError::LibraryLoading(_) | CkError::NullFunctionPointer | CkError::MissingSymbol(_) => {
            Unavailable
        }
        _ => Invalid,
    };
    // cryptoki's messages name the return value and the function, never a PIN or key bytes.
    KmsError::new(kind, format!("PKCS#11 {op}: {e}"))
}

/// A token the deployment may use: its PIN and a pool of logged-in sessions.
struct Token {
    pin: AuthPin,
    /// Key handles found by label, checked against the label at each use (a scan of the
    /// token's objects costs milliseconds on a token with a thousand keys; reading one
    /// object's label does not).
    handles: Mutex<HashMap<String, ObjectHandle>>,
    slot: Mutex<Option<Slot>>,
    pool: Mutex<Vec<Session>>,
    /// The one session key management runs on, one call at a time.
    manager: Mutex<Option<Session>>,
}

struct Inner {
    module: PathBuf,
    library: Pkcs11,
    tokens: HashMap<String, Arc<Token>>,
}

/// PKCS#11 as a [`Kms`] provider.
#[derive(Clone)]
pub struct Pkcs11Kms {
    inner: Arc<Inner>,
}

impl fmt::Debug for Pkcs11Kms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Token labels only: never a PIN.
        f.debug_struct("Pkcs11Kms")
            .field("module", &self.inner.module)
            .field("tokens", &self.inner.tokens.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Pkcs11Kms {
    /// Loads (once per process) and initialises the PKCS#11 module at `module`.
    ///
    /// ```no_run
    /// # fn f() -> Result<(), cmk_core::kms::KmsError> {
    /// use std::sync::Arc;
    /// use cmk_core::kms::KmsRouter;
    /// use cmk_core::kms::pkcs11::Pkcs11Kms;
    ///
    /// let pin = std::env::var("ACME_HSM_PIN").unwrap_or_default(); // from deployment secrets
    /// let hsm = Pkcs11Kms::new("/usr/lib/softhsm/libsofthsm2.so")?.with_token("acme", pin);
    /// let router = KmsRouter::new().with(Arc::new(hsm));
    /// // a tenant's configuration then names `pkcs11:acme/cmk-master`
    /// # let _ = router; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The module cannot be loaded or initialised (*unavailable*).
    pub fn new(module: impl Into<PathBuf>) -> Result<Self, KmsError> {
        let module = module.into();
        let library = library(&module)?;
        Ok(Pkcs11Kms {
            inner: Arc::new(Inner {
                module,
                library,
                tokens: HashMap::new(),
            }),
        })
    }

    /// Allows the token labelled `label`, logging in with the user PIN `pin`.
    pub fn with_token(self, label: impl Into<String>, pin: impl Into<String>) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            module: shared.module.clone(),
            library: shared.library.clone(),
            tokens: shared.tokens.clone(),
        });
        inner.tokens.insert(
            label.into(),
            Arc::new(Token {
                pin: AuthPin::new(pin.into().into()),
                handles: Mutex::new(HashMap::new()),
                slot: Mutex::new(None),
                pool: Mutex::new(Vec::new()),
                manager: Mutex::new(None),
            }),
        );
        Pkcs11Kms {
            inner: Arc::new(inner),
        }
    }

    /// Creates an AES-256 key labelled `label` on `token`: a token object, sensitive and not
    /// extractable, permitted to encrypt and decrypt. Returns its reference. For operators'
    /// tools and tests; HSM owners usually create keys with their own tools.
    ///
    /// # Errors
    /// A key of that label exists already (*invalid*), or the HSM refuses.
    pub async fn create_key(&self, token: &str, label: &str) -> Result<KeyRef, KmsError> {
        let reference = KeyRef::new(format!("{PROVIDER}:{token}/{label}"))
            .map_err(|e| KmsError::new(KmsErrorKind::Invalid, e.to_string()))?;
        let label = label.to_string();
        self.managing(token, move |s| {
            if !find_keys(s, &label)?.is_empty() {
                return Err(KmsError::new(
                    KmsErrorKind::Invalid,
                    format!("a key labelled `{label}` exists already"),
                ));
            }
            s.generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32.into()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Modifiable(true),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Label(label.into_bytes()),
                ],
            )
            .map_err(|e| classify("C_GenerateKey", e, false))?;
            Ok(())
        })
        .await?;
        Ok(reference)
    }

    /// Permits or forbids the key to encrypt and decrypt (`CKA_ENCRYPT`, `CKA_DECRYPT`): the
    /// HSM owner's revocation and its undoing.
    ///
    /// # Errors
    /// No such key (*not found*), or the HSM refuses.
    pub async fn set_permitted(&self, key: &KeyRef, permitted: bool) -> Result<(), KmsError> {
        let (token, label) = parse(key)?;
        let label = label.to_string();
        self.managing(token, move |s| {
            let handle = one_key(s, &label)?;
            s.update_attributes(
                handle,
                &[Attribute::Encrypt(permitted), Attribute::Decrypt(permitted)],
            )
            .map_err(|e| classify("C_SetAttributeValue", e, false))
        })
        .await
    }

    /// Destroys the key object on the token (crypto-shredding by the HSM's owner).
    ///
    /// # Errors
    /// No such key (*not found*), or the HSM refuses.
    pub async fn destroy_object(&self, key: &KeyRef) -> Result<(), KmsError> {
        let (token, label) = parse(key)?;
        let label = label.to_string();
        self.managing(token, move |s| {
            let handle = one_key(s, &label)?;
            s.destroy_object(handle)
                .map_err(|e| classify("C_DestroyObject", e, false))
        })
        .await
    }

    /// Runs a key-management call (object creation, change, destruction) on the token's one
    /// management session, alone in this process (see [`TOKEN_WRITES`]).
    async fn managing<T: Send + 'static>(
        &self,
        token: &str,
        f: impl FnOnce(&Session) -> Result<T, KmsError> + Send + 'static,
    ) -> Result<T, KmsError> {
        let inner = Arc::clone(&self.inner);
        let token = token.to_string();
        tokio::task::spawn_blocking(move || inner.with_manager(&token, f))
            .await
            .map_err(|_| KmsError::new(KmsErrorKind::Unavailable, "PKCS#11 call did not finish"))?
    }

    /// Runs `f` with a logged-in session of `token` on tokio's blocking pool; the session goes
    /// back to the pool unless the call failed with a session or device error.
    async fn on_token<T: Send + 'static>(
        &self,
        token: &str,
        f: impl FnOnce(&Session) -> Result<T, KmsError> + Send + 'static,
    ) -> Result<T, KmsError> {
        let inner = Arc::clone(&self.inner);
        let token = token.to_string();
        tokio::task::spawn_blocking(move || inner.with_session(&token, f))
            .await
            .map_err(|_| KmsError::new(KmsErrorKind::Unavailable, "PKCS#11 call did not finish"))?
    }
}

impl Inner {
    /// The handle of the key labelled `label` on `token`: the cached one while the object
    /// behind it is still a secret key of that label, else found again.
    fn key_handle(&self, token: &str, s: &Session, label: &str) -> Result<ObjectHandle, KmsError> {
        let handles = &self.token(token)?.handles;
        let cached = handles.lock().ok().and_then(|h| h.get(label).copied());
        if let Some(handle) = cached
            && s.get_attributes(handle, &[AttributeType::Class, AttributeType::Label])
                .is_ok_and(|attrs| {
                    attrs.contains(&Attribute::Class(ObjectClass::SECRET_KEY))
                        && attrs.contains(&Attribute::Label(label.as_bytes().to_vec()))
                })
        {
            return Ok(handle);
        }
        let handle = one_key(s, label)?;
        if let Ok(mut h) = handles.lock() {
            h.insert(label.to_string(), handle);
        }
        Ok(handle)
    }

    fn token(&self, label: &str) -> Result<&Token, KmsError> {
        self.tokens.get(label).map(|t| t.as_ref()).ok_or_else(|| {
            KmsError::new(
                KmsErrorKind::NotFound,
                format!("PKCS#11 token `{label}` is not configured"),
            )
        })
    }

    fn with_manager<T>(
        &self,
        label: &str,
        f: impl FnOnce(&Session) -> Result<T, KmsError>,
    ) -> Result<T, KmsError> {
        let token = self.token(label)?;
        let _alone = TOKEN_WRITES.write().map_err(|_| lock_poisoned())?;
        let mut manager = token.manager.lock().map_err(|_| lock_poisoned())?;
        let session = match manager.take() {
            Some(s) => s,
            None => self.open(label, token)?,
        };
        let result = f(&session);
        if !matches!(&result, Err(e) if e.kind == KmsErrorKind::Unavailable) {
            *manager = Some(session);
        }
        result
    }

    fn with_session<T>(
        &self,
        label: &str,
        f: impl FnOnce(&Session) -> Result<T, KmsError>,
    ) -> Result<T, KmsError> {
        let token = self.token(label)?;
        let _shared = TOKEN_WRITES.read().map_err(|_| lock_poisoned())?;
        let pooled = token.pool.lock().ok().and_then(|mut p| p.pop());
        let session = match pooled {
            Some(s) => s,
            None => self.open(label, token)?,
        };
        let result = f(&session);
        if matches!(&result, Err(e) if e.kind == KmsErrorKind::Unavailable) {
            // A session or device error: drop the session, and find the token's slot again
            // next time (it may have moved).
            if let Ok(mut slot) = token.slot.lock() {
                *slot = None;
            }
        } else if let Ok(mut pool) = token.pool.lock()
            && pool.len() < POOL_MAX
        {
            // Kept open: besides saving a login, an open session keeps the application
            // logged in (closing its last session logs the token out).
            pool.push(session);
        }
        result
    }

    fn open(&self, label: &str, token: &Token) -> Result<Session, KmsError> {
        let slot = self.slot(label, token)?;
        // Read-write: the same sessions serve operators' key management.
        let session = self
            .library
            .open_rw_session(slot)
            .map_err(|e| classify("C_OpenSession", e, false))?;
        match session.login(UserType::User, Some(&token.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, Function::Login)) => {}
            Err(e) => return Err(classify("C_Login", e, false)),
        }
        Ok(session)
    }

    fn slot(&self, label: &str, token: &Token) -> Result<Slot, KmsError> {
        if let Some(slot) = token.slot.lock().ok().and_then(|s| *s) {
            return Ok(slot);
        }
        let slots = self
            .library
            .get_slots_with_token()
            .map_err(|e| classify("C_GetSlotList", e, false))?;
        let slot = slots
            .into_iter()
            .find(|s| {
                self.library
                    .get_token_info(*s)
                    .is_ok_and(|info| info.label() == label)
            })
            .ok_or_else(|| {
                KmsError::new(
                    KmsErrorKind::Unavailable,
                    format!("PKCS#11 token `{label}` is in no slot"),
                )
            })?;
        if let Ok(mut cached) = token.slot.lock() {
            *cached = Some(slot);
        }
        Ok(slot)
    }
}

fn parse(key: &KeyRef) -> Result<(&str, &str), KmsError> {
    if key.provider() != PROVIDER {
        return Err(KmsError::new(
            KmsErrorKind::NotFound,
            "not a PKCS#11 key reference",
        ));
    }
    match key.key_id().split_once('/') {
        Some((token, label)) if !token.is_empty() && !label.is_empty() => Ok((token, label)),
        _ => Err(KmsError::new(
            KmsErrorKind::NotFound,
            format!("PKCS#11 key reference `{key}` must look like `pkcs11:TOKEN/LABEL`"),
        )),
    }
}

fn find_keys(s: &Session, label: &str) -> Result<Vec<ObjectHandle>, KmsError> {
    s.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Label(label.as_bytes().to_vec()),
    ])
    .map_err(|e| classify("C_FindObjects", e, false))
}

/// The one secret key labelled `label`; two keys of one label are refused rather than
/// guessed between.
fn one_key(s: &Session, label: &str) -> Result<ObjectHandle, KmsError> {
    match find_keys(s, label)?.as_slice() {
        [] => Err(KmsError::new(
            KmsErrorKind::NotFound,
            format!("no PKCS#11 secret key labelled `{label}`"),
        )),
        [one] => Ok(*one),
        _ => Err(KmsError::new(
            KmsErrorKind::Invalid,
            format!("several PKCS#11 secret keys are labelled `{label}`"),
        )),
    }
}

#[async_trait::async_trait]
impl Kms for Pkcs11Kms {
    fn provider(&self) -> &str {
        PROVIDER
    }

    async fn wrap(
        &self,
        key: &KeyRef,
        plaintext: &[u8],
        context: &KmsContext,
    ) -> Result<Vec<u8>, KmsError> {
        let (token, label) = parse(key)?;
        let label = label.to_string();
        let plaintext = SecretBytes::new(plaintext.to_vec());
        let aad = context.aad().to_vec();
        let iv: [u8; NONCE_LEN] =
            rng::array().map_err(|_| KmsError::new(KmsErrorKind::Unavailable, "no randomness"))?;
        let inner = Arc::clone(&self.inner);
        let token_label = token.to_string();
        self.on_token(token, move |s| {
            let handle = inner.key_handle(&token_label, s, &label)?;
            let mut iv_param = iv;
            let params = GcmParams::new(&mut iv_param, &aad, TAG_BITS.into())
                .map_err(|e| classify("GCM parameters", e, false))?;
            let sealed = s
                .encrypt(
                    &Mechanism::AesGcm(params),
                    handle,
                    plaintext.expose_secret(),
                )
                .map_err(|e| classify("C_Encrypt", e, false))?;
            let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
            out.push(BLOB_VERSION);
            out.extend_from_slice(&iv);
            out.extend_from_slice(&sealed);
            Ok(out)
        })
        .await
    }

    async fn unwrap(
        &self,
        key: &KeyRef,
        wrapped: &[u8],
        context: &KmsContext,
    ) -> Result<SecretBytes, KmsError> {
        let (token, label) = parse(key)?;
        if wrapped.len() < 1 + NONCE_LEN + TAG_LEN || wrapped[0] != BLOB_VERSION {
            return Err(KmsError::new(
                KmsErrorKind::Invalid,
                "ciphertext or associated data invalid",
            ));
        }
        let label = label.to_string();
        let aad = context.aad().to_vec();
        let mut iv = [0u8; NONCE_LEN];
        iv.copy_from_slice(&wrapped[1..1 + NONCE_LEN]);
        let body = wrapped[1 + NONCE_LEN..].to_vec();
        let inner = Arc::clone(&self.inner);
        let token_label = token.to_string();
        self.on_token(token, move |s| {
            let handle = inner.key_handle(&token_label, s, &label)?;
            let params = GcmParams::new(&mut iv, &aad, TAG_BITS.into())
                .map_err(|e| classify("GCM parameters", e, false))?;
            s.decrypt(&Mechanism::AesGcm(params), handle, &body)
                .map(SecretBytes::new)
                .map_err(|e| classify("C_Decrypt", e, true))
        })
        .await
    }
}
