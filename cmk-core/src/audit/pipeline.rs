//! The delivery pipeline: an [`EventSink`] whose hot path is a bounded, non-blocking
//! enqueue, and a worker thread that batches events to a [`Transport`], spools them to disk
//! when it cannot, and replays the spool in order when it can again.
//!
//! - `emit` (every event of a tenant that is not fail-closed): `try_send` into a bounded
//!   queue; when the queue is full, an append (without `fsync`) to the spool; when the spool
//!   is full or failing, the event is lost, counted, and reported as an
//!   `AUDIT_EVENTS_LOST` event as soon as delivery works. Events only in the queue are lost
//!   if the process crashes (docs/EVENTS.md).
//! - `emit_durable` (fail-closed): an append with `fsync` to the spool; `Ok` only once the
//!   event is on disk, so the plaintext is returned after the event is safe; `Err` fails the
//!   operation.
//! - The worker: batches of up to `batch_size` events, delivered directly while the spool is
//!   empty; once anything is spooled, new events are appended behind it, so delivery stays
//!   in order. A failed delivery is retried with exponential backoff (`retry_min` doubling
//!   up to `retry_max`); meanwhile the queue keeps draining into the spool.
//! - Shutdown ([`Pipeline::shutdown`], or drop): drains the queue, delivers what it can
//!   within the timeout and spools the rest with `fsync`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::spool::{Spool, SpoolError};
use super::transport::Transport;
use crate::audit::event::{EventName, EventSink, Outcome, SecurityEvent, SinkError};
use crate::tenant::context::TenantId;

/// How a pipeline queues, batches, retries and spools: [`PipelineConfig::new`], then the
/// `with_*` methods for what differs from the defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PipelineConfig {
    /// Events the in-memory queue holds.
    pub queue_capacity: usize,
    /// Events per delivery.
    pub batch_size: usize,
    /// How long an idle worker sleeps before it looks at the spool again.
    pub flush_interval: Duration,
    /// How long the worker, once it has an event, waits for more to fill the batch: fewer,
    /// larger writes (and `fsync`s) per event at high rates, at most this much latency.
    pub linger: Duration,
    /// First retry delay after a failed delivery.
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// The spool directory (one pipeline per directory).
    pub spool_dir: PathBuf,
    /// The spool's size cap in bytes.
    pub spool_cap_bytes: u64,
}

impl PipelineConfig {
    /// Defaults (a queue of 10,000, batches of up to 2,000 gathered for 1 ms, an idle
    /// look at the spool every 200 ms, retries from 100 ms to 30 s, a 1 GiB spool) with the
    /// spool in `spool_dir`.
    pub fn new(spool_dir: impl Into<PathBuf>) -> Self {
        PipelineConfig {
            queue_capacity: 10_000,
            batch_size: 2_000,
            flush_interval: Duration::from_millis(200),
            linger: Duration::from_millis(1),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(30),
            spool_dir: spool_dir.into(),
            spool_cap_bytes: 1 << 30,
        }
    }

    /// Sets [`PipelineConfig::queue_capacity`].
    pub fn with_queue_capacity(mut self, events: usize) -> Self {
        self.queue_capacity = events;
        self
    }

    /// Sets [`PipelineConfig::batch_size`].
    pub fn with_batch_size(mut self, events: usize) -> Self {
        self.batch_size = events;
        self
    }

    /// Sets [`PipelineConfig::flush_interval`].
    pub fn with_flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// Sets [`PipelineConfig::linger`].
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Sets the first and the longest retry delay ([`PipelineConfig::retry_min`],
    /// [`PipelineConfig::retry_max`]).
    pub fn with_retry(mut self, min: Duration, max: Duration) -> Self {
        self.retry_min = min;
        self.retry_max = max;
        self
    }

    /// Sets [`PipelineConfig::spool_cap_bytes`].
    pub fn with_spool_cap_bytes(mut self, bytes: u64) -> Self {
        self.spool_cap_bytes = bytes;
        self
    }
}

/// What a pipeline has done so far.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct PipelineStats {
    /// Events the transport took.
    pub delivered: AtomicU64,
    /// Events written to the spool.
    pub spooled: AtomicU64,
    /// Events lost (the spool was full or failing).
    pub lost: AtomicU64,
    /// Failed deliveries.
    pub failures: AtomicU64,
}

// Events are nearly every message: boxing them would cost an allocation per event on the
// hot path to shrink the rare control messages' slots.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Event(SecurityEvent),
    Flush(SyncSender<()>),
    Shutdown(Duration),
}

struct Shared {
    spool: Spool,
    stats: PipelineStats,
    /// Losses not yet reported, per tenant.
    unreported: Mutex<BTreeMap<Arc<str>, u64>>,
    /// Events in the queue (sent, not yet taken by the worker), for the depth gauge.
    queued: AtomicU64,
}

impl Shared {
    fn lose(&self, events: &[SecurityEvent]) {
        self.stats
            .lost
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        metrics::counter!(crate::meter::AUDIT_LOST).increment(events.len() as u64);
        let mut map = self.unreported.lock().unwrap_or_else(|p| p.into_inner());
        for e in events {
            *map.entry(Arc::clone(&e.tenant)).or_default() += 1;
        }
    }

    fn spool(&self, events: &[SecurityEvent], sync: bool) -> Result<(), SpoolError> {
        match self.spool.append(events, sync) {
            Ok(()) => {
                self.stats
                    .spooled
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                let written = match &e {
                    SpoolError::Full { written, .. } => *written,
                    SpoolError::Io(_) => 0,
                };
                self.stats
                    .spooled
                    .fetch_add(written as u64, Ordering::Relaxed);
                self.lose(&events[written.min(events.len())..]);
                Err(e)
            }
        }
    }
}

/// A delivery pipeline to one transport (see the module docs).
pub struct Pipeline {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
    name: String,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("transport", &self.name)
            .field("spool", &self.shared.spool)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Starts a pipeline: opens (and will replay) the spool, starts the worker thread.
    ///
    /// # Errors
    /// A [`std::io::Error`] when the spool cannot be opened (its directory cannot be created or
    /// read, another process holds its lock, a torn tail cannot be cut off) or the worker
    /// thread cannot be spawned.
    pub fn start(
        config: PipelineConfig,
        transport: impl Transport,
    ) -> Result<Pipeline, std::io::Error> {
        let spool = Spool::open(&config.spool_dir, config.spool_cap_bytes)?;
        let (tx, rx) = mpsc::sync_channel(config.queue_capacity.max(1));
        let shared = Arc::new(Shared {
            spool,
            stats: PipelineStats::default(),
            unreported: Mutex::new(BTreeMap::new()),
            queued: AtomicU64::new(0),
        });
        let name = transport.name().to_string();
        let worker = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("cmk-audit".into())
                .spawn(move || Worker::new(config, transport, shared, rx).run())?
        };
        Ok(Pipeline {
            tx,
            shared,
            worker: Mutex::new(Some(worker)),
            name,
        })
    }

    /// Counters.
    pub fn stats(&self) -> &PipelineStats {
        &self.shared.stats
    }

    /// Bytes waiting in the spool.
    pub fn spooled_bytes(&self) -> u64 {
        self.shared.spool.bytes()
    }

    /// Waits until every event emitted so far is delivered or spooled, and the spool was
    /// tried once (or `timeout` passes). For tests and orderly handovers.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack, done) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(ack)).is_err() {
            return false;
        }
        done.recv_timeout(timeout).is_ok()
    }

    /// Stops the worker: the queue is drained, delivered where possible within `timeout`,
    /// and the rest spooled with `fsync`.
    pub fn shutdown(&self, timeout: Duration) {
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(worker) = worker {
            let _ = self.tx.send(Msg::Shutdown(timeout));
            let _ = worker.join();
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.shutdown(Duration::from_secs(5));
    }
}

impl EventSink for Pipeline {
    fn emit(&self, event: SecurityEvent) -> Result<(), SinkError> {
        match self.tx.try_send(Msg::Event(event)) {
            Ok(()) => {
                self.shared.queued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(Msg::Event(e)) | TrySendError::Disconnected(Msg::Event(e))) => {
                self.shared
                    .spool(std::slice::from_ref(&e), false)
                    .map_err(|err| SinkError(err.to_string()))
            }
            Err(_) => Ok(()),
        }
    }

    fn emit_durable(&self, event: SecurityEvent) -> Result<(), SinkError> {
        self.shared
            .spool(std::slice::from_ref(&event), true)
            .map_err(|err| SinkError(err.to_string()))
    }
}

struct Worker<T> {
    config: PipelineConfig,
    transport: T,
    shared: Arc<Shared>,
    rx: Receiver<Msg>,
    /// When delivery may be tried again, and the delay after the next failure.
    retry_at: Option<Instant>,
    delay: Duration,
}

impl<T: Transport> Worker<T> {
    fn new(config: PipelineConfig, transport: T, shared: Arc<Shared>, rx: Receiver<Msg>) -> Self {
        let delay = config.retry_min;
        Worker {
            config,
            transport,
            shared,
            rx,
            retry_at: None,
            delay,
        }
    }

    fn may_try(&self) -> bool {
        self.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    fn deliver(&mut self, batch: &[SecurityEvent]) -> bool {
        match self.transport.deliver(batch) {
            Ok(()) => {
                self.shared
                    .stats
                    .delivered
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                metrics::counter!(crate::meter::AUDIT_DELIVERED).increment(batch.len() as u64);
                self.retry_at = None;
                self.delay = self.config.retry_min;
                true
            }
            Err(_) => {
                self.shared.stats.failures.fetch_add(1, Ordering::Relaxed);
                self.retry_at = Some(Instant::now() + self.delay);
                self.delay = (self.delay * 2).min(self.config.retry_max);
                false
            }
        }
    }

    /// Delivers new events directly while nothing is spooled; otherwise behind the spool.
    fn take(&mut self, batch: Vec<SecurityEvent>, sync: bool) {
        if batch.is_empty() {
            return;
        }
        if !self.shared.spool.pending() && self.may_try() && self.deliver(&batch) {
            return;
        }
        let _ = self.shared.spool(&batch, sync);
    }

    /// Replays spooled events in order, up to `rounds` batches.
    fn replay(&mut self, rounds: usize) {
        for _ in 0..rounds {
            if !self.shared.spool.pending() || !self.may_try() {
                return;
            }
            let Ok((events, to, _bad)) = self.shared.spool.peek(self.config.batch_size) else {
                return;
            };
            if events.is_empty() {
                let _ = self.shared.spool.commit(to);
                continue;
            }
            if !self.deliver(&events) {
                return;
            }
            let _ = self.shared.spool.commit(to);
        }
    }

    /// Reports losses once delivery works: one `AUDIT_EVENTS_LOST` per tenant.
    fn report_losses(&mut self) {
        if !self.may_try() || self.shared.spool.pending() {
            return;
        }
        let lost: Vec<(Arc<str>, u64)> = {
            let map = self
                .shared
                .unreported
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            map.iter().map(|(t, n)| (Arc::clone(t), *n)).collect()
        };
        for (tenant, n) in lost {
            let Ok(id) = TenantId::new(tenant.to_string()) else {
                continue;
            };
            let mut event = SecurityEvent::system(
                &id,
                EventName::AuditEventsLost,
                Outcome::Failure {
                    error: "audit_spool".into(),
                },
            );
            event.metadata.insert("lost".into(), n.to_string());
            if self.deliver(std::slice::from_ref(&event)) {
                let mut map = self
                    .shared
                    .unreported
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if let Some(left) = map.get_mut(&tenant) {
                    *left = left.saturating_sub(n);
                    if *left == 0 {
                        map.remove(&tenant);
                    }
                }
            }
        }
    }

    fn run(mut self) {
        let mut waiting: Vec<SyncSender<()>> = Vec::new();
        // Whether the last gathering emptied the queue: then the worker blocks for the next
        // event (one wake-up per batch) and lingers for more; under load it drains without
        // blocking, so senders never pay for waking it.
        let mut idle = true;
        loop {
            let mut batch = Vec::new();
            let mut stop = None;
            let take = |msg: Msg,
                        batch: &mut Vec<SecurityEvent>,
                        waiting: &mut Vec<SyncSender<()>>,
                        stop: &mut Option<Duration>| match msg {
                Msg::Event(e) => batch.push(e),
                Msg::Flush(ack) => waiting.push(ack),
                Msg::Shutdown(t) => *stop = Some(t),
            };
            if idle {
                match self.rx.recv_timeout(self.config.flush_interval) {
                    Ok(msg) => take(msg, &mut batch, &mut waiting, &mut stop),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => stop = Some(Duration::ZERO),
                }
                if !batch.is_empty() && waiting.is_empty() {
                    std::thread::sleep(self.config.linger);
                }
            }
            idle = true;
            while stop.is_none() {
                if batch.len() >= self.config.batch_size {
                    idle = false;
                    break;
                }
                match self.rx.try_recv() {
                    Ok(msg) => take(msg, &mut batch, &mut waiting, &mut stop),
                    Err(_) => break,
                }
            }
            self.taken(batch.len());
            self.take(batch, false);
            self.replay(4);
            self.report_losses();
            self.publish();
            if !waiting.is_empty() && self.rx_is_drained() {
                for ack in waiting.drain(..) {
                    let _ = ack.send(());
                }
            }
            if let Some(timeout) = stop {
                self.stop(timeout);
                for ack in waiting.drain(..) {
                    let _ = ack.send(());
                }
                return;
            }
        }
    }

    /// `n` events left the queue.
    fn taken(&self, n: usize) {
        let _ = self
            .shared
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                Some(q.saturating_sub(n as u64))
            });
    }

    /// The queue depth and spool size gauges, once per worker round (not per event).
    fn publish(&self) {
        metrics::gauge!(crate::meter::AUDIT_QUEUE_DEPTH)
            .set(self.shared.queued.load(Ordering::Relaxed) as f64);
        metrics::gauge!(crate::meter::AUDIT_SPOOL_BYTES).set(self.shared.spool.bytes() as f64);
    }

    /// Nothing left to take from the queue, and the spool tried (or blocked by backoff).
    fn rx_is_drained(&self) -> bool {
        !self.shared.spool.pending() || !self.may_try()
    }

    fn stop(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut rest = Vec::new();
        while let Ok(msg) = self.rx.try_recv() {
            if let Msg::Event(e) = msg {
                rest.push(e);
            }
        }
        self.taken(rest.len());
        // Behind whatever is spooled, with fsync: nothing emitted is lost by a shutdown.
        if !rest.is_empty() {
            let _ = self.shared.spool(&rest, true);
        }
        while Instant::now() < deadline && self.shared.spool.pending() {
            if !self.may_try() {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            self.replay(1);
        }
    }
}
