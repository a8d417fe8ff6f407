//! HTTP batches (feature `http`): one `POST` per batch, to Splunk's HTTP Event Collector or
//! as a generic JSON array. A 2xx status is delivery; anything else (a refused connection,
//! a 5xx, a timeout) is a failed batch the pipeline spools and retries with backoff, so the
//! receiver may see a batch twice and must de-duplicate by event `id`.

use std::time::Duration;

use super::format::json_line;
use super::transport::{DeliveryError, Transport};
use crate::audit::event::SecurityEvent;

/// The body a receiver expects.
#[derive(Clone)]
#[non_exhaustive]
pub enum HttpFormat {
    /// Splunk HEC (`/services/collector/event`): one `{"time", "host", "source",
    /// "sourcetype", "event"}` object per event, concatenated, with
    /// `Authorization: Splunk <token>`.
    SplunkHec {
        /// The HEC token.
        token: String,
    },
    /// A JSON array of events (the schema of docs/EVENTS.md).
    JsonArray,
}

impl std::fmt::Debug for HttpFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpFormat::SplunkHec { .. } => f.write_str("SplunkHec { token: <redacted> }"),
            HttpFormat::JsonArray => f.write_str("JsonArray"),
        }
    }
}

/// Batches of events over HTTP.
#[derive(Debug)]
pub struct HttpBatches {
    agent: ureq::Agent,
    url: String,
    format: HttpFormat,
    host: String,
    name: String,
}

impl HttpBatches {
    /// Posts to `url` in `format`; `timeout` bounds connecting, sending and waiting for the
    /// answer (a receiver that accepts and never answers is a failure after it).
    pub fn new(url: impl Into<String>, format: HttpFormat, timeout: Duration) -> Self {
        let url = url.into();
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(timeout)
            .timeout_read(timeout)
            .timeout_write(timeout)
            .build();
        HttpBatches {
            agent,
            name: url.clone(),
            url,
            format,
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
        }
    }

    fn body(&self, batch: &[SecurityEvent]) -> Vec<u8> {
        let mut out = Vec::with_capacity(batch.len() * 600);
        match &self.format {
            HttpFormat::JsonArray => {
                out.push(b'[');
                for (i, e) in batch.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json_line(e, &mut out);
                    out.pop(); // the newline
                }
                out.push(b']');
            }
            HttpFormat::SplunkHec { .. } => {
                for e in batch {
                    let mut event = Vec::new();
                    json_line(e, &mut event);
                    event.pop();
                    let head = serde_json::json!({
                        "time": e.timestamp_ms as f64 / 1000.0,
                        "host": self.host,
                        "source": "cmk",
                        "sourcetype": "cmk:security",
                    })
                    .to_string();
                    // `{...head..., "event": <event>}`
                    out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
                    out.extend_from_slice(b",\"event\":");
                    out.extend_from_slice(&event);
                    out.extend_from_slice(b"}\n");
                }
            }
        }
        out
    }
}

impl Transport for HttpBatches {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver(&mut self, batch: &[SecurityEvent]) -> Result<(), DeliveryError> {
        let body = self.body(batch);
        let mut request = self
            .agent
            .post(&self.url)
            .set("Content-Type", "application/json");
        if let HttpFormat::SplunkHec { token } = &self.format {
            request = request.set("Authorization", &format!("Splunk {token}"));
        }
        match request.send_bytes(&body) {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(code, _)) => Err(DeliveryError::new(
                &self.name,
                format!("HTTP status {code}"),
            )),
            Err(e) => Err(DeliveryError::new(&self.name, e.kind())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{EventName, Outcome};
    use crate::tenant::context::{RequestContext, TenantId};

    #[test]
    fn bodies_are_a_json_array_or_hec_objects() {
        let ctx = RequestContext::new(TenantId::new("acme").unwrap());
        let batch: Vec<SecurityEvent> = (0..3)
            .map(|_| SecurityEvent::new(&ctx, EventName::DataDecrypt, Outcome::Success))
            .collect();
        let t = Duration::from_secs(1);
        let array = HttpBatches::new("http://127.0.0.1:9/", HttpFormat::JsonArray, t);
        let v: serde_json::Value = serde_json::from_slice(&array.body(&batch)).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 3);
        assert_eq!(v[1]["id"], batch[1].id.to_string());
        let hec = HttpBatches::new(
            "http://127.0.0.1:9/",
            HttpFormat::SplunkHec {
                token: "t0k".into(),
            },
            t,
        );
        assert!(!format!("{hec:?}").contains("t0k"));
        let body = hec.body(&batch);
        let objects: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&body)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(objects.len(), 3);
        assert_eq!(objects[2]["event"]["id"], batch[2].id.to_string());
        assert_eq!(objects[0]["sourcetype"], "cmk:security");
    }
}
