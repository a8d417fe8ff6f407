//! The two wire formats of a security event: one JSON object per line (docs/EVENTS.md has
//! the schema) and RFC 5424 syslog with structured data.

use std::fmt::Write as _;

use crate::audit::event::{Outcome, SecurityEvent};

/// The JSON schema version every JSON event carries as `"schema"`.
pub const JSON_SCHEMA: &str = "cmk.security-event/1";

/// The private enterprise number in syslog SD-IDs (`cmk@32473`): 32473 is the number
/// RFC 5612 reserves for documentation; operators with their own number keep the format.
pub const SYSLOG_PEN: u32 = 32473;

/// Appends the event as one line of JSON (no newline inside, one at the end): `schema` and
/// `category` first, then the event's fields.
pub fn json_line(event: &SecurityEvent, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(b"{\"schema\":\"");
    out.extend_from_slice(JSON_SCHEMA.as_bytes());
    out.extend_from_slice(b"\",\"category\":\"");
    out.extend_from_slice(event.name.category().as_bytes());
    out.extend_from_slice(b"\"");
    let fields = out.len();
    // The event's own object follows; its `{` becomes the `,` after the header (serde's
    // `flatten` would do the same through a much slower path, and removing the byte would
    // shift the whole object). Serialising these types cannot fail: every map key is a
    // string, and an event always has fields.
    if serde_json::to_writer(&mut *out, event).is_err()
        || out.get(fields) != Some(&b'{')
        || out.get(fields + 1) == Some(&b'}')
    {
        out.truncate(start);
        return;
    }
    out[fields] = b',';
    out.push(b'\n');
}

/// Reads one JSON line back (the spool's replay, receivers in tests).
pub fn parse_json_line(line: &[u8]) -> Option<SecurityEvent> {
    serde_json::from_slice(line).ok()
}

/// RFC 3339 UTC time with milliseconds, from milliseconds since the Unix epoch.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days to civil date (Howard Hinnant's algorithm; valid for every u64-day count here).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

/// An RFC 5424 PARAM-VALUE: `"`, `\` and `]` escaped.
fn sd_value(out: &mut String, v: &str) {
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// An RFC 5424 SD-NAME: printable ASCII without `=`, space, `]`, `"`; at most 32 characters.
fn sd_name(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_graphic() && !matches!(c, '=' | ']' | '"'))
        .take(32)
        .collect()
}

/// The event as one RFC 5424 message: facility `log audit` (13), severity informational
/// for successes and warning for failures, `APP-NAME` `cmk`, `MSGID` the event name, and the
/// event's fields as structured data (`[cmk@32473 ...]`, metadata in `[cmkmeta@32473 ...]`).
pub fn syslog_5424(event: &SecurityEvent, hostname: &str, procid: u32) -> String {
    let severity = match event.outcome {
        Outcome::Success => 6,
        Outcome::Failure { .. } => 4,
    };
    let mut out = String::with_capacity(512);
    let host = sd_name(hostname);
    let host = if host.is_empty() { "-".into() } else { host };
    let _ = write!(
        out,
        "<{}>1 {} {host} cmk {procid} {} [cmk@{SYSLOG_PEN}",
        13 * 8 + severity,
        rfc3339_ms(event.timestamp_ms),
        event.name.as_str()
    );
    let mut param = |name: &str, value: &str| {
        let _ = write!(out, " {name}=\"");
        sd_value(&mut out, value);
        out.push('"');
    };
    param("id", &event.id.to_string());
    param("tenant", &event.tenant);
    match &event.outcome {
        Outcome::Success => param("outcome", "success"),
        Outcome::Failure { error } => {
            param("outcome", "failure");
            param("error", error);
        }
    }
    let optional = [
        ("table", event.table.as_deref()),
        ("record_id", event.record_id.as_deref()),
        ("actor", event.actor.as_deref()),
        ("request_id", event.request_id.as_deref()),
        ("source", event.source.as_deref()),
        ("purpose", event.purpose.as_deref()),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            param(name, v);
        }
    }
    if !event.columns.is_empty() {
        param("columns", &event.columns.join(","));
    }
    if !event.classes.is_empty() {
        param("classes", &event.classes.join(","));
    }
    if let Some(n) = event.cached_uses {
        param("cached_uses", &n.to_string());
    }
    out.push(']');
    if !event.metadata.is_empty() {
        let _ = write!(out, "[cmkmeta@{SYSLOG_PEN}");
        for (k, v) in &event.metadata {
            let _ = write!(out, " {}=\"", sd_name(k));
            sd_value(&mut out, v);
            out.push('"');
        }
        out.push(']');
    }
    let _ = write!(out, " security event {}", event.name.as_str());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::EventName;
    use crate::tenant::context::{Actor, RequestContext, TenantId};

    fn event() -> SecurityEvent {
        let ctx = RequestContext::new(TenantId::new("acme").unwrap())
            .with_actor(Actor::User("dr \"who\"".into()))
            .with_request_id("r-1")
            .with_metadata("ticket]", "a\\b");
        let mut e = SecurityEvent::new(&ctx, EventName::DataDecrypt, Outcome::Success)
            .with_table("patients")
            .with_fields(
                vec!["ssn".into(), "email".into()],
                vec!["restricted".into()],
            );
        e.timestamp_ms = 1_764_460_800_123; // 2025-11-30T00:00:00.123Z
        e
    }

    #[test]
    fn json_lines_round_trip_with_schema_and_category() {
        let e = event();
        let mut out = Vec::new();
        json_line(&e, &mut out);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(out.ends_with(b"\n"));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["schema"], JSON_SCHEMA);
        assert_eq!(v["category"], "DATA");
        assert_eq!(v["name"], "DATA_DECRYPT");
        assert_eq!(v["outcome"]["status"], "success");
        assert_eq!(parse_json_line(&out).unwrap(), e);
    }

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_764_460_800_123), "2025-11-30T00:00:00.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn syslog_messages_follow_rfc_5424_with_escaped_structured_data() {
        let line = syslog_5424(&event(), "app host", 42);
        assert!(
            line.starts_with(
                "<110>1 2025-11-30T00:00:00.123Z apphost cmk 42 DATA_DECRYPT [cmk@32473 id=\""
            ),
            "{line}"
        );
        assert!(line.contains(r#"actor="user:dr \"who\"""#), "{line}");
        assert!(line.contains(r#"columns="ssn,email""#));
        assert!(line.contains(r#"[cmkmeta@32473 ticket="a\\b"]"#), "{line}");
        assert!(line.ends_with(" security event DATA_DECRYPT"));
        let failed = SecurityEvent {
            outcome: Outcome::Failure {
                error: "tampered".into(),
            },
            ..event()
        };
        let line = syslog_5424(&failed, "h", 1);
        assert!(line.starts_with("<108>1 "));
        assert!(line.contains(r#"outcome="failure" error="tampered""#));
    }
}
