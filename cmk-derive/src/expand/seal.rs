//! Sealing: the schema, `seal`, `rekey`, and what per-class updates compare and keep.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::spanned::Spanned;

use super::types::stored_may_be_null;
use super::unseal::{stored_keys, stored_row_view};
use super::{Gen, Stored};

/// The `Encrypted` items that seal: `schema`, `seal`, `rekey`, `bound_row_id`,
/// `changed_classes`, `keep_classes`, `key_columns` and `manifest`.
pub(super) fn seal_items(g: &Gen<'_>) -> TokenStream {
    let (sealed, p) = (&g.sealed, &g.p);
    let table = g.m.table();
    let specs = specs(g);
    let (encode, value_refs) = encode_values(g, quote!(self), "__v");
    let assemble = assemble(g);
    let tenant_of_self = g.tenant_of(quote!(self));
    let row_id = g.row_id_of(quote!(self));
    let (n_fields, n_keys) = (g.classified.len(), g.key_idents.len());
    let rekey = rekey_fn(g);
    let updates = update_fns(g);
    let key_names = g.key_idents.iter().map(|k| k.to_string());
    let stored_keys = stored_keys(g);
    let manifest = manifest_fn(g);
    quote! {
        #manifest

        fn schema() -> #p::Result<&'static #p::RowSchema> {
            static SCHEMA: #p::OnceLock<#p::Result<#p::RowSchema>> = #p::OnceLock::new();
            SCHEMA
                .get_or_init(|| -> #p::Result<#p::RowSchema> { #p::RowSchema::new(#table, vec![#(#specs),*]) })
                .as_ref()
                .map_err(Clone::clone)
        }

        fn seal(&self, keys: &#p::TenantKeys) -> #p::Result<#sealed> {
            let __ctx = keys.context();
            let schema = <Self as #p::Encrypted>::schema()?;
            #p::check_model_tenant(__ctx, #tenant_of_self)?;
            #(#encode)*
            let __values: [Option<&[u8]>; #n_fields] = [#(#value_refs),*];
            let __row_id: Option<#p::RowId> = #row_id;
            let mut __out = #p::SealSlots::<#n_keys, #n_fields>::new();
            keys.seal_into(schema, __row_id.as_ref(), &__values, __out.as_out())?;
            Ok(#sealed { #(#assemble,)* })
        }

        #rekey

        fn bound_row_id(&self) -> Option<#p::RowId> {
            #row_id
        }

        #updates

        fn key_columns(sealed: &#sealed) -> Vec<(&'static str, Option<&[u8]>)> {
            vec![#((#key_names, #stored_keys)),*]
        }
    }
}

/// `manifest`: the schema described with what the derive knows beside it (tenant and id
/// columns, value encodings, nullability, index columns).
fn manifest_fn(g: &Gen<'_>) -> TokenStream {
    use crate::ast::RawKind;
    use crate::attr::TenantSource;
    let p = &g.p;
    let tenant = match g.m.tenant() {
        Some(TenantSource::Field(f)) => {
            let name = g
                .field(f)
                .map_or_else(|| f.to_string(), |field| field.column());
            quote!(#p::TenantColumn::Column(::std::string::String::from(#name)))
        }
        Some(TenantSource::Fixed(lit)) => {
            quote!(#p::TenantColumn::Fixed(::std::string::String::from(#lit)))
        }
        None => quote!(#p::TenantColumn::Fixed(::std::string::String::new())),
    };
    let row_id = match &g.m.attrs.id {
        Some(id) => {
            let name = g
                .field(id)
                .map_or_else(|| id.to_string(), |field| field.column());
            let bound = g.m.app_ids();
            quote!(::core::option::Option::Some(#p::RowIdColumn::new(#name, #bound)))
        }
        None => quote!(::core::option::Option::None),
    };
    let facts = g.classified.iter().map(|(_, c)| {
        let encoding = match c.raw {
            Some(RawKind::String) => quote!(#p::Encoding::Utf8),
            Some(RawKind::Bytes) => quote!(#p::Encoding::Bytes),
            None => quote!(#p::Encoding::Json),
        };
        let nullable = c.optional;
        let index = match &c.blind_index {
            Some(_) => {
                let col = format!("{}_bidx", c.column);
                quote!(::core::option::Option::Some(#col))
            }
            None => quote!(::core::option::Option::None),
        };
        quote! {
            #p::FieldFacts { encoding: #encoding, nullable: #nullable, index_column: #index }
        }
    });
    quote! {
        fn manifest() -> #p::Result<#p::Manifest> {
            let schema = <Self as #p::Encrypted>::schema()?;
            #p::Manifest::describe(
                schema,
                #tenant,
                #row_id,
                <Self as #p::Encrypted>::KEY_COLUMNS,
                &[#(#facts),*],
            )
        }
    }
}

/// The `FieldSpec`s of the schema, in field order.
fn specs(g: &Gen<'_>) -> Vec<TokenStream> {
    let p = &g.p;
    g.classified
        .iter()
        .map(|(_, c)| {
            let (column, class) = (&c.column, &c.class);
            let mut spec = quote! { #p::FieldSpec::new(#column, #p::Class::new(#class)?) };
            if let Some(norm) = &c.blind_index {
                let n = match norm.as_str() {
                    "trimmed" => quote!(#p::Normalizer::Trimmed),
                    "casefold" => quote!(#p::Normalizer::Casefold),
                    _ => quote!(#p::Normalizer::Exact),
                };
                spec = quote! { #spec.blind_index(#n) };
            }
            if c.deterministic {
                spec = quote! { #spec.deterministic() };
            }
            if c.hide_null {
                spec = quote! { #spec.hide_null() };
            }
            let pad = c.pad;
            if pad > 0 {
                spec = quote! { #spec.pad_to(#pad) };
            }
            spec
        })
        .collect()
}

/// Encoding each classified value of `owner` for sealing: a byte slice per field, kept alive
/// in a local named `<prefix><index>`. Sealing encodes `self`; comparing two models for an
/// update encodes the other one the same way. A value type that is not serde is reported at
/// the field's type.
fn encode_values(
    g: &Gen<'_>,
    owner: TokenStream,
    prefix: &str,
) -> (Vec<TokenStream>, Vec<TokenStream>) {
    let p = &g.p;
    let mut encode = Vec::new();
    let mut refs = Vec::new();
    for (i, (f, c)) in g.classified.iter().enumerate() {
        let (ident, span) = (&f.ident, f.ty.span());
        let local = format_ident!("{}{}", prefix, i);
        let column = &c.column;
        let one = |v: TokenStream| match c.raw {
            Some(_) => quote! { #p::Holder::Raw(#p::RawField::to_field_bytes(#v)) },
            None => super::respan(
                quote! { #p::Holder::Json(#p::encode_json(#v, #column)?) },
                span,
            ),
        };
        if c.optional {
            let some = one(quote!(v));
            encode.push(quote! { let #local = match &#owner.#ident { Some(v) => Some(#some), None => None }; });
            refs.push(quote! { #local.as_ref().map(#p::Holder::bytes) });
        } else {
            let v = one(quote!(&#owner.#ident));
            encode.push(quote! { let #local = #v; });
            refs.push(quote! { Some(#local.bytes()) });
        }
    }
    (encode, refs)
}

/// The sealed struct's fields from the seal result (`__out`).
fn assemble(g: &Gen<'_>) -> Vec<TokenStream> {
    let p = &g.p;
    let mut out = Vec::new();
    let mut ci = 0usize;
    for f in &g.m.fields {
        let ident = &f.ident;
        let Some(c) = &f.classified else {
            out.push(quote! { #ident: ::core::clone::Clone::clone(&self.#ident) });
            continue;
        };
        let i = ci;
        ci += 1;
        let value = if stored_may_be_null(c) {
            let w = g.wrap(Stored::Field, quote!(v));
            quote! { __out.fields[#i].take().map(|v| #w) }
        } else {
            g.wrap(
                Stored::Field,
                quote! { #p::present(__out.fields[#i].take())? },
            )
        };
        out.push(quote! { #ident: #value });
        if c.blind_index.is_some() {
            let bidx = format_ident!("{}_bidx", ident);
            let v = if c.optional {
                let w = g.wrap(Stored::BlindIndex, quote!(v));
                quote! { __out.indexes[#i].take().map(|v| #w) }
            } else {
                g.wrap(
                    Stored::BlindIndex,
                    quote! { #p::present(__out.indexes[#i].take())? },
                )
            };
            out.push(quote! { #bidx: #v });
        }
    }
    for (k, ident) in g.key_idents.iter().enumerate() {
        let w = g.wrap(Stored::Keys, quote!(v));
        out.push(quote! { #ident: __out.key_columns[#k].take().map(|v| #w) });
    }
    out
}

/// `rekey`: every key column re-wrapped under its class's active KEK (KEK retirement).
fn rekey_fn(g: &Gen<'_>) -> TokenStream {
    let (sealed, p) = (&g.sealed, &g.p);
    let n_keys = g.key_idents.len();
    let view = stored_row_view(g);
    let assign = g.key_idents.iter().enumerate().map(|(i, k)| {
        let w = g.wrap(Stored::Keys, quote!(v));
        quote! {
            if let Some(v) = __new[#i].take() {
                sealed.#k = Some(#w);
                __changed += 1;
            }
        }
    });
    quote! {
        fn rekey(
            sealed: &mut #sealed,
            keys: &::std::sync::Arc<#p::TenantKeys>,
        ) -> #p::Result<usize> {
            let schema = <Self as #p::Encrypted>::schema()?;
            let mut __new: [Option<Vec<u8>>; #n_keys] = ::core::default::Default::default();
            {
                let sealed: &#sealed = sealed;
                #view
                for (__k, __slot) in __new.iter_mut().enumerate() {
                    *__slot = keys.rekey_key_column(schema, __k, &__row)?;
                }
            }
            let mut __changed = 0;
            #(#assign)*
            Ok(__changed)
        }
    }
}

/// Updates of some classes: which classes' values differ between two models
/// (`changed_classes`), and putting back the stored columns of the others (`keep_classes`).
fn update_fns(g: &Gen<'_>) -> TokenStream {
    let sealed = &g.sealed;
    let (encode, value_refs) = encode_values(g, quote!(self), "__v");
    let (encode_other, other_refs) = encode_values(g, quote!(__other), "__w");
    let (n_fields, n_keys) = (g.classified.len(), g.key_idents.len());
    let p = &g.p;
    let change_checks = g.classified.iter().enumerate().filter_map(|(i, (_, c))| {
        let k = g
            .key_classes
            .iter()
            .position(|k| *k == c.class)
            .filter(|_| c.is_envelope())?;
        Some(quote! { if __a[#i] != __b[#i] { __changed[#k] = true; } })
    });
    let keep_arms = g.key_idents.iter().enumerate().map(|(k, key)| {
        let members = g
            .classified
            .iter()
            .filter(|(_, c)| c.is_envelope() && c.class == g.key_classes[k])
            .flat_map(|(f, c)| {
                let mut cols = vec![f.ident.clone()];
                if c.blind_index.is_some() {
                    cols.push(format_ident!("{}_bidx", f.ident));
                }
                cols
            })
            .collect::<Vec<syn::Ident>>();
        let w = g.wrap(Stored::Keys, quote!(v));
        quote! {
            if keep.get(#k) == Some(&true) {
                #(fresh.#members = ::core::clone::Clone::clone(&old.#members);)*
                fresh.#key = match __carried[#k].take() {
                    Some(v) => Some(#w),
                    None => ::core::clone::Clone::clone(&old.#key),
                };
            }
        }
    });
    let (view, stored_keys) = (stored_row_view(g), stored_keys(g));
    quote! {
        fn changed_classes(&self, __other: &Self) -> #p::Result<Vec<bool>> {
            #(#encode)*
            #(#encode_other)*
            let __a: [Option<&[u8]>; #n_fields] = [#(#value_refs),*];
            let __b: [Option<&[u8]>; #n_fields] = [#(#other_refs),*];
            #[allow(unused_mut)]
            let mut __changed = vec![false; #n_keys];
            #(#change_checks)*
            Ok(__changed)
        }

        fn keep_classes(
            fresh: &mut #sealed,
            old: &#sealed,
            keep: &[bool],
            keys: &#p::TenantKeys,
        ) -> #p::Result<()> {
            let schema = <Self as #p::Encrypted>::schema()?;
            // Each kept class's stored DEK, re-wrapped into the fresh write (its write id);
            // when every class is kept the stored key columns are one write already.
            let mut __carried: [Option<Vec<u8>>; #n_keys] = ::core::default::Default::default();
            if (0..#n_keys).any(|__k| keep.get(__k) != Some(&true)) {
                let __fresh_keys: [Option<&[u8]>; #n_keys] = {
                    let sealed: &#sealed = &*fresh;
                    [#(#stored_keys),*]
                };
                let sealed: &#sealed = old;
                #view
                for (__k, __slot) in __carried.iter_mut().enumerate() {
                    if keep.get(__k) == Some(&true) && __keys[__k].is_some() {
                        *__slot = Some(keys.carry_key_column(schema, __k, &__row, &__fresh_keys)?);
                    }
                }
            }
            #(#keep_arms)*
            Ok(())
        }
    }
}
