//! Per-tenant routing: each tenant's events go to the sink its configuration names
//! (`TenantConfig::audit_sink`), others to the default sink.
//!
//! A tenant may name either a sink the operator registered (`with_sink("siem-eu", ...)`) or
//! an endpoint (`syslog+tcp://siem.acme.example:6514`, `https://hec.acme.example/...`),
//! which must match the operator's [`AllowList`]; the router then builds (once per
//! endpoint) a sink for it with the operator's factory, typically a [`super::Pipeline`]
//! with its own spool. A name that is neither refuses the configuration.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use crate::audit::event::{EventSink, SecurityEvent, SinkError};
use crate::tenant::context::TenantId;

/// Endpoints tenants may name: `scheme://host:port` entries, where the host may start with
/// `*.` to allow its subdomains. Everything else is refused.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    entries: Vec<(String, String, u16)>,
}

/// `scheme://host[:port][/...]` with the scheme's default port.
fn parse_endpoint(endpoint: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = endpoint.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.contains('@') {
        return None; // credentials in the URL: not an endpoint a tenant may name
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        _ => {
            let port = match scheme {
                "http" => 80,
                "https" => 443,
                "syslog+tcp" | "syslog+udp" => 514,
                _ => return None,
            };
            (authority, port)
        }
    };
    if host.is_empty() {
        return None;
    }
    Some((scheme.to_ascii_lowercase(), host.to_ascii_lowercase(), port))
}

impl AllowList {
    /// An empty list (no endpoint allowed).
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows `scheme://host:port` (host may be `*.domain`).
    ///
    /// # Errors
    /// A [`SinkError`] when `pattern` is not `scheme://host[:port]`: no scheme, an empty host,
    /// credentials in it, a port that is not a number, or no port for a scheme without a
    /// default (`http`, `https`, `syslog+tcp` and `syslog+udp` have one).
    pub fn allow(mut self, pattern: &str) -> Result<Self, SinkError> {
        let entry = parse_endpoint(pattern)
            .ok_or_else(|| SinkError(format!("not an endpoint pattern: {pattern}")))?;
        self.entries.push(entry);
        Ok(self)
    }

    /// Whether `endpoint` is allowed.
    pub fn permits(&self, endpoint: &str) -> bool {
        let Some((scheme, host, port)) = parse_endpoint(endpoint) else {
            return false;
        };
        self.entries.iter().any(|(s, h, p)| {
            *s == scheme
                && *p == port
                && match h.strip_prefix("*.") {
                    Some(domain) => host
                        .strip_suffix(domain)
                        .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
                    None => *h == host,
                }
        })
    }
}

type Factory = dyn Fn(&str) -> Result<Arc<dyn EventSink>, SinkError> + Send + Sync;

/// Routes events by tenant (see the module docs).
pub struct Router {
    default: Arc<dyn EventSink>,
    named: BTreeMap<String, Arc<dyn EventSink>>,
    endpoints: Option<(AllowList, Box<Factory>)>,
    built: Mutex<BTreeMap<String, Arc<dyn EventSink>>>,
    routes: RwLock<HashMap<Arc<str>, Arc<dyn EventSink>>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("default", &self.default)
            .field("named", &self.named.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router whose tenants all use `default` until their configuration names a sink.
    pub fn new(default: Arc<dyn EventSink>) -> Self {
        Router {
            default,
            named: BTreeMap::new(),
            endpoints: None,
            built: Mutex::new(BTreeMap::new()),
            routes: RwLock::new(HashMap::new()),
        }
    }

    /// Registers a sink tenants may name.
    pub fn with_sink(mut self, name: impl Into<String>, sink: Arc<dyn EventSink>) -> Self {
        self.named.insert(name.into(), sink);
        self
    }

    /// Lets tenants name endpoints on `allow`; `factory` builds the sink of an endpoint.
    pub fn with_endpoints(
        mut self,
        allow: AllowList,
        factory: impl Fn(&str) -> Result<Arc<dyn EventSink>, SinkError> + Send + Sync + 'static,
    ) -> Self {
        self.endpoints = Some((allow, Box::new(factory)));
        self
    }

    fn route(&self, tenant: &str) -> Arc<dyn EventSink> {
        self.routes
            .read()
            .ok()
            .and_then(|r| r.get(tenant).cloned())
            .unwrap_or_else(|| Arc::clone(&self.default))
    }

    fn resolve(&self, name: &str) -> Result<Arc<dyn EventSink>, SinkError> {
        if let Some(sink) = self.named.get(name) {
            return Ok(Arc::clone(sink));
        }
        let Some((allow, factory)) = &self.endpoints else {
            return Err(SinkError(format!("no audit sink named `{name}`")));
        };
        if !allow.permits(name) {
            return Err(SinkError(format!(
                "audit endpoint `{name}` is not on the operator's allow-list"
            )));
        }
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sink) = built.get(name) {
            return Ok(Arc::clone(sink));
        }
        let sink = factory(name)?;
        built.insert(name.to_string(), Arc::clone(&sink));
        Ok(sink)
    }
}

impl EventSink for Router {
    fn emit(&self, event: SecurityEvent) -> Result<(), SinkError> {
        self.route(&event.tenant).emit(event)
    }

    fn emit_durable(&self, event: SecurityEvent) -> Result<(), SinkError> {
        self.route(&event.tenant).emit_durable(event)
    }

    /// To the tenant's sink (the one its last verified configuration named) and, when that
    /// is another, to the default sink, which is the operator's.
    fn emit_alert(&self, event: SecurityEvent) -> Result<(), SinkError> {
        let route = self.route(&event.tenant);
        if Arc::ptr_eq(&route, &self.default) {
            return route.emit_durable(event);
        }
        let to_tenant = route.emit_durable(event.clone());
        let to_operator = self.default.emit_durable(event);
        to_tenant.and(to_operator)
    }

    fn configure_tenant(
        &self,
        tenant: &TenantId,
        audit_sink: Option<&str>,
    ) -> Result<(), SinkError> {
        let sink = match audit_sink {
            None => None,
            Some(name) => Some(self.resolve(name)?),
        };
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        match sink {
            Some(sink) => routes.insert(tenant.shared(), sink),
            None => routes.remove(tenant.as_str()),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{EventName, MemorySink, Outcome};
    use crate::tenant::context::RequestContext;

    #[test]
    fn the_allow_list_matches_scheme_host_and_port() {
        let allow = AllowList::new()
            .allow("syslog+tcp://siem.acme.example:6514")
            .unwrap()
            .allow("https://*.hec.example")
            .unwrap();
        assert!(allow.permits("syslog+tcp://siem.acme.example:6514"));
        assert!(allow.permits("SYSLOG+TCP://SIEM.ACME.EXAMPLE:6514"));
        assert!(!allow.permits("syslog+tcp://siem.acme.example:6515"));
        assert!(!allow.permits("syslog+udp://siem.acme.example:6514"));
        assert!(allow.permits("https://eu.hec.example/services/collector"));
        assert!(
            !allow.permits("https://hec.example/"),
            "the bare domain is not a subdomain"
        );
        assert!(!allow.permits("https://evilhec.example/"));
        assert!(!allow.permits("https://user:pw@eu.hec.example/"));
        assert!(!allow.permits("http://eu.hec.example/"));
        assert!(!allow.permits("not a url"));
    }

    #[test]
    fn tenants_go_to_their_sink_and_unknown_names_are_refused() {
        let default = Arc::new(MemorySink::new());
        let siem = Arc::new(MemorySink::new());
        let built = Arc::new(MemorySink::new());
        let for_factory = Arc::clone(&built);
        let router = Router::new(default.clone())
            .with_sink("siem-eu", siem.clone())
            .with_endpoints(
                AllowList::new()
                    .allow("syslog+tcp://127.0.0.1:6514")
                    .unwrap(),
                move |_| Ok(for_factory.clone() as Arc<dyn EventSink>),
            );
        let acme = TenantId::new("acme").unwrap();
        let globex = TenantId::new("globex").unwrap();
        let initech = TenantId::new("initech").unwrap();
        router.configure_tenant(&acme, Some("siem-eu")).unwrap();
        router
            .configure_tenant(&initech, Some("syslog+tcp://127.0.0.1:6514"))
            .unwrap();
        assert!(router.configure_tenant(&globex, Some("siem-us")).is_err());
        assert!(
            router
                .configure_tenant(&globex, Some("syslog+tcp://attacker.example:514"))
                .is_err()
        );
        for t in [&acme, &globex, &initech] {
            let ctx = RequestContext::new(t.clone());
            router
                .emit(SecurityEvent::new(
                    &ctx,
                    EventName::DataDecrypt,
                    Outcome::Success,
                ))
                .unwrap();
        }
        assert_eq!(&*siem.events()[0].tenant, "acme");
        assert_eq!(&*default.events()[0].tenant, "globex");
        assert_eq!(&*built.events()[0].tenant, "initech");
        // Back to the default when the configuration names none.
        router.configure_tenant(&acme, None).unwrap();
        let ctx = RequestContext::new(acme);
        router
            .emit(SecurityEvent::new(
                &ctx,
                EventName::DataDecrypt,
                Outcome::Success,
            ))
            .unwrap();
        assert_eq!(default.events().len(), 2);
    }

    #[test]
    fn alerts_go_to_the_tenant_and_to_the_operator() {
        let default = Arc::new(MemorySink::new());
        let siem = Arc::new(MemorySink::new());
        let router = Router::new(default.clone()).with_sink("siem-eu", siem.clone());
        let acme = TenantId::new("acme").unwrap();
        router.configure_tenant(&acme, Some("siem-eu")).unwrap();
        let alert = |t: &TenantId| {
            SecurityEvent::new(
                &RequestContext::new(t.clone()),
                EventName::AdminIntegrityFailure,
                Outcome::Failure {
                    error: "config_integrity".into(),
                },
            )
        };
        router.emit_alert(alert(&acme)).unwrap();
        assert_eq!(siem.events().len(), 1, "the tenant's sink");
        assert_eq!(default.events().len(), 1, "the operator's sink");
        // A tenant on the default sink gets it once.
        let globex = TenantId::new("globex").unwrap();
        router.emit_alert(alert(&globex)).unwrap();
        assert_eq!(default.events().len(), 2);
        // An ordinary event goes to the tenant's sink alone.
        let ctx = RequestContext::new(acme);
        router
            .emit(SecurityEvent::new(
                &ctx,
                EventName::DataDecrypt,
                Outcome::Success,
            ))
            .unwrap();
        assert_eq!((siem.events().len(), default.events().len()), (2, 2));
    }
}
