//! Code generation: the sealed companion type and the `Encrypted` implementation.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::attr::{Classified, Model, TenantSource, key_classes, key_column_name};

/// The sealed field's type: `Vec<u8>` when always present, `Option<Vec<u8>>` when NULL can
/// stay NULL (an `Option` without hidden NULL).
fn stored_may_be_null(c: &Classified) -> bool {
    c.optional && !c.hide_null
}

pub fn expand(m: &Model) -> TokenStream {
    let Model {
        key_pattern,
        diesel_table,
        sea_orm,
        explicit,
        diesel,
        vis,
        name,
        table,
        tenant,
        lookups: lookups_type,
        row_id: row_id_fn,
        id,
        app_ids,
        sealed,
        krate,
        fields,
    } = m;
    let p = quote!(#krate::__private);
    // The tenant of a model (`self`) or a stored row (`sealed`): its field, or the fixed one.
    let tenant_of = |owner: TokenStream| -> TokenStream {
        match tenant {
            TenantSource::Field(f) => quote!(::core::convert::AsRef::<str>::as_ref(&#owner.#f)),
            TenantSource::Fixed(lit) => quote!(#lit),
        }
    };
    let tenant_of_self = tenant_of(quote!(self));
    let tenant_of_sealed = tenant_of(quote!(sealed));
    // Where the lookups go: the model, or the namespace type the application named.
    let lookups_on = lookups_type.as_ref().unwrap_or(name);
    let classes = {
        let mut seen: Vec<String> = Vec::new();
        for c in fields.iter().filter_map(|f| f.classified.as_ref()) {
            if !seen.contains(&c.class) {
                seen.push(c.class.clone());
            }
        }
        seen
    };
    let key_classes = key_classes(fields);
    let classified: Vec<(&syn::Ident, &syn::Type, &Classified)> = fields
        .iter()
        .filter_map(|f| f.classified.as_ref().map(|c| (&f.ident, &f.ty, c)))
        .collect();

    // Stored types: plain bytes, or in Diesel mode column newtypes with SQL types of their own.
    let in_diesel = diesel.is_some();
    let in_sea = sea_orm.is_some();
    let typed = in_diesel || in_sea;
    let stored = |kind: &str| -> TokenStream {
        let m = if in_sea { quote!(#p::sea) } else { quote!(#p) };
        match (typed, kind) {
            (false, _) => quote!(Vec<u8>),
            (true, "bidx") => quote!(#m::BlindIndex),
            (true, "keys") => quote!(#m::KeyColumn),
            (true, _) => quote!(#m::Ciphertext),
        }
    };
    // Converting a sealed `Vec<u8>` into the stored type, and viewing it as bytes again.
    let wrap = |kind: &str, v: TokenStream| -> TokenStream {
        if typed {
            let ty = stored(kind);
            quote!(#ty::__from_cmk(#v))
        } else {
            v
        }
    };
    let view = |v: TokenStream| -> TokenStream {
        if typed {
            quote!(#v.as_bytes())
        } else {
            quote!(#v.as_slice())
        }
    };
    let column_attr = |column: &str, ident: &syn::Ident| -> TokenStream {
        if *ident == column {
            quote!()
        } else if in_diesel {
            let col = format_ident!("{}", column);
            quote!(#[diesel(column_name = #col)])
        } else if in_sea {
            quote!(#[sea_orm(column_name = #column)])
        } else {
            quote!()
        }
    };

    // The sealed struct.
    let mut sealed_fields = Vec::new();
    for f in fields {
        let ident = &f.ident;
        // Field attributes are forwarded in Diesel mode only (in the explicit form they
        // belong to the plaintext struct's own derives).
        let forwarded: &[syn::Attribute] = if in_diesel {
            &f.diesel
        } else if in_sea {
            &f.sea_orm
        } else {
            &[]
        };
        match &f.classified {
            None => {
                let ty = &f.ty;
                sealed_fields.push(quote! { #(#forwarded)* #vis #ident: #ty });
            }
            Some(c) => {
                let t = stored("field");
                let ty = if stored_may_be_null(c) {
                    quote!(Option<#t>)
                } else {
                    quote!(#t)
                };
                let col = column_attr(&c.column, ident);
                sealed_fields.push(quote! { #(#forwarded)* #col #vis #ident: #ty });
                if c.blind_index.is_some() {
                    let bidx = format_ident!("{}_bidx", ident);
                    let t = stored("bidx");
                    let ty = if c.optional {
                        quote!(Option<#t>)
                    } else {
                        quote!(#t)
                    };
                    let col = column_attr(&format!("{}_bidx", c.column), &bidx);
                    sealed_fields.push(quote! { #col #vis #bidx: #ty });
                }
            }
        }
    }
    let key_idents: Vec<syn::Ident> = key_classes
        .iter()
        .map(|c| format_ident!("{}", key_column_name(key_pattern.as_deref(), c)))
        .collect();
    let key_ty = stored("keys");
    for k in &key_idents {
        sealed_fields.push(quote! { #vis #k: Option<#key_ty> });
    }

    // Field specs for the schema.
    let specs = classified.iter().map(|(_, _, c)| {
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
    });

    // Encoding each value of `owner` for sealing: a byte slice per field, kept alive in a
    // local named `<prefix><index>`. Sealing encodes `self`; comparing two models for an
    // update encodes the other one the same way.
    let encode_values = |owner: TokenStream, prefix: &str| {
        let mut encode = Vec::new();
        let mut refs = Vec::new();
        for (i, (ident, _, c)) in classified.iter().enumerate() {
            let local = format_ident!("{}{}", prefix, i);
            let column = &c.column;
            let one = |v: TokenStream| match c.raw {
                Some(_) => quote! { #p::Holder::Raw(#p::RawField::to_field_bytes(#v)) },
                None => quote! { #p::Holder::Json(#p::encode_json(#v, #column)?) },
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
    };
    let (encode, value_refs) = encode_values(quote!(self), "__v");
    let n_fields = classified.len();
    let n_keys = key_idents.len();

    // Updates of some classes: which classes' values differ between two models, and putting
    // back the stored columns of the others.
    let (encode_other, other_refs) = encode_values(quote!(__other), "__w");
    let change_checks = classified.iter().enumerate().filter_map(|(i, (_, _, c))| {
        let k = key_classes
            .iter()
            .position(|k| *k == c.class)
            .filter(|_| c.is_envelope())?;
        Some(quote! { if __a[#i] != __b[#i] { __changed[#k] = true; } })
    });
    let keep_arms = key_idents.iter().enumerate().map(|(k, key)| {
        let members = classified
            .iter()
            .filter(|(_, _, c)| c.is_envelope() && c.class == key_classes[k])
            .flat_map(|(ident, _, c)| {
                let mut cols = vec![(*ident).clone()];
                if c.blind_index.is_some() {
                    cols.push(format_ident!("{}_bidx", ident));
                }
                cols
            })
            .collect::<Vec<syn::Ident>>();
        quote! {
            if keep.get(#k) == Some(&true) {
                #(fresh.#members = ::core::clone::Clone::clone(&old.#members);)*
                fresh.#key = ::core::clone::Clone::clone(&old.#key);
            }
        }
    });

    // The id as bound: through `IntoRowId`, or the application's own function for an id type
    // of another crate (which the orphan rule keeps it from implementing `IntoRowId` for).
    let to_row_id = match row_id_fn {
        Some(f) => quote!(#f),
        None => quote!(#p::IntoRowId::to_row_id),
    };
    let row_id = match (id, app_ids) {
        (Some(id), true) => quote! { Some(#to_row_id(&self.#id)) },
        _ => quote! { None },
    };
    let row_id_sealed = match (id, app_ids) {
        (Some(id), true) => quote! { Some(#to_row_id(&sealed.#id)) },
        _ => quote! { None },
    };

    // Sealed struct from the seal result.
    let mut assemble = Vec::new();
    let mut ci = 0usize;
    for f in fields {
        let ident = &f.ident;
        match &f.classified {
            None => assemble.push(quote! { #ident: ::core::clone::Clone::clone(&self.#ident) }),
            Some(c) => {
                let i = ci;
                ci += 1;
                let value = if stored_may_be_null(c) {
                    let w = wrap("field", quote!(v));
                    quote! { __out.fields[#i].take().map(|v| #w) }
                } else {
                    wrap("field", quote! { #p::present(__out.fields[#i].take())? })
                };
                assemble.push(quote! { #ident: #value });
                if c.blind_index.is_some() {
                    let bidx = format_ident!("{}_bidx", ident);
                    let v = if c.optional {
                        let w = wrap("bidx", quote!(v));
                        quote! { __out.indexes[#i].take().map(|v| #w) }
                    } else {
                        wrap("bidx", quote! { #p::present(__out.indexes[#i].take())? })
                    };
                    assemble.push(quote! { #bidx: #v });
                }
            }
        }
    }
    for (k, ident) in key_idents.iter().enumerate() {
        let w = wrap("keys", quote!(v));
        assemble.push(quote! { #ident: __out.key_columns[#k].take().map(|v| #w) });
    }

    // Stored views for unsealing.
    let stored_fields: Vec<TokenStream> = classified
        .iter()
        .map(|(ident, _, c)| {
            if stored_may_be_null(c) {
                let v = view(quote!(v));
                quote! { sealed.#ident.as_ref().map(|v| #v) }
            } else {
                let v = view(quote!(sealed.#ident));
                quote! { Some(#v) }
            }
        })
        .collect();
    let key_names: Vec<String> = key_idents.iter().map(|k| k.to_string()).collect();
    let rekey_assign: Vec<TokenStream> = key_idents
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let w = wrap("keys", quote!(v));
            quote! {
                if let Some(v) = __new[#i].take() {
                    sealed.#k = Some(#w);
                    __changed += 1;
                }
            }
        })
        .collect();
    let stored_keys: Vec<TokenStream> = key_idents
        .iter()
        .map(|k| {
            let v = view(quote!(v));
            quote! { sealed.#k.as_ref().map(|v| #v) }
        })
        .collect();

    // Model (or partial view) from unsealed values.
    // `owned`: the sealed row is consumed, so its unclassified fields move into the model.
    let rebuild_with = |partial: bool, owned: bool| -> Vec<TokenStream> {
        let mut out = Vec::new();
        for f in fields {
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
            let inner_ty = inner_type(&f.ty, c.optional);
            let decode = match c.raw {
                Some(_) => quote! { <#inner_ty as #p::RawField>::from_field_bytes(b, #column)? },
                None => quote! { #p::decode_json::<#inner_ty>(b, #column)? },
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
    };
    let rebuild = rebuild_with(false, false);
    let rebuild_owned = rebuild_with(false, true);
    let rebuild_partial = rebuild_with(true, false);
    let view = format_ident!("{}View", name);
    let view_fields = fields.iter().map(|f| {
        let (ident, ty) = (&f.ident, &f.ty);
        if f.classified.is_some() {
            quote! { #vis #ident: #p::Partial<#ty> }
        } else {
            quote! { #vis #ident: #ty }
        }
    });

    // Blind-index lookups: plaintext in, index values out (one per root version).
    let bidx_ty = stored("bidx");
    let bidx_wrap = wrap("bidx", quote!(v));
    let sea_lookup = |ident: &syn::Ident, column: &str| -> TokenStream {
        if !in_sea {
            return quote!();
        }
        let by = format_ident!("by_{}", ident);
        let lookup = format_ident!("{}_blind_index", ident);
        let bidx_variant = format_ident!("{}", upper_camel(&format!("{column}_bidx")));
        let (tenant_sql, tenant_cond) = match tenant {
            TenantSource::Field(f) => {
                let variant = format_ident!("{}", upper_camel(&f.to_string()));
                (
                    format!("{f} = ? AND "),
                    quote!(.add(Column::#variant.eq(keys.tenant().as_str()))),
                )
            }
            TenantSource::Fixed(_) => (String::new(), quote!()),
        };
        let doc = format!(
            "A SeaORM condition for rows of the key handle's tenant whose `{column}` equals `value`: `{tenant_sql}{column}_bidx IN (...)`. Plaintext in; no HMAC to compute."
        );
        quote! {
            #[doc = #doc]
            #vis fn #by(keys: &#p::TenantKeys, value: &[u8]) -> #p::Result<#p::sea_orm::Condition> {
                use #p::sea_orm::ColumnTrait;
                let wanted = #lookups_on::#lookup(keys, value)?;
                Ok(#p::sea_orm::Condition::all()
                    #tenant_cond
                    .add(Column::#bidx_variant.is_in(wanted)))
            }
        }
    };
    let diesel_lookup = |ident: &syn::Ident, column: &str| -> TokenStream {
        if in_sea {
            return sea_lookup(ident, column);
        }
        let Some(table) = diesel_table else {
            return quote!();
        };
        let by = format_ident!("by_{}", ident);
        let lookup = format_ident!("{}_blind_index", ident);
        let bidx_col = format_ident!("{}_bidx", column);
        let (doc, filter_ty, filter) = match tenant {
            TenantSource::Field(f) => (
                format!(
                    "A Diesel filter for rows of the key handle's tenant whose `{column}` equals `value`: `WHERE {f} = ? AND {column}_bidx IN (...)`. Plaintext in; no HMAC to compute."
                ),
                quote! {
                    #p::diesel::dsl::And<
                        #p::diesel::dsl::Eq<#table::#f, String>,
                        #p::diesel::dsl::EqAny<#table::#bidx_col, Vec<#p::BlindIndex>>,
                    >
                },
                quote!(#table::#f.eq(keys.tenant().as_str().to_string()).and(#table::#bidx_col.eq_any(wanted))),
            ),
            TenantSource::Fixed(_) => (
                format!(
                    "A Diesel filter for rows whose `{column}` equals `value`: `WHERE {column}_bidx IN (...)` (the table holds one tenant). Plaintext in; no HMAC to compute."
                ),
                quote!(#p::diesel::dsl::EqAny<#table::#bidx_col, Vec<#p::BlindIndex>>),
                quote!(#table::#bidx_col.eq_any(wanted)),
            ),
        };
        quote! {
            #[doc = #doc]
            #vis fn #by(keys: &#p::TenantKeys, value: &[u8]) -> #p::Result<#filter_ty> {
                #[allow(unused_imports)]
                use #p::diesel::{BoolExpressionMethods, ExpressionMethods};
                let wanted = #lookups_on::#lookup(keys, value)?;
                Ok(#filter)
            }
        }
    };
    let lookups = classified.iter().filter(|(_, _, c)| c.blind_index.is_some()).map(|(ident, _, c)| {
        let fn_name = format_ident!("{}_blind_index", ident);
        let column = &c.column;
        let diesel_filter = diesel_lookup(ident, column);
        let doc = format!("Blind index values of `{column}` for `value`, newest root first: match the `{column}_bidx` column with `IN (...)` and constrain the tenant column too.");
        quote! {
            #[doc = #doc]
            #vis fn #fn_name(keys: &#p::TenantKeys, value: &[u8]) -> #p::Result<Vec<#bidx_ty>> {
                let values = keys.blind_index_query(<#name as #p::Encrypted>::schema()?, #column, value)?;
                Ok(values.into_iter().map(|v| #bidx_wrap).collect())
            }

            #diesel_filter
        }
    });

    let lookups_decl = match lookups_type {
        Some(ns) => {
            let doc = format!(
                "Blind-index lookups of [`{name}`], generated by `#[derive(Encrypted)]` (`#[cmk(lookups = {ns})]`): kept off the model so they cannot meet its own associated items."
            );
            quote! {
                #[doc = #doc]
                #[derive(Debug, Clone, Copy)]
                #vis struct #ns;
            }
        }
        None => quote!(),
    };
    let class_strs = classes.iter();
    let diesel_derives = match diesel {
        Some(attrs) => quote! {
            #[derive(
                #p::diesel::Queryable,
                #p::diesel::Selectable,
                #p::diesel::Insertable,
                #p::diesel::AsChangeset
            )]
            #(#attrs)*
            #[diesel(treat_none_as_null = true)]
        },
        None if in_sea => {
            let attrs = sea_orm.as_deref().unwrap_or_default();
            quote! {
                #[derive(PartialEq, #p::sea_orm::DeriveEntityModel)]
                #(#attrs)*
            }
        }
        None => match explicit {
            Some(e) => {
                let (derives, attrs) = (&e.derives, &e.attrs);
                quote! {
                    #[derive(#(#derives),*)]
                    #(#attrs)*
                }
            }
            None => quote!(),
        },
    };
    // With database-assigned ids, Diesel needs an insertable form without the id column.
    let insertable = match (in_diesel, id, app_ids) {
        (true, Some(id), false) => {
            let mut names: Vec<syn::Ident> = Vec::new();
            for f in fields {
                names.push(f.ident.clone());
                if f.classified
                    .as_ref()
                    .is_some_and(|c| c.blind_index.is_some())
                {
                    names.push(format_ident!("{}_bidx", f.ident));
                }
            }
            names.extend(key_idents.iter().cloned());
            let kept: Vec<(&TokenStream, &syn::Ident)> = sealed_fields
                .iter()
                .zip(&names)
                .filter(|(_, n)| *n != id)
                .collect();
            let defs = kept.iter().map(|(d, _)| *d);
            let moves = kept.iter().map(|(_, n)| quote! { #n: self.#n });
            let new_name = format_ident!("New{}", sealed);
            let attrs = diesel.as_deref().unwrap_or_default();
            let doc = format!(
                "[`{sealed}`] without its database-assigned `{id}`, to insert. Generated by `#[derive(Encrypted)]`."
            );
            quote! {
                #[doc = #doc]
                #[derive(Debug, Clone, #p::diesel::Insertable)]
                #(#attrs)*
                #vis struct #new_name {
                    #(#defs,)*
                }

                #[automatically_derived]
                impl #sealed {
                    /// This row without its id, for an insert that lets the database assign it.
                    #vis fn without_id(self) -> #new_name {
                        #new_name { #(#moves,)* }
                    }
                }
            }
        }
        _ => quote!(),
    };
    // The sealed row knows its table, so `ops::insert(conn, &keys, &model)` needs no table.
    let has_table = match (in_diesel, diesel_table) {
        (true, Some(table)) => quote! {
            #[automatically_derived]
            impl #p::diesel::associations::HasTable for #sealed {
                type Table = #table::table;
                fn table() -> Self::Table {
                    #table::table
                }
            }
        },
        _ => quote!(),
    };
    let transparent_reads = if in_diesel {
        quote! {
            /// Loads the plaintext model through any Diesel query: builds the sealed row, then
            /// unseals it with the keys of the current key scope (an error outside one).
            #[automatically_derived]
            impl<__ST, __DB> #p::diesel::deserialize::Queryable<__ST, __DB> for #name
            where
                __DB: #p::diesel::backend::Backend,
                #sealed: #p::diesel::deserialize::Queryable<__ST, __DB>,
            {
                type Row = <#sealed as #p::diesel::deserialize::Queryable<__ST, __DB>>::Row;
                fn build(row: Self::Row) -> #p::diesel::deserialize::Result<Self> {
                    let sealed = <#sealed as #p::diesel::deserialize::Queryable<__ST, __DB>>::build(row)?;
                    #p::unseal_in_scope::<Self>(&sealed).map_err(::std::convert::Into::into)
                }
            }

            #[automatically_derived]
            impl<__DB: #p::diesel::backend::Backend> #p::diesel::Selectable<__DB> for #name
            where
                #sealed: #p::diesel::Selectable<__DB>,
            {
                type SelectExpression = <#sealed as #p::diesel::Selectable<__DB>>::SelectExpression;
                fn construct_selection() -> Self::SelectExpression {
                    <#sealed as #p::diesel::Selectable<__DB>>::construct_selection()
                }
            }
        }
    } else if in_sea {
        quote! {
            /// Loads the plaintext model from any SeaORM query (`into_model`, related finds):
            /// builds the sealed row, then unseals it with the keys of the current key scope.
            /// A related row that fails to unseal is an error, never a silent `None`.
            #[automatically_derived]
            impl #p::sea_orm::FromQueryResult for #name {
                fn from_query_result(res: &#p::sea_orm::QueryResult, pre: &str) -> ::core::result::Result<Self, #p::sea_orm::DbErr> {
                    let sealed = <#sealed as #p::sea_orm::FromQueryResult>::from_query_result(res, pre)?;
                    #p::unseal_in_scope::<Self>(&sealed).map_err(#p::sea::db_err)
                }

                fn from_query_result_optional(res: &#p::sea_orm::QueryResult, pre: &str) -> ::core::result::Result<Option<Self>, #p::sea_orm::DbErr> {
                    match <#sealed as #p::sea_orm::FromQueryResult>::from_query_result_nullable(res, pre) {
                        Ok(sealed) => #p::unseal_in_scope::<Self>(&sealed).map(Some).map_err(#p::sea::db_err),
                        Err(#p::sea_orm::TryGetError::Null(_)) => Ok(None),
                        Err(#p::sea_orm::TryGetError::DbErr(e)) => Err(e),
                    }
                }

                fn from_query_result_nullable(res: &#p::sea_orm::QueryResult, pre: &str) -> ::core::result::Result<Self, #p::sea_orm::TryGetError> {
                    let sealed = <#sealed as #p::sea_orm::FromQueryResult>::from_query_result_nullable(res, pre)?;
                    #p::unseal_in_scope::<Self>(&sealed).map_err(|e| #p::sea_orm::TryGetError::DbErr(#p::sea::db_err(e)))
                }
            }
        }
    } else {
        quote!()
    };
    let view_doc = format!(
        "[`{name}`] as an actor without every reader role sees it: each classified field is revealed or withheld. Generated by `#[derive(Encrypted)]`."
    );
    let sealed_doc = format!(
        "The stored row of [`{name}`]: classified fields as ciphertext, blind indexes and one key column per class. Generated by `#[derive(Encrypted)]`."
    );
    quote! {
        #[doc = #sealed_doc]
        #[derive(Debug, Clone)]
        #diesel_derives
        #vis struct #sealed {
            #(#sealed_fields,)*
        }

        #[doc = #view_doc]
        #[derive(Debug)]
        #vis struct #view {
            #(#view_fields,)*
        }

        #transparent_reads

        #has_table

        #insertable

        #lookups_decl

        #[automatically_derived]
        impl #lookups_on {
            #(#lookups)*
        }

        // Helpers in an anonymous scope: no name of the application's can meet them.
        const _: () = {
            /// The stored row viewed as cmk sees it, unsealed strictly or partially.
            fn __unseal_values(
                sealed: &#sealed,
                keys: &#p::TenantKeys,
                partial: bool,
            ) -> #p::Result<Vec<#p::Revealed>> {
                let schema = <#name as #p::Encrypted>::schema()?;
                let __fields: [Option<&[u8]>; #n_fields] = [#(#stored_fields),*];
                let __keys: [Option<&[u8]>; #n_keys] = [#(#stored_keys),*];
                let __row_id: Option<#p::RowId> = #row_id_sealed;
                let __row = #p::StoredRow {
                    tenant: #tenant_of_sealed,
                    row_id: __row_id.as_ref(),
                    key_columns: &__keys,
                    fields: &__fields,
                };
                let out = if partial { keys.unseal_partial(schema, &__row)? } else { keys.unseal(schema, &__row)? };
                Ok(out.values)
            }

        #[automatically_derived]
        impl #p::Encrypted for #name {
            type Sealed = #sealed;
            const TABLE: &'static str = #table;
            const CLASSES: &'static [&'static str] = &[#(#class_strs),*];
            const KEY_COLUMNS: &'static [&'static str] = &[#(#key_names),*];

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

            fn rekey(
                sealed: &mut #sealed,
                keys: &::std::sync::Arc<#p::TenantKeys>,
            ) -> #p::Result<usize> {
                let schema = <Self as #p::Encrypted>::schema()?;
                let mut __new: [Option<Vec<u8>>; #n_keys] = ::core::default::Default::default();
                {
                    let sealed: &#sealed = sealed;
                    let __fields: [Option<&[u8]>; #n_fields] = [#(#stored_fields),*];
                    let __keys: [Option<&[u8]>; #n_keys] = [#(#stored_keys),*];
                    let __row_id: Option<#p::RowId> = #row_id_sealed;
                    let __row = #p::StoredRow {
                        tenant: #tenant_of_sealed,
                        row_id: __row_id.as_ref(),
                        key_columns: &__keys,
                        fields: &__fields,
                    };
                    for (__k, __slot) in __new.iter_mut().enumerate() {
                        *__slot = keys.rekey_key_column(schema, __k, &__row)?;
                    }
                }
                let mut __changed = 0;
                #(#rekey_assign)*
                Ok(__changed)
            }

            fn bound_row_id(&self) -> Option<#p::RowId> {
                #row_id
            }

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

            fn keep_classes(fresh: &mut #sealed, old: &#sealed, keep: &[bool]) {
                #(#keep_arms)*
            }

            fn key_columns(sealed: &#sealed) -> Vec<(&'static str, Option<&[u8]>)> {
                vec![#((#key_names, #stored_keys)),*]
            }

            type View = #view;

            fn unseal_partial(sealed: &#sealed, keys: &#p::TenantKeys) -> #p::Result<#view> {
                let mut __values = __unseal_values(sealed, keys, true)?.into_iter();
                Ok(#view { #(#rebuild_partial,)* })
            }

            fn unseal(sealed: &#sealed, keys: &#p::TenantKeys) -> #p::Result<Self> {
                let mut __values = __unseal_values(sealed, keys, false)?.into_iter();
                Ok(#name { #(#rebuild,)* })
            }

            fn unseal_owned(sealed: #sealed, keys: &#p::TenantKeys) -> #p::Result<Self> {
                let mut __values = __unseal_values(&sealed, keys, false)?.into_iter();
                Ok(#name { #(#rebuild_owned,)* })
            }
        }
        };
    }
}

/// `T` for a field of type `T` or `Option<T>`.
fn inner_type(ty: &syn::Type, optional: bool) -> TokenStream {
    if optional
        && let syn::Type::Path(p) = ty
        && let Some(last) = p.path.segments.last()
        && let syn::PathArguments::AngleBracketed(args) = &last.arguments
        && let Some(syn::GenericArgument::Type(inner)) = args.args.first()
    {
        return quote!(#inner);
    }
    quote!(#ty)
}

/// `snake_case` to `UpperCamelCase`, as SeaORM names its `Column` variants.
fn upper_camel(snake: &str) -> String {
    snake
        .split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}
