//! Keys of tenants: the registry of wrapped KEKs and roots ([`registry`]), leases of unwrapped
//! keys held in memory for a bounded time ([`lease`]), and the set of leased keys one request
//! holds ([`set`]). Above the tenant configuration and the KMS providers; below the sealing
//! of rows.

pub mod lease;
pub mod registry;
pub mod set;

pub use set::*;
