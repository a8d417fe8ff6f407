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
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::{KeyRef, Kms, KmsContext, KmsError, KmsErrorKind};
use crate::crypto::aead::NONCE_LEN;
use crate::crypto::rng;
use crate::crypto::secret::SecretBytes;

/// The provider name in key references (`pkcs11:...`).
pub const PROVIDER: &str = "pkcs11";
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

/// The write lock of each token, one per module path and token label per process: every
/// [`Pkcs11Kms`] built on the same token shares it, so two instances (two tenants' configs,
/// two tests) never write token objects alongside each other's calls.
fn write_lock(module: &Path, token: &str) -> Arc<std::sync::RwLock<()>> {
    type Locks = Mutex<HashMap<(PathBuf, String), Arc<std::sync::RwLock<()>>>>;
    static LOCKS: OnceLock<Locks> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    locks
        .entry((module.to_path_buf(), token.to_string()))
        .or_default()
        .clone()
}

/// Sessions older than this are closed rather than reused, so that a PIN the token owner
/// changed takes effect within a minute (a session stays logged in for its whole life).
const SESSION_MAX_AGE: Duration = Duration::from_secs(60);

/// A failed call on a session, and whether a fresh session may succeed where this one failed:
/// a session the token logged out or closed, or a device that failed once, is not the
/// tenant's answer.
struct Failure {
    error: KmsError,
    retry: bool,
}

impl From<KmsError> for Failure {
    fn from(error: KmsError) -> Self {
        let retry = error.kind == KmsErrorKind::Unavailable;
        Failure { error, retry }
    }
}

/// Classifies a failed cryptographic call and says whether to try it on a fresh session.
fn call_failure(op: &str, e: CkError, decrypting: bool) -> Failure {
    // SoftHSM2 reports a GCM tag that does not verify as a general error, as it would a
    // device fault: a second try on a fresh session tells them apart.
    let general = matches!(&e, CkError::Pkcs11(RvError::GeneralError, _));
    let error = classify(op, e, decrypting);
    Failure {
        retry: general || error.kind == KmsErrorKind::Unavailable,
        error,
    }
}

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
            | RvError::PinLenRange => Denied,
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
            | RvError::UserNotLoggedIn
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
    /// Token-object writes (key management) exclude every other call of this process on the
    /// token, from any instance ([`write_lock`]); wraps, unwraps and logins share. SoftHSM2 fails a token-object write that runs
    /// alongside another session's call with `CKR_GENERAL_ERROR` (measured: creating keys
    /// while other tasks wrapped failed in most runs), and key management is rare.
    writes: Arc<std::sync::RwLock<()>>,
    /// Key handles found by label, checked against the label at each use (a scan of the
    /// token's objects costs milliseconds on a token with a thousand keys; reading one
    /// object's label does not).
    handles: Mutex<HashMap<String, ObjectHandle>>,
    slot: Mutex<Option<Slot>>,
    pool: Mutex<Vec<(Session, Instant)>>,
    /// The one session key management runs on, one call at a time.
    manager: Mutex<Option<Session>>,
}

struct Inner {
    module: PathBuf,
    library: Pkcs11,
    timeout: Duration,
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
                timeout: Duration::from_secs(10),
                tokens: HashMap::new(),
            }),
        })
    }

    /// Sets how long one call may take before it fails *unavailable* (default 10 s): a
    /// network HSM that stops answering must not hang the application.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            module: shared.module.clone(),
            library: shared.library.clone(),
            timeout: shared.timeout,
            tokens: shared.tokens.clone(),
        });
        inner.timeout = timeout;
        Pkcs11Kms {
            inner: Arc::new(inner),
        }
    }

    /// Allows the token labelled `label`, logging in with the user PIN `pin`.
    pub fn with_token(self, label: impl Into<String>, pin: impl Into<String>) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            module: shared.module.clone(),
            library: shared.library.clone(),
            timeout: shared.timeout,
            tokens: shared.tokens.clone(),
        });
        let label = label.into();
        let writes = write_lock(&inner.module, &label);
        inner.tokens.insert(
            label,
            Arc::new(Token {
                pin: AuthPin::new(pin.into().into()),
                writes,
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
        // A general error may leave the key made (PKCS#11 says the call may have partly
        // succeeded): on the retry, the one key of that label this call generated is success.
        let generated = std::sync::atomic::AtomicBool::new(false);
        self.managing(token, move |s| {
            let existing = find_keys(s, &label)?;
            if generated.load(std::sync::atomic::Ordering::SeqCst) && existing.len() == 1 {
                return Ok(());
            }
            if !existing.is_empty() {
                return Err(KmsError::new(
                    KmsErrorKind::Invalid,
                    format!("a key labelled `{label}` exists already"),
                )
                .into());
            }
            generated.store(true, std::sync::atomic::Ordering::SeqCst);
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
                    Attribute::Label(label.clone().into_bytes()),
                ],
            )
            .map_err(|e| call_failure("C_GenerateKey", e, false))?;
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
            .map_err(|e| call_failure("C_SetAttributeValue", e, false))
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
        // Not retried: a destroy that partly succeeded would make the retry fail *not found*
        // and leave the caller unsure; the caller's own retry says which.
        self.managing(token, move |s| {
            let handle = one_key(s, &label)?;
            s.destroy_object(handle).map_err(|e| Failure {
                error: classify("C_DestroyObject", e, false),
                retry: false,
            })
        })
        .await
    }

    /// Runs a key-management call (object creation, change, destruction) on the token's one
    /// management session, alone among this process's calls on the token.
    async fn managing<T: Send + 'static>(
        &self,
        token: &str,
        f: impl Fn(&Session) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, KmsError> {
        let inner = Arc::clone(&self.inner);
        let token = token.to_string();
        self.bounded(move || inner.with_manager(&token, f)).await
    }

    /// Runs a blocking HSM call on tokio's blocking pool, failing *unavailable* when it takes
    /// longer than the configured timeout (the call itself cannot be cancelled; its thread
    /// finishes or fails on its own).
    async fn bounded<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> Result<T, KmsError> + Send + 'static,
    ) -> Result<T, KmsError> {
        let unavailable =
            |what: &str| KmsError::new(KmsErrorKind::Unavailable, format!("PKCS#11: {what}"));
        tokio::time::timeout(self.inner.timeout, tokio::task::spawn_blocking(call))
            .await
            .map_err(|_| unavailable("the HSM did not answer in time"))?
            .map_err(|_| unavailable("the call did not finish"))?
    }

    /// Runs `f` with a logged-in session of `token` on tokio's blocking pool; the session goes
    /// back to the pool unless the call failed with a session or device error.
    async fn on_token<T: Send + 'static>(
        &self,
        token: &str,
        f: impl Fn(&Session) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, KmsError> {
        let inner = Arc::clone(&self.inner);
        let token = token.to_string();
        self.bounded(move || inner.with_session(&token, f)).await
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

    /// Runs `f` on the token's management session, alone among this process's calls on the
    /// token; a failure a fresh session may not repeat (see [`Failure`]) tries once more on a
    /// new session (another process's write can still collide with this one).
    fn with_manager<T>(
        &self,
        label: &str,
        f: impl Fn(&Session) -> Result<T, Failure>,
    ) -> Result<T, KmsError> {
        let token = self.token(label)?;
        let _alone = token.writes.write().map_err(|_| lock_poisoned())?;
        let mut manager = token.manager.lock().map_err(|_| lock_poisoned())?;
        let session = match manager.take() {
            Some(s) => s,
            None => self.open(label, token)?,
        };
        let failure = match f(&session) {
            Ok(v) => {
                *manager = Some(session);
                return Ok(v);
            }
            Err(failure) if !failure.retry => {
                *manager = Some(session);
                return Err(failure.error);
            }
            Err(failure) => failure,
        };
        drop(session);
        if failure.error.kind == KmsErrorKind::Unavailable
            && let Ok(mut slot) = token.slot.lock()
        {
            *slot = None;
        }
        let fresh = self.open(label, token)?;
        let result = f(&fresh).map_err(|again| again.error);
        if !matches!(&result, Err(e) if e.kind == KmsErrorKind::Unavailable) {
            *manager = Some(fresh);
        }
        result
    }

    /// Runs `f` on a pooled session of `token` (or a new one). A failure a fresh session may
    /// not repeat (see [`Failure`]) drops the session and tries once more on a new one; the
    /// session goes back to the pool otherwise.
    fn with_session<T>(
        &self,
        label: &str,
        f: impl Fn(&Session) -> Result<T, Failure>,
    ) -> Result<T, KmsError> {
        let token = self.token(label)?;
        let _shared = token.writes.read().map_err(|_| lock_poisoned())?;
        let session = match self.pooled(token) {
            Some(s) => s,
            None => (self.open(label, token)?, Instant::now()),
        };
        let failure = match f(&session.0) {
            Ok(v) => {
                self.give_back(token, session);
                return Ok(v);
            }
            Err(failure) if !failure.retry => {
                self.give_back(token, session);
                return Err(failure.error);
            }
            Err(failure) => failure,
        };
        drop(session);
        // The token may have moved to another slot: find it again.
        if failure.error.kind == KmsErrorKind::Unavailable
            && let Ok(mut slot) = token.slot.lock()
        {
            *slot = None;
        }
        let fresh = (self.open(label, token)?, Instant::now());
        match f(&fresh.0) {
            Ok(v) => {
                self.give_back(token, fresh);
                Ok(v)
            }
            Err(again) => {
                if again.error.kind != KmsErrorKind::Unavailable {
                    self.give_back(token, fresh);
                }
                Err(again.error)
            }
        }
    }

    /// A pooled session young enough to reuse; older ones are closed on the way.
    fn pooled(&self, token: &Token) -> Option<(Session, Instant)> {
        let mut pool = token.pool.lock().ok()?;
        while let Some((session, opened)) = pool.pop() {
            if opened.elapsed() < SESSION_MAX_AGE {
                return Some((session, opened));
            }
        }
        None
    }

    /// Keeps a session for reuse: besides saving a login, an open session keeps the
    /// application logged in (closing its last session logs the token out).
    fn give_back(&self, token: &Token, session: (Session, Instant)) {
        if let Ok(mut pool) = token.pool.lock()
            && pool.len() < POOL_MAX
        {
            pool.push(session);
        }
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
                .map_err(|e| call_failure("C_Encrypt", e, false))?;
            // An HSM that chose an IV of its own made a blob this one cannot describe.
            if iv_param != iv {
                return Err(KmsError::new(
                    KmsErrorKind::Invalid,
                    "PKCS#11: the HSM replaced the IV it was given (internal IV generation)",
                )
                .into());
            }
            Ok(super::gcm_blob::frame(&iv, &[&sealed]))
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
        let parts = super::gcm_blob::parse(wrapped)?;
        let (iv, body) = (parts.iv, parts.sealed(wrapped));
        let label = label.to_string();
        let aad = context.aad().to_vec();
        let inner = Arc::clone(&self.inner);
        let token_label = token.to_string();
        self.on_token(token, move |s| {
            let handle = inner.key_handle(&token_label, s, &label)?;
            let mut iv = iv;
            let params = GcmParams::new(&mut iv, &aad, TAG_BITS.into())
                .map_err(|e| classify("GCM parameters", e, false))?;
            s.decrypt(&Mechanism::AesGcm(params), handle, &body)
                .map(SecretBytes::new)
                .map_err(|e| call_failure("C_Decrypt", e, true))
        })
        .await
    }
}
