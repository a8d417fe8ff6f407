//! The scenario both web examples pass over real HTTP on loopback, with a plain HTTP/1.1
//! client (one request per connection).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

/// One response: status and body.
pub(crate) struct Reply {
    pub status: u16,
    pub body: String,
}

/// Sends one request with `headers` and `body`, reads the whole response.
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // Chunked bodies (axum streams JSON that way): keep the data lines only.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.split("\r\n")
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, line)| line)
            .collect()
    } else {
        body.to_string()
    };
    Reply { status, body }
}

const PLANTED_EMAIL: &str = "Planted-Web-Quokka@Example.com";
const PLANTED_BIO: &str = "Planted-Web-Bio-Tapir";

/// The scenario: users created and found by email, posts loaded with their authors through a
/// join, the request's context visible in the key scope, tenants kept apart, refusals with
/// their statuses, and no plaintext in the application's database.
pub(crate) fn scenario(addr: SocketAddr, dir: &Path) {
    let acme = [
        ("x-tenant", "acme"),
        ("x-user", "u-1"),
        ("x-request-id", "req-7"),
    ];
    let json = ("content-type", "application/json");
    let user = format!("{{\"id\":1,\"email\":\"{PLANTED_EMAIL}\",\"bio\":\"{PLANTED_BIO}\"}}");
    let r = request(addr, "POST", "/users", &[acme[0], acme[1], json], &user);
    assert_eq!(r.status, 201, "{}", r.body);

    // Found by email, case-folded by the blind index, decrypted for the response.
    let r = request(
        addr,
        "GET",
        "/users/by-email/planted-web-quokka@example.com",
        &acme,
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains(PLANTED_EMAIL) && r.body.contains(PLANTED_BIO),
        "{}",
        r.body
    );

    // A join loads the plaintext author next to each post.
    for title in ["first", "second"] {
        let r = request(addr, "POST", "/users/1/posts", &acme, title);
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = request(addr, "GET", "/users/1/posts", &acme, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body.matches(PLANTED_EMAIL).count(), 2, "{}", r.body);
    assert!(
        r.body.contains("first") && r.body.contains("second"),
        "{}",
        r.body
    );

    // Code deep in the request finds the request's own context in the key scope.
    let r = request(addr, "GET", "/whoami", &acme, "");
    assert_eq!((r.status, r.body.as_str()), (200, "acme user:u-1 req-7"));

    // Another tenant neither finds nor reads acme's user.
    let globex = [("x-tenant", "globex")];
    let r = request(
        addr,
        "GET",
        "/users/by-email/planted-web-quokka@example.com",
        &globex,
        "",
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = request(addr, "GET", "/users/1/posts", &globex, "");
    assert_eq!((r.status, r.body.as_str()), (200, "[]"));

    // Refusals: no tenant (400), a tenant cmk does not know (404); the handler never runs.
    assert_eq!(request(addr, "GET", "/whoami", &[], "").status, 400);
    let r = request(addr, "GET", "/whoami", &[("x-tenant", "nobody")], "");
    assert_eq!(r.status, 404, "{}", r.body);
    // A duplicate email is a conflict, and the answer names no index value.
    let again = format!("{{\"id\":2,\"email\":\"{PLANTED_EMAIL}\",\"bio\":null}}");
    let r = request(addr, "POST", "/users", &[acme[0], json], &again);
    assert_eq!(r.status, 409, "{}", r.body);

    // The application's database holds no plaintext (the scan first finds a planted copy).
    let holds =
        |bytes: &[u8], needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(holds(format!("x{PLANTED_BIO}y").as_bytes(), PLANTED_BIO));
    for file in ["app.sqlite3", "app.sqlite3-wal"] {
        let bytes = std::fs::read(dir.join(file)).unwrap_or_default();
        for needle in [PLANTED_EMAIL, PLANTED_BIO, "planted-web-quokka@example.com"] {
            assert!(!holds(&bytes, needle), "{needle} in {file}");
        }
    }
}
