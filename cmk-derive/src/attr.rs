//! Parsing and checking `#[cmk(...)]` attributes. Every mistake is collected (not just the
//! first), each with the span of the offending token and a message that names the fix.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{
    Attribute, Data, DeriveInput, Fields, GenericArgument, Ident, LitInt, LitStr, PathArguments,
    Type,
};

/// Collects errors so the user sees every mistake at once.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, span: Span, msg: impl std::fmt::Display) {
        let e = syn::Error::new(span, msg);
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub fn into_result(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

const STRUCT_KEYS: &str = "table, tenant, id, ids, row_id, sealed, key_columns, lookups, crate";
const FIELD_KEYS: &str = "class, column, blind_index, deterministic, hide_null, pad";

/// Normaliser names, as `cmk_core::crypto::normalize::Normalizer` spells them.
pub const NORMALIZERS: [&str; 3] = ["exact", "trimmed", "casefold"];

pub struct Model {
    pub vis: syn::Visibility,
    pub name: Ident,
    pub table: String,
    pub tenant: TenantSource,
    /// `lookups = Name`: the blind-index lookups go on a generated unit struct of that name
    /// instead of the model (where they could meet the application's own associated items).
    pub lookups: Option<Ident>,
    /// `row_id = path`: a function `fn(&Id) -> RowId` binding an id type of another crate.
    pub row_id: Option<syn::Path>,
    pub id: Option<Ident>,
    pub app_ids: bool,
    pub sealed: Ident,
    pub krate: syn::Path,
    /// Key column name pattern (`{class}` is replaced); default `{class}_keys`.
    pub key_pattern: Option<String>,
    pub fields: Vec<Field>,
    /// `#[diesel(...)]` attributes of the struct, forwarded to the sealed type; `Some` turns
    /// Diesel mode on (column newtypes, Diesel derives, transparent reads).
    pub diesel: Option<Vec<Attribute>>,
    /// The Diesel table (`#[diesel(table_name = ...)]`), for tenant-constrained lookups.
    pub diesel_table: Option<syn::Path>,
    /// `sealed(derive(...), attr(...))`: the sealed type gets these instead of forwarded ORM
    /// attributes (and the plaintext struct keeps its own ORM mapping).
    pub explicit: Option<Explicit>,
    /// `#[sea_orm(...)]` attributes of the struct, forwarded; `Some` turns SeaORM mode on.
    pub sea_orm: Option<Vec<Attribute>>,
}

/// Where a row's tenant comes from.
pub enum TenantSource {
    /// A field of the model (and a column of the table).
    Field(Ident),
    /// One fixed tenant for the whole table (`tenant = "conduit"`): no column, still bound
    /// into every ciphertext.
    Fixed(LitStr),
}

/// Derives and attributes listed for the sealed type.
pub struct Explicit {
    pub derives: Vec<syn::Path>,
    pub attrs: Vec<proc_macro2::TokenStream>,
}

pub struct Field {
    pub ident: Ident,
    pub ty: Type,
    pub classified: Option<Classified>,
    /// `#[diesel(...)]` attributes of the field, forwarded.
    pub diesel: Vec<Attribute>,
    /// `#[sea_orm(...)]` attributes of the field, forwarded.
    pub sea_orm: Vec<Attribute>,
}

pub struct Classified {
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
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RawKind {
    String,
    Bytes,
}

impl Classified {
    pub fn is_envelope(&self) -> bool {
        !self.deterministic
    }
}

/// Consumes the value of an attribute key that is refused, so that one mistake gives one
/// error (not a parse error on the tokens after it).
fn skip_value(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
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

fn set_once<T>(slot: &mut Option<T>, value: T, key: &Ident, errors: &mut Errors) {
    if slot.is_some() {
        errors.push(
            key.span(),
            format!("duplicate `{key}` attribute: give it once"),
        );
    } else {
        *slot = Some(value);
    }
}

fn valid_class(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `T` of `Option<T>`, if the type is an `Option`.
fn option_inner(ty: &Type) -> Option<&Type> {
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

fn cmk_attrs(attrs: &[Attribute]) -> impl Iterator<Item = &Attribute> {
    attrs.iter().filter(|a| a.path().is_ident("cmk"))
}

pub fn parse(input: &DeriveInput) -> syn::Result<Model> {
    let mut errors = Errors::default();
    let named = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => Some(named),
            Fields::Unnamed(_) => {
                errors.push(
                    input.ident.span(),
                    "`Encrypted` needs a struct with named fields, not a tuple struct",
                );
                None
            }
            Fields::Unit => {
                errors.push(
                    input.ident.span(),
                    "`Encrypted` needs a struct with named fields, not a unit struct",
                );
                None
            }
        },
        Data::Enum(e) => {
            errors.push(
                e.enum_token.span(),
                "`Encrypted` can only be derived for a struct with named fields, not an enum",
            );
            None
        }
        Data::Union(u) => {
            errors.push(
                u.union_token.span(),
                "`Encrypted` can only be derived for a struct with named fields, not a union",
            );
            None
        }
    };
    if !input.generics.params.is_empty() {
        errors.push(
            input.generics.span(),
            "`Encrypted` does not support generic structs: use a concrete type",
        );
    }

    // Struct attributes.
    let mut unknown_struct_key = false;
    let mut key_pattern: Option<String> = None;
    let mut explicit: Option<Explicit> = None;
    let mut lookups: Option<Ident> = None;
    let mut row_id: Option<(syn::Path, Span)> = None;
    let (mut table, mut tenant, mut id, mut ids, mut sealed, mut krate) = (
        None::<(String, Span)>,
        None::<TenantSource>,
        None::<Ident>,
        None::<(String, Span)>,
        None::<Ident>,
        None::<syn::Path>,
    );
    for attr in cmk_attrs(&input.attrs) {
        let parsed = attr.parse_nested_meta(|meta| {
            let Some(key) = meta.path.get_ident().cloned() else {
                errors.push(meta.path.span(), format!("unknown attribute; valid ones on a struct: {STRUCT_KEYS}"));
                return Ok(());
            };
            match key.to_string().as_str() {
                "table" => {
                    let lit: LitStr = meta.value()?.parse()?;
                    if lit.value().is_empty() || lit.value().len() > 255 {
                        errors.push(lit.span(), "a table name must be 1 to 255 bytes");
                    }
                    set_once(&mut table, (lit.value(), lit.span()), &key, &mut errors);
                }
                "tenant" => {
                    let value = meta.value()?;
                    let source = if value.peek(LitStr) {
                        let lit: LitStr = value.parse()?;
                        if lit.value().is_empty() || lit.value().len() > 255 {
                            errors.push(lit.span(), "a fixed tenant id must be 1 to 255 bytes");
                        }
                        TenantSource::Fixed(lit)
                    } else {
                        TenantSource::Field(value.parse::<Ident>()?)
                    };
                    set_once(&mut tenant, source, &key, &mut errors)
                }
                "lookups" => set_once(&mut lookups, meta.value()?.parse::<Ident>()?, &key, &mut errors),
                "row_id" => {
                    let path: syn::Path = meta.value()?.parse()?;
                    let span = path.span();
                    set_once(&mut row_id, (path, span), &key, &mut errors)
                }
                "id" => set_once(&mut id, meta.value()?.parse::<Ident>()?, &key, &mut errors),
                "ids" => {
                    let lit: LitStr = meta.value()?.parse()?;
                    if lit.value() != "app" && lit.value() != "db" {
                        errors.push(lit.span(), "`ids` must be \"app\" (application-assigned, bound into the ciphertext) or \"db\" (database-assigned, not bound)");
                    }
                    set_once(&mut ids, (lit.value(), lit.span()), &key, &mut errors);
                }
                "sealed" if meta.input.peek(syn::token::Paren) => {
                    // Explicit form: derives and attributes for the sealed type, for a plaintext
                    // struct that has its own ORM mapping.
                    let mut derives: Vec<syn::Path> = Vec::new();
                    let mut attrs: Vec<proc_macro2::TokenStream> = Vec::new();
                    meta.parse_nested_meta(|inner| {
                        if inner.path.is_ident("derive") {
                            inner.parse_nested_meta(|d| {
                                derives.push(d.path.clone());
                                Ok(())
                            })
                        } else if inner.path.is_ident("attr") {
                            let content;
                            syn::parenthesized!(content in inner.input);
                            let all = content.parse_terminated(<syn::Meta as syn::parse::Parse>::parse, syn::Token![,])?;
                            attrs.extend(all.into_iter().map(|m| quote::quote!(#[#m])));
                            Ok(())
                        } else {
                            errors.push(
                                inner.path.span(),
                                "unknown `sealed` option; the correct format looks like sealed(derive(Debug), attr(serde(rename_all = \"camelCase\")))",
                            );
                            skip_value(&inner)
                        }
                    })?;
                    set_once(&mut explicit, Explicit { derives, attrs }, &key, &mut errors);
                }
                "sealed" => set_once(&mut sealed, meta.value()?.parse::<Ident>()?, &key, &mut errors),
                "key_columns" => {
                    let lit: LitStr = meta.value()?.parse()?;
                    let v = lit.value();
                    if !v.contains("{class}") || v.replace("{class}", "x").bytes().any(|b| !(b.is_ascii_alphanumeric() || b == b'_')) {
                        errors.push(lit.span(), "`key_columns` is a name pattern with `{class}` in it, of letters, digits and `_` (for example \"{class}_dek\")");
                    }
                    set_once(&mut key_pattern, v, &key, &mut errors);
                }
                "crate" => {
                    let lit: LitStr = meta.value()?.parse()?;
                    set_once(&mut krate, lit.parse::<syn::Path>()?, &key, &mut errors);
                }
                _ => {
                    errors.push(key.span(), format!("unknown attribute `{key}`; valid ones on a struct: {STRUCT_KEYS}"));
                    unknown_struct_key = true;
                    skip_value(&meta)?;
                }
            }
            Ok(())
        });
        if let Err(e) = parsed {
            errors.push(e.span(), format!("{e}; the correct format looks like #[cmk(table = \"patients\", tenant = tenant_id)]"));
            unknown_struct_key = true;
        }
    }
    let sea_orm: Vec<Attribute> = input
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("sea_orm"))
        .cloned()
        .collect();
    if table.is_none() {
        for a in &sea_orm {
            let _ = a.parse_nested_meta(|meta| {
                if meta.path.is_ident("table_name") {
                    let lit: LitStr = meta.value()?.parse()?;
                    table = Some((lit.value(), lit.span()));
                } else {
                    skip_value(&meta)?;
                }
                Ok(())
            });
        }
    }
    let diesel: Vec<Attribute> = input
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("diesel"))
        .cloned()
        .collect();
    let mut diesel_table: Option<syn::Path> = None;
    for a in &diesel {
        let _ = a.parse_nested_meta(|meta| {
            if meta.path.is_ident("table_name") {
                diesel_table = Some(meta.value()?.parse()?);
            } else {
                skip_value(&meta)?;
            }
            Ok(())
        });
    }
    if table.is_none() {
        for a in &diesel {
            let _ = a.parse_nested_meta(|meta| {
                if meta.path.is_ident("table_name") {
                    let path: syn::Path = meta.value()?.parse()?;
                    if let Some(last) = path.segments.last() {
                        table = Some((last.ident.to_string(), last.ident.span()));
                    }
                } else {
                    skip_value(&meta)?;
                }
                Ok(())
            });
        }
    }
    // After an unknown or malformed key (likely a misspelling), or on a type that is not a
    // struct with named fields, a "missing" error would only repeat the first one.
    let quiet = unknown_struct_key || named.is_none();
    if table.is_none() && !quiet {
        errors.push(
            input.ident.span(),
            "missing table name: add #[cmk(table = \"...\")] (or #[diesel(table_name = ...)]) with the stored table's name",
        );
    }
    if tenant.is_none() && !quiet {
        errors.push(input.ident.span(), "missing tenant: add #[cmk(tenant = field)] naming the field that holds the tenant id, or #[cmk(tenant = \"name\")] for a single-tenant table");
    }
    if let Some((_, span)) = &row_id
        && ids.as_ref().is_none_or(|(v, _)| v != "app")
    {
        errors.push(
            *span,
            "`row_id` binds application-assigned ids: it needs `id = field` and `ids = \"app\"`",
        );
    }
    if let (Some((_, span)), None) = (&ids, &id) {
        errors.push(*span, "`ids` needs `id = field` naming the row id field");
    }

    // Fields.
    let mut fields = Vec::new();
    for f in named.map(|n| n.named.iter()).into_iter().flatten() {
        let Some(ident) = f.ident.clone() else {
            continue;
        };
        let classified = parse_field(f, &ident, &mut errors);
        let diesel: Vec<Attribute> = f
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("diesel"))
            .cloned()
            .collect();
        if classified.is_some() {
            for a in &diesel {
                let _ = a.parse_nested_meta(|meta| {
                    if ["sql_type", "serialize_as", "deserialize_as", "embed"].iter().any(|k| meta.path.is_ident(k)) {
                        errors.push(
                            meta.path.span(),
                            "this Diesel attribute cannot be set on an encrypted field: its stored type is cmk's ciphertext",
                        );
                    }
                    skip_value(&meta)
                });
            }
        }
        let sea_orm: Vec<Attribute> = f
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("sea_orm"))
            .cloned()
            .collect();
        if classified.is_some() {
            for a in &sea_orm {
                let _ = a.parse_nested_meta(|meta| {
                    if ["column_type", "select_as", "save_as"].iter().any(|k| meta.path.is_ident(k)) {
                        errors.push(
                            meta.path.span(),
                            "this SeaORM attribute cannot be set on an encrypted field: its stored type is cmk's ciphertext",
                        );
                    }
                    skip_value(&meta)
                });
            }
        }
        fields.push(Field {
            ident,
            ty: f.ty.clone(),
            classified,
            diesel,
            sea_orm,
        });
    }

    // Cross-field checks.
    let tenant_field = match &tenant {
        Some(TenantSource::Field(f)) => Some(f.clone()),
        _ => None,
    };
    for (role, name) in [("tenant", &tenant_field), ("id", &id)] {
        let Some(name) = name.as_ref().filter(|_| named.is_some()) else {
            continue;
        };
        match fields.iter().find(|f| f.ident == *name) {
            None => errors.push(name.span(), format!("no field named `{name}` for `{role}`")),
            Some(f) if f.classified.is_some() => errors.push(
                f.ident.span(),
                format!(
                    "the {role} field `{name}` cannot be classified: {role}s are never encrypted"
                ),
            ),
            Some(_) => {}
        }
    }
    let mut columns: Vec<(String, Span)> = Vec::new();
    for f in &fields {
        let own = f
            .classified
            .as_ref()
            .map_or(f.ident.to_string(), |c| c.column.clone());
        columns.push((own, f.ident.span()));
    }
    let mut generated: Vec<(String, Span)> = Vec::new();
    for f in &fields {
        if let Some(c) = &f.classified
            && c.blind_index.is_some()
        {
            generated.push((format!("{}_bidx", c.column), f.ident.span()));
        }
    }
    for class in key_classes(&fields) {
        generated.push((
            key_column_name(key_pattern.as_deref(), &class),
            input.ident.span(),
        ));
    }
    for (i, (name, span)) in columns.iter().enumerate() {
        if columns[..i].iter().any(|(n, _)| n == name) {
            errors.push(*span, format!("two fields map to column `{name}`: give one a different #[cmk(column = \"...\")]"));
        }
        if generated.iter().any(|(n, _)| n == name) {
            errors.push(*span, format!("field `{name}` collides with a column the derive generates; rename it or set #[cmk(column = \"...\")]"));
        }
    }
    errors.into_result()?;
    let name = input.ident.clone();
    Ok(Model {
        vis: input.vis.clone(),
        sealed: sealed.unwrap_or_else(|| {
            let has_sea_orm = input.attrs.iter().any(|a| a.path().is_ident("sea_orm"));
            if has_sea_orm {
                Ident::new("Model", name.span())
            } else {
                Ident::new(&format!("Sealed{name}"), name.span())
            }
        }),
        name,
        table: table.map(|t| t.0).unwrap_or_default(),
        tenant: tenant
            .unwrap_or_else(|| TenantSource::Field(Ident::new("tenant", Span::call_site()))),
        lookups,
        row_id: row_id.map(|(path, _)| path),
        app_ids: ids.is_some_and(|(v, _)| v == "app"),
        id,
        krate: krate.unwrap_or_else(|| syn::parse_quote!(::cmk)),
        key_pattern,
        fields,
        // The explicit form wins: the plaintext struct's own #[diesel] belongs to its own
        // derives then.
        diesel: if diesel.is_empty() || explicit.is_some() {
            None
        } else {
            Some(diesel)
        },
        // SeaORM's entity derive wants its model named `Model`.
        sea_orm: if sea_orm.is_empty() || explicit.is_some() {
            None
        } else {
            Some(sea_orm)
        },
        diesel_table: if explicit.is_some() {
            None
        } else {
            diesel_table
        },
        explicit,
    })
}

fn parse_field(f: &syn::Field, ident: &Ident, errors: &mut Errors) -> Option<Classified> {
    let attrs: Vec<&Attribute> = cmk_attrs(&f.attrs).collect();
    if attrs.is_empty() {
        return None;
    }
    let (mut class, mut column, mut blind, mut det, mut hide, mut pad) = (
        None::<(String, Span)>,
        None::<String>,
        None::<(String, Span)>,
        None::<Span>,
        None::<Span>,
        None::<u16>,
    );
    for attr in attrs {
        let parsed = attr.parse_nested_meta(|meta| {
            let Some(key) = meta.path.get_ident().cloned() else {
                errors.push(meta.path.span(), format!("unknown attribute; valid ones on a field: {FIELD_KEYS}"));
                return Ok(());
            };
            match key.to_string().as_str() {
                "class" => {
                    let lit: LitStr = meta.value()?.parse()?;
                    if !valid_class(&lit.value()) {
                        errors.push(lit.span(), "a class name must be 1 to 32 bytes of a-z, 0-9, `_` or `-` (for example \"restricted\")");
                    }
                    set_once(&mut class, (lit.value(), lit.span()), &key, errors);
                }
                "column" => {
                    let lit: LitStr = meta.value()?.parse()?;
                    if lit.value().is_empty() || lit.value().len() > 127 {
                        errors.push(lit.span(), "a column name must be 1 to 127 bytes");
                    }
                    set_once(&mut column, lit.value(), &key, errors);
                }
                "blind_index" => {
                    let mut normalize = ("exact".to_string(), key.span());
                    if meta.input.peek(syn::token::Paren) {
                        meta.parse_nested_meta(|inner| {
                            if inner.path.is_ident("normalize") {
                                let lit: LitStr = inner.value()?.parse()?;
                                if !NORMALIZERS.contains(&lit.value().as_str()) {
                                    errors.push(lit.span(), format!("unknown normaliser; use one of {}", NORMALIZERS.join(", ")));
                                }
                                normalize = (lit.value(), lit.span());
                            } else {
                                errors.push(inner.path.span(), "unknown blind_index option; the correct format looks like blind_index(normalize = \"casefold\")");
                            }
                            Ok(())
                        })?;
                    }
                    set_once(&mut blind, normalize, &key, errors);
                }
                "deterministic" => set_once(&mut det, key.span(), &key, errors),
                "hide_null" => set_once(&mut hide, key.span(), &key, errors),
                "pad" => {
                    let lit: LitInt = meta.value()?.parse()?;
                    match lit.base10_parse::<u16>() {
                        Ok(n) if n <= 4096 => set_once(&mut pad, n, &key, errors),
                        _ => errors.push(lit.span(), "`pad` is a block size in bytes from 0 to 4096"),
                    }
                }
                "sql_type" | "column_type" | "type" => {
                    errors.push(
                        key.span(),
                        format!("`{key}` cannot be set on an encrypted field: its stored type is cmk's ciphertext"),
                    );
                    skip_value(&meta)?;
                }
                _ => {
                    errors.push(key.span(), format!("unknown attribute `{key}`; valid ones on a field: {FIELD_KEYS}"));
                    skip_value(&meta)?;
                }
            }
            Ok(())
        });
        if let Err(e) = parsed {
            errors.push(
                e.span(),
                format!("{e}; the correct format looks like #[cmk(class = \"restricted\")]"),
            );
        }
    }
    let Some((class, _)) = class else {
        errors.push(
            ident.span(),
            "a field with #[cmk(...)] needs a class: add class = \"...\"",
        );
        return None;
    };
    let optional = option_inner(&f.ty).is_some();
    let inner = option_inner(&f.ty).unwrap_or(&f.ty);
    let raw = raw_kind(inner);
    if let (Some((_, bspan)), Some(dspan)) = (&blind, det) {
        errors.push(
            dspan,
            "a field cannot have both a blind index and deterministic encryption: choose one",
        );
        let _ = bspan;
    }
    if let Some((norm, span)) = &blind
        && norm != "exact"
        && raw != Some(RawKind::String)
    {
        let _ = span;
        errors.push(
            f.ty.span(),
            format!(
                "the `{norm}` normaliser needs text: use a String field, or normalize = \"exact\""
            ),
        );
    }
    if let (Some(h), true) = (hide, blind.is_some() || det.is_some()) {
        errors.push(
            h,
            "a hidden NULL cannot be searchable: the index would reveal NULL",
        );
    }
    if pad.is_some_and(|p| p > 0) && det.is_some() {
        errors.push(ident.span(), "deterministic values cannot be padded");
    }
    Some(Classified {
        class,
        column: column.unwrap_or_else(|| ident.to_string()),
        blind_index: blind.map(|b| b.0),
        deterministic: det.is_some(),
        hide_null: hide.is_some(),
        pad: pad.unwrap_or(0),
        optional,
        raw,
    })
}

/// Classes that get a key column, in the order `RowSchema` gives them: first appearance
/// among envelope (non-deterministic) fields.
pub fn key_classes(fields: &[Field]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in fields
        .iter()
        .filter_map(|f| f.classified.as_ref())
        .filter(|c| c.is_envelope())
    {
        if !out.contains(&c.class) {
            out.push(c.class.clone());
        }
    }
    out
}

/// The key column of a class: `<class>_keys` (a `-` becomes `_`).
pub fn key_column_name(pattern: Option<&str>, class: &str) -> String {
    pattern
        .unwrap_or("{class}_keys")
        .replace("{class}", &class.replace('-', "_"))
}
