//! The local KMS: a keyring file of AES-256 master keys.
//!
//! For development, tests, and a hosted-KMS tier where the operator runs the KMS. Each key
//! has numbered versions; wrapping uses the primary (newest) version, unwrapping the version
//! the blob names. A key can be disabled (every use is refused, *denied*), enabled again,
//! and each version destroyed for good (its material is wiped from the file: *not found*).
//!
//! **The file is the single truth**, shared by every process that opens it:
//! - every change is a read-modify-write under an exclusive lock on a lock file beside the
//!   keyring (`.NAME.lock`): re-read the file, apply the change, write it atomically
//!   (temporary file with mode 0600, fsync, rename, fsync of the directory), so concurrent
//!   writers in several processes lose nothing and a crash leaves the old or the new
//!   keyring, never half;
//! - every wrap, unwrap and listing first checks the file's identity (inode, size, change
//!   times) and re-reads it when it changed, and at least once a second in any case, so a
//!   disable or destroy made by another process is seen by the next KMS call here (a lease
//!   renewal, at the latest one renewal interval later);
//! - a version this process has seen destroyed stays destroyed: its material is never used
//!   or written back, even if the file is replaced by an older copy that still holds it.
//!
//! Wrapped blob: `0x01 ‖ version (u32 BE) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`, AES-256-GCM
//! with associated data `Aad("cmk/local-kms") ‖ text(key name) ‖ u32(version) ‖ bytes(aad)`
//! (docs/FORMAT.md §8).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{KeyRef, Kms, KmsContext, KmsError, KmsErrorKind};
use crate::crypto::aead::{GcmKey, NONCE_LEN, TAG_LEN};
use crate::crypto::rng;
use crate::crypto::secret::{SecretBytes, SecretKey};
use crate::format::aad::Aad;

const FILE_MAGIC: &str = "cmk-local-keyring 1";
const BLOB_VERSION: u8 = 0x01;
const BLOB_HEADER: usize = 1 + 4 + NONCE_LEN;
/// The file is re-read at least this often even when its identity looks unchanged (a
/// filesystem with coarse timestamps could hide two quick replacements of equal size).
const RECHECK: Duration = Duration::from_secs(1);

/// State of one key version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VersionState {
    /// Usable.
    Active,
    /// Material wiped; never usable again.
    Destroyed,
}

/// What [`LocalKms::list`] reports of a key (never its material).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LocalKeyInfo {
    /// Key name (the part after `local:`).
    pub name: String,
    /// Whether the key is enabled.
    pub enabled: bool,
    /// Version used for new wraps.
    pub primary: u32,
    /// Every version and its state.
    pub versions: Vec<(u32, VersionState)>,
}

struct LocalVersion {
    material: Option<SecretKey>,
}

struct LocalKey {
    enabled: bool,
    versions: BTreeMap<u32, LocalVersion>,
}

impl LocalKey {
    fn primary(&self) -> Option<u32> {
        self.versions
            .iter()
            .rev()
            .find(|(_, v)| v.material.is_some())
            .map(|(n, _)| *n)
    }
}

#[derive(Default)]
struct Keyring {
    keys: BTreeMap<String, LocalKey>,
}

/// What identifies one written version of the keyring file: a replacement is a new inode,
/// and a rewrite changes the size or the change times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Stamp {
                dev: meta.dev(),
                ino: meta.ino(),
                len: meta.len(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                ctime: (meta.ctime(), meta.ctime_nsec()),
            }
        }
        #[cfg(not(unix))]
        {
            let nanos = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
            Stamp {
                dev: 0,
                ino: 0,
                len: meta.len(),
                mtime: (nanos, 0),
                ctime: (0, 0),
            }
        }
    }
}

/// The keyring as this process last read or wrote it.
struct Loaded {
    ring: Keyring,
    /// The file version `ring` came from (`None`: memory only, or re-read on next use).
    stamp: Option<Stamp>,
    checked: Instant,
    /// Every version this process has seen destroyed, with the SHA-256 of its material when
    /// this process saw the material before (`None`: it was destroyed before).
    destroyed: BTreeMap<(String, u32), Option<[u8; 32]>>,
    /// The SHA-256 of the material of every live version this process has seen, so that a
    /// destroyed version brought back can be told from a new key that reuses its name.
    seen: HashMap<(String, u32), [u8; 32]>,
}

impl Loaded {
    fn new(ring: Keyring, stamp: Option<Stamp>) -> Loaded {
        let mut loaded = Loaded {
            ring: Keyring::default(),
            stamp: None,
            checked: Instant::now(),
            destroyed: BTreeMap::new(),
            seen: HashMap::new(),
        };
        loaded.install(ring, stamp);
        loaded
    }

    /// Takes a freshly read keyring, wiping every version this process has seen destroyed
    /// (an older copy of the file must not bring one back). A version whose material differs
    /// from the destroyed one's is another key that reuses the name (the file was replaced
    /// by one made before the first key existed) and is kept; where this process never saw
    /// the destroyed material, it cannot tell, and treats the version as destroyed.
    fn install(&mut self, mut ring: Keyring, stamp: Option<Stamp>) {
        for (name, key) in &mut ring.keys {
            for (n, v) in &mut key.versions {
                let Some(material) = &v.material else {
                    continue;
                };
                let id = (name.clone(), *n);
                let digest: [u8; 32] = Sha256::digest(material.expose_secret()).into();
                match self.destroyed.get(&id) {
                    Some(Some(gone)) if *gone != digest => {
                        self.destroyed.remove(&id);
                    }
                    Some(_) => {
                        v.material = None;
                        continue;
                    }
                    None => {}
                }
                self.seen.insert(id, digest);
            }
        }
        self.ring = ring;
        self.note_destroyed();
        self.stamp = stamp;
        self.checked = Instant::now();
    }

    fn note_destroyed(&mut self) {
        for (name, key) in &self.ring.keys {
            for (n, v) in &key.versions {
                if v.material.is_none() {
                    let id = (name.clone(), *n);
                    let digest = self.seen.get(&id).copied();
                    self.destroyed.entry(id).or_insert(digest);
                }
            }
        }
    }
}

/// The keyring file and the lock file that serialises its writers.
#[derive(Debug)]
struct KeyringFile {
    path: PathBuf,
    lock_path: PathBuf,
}

impl KeyringFile {
    fn new(path: PathBuf) -> KeyringFile {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let lock_path = parent_dir(&path).join(format!(".{name}.lock"));
        KeyringFile { path, lock_path }
    }

    /// An exclusive lock shared with every other process and thread that opens the same
    /// keyring; released when the returned file is dropped.
    fn lock(&self) -> crate::Result<fs::File> {
        let mut opts = fs::OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let f = opts
            .open(&self.lock_path)
            .map_err(|e| io_err(&self.lock_path, "opening lock file", e))?;
        f.lock()
            .map_err(|e| io_err(&self.lock_path, "locking", e))?;
        Ok(f)
    }

    /// The identity of the file as it is now.
    fn stamp(&self) -> std::io::Result<Stamp> {
        fs::metadata(&self.path).map(|m| Stamp::of(&m))
    }

    /// Reads and parses the file; the stamp is of the very file read.
    fn read(&self) -> crate::Result<(Keyring, Stamp)> {
        let mut f =
            fs::File::open(&self.path).map_err(|e| io_err(&self.path, "reading keyring", e))?;
        let stamp = Stamp::of(
            &f.metadata()
                .map_err(|e| io_err(&self.path, "reading keyring", e))?,
        );
        let mut bytes = Zeroizing::new(Vec::with_capacity(usize::try_from(stamp.len).unwrap_or(0)));
        f.read_to_end(&mut bytes)
            .map_err(|e| io_err(&self.path, "reading keyring", e))?;
        let ring = parse(&bytes).map_err(|why| {
            crate::Error::InvalidConfig(format!("keyring {}: {why}", self.path.display()))
        })?;
        Ok((ring, stamp))
    }

    /// Writes the keyring atomically and returns the new file's stamp. Callers hold the lock.
    fn write(&self, ring: &Keyring) -> crate::Result<Stamp> {
        persist(&self.path, ring)?;
        self.stamp()
            .map_err(|e| io_err(&self.path, "reading back keyring", e))
    }
}

/// A local KMS backed by a keyring file (or memory only, for tests).
pub struct LocalKms {
    file: Option<KeyringFile>,
    state: RwLock<Loaded>,
}

impl std::fmt::Debug for LocalKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKms")
            .field("path", &self.file.as_ref().map(|f| &f.path))
            .finish_non_exhaustive()
    }
}

fn invalid_name(name: &str) -> bool {
    name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> crate::Error {
    crate::Error::io(format!("{what} {}", path.display()), e)
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn poisoned() -> crate::Error {
    crate::Error::poisoned("keyring")
}

impl LocalKms {
    /// A keyring held in memory only (lost on drop).
    pub fn in_memory() -> Self {
        LocalKms {
            file: None,
            state: RwLock::new(Loaded::new(Keyring::default(), None)),
        }
    }

    /// Opens the keyring file at `path`, creating an empty one if it does not exist. Other
    /// processes may open the same file: see the module documentation.
    ///
    /// # Errors
    /// [`crate::Error::Io`] when the file cannot be read, or, when it does not exist, the lock
    /// file or a new keyring cannot be written; [`crate::Error::InvalidConfig`] when the file
    /// is not a well-formed keyring.
    pub fn open(path: impl Into<PathBuf>) -> crate::Result<Self> {
        let file = KeyringFile::new(path.into());
        let (ring, stamp) = match file.read() {
            Ok(read) => read,
            Err(_) if matches!(file.stamp(), Err(e) if e.kind() == std::io::ErrorKind::NotFound) => {
                // Created under the lock, so a process that created it (and maybe a key)
                // a moment earlier is not overwritten.
                let _lock = file.lock()?;
                match file.read() {
                    Ok(read) => read,
                    Err(_) if matches!(file.stamp(), Err(e) if e.kind() == std::io::ErrorKind::NotFound) =>
                    {
                        let ring = Keyring::default();
                        let stamp = file.write(&ring)?;
                        (ring, stamp)
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        Ok(LocalKms {
            file: Some(file),
            state: RwLock::new(Loaded::new(ring, Some(stamp))),
        })
    }

    /// The keyring as the file holds it now (re-read when it changed), for reading.
    fn current(&self) -> crate::Result<RwLockReadGuard<'_, Loaded>> {
        if let Some(file) = &self.file {
            let stale = {
                let state = self.state.read().map_err(|_| poisoned())?;
                state.stamp.is_none()
                    || state.checked.elapsed() >= RECHECK
                    || file.stamp().ok() != state.stamp
            };
            if stale {
                let (ring, stamp) = file.read()?;
                self.state
                    .write()
                    .map_err(|_| poisoned())?
                    .install(ring, Some(stamp));
            }
        }
        self.state.read().map_err(|_| poisoned())
    }

    /// Applies one change: under the in-process lock and the file lock, re-read the file,
    /// apply `f`, write the result atomically.
    fn change<T>(&self, f: impl FnOnce(&mut Keyring) -> crate::Result<T>) -> crate::Result<T> {
        let Some(file) = &self.file else {
            let mut state = self.state.write().map_err(|_| poisoned())?;
            let out = f(&mut state.ring)?;
            state.note_destroyed();
            return Ok(out);
        };
        // The file lock first: waiting for another process must not hold up this process's
        // readers, which need only the in-process lock, briefly.
        let _lock = file.lock()?;
        let mut state = self.state.write().map_err(|_| poisoned())?;
        let (ring, stamp) = file.read()?;
        state.install(ring, Some(stamp));
        let out = match f(&mut state.ring) {
            Ok(out) => out,
            Err(e) => {
                state.stamp = None; // re-read before the next use
                return Err(e);
            }
        };
        match file.write(&state.ring) {
            Ok(stamp) => {
                state.note_destroyed();
                state.stamp = Some(stamp);
                state.checked = Instant::now();
                Ok(out)
            }
            Err(e) => {
                state.stamp = None; // the change did not land: back to what the file holds
                Err(e)
            }
        }
    }
    /// Creates a key with a fresh random version 1 and returns its reference `local:NAME`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidName`] when `name` is not 1 to 128 bytes of `A-Z`, `a-z`, `0-9`,
    /// `-_./`; [`crate::Error::InvalidInput`] when the key exists already;
    /// [`crate::Error::Random`] when no fresh key material can be drawn; [`crate::Error::Io`]
    /// when the keyring file or its lock file cannot be read or written;
    /// [`crate::Error::InvalidConfig`] when the file on disk is not a well-formed keyring.
    pub fn create_key(&self, name: &str) -> crate::Result<KeyRef> {
        let mut created = self.create_keys(&[name])?;
        created
            .pop()
            .ok_or_else(|| crate::Error::InvalidInput("no key created".into()))
    }

    /// Creates several keys as [`LocalKms::create_key`] does, in one write of the keyring
    /// (one sync to disk): all of them or, on any error, none.
    ///
    /// # Errors
    /// As [`LocalKms::create_key`], for any of the names (or a name given twice).
    pub fn create_keys(&self, names: &[&str]) -> crate::Result<Vec<KeyRef>> {
        let mut materials = Vec::with_capacity(names.len());
        for name in names {
            if invalid_name(name) {
                return Err(crate::Error::invalid_name(
                    "local key name",
                    name,
                    "1 to 128 bytes of A-Z, a-z, 0-9, `-_./`",
                ));
            }
            materials.push(SecretKey::random()?);
        }
        self.change(|ring| {
            let mut seen = std::collections::BTreeSet::new();
            if let Some(name) = names
                .iter()
                .find(|n| ring.keys.contains_key(**n) || !seen.insert(**n))
            {
                return Err(crate::Error::InvalidInput(format!(
                    "local key `{name}` exists already"
                )));
            }
            for (name, material) in names.iter().zip(materials) {
                let mut versions = BTreeMap::new();
                versions.insert(
                    1,
                    LocalVersion {
                        material: Some(material),
                    },
                );
                ring.keys.insert(
                    name.to_string(),
                    LocalKey {
                        enabled: true,
                        versions,
                    },
                );
            }
            Ok(())
        })?;
        names
            .iter()
            .map(|name| KeyRef::new(format!("local:{name}")))
            .collect()
    }

    /// Adds a new version that becomes primary for wraps; older versions still unwrap.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] when there is no key `name` or its version numbers are
    /// used up; [`crate::Error::Random`] when no fresh key material can be drawn;
    /// [`crate::Error::Io`] when the keyring file or its lock file cannot be read or written;
    /// [`crate::Error::InvalidConfig`] when the file on disk is not a well-formed keyring.
    pub fn rotate(&self, name: &str) -> crate::Result<u32> {
        let material = SecretKey::random()?;
        self.change(|ring| {
            let key = lookup_mut(ring, name)?;
            let next = key
                .versions
                .keys()
                .next_back()
                .copied()
                .unwrap_or(0)
                .checked_add(1)
                .ok_or_else(|| {
                    crate::Error::InvalidInput(format!("local key `{name}` has no version left"))
                })?;
            key.versions.insert(
                next,
                LocalVersion {
                    material: Some(material),
                },
            );
            Ok(next)
        })
    }

    /// Disables a key: wraps and unwraps fail with *denied* until it is enabled again.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] when there is no key `name`; [`crate::Error::Io`] when
    /// the keyring file or its lock file cannot be read or written;
    /// [`crate::Error::InvalidConfig`] when the file on disk is not a well-formed keyring.
    pub fn disable(&self, name: &str) -> crate::Result<()> {
        self.change(|ring| {
            lookup_mut(ring, name)?.enabled = false;
            Ok(())
        })
    }

    /// Enables a disabled key.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] when there is no key `name`; [`crate::Error::Io`] when
    /// the keyring file or its lock file cannot be read or written;
    /// [`crate::Error::InvalidConfig`] when the file on disk is not a well-formed keyring.
    pub fn enable(&self, name: &str) -> crate::Result<()> {
        self.change(|ring| {
            lookup_mut(ring, name)?.enabled = true;
            Ok(())
        })
    }

    /// Destroys one version: its material is wiped from memory and from the file.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] when there is no key `name` or it has no version
    /// `version`; [`crate::Error::Io`] when the keyring file or its lock file cannot be read or
    /// written; [`crate::Error::InvalidConfig`] when the file on disk is not a well-formed
    /// keyring.
    pub fn destroy_version(&self, name: &str, version: u32) -> crate::Result<()> {
        self.change(|ring| {
            let v = lookup_mut(ring, name)?
                .versions
                .get_mut(&version)
                .ok_or_else(|| {
                    crate::Error::InvalidInput(format!(
                        "local key `{name}` has no version {version}"
                    ))
                })?;
            v.material = None; // SecretKey zeroizes on drop
            Ok(())
        })
    }

    /// Destroys every version of a key.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] when there is no key `name`; [`crate::Error::Io`] when
    /// the keyring file or its lock file cannot be read or written;
    /// [`crate::Error::InvalidConfig`] when the file on disk is not a well-formed keyring.
    pub fn destroy(&self, name: &str) -> crate::Result<()> {
        self.change(|ring| {
            for v in lookup_mut(ring, name)?.versions.values_mut() {
                v.material = None;
            }
            Ok(())
        })
    }

    /// Lists keys and versions (never material), as the file holds them now.
    ///
    /// # Errors
    /// The keyring file cannot be read or parsed.
    pub fn list(&self) -> crate::Result<Vec<LocalKeyInfo>> {
        let state = self.current()?;
        Ok(state
            .ring
            .keys
            .iter()
            .map(|(name, k)| LocalKeyInfo {
                name: name.clone(),
                enabled: k.enabled,
                primary: k.primary().unwrap_or(0),
                versions: k
                    .versions
                    .iter()
                    .map(|(n, v)| {
                        let s = if v.material.is_some() {
                            VersionState::Active
                        } else {
                            VersionState::Destroyed
                        };
                        (*n, s)
                    })
                    .collect(),
            })
            .collect())
    }

    fn with_key<T>(
        &self,
        key: &KeyRef,
        f: impl FnOnce(&str, &LocalKey) -> Result<T, KmsError>,
    ) -> Result<T, KmsError> {
        if key.provider() != "local" {
            return Err(KmsError::new(
                KmsErrorKind::NotFound,
                "not a local key reference",
            ));
        }
        // An unreadable keyring is an outage (leases ride it out), not a refusal.
        let state = self
            .current()
            .map_err(|e| KmsError::new(KmsErrorKind::Unavailable, e.to_string()))?;
        let name = key.key_id();
        let k = state.ring.keys.get(name).ok_or_else(|| {
            KmsError::new(KmsErrorKind::NotFound, format!("no local key `{name}`"))
        })?;
        if !k.enabled {
            return Err(KmsError::new(
                KmsErrorKind::Denied,
                format!("local key `{name}` is disabled"),
            ));
        }
        f(name, k)
    }
}

fn lookup_mut<'a>(ring: &'a mut Keyring, name: &str) -> crate::Result<&'a mut LocalKey> {
    ring.keys
        .get_mut(name)
        .ok_or_else(|| crate::Error::InvalidInput(format!("no local key `{name}`")))
}

fn blob_aad(name: &str, version: u32, aad: &[u8]) -> Aad {
    Aad::new("cmk/local-kms").text(name).u32(version).bytes(aad)
}

#[async_trait::async_trait]
impl Kms for LocalKms {
    fn provider(&self) -> &str {
        "local"
    }

    async fn wrap(
        &self,
        key: &KeyRef,
        plaintext: &[u8],
        context: &KmsContext,
    ) -> Result<Vec<u8>, KmsError> {
        let aad = context.aad();
        self.with_key(key, |name, k| {
            let (version, material) = k
                .primary()
                .and_then(|v| Some((v, k.versions.get(&v)?.material.as_ref()?)))
                .ok_or_else(|| {
                    KmsError::new(
                        KmsErrorKind::NotFound,
                        format!("local key `{name}` has no live version"),
                    )
                })?;
            let nonce: [u8; NONCE_LEN] = rng::array()
                .map_err(|_| KmsError::new(KmsErrorKind::Unavailable, "no randomness"))?;
            let mut out = Vec::with_capacity(BLOB_HEADER + plaintext.len() + TAG_LEN);
            out.push(BLOB_VERSION);
            out.extend_from_slice(&version.to_be_bytes());
            out.extend_from_slice(&nonce);
            out.extend_from_slice(plaintext);
            let tag = GcmKey::new(material)
                .seal(
                    &nonce,
                    blob_aad(name, version, aad).as_bytes(),
                    &mut out[BLOB_HEADER..],
                )
                .map_err(|_| {
                    KmsError::new(
                        KmsErrorKind::Invalid,
                        "the key material is too large to wrap",
                    )
                })?;
            out.extend_from_slice(&tag);
            Ok(out)
        })
    }

    async fn unwrap(
        &self,
        key: &KeyRef,
        wrapped: &[u8],
        context: &KmsContext,
    ) -> Result<SecretBytes, KmsError> {
        let aad = context.aad();
        let invalid = || {
            KmsError::new(
                KmsErrorKind::Invalid,
                "ciphertext or associated data invalid",
            )
        };
        if wrapped.len() < BLOB_HEADER + TAG_LEN || wrapped[0] != BLOB_VERSION {
            return Err(invalid());
        }
        let version = u32::from_be_bytes([wrapped[1], wrapped[2], wrapped[3], wrapped[4]]);
        let nonce: [u8; NONCE_LEN] = wrapped[5..BLOB_HEADER].try_into().map_err(|_| invalid())?;
        let (body, tag) = wrapped[BLOB_HEADER..].split_at(wrapped.len() - BLOB_HEADER - TAG_LEN);
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| invalid())?;
        self.with_key(key, |name, k| {
            let material = k
                .versions
                .get(&version)
                .and_then(|v| v.material.as_ref())
                .ok_or_else(|| {
                    KmsError::new(
                        KmsErrorKind::NotFound,
                        format!("local key `{name}` version {version} is destroyed or unknown"),
                    )
                })?;
            let mut buf = body.to_vec();
            GcmKey::new(material)
                .open(
                    &nonce,
                    blob_aad(name, version, aad).as_bytes(),
                    &mut buf,
                    &tag,
                )
                .map_err(|_| invalid())?;
            Ok(SecretBytes::new(buf))
        })
    }

    async fn destroy_key(&self, key: &KeyRef) -> Result<bool, KmsError> {
        self.destroy(key.key_id()).map(|()| true).map_err(|e| {
            let kind = match e {
                crate::Error::InvalidInput(_) => KmsErrorKind::NotFound,
                _ => KmsErrorKind::Unavailable,
            };
            KmsError::new(kind, e.to_string())
        })
    }
}

/// Parses the keyring file format (docs/FORMAT.md §8):
/// `cmk-local-keyring 1`, then `key NAME enabled|disabled` and
/// `version NAME N HEX|destroyed` lines.
fn parse(bytes: &[u8]) -> Result<Keyring, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let mut lines = text.lines();
    if lines.next() != Some(FILE_MAGIC) {
        return Err(format!("first line must be `{FILE_MAGIC}`"));
    }
    let mut ring = Keyring::default();
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            [] | [""] => {}
            ["key", name, state] => {
                let enabled = match *state {
                    "enabled" => true,
                    "disabled" => false,
                    _ => return Err(format!("line {n}: key state must be enabled or disabled")),
                };
                ring.keys.insert(
                    (*name).to_string(),
                    LocalKey {
                        enabled,
                        versions: BTreeMap::new(),
                    },
                );
            }
            ["version", name, num, material] => {
                let num: u32 = num
                    .parse()
                    .map_err(|_| format!("line {n}: bad version number"))?;
                let material = if *material == "destroyed" {
                    None
                } else {
                    let raw = Zeroizing::new(
                        crate::hex::decode(material)
                            .ok_or_else(|| format!("line {n}: bad key hex"))?,
                    );
                    Some(
                        SecretKey::from_slice(&raw)
                            .ok_or_else(|| format!("line {n}: key is not 32 bytes"))?,
                    )
                };
                ring.keys
                    .get_mut(*name)
                    .ok_or_else(|| format!("line {n}: version before its key line"))?
                    .versions
                    .insert(num, LocalVersion { material });
            }
            _ => return Err(format!("line {n}: unrecognised")),
        }
    }
    Ok(ring)
}

fn render(ring: &Keyring) -> Zeroizing<String> {
    // Sized up front so the string never reallocates (a reallocation would leave key hex in
    // freed memory); key hex is written straight into it, never through temporaries.
    let size = FILE_MAGIC.len()
        + 1
        + ring
            .keys
            .iter()
            .map(|(n, k)| 32 + 2 * n.len() + k.versions.len() * (32 + n.len() + 64))
            .sum::<usize>();
    let mut s = Zeroizing::new(String::with_capacity(size));
    s.push_str(FILE_MAGIC);
    s.push('\n');
    for (name, k) in &ring.keys {
        s.push_str("key ");
        s.push_str(name);
        s.push_str(if k.enabled {
            " enabled\n"
        } else {
            " disabled\n"
        });
        for (num, v) in &k.versions {
            s.push_str("version ");
            s.push_str(name);
            s.push(' ');
            s.push_str(&num.to_string());
            s.push(' ');
            match &v.material {
                Some(m) => {
                    const DIGITS: &[u8; 16] = b"0123456789abcdef";
                    for b in m.expose_secret() {
                        s.push(char::from(DIGITS[usize::from(b >> 4)]));
                        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
                    }
                }
                None => s.push_str("destroyed"),
            }
            s.push('\n');
        }
    }
    s
}

/// Writes the keyring atomically with mode 0600. Callers hold the file lock, so the
/// temporary file's name is this writer's alone.
fn persist(path: &Path, ring: &Keyring) -> crate::Result<()> {
    let text = render(ring);
    let dir = parent_dir(path);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    // A leftover from a crash is removed; create_new then refuses anything (a file or a
    // symlink) that appears in between, so the keys only ever go to a file made here, 0600.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&tmp, "removing stale", e)),
    }
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| io_err(&tmp, "creating", e))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| io_err(&tmp, "writing", e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| io_err(path, "replacing", e))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all(); // best effort: not every filesystem syncs directories
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn several_keys_are_created_in_one_write_all_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let kms = LocalKms::open(dir.path().join("keyring.json")).unwrap();
        kms.create_key("acme").unwrap();
        let refs = kms.create_keys(&["a-2", "b-2"]).unwrap();
        assert_eq!(refs[1].as_str(), "local:b-2");
        let blob = kms
            .wrap(&refs[0], &[7; 32], &KmsContext::from_bytes(b"c"))
            .await
            .unwrap();
        // Another process sees both (they were written to the file).
        let other = LocalKms::open(dir.path().join("keyring.json")).unwrap();
        let back = other
            .unwrap(&refs[0], &blob, &KmsContext::from_bytes(b"c"))
            .await;
        assert_eq!(back.unwrap().expose_secret(), &[7; 32]);
        // One name taken, or given twice: none is created.
        assert!(kms.create_keys(&["c-2", "acme"]).is_err());
        assert!(kms.create_keys(&["d-2", "d-2"]).is_err());
        let names: Vec<String> = other.list().unwrap().into_iter().map(|k| k.name).collect();
        assert_eq!(names, ["a-2", "acme", "b-2"]);
    }

    #[tokio::test]
    async fn wrap_unwrap_and_aad_binding() {
        let kms = LocalKms::in_memory();
        let k = kms.create_key("acme").unwrap();
        let blob = kms
            .wrap(
                &k,
                b"0123456789abcdef0123456789abcdef",
                &KmsContext::from_bytes(b"ctx"),
            )
            .await
            .unwrap();
        assert_eq!(blob.len(), 1 + 4 + 12 + 32 + 16);
        let out = kms
            .unwrap(&k, &blob, &KmsContext::from_bytes(b"ctx"))
            .await
            .unwrap();
        assert_eq!(out.expose_secret(), b"0123456789abcdef0123456789abcdef");
        let err = kms
            .unwrap(&k, &blob, &KmsContext::from_bytes(b"other"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, KmsErrorKind::Invalid);
    }

    #[tokio::test]
    async fn key_lifecycle_maps_to_error_kinds() {
        let kms = LocalKms::in_memory();
        let k = kms.create_key("acme").unwrap();
        let v1 = kms
            .wrap(&k, b"k1", &KmsContext::from_bytes(b""))
            .await
            .unwrap();
        assert_eq!(kms.rotate("acme").unwrap(), 2);
        let v2 = kms
            .wrap(&k, b"k2", &KmsContext::from_bytes(b""))
            .await
            .unwrap();
        assert_eq!(&v2[1..5], &2u32.to_be_bytes());
        // Old version still unwraps after rotation.
        assert_eq!(
            kms.unwrap(&k, &v1, &KmsContext::from_bytes(b""))
                .await
                .unwrap()
                .expose_secret(),
            b"k1"
        );

        kms.disable("acme").unwrap();
        assert_eq!(
            kms.unwrap(&k, &v2, &KmsContext::from_bytes(b""))
                .await
                .unwrap_err()
                .kind,
            KmsErrorKind::Denied
        );
        kms.enable("acme").unwrap();
        assert!(
            kms.unwrap(&k, &v2, &KmsContext::from_bytes(b""))
                .await
                .is_ok()
        );

        kms.destroy_version("acme", 1).unwrap();
        assert_eq!(
            kms.unwrap(&k, &v1, &KmsContext::from_bytes(b""))
                .await
                .unwrap_err()
                .kind,
            KmsErrorKind::NotFound
        );
        assert!(
            kms.unwrap(&k, &v2, &KmsContext::from_bytes(b""))
                .await
                .is_ok()
        );

        let missing = KeyRef::new("local:nobody").unwrap();
        assert_eq!(
            kms.wrap(&missing, b"x", &KmsContext::from_bytes(b""))
                .await
                .unwrap_err()
                .kind,
            KmsErrorKind::NotFound
        );
    }

    #[tokio::test]
    async fn keyring_file_is_private_atomic_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.keyring");
        let kms = LocalKms::open(&path).unwrap();
        let k = kms.create_key("acme").unwrap();
        kms.rotate("acme").unwrap();
        kms.destroy_version("acme", 1).unwrap();
        kms.disable("acme").unwrap();
        let blob = {
            kms.enable("acme").unwrap();
            let b = kms
                .wrap(&k, b"secret", &KmsContext::from_bytes(b"a"))
                .await
                .unwrap();
            kms.disable("acme").unwrap();
            b
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // No temporary file is left behind: the keyring and its writers' lock file only.
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".keys.keyring.lock", "keys.keyring"]);

        let again = LocalKms::open(&path).unwrap();
        let info = again.list().unwrap();
        assert_eq!(info.len(), 1);
        assert!(!info[0].enabled);
        assert_eq!(info[0].primary, 2);
        assert_eq!(
            info[0].versions,
            vec![(1, VersionState::Destroyed), (2, VersionState::Active)]
        );
        again.enable("acme").unwrap();
        assert_eq!(
            again
                .unwrap(&k, &blob, &KmsContext::from_bytes(b"a"))
                .await
                .unwrap()
                .expose_secret(),
            b"secret"
        );
        // The destroyed version's material is not in the file.
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("version acme 1 destroyed"));
    }

    #[tokio::test]
    async fn two_instances_on_one_file_see_each_others_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.keyring");
        let a = LocalKms::open(&path).unwrap();
        let b = LocalKms::open(&path).unwrap();
        let k = a.create_key("acme").unwrap();
        let blob = b
            .wrap(&k, b"material", &KmsContext::from_bytes(b""))
            .await
            .unwrap();
        b.disable("acme").unwrap();
        assert_eq!(
            a.unwrap(&k, &blob, &KmsContext::from_bytes(b""))
                .await
                .unwrap_err()
                .kind,
            KmsErrorKind::Denied
        );
        b.enable("acme").unwrap();
        assert!(
            a.unwrap(&k, &blob, &KmsContext::from_bytes(b""))
                .await
                .is_ok()
        );
        b.destroy("acme").unwrap();
        assert_eq!(
            a.unwrap(&k, &blob, &KmsContext::from_bytes(b""))
                .await
                .unwrap_err()
                .kind,
            KmsErrorKind::NotFound
        );
    }

    #[tokio::test]
    async fn an_older_copy_of_the_file_never_brings_a_destroyed_version_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.keyring");
        let a = LocalKms::open(&path).unwrap();
        let k = a.create_key("acme").unwrap();
        let blob = a
            .wrap(&k, b"material", &KmsContext::from_bytes(b""))
            .await
            .unwrap();
        let backup = fs::read(&path).unwrap();
        a.destroy("acme").unwrap();
        fs::write(&path, &backup).unwrap(); // the old file comes back (a restore, an edit)
        assert_eq!(
            a.unwrap(&k, &blob, &KmsContext::from_bytes(b""))
                .await
                .unwrap_err()
                .kind,
            KmsErrorKind::NotFound,
            "this process remembers the destruction"
        );
        a.create_key("other").unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("version acme 1 destroyed"), "{text}");
        let fresh = LocalKms::open(&path).unwrap();
        assert!(
            fresh
                .unwrap(&k, &blob, &KmsContext::from_bytes(b""))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_new_key_reusing_a_destroyed_name_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.keyring");
        let a = LocalKms::open(&path).unwrap();
        let empty = fs::read(&path).unwrap();
        a.create_key("acme").unwrap();
        a.destroy("acme").unwrap();
        // The file is replaced by one from before `acme` existed, and another process
        // creates a new `acme`: this process keeps it, and never writes it as destroyed.
        fs::write(&path, &empty).unwrap();
        let b = LocalKms::open(&path).unwrap();
        let k = b.create_key("acme").unwrap();
        let blob = b
            .wrap(&k, b"material", &KmsContext::from_bytes(b""))
            .await
            .unwrap();
        assert!(
            a.unwrap(&k, &blob, &KmsContext::from_bytes(b""))
                .await
                .is_ok()
        );
        a.create_key("other").unwrap();
        assert!(
            !fs::read_to_string(&path)
                .unwrap()
                .contains("acme 1 destroyed")
        );
    }

    #[tokio::test]
    async fn an_unreadable_keyring_is_an_outage_not_a_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.keyring");
        let a = LocalKms::open(&path).unwrap();
        let k = a.create_key("acme").unwrap();
        let blob = a
            .wrap(&k, b"material", &KmsContext::from_bytes(b""))
            .await
            .unwrap();
        fs::write(&path, b"garbage").unwrap();
        let err = a
            .unwrap(&k, &blob, &KmsContext::from_bytes(b""))
            .await
            .unwrap_err();
        assert_eq!(err.kind, KmsErrorKind::Unavailable, "{err}");
        assert!(
            a.create_key("other").is_err(),
            "no write over a file it cannot read"
        );
        assert_eq!(fs::read(&path).unwrap(), b"garbage");
    }

    #[test]
    fn corrupt_keyring_files_are_clear_errors() {
        for bad in [
            "",
            "cmk-local-keyring 2\n",
            "cmk-local-keyring 1\nversion a 1 00\n",
            "cmk-local-keyring 1\nkey a enabled\nversion a 1 zz\n",
            "cmk-local-keyring 1\nkey a enabled\nversion a 1 0011\n",
            "cmk-local-keyring 1\nkey a sometimes\n",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn malformed_blobs_never_panic() {
        let kms = LocalKms::in_memory();
        let k = kms.create_key("acme").unwrap();
        let blob = kms
            .wrap(&k, b"material", &KmsContext::from_bytes(b""))
            .await
            .unwrap();
        for len in 0..blob.len() {
            assert!(
                kms.unwrap(&k, &blob[..len], &KmsContext::from_bytes(b""))
                    .await
                    .is_err()
            );
        }
        let mut long = blob.clone();
        long.push(0);
        assert!(
            kms.unwrap(&k, &long, &KmsContext::from_bytes(b""))
                .await
                .is_err()
        );
    }
}
