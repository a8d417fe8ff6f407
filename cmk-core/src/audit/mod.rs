//! Delivery of security events to each tenant's SIEM (DESIGN.md §7, docs/EVENTS.md).
//!
//! - [`format`](mod@format): the JSON (schema `cmk.security-event/1`) and RFC 5424 syslog forms.
//! - [`Pipeline`]: an [`crate::audit::event::EventSink`] with a bounded enqueue on the hot path, a
//!   worker that batches to a [`Transport`], a durable [`spool::Spool`] when the transport
//!   fails or the queue is full, in-order replay, and `fsync`ed appends for fail-closed
//!   events.
//! - Transports: [`JsonLinesFile`] (size-based rotation), [`SyslogUdp`], [`SyslogTcp`], and
//!   with the feature `http`, `http::HttpBatches` (Splunk HEC or a generic JSON array).
//! - [`Router`]: each tenant's events to the sink its configuration names, others to the
//!   default; endpoints a tenant can name are checked against the operator's allow-list.

pub mod event;
pub mod format;
#[cfg(feature = "http")]
pub mod http;
mod pipeline;
mod router;
pub mod spool;
mod transport;

pub use pipeline::{Pipeline, PipelineConfig, PipelineStats};
pub use router::{AllowList, Router};
pub use transport::{
    DeliveryError, JsonLinesFile, SyslogTcp, SyslogUdp, Transport, split_octet_counted,
};
