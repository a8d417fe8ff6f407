//! Real receivers on loopback for the event delivery tests: an HTTP server that can refuse
//! connections, answer 5xx or accept and never answer; a syslog TCP listener that can go
//! down and come back; and a JSON Lines file that can become unwritable. Each records the
//! event ids it received, in arrival order.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How the HTTP receiver treats the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// 200 and the events recorded.
    Up,
    /// No listener: connections are refused.
    Refuse,
    /// 503 without recording.
    Error5xx,
    /// Accepts, reads the request, never answers.
    Hang,
}

/// A receiver whose ids can be read and whose outage can be switched.
pub(crate) trait Receiver: Send + Sync {
    /// Every event id received, duplicates included, in arrival order.
    fn ids(&self) -> Vec<String>;
    /// Switches the outage on (in its natural failure mode) or off.
    fn set_down(&self, down: bool);
}

struct Shared {
    mode: Mutex<Mode>,
    ids: Mutex<Vec<String>>,
    /// HTTP only: the events themselves.
    events: Mutex<Vec<serde_json::Value>>,
    requests: AtomicUsize,
    stop: AtomicBool,
}

/// An HTTP/1.1 server taking JSON arrays of events.
pub(crate) struct HttpReceiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn bind(addr: SocketAddr) -> TcpListener {
    // The port must come back after an outage: retry while the old socket lingers.
    for _ in 0..200 {
        if let Ok(l) = TcpListener::bind(addr) {
            l.set_nonblocking(true).unwrap();
            return l;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("cannot bind {addr} again");
}

/// The request's head (lower-cased) and body.
fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((head, buf[head_end..head_end + len].to_vec()))
}

/// The events of a body: a JSON array, or Splunk HEC objects (`{"event": {...}}`).
fn body_events(body: &[u8], hec: bool) -> Vec<serde_json::Value> {
    if hec {
        serde_json::Deserializer::from_slice(body)
            .into_iter::<serde_json::Value>()
            .map(|o| o.unwrap()["event"].clone())
            .collect()
    } else {
        serde_json::from_slice(body).unwrap()
    }
}

impl HttpReceiver {
    /// Starts on a free port; `hec`: bodies are Splunk HEC and need `Authorization: Splunk
    /// test-token` (else 401).
    pub(crate) fn start(hec: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Up),
            ids: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            requests: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            let mut listener = Some(listener);
            let mut hanging: Vec<TcpStream> = Vec::new();
            while !s.stop.load(Ordering::SeqCst) {
                let mode = *s.mode.lock().unwrap();
                if mode == Mode::Refuse {
                    listener = None;
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                if mode != Mode::Hang {
                    hanging.clear();
                }
                let l = listener.get_or_insert_with(|| bind(addr));
                match l.accept() {
                    Ok((mut stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let Some((head, body)) = read_request(&mut stream) else {
                            continue;
                        };
                        s.requests.fetch_add(1, Ordering::SeqCst);
                        if hec && !head.contains("\r\nauthorization: splunk test-token\r\n") {
                            let _ = stream.write_all(
                                b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                            );
                            continue;
                        }
                        match *s.mode.lock().unwrap() {
                            Mode::Up => {
                                let events = body_events(&body, hec);
                                s.ids.lock().unwrap().extend(
                                    events.iter().map(|e| e["id"].as_str().unwrap().to_string()),
                                );
                                s.events.lock().unwrap().extend(events);
                                let _ = stream.write_all(
                                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                                );
                            }
                            Mode::Hang => hanging.push(stream),
                            _ => {
                                let _ = stream.write_all(
                                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                                );
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => {}
                }
            }
        });
        HttpReceiver {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/events", self.addr)
    }

    pub(crate) fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Every event received (JSON).
    pub(crate) fn events(&self) -> Vec<serde_json::Value> {
        self.shared.events.lock().unwrap().clone()
    }

    /// Requests answered or refused so far (not counting refused connections).
    pub(crate) fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

impl Receiver for HttpReceiver {
    fn ids(&self) -> Vec<String> {
        self.shared.ids.lock().unwrap().clone()
    }
    fn set_down(&self, down: bool) {
        self.set_mode(if down { Mode::Refuse } else { Mode::Up });
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A syslog TCP listener reading octet-counted RFC 5424 messages.
pub(crate) struct SyslogReceiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn sd_id(message: &str) -> Option<String> {
    let start = message.find(" id=\"")? + 5;
    Some(message[start..start + 32].to_string())
}

impl SyslogReceiver {
    pub(crate) fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Up),
            ids: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            requests: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            let mut listener = Some(listener);
            let mut conns: Vec<(TcpStream, Vec<u8>)> = Vec::new();
            let mut chunk = [0u8; 65536];
            while !s.stop.load(Ordering::SeqCst) {
                if *s.mode.lock().unwrap() != Mode::Up {
                    // Down: no listener, and open connections are closed.
                    listener = None;
                    conns.clear();
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let l = listener.get_or_insert_with(|| bind(addr));
                if let Ok((stream, _)) = l.accept() {
                    stream.set_nonblocking(true).unwrap();
                    conns.push((stream, Vec::new()));
                }
                let mut idle = true;
                conns.retain_mut(|(stream, buf)| match stream.read(&mut chunk) {
                    Ok(0) => false,
                    Ok(n) => {
                        idle = false;
                        buf.extend_from_slice(&chunk[..n]);
                        let (messages, used) = cmk::audit::split_octet_counted(buf);
                        buf.drain(..used);
                        s.ids
                            .lock()
                            .unwrap()
                            .extend(messages.iter().filter_map(|m| sd_id(m)));
                        true
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => true,
                    Err(_) => false,
                });
                if idle {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        SyslogReceiver {
            addr,
            shared,
            thread: Some(thread),
        }
    }
}

impl Receiver for SyslogReceiver {
    fn ids(&self) -> Vec<String> {
        self.shared.ids.lock().unwrap().clone()
    }
    fn set_down(&self, down: bool) {
        *self.shared.mode.lock().unwrap() = if down { Mode::Refuse } else { Mode::Up };
    }
}

impl Drop for SyslogReceiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A JSON Lines file (and its rotated siblings) as the receiver; down means a directory
/// stands where the file should be, so opening it fails.
pub(crate) struct FileReceiver {
    pub path: PathBuf,
}

impl FileReceiver {
    pub(crate) fn new(dir: &Path) -> Self {
        FileReceiver {
            path: dir.join("events.jsonl"),
        }
    }
}

impl Receiver for FileReceiver {
    fn ids(&self) -> Vec<String> {
        // Oldest rotated file first.
        let mut files: Vec<PathBuf> = (1..100)
            .rev()
            .map(|n| PathBuf::from(format!("{}.{n}", self.path.display())))
            .filter(|p| p.is_file())
            .collect();
        if self.path.is_file() {
            files.push(self.path.clone());
        }
        let mut ids = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            // The writer may be mid-batch: only lines it has ended count.
            let ended = text.rfind('\n').map_or("", |end| &text[..end]);
            for line in ended.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                ids.push(v["id"].as_str().unwrap().to_string());
            }
        }
        ids
    }
    fn set_down(&self, down: bool) {
        if down {
            if self.path.is_file() {
                // Keep what arrived: the file moves aside (as `.91`, `.92`...), where `ids`
                // still reads it.
                let aside = (91..100)
                    .map(|n| format!("{}.{n}", self.path.display()))
                    .find(|p| !Path::new(p).exists())
                    .unwrap();
                std::fs::rename(&self.path, aside).unwrap();
            }
            std::fs::create_dir_all(&self.path).unwrap();
        } else {
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}
