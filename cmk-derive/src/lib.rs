//! `#[derive(Encrypted)]` for cmk: classified model structs.
//!
//! On a struct with named fields, `#[derive(Encrypted)]` generates the *sealed* companion type
//! (what the database stores: unclassified fields unchanged, ciphertext for classified fields,
//! a `<field>_bidx` column per blind index and a `<class>_keys` key column per class) and an
//! implementation of `cmk::model::Encrypted` that seals and unseals with a key handle.
//!
//! (Compiled as a doctest on `cmk::Encrypted` in the facade, which users depend on.)
//!
//! ```text
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
//! # Attributes on the struct
//!
//! | attribute | meaning | example |
//! | --- | --- | --- |
//! | `table = "name"` | the stored table name, bound into every ciphertext (required unless `#[diesel(table_name = ...)]` gives it) | `#[cmk(table = "patients")]` |
//! | `tenant = field` | the field holding the tenant id; never encrypted; sealing a model of another tenant than the request's fails | `#[cmk(tenant = tenant_id)]` |
//! | `id = field` | the row id field; never encrypted | `#[cmk(id = id)]` |
//! | `ids = "app" \| "db"` | application-assigned ids (UUIDv7, a sequence value fetched first) are bound into the ciphertext, so a row cannot be copied onto another; database-assigned ids cannot be (the default) | `#[cmk(id = id, ids = "app")]` |
//! | `sealed = Name` | the sealed type's name (default `Sealed<Model>`) | `#[cmk(sealed = PatientRow)]` |
//! | `sealed(derive(...), attr(...))` | explicit form for a plaintext struct with its own ORM mapping: the sealed type gets exactly these derives and attributes, nothing is forwarded, and its columns are plain bytes | `#[cmk(sealed(derive(serde::Serialize), attr(serde(rename_all = "camelCase"))))]` |
//! | `key_columns = "pattern"` | the key columns' names, `{class}` replaced by each class (a `-` becomes `_`); default `{class}_keys` | `#[cmk(key_columns = "{class}_dek")]` |
//! | `crate = "path"` | where the `cmk` crate is, if renamed | `#[cmk(crate = "my_cmk")]` |
//! | `#[diesel(...)]` | forwarded to the sealed type, which then derives Diesel's `Queryable`, `Selectable`, `Insertable` and `AsChangeset` (with `treat_none_as_null`), stores cmk's column types, and the plaintext model loads through any Diesel query inside a key scope | `#[diesel(table_name = patients)]` |
//!
//! # Attributes on a field
//!
//! | attribute | meaning | example |
//! | --- | --- | --- |
//! | `class = "name"` | classifies (and so encrypts) the field; the class's policy decides keys, readers, search | `#[cmk(class = "restricted")]` |
//! | `column = "name"` | the stored column name when it differs from the field's (renaming the field later keeps old rows readable) | `#[cmk(class = "private", column = "display_name")]` |
//! | `blind_index` / `blind_index(normalize = "...")` | adds a `<column>_bidx` column with an HMAC of the value normalised by `exact` (default), `trimmed` or `casefold` (text only), and a `<field>_blind_index(keys, value)` lookup | `#[cmk(class = "private", blind_index(normalize = "casefold"))]` |
//! | `deterministic` | AES-SIV instead of a per-row envelope, so the column itself can be compared for equality; leaks equality | `#[cmk(class = "private", deterministic)]` |
//! | `hide_null` | a `None` is encrypted like a value, hiding which rows are NULL (not with search) | `#[cmk(class = "restricted", hide_null)]` |
//! | `pad = bytes` | pads the plaintext to a multiple of `bytes` (up to 4096), hiding exact lengths | `#[cmk(class = "secret", pad = 64)]` |
//!
//! Field types: `String`, `Vec<u8>`, any `T: Serialize + DeserializeOwned` (stored as JSON,
//! docs/FORMAT.md §5a), each also as `Option<T>`. Unclassified fields must be `Clone` and
//! `Debug`. Mistakes are compile errors pointing at the offending token, all of a struct's at
//! once (the workspace's `tests/ui` holds one case per kind).
//!
//! Also generated: `<Model>View` (each classified field `Revealed` or `Withheld`, from
//! `Encrypted::unseal_partial`). With the `cmk` facade, loading `cmk::Checked<Model>` (Diesel
//! or SeaORM) reports a bad row in place instead of failing the load.
//!
//! With `#[diesel]` and `ids = "db"`, `New<Sealed>` and `Sealed::without_id()` insert without
//! the id column. Blind-indexed fields also get `by_<field>(keys, plaintext)`: a Diesel filter
//! or a SeaORM `Condition` that constrains the key handle's tenant too.
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
#[proc_macro_derive(Encrypted, attributes(cmk, diesel, sea_orm))]
pub fn derive_encrypted(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    match attr::parse(&input) {
        Ok(model) => expand::expand(&model).into(),
        Err(e) => e.to_compile_error().into(),
    }
}
