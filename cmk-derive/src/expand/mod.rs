//! Code generation, split by what it generates: the sealed and view types ([`types`]), sealing
//! ([`seal`]), unsealing ([`unseal`]), blind-index lookups ([`lookups`]) and transparent ORM
//! reads ([`reads`]). [`Gen`] holds what they share.

mod lookups;
mod reads;
mod seal;
mod types;
mod unseal;

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{DeriveInput, Ident};

use crate::ast::{Classified, Field, Model};
use crate::attr::TenantSource;
use crate::check;
use crate::ctxt::Ctxt;

/// The derive: parse, check, generate; on any mistake, the errors and a fallback impl.
pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    let cx = Ctxt::new();
    let model = Model::from_ast(&cx, input);
    check::check(&cx, &model);
    match cx.check() {
        Ok(()) => expand(&model),
        Err(errors) => {
            let mut out = errors.to_compile_error();
            out.extend(fallback(input, &model));
            out
        }
    }
}

/// On error, an `Encrypted` impl whose items exist but never run, so that the application's
/// own uses of the model (`Patient::CLASSES`, `ops::insert`) do not add errors of their own
/// to the user's one mistake. Not for generic inputs, whose impl would need their parameters.
fn fallback(input: &DeriveInput, m: &Model) -> TokenStream {
    if !input.generics.params.is_empty() {
        return quote!();
    }
    let name = &input.ident;
    let p = private(m);
    quote! {
        #[automatically_derived]
        impl #p::Encrypted for #name {
            type Sealed = ();
            type View = ();
            const TABLE: &'static str = "";
            const CLASSES: &'static [&'static str] = &[];
            const KEY_COLUMNS: &'static [&'static str] = &[];
            fn schema() -> #p::Result<&'static #p::RowSchema> {
                ::core::unimplemented!("#[derive(Encrypted)] failed")
            }
            fn seal(&self, _: &#p::TenantKeys) -> #p::Result<()> {
                ::core::unimplemented!("#[derive(Encrypted)] failed")
            }
            fn unseal(_: &(), _: &#p::TenantKeys) -> #p::Result<Self> {
                ::core::unimplemented!("#[derive(Encrypted)] failed")
            }
            fn unseal_partial(_: &(), _: &#p::TenantKeys) -> #p::Result<()> {
                ::core::unimplemented!("#[derive(Encrypted)] failed")
            }
            fn key_columns(_: &()) -> ::std::vec::Vec<(&'static str, Option<&[u8]>)> {
                ::std::vec::Vec::new()
            }
            fn rekey(_: &mut (), _: &::std::sync::Arc<#p::TenantKeys>) -> #p::Result<usize> {
                ::core::unimplemented!("#[derive(Encrypted)] failed")
            }
        }
    }
}

/// The runtime paths generated code uses: `::cmk::__private`, or under `#[cmk(crate = ...)]`.
fn private(m: &Model) -> TokenStream {
    let krate = m.krate();
    quote!(#krate::__private)
}

/// `tokens` with every token at `span`, so that a type error in an expression built from them
/// is reported there (at the user's field) rather than at the derive.
pub(crate) fn respan(tokens: TokenStream, span: proc_macro2::Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut t| {
            if let proc_macro2::TokenTree::Group(g) = &t {
                let mut group = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                t = proc_macro2::TokenTree::Group(group);
            } else {
                t.set_span(span);
            }
            t
        })
        .collect()
}

/// What the generators share: the model and the names and types derived from it.
pub(crate) struct Gen<'a> {
    pub m: &'a Model,
    /// `::cmk::__private`.
    pub p: TokenStream,
    pub name: &'a Ident,
    pub vis: &'a syn::Visibility,
    pub sealed: Ident,
    pub in_diesel: bool,
    pub in_sea: bool,
    pub classified: Vec<(&'a Field, &'a Classified)>,
    pub key_classes: Vec<String>,
    /// The key columns' field names, one per key class.
    pub key_idents: Vec<Ident>,
}

/// What a stored column holds.
#[derive(Clone, Copy)]
pub(crate) enum Stored {
    Field,
    BlindIndex,
    Keys,
}

impl<'a> Gen<'a> {
    fn new(m: &'a Model) -> Self {
        let key_classes = m.key_classes();
        Gen {
            p: private(m),
            name: &m.name,
            vis: &m.vis,
            sealed: m.sealed(),
            in_diesel: m.diesel().is_some(),
            in_sea: m.sea_orm().is_some(),
            classified: m.classified().collect(),
            key_idents: key_classes
                .iter()
                .map(|c| format_ident!("{}", m.key_column_name(c)))
                .collect(),
            key_classes,
            m,
        }
    }

    /// Stored columns are column newtypes with SQL types of their own (Diesel or SeaORM
    /// mode), or plain bytes.
    fn typed(&self) -> bool {
        self.in_diesel || self.in_sea
    }

    /// The stored type of a column.
    fn stored(&self, kind: Stored) -> TokenStream {
        let p = &self.p;
        let m = if self.in_sea {
            quote!(#p::sea)
        } else {
            quote!(#p)
        };
        match (self.typed(), kind) {
            (false, _) => quote!(Vec<u8>),
            (true, Stored::BlindIndex) => quote!(#m::BlindIndex),
            (true, Stored::Keys) => quote!(#m::KeyColumn),
            (true, Stored::Field) => quote!(#m::Ciphertext),
        }
    }

    /// A sealed `Vec<u8>` as the stored type.
    fn wrap(&self, kind: Stored, v: TokenStream) -> TokenStream {
        if self.typed() {
            let ty = self.stored(kind);
            quote!(#ty::__from_cmk(#v))
        } else {
            v
        }
    }

    /// A stored value viewed as bytes.
    fn view(&self, v: TokenStream) -> TokenStream {
        if self.typed() {
            quote!(#v.as_bytes())
        } else {
            quote!(#v.as_slice())
        }
    }

    /// The model's field, or the type where the lookups go (`lookups = Name`).
    fn lookups_on(&self) -> &Ident {
        self.m.attrs.lookups.as_ref().unwrap_or(self.name)
    }

    /// The field named `ident`.
    fn field(&self, ident: &Ident) -> Option<&'a Field> {
        self.m.fields.iter().find(|f| f.ident == *ident)
    }

    /// The tenant of a model or stored row (`owner`) as `&str`: its field (a type that is not
    /// `AsRef<str>` is reported at the field's type), or the fixed one.
    fn tenant_of(&self, owner: TokenStream) -> TokenStream {
        match self.m.tenant() {
            Some(TenantSource::Field(f)) => {
                let span = self.field(f).map_or(f.span(), |field| field.ty.span());
                respan(
                    quote!(::core::convert::AsRef::<str>::as_ref(&#owner.#f)),
                    span,
                )
            }
            Some(TenantSource::Fixed(lit)) => quote!(#lit),
            None => quote!(""),
        }
    }

    /// The bound row id of a model or stored row (`owner`): through `IntoRowId` (a type that
    /// does not implement it is reported at the id field's type), or the application's
    /// `row_id` function; `None` unless ids are application-assigned.
    fn row_id_of(&self, owner: TokenStream) -> TokenStream {
        let (Some(id), true) = (&self.m.attrs.id, self.m.app_ids()) else {
            return quote!(None);
        };
        let p = &self.p;
        match &self.m.attrs.row_id {
            Some((f, _)) => quote! { Some(#f(&#owner.#id)) },
            None => {
                let span = self.field(id).map_or(id.span(), |field| field.ty.span());
                respan(quote!(Some(#p::IntoRowId::to_row_id(&#owner.#id))), span)
            }
        }
    }

    /// The `#[diesel(column_name)]` or `#[sea_orm(column_name)]` of a sealed field whose
    /// column is not its name.
    fn column_attr(&self, column: &str, ident: &Ident) -> TokenStream {
        if *ident == column {
            quote!()
        } else if self.in_diesel {
            let col = format_ident!("{}", column);
            quote!(#[diesel(column_name = #col)])
        } else if self.in_sea {
            quote!(#[sea_orm(column_name = #column)])
        } else {
            quote!()
        }
    }
}

/// The generated items of a checked model.
fn expand(m: &Model) -> TokenStream {
    let g = Gen::new(m);
    let (name, sealed, p) = (g.name, &g.sealed, &g.p);
    let (types, type_impls) = types::types(&g);
    let reads = reads::transparent_reads(&g);
    let (lookups_type, lookups) = lookups::lookups(&g);
    let unseal_helper = unseal::unseal_values_fn(&g);
    let seal_items = seal::seal_items(&g);
    let unseal_items = unseal::unseal_items(&g);
    let table = m.table();
    let classes = m.classes();
    let key_names: Vec<String> = g.key_idents.iter().map(|k| k.to_string()).collect();
    quote! {
        #types

        #lookups_type

        // Impls and helpers in an anonymous scope: no name of the application's can meet
        // the helpers, and the impls apply all the same.
        const _: () = {
            #type_impls

            #reads

            #lookups

            #unseal_helper

            #[automatically_derived]
            impl #p::Encrypted for #name {
                type Sealed = #sealed;
                const TABLE: &'static str = #table;
                const CLASSES: &'static [&'static str] = &[#(#classes),*];
                const KEY_COLUMNS: &'static [&'static str] = &[#(#key_names),*];

                #seal_items

                #unseal_items
            }
        };
    }
}
