//! One KMIP request and its response over mutual TLS (rustls), within a deadline.
//!
//! Each exchange opens a connection, writes the request, reads the 8-byte TTLV header of the
//! response (its bytes 4..8 are the body's length), then the body. The TLS connection is
//! driven here one system call at a time, each under what is left of the operation's
//! deadline, so a server that accepts and never answers, or answers a byte at a time, costs
//! at most that deadline (rustls' own stream adapter would give every call the whole timeout
//! again). Responses larger than the configured cap are refused before they are read.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{AlertDescription, ClientConfig, ClientConnection};
use zeroize::Zeroizing;

use super::ttlv::tag;
use crate::kms::{KmsError, KmsErrorKind};

fn unavailable(what: impl std::fmt::Display) -> KmsError {
    KmsError::new(KmsErrorKind::Unavailable, format!("KMIP: {what}"))
}

/// A TLS failure: the server rejecting this client's certificate is the tenant's refusal
/// (*denied*); anything else (a server certificate that does not verify, a broken
/// handshake) keeps the KMS out of reach (*unavailable*).
fn tls_failure(e: rustls::Error) -> KmsError {
    match e {
        rustls::Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired,
        ) => KmsError::new(
            KmsErrorKind::Denied,
            format!("KMIP: the server refused this client's certificate ({e})"),
        ),
        e => unavailable(format!("TLS: {e}")),
    }
}

/// Where and how to reach one KMIP server.
pub(super) struct Transport {
    pub(super) address: String,
    pub(super) server_name: ServerName<'static>,
    pub(super) tls: Arc<ClientConfig>,
    pub(super) connect_timeout: Duration,
    pub(super) operation_timeout: Duration,
    pub(super) max_response_bytes: usize,
}

/// One connection and the deadline of its exchange.
struct Session {
    conn: ClientConnection,
    sock: TcpStream,
    deadline: Instant,
}

impl Session {
    fn remaining(&self) -> Result<Duration, KmsError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(unavailable("timed out"))
        } else {
            Ok(left)
        }
    }

    /// One system call: sends pending TLS records, or receives and processes some.
    fn step(&mut self) -> Result<(), KmsError> {
        let left = self.remaining()?;
        let timed_out = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                unavailable("timed out")
            }
            _ => unavailable(format!("connection: {e}")),
        };
        if self.conn.wants_write() {
            self.sock
                .set_write_timeout(Some(left))
                .map_err(unavailable)?;
            self.conn.write_tls(&mut self.sock).map_err(timed_out)?;
            return Ok(());
        }
        self.sock
            .set_read_timeout(Some(left))
            .map_err(unavailable)?;
        match self.conn.read_tls(&mut self.sock) {
            Ok(0) => Err(unavailable("the server closed the connection")),
            Ok(_) => self
                .conn
                .process_new_packets()
                .map(|_| ())
                .map_err(tls_failure),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(timed_out(e)),
        }
    }

    /// Sends `request` (the handshake first).
    fn send(&mut self, request: &[u8]) -> Result<(), KmsError> {
        self.conn
            .writer()
            .write_all(request)
            .map_err(|e| unavailable(format!("TLS: {e}")))?;
        while self.conn.is_handshaking() || self.conn.wants_write() {
            self.step()?;
        }
        Ok(())
    }

    /// Fills `buf` with response bytes.
    fn receive(&mut self, buf: &mut [u8]) -> Result<(), KmsError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.conn.reader().read(&mut buf[filled..]) {
                Ok(0) => return Err(unavailable("the server closed the connection")),
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.step()?,
                Err(e) => return Err(unavailable(format!("receiving: {e}"))),
            }
        }
        Ok(())
    }
}

impl Transport {
    /// Sends `request` (an encoded request message) and returns the encoded response message.
    pub(super) fn exchange(&self, request: &[u8]) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let deadline = Instant::now() + self.operation_timeout;
        let sock = self.connect(deadline)?;
        let _ = sock.set_nodelay(true);
        let conn = ClientConnection::new(Arc::clone(&self.tls), self.server_name.clone())
            .map_err(|e| unavailable(format!("TLS: {e}")))?;
        let mut session = Session {
            conn,
            sock,
            deadline,
        };
        session.send(request)?;
        let mut header = [0u8; 8];
        session.receive(&mut header)?;
        let kind_and_tag = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        if kind_and_tag != (tag::RESPONSE_MESSAGE << 8 | 0x01) {
            return Err(unavailable(
                "the server did not answer with a KMIP response",
            ));
        }
        let len = usize::try_from(u32::from_be_bytes([
            header[4], header[5], header[6], header[7],
        ]))
        .unwrap_or(usize::MAX);
        if len > self.max_response_bytes {
            return Err(unavailable(format!(
                "a response of {len} bytes exceeds the cap of {}",
                self.max_response_bytes
            )));
        }
        let mut message = Zeroizing::new(vec![0u8; 8 + len]);
        message[..8].copy_from_slice(&header);
        session.receive(&mut message[8..])?;
        // A polite close, best effort: the response is complete whatever happens next.
        session.conn.send_close_notify();
        let _ = session.step();
        Ok(message)
    }

    /// Connects to the first address of the server that answers, within the deadline.
    fn connect(&self, deadline: Instant) -> Result<TcpStream, KmsError> {
        // Name resolution has no timeout of its own; configure an address or a name the
        // host resolves locally (a hosts file entry) where that matters.
        let addrs: Vec<SocketAddr> = self
            .address
            .to_socket_addrs()
            .map_err(|e| unavailable(format!("resolving {}: {e}", self.address)))?
            .collect();
        let mut last = unavailable(format!("{} resolves to no address", self.address));
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(unavailable("timed out"));
            }
            match TcpStream::connect_timeout(&addr, self.connect_timeout.min(left)) {
                Ok(sock) => return Ok(sock),
                Err(e) => last = unavailable(format!("connecting to {addr}: {e}")),
            }
        }
        Err(last)
    }
}
