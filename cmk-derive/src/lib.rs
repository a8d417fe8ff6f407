#![doc = include_str!("../ATTRIBUTES.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod attr;
mod expand;

use proc_macro::TokenStream;

#[doc = include_str!("../ATTRIBUTES.md")]
#[proc_macro_derive(Encrypted, attributes(cmk, diesel, sea_orm))]
pub fn derive_encrypted(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    match attr::parse(&input) {
        Ok(model) => expand::expand(&model).into(),
        Err(e) => e.to_compile_error().into(),
    }
}
