//! Keys of tenants: the registry of wrapped KEKs and roots ([`registry`]) and leases of
//! unwrapped keys held in memory for a bounded time ([`lease`]). Above the tenant
//! configuration and the KMS providers; below the sealing of rows, whose key handle
//! ([`crate::TenantKeys`]) holds leases.

pub mod lease;
pub mod registry;
