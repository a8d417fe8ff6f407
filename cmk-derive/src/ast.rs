//! The typed model of a `#[derive(Encrypted)]` input: the struct, its fields and what their
//! attributes say, built from syn's tree. Nothing here generates code.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Attribute, Data, DeriveInput, Fields, GenericArgument, Ident, PathArguments, Type};

use crate::attr::{self, Container, Explicit, TenantSource};
use crate::ctxt::Ctxt;

pub(crate) struct Model {
    pub vis: syn::Visibility,
    pub name: Ident,
    /// The struct has named fields (errors about the rest are then worth reporting).
    pub named: bool,
    pub attrs: Container,
    pub fields: Vec<Field>,
}

pub(crate) struct Field {
    pub ident: Ident,
    pub ty: Type,
    pub classified: Option<Classified>,
    /// `#[diesel(...)]` attributes of the field, forwarded.
    pub diesel: Vec<Attribute>,
    /// `#[sea_orm(...)]` attributes of the field, forwarded.
    pub sea_orm: Vec<Attribute>,
}

pub(crate) struct Classified {
    pub class: String,
    pub column: String,
    /// `Some(normaliser)` for a blind index.
    pub blind_index: Option<String>,
    pub deterministic: bool,
    pub hide_null: bool,
    pub pad: u16,
    /// The field is `Option<T>`.
    pub optional: bool,
    /// `T` (or the `T` of `Option<T>`) is `String` or `Vec<u8>`: stored by its own bytes.
    pub raw: Option<RawKind>,
    /// Where the options were written, for the checks' errors.
    pub spans: OptionSpans,
}

/// The spans of a classified field's options.
#[derive(Default)]
pub(crate) struct OptionSpans {
    pub blind_index: Option<Span>,
    pub deterministic: Option<Span>,
    pub hide_null: Option<Span>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawKind {
    String,
    Bytes,
}

impl Classified {
    pub(crate) fn is_envelope(&self) -> bool {
        !self.deterministic
    }
}

impl Model {
    /// Reads the input; every mistake goes to `cx`.
    pub(crate) fn from_ast(cx: &Ctxt, input: &DeriveInput) -> Model {
        let named = named_fields(cx, input);
        if !input.generics.params.is_empty() {
            cx.error(
                input.generics.span(),
                "`Encrypted` does not support generic structs: use a concrete type",
            );
        }
        let attrs = attr::container(cx, input);
        let fields = named
            .map(|n| n.named.iter())
            .into_iter()
            .flatten()
            .filter_map(|f| {
                Some(Field {
                    ident: f.ident.clone()?,
                    ty: f.ty.clone(),
                    classified: classified(cx, f),
                    diesel: attr::named(&f.attrs, "diesel").cloned().collect(),
                    sea_orm: attr::named(&f.attrs, "sea_orm").cloned().collect(),
                })
            })
            .collect();
        Model {
            vis: input.vis.clone(),
            name: input.ident.clone(),
            named: named.is_some(),
            attrs,
            fields,
        }
    }

    pub(crate) fn table(&self) -> &str {
        self.attrs.table.as_ref().map_or("", |(t, _)| t)
    }

    pub(crate) fn tenant(&self) -> Option<&TenantSource> {
        self.attrs.tenant.as_ref()
    }

    /// Ids are application-assigned and bound into every ciphertext.
    pub(crate) fn app_ids(&self) -> bool {
        self.attrs.ids.as_ref().is_some_and(|(v, _)| v == "app")
    }

    /// The sealed type's name: as given, `Model` for SeaORM (its entity derive wants that),
    /// else `Sealed<Name>`.
    pub(crate) fn sealed(&self) -> Ident {
        match &self.attrs.sealed {
            Some(s) => s.clone(),
            None if !self.attrs.sea_orm.is_empty() => Ident::new("Model", self.name.span()),
            None => Ident::new(&format!("Sealed{}", self.name), self.name.span()),
        }
    }

    pub(crate) fn krate(&self) -> syn::Path {
        self.attrs
            .krate
            .clone()
            .unwrap_or_else(|| syn::parse_quote!(::cmk))
    }

    /// `#[diesel(...)]` of the struct when Diesel mode is on (the explicit form wins: the
    /// plaintext struct's own `#[diesel]` belongs to its own derives then).
    pub(crate) fn diesel(&self) -> Option<&[Attribute]> {
        let a = &self.attrs;
        (!a.diesel.is_empty() && a.explicit.is_none()).then_some(&a.diesel[..])
    }

    /// `#[sea_orm(...)]` of the struct when SeaORM mode is on.
    pub(crate) fn sea_orm(&self) -> Option<&[Attribute]> {
        let a = &self.attrs;
        (!a.sea_orm.is_empty() && a.explicit.is_none()).then_some(&a.sea_orm[..])
    }

    /// The Diesel table module, for tenant-constrained lookups.
    pub(crate) fn diesel_table(&self) -> Option<&syn::Path> {
        self.attrs
            .diesel_table
            .as_ref()
            .filter(|_| self.attrs.explicit.is_none())
    }

    pub(crate) fn explicit(&self) -> Option<&Explicit> {
        self.attrs.explicit.as_ref()
    }

    /// The classified fields, in order.
    pub(crate) fn classified(&self) -> impl Iterator<Item = (&Field, &Classified)> {
        self.fields
            .iter()
            .filter_map(|f| f.classified.as_ref().map(|c| (f, c)))
    }

    /// Classes that get a key column, in the order `RowSchema` gives them: first appearance
    /// among envelope (non-deterministic) fields.
    pub(crate) fn key_classes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (_, c) in self.classified().filter(|(_, c)| c.is_envelope()) {
            if !out.contains(&c.class) {
                out.push(c.class.clone());
            }
        }
        out
    }

    /// Every class of the model, in order of first appearance.
    pub(crate) fn classes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (_, c) in self.classified() {
            if !out.contains(&c.class) {
                out.push(c.class.clone());
            }
        }
        out
    }

    /// The key column of a class: `<class>_keys` by default (a `-` becomes `_`).
    pub(crate) fn key_column_name(&self, class: &str) -> String {
        self.attrs
            .key_pattern
            .as_deref()
            .unwrap_or("{class}_keys")
            .replace("{class}", &class.replace('-', "_"))
    }
}

impl Field {
    /// The column the field is stored in: the `column_name` of its `#[diesel(...)]` (an
    /// identifier or a string) or `#[sea_orm(...)]` (a string), else its own name. The
    /// manifest names the tenant and id columns with it, so that a reader finds renamed ones.
    pub(crate) fn column(&self) -> String {
        self.diesel
            .iter()
            .chain(&self.sea_orm)
            .find_map(column_name_of)
            .unwrap_or_else(|| self.ident.to_string())
    }
}

/// `column_name = x` or `column_name = "x"` in one ORM attribute, if it holds one.
fn column_name_of(attr: &Attribute) -> Option<String> {
    let mut found = None;
    // An entry this parser does not know ends the search, which then falls back to the
    // field's name: the ORM itself reports a malformed attribute.
    let _ = attr.parse_nested_meta(|meta| {
        if meta.path.is_ident("column_name") {
            let value = meta.value()?;
            found = Some(if value.peek(syn::LitStr) {
                value.parse::<syn::LitStr>()?.value()
            } else {
                value.parse::<Ident>()?.to_string()
            });
        } else if meta.input.peek(syn::Token![=]) {
            let value = meta.value()?;
            if value.peek(syn::Lit) {
                value.parse::<syn::Lit>()?;
            } else {
                value.parse::<syn::Path>()?;
            }
        }
        Ok(())
    });
    found
}

/// The named fields, or an error for any other shape of input.
fn named_fields<'a>(cx: &Ctxt, input: &'a DeriveInput) -> Option<&'a syn::FieldsNamed> {
    match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => return Some(named),
            Fields::Unnamed(_) => cx.error(
                input.ident.span(),
                "`Encrypted` needs a struct with named fields, not a tuple struct",
            ),
            Fields::Unit => cx.error(
                input.ident.span(),
                "`Encrypted` needs a struct with named fields, not a unit struct",
            ),
        },
        Data::Enum(e) => cx.error(
            e.enum_token.span(),
            "`Encrypted` can only be derived for a struct with named fields, not an enum",
        ),
        Data::Union(u) => cx.error(
            u.union_token.span(),
            "`Encrypted` can only be derived for a struct with named fields, not a union",
        ),
    }
    None
}

/// A field's classification, from its `#[cmk(...)]`; `None` for an unclassified field (or one
/// whose class is missing, which is reported).
fn classified(cx: &Ctxt, f: &syn::Field) -> Option<Classified> {
    let attrs = attr::field(cx, f)?;
    let ident = f.ident.as_ref()?;
    let Some((class, _)) = attrs.class else {
        cx.error(
            ident.span(),
            "a field with #[cmk(...)] needs a class: add class = \"...\"",
        );
        return None;
    };
    let inner = option_inner(&f.ty);
    Some(Classified {
        class,
        column: attrs.column.unwrap_or_else(|| ident.to_string()),
        blind_index: attrs.blind_index.as_ref().map(|b| b.0.clone()),
        deterministic: attrs.deterministic.is_some(),
        hide_null: attrs.hide_null.is_some(),
        pad: attrs.pad.unwrap_or(0),
        optional: inner.is_some(),
        raw: raw_kind(inner.unwrap_or(&f.ty)),
        spans: OptionSpans {
            blind_index: attrs.blind_index.map(|b| b.1),
            deterministic: attrs.deterministic,
            hide_null: attrs.hide_null,
        },
    })
}

/// `T` of `Option<T>`, if the type is an `Option`.
pub(crate) fn option_inner(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Option" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    }
}

fn raw_kind(ty: &Type) -> Option<RawKind> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident == "String" && last.arguments.is_empty() {
        return Some(RawKind::String);
    }
    if last.ident == "Vec"
        && let PathArguments::AngleBracketed(args) = &last.arguments
        && let Some(GenericArgument::Type(Type::Path(inner))) = args.args.first()
        && inner.path.is_ident("u8")
    {
        return Some(RawKind::Bytes);
    }
    None
}
