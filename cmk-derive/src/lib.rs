//! `#[derive(Encrypted)]` for cmk: classified model structs.
//!
//! On a struct with named fields, `#[derive(Encrypted)]` generates the *sealed* companion type
//! (what the database stores: unclassified fields unchanged, ciphertext for classified fields,
//! a `<field>_bidx` column per blind index and a `<class>_keys` key column per class) and an
//! implementation of `cmk::model::Encrypted` that seals and unseals with a key handle.
//!
//! ```
//! use cmk::Encrypted;
//!
//! #[derive(Debug, Clone, PartialEq, Encrypted)]
//! #[cmk(table = "patients", tenant = tenant_id, id = id, ids = "app")]
//! pub struct Patient {
//!     pub id: i64,
//!     pub tenant_id: String,
//!     #[cmk(class = "private", blind_index(normalize = "casefold"))]
//!     pub email: String,
//!     #[cmk(class = "restricted")]
//!     pub ssn: Option<String>,
//! }
//! // Generated: `SealedPatient { id, tenant_id, email: Vec<u8>, email_bidx: Vec<u8>,
//! // ssn: Option<Vec<u8>>, private_keys: Option<Vec<u8>>, restricted_keys: Option<Vec<u8>> }`
//! // and `Patient::email_blind_index(&keys, b"...")`.
//! ```
//!
//! Attributes on the struct: `table = "name"` (the stored name, bound into the ciphertext),
//! `tenant = field`, `id = field`, `ids = "app" | "db"` (application-assigned ids are bound into
//! the ciphertext; database-assigned ones cannot be), `sealed = Name`, `crate = "path"`.
//! On a field: `class = "name"`, `column = "stored_name"`, `blind_index` or
//! `blind_index(normalize = "exact" | "trimmed" | "casefold")`, `deterministic`, `hide_null`,
//! `pad = bytes`. Field types: `String`, `Vec<u8>`, any `T: Serialize + DeserializeOwned`
//! (stored as JSON), each also as `Option<T>`.
//!
//! Still to come (the rest of the derive's issue): forwarding `#[diesel]` / `#[sea_orm]`
//! attributes, the ORM row-loading traits for transparent reads, `Checked<Model>` and partial
//! views.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod attr;
mod expand;

use proc_macro::TokenStream;

/// Derives `cmk::model::Encrypted` and the sealed companion type; see the crate docs.
#[proc_macro_derive(Encrypted, attributes(cmk, diesel))]
pub fn derive_encrypted(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    match attr::parse(&input) {
        Ok(model) => expand::expand(&model).into(),
        Err(e) => e.to_compile_error().into(),
    }
}
