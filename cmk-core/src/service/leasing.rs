//! Key fetching through leases: `keys_for`, the renewal pass, and the per-tenant view of the
//! registry and configuration that both read.
//!
//! With warm leases and a fresh view, `keys_for` performs no I/O at all. The view (tenant
//! configuration plus folded registry entries) is reloaded once its tenant's shortest renewal
//! interval has passed, so new KEK versions and shred tombstones written by other instances
//! are seen within one renewal interval.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use crate::audit::event::{EventName, Outcome, SecurityEvent};
use crate::crypto::aead::GcmKey;
use crate::crypto::secret::SecretKey;
use crate::error::{Error, KmsError, KmsErrorKind, Result};
use crate::keys::lease::LeasedKek;
use crate::keys::lease::{Lease, LeaseEnd, LeaseKey, Material, Timings};
use crate::keys::registry::{
    KeyState, KeyVersionView, Purpose, RegistryEntry, entry_context, fold_versions, kek_id,
};
use crate::rows::handle::TenantKeys;
use crate::service::{Cmk, now_secs};
use crate::tenant::config::TenantConfig;
use crate::tenant::context::{RequestContext, TenantId};
use crate::tenant::policy::{Class, SearchMode};

/// A tenant's configuration and registry as last read.
#[derive(Debug)]
pub(crate) struct TenantView {
    pub(crate) config: Arc<TenantConfig>,
    pub(crate) views: Vec<KeyVersionView>,
    pub(crate) shredded: bool,
    pub(crate) empty: bool,
    loaded_at: Duration,
    /// Plans of the handles built from this view (its configuration and key versions).
    pub(crate) plans: Arc<crate::rows::plan::PlanCache>,
    /// Set by a handle that met a key version newer than any this view knows (another
    /// instance rolled over): the next `keys_for` re-reads the registry (see
    /// [`STALE_RELOAD_MIN`]) instead of waiting for the renewal interval.
    pub(crate) stale: Arc<std::sync::atomic::AtomicBool>,
}

/// The least time between two re-reads of the registry that stale signals cause, so that
/// forged key versions in the database cannot turn every read into a registry read.
const STALE_RELOAD_MIN: Duration = Duration::from_secs(1);

/// One key a handle needs.
struct Want<'a> {
    slot: Slot<'a>,
    view: &'a KeyVersionView,
    entry: &'a RegistryEntry,
    timings: Timings,
}

/// Where a fetched key goes in the handle.
enum Slot<'a> {
    Kek(&'a Class),
    IndexRoot(u8),
    DeterministicRoot(u8),
}

/// At most this many KMS unwraps of one `keys_for` run at once.
const FETCH_CONCURRENCY: usize = 8;

/// What one renewal pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RenewReport {
    /// Leases renewed by a successful unwrap.
    pub renewed: usize,
    /// Renewals that failed transiently (the lease keeps serving until hard expiry).
    pub unreachable: usize,
    /// Leases revoked (refusal, destroyed key, shredded tenant).
    pub revoked: usize,
    /// Leases wiped at hard expiry.
    pub expired: usize,
}

fn system_event(
    sink: &dyn crate::audit::event::EventSink,
    tenant: &TenantId,
    name: EventName,
    outcome: Outcome,
) {
    // Lease events are best effort here; the delivery pipeline makes them durable.
    let _ = sink.emit(SecurityEvent::system(tenant, name, outcome));
}

/// A lease transition's event: the class (for KEKs) and the uses the lease served from
/// cache.
fn lease_event(
    sink: &dyn crate::audit::event::EventSink,
    key: &LeaseKey,
    name: EventName,
    outcome: Outcome,
    uses: u64,
) {
    let mut event = SecurityEvent::system(&key.tenant, name, outcome);
    if key.purpose == Purpose::Kek {
        event.classes = Arc::from(vec![key.policy.clone()]);
    }
    event.cached_uses = Some(uses);
    let _ = sink.emit(event);
}

fn failure(kind: &str) -> Outcome {
    Outcome::Failure {
        error: kind.to_string(),
    }
}

pub(crate) fn forget_view(cmk: &Cmk, tenant: &TenantId) {
    if let Ok(mut v) = cmk.views.lock() {
        v.remove(tenant);
    }
}

/// The tenant's view, reloaded when older than its shortest renewal interval.
pub(crate) async fn tenant_view(
    cmk: &Cmk,
    tenant: &TenantId,
    force: bool,
) -> Result<Arc<TenantView>> {
    let now = cmk.settings.clock.now();
    if !force {
        let cached = cmk.views.lock().ok().and_then(|v| v.get(tenant).cloned());
        if let Some(view) = cached {
            let fresh_for = Timings::for_roots(&view.config).renewal;
            // One caller takes the stale signal and re-reads; the others keep the view.
            let stale = view.stale.load(std::sync::atomic::Ordering::Relaxed)
                && now >= view.loaded_at.saturating_add(STALE_RELOAD_MIN)
                && view.stale.swap(false, std::sync::atomic::Ordering::Relaxed);
            if now < view.loaded_at.saturating_add(fresh_for) && !stale {
                return Ok(view);
            }
        }
    }
    let entries = cmk.registry.entries(tenant).await?;
    let empty = entries.is_empty();
    let shredded = entries.iter().any(|e| e.purpose == Purpose::Tombstone);
    let config = Arc::new(if empty || shredded {
        // Unknown or shredded tenants fail before their configuration matters.
        match cmk.configs.load(tenant).await {
            Ok(c) => c,
            Err(_) if empty => {
                return Err(Error::UnknownTenant {
                    tenant: tenant.to_string(),
                });
            }
            Err(_) => {
                return Err(Error::TenantShredded {
                    tenant: tenant.to_string(),
                });
            }
        }
    } else {
        cmk.configs.load(tenant).await?
    });
    let trusted = |purpose: Purpose, policy: &str| match purpose {
        Purpose::Kek => Class::new(policy)
            .ok()
            .and_then(|c| config.policies.get(&c))
            .map(|p| p.kms_key.clone()),
        _ => Some(config.root_key.clone()),
    };
    if &config.tenant != tenant {
        return Err(Error::ConfigIntegrity {
            tenant: tenant.to_string(),
        });
    }
    // Routing follows the stored configuration (another instance may have changed it); a
    // sink that refuses it keeps its previous route and the tenant's reads go on.
    let _ = cmk
        .sink
        .configure_tenant(tenant, config.audit_sink.as_deref());
    let views = fold_versions(&entries, trusted);
    let view = Arc::new(TenantView {
        config,
        views,
        shredded,
        empty,
        loaded_at: now,
        plans: Default::default(),
        stale: Default::default(),
    });
    if let Ok(mut v) = cmk.views.lock() {
        v.insert(tenant.clone(), Arc::clone(&view));
    }
    Ok(view)
}

/// The body of [`Cmk::keys_for`]: an integrity failure of the tenant's configuration or
/// registry is also an alert ([`alert_integrity`]).
pub(crate) async fn keys_for<C: AsRef<str>>(
    cmk: &Cmk,
    ctx: &RequestContext,
    classes: &[C],
) -> Result<Arc<TenantKeys>> {
    let result = fetch_keys(cmk, ctx, classes).await;
    if let Err(e) = &result {
        alert_integrity(cmk, ctx, e);
    }
    result
}

/// When `e` says the tenant's configuration or key registry failed an integrity check (a
/// record failing its MAC, a rolled-back revision, a shred tombstone or destroyed state, which
/// a database writer may have forged), emits `ADMIN_INTEGRITY_FAILURE` to the tenant's sink
/// and the operator's. Any refusal of a configuration file's table counts: cmk never signs an
/// invalid one, so an invalid table was changed after its signature as surely as one whose
/// MAC fails. The event names the error kind only: nothing of the stored records.
pub(crate) fn alert_integrity(cmk: &Cmk, ctx: &RequestContext, e: &Error) {
    if !matches!(e, Error::ConfigFile { .. })
        && !matches!(
            e.underlying(),
            Error::ConfigIntegrity { .. }
                | Error::ConfigRollback { .. }
                | Error::TenantShredded { .. }
                | Error::KeysDestroyed { .. }
                | Error::Tampered
        )
    {
        return;
    }
    let event = SecurityEvent::new(ctx, EventName::AdminIntegrityFailure, failure(e.kind()));
    // A sink that cannot take it counts the loss (AUDIT_EVENTS_LOST); the request fails anyway.
    let _ = cmk.sink.emit_alert(event);
}

async fn fetch_keys<C: AsRef<str>>(
    cmk: &Cmk,
    ctx: &RequestContext,
    classes: &[C],
) -> Result<Arc<TenantKeys>> {
    let tenant = ctx.tenant();
    let mut view = tenant_view(cmk, tenant, false).await?;
    if view.empty {
        return Err(Error::UnknownTenant {
            tenant: tenant.to_string(),
        });
    }
    if view.shredded {
        return Err(Error::TenantShredded {
            tenant: tenant.to_string(),
        });
    }
    let classes: Vec<Class> = classes
        .iter()
        .map(|c| Class::new(c.as_ref()))
        .collect::<Result<_>>()?;
    let mut wanted: Vec<&Class> = classes.iter().collect();
    wanted.sort();
    wanted.dedup();
    for class in &wanted {
        view.config.policy(class)?;
    }
    if roll_over_due(cmk, ctx, &view, &wanted).await? {
        view = tenant_view(cmk, tenant, true).await?;
    }
    let config = Arc::clone(&view.config);
    // Every key the handle needs is listed first, then fetched concurrently (each still
    // single flight), so a cold handle costs about one KMS round trip, not one per key.
    let mut wants: Vec<Want<'_>> = Vec::new();
    let mut classic = Vec::new();
    for class in &wanted {
        match Timings::of(&config.policy(class)?.lease) {
            Some(timings) => wants.extend(kek_wants(cmk, tenant, &view, class, timings)?),
            None => classic.push((*class).clone()),
        }
    }
    let searchable = wanted
        .iter()
        .any(|c| config.policy(c).is_ok_and(|p| p.search != SearchMode::None));
    if searchable {
        wants.extend(root_wants(&view, Timings::for_roots(&config)));
    }
    // The futures are made first: a stream over a closure would not be provably `Send`.
    let fetches: Vec<_> = wants
        .iter()
        .map(|w| lease_for(cmk, tenant, w.view, w.entry, w.timings))
        .collect();
    let leases: Vec<Result<Arc<Lease>>> = futures_util::stream::iter(fetches)
        .buffered(FETCH_CONCURRENCY)
        .collect()
        .await;
    let mut keys = empty_handle(cmk, ctx, &view, classic);
    for (want, lease) in wants.iter().zip(leases) {
        match lease {
            Ok(lease) => place(&mut keys, want, lease),
            Err(e) if does_not_unwrap(&e) => place_unproven(&mut keys, want, e),
            Err(e) => return Err(e),
        }
    }
    every_class_proven(&keys, &wanted)?;
    Ok(Arc::new(keys))
}

/// The KMS answered, and the registry entry does not unwrap under the tenant's key: forged or
/// corrupted. Other versions stay usable; a refusal (denied, not found) or an outage does not
/// come here: it fails the whole fetch, as the tenant's kill switch must.
fn does_not_unwrap(e: &Error) -> bool {
    match e {
        Error::Kms { source, .. } => source.kind == KmsErrorKind::Invalid,
        Error::Tampered => true,
        _ => false,
    }
}

/// Records a version whose entry does not unwrap; when it is its class's newest active
/// version it still becomes the write key, so writes fail with its error rather than fall
/// back to an older version.
fn place_unproven(keys: &mut TenantKeys, want: &Want<'_>, e: Error) {
    let v = want.view;
    match want.slot {
        Slot::Kek(class) => {
            if v.state == KeyState::Active && !keys.active.iter().any(|(c, _)| c == class) {
                keys.active.push((class.clone(), (v.kek_id, v.version)));
            }
            keys.unproven_keks.push(((v.kek_id, v.version), e));
        }
        Slot::IndexRoot(version) => keys.unproven_roots.push(((false, version), e)),
        Slot::DeterministicRoot(version) => keys.unproven_roots.push(((true, version), e)),
    }
}

/// A requested class none of whose versions unwrapped has nothing to read or write with:
/// the fetch fails with the first version's error, as it did before any version was known
/// good (a wrong master key in the configuration, for example).
fn every_class_proven(keys: &TenantKeys, wanted: &[&Class]) -> Result<()> {
    for class in wanted {
        if keys.keks.iter().any(|(_, k)| k.class == **class) {
            continue;
        }
        let unproven = keys
            .unproven_keks
            .iter()
            .find(|((id, _), _)| *id == kek_id(class.as_str()));
        if let Some((_, e)) = unproven {
            return Err(e.clone());
        }
    }
    Ok(())
}

/// The KEK versions of `class` a handle loads: only versions with an entry under the
/// configured master key, and they go before the cut, or forged ones could crowd out every
/// real key; a version without one is skipped: rows naming it fail with `KeyUnavailable`,
/// and it never becomes the write key.
fn kek_wants<'v>(
    cmk: &Cmk,
    tenant: &TenantId,
    view: &'v TenantView,
    class: &'v Class,
    timings: Timings,
) -> Result<Vec<Want<'v>>> {
    let mut versions: Vec<(&KeyVersionView, &RegistryEntry)> = view
        .views
        .iter()
        .filter(|v| {
            v.purpose == Purpose::Kek
                && v.policy == class.as_str()
                && v.state != KeyState::Destroyed
        })
        .filter_map(|v| Some((v, v.wrapped_by.as_ref()?)))
        .collect();
    versions.sort_by_key(|(v, _)| std::cmp::Reverse(v.version));
    versions.truncate(cmk.settings.max_warm_versions);
    if versions.is_empty() {
        let destroyed = view.views.iter().any(|v| {
            v.purpose == Purpose::Kek
                && v.policy == class.as_str()
                && v.state == KeyState::Destroyed
        });
        let (tenant, class) = (tenant.to_string(), class.to_string());
        return Err(if destroyed {
            Error::KeysDestroyed { tenant, class }
        } else {
            Error::ClassNotProvisioned { tenant, class }
        });
    }
    if !versions.iter().any(|(v, _)| v.state == KeyState::Active) {
        return Err(Error::InvalidConfig(format!(
            "class `{class}` of tenant `{tenant}` has no active key under its configured master key"
        )));
    }
    Ok(versions
        .into_iter()
        .map(|(view, entry)| Want {
            slot: Slot::Kek(class),
            view,
            entry,
            timings,
        })
        .collect())
}

/// Every index and deterministic root version that is not destroyed: a searchable class
/// reads values under any of them.
fn root_wants(view: &TenantView, timings: Timings) -> Vec<Want<'_>> {
    let mut wants = Vec::new();
    for v in view.views.iter().filter(|v| v.state != KeyState::Destroyed) {
        let (Ok(version), Some(entry)) = (u8::try_from(v.version), &v.wrapped_by) else {
            continue;
        };
        let slot = match v.purpose {
            Purpose::IndexRoot => Slot::IndexRoot(version),
            Purpose::DeterministicRoot => Slot::DeterministicRoot(version),
            _ => continue,
        };
        wants.push(Want {
            slot,
            view: v,
            entry,
            timings,
        });
    }
    wants
}

/// A handle for `ctx` with no leased key yet, knowing every KEK and root version the
/// registry records (a value naming an unknown one is then `Tampered`).
fn empty_handle(
    cmk: &Cmk,
    ctx: &RequestContext,
    view: &TenantView,
    classic: Vec<Class>,
) -> TenantKeys {
    let known_keks = view
        .views
        .iter()
        .filter(|v| v.purpose == Purpose::Kek)
        .map(|v| (v.kek_id, v.version))
        .collect();
    let known_roots: HashSet<(bool, u8)> = view
        .views
        .iter()
        .filter_map(|v| {
            let version = u8::try_from(v.version).ok()?;
            match v.purpose {
                Purpose::IndexRoot => Some((false, version)),
                Purpose::DeterministicRoot => Some((true, version)),
                _ => None,
            }
        })
        .collect();
    let any_fail_closed = view
        .config
        .policies
        .values()
        .any(|p| p.audit == crate::tenant::policy::AuditMode::FailClosed);
    TenantKeys {
        tenant: ctx.tenant().clone(),
        ctx: ctx.clone(),
        any_fail_closed,
        config: Arc::clone(&view.config),
        keks: Vec::new(),
        active: Vec::new(),
        classic,
        known_keks,
        known_roots,
        index_roots: BTreeMap::new(),
        deterministic_roots: BTreeMap::new(),
        unproven_keks: Vec::new(),
        unproven_roots: Vec::new(),
        derived: Default::default(),
        plans: Arc::clone(&view.plans),
        view_stale: Arc::clone(&view.stale),
        sink: Arc::clone(&cmk.sink),
        min_format_version: cmk.settings.min_format_version,
        kek_max_wraps: cmk.settings.kek_max_wraps,
    }
}

/// Puts a fetched lease in its slot of the handle; the newest active version of a class is
/// its write key.
fn place(keys: &mut TenantKeys, want: &Want<'_>, lease: Arc<Lease>) {
    let v = want.view;
    match want.slot {
        Slot::Kek(class) => {
            if v.state == KeyState::Active && !keys.active.iter().any(|(c, _)| c == class) {
                keys.active.push((class.clone(), (v.kek_id, v.version)));
            }
            keys.keks.push((
                (v.kek_id, v.version),
                LeasedKek {
                    class: class.clone(),
                    lease,
                },
            ));
        }
        Slot::IndexRoot(version) => {
            keys.index_roots.insert(version, lease);
        }
        Slot::DeterministicRoot(version) => {
            keys.deterministic_roots.insert(version, lease);
        }
    }
}

async fn lease_for(
    cmk: &Cmk,
    tenant: &TenantId,
    v: &KeyVersionView,
    entry: &RegistryEntry,
    timings: Timings,
) -> Result<Arc<Lease>> {
    let key = LeaseKey {
        tenant: tenant.clone(),
        purpose: v.purpose,
        policy: v.policy.clone(),
        version: v.version,
    };
    if let Some(l) = cmk.leases.get(&key)
        && l.ended().is_none()
        && !l.renewal_due()
    {
        metrics::counter!(crate::meter::LEASE_HITS).increment(1);
        return Ok(l);
    }
    metrics::counter!(crate::meter::LEASE_MISSES).increment(1);
    obtain(cmk, key, entry.clone(), timings).await
}

/// Unwraps (or renews) one lease: single flight per key, classified failures.
async fn obtain(
    cmk: &Cmk,
    key: LeaseKey,
    entry: RegistryEntry,
    timings: Timings,
) -> Result<Arc<Lease>> {
    let flight_key = key.clone();
    let result = obtain_once(cmk, key, entry, timings).await;
    cmk.leases.prune_flight(&flight_key);
    result
}

async fn obtain_once(
    cmk: &Cmk,
    key: LeaseKey,
    entry: RegistryEntry,
    timings: Timings,
) -> Result<Arc<Lease>> {
    let flight = cmk.leases.flight(&key);
    let _one_at_a_time = flight.lock().await;
    let existing = cmk
        .leases
        .get(&key)
        .filter(|l| !matches!(l.ended(), Some(LeaseEnd::Revoked(_))));
    if let Some(l) = &existing
        && l.ended().is_none()
        && !l.renewal_due()
    {
        return Ok(Arc::clone(l)); // another caller just did the work
    }
    let tenant = &key.tenant.clone();
    let kms_error = |e| Error::Kms {
        tenant: tenant.to_string(),
        provider: entry.cmk_ref.provider().to_string(),
        source: e,
    };
    if let Some(denied) = cmk.leases.denial(&key) {
        return Err(kms_error(denied));
    }
    let context = entry_context(
        key.purpose,
        tenant,
        &key.policy,
        entry.kek_id,
        key.version,
        &entry.cmk_ref,
    );
    let result = cmk
        .kms
        .unwrap(&entry.cmk_ref, &entry.wrapped, &context)
        .await;
    // A lease that is still serving (not expired, not used up) and whose policy has not
    // changed can be renewed in place; new lease times or caps start a new lease.
    let live = existing.filter(|l| l.ended().is_none() && l.timings() == timings);
    match result {
        Ok(bytes) => {
            let material = SecretKey::from_slice(bytes.expose_secret()).ok_or(Error::Tampered)?;
            Ok(lease_from_unwrap(cmk, key, entry, timings, live, material))
        }
        Err(e) if e.kind.is_transient() => {
            system_event(
                cmk.sink.as_ref(),
                tenant,
                EventName::KmsUnreachable,
                failure(e.kind.as_str()),
            );
            // A serving lease rides the outage out.
            match live {
                Some(lease) => {
                    lease.retry_later();
                    Ok(lease)
                }
                None => Err(kms_error(e)),
            }
        }
        Err(e) => Err(kms_error(refused(cmk, &key, e))),
    }
}

/// The lease after a successful unwrap: the serving one renewed in place, or a new one.
fn lease_from_unwrap(
    cmk: &Cmk,
    key: LeaseKey,
    entry: RegistryEntry,
    timings: Timings,
    live: Option<Arc<Lease>>,
    material: SecretKey,
) -> Arc<Lease> {
    let sink = cmk.sink.as_ref();
    cmk.leases.forget_denial(&key);
    if let Some(lease) = live {
        lease.renewed(entry);
        metrics::counter!(crate::meter::LEASE_RENEWALS).increment(1);
        lease_event(
            sink,
            &lease.key,
            EventName::KmsLeaseRenewed,
            Outcome::Success,
            lease.uses(),
        );
        return lease;
    }
    let tenant = key.tenant.clone();
    let material = match key.purpose {
        Purpose::Kek => Material::Kek(Box::new(GcmKey::new(&material))),
        _ => Material::Root(material),
    };
    let provider = entry.cmk_ref.provider().to_string();
    let clock = Arc::clone(&cmk.settings.clock);
    let lease = Arc::new(Lease::new(
        key,
        provider,
        material,
        clock,
        timings.renewal,
        timings.hard,
        timings.max_uses,
        entry,
    ));
    cmk.leases.insert(Arc::clone(&lease));
    system_event(sink, &tenant, EventName::KmsUnwrap, Outcome::Success);
    lease
}

/// The KMS refused (denied, not found, invalid): the lease ends now and the refusal is
/// remembered for the denial TTL.
fn refused(cmk: &Cmk, key: &LeaseKey, e: KmsError) -> KmsError {
    let sink = cmk.sink.as_ref();
    if let Some(lease) = cmk.leases.remove(key) {
        lease.revoke(e.kind.as_str());
        lease_event(
            sink,
            &lease.key,
            EventName::KmsLeaseRevoked,
            failure(e.kind.as_str()),
            lease.uses(),
        );
    }
    cmk.leases.remember_denial(key, e.clone());
    system_event(
        sink,
        &key.tenant,
        EventName::KmsUnwrap,
        failure(e.kind.as_str()),
    );
    e
}

/// The body of [`Cmk::renew_due`].
pub(crate) async fn renew_due(cmk: &Cmk) -> RenewReport {
    let mut report = RenewReport::default();
    let leases = cmk.leases.all();
    let fresh = fresh_views(cmk, &leases).await;
    for lease in leases {
        renew_one(cmk, lease, &fresh, &mut report).await;
    }
    report
}

/// Each leased tenant's view, read again: `None` for a tenant shredded or purged; a tenant
/// whose registry or configuration cannot be read is left out (its leases ride it out like a
/// KMS outage).
async fn fresh_views(
    cmk: &Cmk,
    leases: &[Arc<Lease>],
) -> HashMap<TenantId, Option<Arc<TenantView>>> {
    let tenants: HashSet<TenantId> = leases.iter().map(|l| l.key.tenant.clone()).collect();
    let mut fresh = HashMap::new();
    for tenant in tenants {
        match tenant_view(cmk, &tenant, true).await {
            Ok(view) => {
                fresh.insert(tenant, Some(view));
            }
            Err(Error::TenantShredded { .. }) | Err(Error::UnknownTenant { .. }) => {
                fresh.insert(tenant, None);
            }
            Err(_) => {}
        }
    }
    fresh
}

/// One lease of the renewal pass: dropped when ended, revoked when the registry no longer
/// backs it, renewed through the KMS when due.
async fn renew_one(
    cmk: &Cmk,
    lease: Arc<Lease>,
    fresh: &HashMap<TenantId, Option<Arc<TenantView>>>,
    report: &mut RenewReport,
) {
    let key = lease.key.clone();
    if matches!(lease.ended(), Some(LeaseEnd::Revoked(_))) {
        cmk.leases.remove(&key);
        return;
    }
    if lease.ended() == Some(LeaseEnd::Expired) {
        lease.wipe();
        cmk.leases.remove(&key);
        lease_event(
            cmk.sink.as_ref(),
            &key,
            EventName::KmsLeaseExpired,
            failure("lease_expired"),
            lease.uses(),
        );
        report.expired += 1;
        return;
    }
    let Some(view) = fresh.get(&key.tenant) else {
        // Registry or configuration unreadable (down, or a corrupted record): still ask the
        // KMS, with the lease's own entry, so a revocation is seen in time.
        if lease.renewal_due() {
            let (entry, timings) = (lease.entry(), lease.timings());
            renew_through_kms(cmk, &lease, entry, timings, report).await;
        }
        return;
    };
    let current = view.as_ref().and_then(|view| {
        view.views.iter().find(|v| {
            v.purpose == key.purpose && v.policy == key.policy && v.version == key.version
        })
    });
    if let Some(reason) = revocation_reason(view.as_deref(), current) {
        cmk.leases.remove(&key);
        lease.revoke(reason);
        lease_event(
            cmk.sink.as_ref(),
            &key,
            EventName::KmsLeaseRevoked,
            failure("revoked"),
            lease.uses(),
        );
        report.revoked += 1;
        return;
    }
    let (true, Some(view), Some(entry)) = (
        lease.renewal_due(),
        view.as_ref(),
        current.and_then(|v| v.wrapped_by.clone()),
    ) else {
        return;
    };
    let timings = match key.purpose {
        Purpose::Kek => Class::new(&key.policy)
            .ok()
            .and_then(|c| view.config.policies.get(&c))
            .and_then(|p| Timings::of(&p.lease))
            .unwrap_or(Timings::for_roots(&view.config)),
        _ => Timings::for_roots(&view.config),
    };
    renew_through_kms(cmk, &lease, entry, timings, report).await;
}

/// Why the registry no longer backs a lease's key version, if it does not.
fn revocation_reason(
    view: Option<&TenantView>,
    current: Option<&KeyVersionView>,
) -> Option<&'static str> {
    match (view, current) {
        (None, _) => Some("tenant shredded"),
        (Some(view), _) if view.shredded || view.empty => Some("tenant shredded"),
        (Some(_), None) => Some("key version gone from the registry"),
        (Some(_), Some(v)) if v.state == KeyState::Destroyed => Some("key version destroyed"),
        (Some(_), Some(v)) if v.wrapped_by.is_none() => {
            Some("no entry under the configured master key")
        }
        _ => None,
    }
}

/// Renews a due lease with a real unwrap and counts what happened.
async fn renew_through_kms(
    cmk: &Cmk,
    lease: &Arc<Lease>,
    entry: RegistryEntry,
    timings: Timings,
    report: &mut RenewReport,
) {
    let expiry_before = lease.hard_expiry();
    match obtain(cmk, lease.key.clone(), entry, timings).await {
        // A successful renewal moves the hard expiry; riding out an outage does not.
        Ok(l) if Arc::ptr_eq(&l, lease) && l.hard_expiry() > expiry_before => report.renewed += 1,
        Ok(_) => report.unreachable += 1,
        Err(Error::Kms { source, .. }) if source.kind.is_transient() => report.unreachable += 1,
        Err(_) => report.revoked += 1,
    }
}

/// The body of [`Cmk::spawn_renewer`].
pub(crate) fn spawn_renewer(cmk: &Cmk, period: Duration) -> tokio::task::JoinHandle<()> {
    let me = cmk.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            let _ = me.renew_due().await;
        }
    })
}

/// Rolls a class's KEK over to a new version when the active one is too old (by its
/// registry creation time) or has wrapped too many DEKs in this process. Returns true when
/// the registry changed.
async fn roll_over_due(
    cmk: &Cmk,
    ctx: &RequestContext,
    view: &TenantView,
    wanted: &[&Class],
) -> Result<bool> {
    let mut changed = false;
    for class in wanted {
        let Ok(policy) = view.config.policy(class) else {
            continue;
        };
        if Timings::of(&policy.lease).is_none() {
            continue;
        }
        let versions: Vec<&KeyVersionView> = view
            .views
            .iter()
            .filter(|v| v.purpose == Purpose::Kek && v.policy == class.as_str())
            .collect();
        let Some(active) = versions
            .iter()
            .filter(|v| v.state == KeyState::Active && v.wrapped_by.is_some())
            .max_by_key(|v| v.version)
        else {
            continue;
        };
        let created = active.wrapped_by.as_ref().map_or(0, |e| e.created_at);
        let too_old = now_secs().saturating_sub(created) >= cmk.settings.kek_max_age.as_secs();
        let key = LeaseKey {
            tenant: ctx.tenant().clone(),
            purpose: Purpose::Kek,
            policy: class.to_string(),
            version: active.version,
        };
        let too_used = cmk
            .leases
            .get(&key)
            .is_some_and(|l| l.wraps() >= cmk.settings.kek_max_wraps);
        if too_old || too_used {
            let outcome = provision_next_kek(cmk, ctx, view, class).await;
            cmk.emit(ctx, EventName::AdminKekStateChanged, &outcome);
            outcome?;
            changed = true;
        }
    }
    if changed {
        forget_view(cmk, ctx.tenant());
    }
    Ok(changed)
}

/// Writes KEK version (highest known + 1) of `class` under its configured master key.
pub(crate) async fn provision_next_kek(
    cmk: &Cmk,
    ctx: &RequestContext,
    view: &TenantView,
    class: &Class,
) -> Result<u32> {
    let policy = view.config.policy(class)?;
    let next = view
        .views
        .iter()
        .filter(|v| v.purpose == Purpose::Kek && v.policy == class.as_str())
        .map(|v| v.version)
        .max()
        .unwrap_or(0)
        .checked_add(1)
        .ok_or_else(|| Error::Registry(format!("class `{class}` has no KEK version left")))?;
    cmk.provision(
        ctx,
        Purpose::Kek,
        class.as_str(),
        kek_id(class.as_str()),
        next,
        &policy.kms_key,
    )
    .await?;
    Ok(next)
}
