//! Sealing of rows: the key handle of a request ([`handle`]), the shape of an encrypted table ([`schema`]), what a tenant's policies make
//! of it ([`plan`]), sealing and unsealing ([`seal`]), the model trait the derive implements
//! ([`model`]), the structural write guard ([`guard`]) and key scopes for row-loading code
//! ([`scope`]). Above keys; below the service.

pub(crate) mod aad;
pub mod guard;
pub mod handle;
pub mod model;
pub(crate) mod plan;
pub mod schema;
pub mod scope;
pub mod seal;
