//! Leases: unwrapped KEKs and roots held in memory for a bounded time.
//!
//! A lease starts when the KMS unwraps a key. It is renewed (a real unwrap with the same
//! associated data, never a metadata call) once its renewal time has passed, by the background
//! renewer or by the next `keys_for`. While the KMS is *unavailable* or *throttled* the lease
//! keeps serving until its hard expiry; when the KMS says *denied*, *not found* or *invalid*
//! the lease is revoked at once and its material wiped, and the denial is remembered for a
//! bounded time so that a re-enabled key recovers without a restart. Key handles hold leases
//! and check them at every seal and unseal, so a handle kept by a worker stops like everyone
//! else. All timing reads a [`Clock`]: production and tests run the same code.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::clock::Clock;
use crate::crypto::aead::GcmKey;
use crate::crypto::secret::SecretKey;
use crate::keys::registry::{Purpose, RegistryEntry};
use crate::kms::KmsError;
use crate::tenant::context::TenantId;
use crate::tenant::policy::Class;

/// Lease timings for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timings {
    pub(crate) renewal: Duration,
    pub(crate) hard: Duration,
    pub(crate) max_uses: Option<u64>,
}

impl Timings {
    pub(crate) fn of(lease: &crate::tenant::policy::LeasePolicy) -> Option<Timings> {
        match *lease {
            crate::tenant::policy::LeasePolicy::Leased {
                hard_expiry_secs,
                renewal_secs,
                max_uses,
            } => Some(Timings {
                renewal: Duration::from_secs(renewal_secs),
                hard: Duration::from_secs(hard_expiry_secs),
                max_uses,
            }),
            crate::tenant::policy::LeasePolicy::None => None,
        }
    }

    /// Roots serve every class: they take the tightest leased policy of the tenant.
    pub(crate) fn for_roots(config: &crate::tenant::config::TenantConfig) -> Timings {
        let leased: Vec<Timings> = config
            .policies
            .values()
            .filter_map(|p| Timings::of(&p.lease))
            .collect();
        Timings {
            renewal: leased
                .iter()
                .map(|t| t.renewal)
                .min()
                .unwrap_or(Duration::from_secs(1200)),
            hard: leased
                .iter()
                .map(|t| t.hard)
                .min()
                .unwrap_or(Duration::from_secs(3600)),
            max_uses: None,
        }
    }
}

/// A leased KEK of one class.
#[derive(Clone)]
pub(crate) struct LeasedKek {
    pub(crate) class: Class,
    pub(crate) lease: Arc<Lease>,
}

impl LeasedKek {
    /// Runs `f` with the KEK if its lease still serves (checked at every use).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&GcmKey) -> R) -> crate::Result<R> {
        self.with_at(&mut RowTime::default(), f)
    }

    /// Like [`LeasedKek::with`], with the row's clock reading (see [`RowTime`]).
    pub(crate) fn with_at<R>(
        &self,
        time: &mut RowTime,
        f: impl FnOnce(&GcmKey) -> R,
    ) -> crate::Result<R> {
        self.lease.with_at(time, |m| match m {
            Material::Kek(k) => Ok(f(k)),
            Material::Root(_) => Err(crate::Error::Tampered),
        })?
    }
}

/// Identifies one key version of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct LeaseKey {
    /// Tenant.
    pub tenant: TenantId,
    /// Purpose.
    pub purpose: Purpose,
    /// Class for KEKs, empty for roots.
    pub policy: String,
    /// Version.
    pub version: u32,
}

/// Unwrapped key material.
pub(crate) enum Material {
    Kek(Box<GcmKey>),
    Root(SecretKey),
}

/// Why a lease can no longer be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseEnd {
    /// Past its hard expiry without a successful renewal.
    Expired,
    /// The KMS refused a renewal, the key was destroyed or the tenant shredded.
    Revoked(String),
    /// Its cap on uses is reached; fetch keys again.
    Exhausted,
}

/// One leased key.
pub struct Lease {
    pub(crate) key: LeaseKey,
    pub(crate) provider: String,
    material: RwLock<Option<Material>>,
    clock: Arc<dyn Clock>,
    /// Clock nanos.
    renew_at: AtomicU64,
    hard_expiry: AtomicU64,
    renewal: Duration,
    hard: Duration,
    revoked: Mutex<Option<String>>,
    revoked_flag: AtomicBool,
    uses: AtomicU64,
    /// DEKs wrapped under this KEK by this process (the nonce bound counts these).
    wraps: AtomicU64,
    max_uses: Option<u64>,
    /// The registry entry renewal unwraps again.
    pub(crate) entry: Mutex<RegistryEntry>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("uses", &self.uses())
            .finish_non_exhaustive()
    }
}

/// One reading of a lease clock, shared by the keys of one row (a row takes microseconds;
/// lease times are minutes). Which clock it was read from is kept, so a lease on another
/// clock reads its own.
#[derive(Default)]
pub(crate) struct RowTime(Option<(*const (), Duration)>);

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Lease {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        key: LeaseKey,
        provider: String,
        material: Material,
        clock: Arc<dyn Clock>,
        renewal: Duration,
        hard: Duration,
        max_uses: Option<u64>,
        entry: RegistryEntry,
    ) -> Self {
        let now = clock.now();
        Lease {
            key,
            provider,
            material: RwLock::new(Some(material)),
            renew_at: AtomicU64::new(nanos(now.saturating_add(renewal))),
            hard_expiry: AtomicU64::new(nanos(now.saturating_add(hard))),
            clock,
            renewal,
            hard,
            revoked: Mutex::new(None),
            revoked_flag: AtomicBool::new(false),
            uses: AtomicU64::new(0),
            wraps: AtomicU64::new(0),
            max_uses,
            entry: Mutex::new(entry),
        }
    }

    /// The key this lease holds.
    pub fn key(&self) -> &LeaseKey {
        &self.key
    }

    /// Uses served so far (seals and unseals that used this key).
    pub fn uses(&self) -> u64 {
        self.uses.load(Ordering::Relaxed)
    }

    /// The lease times and cap this lease was made with.
    pub(crate) fn timings(&self) -> Timings {
        Timings {
            renewal: self.renewal,
            hard: self.hard,
            max_uses: self.max_uses,
        }
    }

    /// The registry entry renewal unwraps.
    pub(crate) fn entry(&self) -> RegistryEntry {
        self.entry
            .lock()
            .map(|e| e.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// DEKs wrapped under this key by this process.
    pub fn wraps(&self) -> u64 {
        self.wraps.load(Ordering::Relaxed)
    }

    pub(crate) fn count_wrap(&self) -> u64 {
        self.wraps.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Why the lease cannot serve now, if it cannot.
    pub fn ended(&self) -> Option<LeaseEnd> {
        self.ended_at(self.clock.now())
    }

    fn ended_at(&self, now: Duration) -> Option<LeaseEnd> {
        if self.revoked_flag.load(Ordering::Acquire) {
            let why = self
                .revoked
                .lock()
                .map(|r| r.clone().unwrap_or_default())
                .unwrap_or_default();
            return Some(LeaseEnd::Revoked(why));
        }
        if nanos(now) >= self.hard_expiry.load(Ordering::Acquire) {
            return Some(LeaseEnd::Expired);
        }
        if self.max_uses.is_some_and(|m| self.uses() >= m) {
            return Some(LeaseEnd::Exhausted);
        }
        None
    }

    /// The hard expiry on the lease clock (it moves forward only when a renewal succeeds).
    pub(crate) fn hard_expiry(&self) -> u64 {
        self.hard_expiry.load(Ordering::Acquire)
    }

    /// True once the renewal time has passed.
    pub fn renewal_due(&self) -> bool {
        nanos(self.clock.now()) >= self.renew_at.load(Ordering::Acquire)
    }

    /// Runs `f` with the material if the lease can serve, counting one use.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&Material) -> R) -> crate::Result<R> {
        self.with_at(&mut RowTime::default(), f)
    }

    /// Like [`Lease::with`], reading the clock into `time` unless it already holds a reading
    /// of this lease's clock: the keys of one row are checked against one reading.
    pub(crate) fn with_at<R>(
        &self,
        time: &mut RowTime,
        f: impl FnOnce(&Material) -> R,
    ) -> crate::Result<R> {
        let clock = Arc::as_ptr(&self.clock).cast::<()>();
        let now = match time.0 {
            Some((read_from, now)) if std::ptr::eq(read_from, clock) => now,
            _ => {
                let now = self.clock.now();
                time.0 = Some((clock, now));
                now
            }
        };
        if let Some(end) = self.ended_at(now) {
            return Err(self.error(end));
        }
        let guard = self
            .material
            .read()
            .map_err(|_| crate::Error::poisoned("lease"))?;
        let material = guard
            .as_ref()
            .ok_or_else(|| self.error(LeaseEnd::Revoked("evicted".into())))?;
        self.uses.fetch_add(1, Ordering::Relaxed);
        Ok(f(material))
    }

    pub(crate) fn error(&self, end: LeaseEnd) -> crate::Error {
        crate::Error::LeaseEnded {
            tenant: self.key.tenant.to_string(),
            provider: self.provider.clone(),
            reason: match end {
                LeaseEnd::Expired => "hard expiry passed without a successful renewal".to_string(),
                LeaseEnd::Revoked(why) => format!("revoked: {why}"),
                LeaseEnd::Exhausted => "its cap on uses is reached; fetch keys again".to_string(),
            },
        }
    }

    /// A successful renewal: the same material, a new renewal time and hard expiry.
    pub(crate) fn renewed(&self, entry: RegistryEntry) {
        let now = self.clock.now();
        self.renew_at
            .store(nanos(now.saturating_add(self.renewal)), Ordering::Release);
        self.hard_expiry
            .store(nanos(now.saturating_add(self.hard)), Ordering::Release);
        if let Ok(mut e) = self.entry.lock() {
            *e = entry;
        }
    }

    /// A transient failure: try again after a short back-off, keep serving until hard expiry.
    pub(crate) fn retry_later(&self) {
        let retry = (self.renewal / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
        self.renew_at
            .store(nanos(self.clock.now() + retry), Ordering::Release);
    }

    /// Ends the lease for good and wipes its material (zeroized on drop).
    pub(crate) fn revoke(&self, why: &str) {
        if let Ok(mut r) = self.revoked.lock() {
            *r = Some(why.to_string());
        }
        if !self.revoked_flag.swap(true, Ordering::AcqRel) {
            metrics::counter!(crate::meter::LEASE_REVOCATIONS).increment(1);
        }
        if let Ok(mut m) = self.material.write() {
            *m = None;
        }
    }

    /// Wipes the material of an expired lease.
    pub(crate) fn wipe(&self) {
        if let Ok(mut m) = self.material.write() {
            *m = None;
        }
    }
}

/// The leases of one process, shared by every `Cmk` clone.
#[derive(Debug)]
pub(crate) struct LeaseCache {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) leases: Mutex<HashMap<LeaseKey, Arc<Lease>>>,
    /// One in-flight unwrap per key: concurrent misses wait for it (single flight).
    flights: Mutex<HashMap<LeaseKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Recent refusals: (until, error).
    denials: Mutex<HashMap<LeaseKey, (Duration, KmsError)>>,
    pub(crate) denial_ttl: Duration,
}

impl LeaseCache {
    pub(crate) fn new(clock: Arc<dyn Clock>, denial_ttl: Duration) -> Self {
        LeaseCache {
            clock,
            leases: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
            denials: Mutex::new(HashMap::new()),
            denial_ttl,
        }
    }

    pub(crate) fn get(&self, key: &LeaseKey) -> Option<Arc<Lease>> {
        self.leases.lock().ok()?.get(key).cloned()
    }

    pub(crate) fn insert(&self, lease: Arc<Lease>) {
        if let Ok(mut l) = self.leases.lock() {
            l.insert(lease.key.clone(), lease);
        }
    }

    pub(crate) fn remove(&self, key: &LeaseKey) -> Option<Arc<Lease>> {
        self.leases.lock().ok()?.remove(key)
    }

    pub(crate) fn all(&self) -> Vec<Arc<Lease>> {
        self.leases
            .lock()
            .map(|l| l.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn flight(&self, key: &LeaseKey) -> Arc<tokio::sync::Mutex<()>> {
        match self.flights.lock() {
            Ok(mut f) => Arc::clone(f.entry(key.clone()).or_default()),
            Err(_) => Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    pub(crate) fn remember_denial(&self, key: &LeaseKey, error: KmsError) {
        let now = self.clock.now();
        if let Ok(mut d) = self.denials.lock() {
            d.retain(|_, (until, _)| *until > now); // forget what has run out
            d.insert(key.clone(), (now.saturating_add(self.denial_ttl), error));
        }
    }

    /// Drops a key's single-flight lock once nobody holds or waits for it.
    pub(crate) fn prune_flight(&self, key: &LeaseKey) {
        if let Ok(mut f) = self.flights.lock()
            && f.get(key).is_some_and(|m| Arc::strong_count(m) == 1)
        {
            f.remove(key);
        }
    }

    /// A remembered refusal that is still fresh.
    pub(crate) fn denial(&self, key: &LeaseKey) -> Option<KmsError> {
        let mut d = self.denials.lock().ok()?;
        match d.get(key) {
            Some((until, e)) if self.clock.now() < *until => Some(e.clone()),
            Some(_) => {
                d.remove(key);
                None
            }
            None => None,
        }
    }

    pub(crate) fn forget_denial(&self, key: &LeaseKey) {
        if let Ok(mut d) = self.denials.lock() {
            d.remove(key);
        }
    }
}
