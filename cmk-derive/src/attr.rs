//! Reading `#[cmk(...)]` (and the `#[diesel]` / `#[sea_orm]` attributes the derive forwards):
//! the syntax of each key and the format of its literal. Whether the keys fit together is
//! [`crate::check`]'s job.

use proc_macro2::Span;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Attribute, DeriveInput, Ident, LitInt, LitStr};

use crate::ctxt::Ctxt;
use crate::symbol::{
    ATTR, BLIND_INDEX, CLASS, COLUMN, CRATE, DERIVE, DETERMINISTIC, FIELD_KEYS, HIDE_NULL, ID, IDS,
    KEY_COLUMNS, LOOKUPS, NORMALIZE, NORMALIZERS, PAD, ROW_ID, SEALED, STRUCT_KEYS, TABLE, TENANT,
};

/// A value an attribute key may be given once; a second one is reported at its key.
pub(crate) struct Attr<'c, T> {
    cx: &'c Ctxt,
    name: &'static str,
    value: Option<T>,
}

impl<'c, T> Attr<'c, T> {
    pub(crate) fn none(cx: &'c Ctxt, name: &'static str) -> Self {
        Attr {
            cx,
            name,
            value: None,
        }
    }

    pub(crate) fn set(&mut self, key: &Ident, value: T) {
        if self.value.is_some() {
            let name = self.name;
            self.cx.error(
                key.span(),
                format!("duplicate `{name}` attribute: give it once"),
            );
        } else {
            self.value = Some(value);
        }
    }

    pub(crate) fn get(self) -> Option<T> {
        self.value
    }
}

/// Where a row's tenant comes from.
pub(crate) enum TenantSource {
    /// A field of the model (and a column of the table).
    Field(Ident),
    /// One fixed tenant for the whole table (`tenant = "conduit"`): no column, still bound
    /// into every ciphertext.
    Fixed(LitStr),
}

/// Derives and attributes listed for the sealed type (`sealed(derive(...), attr(...))`).
pub(crate) struct Explicit {
    pub derives: Vec<syn::Path>,
    pub attrs: Vec<proc_macro2::TokenStream>,
}

/// The struct's attributes as written.
pub(crate) struct Container {
    pub table: Option<(String, Span)>,
    pub tenant: Option<TenantSource>,
    pub id: Option<Ident>,
    pub ids: Option<(String, Span)>,
    pub row_id: Option<(syn::Path, Span)>,
    pub sealed: Option<Ident>,
    pub explicit: Option<Explicit>,
    pub key_pattern: Option<String>,
    pub krate: Option<syn::Path>,
    pub lookups: Option<Ident>,
    /// An unknown or malformed key (likely a misspelling): "missing" errors would only repeat it.
    pub malformed: bool,
    /// `#[diesel(...)]` of the struct, and the table it names.
    pub diesel: Vec<Attribute>,
    pub diesel_table: Option<syn::Path>,
    /// `#[sea_orm(...)]` of the struct.
    pub sea_orm: Vec<Attribute>,
}

/// The slots of the struct's keys while they are read.
struct ContainerSlots<'c> {
    table: Attr<'c, (String, Span)>,
    tenant: Attr<'c, TenantSource>,
    id: Attr<'c, Ident>,
    ids: Attr<'c, (String, Span)>,
    row_id: Attr<'c, (syn::Path, Span)>,
    sealed: Attr<'c, Ident>,
    explicit: Attr<'c, Explicit>,
    key_pattern: Attr<'c, String>,
    krate: Attr<'c, syn::Path>,
    lookups: Attr<'c, Ident>,
    malformed: bool,
}

/// A field's `#[cmk(...)]` keys as written.
pub(crate) struct FieldAttrs {
    pub class: Option<(String, Span)>,
    pub column: Option<String>,
    /// The normaliser and the span of what named it.
    pub blind_index: Option<(String, Span)>,
    pub deterministic: Option<Span>,
    pub hide_null: Option<Span>,
    pub pad: Option<u16>,
}

/// The attributes of `attrs` with path `name`.
pub(crate) fn named<'a>(
    attrs: &'a [Attribute],
    name: &'a str,
) -> impl Iterator<Item = &'a Attribute> {
    attrs.iter().filter(move |a| a.path().is_ident(name))
}

/// Consumes the value of an attribute key that is refused, so that one mistake gives one
/// error (not a parse error on the tokens after it).
pub(crate) fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        let value = meta.value()?;
        while !value.is_empty() && !value.peek(syn::Token![,]) {
            value.parse::<proc_macro2::TokenTree>()?;
        }
    } else if meta.input.peek(syn::token::Paren) {
        meta.input.parse::<proc_macro2::TokenTree>()?;
    }
    Ok(())
}

/// Reads the struct's `#[cmk(...)]`, `#[diesel(...)]` and `#[sea_orm(...)]` attributes.
pub(crate) fn container(cx: &Ctxt, input: &DeriveInput) -> Container {
    let mut slots = ContainerSlots {
        table: Attr::none(cx, TABLE),
        tenant: Attr::none(cx, TENANT),
        id: Attr::none(cx, ID),
        ids: Attr::none(cx, IDS),
        row_id: Attr::none(cx, ROW_ID),
        sealed: Attr::none(cx, SEALED),
        explicit: Attr::none(cx, SEALED),
        key_pattern: Attr::none(cx, KEY_COLUMNS),
        krate: Attr::none(cx, CRATE),
        lookups: Attr::none(cx, LOOKUPS),
        malformed: false,
    };
    for attr in named(&input.attrs, "cmk") {
        let parsed = attr.parse_nested_meta(|meta| container_key(cx, &meta, &mut slots));
        if let Err(e) = parsed {
            cx.error(
                e.span(),
                format!("{e}; the correct format looks like #[cmk(table = \"patients\", tenant = tenant_id)]"),
            );
            slots.malformed = true;
        }
    }
    let diesel: Vec<Attribute> = named(&input.attrs, "diesel").cloned().collect();
    let sea_orm: Vec<Attribute> = named(&input.attrs, "sea_orm").cloned().collect();
    let diesel_table = orm_table_name(&diesel);
    // Without `table`, the ORM's table name is the stored table's.
    let table = slots.table.get().or_else(|| {
        sea_orm_table_name(&sea_orm).or_else(|| {
            let last = diesel_table.as_ref()?.segments.last()?;
            Some((last.ident.to_string(), last.ident.span()))
        })
    });
    Container {
        table,
        tenant: slots.tenant.get(),
        id: slots.id.get(),
        ids: slots.ids.get(),
        row_id: slots.row_id.get(),
        sealed: slots.sealed.get(),
        explicit: slots.explicit.get(),
        key_pattern: slots.key_pattern.get(),
        krate: slots.krate.get(),
        lookups: slots.lookups.get(),
        malformed: slots.malformed,
        diesel,
        diesel_table,
        sea_orm,
    }
}

/// One key of the struct's `#[cmk(...)]`.
fn container_key(
    cx: &Ctxt,
    meta: &ParseNestedMeta<'_>,
    slots: &mut ContainerSlots<'_>,
) -> syn::Result<()> {
    let valid = STRUCT_KEYS.join(", ");
    let Some(key) = meta.path.get_ident().cloned() else {
        cx.error(
            meta.path.span(),
            format!("unknown attribute; valid ones on a struct: {valid}"),
        );
        slots.malformed = true;
        return skip_value(meta);
    };
    match key.to_string().as_str() {
        TABLE => {
            let lit: LitStr = meta.value()?.parse()?;
            if lit.value().is_empty() || lit.value().len() > 255 {
                cx.error(lit.span(), "a table name must be 1 to 255 bytes");
            }
            slots.table.set(&key, (lit.value(), lit.span()));
        }
        TENANT => {
            let value = meta.value()?;
            let source = if value.peek(LitStr) {
                let lit: LitStr = value.parse()?;
                if lit.value().is_empty() || lit.value().len() > 255 {
                    cx.error(lit.span(), "a fixed tenant id must be 1 to 255 bytes");
                }
                TenantSource::Fixed(lit)
            } else {
                TenantSource::Field(value.parse::<Ident>()?)
            };
            slots.tenant.set(&key, source);
        }
        LOOKUPS => slots.lookups.set(&key, meta.value()?.parse::<Ident>()?),
        ROW_ID => {
            let path: syn::Path = meta.value()?.parse()?;
            let span = path.span();
            slots.row_id.set(&key, (path, span));
        }
        ID => slots.id.set(&key, meta.value()?.parse::<Ident>()?),
        IDS => {
            let lit: LitStr = meta.value()?.parse()?;
            if lit.value() != "app" && lit.value() != "db" {
                cx.error(lit.span(), "`ids` must be \"app\" (application-assigned, bound into the ciphertext) or \"db\" (database-assigned, not bound)");
            }
            slots.ids.set(&key, (lit.value(), lit.span()));
        }
        SEALED if meta.input.peek(syn::token::Paren) => {
            let explicit = sealed_explicit(cx, meta)?;
            slots.explicit.set(&key, explicit);
        }
        SEALED => slots.sealed.set(&key, meta.value()?.parse::<Ident>()?),
        KEY_COLUMNS => {
            let lit: LitStr = meta.value()?.parse()?;
            let v = lit.value();
            let letters = v.replace("{class}", "x");
            if !v.contains("{class}")
                || letters
                    .bytes()
                    .any(|b| !(b.is_ascii_alphanumeric() || b == b'_'))
            {
                cx.error(lit.span(), "`key_columns` is a name pattern with `{class}` in it, of letters, digits and `_` (for example \"{class}_dek\")");
            }
            slots.key_pattern.set(&key, v);
        }
        CRATE => {
            let lit: LitStr = meta.value()?.parse()?;
            slots.krate.set(&key, lit.parse::<syn::Path>()?);
        }
        _ => {
            cx.error(
                key.span(),
                format!("unknown attribute `{key}`; valid ones on a struct: {valid}"),
            );
            slots.malformed = true;
            skip_value(meta)?;
        }
    }
    Ok(())
}

/// `sealed(derive(...), attr(...))`: derives and attributes for the sealed type, for a
/// plaintext struct that has its own ORM mapping.
fn sealed_explicit(cx: &Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<Explicit> {
    let mut derives: Vec<syn::Path> = Vec::new();
    let mut attrs: Vec<proc_macro2::TokenStream> = Vec::new();
    meta.parse_nested_meta(|inner| {
        if inner.path.is_ident(DERIVE) {
            inner.parse_nested_meta(|d| {
                derives.push(d.path.clone());
                Ok(())
            })
        } else if inner.path.is_ident(ATTR) {
            let content;
            syn::parenthesized!(content in inner.input);
            let all = content
                .parse_terminated(<syn::Meta as syn::parse::Parse>::parse, syn::Token![,])?;
            attrs.extend(all.into_iter().map(|m| quote::quote!(#[#m])));
            Ok(())
        } else {
            cx.error(
                inner.path.span(),
                "unknown `sealed` option; the correct format looks like sealed(derive(Debug), attr(serde(rename_all = \"camelCase\")))",
            );
            skip_value(&inner)
        }
    })?;
    Ok(Explicit { derives, attrs })
}

/// `table_name = path` of `#[diesel(...)]`.
fn orm_table_name(attrs: &[Attribute]) -> Option<syn::Path> {
    let mut found = None;
    for a in attrs {
        let _ = a.parse_nested_meta(|meta| {
            if meta.path.is_ident("table_name") {
                found = Some(meta.value()?.parse()?);
            } else {
                skip_value(&meta)?;
            }
            Ok(())
        });
    }
    found
}

/// `table_name = "..."` of `#[sea_orm(...)]`.
fn sea_orm_table_name(attrs: &[Attribute]) -> Option<(String, Span)> {
    let mut found = None;
    for a in attrs {
        let _ = a.parse_nested_meta(|meta| {
            if meta.path.is_ident("table_name") {
                let lit: LitStr = meta.value()?.parse()?;
                found = Some((lit.value(), lit.span()));
            } else {
                skip_value(&meta)?;
            }
            Ok(())
        });
    }
    found
}

/// Reads a field's `#[cmk(...)]`; `None` when it has none (an unclassified field).
pub(crate) fn field(cx: &Ctxt, f: &syn::Field) -> Option<FieldAttrs> {
    let attrs: Vec<&Attribute> = named(&f.attrs, "cmk").collect();
    if attrs.is_empty() {
        return None;
    }
    let mut class = Attr::none(cx, CLASS);
    let mut column = Attr::none(cx, COLUMN);
    let mut blind = Attr::none(cx, BLIND_INDEX);
    let mut det = Attr::none(cx, DETERMINISTIC);
    let mut hide = Attr::none(cx, HIDE_NULL);
    let mut pad = Attr::none(cx, PAD);
    for attr in attrs {
        let parsed = attr.parse_nested_meta(|meta| {
            let valid = FIELD_KEYS.join(", ");
            let Some(key) = meta.path.get_ident().cloned() else {
                cx.error(
                    meta.path.span(),
                    format!("unknown attribute; valid ones on a field: {valid}"),
                );
                return skip_value(&meta);
            };
            match key.to_string().as_str() {
                CLASS => {
                    let lit: LitStr = meta.value()?.parse()?;
                    if !valid_class(&lit.value()) {
                        cx.error(lit.span(), "a class name must be 1 to 32 bytes of a-z, 0-9, `_` or `-` (for example \"restricted\")");
                    }
                    class.set(&key, (lit.value(), lit.span()));
                }
                COLUMN => {
                    let lit: LitStr = meta.value()?.parse()?;
                    if lit.value().is_empty() || lit.value().len() > 127 {
                        cx.error(lit.span(), "a column name must be 1 to 127 bytes");
                    }
                    column.set(&key, lit.value());
                }
                BLIND_INDEX => blind.set(&key, blind_index(cx, &meta, &key)?),
                DETERMINISTIC => det.set(&key, key.span()),
                HIDE_NULL => hide.set(&key, key.span()),
                PAD => {
                    let lit: LitInt = meta.value()?.parse()?;
                    match lit.base10_parse::<u16>() {
                        Ok(n) if n <= 4096 => pad.set(&key, n),
                        _ => cx.error(lit.span(), "`pad` is a block size in bytes from 0 to 4096"),
                    }
                }
                "sql_type" | "column_type" | "type" => {
                    cx.error(
                        key.span(),
                        format!("`{key}` cannot be set on an encrypted field: its stored type is cmk's ciphertext"),
                    );
                    skip_value(&meta)?;
                }
                _ => {
                    cx.error(
                        key.span(),
                        format!("unknown attribute `{key}`; valid ones on a field: {valid}"),
                    );
                    skip_value(&meta)?;
                }
            }
            Ok(())
        });
        if let Err(e) = parsed {
            cx.error(
                e.span(),
                format!("{e}; the correct format looks like #[cmk(class = \"restricted\")]"),
            );
        }
    }
    Some(FieldAttrs {
        class: class.get(),
        column: column.get(),
        blind_index: blind.get(),
        deterministic: det.get(),
        hide_null: hide.get(),
        pad: pad.get(),
    })
}

/// `blind_index` or `blind_index(normalize = "...")`: the normaliser and its span.
fn blind_index(cx: &Ctxt, meta: &ParseNestedMeta<'_>, key: &Ident) -> syn::Result<(String, Span)> {
    let mut normalize = ("exact".to_string(), key.span());
    if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|inner| {
            if inner.path.is_ident(NORMALIZE) {
                let lit: LitStr = inner.value()?.parse()?;
                if !NORMALIZERS.contains(&lit.value().as_str()) {
                    cx.error(
                        lit.span(),
                        format!("unknown normaliser; use one of {}", NORMALIZERS.join(", ")),
                    );
                }
                normalize = (lit.value(), lit.span());
            } else {
                cx.error(inner.path.span(), "unknown blind_index option; the correct format looks like blind_index(normalize = \"casefold\")");
            }
            Ok(())
        })?;
    }
    Ok(normalize)
}

fn valid_class(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}
