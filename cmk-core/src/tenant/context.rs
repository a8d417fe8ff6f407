//! The request context: who asks, for which tenant, why.
//!
//! Every key fetch, seal and unseal takes a context; its tenant decides which keys may be
//! used, its roles decide which classes may be read, and all of it is copied into the
//! security events the operation emits.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A tenant identifier, as stored in the model's tenant column.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// Makes a tenant id; it must be non-empty and at most 255 bytes.
    ///
    /// # Errors
    /// [`crate::Error::InvalidName`] when `id` is empty or longer than 255 bytes.
    pub fn new(id: impl Into<String>) -> crate::Result<Self> {
        let id = id.into();
        if id.is_empty() || id.len() > 255 {
            return Err(crate::Error::invalid_name(
                "tenant id",
                &id,
                "a tenant id must be 1 to 255 bytes long",
            ));
        }
        Ok(TenantId(Arc::from(id)))
    }

    /// The id as a shared string (cheap to clone into events).
    pub fn shared(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({:?})", self.0)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who performs an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Actor {
    /// A human user, by the application's user id.
    User(String),
    /// A service or job, by name.
    Service(String),
}

impl Actor {
    /// The actor rendered as `user:ID` or `service:NAME`, as events carry it.
    pub fn label(&self) -> String {
        match self {
            Actor::User(id) => format!("user:{id}"),
            Actor::Service(name) => format!("service:{name}"),
        }
    }
}

/// Everything cmk knows about the request an operation serves.
#[derive(Debug, Clone)]
pub struct RequestContext {
    tenant: TenantId,
    actor: Option<Actor>,
    roles: Vec<String>,
    request_id: Option<String>,
    source: Option<String>,
    purpose: Option<String>,
    metadata: BTreeMap<String, String>,
}

impl RequestContext {
    /// A context for `tenant` with no actor, roles or metadata yet.
    pub fn new(tenant: TenantId) -> Self {
        RequestContext {
            tenant,
            actor: None,
            roles: Vec::new(),
            request_id: None,
            source: None,
            purpose: None,
            metadata: BTreeMap::new(),
        }
    }

    /// Sets the actor.
    pub fn with_actor(mut self, actor: Actor) -> Self {
        self.actor = Some(actor);
        self
    }

    /// Adds a role (reader roles of class policies are matched against these).
    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        self.roles.push(role.into());
        self
    }

    /// Sets the request id (copied into events for correlation).
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Sets the source address of the request.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Sets the purpose of the access (for example `support-ticket-4711`).
    pub fn with_purpose(mut self, purpose: impl Into<String>) -> Self {
        self.purpose = Some(purpose.into());
        self
    }

    /// Adds free-form metadata copied into every event (never put field values here).
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// This request acting for `actor` with exactly `roles`.
    pub(crate) fn for_actor(&self, actor: Actor, roles: Vec<String>) -> Self {
        RequestContext {
            actor: Some(actor),
            roles,
            ..self.clone()
        }
    }

    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }
    /// The actor, if set.
    pub fn actor(&self) -> Option<&Actor> {
        self.actor.as_ref()
    }
    /// The roles.
    pub fn roles(&self) -> &[String] {
        &self.roles
    }
    /// The request id, if set.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }
    /// The source address, if set.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }
    /// The purpose, if set.
    pub fn purpose(&self) -> Option<&str> {
        self.purpose.as_deref()
    }
    /// The metadata.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// True when the context holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_carries_every_field() {
        let ctx = RequestContext::new(TenantId::new("acme").unwrap())
            .with_actor(Actor::User("u-1".into()))
            .with_role("support")
            .with_request_id("req-9")
            .with_source("10.0.0.1")
            .with_purpose("ticket-1")
            .with_metadata("region", "eu");
        assert_eq!(ctx.tenant().as_str(), "acme");
        assert_eq!(ctx.actor().unwrap().label(), "user:u-1");
        assert!(ctx.has_role("support") && !ctx.has_role("admin"));
        assert_eq!(ctx.request_id(), Some("req-9"));
        assert_eq!(ctx.source(), Some("10.0.0.1"));
        assert_eq!(ctx.purpose(), Some("ticket-1"));
        assert_eq!(ctx.metadata()["region"], "eu");
    }

    #[test]
    fn tenant_id_must_be_reasonable() {
        assert!(TenantId::new("").is_err());
        assert!(TenantId::new("x".repeat(256)).is_err());
        assert!(TenantId::new("x".repeat(255)).is_ok());
    }
}
