//! Sealing of rows: the key handle of a request ([`handle`]), the shape of an encrypted table
//! ([`schema`]), what a tenant's policies make of it (plans, computed once per schema and
//! handle), sealing and unsealing ([`seal`]), the model trait the derive implements
//! ([`model`]), the row-level parts of the table jobs ([`jobs`]), the structural write guard
//! ([`guard`]) and key scopes for row-loading code ([`scope`]). Above keys; below the service.

pub(crate) mod aad;
pub mod guard;
pub mod handle;
mod index_check;
pub mod jobs;
pub mod manifest;
pub mod model;
pub(crate) mod plan;
mod rekey;
pub mod schema;
pub mod scope;
pub mod seal;
