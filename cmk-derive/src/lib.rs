#![doc = include_str!("../ATTRIBUTES.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

// The layout of serde_derive and thiserror: the typed model of the input (`ast`, read by
// `attr` with the key names of `symbol`), the checks of how its keys fit together (`check`),
// errors collected in `ctxt`, and the generated code by what it generates (`expand`).
mod ast;
mod attr;
mod check;
mod ctxt;
mod expand;
mod symbol;

use proc_macro::TokenStream;

#[doc = include_str!("../ATTRIBUTES.md")]
#[proc_macro_derive(Encrypted, attributes(cmk, diesel, sea_orm))]
pub fn derive_encrypted(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::derive(&input).into()
}
