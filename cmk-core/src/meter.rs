//! Metrics for dashboards, through the [`metrics`] facade: cmk records, the application
//! installs the exporter (Prometheus, StatsD, OpenTelemetry, ...). Without one, recording
//! costs an atomic load. The names, types and labels are listed in docs/EVENTS.md
//! ("Metrics"); [`describe`] gives the exporter their units and descriptions.
//!
//! No metric carries a tenant id or a key id as a label: labels are bounded sets (provider,
//! operation, error kind), so a deployment of many tenants does not explode an exporter's
//! series. Per-tenant detail is in the security events.

/// Counter: key requests served by a live lease, without the KMS.
pub const LEASE_HITS: &str = "cmk_lease_hits_total";
/// Counter: key requests that needed the KMS (no lease, or one due for renewal).
pub const LEASE_MISSES: &str = "cmk_lease_misses_total";
/// Counter: leases renewed in place by a successful unwrap.
pub const LEASE_RENEWALS: &str = "cmk_lease_renewals_total";
/// Counter: leases revoked (a KMS refusal, a destroyed key, a shredded tenant).
pub const LEASE_REVOCATIONS: &str = "cmk_lease_revocations_total";
/// Histogram, seconds, labels `provider` and `op` (`wrap`, `unwrap`, `destroy`): KMS call
/// latency, failures included.
pub const KMS_SECONDS: &str = "cmk_kms_request_seconds";
/// Counter, labels `provider`, `op` and `kind` (`unavailable`, `throttled`, `denied`,
/// `not_found`, `invalid`): failed KMS calls.
pub const KMS_ERRORS: &str = "cmk_kms_errors_total";
/// Gauge: events emitted and not yet taken by the delivery worker.
pub const AUDIT_QUEUE_DEPTH: &str = "cmk_audit_queue_depth";
/// Gauge, bytes: events in the spool awaiting delivery.
pub const AUDIT_SPOOL_BYTES: &str = "cmk_audit_spool_bytes";
/// Counter: events delivered to the sink's transport.
pub const AUDIT_DELIVERED: &str = "cmk_audit_events_delivered_total";
/// Counter: events lost (the spool was full or failing); each loss is also reported to the
/// tenant as an `AUDIT_EVENTS_LOST` event.
pub const AUDIT_LOST: &str = "cmk_audit_events_lost_total";

/// Every metric name, for exporters' allow-lists and the documentation's test.
pub const ALL: &[&str] = &[
    LEASE_HITS,
    LEASE_MISSES,
    LEASE_RENEWALS,
    LEASE_REVOCATIONS,
    KMS_SECONDS,
    KMS_ERRORS,
    AUDIT_QUEUE_DEPTH,
    AUDIT_SPOOL_BYTES,
    AUDIT_DELIVERED,
    AUDIT_LOST,
];

/// Describes every metric (unit and help text) to the installed recorder: call it once after
/// installing the exporter.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        LEASE_HITS,
        Unit::Count,
        "Key requests served by a live lease"
    );
    describe_counter!(
        LEASE_MISSES,
        Unit::Count,
        "Key requests that needed the KMS"
    );
    describe_counter!(LEASE_RENEWALS, Unit::Count, "Leases renewed by the KMS");
    describe_counter!(LEASE_REVOCATIONS, Unit::Count, "Leases revoked");
    describe_histogram!(
        KMS_SECONDS,
        Unit::Seconds,
        "KMS call latency by provider and op"
    );
    describe_counter!(
        KMS_ERRORS,
        Unit::Count,
        "Failed KMS calls by provider, op and kind"
    );
    describe_gauge!(
        AUDIT_QUEUE_DEPTH,
        Unit::Count,
        "Events queued for the delivery worker"
    );
    describe_gauge!(
        AUDIT_SPOOL_BYTES,
        Unit::Bytes,
        "Spooled events awaiting delivery"
    );
    describe_counter!(
        AUDIT_DELIVERED,
        Unit::Count,
        "Events delivered to the transport"
    );
    describe_counter!(
        AUDIT_LOST,
        Unit::Count,
        "Events lost: spool full or failing"
    );
}
