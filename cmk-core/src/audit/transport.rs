//! Transports: where a [`super::Pipeline`]'s worker thread delivers batches of events. A
//! transport blocks (with timeouts of its own); an `Err` means the batch was not taken and is
//! spooled and retried, so a transport may deliver a batch more than once but never
//! reports a batch it did not deliver as delivered.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use super::format::{json_line, syslog_5424};
use crate::audit::event::SecurityEvent;

/// Why a batch was not delivered.
#[derive(Debug, thiserror::Error)]
#[error("{transport}: {reason}")]
#[non_exhaustive]
pub struct DeliveryError {
    /// The transport.
    pub transport: String,
    /// What went wrong (connection refused, a status code, a timeout...).
    pub reason: String,
}

impl DeliveryError {
    /// A failure of `transport`.
    pub fn new(transport: &str, reason: impl std::fmt::Display) -> Self {
        DeliveryError {
            transport: transport.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// A delivery target, driven by one worker thread.
pub trait Transport: Send + 'static {
    /// A short name for errors and logs.
    fn name(&self) -> &str;
    /// Delivers a batch, all or nothing as far as the caller knows.
    ///
    /// # Errors
    /// Implementations return a [`DeliveryError`] when the batch was not taken, or may not have
    /// been (a file write or `fsync` failed, a connection was refused or closed, a send timed
    /// out, an HTTP receiver answered with an error status). The pipeline then spools and
    /// retries it.
    fn deliver(&mut self, batch: &[SecurityEvent]) -> Result<(), DeliveryError>;
}

/// JSON Lines in a file, with size-based rotation: when the file would pass `max_bytes`,
/// `events.jsonl` becomes `events.jsonl.1` (and `.1` becomes `.2`, up to `keep`), and a new
/// file starts. Each batch is written and `fsync`ed before it counts as delivered. A file
/// moved away by another tool is noticed at the next batch, which goes to a new file at the
/// path. One writer per file: two pipelines appending to one path could interleave batches
/// and rotate each other's files (give each process its own file, or a syslog or HTTP sink).
#[derive(Debug)]
pub struct JsonLinesFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<(File, u64)>,
    name: String,
}

impl JsonLinesFile {
    /// Events go to `path`, rotated at `max_bytes`, keeping `keep` rotated files.
    pub fn new(path: impl Into<PathBuf>, max_bytes: u64, keep: u32) -> Self {
        let path = path.into();
        JsonLinesFile {
            name: format!("jsonl:{}", path.display()),
            path,
            max_bytes,
            keep: keep.max(1),
            file: None,
        }
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        p.into()
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let _ = fs::remove_file(self.rotated(self.keep));
        for n in (1..self.keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        fs::rename(&self.path, self.rotated(1))
    }

    /// Whether the open file is still the one at `path` (an external tool such as logrotate
    /// may have moved it away): checked once per batch.
    fn still_current(&self) -> bool {
        let Some((file, _)) = &self.file else {
            return false;
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            match (fs::metadata(&self.path), file.metadata()) {
                (Ok(at_path), Ok(open)) => {
                    at_path.dev() == open.dev() && at_path.ino() == open.ino()
                }
                _ => false,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = file;
            self.path.is_file()
        }
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if !self.still_current() {
            self.file = None;
        }
        if self.file.is_none() {
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(&self.path)?;
            let len = terminate_torn_line(&mut file)?;
            self.file = Some((file, len));
        }
        let size = self.file.as_ref().map_or(0, |(_, len)| *len);
        if size > 0 && size + bytes.len() as u64 > self.max_bytes {
            self.rotate()?;
            return self.write(bytes);
        }
        let Some((file, len)) = self.file.as_mut() else {
            return Err(io::Error::other("the events file is not open"));
        };
        if let Err(e) = file.write_all(bytes).and_then(|()| file.sync_data()) {
            // Reopen next time (and take back a partial line).
            let _ = file.set_len(*len);
            self.file = None;
            return Err(e);
        }
        *len += bytes.len() as u64;
        Ok(())
    }
}

/// Ends a line that a killed writer left unterminated, so that it does not run into the next
/// event (its event is still in the spool and is delivered again, whole). The fragment is
/// kept, not cut: a tool tailing the file may have read it, and the audit file loses no
/// byte. Returns the file's length.
fn terminate_torn_line(file: &mut File) -> io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(len);
    }
    file.write_all(b"\n")?;
    file.sync_data()?;
    Ok(len + 1)
}

impl Transport for JsonLinesFile {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver(&mut self, batch: &[SecurityEvent]) -> Result<(), DeliveryError> {
        let mut buf = Vec::with_capacity(batch.len() * 512);
        for e in batch {
            json_line(e, &mut buf);
        }
        self.write(&buf)
            .map_err(|e| DeliveryError::new(&self.name, e))
    }
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// RFC 5424 syslog over UDP (RFC 5426), one datagram per event. UDP has no acknowledgement:
/// a datagram the network drops is lost without an error; use TCP where that matters.
#[derive(Debug)]
pub struct SyslogUdp {
    socket: UdpSocket,
    to: SocketAddr,
    hostname: String,
    name: String,
}

impl SyslogUdp {
    /// Sends to `to` (`host:port`).
    ///
    /// # Errors
    /// An [`io::Error`] when `to` does not resolve to an address or no local UDP socket can be
    /// bound.
    pub fn new(to: impl ToSocketAddrs) -> io::Result<Self> {
        let to = to
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other("no address"))?;
        let bind: SocketAddr = if to.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        Ok(SyslogUdp {
            socket: UdpSocket::bind(bind)?,
            name: format!("syslog+udp://{to}"),
            to,
            hostname: hostname(),
        })
    }
}

impl Transport for SyslogUdp {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver(&mut self, batch: &[SecurityEvent]) -> Result<(), DeliveryError> {
        let pid = std::process::id();
        for e in batch {
            let msg = syslog_5424(e, &self.hostname, pid);
            self.socket
                .send_to(msg.as_bytes(), self.to)
                .map_err(|err| DeliveryError::new(&self.name, err))?;
        }
        Ok(())
    }
}

/// RFC 5424 syslog over TCP with octet-counting framing (RFC 6587 §3.4.1), one connection
/// kept open and re-made after a failure. After writing a batch it checks that the receiver
/// has not closed the connection, so a batch written into a dead connection is sent again;
/// a receiver that crashes after reading a batch but before processing it loses it (plain
/// syslog has no acknowledgements).
#[derive(Debug)]
pub struct SyslogTcp {
    to: SocketAddr,
    timeout: Duration,
    stream: Option<TcpStream>,
    hostname: String,
    name: String,
}

impl SyslogTcp {
    /// Connects to `to` (`host:port`) when first needed, with `timeout` for connecting and
    /// writing.
    ///
    /// # Errors
    /// An [`io::Error`] when `to` does not resolve to an address. Nothing is connected yet, so
    /// an unreachable receiver shows only at the first delivery.
    pub fn new(to: impl ToSocketAddrs, timeout: Duration) -> io::Result<Self> {
        let to = to
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other("no address"))?;
        Ok(SyslogTcp {
            name: format!("syslog+tcp://{to}"),
            to,
            timeout,
            stream: None,
            hostname: hostname(),
        })
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.to, self.timeout)?;
            s.set_write_timeout(Some(self.timeout))?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(io::Error::other("not connected"));
        };
        stream.write_all(bytes)?;
        stream.flush()?;
        // Has the receiver closed the connection? (A closed connection reads as end of
        // stream at once; an open one would block, so peek without blocking.)
        stream.set_nonblocking(true)?;
        let mut probe = [0u8; 1];
        let closed = match stream.peek(&mut probe) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(_) => true,
        };
        stream.set_nonblocking(false)?;
        if closed {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the receiver closed the connection",
            ));
        }
        Ok(())
    }
}

impl Transport for SyslogTcp {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver(&mut self, batch: &[SecurityEvent]) -> Result<(), DeliveryError> {
        let pid = std::process::id();
        let mut buf = Vec::with_capacity(batch.len() * 600);
        for e in batch {
            let msg = syslog_5424(e, &self.hostname, pid);
            buf.extend_from_slice(format!("{} ", msg.len()).as_bytes());
            buf.extend_from_slice(msg.as_bytes());
        }
        self.send(&buf).map_err(|e| {
            self.stream = None;
            DeliveryError::new(&self.name, e)
        })
    }
}

/// Splits octet-counted syslog frames (`LEN SP MSG`, the framing of [`SyslogTcp`]) off the
/// front of `buf`: the complete messages and how many bytes they took. For receivers (tests,
/// tools) that read a stream piece by piece.
pub fn split_octet_counted(buf: &[u8]) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut used = 0;
    let mut rest = buf;
    while let Some(space) = rest.iter().position(|&b| b == b' ') {
        let Some(len) = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        let Some(body) = rest.get(space + 1..space + 1 + len) else {
            break;
        };
        out.push(String::from_utf8_lossy(body).into_owned());
        used += space + 1 + len;
        rest = &rest[space + 1 + len..];
    }
    (out, used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{EventName, Outcome};
    use crate::audit::format::parse_json_line;
    use crate::tenant::context::{RequestContext, TenantId};

    fn batch(n: usize) -> Vec<SecurityEvent> {
        let ctx = RequestContext::new(TenantId::new("acme").unwrap());
        (0..n)
            .map(|_| SecurityEvent::new(&ctx, EventName::DataDecrypt, Outcome::Success))
            .collect()
    }

    #[test]
    fn a_torn_last_line_is_ended_and_kept_not_merged_with_the_next_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut whole = Vec::new();
        json_line(&batch(1)[0], &mut whole);
        let fragment = &whole[..whole.len() / 2];
        let mut before = whole.clone();
        before.extend_from_slice(fragment);
        fs::write(&path, &before).unwrap();

        let sent = batch(2);
        let mut file = JsonLinesFile::new(&path, 1 << 20, 2);
        file.deliver(&sent).unwrap();

        let text = fs::read(&path).unwrap();
        assert!(text.starts_with(&before), "no byte of the file is lost");
        let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
        assert_eq!(lines.len(), 5, "whole, fragment, two events, and the end");
        assert_eq!(lines[1], fragment);
        assert!(parse_json_line(lines[1]).is_none());
        for (line, event) in lines[2..4].iter().zip(&sent) {
            assert_eq!(parse_json_line(line).as_ref(), Some(event));
        }
        assert!(lines[4].is_empty());

        // A file that ends whole is appended to as it is.
        let mut again = JsonLinesFile::new(&path, 1 << 20, 2);
        again.deliver(&batch(1)).unwrap();
        let after = fs::read(&path).unwrap();
        assert_eq!(after.split(|&b| b == b'\n').count(), 6);
    }
}
