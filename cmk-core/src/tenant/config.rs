//! Tenant configuration: policies per class and the audit destination, authenticated.
//!
//! The database is not trusted with configuration (DESIGN.md §4): each record carries an
//! HMAC-SHA256 under an operator key that lives in deployment secrets, over the tenant id,
//! a monotonic revision and the exact content bytes. A store refuses a record whose MAC
//! fails and a revision older than the newest it has seen. A fresh process has seen nothing,
//! so it cannot tell a rolled-back record from the newest one unless it has a revision floor:
//! one kept in a local file that survives restarts ([`ConfigVerifier::with_floor_file`]),
//! or one from deployment settings ([`ConfigVerifier::with_floor`]); docs/SECURITY.md says
//! how a deployment of many instances sets them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::crypto::secret::SecretKey;
use crate::format::aad::Aad;
use crate::kms::KeyRef;
use crate::tenant::context::TenantId;
use crate::tenant::policy::{Class, Policy};

/// A tenant's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TenantConfig {
    /// The tenant (serialised as its string).
    #[serde(with = "tenant_serde")]
    pub tenant: TenantId,
    /// Monotonic revision; every change must raise it.
    pub revision: u64,
    /// The master key that wraps the tenant's index and deterministic roots.
    pub root_key: KeyRef,
    /// Policy per class.
    pub policies: BTreeMap<Class, Policy>,
    /// Name of the audit sink for this tenant's events (`None`: the default sink).
    #[serde(default)]
    pub audit_sink: Option<String>,
}

mod tenant_serde {
    use super::TenantId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &TenantId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(t.as_str())
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TenantId, D::Error> {
        TenantId::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl TenantConfig {
    /// A configuration at revision 1 whose built-in classes all use `master_key` with default
    /// policies; adjust `policies` before saving.
    pub fn new(tenant: TenantId, master_key: KeyRef) -> Self {
        let policies = Class::BUILT_IN
            .iter()
            .filter_map(|c| Class::new(*c).ok())
            .map(|c| (c, Policy::new(master_key.clone())))
            .collect();
        TenantConfig {
            tenant,
            revision: 1,
            root_key: master_key,
            policies,
            audit_sink: None,
        }
    }

    /// Sets the policy of `class` (a built-in class or the application's own).
    ///
    /// # Errors
    /// [`crate::Error::InvalidName`] when `class` is not a valid class name.
    pub fn with_class(mut self, class: &str, policy: Policy) -> crate::Result<Self> {
        self.policies.insert(Class::new(class)?, policy);
        Ok(self)
    }

    /// Sets the lease of every class the configuration holds: the tenant's default lease
    /// in one call. Call it after [`TenantConfig::with_class`], or give a class added later
    /// its own lease ([`Policy::with_lease`]).
    pub fn with_lease(mut self, lease: crate::tenant::policy::LeasePolicy) -> Self {
        for policy in self.policies.values_mut() {
            policy.lease = lease;
        }
        self
    }

    /// The policy of a class.
    ///
    /// # Errors
    /// [`crate::Error::UnknownClass`] when the configuration holds no policy for `class`.
    pub fn policy(&self, class: &Class) -> crate::Result<&Policy> {
        self.policies
            .get(class)
            .ok_or_else(|| crate::Error::UnknownClass {
                tenant: self.tenant.to_string(),
                class: class.to_string(),
            })
    }

    /// Checks every policy and that no two classes share a KEK id.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] when a policy fails [`Policy::validate`], two classes
    /// map to the same KEK id, or the configuration has no class policies.
    pub fn validate(&self) -> crate::Result<()> {
        let mut ids = HashMap::new();
        for (class, policy) in &self.policies {
            policy.validate(class)?;
            if let Some(other) = ids.insert(crate::tenant::policy::kek_id(class.as_str()), class) {
                return Err(crate::Error::InvalidConfig(format!(
                    "classes `{other}` and `{class}` map to the same KEK id; rename one"
                )));
            }
        }
        if self.policies.is_empty() {
            return Err(crate::Error::InvalidConfig(format!(
                "tenant `{}` has no class policies",
                self.tenant
            )));
        }
        Ok(())
    }
}

/// A configuration record as stored: content bytes plus MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignedTenantConfig {
    /// Tenant id (also inside the content; both are MACed).
    pub tenant: String,
    /// Revision (also inside the content).
    pub revision: u64,
    /// The configuration as JSON.
    pub content: Vec<u8>,
    /// HMAC-SHA256 under the operator key.
    pub mac: [u8; 32],
}

/// A new file of mode 0600 with a unique name in `dir`, starting `.<stem>.`.
pub(crate) fn temp_file_in(
    dir: &std::path::Path,
    stem: &str,
) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut suffix = [0u8; 8];
    crate::crypto::rng::fill(&mut suffix).map_err(std::io::Error::other)?;
    let path = dir.join(format!(".{stem}.{}.tmp", crate::hex::encode(&suffix)));
    Ok((path.clone(), options.open(path)?))
}

/// The operator key that authenticates configuration records; from deployment secrets.
pub struct OperatorKey(SecretKey);

impl std::fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorKey(redacted)")
    }
}

impl OperatorKey {
    /// Wraps a 32-byte key.
    pub fn new(key: SecretKey) -> Self {
        OperatorKey(key)
    }

    /// Reads a 64-hex-digit key from an environment variable (deployment secrets).
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] when the variable is not set (or not Unicode) or does
    /// not hold 64 hex digits.
    pub fn from_env(var: &str) -> crate::Result<Self> {
        let hex = zeroize::Zeroizing::new(std::env::var(var).map_err(|_| {
            crate::Error::InvalidConfig(format!(
                "environment variable `{var}` holding the operator key is not set"
            ))
        })?);
        let raw = zeroize::Zeroizing::new(crate::hex::decode(hex.trim()).unwrap_or_default());
        SecretKey::from_slice(&raw).map(OperatorKey).ok_or_else(|| {
            crate::Error::InvalidConfig(format!("`{var}` must hold 64 hex digits (a 256-bit key)"))
        })
    }

    /// Reads the operator key kept in the file `path` (64 hex digits), creating it on first
    /// use: a random key, written to a temporary file of mode 0600 and linked into place, so
    /// two processes starting at once agree on one key. An embedded deployment's key thus
    /// survives restarts (a random key per start would make every stored configuration
    /// unverifiable on the next one).
    ///
    /// # Errors
    /// [`crate::Error::Io`] when the file cannot be read or written;
    /// [`crate::Error::InvalidConfig`] when it does not hold a key, or when group or others
    /// may read it (`chmod 600` it: anyone who reads it can forge tenant configurations).
    pub fn load_or_create(path: &std::path::Path) -> crate::Result<Self> {
        match Self::load(path) {
            Err(crate::Error::Io { .. }) if !path.exists() => {}
            // Another process created it between the read and the check: read its key.
            Err(crate::Error::Io { .. }) => return Self::load(path),
            loaded => return loaded,
        }
        let io = |what: &str, e: std::io::Error| {
            crate::Error::io(format!("{what} {}", path.display()), e)
        };
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        let mut tmp =
            temp_file_in(dir, "operator-key").map_err(|e| io("creating a key file beside", e))?;
        let key = SecretKey::random()?;
        // Hex written into one zeroizing buffer: no unzeroized copy of the key is left behind.
        let mut hex = zeroize::Zeroizing::new(Vec::with_capacity(2 * SecretKey::LEN + 1));
        for b in key.expose_secret() {
            hex.push(b"0123456789abcdef"[usize::from(b >> 4)]);
            hex.push(b"0123456789abcdef"[usize::from(b & 0xf)]);
        }
        hex.push(b'\n');
        let written = {
            use std::io::Write;
            tmp.1.write_all(&hex).and_then(|()| tmp.1.sync_all())
        };
        // The temporary name goes on every path: it may hold the key.
        let linked = written.and_then(|()| std::fs::hard_link(&tmp.0, path));
        let _ = std::fs::remove_file(&tmp.0);
        match linked {
            Ok(()) => {
                // The new name must survive a crash, or the next start would make another key
                // and every stored configuration would fail its check.
                #[cfg(unix)]
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io("syncing the directory of", e))?;
                Ok(OperatorKey(key))
            }
            // Another process created it first: its key is the one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(io("creating", e)),
        }
    }

    /// Reads a 64-hex-digit operator key from a file only its owner may read, never creating
    /// one (an operator's tool pointed at the wrong directory must not make a new key, under
    /// which every stored configuration would look forged).
    ///
    /// # Errors
    /// [`crate::Error::Io`] when the file cannot be read; [`crate::Error::InvalidConfig`] when
    /// it does not hold a key, or when group or others may read it.
    pub fn load(path: &std::path::Path) -> crate::Result<Self> {
        let io = |e: std::io::Error| crate::Error::io(format!("reading {}", path.display()), e);
        let mut file = std::fs::File::open(path).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = file.metadata().map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(crate::Error::InvalidConfig(format!(
                    "the operator key file {} has mode {:o}: group or others may read it \
                     (`chmod 600` it, and replace the key if others did read it)",
                    path.display(),
                    mode & 0o777
                )));
            }
        }
        let mut hex = zeroize::Zeroizing::new(String::new());
        std::io::Read::read_to_string(&mut file, &mut hex).map_err(io)?;
        let raw = zeroize::Zeroizing::new(crate::hex::decode(hex.trim()).unwrap_or_default());
        SecretKey::from_slice(&raw).map(OperatorKey).ok_or_else(|| {
            crate::Error::InvalidConfig(format!(
                "{} must hold 64 hex digits (a 256-bit operator key)",
                path.display()
            ))
        })
    }

    fn mac(&self, tenant: &str, revision: u64, content: &[u8]) -> Hmac<Sha256> {
        let input = Aad::new("cmk/tenant-config")
            .u8(1)
            .text(tenant)
            .bytes(&revision.to_be_bytes())
            .bytes(content);
        let mut mac = crate::crypto::mac::hmac_sha256(self.0.expose_secret());
        mac.update(input.as_bytes());
        mac
    }

    /// Validates and signs a configuration.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] when the configuration fails [`TenantConfig::validate`]:
    /// an invalid configuration is never signed.
    pub fn sign(&self, config: &TenantConfig) -> crate::Result<SignedTenantConfig> {
        config.validate()?;
        let content = serde_json::to_vec(config)
            .map_err(|e| crate::Error::InvalidConfig(format!("serialising configuration: {e}")))?;
        let tag = self
            .mac(config.tenant.as_str(), config.revision, &content)
            .finalize();
        Ok(SignedTenantConfig {
            tenant: config.tenant.to_string(),
            revision: config.revision,
            mac: tag.into_bytes().into(),
            content,
        })
    }

    /// Checks the MAC (constant time) and parses the content; the tenant and revision in the
    /// content must equal the record's.
    ///
    /// # Errors
    /// [`crate::Error::ConfigIntegrity`] when the MAC does not match, the content does not
    /// parse as a configuration, or its tenant or revision differs from the record's;
    /// [`crate::Error::InvalidConfig`] when the authentic content fails
    /// [`TenantConfig::validate`].
    pub fn verify(&self, record: &SignedTenantConfig) -> crate::Result<TenantConfig> {
        let bad = || crate::Error::ConfigIntegrity {
            tenant: record.tenant.clone(),
        };
        self.mac(&record.tenant, record.revision, &record.content)
            .verify_slice(&record.mac)
            .map_err(|_| bad())?;
        let config: TenantConfig = serde_json::from_slice(&record.content).map_err(|_| bad())?;
        if config.tenant.as_str() != record.tenant || config.revision != record.revision {
            return Err(bad());
        }
        config.validate()?;
        Ok(config)
    }
}

/// MAC and revision checks shared by every store implementation.
#[derive(Debug)]
pub struct ConfigVerifier {
    key: OperatorKey,
    seen: Mutex<HashMap<String, u64>>,
    /// Where the highest revisions verified are kept across restarts, if anywhere.
    floor_file: Option<super::floor::FloorFile>,
}

impl ConfigVerifier {
    /// A verifier with no revisions seen yet.
    pub fn new(key: OperatorKey) -> Self {
        ConfigVerifier {
            key,
            seen: Mutex::new(HashMap::new()),
            floor_file: None,
        }
    }

    /// Keeps the highest revision verified per tenant in the local file `path` (JSON, mode
    /// 0600, written atomically), and starts from the floors it holds: a restarted process
    /// refuses a record older than one it verified before it stopped, with no help from the
    /// database. Put the file on the application host, where the database cannot write
    /// (the embedded preset keeps it in its directory). Each instance of a deployment keeps
    /// its own file; a revision only another instance has seen is not known here, so for a
    /// floor every instance shares, also set [`ConfigVerifier::with_floor`] from deployment
    /// settings (docs/SECURITY.md).
    ///
    /// # Errors
    /// [`crate::Error::Io`] when the file exists and cannot be read;
    /// [`crate::Error::InvalidConfig`] when it is damaged (not a JSON object of revisions).
    pub fn with_floor_file(mut self, path: impl Into<std::path::PathBuf>) -> crate::Result<Self> {
        let file = super::floor::FloorFile::new(path.into());
        let floors = file.load()?;
        if let Ok(mut seen) = self.seen.lock() {
            for (tenant, revision) in floors {
                let floor = seen.entry(tenant).or_insert(0);
                *floor = (*floor).max(revision);
            }
        }
        self.floor_file = Some(file);
        Ok(self)
    }

    /// Sets a revision floor from deployment settings: older records are refused even by a
    /// fresh process. It only raises a floor (one from the floor file may be higher).
    pub fn with_floor(self, tenant: &TenantId, revision: u64) -> Self {
        if let Ok(mut seen) = self.seen.lock() {
            let floor = seen.entry(tenant.to_string()).or_insert(0);
            *floor = (*floor).max(revision);
        }
        self
    }

    fn check_revision(&self, tenant: &str, revision: u64, allow_equal: bool) -> crate::Result<()> {
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| crate::Error::InvalidConfig("verifier lock poisoned".into()))?;
        let floor = seen.get(tenant).copied().unwrap_or(0);
        if revision < floor || (revision == floor && !allow_equal) {
            return Err(crate::Error::ConfigRollback {
                tenant: tenant.to_string(),
                seen: floor,
                offered: revision,
            });
        }
        seen.insert(tenant.to_string(), revision);
        if revision > floor
            && let Some(file) = &self.floor_file
            && let Err(e) = file.save(&seen)
        {
            // The floor still holds in this process; only a restart before the next
            // successful save would forget it. Refusing the configuration instead would
            // take the tenant down for a local disk problem.
            tracing::warn!(
                target: "cmk::config",
                error = %e,
                "could not record the configuration revision floor; a restart may accept an older record"
            );
        }
        Ok(())
    }

    /// Verifies a record loaded for `expected` and records its revision. A validly signed
    /// record of another tenant is refused too (a store must not hand it out).
    ///
    /// # Errors
    /// [`crate::Error::ConfigIntegrity`] when the record fails [`OperatorKey::verify`]'s checks
    /// or belongs to a tenant other than `expected`; [`crate::Error::ConfigRollback`] when its
    /// revision is below one already seen (a rolled-back record);
    /// [`crate::Error::InvalidConfig`] when the content fails [`TenantConfig::validate`] or the
    /// verifier's lock is poisoned.
    pub fn verify_loaded(
        &self,
        expected: &TenantId,
        record: &SignedTenantConfig,
    ) -> crate::Result<TenantConfig> {
        let config = self.key.verify(record)?;
        if &config.tenant != expected {
            return Err(crate::Error::ConfigIntegrity {
                tenant: expected.to_string(),
            });
        }
        self.check_revision(&record.tenant, record.revision, true)?;
        Ok(config)
    }

    /// Signs a record to save; its revision must be above every revision seen.
    ///
    /// # Errors
    /// [`crate::Error::ConfigRollback`] when the revision is not above every revision seen for
    /// the tenant, since a save must move it forward; [`crate::Error::InvalidConfig`] when the
    /// configuration fails [`TenantConfig::validate`] or the verifier's lock is poisoned.
    pub fn sign_for_save(&self, config: &TenantConfig) -> crate::Result<SignedTenantConfig> {
        let record = self.key.sign(config)?;
        self.check_revision(&record.tenant, record.revision, false)?;
        Ok(record)
    }
}

/// Where tenant configurations live. Implementations verify MACs and revisions through a
/// [`ConfigVerifier`].
#[async_trait::async_trait]
pub trait TenantConfigStore: Send + Sync + std::fmt::Debug {
    /// Loads and verifies a tenant's configuration.
    async fn load(&self, tenant: &TenantId) -> crate::Result<TenantConfig>;

    /// Signs and saves a configuration; its revision must be above every revision seen.
    async fn save(&self, config: &TenantConfig) -> crate::Result<()>;
}

/// An in-memory configuration store.
#[derive(Debug)]
pub struct MemoryConfigStore {
    verifier: ConfigVerifier,
    records: Mutex<HashMap<String, SignedTenantConfig>>,
}

impl MemoryConfigStore {
    /// An empty store verifying with `key`.
    pub fn new(key: OperatorKey) -> Self {
        Self::with_verifier(ConfigVerifier::new(key))
    }

    /// An empty store with a configured verifier (for example with revision floors).
    pub fn with_verifier(verifier: ConfigVerifier) -> Self {
        MemoryConfigStore {
            verifier,
            records: Mutex::new(HashMap::new()),
        }
    }

    fn records(
        &self,
    ) -> crate::Result<std::sync::MutexGuard<'_, HashMap<String, SignedTenantConfig>>> {
        self.records
            .lock()
            .map_err(|_| crate::Error::InvalidConfig("config store lock poisoned".into()))
    }

    /// The stored record, as a database reader would see it.
    pub fn raw(&self, tenant: &TenantId) -> Option<SignedTenantConfig> {
        self.records().ok()?.get(tenant.as_str()).cloned()
    }

    /// Replaces the stored record without checks, as a database writer could.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] when the store's lock is poisoned (a panic elsewhere
    /// while it was held).
    pub fn put_raw(&self, record: SignedTenantConfig) -> crate::Result<()> {
        self.records()?.insert(record.tenant.clone(), record);
        Ok(())
    }
}

#[async_trait::async_trait]
impl TenantConfigStore for MemoryConfigStore {
    async fn load(&self, tenant: &TenantId) -> crate::Result<TenantConfig> {
        let record = self
            .raw(tenant)
            .ok_or_else(|| crate::Error::UnknownTenant {
                tenant: tenant.to_string(),
            })?;
        self.verifier.verify_loaded(tenant, &record)
    }

    async fn save(&self, config: &TenantConfig) -> crate::Result<()> {
        let record = self.verifier.sign_for_save(config)?;
        self.put_raw(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (MemoryConfigStore, TenantConfig) {
        let store = MemoryConfigStore::new(OperatorKey::new(SecretKey::from_bytes([9; 32])));
        let cfg = TenantConfig::new(
            TenantId::new("acme").unwrap(),
            KeyRef::new("local:acme").unwrap(),
        );
        (store, cfg)
    }

    #[test]
    fn one_lease_for_the_tenant_covers_every_class_it_holds() {
        let (_, cfg) = setup();
        let key = KeyRef::new("local:acme").unwrap();
        let lease = crate::tenant::policy::LeasePolicy::Leased {
            hard_expiry_secs: 600,
            renewal_secs: 60,
            max_uses: None,
        };
        let cfg = cfg
            .with_class("payroll", Policy::new(key.clone()))
            .unwrap()
            .with_lease(lease);
        assert_eq!(cfg.policies.len(), 5);
        assert!(cfg.policies.values().all(|p| p.lease == lease));
        assert!(matches!(
            cfg.clone().with_class("Pay Roll", Policy::new(key)),
            Err(crate::Error::InvalidName { .. })
        ));
        // The configuration stays valid and signs.
        OperatorKey::new(SecretKey::from_bytes([9; 32]))
            .sign(&cfg)
            .unwrap();
    }

    #[tokio::test]
    async fn round_trip() {
        let (store, cfg) = setup();
        store.save(&cfg).await.unwrap();
        assert_eq!(store.load(&cfg.tenant).await.unwrap(), cfg);
    }

    #[tokio::test]
    async fn edited_record_is_refused() {
        let (store, cfg) = setup();
        store.save(&cfg).await.unwrap();
        let mut raw = store.raw(&cfg.tenant).unwrap();
        let text = String::from_utf8(raw.content.clone()).unwrap();
        // An attacker adds a reader role to the restricted class.
        raw.content = text
            .replacen("\"readers\":[]", "\"readers\":[\"attacker\"]", 1)
            .into_bytes();
        assert_ne!(raw.content, text.as_bytes());
        store.put_raw(raw).unwrap();
        assert!(matches!(
            store.load(&cfg.tenant).await,
            Err(crate::Error::ConfigIntegrity { .. })
        ));
    }

    #[tokio::test]
    async fn moved_record_is_refused() {
        let (store, cfg) = setup();
        store.save(&cfg).await.unwrap();
        let mut raw = store.raw(&cfg.tenant).unwrap();
        raw.tenant = "evil".into();
        store.put_raw(raw).unwrap();
        let evil = TenantId::new("evil").unwrap();
        assert!(matches!(
            store.load(&evil).await,
            Err(crate::Error::ConfigIntegrity { .. })
        ));
        // A record signed for acme served under another tenant's name is refused as well.
        let verifier = ConfigVerifier::new(OperatorKey::new(SecretKey::from_bytes([9; 32])));
        let signed = OperatorKey::new(SecretKey::from_bytes([9; 32]))
            .sign(&cfg)
            .unwrap();
        assert!(matches!(
            verifier.verify_loaded(&evil, &signed),
            Err(crate::Error::ConfigIntegrity { .. })
        ));
        assert!(verifier.verify_loaded(&cfg.tenant, &signed).is_ok());
    }

    #[tokio::test]
    async fn rolled_back_record_is_refused() {
        let (store, mut cfg) = setup();
        store.save(&cfg).await.unwrap();
        let old = store.raw(&cfg.tenant).unwrap();
        cfg.revision = 2;
        cfg.audit_sink = Some("siem".into());
        store.save(&cfg).await.unwrap();
        store.load(&cfg.tenant).await.unwrap();
        store.put_raw(old).unwrap();
        assert!(matches!(
            store.load(&cfg.tenant).await,
            Err(crate::Error::ConfigRollback {
                seen: 2,
                offered: 1,
                ..
            })
        ));
        // Saving without raising the revision is refused too.
        assert!(store.save(&cfg).await.is_err());
    }

    #[tokio::test]
    async fn a_fresh_process_needs_a_floor_to_see_rollbacks() {
        let key = || OperatorKey::new(SecretKey::from_bytes([9; 32]));
        let (store, cfg) = setup();
        store.save(&cfg).await.unwrap();
        let old = store.raw(&cfg.tenant).unwrap();
        let fresh =
            MemoryConfigStore::with_verifier(ConfigVerifier::new(key()).with_floor(&cfg.tenant, 2));
        fresh.put_raw(old).unwrap();
        assert!(matches!(
            fresh.load(&cfg.tenant).await,
            Err(crate::Error::ConfigRollback { .. })
        ));
    }

    #[test]
    fn invalid_configs_are_refused_with_clear_errors() {
        let (_, mut cfg) = setup();
        cfg.policies.clear();
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("no class policies")
        );
        assert!(OperatorKey::from_env("CMK_TEST_SURELY_UNSET_VAR").is_err());
    }
}
