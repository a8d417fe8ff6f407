//! Security events delivered to real receivers on loopback (docs/EVENTS.md): every
//! connection-based transport (JSON Lines file with rotation, HTTP Splunk-style and generic
//! batches, syslog over TCP) passes the same three tests (normal delivery of 10,000 events
//! exactly once; an outage in the middle third and recovery, nothing missing; SIGKILL with a
//! non-empty spool, delivered by the next process), and HTTP fails in each of three ways
//! (refused, 5xx, accepts and never answers). cmk's own events: `tests/events_cmk.rs`.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cmk::audit::http::{HttpBatches, HttpFormat};
use cmk::audit::{JsonLinesFile, Pipeline, PipelineConfig, SyslogTcp, Transport};
use cmk::event::{EventName, EventSink, Outcome, SecurityEvent};
use cmk::{RequestContext, TenantId};
use common::receivers::{FileReceiver, HttpReceiver, Mode, Receiver, SyslogReceiver};

const N: usize = 10_000;
const TIMEOUT: Duration = Duration::from_millis(300);

fn config(spool: &Path) -> PipelineConfig {
    PipelineConfig::new(spool)
        .with_retry(Duration::from_millis(20), Duration::from_millis(200))
        .with_flush_interval(Duration::from_millis(20))
}

fn events(n: usize, tenant: &str) -> Vec<SecurityEvent> {
    let ctx = RequestContext::new(TenantId::new(tenant).unwrap()).with_request_id("bulk");
    (0..n)
        .map(|i| {
            SecurityEvent::new(&ctx, EventName::DataDecrypt, Outcome::Success)
                .with_table("patients")
                .with_record(Some(i.to_string()))
        })
        .collect()
}

fn ids(events: &[SecurityEvent]) -> Vec<String> {
    events.iter().map(|e| e.id.to_string()).collect()
}

/// Waits until `receiver` holds every id of `want` (or fails after 60 s, naming how many
/// are missing).
fn wait_for_all(receiver: &dyn Receiver, want: &[String]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = receiver.ids();
        let have: HashSet<&String> = got.iter().collect();
        let missing = want.iter().filter(|id| !have.contains(id)).count();
        if missing == 0 {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} events never arrived",
            want.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Which transport a test (or a child process) uses.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Jsonl,
    HttpGeneric,
    HttpHec,
    SyslogTcp,
}

impl Kind {
    fn parse(s: &str) -> Kind {
        match s {
            "jsonl" => Kind::Jsonl,
            "http" => Kind::HttpGeneric,
            "hec" => Kind::HttpHec,
            _ => Kind::SyslogTcp,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Kind::Jsonl => "jsonl",
            Kind::HttpGeneric => "http",
            Kind::HttpHec => "hec",
            Kind::SyslogTcp => "syslog",
        }
    }
}

/// A transport of `kind` to `target` (a file path, an HTTP URL, or a host:port).
fn transport(kind: Kind, target: &str) -> Box<dyn FnOnce(PipelineConfig) -> Pipeline> {
    let target = target.to_string();
    fn start(config: PipelineConfig, t: impl Transport) -> Pipeline {
        Pipeline::start(config, t).unwrap()
    }
    match kind {
        // Small files, so rotation happens during the test.
        Kind::Jsonl => Box::new(move |c| start(c, JsonLinesFile::new(target, 512 * 1024, 20))),
        Kind::HttpGeneric => {
            Box::new(move |c| start(c, HttpBatches::new(target, HttpFormat::JsonArray, TIMEOUT)))
        }
        Kind::HttpHec => Box::new(move |c| {
            start(
                c,
                HttpBatches::new(
                    target,
                    HttpFormat::SplunkHec {
                        token: "test-token".into(),
                    },
                    TIMEOUT,
                ),
            )
        }),
        Kind::SyslogTcp => Box::new(move |c| start(c, SyslogTcp::new(target, TIMEOUT).unwrap())),
    }
}

/// A receiver of `kind` and the target string its transport needs.
fn receiver(kind: Kind, dir: &Path) -> (Box<dyn Receiver>, String) {
    match kind {
        Kind::Jsonl => {
            let r = FileReceiver::new(dir);
            let target = r.path.display().to_string();
            (Box::new(r), target)
        }
        Kind::HttpGeneric | Kind::HttpHec => {
            let r = HttpReceiver::start(matches!(kind, Kind::HttpHec));
            let target = r.url();
            (Box::new(r), target)
        }
        Kind::SyslogTcp => {
            let r = SyslogReceiver::start();
            let target = r.addr.to_string();
            (Box::new(r), target)
        }
    }
}

fn normal_delivery_is_exactly_once(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let (rx, target) = receiver(kind, dir.path());
    let pipeline = transport(kind, &target)(config(&dir.path().join("spool")));
    let sent = events(N, "acme");
    for e in &sent {
        pipeline.emit(e.clone()).unwrap();
    }
    let want = ids(&sent);
    let got = wait_for_all(rx.as_ref(), &want);
    assert_eq!(got.len(), N, "{kind:?}: each event exactly once");
    assert_eq!(got, want, "{kind:?}: in order");
}

fn an_outage_loses_nothing(kind: Kind, down: impl Fn(&dyn Receiver, bool)) {
    let dir = tempfile::tempdir().unwrap();
    let (rx, target) = receiver(kind, dir.path());
    let pipeline = transport(kind, &target)(config(&dir.path().join("spool")));
    let sent = events(N, "acme");
    let third = N / 3;
    for e in &sent[..third] {
        pipeline.emit(e.clone()).unwrap();
    }
    wait_for_all(rx.as_ref(), &ids(&sent[..third]));
    down(rx.as_ref(), true);
    for e in &sent[third..2 * third] {
        pipeline.emit(e.clone()).unwrap();
    }
    // Let the pipeline meet the outage (several failed attempts) before recovery.
    let failures = || {
        pipeline
            .stats()
            .failures
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while failures() < 3 {
        assert!(
            Instant::now() < deadline,
            "{kind:?}: the outage was never met"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    down(rx.as_ref(), false);
    for e in &sent[2 * third..] {
        pipeline.emit(e.clone()).unwrap();
    }
    let got = wait_for_all(rx.as_ref(), &ids(&sent));
    // Duplicates only with the same id: every id received is one that was sent.
    let sent_ids: HashSet<String> = ids(&sent).into_iter().collect();
    assert!(
        got.iter().all(|id| sent_ids.contains(id)),
        "{kind:?}: a foreign id"
    );
    assert!(
        pipeline
            .stats()
            .spooled
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
}

/// The parent half of the SIGKILL test: a child process emits into a pipeline whose
/// receiver is down, waits until everything is spooled, says so, and is killed with SIGKILL;
/// a new pipeline on the same spool delivers it all once the receiver is up.
fn sigkill_with_a_spool_is_delivered_by_the_next_process(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let (rx, target) = receiver(kind, dir.path());
    rx.set_down(true);
    let spool = dir.path().join("spool");
    let ids_file = dir.path().join("ids");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_spools_and_waits",
            "--nocapture",
        ])
        .env("CMK_CHILD_KIND", kind.as_str())
        .env("CMK_CHILD_TARGET", &target)
        .env("CMK_CHILD_SPOOL", &spool)
        .env("CMK_CHILD_IDS", &ids_file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines
        .find_map(|l| l.ok().filter(|l| l.starts_with("SPOOLED")))
        .expect("the child spools its events");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let want: Vec<String> = std::fs::read_to_string(&ids_file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ready, format!("SPOOLED {}", want.len()));
    assert!(rx.ids().is_empty(), "nothing was delivered before the kill");
    rx.set_down(false);
    let _next = transport(kind, &target)(config(&spool));
    let got = wait_for_all(rx.as_ref(), &want);
    assert_eq!(got, want, "{kind:?}: the spool in order");
}

#[test]
#[ignore = "the child process of the SIGKILL tests; run by them"]
fn child_spools_and_waits() {
    let var = |k: &str| std::env::var(k).unwrap();
    let kind = Kind::parse(&var("CMK_CHILD_KIND"));
    let pipeline =
        transport(kind, &var("CMK_CHILD_TARGET"))(config(Path::new(&var("CMK_CHILD_SPOOL"))));
    let sent = events(1_000, "acme");
    std::fs::write(var("CMK_CHILD_IDS"), ids(&sent).join("\n")).unwrap();
    for e in &sent {
        pipeline.emit(e.clone()).unwrap();
    }
    let spooled = || {
        pipeline
            .stats()
            .spooled
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    while spooled() < sent.len() as u64 {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("SPOOLED {}", sent.len());
    std::thread::sleep(Duration::from_secs(600));
}

macro_rules! transport_tests {
    ($name:ident, $kind:expr, $down:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn normal_delivery() {
                normal_delivery_is_exactly_once($kind);
            }

            #[test]
            fn outage_and_recovery() {
                an_outage_loses_nothing($kind, $down);
            }

            #[test]
            fn sigkill_with_a_non_empty_spool() {
                sigkill_with_a_spool_is_delivered_by_the_next_process($kind);
            }
        }
    };
}

transport_tests!(jsonl_file, Kind::Jsonl, |r, down| r.set_down(down));
transport_tests!(http_generic, Kind::HttpGeneric, |r, down| r.set_down(down));
transport_tests!(http_hec, Kind::HttpHec, |r, down| r.set_down(down));
transport_tests!(syslog_tcp, Kind::SyslogTcp, |r, down| r.set_down(down));

/// The HTTP receiver fails in each of its three ways for the middle third.
#[test]
fn http_outages_of_each_kind_lose_nothing() {
    for mode in [Mode::Refuse, Mode::Error5xx, Mode::Hang] {
        let dir = tempfile::tempdir().unwrap();
        let rx = HttpReceiver::start(false);
        let pipeline = transport(Kind::HttpGeneric, &rx.url())(config(&dir.path().join("spool")));
        let sent = events(N, "acme");
        let third = N / 3;
        for e in &sent[..third] {
            pipeline.emit(e.clone()).unwrap();
        }
        wait_for_all(&rx, &ids(&sent[..third]));
        rx.set_mode(mode);
        for e in &sent[third..2 * third] {
            pipeline.emit(e.clone()).unwrap();
        }
        let failures = || {
            pipeline
                .stats()
                .failures
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while failures() < 3 {
            assert!(
                Instant::now() < deadline,
                "{mode:?}: the outage was never met"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        if mode != Mode::Refuse {
            assert!(
                rx.requests() > 0,
                "{mode:?}: the receiver saw the failing requests"
            );
        }
        rx.set_mode(Mode::Up);
        for e in &sent[2 * third..] {
            pipeline.emit(e.clone()).unwrap();
        }
        let got = wait_for_all(&rx, &ids(&sent));
        let sent_ids: HashSet<String> = ids(&sent).into_iter().collect();
        assert!(got.iter().all(|id| sent_ids.contains(id)), "{mode:?}");
    }
}

#[test]
fn syslog_udp_delivers_on_loopback() {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let addr = socket.local_addr().unwrap();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (got, done) = (got.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let start = msg.find(" id=\"").unwrap() + 5;
                    got.lock().unwrap().push(msg[start..start + 32].to_string());
                }
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let pipeline = Pipeline::start(
        config(&dir.path().join("spool")),
        cmk::audit::SyslogUdp::new(addr).unwrap(),
    )
    .unwrap();
    // Paced: each chunk is sent once the receiver holds the previous one, so the receiving
    // socket's buffer never overflows however busy the machine is (UDP drops silently, by
    // design: docs/EVENTS.md). Anything missing after that is the pipeline's loss.
    let sent = events(1_000, "acme");
    let mut expected = 0;
    for chunk in sent.chunks(100) {
        for e in chunk {
            pipeline.emit(e.clone()).unwrap();
        }
        assert!(pipeline.flush(Duration::from_secs(5)));
        expected += chunk.len();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while got.lock().unwrap().len() < expected && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    std::thread::sleep(Duration::from_millis(300)); // a duplicate would arrive by now
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    reader.join().unwrap();
    assert_eq!(*got.lock().unwrap(), ids(&sent));
}

#[test]
fn shutdown_spools_what_it_cannot_deliver_and_the_next_start_delivers_it() {
    let dir = tempfile::tempdir().unwrap();
    let rx = HttpReceiver::start(false);
    rx.set_mode(Mode::Refuse);
    let spool = dir.path().join("spool");
    let sent = events(500, "acme");
    {
        let pipeline = transport(Kind::HttpGeneric, &rx.url())(config(&spool));
        for e in &sent {
            pipeline.emit(e.clone()).unwrap();
        }
        pipeline.shutdown(Duration::from_millis(100));
        assert!(pipeline.spooled_bytes() > 0);
    }
    rx.set_mode(Mode::Up);
    let _next = transport(Kind::HttpGeneric, &rx.url())(config(&spool));
    let got = wait_for_all(&rx, &ids(&sent));
    assert_eq!(got, ids(&sent));
}
