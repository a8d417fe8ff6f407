//! One KMIP request and its response over mutual TLS (rustls), within a deadline.
//!
//! Each exchange opens a connection, writes the request, reads the 8-byte TTLV header of the
//! response (its bytes 4..8 are the body's length), then the body; every read and write runs
//! under what is left of the operation's deadline, so a server that accepts and never
//! answers (or answers a byte at a time) costs at most that deadline. Responses larger than
//! the configured cap are refused before they are read.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use zeroize::Zeroizing;

use super::ttlv::tag;
use crate::kms::{KmsError, KmsErrorKind};

fn unavailable(what: impl std::fmt::Display) -> KmsError {
    KmsError::new(KmsErrorKind::Unavailable, format!("KMIP: {what}"))
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

impl Transport {
    /// Sends `request` (an encoded request message) and returns the encoded response message.
    pub(super) fn exchange(&self, request: &[u8]) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let deadline = Instant::now() + self.operation_timeout;
        let addr = self.resolve()?;
        let tcp =
            TcpStream::connect_timeout(&addr, self.connect_timeout.min(self.operation_timeout))
                .map_err(|e| unavailable(format!("connecting to {}: {e}", self.address)))?;
        let _ = tcp.set_nodelay(true);
        let conn = ClientConnection::new(Arc::clone(&self.tls), self.server_name.clone())
            .map_err(|e| unavailable(format!("TLS: {e}")))?;
        let mut tls = StreamOwned::new(conn, tcp);
        // Writing runs the TLS handshake, which reads too: both directions get a deadline.
        let left = remaining(deadline)?;
        tls.sock
            .set_write_timeout(Some(left))
            .and_then(|()| tls.sock.set_read_timeout(Some(left)))
            .map_err(unavailable)?;
        tls.write_all(request)
            .and_then(|()| tls.flush())
            .map_err(|e| unavailable(format!("sending to {}: {e}", self.address)))?;
        let mut header = [0u8; 8];
        read_full(&mut tls, &mut header, deadline)?;
        let kind_and_tag = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        if kind_and_tag != (tag::RESPONSE_MESSAGE << 8 | 0x01) {
            return Err(KmsError::new(
                KmsErrorKind::Invalid,
                "KMIP: the server did not answer with a response message",
            ));
        }
        let len = usize::try_from(u32::from_be_bytes([
            header[4], header[5], header[6], header[7],
        ]))
        .unwrap_or(usize::MAX);
        if len > self.max_response_bytes {
            return Err(KmsError::new(
                KmsErrorKind::Invalid,
                format!(
                    "KMIP: response of {len} bytes exceeds the cap of {}",
                    self.max_response_bytes
                ),
            ));
        }
        let mut message = Zeroizing::new(vec![0u8; 8 + len]);
        message[..8].copy_from_slice(&header);
        read_full(&mut tls, &mut message[8..], deadline)?;
        // A polite close; the response is complete whatever the server does next.
        tls.conn.send_close_notify();
        let _ = tls.flush();
        Ok(message)
    }

    fn resolve(&self) -> Result<SocketAddr, KmsError> {
        self.address
            .to_socket_addrs()
            .map_err(|e| unavailable(format!("resolving {}: {e}", self.address)))?
            .next()
            .ok_or_else(|| unavailable(format!("{} resolves to no address", self.address)))
    }
}

fn remaining(deadline: Instant) -> Result<Duration, KmsError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(unavailable("timed out"))
    } else {
        Ok(left)
    }
}

/// Fills `buf`, each read bounded by what is left until `deadline`.
fn read_full(
    tls: &mut StreamOwned<ClientConnection, TcpStream>,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<(), KmsError> {
    let mut filled = 0;
    while filled < buf.len() {
        tls.sock
            .set_read_timeout(Some(remaining(deadline)?))
            .map_err(unavailable)?;
        match tls.read(&mut buf[filled..]) {
            Ok(0) => return Err(unavailable("the server closed the connection")),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(unavailable("timed out"));
            }
            Err(e) => return Err(unavailable(format!("receiving: {e}"))),
        }
    }
    Ok(())
}
