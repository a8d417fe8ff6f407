//! Unsealing: the stored row as cmk sees it, and the model or its partial view rebuilt from
//! the revealed values.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::spanned::Spanned;

use super::Gen;
use super::types::stored_may_be_null;

/// The stored classified fields as byte slices, in field order.
pub(super) fn stored_fields(g: &Gen<'_>) -> Vec<TokenStream> {
    g.classified
        .iter()
        .map(|(f, c)| {
            let ident = &f.ident;
            if stored_may_be_null(c) {
                let v = g.view(quote!(v));
                quote! { sealed.#ident.as_ref().map(|v| #v) }
            } else {
                let v = g.view(quote!(sealed.#ident));
                quote! { Some(#v) }
            }
        })
        .collect()
}

/// The stored blind indexes as byte slices, one per classified field (`None` where a field
/// has none); empty when the model has no blind index.
pub(super) fn stored_indexes(g: &Gen<'_>) -> Vec<TokenStream> {
    if g.classified.iter().all(|(_, c)| c.blind_index.is_none()) {
        return Vec::new();
    }
    g.classified
        .iter()
        .map(|(f, c)| {
            let bidx = quote::format_ident!("{}_bidx", f.ident);
            match (&c.blind_index, c.optional) {
                (None, _) => quote! { None },
                (Some(_), true) => {
                    let v = g.view(quote!(v));
                    quote! { sealed.#bidx.as_ref().map(|v| #v) }
                }
                (Some(_), false) => {
                    let v = g.view(quote!(sealed.#bidx));
                    quote! { Some(#v) }
                }
            }
        })
        .collect()
}

/// The stored key columns as byte slices, one per key class.
pub(super) fn stored_keys(g: &Gen<'_>) -> Vec<TokenStream> {
    g.key_idents
        .iter()
        .map(|k| {
            let v = g.view(quote!(v));
            quote! { sealed.#k.as_ref().map(|v| #v) }
        })
        .collect()
}

/// Binds `__row`, the `StoredRow` view (without blind indexes) of the stored row `sealed`
/// in scope, with what it borrows: what rekeying and carrying key columns read.
pub(super) fn stored_row_view(g: &Gen<'_>) -> TokenStream {
    let p = &g.p;
    let (n_fields, n_keys) = (g.classified.len(), g.key_idents.len());
    let (stored_fields, stored_keys) = (stored_fields(g), stored_keys(g));
    let tenant = g.tenant_of(quote!(sealed));
    let row_id = g.row_id_of(quote!(sealed));
    quote! {
        let __fields: [Option<&[u8]>; #n_fields] = [#(#stored_fields),*];
        let __keys: [Option<&[u8]>; #n_keys] = [#(#stored_keys),*];
        let __row_id: Option<#p::RowId> = #row_id;
        let __row = #p::StoredRow {
            tenant: #tenant,
            row_id: __row_id.as_ref(),
            key_columns: &__keys,
            fields: &__fields,
            indexes: &[],
        };
    }
}

/// `__unseal_values`: the stored row unsealed strictly or partially, in the generated scope.
pub(super) fn unseal_values_fn(g: &Gen<'_>) -> TokenStream {
    let (name, sealed, p) = (g.name, &g.sealed, &g.p);
    let (n_fields, n_keys) = (g.classified.len(), g.key_idents.len());
    let stored_fields = stored_fields(g);
    let stored_keys = stored_keys(g);
    let stored_indexes = stored_indexes(g);
    let n_indexes = stored_indexes.len();
    let tenant = g.tenant_of(quote!(sealed));
    let row_id = g.row_id_of(quote!(sealed));
    quote! {
        /// The stored row viewed as cmk sees it, unsealed strictly or partially.
        fn __unseal_values(
            sealed: &#sealed,
            keys: &#p::TenantKeys,
            partial: bool,
        ) -> #p::Result<Vec<#p::Revealed>> {
            let schema = <#name as #p::Encrypted>::schema()?;
            let __fields: [Option<&[u8]>; #n_fields] = [#(#stored_fields),*];
            let __keys: [Option<&[u8]>; #n_keys] = [#(#stored_keys),*];
            let __indexes: [Option<&[u8]>; #n_indexes] = [#(#stored_indexes),*];
            let __row_id: Option<#p::RowId> = #row_id;
            let __row = #p::StoredRow {
                tenant: #tenant,
                row_id: __row_id.as_ref(),
                key_columns: &__keys,
                fields: &__fields,
                indexes: &__indexes,
            };
            let out = if partial { keys.unseal_partial(schema, &__row)? } else { keys.unseal(schema, &__row)? };
            Ok(out.values)
        }
    }
}

/// The `Encrypted` items that unseal: `View`, `unseal_partial`, `unseal` and `unseal_owned`.
pub(super) fn unseal_items(g: &Gen<'_>) -> TokenStream {
    let (name, sealed, p) = (g.name, &g.sealed, &g.p);
    let view = format_ident!("{}View", name);
    let rebuild_strict = rebuild(g, false, false);
    let rebuild_owned = rebuild(g, false, true);
    let rebuild_partial = rebuild(g, true, false);
    quote! {
        type View = #view;

        fn unseal_partial(sealed: &#sealed, keys: &#p::TenantKeys) -> #p::Result<#view> {
            let mut __values = __unseal_values(sealed, keys, true)?.into_iter();
            Ok(#view { #(#rebuild_partial,)* })
        }

        fn unseal(sealed: &#sealed, keys: &#p::TenantKeys) -> #p::Result<Self> {
            let mut __values = __unseal_values(sealed, keys, false)?.into_iter();
            Ok(#name { #(#rebuild_strict,)* })
        }

        fn unseal_owned(sealed: #sealed, keys: &#p::TenantKeys) -> #p::Result<Self> {
            let mut __values = __unseal_values(&sealed, keys, false)?.into_iter();
            Ok(#name { #(#rebuild_owned,)* })
        }
    }
}

/// The model's (or, `partial`, the view's) fields from the unsealed values in `__values`.
/// `owned`: the sealed row is consumed, so its unclassified fields move into the model.
fn rebuild(g: &Gen<'_>, partial: bool, owned: bool) -> Vec<TokenStream> {
    let p = &g.p;
    let mut out = Vec::new();
    for f in &g.m.fields {
        let ident = &f.ident;
        let Some(c) = &f.classified else {
            out.push(if owned {
                quote! { #ident: sealed.#ident }
            } else {
                quote! { #ident: ::core::clone::Clone::clone(&sealed.#ident) }
            });
            continue;
        };
        let column = &c.column;
        let inner_ty = crate::ast::option_inner(&f.ty)
            .filter(|_| c.optional)
            .unwrap_or(&f.ty);
        // A value type that is not serde is reported at the field's type.
        let decode = match c.raw {
            Some(_) => quote! { <#inner_ty as #p::RawField>::from_field_bytes(b, #column)? },
            None => super::respan(
                quote! { #p::decode_json::<#inner_ty>(b, #column)? },
                f.ty.span(),
            ),
        };
        let value = if c.optional {
            quote! { Some(#decode) }
        } else {
            quote! { #decode }
        };
        let null_arm = match (c.optional, partial) {
            (true, true) => quote! { Some(#p::Revealed::Null) => #p::Partial::Revealed(None), },
            (true, false) => quote! { Some(#p::Revealed::Null) => None, },
            (false, _) => {
                quote! { Some(#p::Revealed::Null) => return Err(#p::unexpected_null(#column)), }
            }
        };
        let expr = if partial {
            quote! {
                match __values.next() {
                    Some(#p::Revealed::Value(b)) => #p::Partial::Revealed(#value),
                    #null_arm
                    Some(#p::Revealed::Withheld) => #p::Partial::Withheld,
                    None => return Err(#p::withheld(#column)),
                }
            }
        } else {
            quote! {
                match __values.next() {
                    Some(#p::Revealed::Value(b)) => #value,
                    #null_arm
                    _ => return Err(#p::withheld(#column)),
                }
            }
        };
        out.push(quote! { #ident: #expr });
    }
    out
}
