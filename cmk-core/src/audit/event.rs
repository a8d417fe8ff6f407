//! Security events: one for every seal, unseal, denial, onboarding and configuration change.
//!
//! Events carry names, never values: tenant, operation, outcome, table, record id, the
//! columns and classes touched, and the request context. Core emits them through an
//! [`EventSink`]; delivery to each tenant's SIEM (queues, spools, HTTP, syslog) plugs in as
//! further sinks.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::tenant::context::{RequestContext, TenantId};

/// Event names: `CATEGORY_ACTION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
#[non_exhaustive]
pub enum EventName {
    /// A row's classified fields were encrypted.
    DataEncrypt,
    /// A row's classified fields were decrypted.
    DataDecrypt,
    /// Reading a class was refused for lack of a reader role.
    DataDenyAccess,
    /// A tenant was onboarded (its keys provisioned, its master keys proven).
    AdminTenantOnboarded,
    /// A tenant's configuration was changed.
    AdminTenantConfigChanged,
    /// The KMS unwrapped a key for a key handle.
    KmsUnwrap,
    /// The KMS wrapped a key (provisioning).
    KmsWrap,
    /// A lease was renewed by a real unwrap.
    KmsLeaseRenewed,
    /// A lease passed its hard expiry without renewal and was wiped.
    KmsLeaseExpired,
    /// A lease was revoked (KMS refusal, destroyed key, shredded tenant) and wiped.
    KmsLeaseRevoked,
    /// The KMS could not be reached (or throttled); leases ride it out until hard expiry.
    KmsUnreachable,
    /// A master key was rotated (registry entries re-wrapped).
    AdminKeyRotated,
    /// A KEK version changed state (rolled over, retired, destroyed).
    AdminKekStateChanged,
    /// A tenant was crypto-shredded.
    AdminTenantShredded,
    /// Key columns were re-wrapped to another KEK version.
    DataRekey,
    /// Rows of a sealed table were deleted.
    DataDelete,
    /// A row's classified fields were re-sealed by an update (fresh DEKs).
    DataUpdate,
    /// Plaintext rows were sealed by the backfill of a migration.
    DataMigrate,
    /// Events could not be recorded (the spool was full or failing); `metadata.lost` counts
    /// them. Emitted as soon as delivery works again.
    AuditEventsLost,
    /// A tenant's configuration or key registry failed an integrity check (a record that
    /// fails its MAC, a rolled-back revision, a destroyed state or shred tombstone that may
    /// be forged): the error kind says which; nothing of the stored content is in the event.
    /// Sent to the tenant's sink and to the operator's ([`EventSink::emit_alert`]).
    AdminIntegrityFailure,
}

impl EventName {
    /// The documented name, e.g. `DATA_DECRYPT`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventName::DataEncrypt => "DATA_ENCRYPT",
            EventName::DataDecrypt => "DATA_DECRYPT",
            EventName::DataDenyAccess => "DATA_DENY_ACCESS",
            EventName::AdminTenantOnboarded => "ADMIN_TENANT_ONBOARDED",
            EventName::AdminTenantConfigChanged => "ADMIN_TENANT_CONFIG_CHANGED",
            EventName::KmsUnwrap => "KMS_UNWRAP",
            EventName::KmsWrap => "KMS_WRAP",
            EventName::KmsLeaseRenewed => "KMS_LEASE_RENEWED",
            EventName::KmsLeaseExpired => "KMS_LEASE_EXPIRED",
            EventName::KmsLeaseRevoked => "KMS_LEASE_REVOKED",
            EventName::KmsUnreachable => "KMS_UNREACHABLE",
            EventName::AdminKeyRotated => "ADMIN_KEY_ROTATED",
            EventName::AdminKekStateChanged => "ADMIN_KEK_STATE_CHANGED",
            EventName::AdminTenantShredded => "ADMIN_TENANT_SHREDDED",
            EventName::DataRekey => "DATA_REKEY",
            EventName::DataDelete => "DATA_DELETE",
            EventName::DataUpdate => "DATA_UPDATE",
            EventName::DataMigrate => "DATA_MIGRATE",
            EventName::AuditEventsLost => "AUDIT_EVENTS_LOST",
            EventName::AdminIntegrityFailure => "ADMIN_INTEGRITY_FAILURE",
        }
    }

    /// Every name, in documentation order.
    pub const ALL: [EventName; 20] = [
        EventName::DataEncrypt,
        EventName::DataDecrypt,
        EventName::DataUpdate,
        EventName::DataDelete,
        EventName::DataDenyAccess,
        EventName::DataRekey,
        EventName::DataMigrate,
        EventName::KmsWrap,
        EventName::KmsUnwrap,
        EventName::KmsLeaseRenewed,
        EventName::KmsLeaseExpired,
        EventName::KmsLeaseRevoked,
        EventName::KmsUnreachable,
        EventName::AdminTenantOnboarded,
        EventName::AdminTenantConfigChanged,
        EventName::AdminKeyRotated,
        EventName::AdminKekStateChanged,
        EventName::AdminTenantShredded,
        EventName::AdminIntegrityFailure,
        EventName::AuditEventsLost,
    ];

    /// The name's category: `DATA`, `KMS`, `ADMIN` or `AUDIT`.
    pub fn category(self) -> &'static str {
        let name = self.as_str();
        name.split_once('_').map_or(name, |(c, _)| c)
    }

    /// Parses a documented name.
    pub fn parse(name: &str) -> Option<EventName> {
        EventName::ALL.into_iter().find(|n| n.as_str() == name)
    }
}

impl TryFrom<String> for EventName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        EventName::parse(&s).ok_or_else(|| format!("unknown event name `{s}`"))
    }
}

impl From<EventName> for &'static str {
    fn from(n: EventName) -> &'static str {
        n.as_str()
    }
}

thread_local! {
    /// The name a seal's event carries while [`sealing_as`] runs on this thread.
    static SEALING_AS: std::cell::Cell<Option<EventName>> = const { std::cell::Cell::new(None) };
}

/// Runs `f`, a synchronous seal (or batch of seals), with its events named `name` instead of
/// `DATA_ENCRYPT`: the ORM adapters' updates (`DATA_UPDATE`) and the plaintext backfill
/// (`DATA_MIGRATE`), so that a SIEM can tell a new row from a rewritten one.
pub fn sealing_as<R>(name: EventName, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<EventName>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SEALING_AS.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(SEALING_AS.with(|c| c.replace(Some(name))));
    f()
}

/// The name of a seal's event on this thread (`DATA_ENCRYPT` unless [`sealing_as`] says
/// otherwise).
pub(crate) fn sealing_event() -> EventName {
    SEALING_AS
        .with(|c| c.get())
        .unwrap_or(EventName::DataEncrypt)
}

/// Whether the operation succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// It did.
    Success,
    /// It did not; `error` is a stable error kind (see [`crate::Error::kind`]).
    Failure {
        /// The error kind.
        error: String,
    },
}

/// A unique event id, shown and serialised as 32 hex digits: 128 pseudo-random bits, AES-128
/// in counter mode under a key each thread draws from the operating system's CSPRNG (again
/// in a forked child). AES is a permutation, so a thread never repeats an id, and ids of two
/// threads collide with probability 2⁻¹²⁸ per pair. Unpredictable, not a visible counter: a
/// tenant sees its own events, and a counter would tell it how many events were issued for
/// other tenants in between. (Reading 16 bytes per event from the kernel instead costs about
/// 45 ns per event on the hot path.)
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
// Exhaustive by design: the 16 bytes of an id are its whole format.
#[allow(clippy::exhaustive_structs)]
pub struct EventId(pub [u8; 16]);

/// Ids made per thread, 32 at a time.
struct IdPool {
    /// The process the key was drawn in (see [`crate::crypto::rng`]).
    mark: u64,
    key: Option<aes::Aes128Enc>,
    counter: u64,
    ids: [aes::Block; ID_POOL],
    next: usize,
}

const ID_POOL: usize = 32;

thread_local! {
    static IDS: std::cell::RefCell<IdPool> = std::cell::RefCell::new(IdPool {
        mark: u64::MAX,
        key: None,
        counter: 0,
        ids: [aes::Block::default(); ID_POOL],
        next: ID_POOL,
    });
}

impl IdPool {
    fn take(&mut self, mark: u64) -> Option<EventId> {
        use aes::cipher::{BlockCipherEncrypt, KeyInit};
        if self.mark != mark || self.key.is_none() {
            // A new thread, or a forked child: a key of its own, so no id repeats the parent's.
            let key: [u8; 16] = crate::crypto::rng::array().ok()?;
            self.key = Some(aes::Aes128Enc::new(&key.into()));
            self.mark = mark;
            self.counter = 0;
            self.next = ID_POOL;
        }
        if self.next == ID_POOL {
            let key = self.key.as_ref()?;
            for block in &mut self.ids {
                block.fill(0);
                block[8..].copy_from_slice(&self.counter.to_be_bytes());
                self.counter = self.counter.wrapping_add(1);
            }
            key.encrypt_blocks(&mut self.ids);
            self.next = 0;
        }
        let id = self.ids[self.next];
        self.next += 1;
        Some(EventId(id.into()))
    }
}

impl EventId {
    /// A new id.
    pub fn fresh() -> Self {
        let mark = crate::crypto::rng::process_mark();
        // `try_with`: a thread's last events may come while its locals are torn down.
        IDS.try_with(|pool| pool.try_borrow_mut().ok()?.take(mark))
            .ok()
            .flatten()
            .or_else(|| crate::crypto::rng::array::<16>().ok().map(EventId))
            .unwrap_or_else(|| {
                // Without randomness: time, process and a process-wide counter, still unique,
                // only predictable (and randomness failing fails every seal anyway).
                static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(
                    &(now_ms() ^ u64::from(std::process::id()) << 40).to_be_bytes(),
                );
                b[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
                EventId(b)
            })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::hex::encode(&self.0))
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

impl EventId {
    /// The 32 lower-case hex digits, on the stack (the delivery worker writes one per event).
    fn hex(&self) -> [u8; 32] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = DIGITS[usize::from(b >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
        }
        out
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let hex = self.hex();
        // Hex digits are ASCII, so this cannot fail; an empty string would never match an id.
        s.serialize_str(std::str::from_utf8(&hex).unwrap_or_default())
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        crate::hex::decode(&text)
            .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
            .map(EventId)
            .ok_or_else(|| serde::de::Error::custom("an event id is 32 hex digits"))
    }
}

/// One security event. Column and class lists are shared (`Arc`) because most events of a
/// table repeat the same lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SecurityEvent {
    /// Unique id for de-duplication downstream.
    pub id: EventId,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Tenant.
    pub tenant: Arc<str>,
    /// Name.
    pub name: EventName,
    /// Outcome.
    pub outcome: Outcome,
    /// Stored table name, if the event concerns rows.
    pub table: Option<Arc<str>>,
    /// Record id, if known (application-assigned ids).
    pub record_id: Option<String>,
    /// Columns touched (names only).
    pub columns: Arc<[String]>,
    /// Classes touched.
    pub classes: Arc<[String]>,
    /// Actor (`user:ID` or `service:NAME`).
    pub actor: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// Source address.
    pub source: Option<String>,
    /// Purpose.
    pub purpose: Option<String>,
    /// Free-form metadata from the request context.
    pub metadata: BTreeMap<String, String>,
    /// For lease events: the uses the lease served from cache since it was last renewed.
    pub cached_uses: Option<u64>,
}

impl SecurityEvent {
    /// A new event for the request, with a fresh id and the current time.
    pub fn new(ctx: &RequestContext, name: EventName, outcome: Outcome) -> Self {
        Self::about(ctx, name, outcome, None, None, empty_names(), empty_names())
    }

    /// An event about rows, built in one step (the per-row hot path).
    pub(crate) fn about(
        ctx: &RequestContext,
        name: EventName,
        outcome: Outcome,
        table: Option<Arc<str>>,
        record_id: Option<String>,
        columns: Arc<[String]>,
        classes: Arc<[String]>,
    ) -> Self {
        SecurityEvent {
            id: EventId::fresh(),
            timestamp_ms: now_ms(),
            tenant: ctx.tenant().shared(),
            name,
            outcome,
            table,
            record_id,
            columns,
            classes,
            actor: ctx.actor().map(|a| a.label()),
            request_id: ctx.request_id().map(str::to_string),
            source: ctx.source().map(str::to_string),
            purpose: ctx.purpose().map(str::to_string),
            metadata: ctx.metadata().clone(),
            cached_uses: None,
        }
    }

    /// An event of cmk's own (lease renewal, expiry) with no request behind it.
    pub fn system(tenant: &TenantId, name: EventName, outcome: Outcome) -> Self {
        let ctx = RequestContext::new(tenant.clone())
            .with_actor(crate::tenant::context::Actor::Service("cmk".into()));
        SecurityEvent::new(&ctx, name, outcome)
    }

    /// Sets the table.
    pub fn with_table(mut self, table: impl Into<Arc<str>>) -> Self {
        self.table = Some(table.into());
        self
    }

    /// Sets the record id.
    pub fn with_record(mut self, record: Option<String>) -> Self {
        self.record_id = record;
        self
    }

    /// Sets columns and classes touched.
    pub fn with_fields(
        mut self,
        columns: impl Into<Arc<[String]>>,
        classes: impl Into<Arc<[String]>>,
    ) -> Self {
        self.columns = columns.into();
        self.classes = classes.into();
        self
    }
}

/// One shared empty list (an empty `Arc<[String]>` would still allocate).
fn empty_names() -> Arc<[String]> {
    static EMPTY: std::sync::OnceLock<Arc<[String]>> = std::sync::OnceLock::new();
    Arc::clone(EMPTY.get_or_init(|| Arc::from([])))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        // Seconds and milliseconds apart: no 128-bit arithmetic on the per-row path.
        .map(|d| {
            d.as_secs()
                .saturating_mul(1000)
                .saturating_add(u64::from(d.subsec_millis()))
        })
        .unwrap_or(0)
}

/// Why a sink could not take an event.
#[derive(Debug, Clone, thiserror::Error)]
#[error("event sink failed: {0}")]
// Exhaustive by design: a message newtype that every sink builds.
#[allow(clippy::exhaustive_structs)]
pub struct SinkError(pub String);

/// Where events go. `emit` must not block beyond a bound: sinks that talk to the network
/// queue internally (`crate::audit::Pipeline`).
pub trait EventSink: Send + Sync + std::fmt::Debug {
    /// Takes one event. An `Err` means the event is not recorded (fail-closed policies then
    /// refuse the operation).
    ///
    /// # Errors
    /// Implementations return a [`SinkError`] when they could not record the event: a pipeline
    /// could not queue it and its spool is full or cannot be written, or a `MemorySink` was set
    /// to fail.
    fn emit(&self, event: SecurityEvent) -> Result<(), SinkError>;

    /// Takes one event of a fail-closed operation: `Ok` only once the event is durable
    /// (flushed to disk, or acknowledged by its receiver), because the plaintext is returned
    /// right after. Sinks without a durable step record it as `emit` does.
    ///
    /// # Errors
    /// Implementations return a [`SinkError`] when the event is not durable: the spool is full
    /// or its append or `fsync` failed. Sinks without a durable step fail as `emit` does.
    fn emit_durable(&self, event: SecurityEvent) -> Result<(), SinkError> {
        self.emit(event)
    }

    /// Takes an event the operator must see as well as the tenant: an integrity failure
    /// (tampered stored data, configuration or registry). A sink that routes tenants to
    /// their own sinks ([`crate::audit::Router`]) sends it to the tenant's sink and to the
    /// operator's default one; every other sink records it as `emit_durable` does.
    ///
    /// # Errors
    /// As [`EventSink::emit_durable`], when a sink it goes to could not make it durable.
    fn emit_alert(&self, event: SecurityEvent) -> Result<(), SinkError> {
        self.emit_durable(event)
    }

    /// Told before a tenant's configuration is saved (and when one is loaded) which sink the
    /// tenant names (`TenantConfig::audit_sink`); an `Err` refuses the configuration (an
    /// endpoint off the operator's allow-list, an unknown sink name).
    ///
    /// # Errors
    /// Implementations return a [`SinkError`] to refuse the configuration: the name is neither
    /// a registered sink nor an allowed endpoint, or the sink for the endpoint could not be
    /// built. The default implementation accepts every name.
    fn configure_tenant(
        &self,
        tenant: &TenantId,
        audit_sink: Option<&str>,
    ) -> Result<(), SinkError> {
        let _ = (tenant, audit_sink);
        Ok(())
    }
}

/// Emits events as structured `tracing` events at INFO level, target `cmk::security`.
#[derive(Debug, Default, Clone, Copy)]
// Exhaustive by design: a unit sink, named as a value.
#[allow(clippy::exhaustive_structs)]
pub struct TracingSink;

impl EventSink for TracingSink {
    fn emit(&self, e: SecurityEvent) -> Result<(), SinkError> {
        tracing::info!(
            target: "cmk::security",
            id = %e.id,
            name = e.name.as_str(),
            tenant = %e.tenant,
            outcome = ?e.outcome,
            table = e.table.as_deref().unwrap_or(""),
            record_id = e.record_id.as_deref().unwrap_or(""),
            columns = ?e.columns,
            classes = ?e.classes,
            actor = e.actor.as_deref().unwrap_or(""),
            request_id = e.request_id.as_deref().unwrap_or(""),
            "security event"
        );
        Ok(())
    }
}

/// Keeps events in memory, for tests and examples; can be told to fail.
#[derive(Debug, Default)]
pub struct MemorySink {
    events: Mutex<Vec<SecurityEvent>>,
    failing: AtomicBool,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every event recorded so far.
    pub fn events(&self) -> Vec<SecurityEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Removes and returns the recorded events.
    pub fn take(&self) -> Vec<SecurityEvent> {
        self.events
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default()
    }

    /// Makes every following `emit` fail (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

impl EventSink for MemorySink {
    fn emit(&self, event: SecurityEvent) -> Result<(), SinkError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(SinkError("memory sink set to fail".into()));
        }
        self.events
            .lock()
            .map_err(|_| SinkError("memory sink lock poisoned".into()))?
            .push(event);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::context::{Actor, TenantId};

    #[test]
    fn event_ids_do_not_repeat_within_or_across_threads() {
        let draw = || (0..10_000).map(|_| EventId::fresh()).collect::<Vec<_>>();
        let here = draw();
        let there = std::thread::spawn(draw).join().unwrap();
        let all: std::collections::HashSet<EventId> = here.iter().chain(&there).copied().collect();
        assert_eq!(all.len(), 20_000);
        assert_ne!(
            here[0].0[..8],
            there[0].0[..8],
            "each thread its own random half"
        );
    }

    #[test]
    fn events_copy_the_context_and_serialise_names() {
        let ctx = RequestContext::new(TenantId::new("acme").unwrap())
            .with_actor(Actor::Service("billing".into()))
            .with_request_id("r1")
            .with_metadata("k", "v");
        let e = SecurityEvent::new(&ctx, EventName::DataDecrypt, Outcome::Success)
            .with_table("patients")
            .with_fields(vec!["ssn".into()], vec!["restricted".into()]);
        assert_eq!(e.id.to_string().len(), 32);
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"name\":\"DATA_DECRYPT\""), "{json}");
        assert!(json.contains("\"actor\":\"service:billing\""));
        assert!(json.contains("\"status\":\"success\""));
        let sink = MemorySink::new();
        sink.emit(e.clone()).unwrap();
        sink.set_failing(true);
        assert!(sink.emit(e).is_err());
        assert_eq!(sink.events().len(), 1);
    }
}
