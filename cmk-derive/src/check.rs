//! Whether the attributes of a model fit together: what each key needs of the others, of the
//! fields and of the stored columns. Each mistake is reported at the token to change.

use proc_macro2::Span;
use syn::spanned::Spanned;

use crate::ast::{Classified, Field, Model, RawKind};
use crate::attr::{self, TenantSource};
use crate::ctxt::Ctxt;
use crate::symbol::{DIESEL_TYPE_KEYS, SEA_ORM_TYPE_KEYS};

pub(crate) fn check(cx: &Ctxt, m: &Model) {
    check_required(cx, m);
    check_ids(cx, m);
    for f in &m.fields {
        if let Some(c) = &f.classified {
            check_options(cx, f, c);
            check_forwarded(cx, f);
        }
    }
    check_roles(cx, m);
    check_columns(cx, m);
}

/// A table and a tenant are required; after an unknown or malformed key (likely a
/// misspelling), or on an input that is not a struct with named fields, a "missing" error
/// would only repeat the first one.
fn check_required(cx: &Ctxt, m: &Model) {
    if m.attrs.malformed || !m.named {
        return;
    }
    if m.attrs.table.is_none() {
        cx.error(
            m.name.span(),
            "missing table name: add #[cmk(table = \"...\")] (or #[diesel(table_name = ...)]) with the stored table's name",
        );
    }
    if m.attrs.tenant.is_none() {
        cx.error(m.name.span(), "missing tenant: add #[cmk(tenant = field)] naming the field that holds the tenant id, or #[cmk(tenant = \"name\")] for a single-tenant table");
    }
}

fn check_ids(cx: &Ctxt, m: &Model) {
    if let Some((_, span)) = &m.attrs.row_id
        && !m.app_ids()
    {
        cx.error(
            *span,
            "`row_id` binds application-assigned ids: it needs `id = field` and `ids = \"app\"`",
        );
    }
    if let (Some((_, span)), None) = (&m.attrs.ids, &m.attrs.id) {
        cx.error(*span, "`ids` needs `id = field` naming the row id field");
    }
}

/// Options of one classified field that exclude each other or need another type.
fn check_options(cx: &Ctxt, f: &Field, c: &Classified) {
    if let (Some(_), Some(det)) = (c.spans.blind_index, c.spans.deterministic) {
        cx.error(
            det,
            "a field cannot have both a blind index and deterministic encryption: choose one",
        );
    }
    if let Some(norm) = &c.blind_index
        && norm != "exact"
        && c.raw != Some(RawKind::String)
    {
        cx.error(
            f.ty.span(),
            format!(
                "the `{norm}` normaliser needs text: use a String field, or normalize = \"exact\""
            ),
        );
    }
    if let (Some(hide), true) = (
        c.spans.hide_null,
        c.blind_index.is_some() || c.deterministic,
    ) {
        cx.error(
            hide,
            "a hidden NULL cannot be searchable: the index would reveal NULL",
        );
    }
    if c.pad > 0 && c.deterministic {
        cx.error(f.ident.span(), "deterministic values cannot be padded");
    }
}

/// ORM attributes forwarded to an encrypted field must not change its stored type.
fn check_forwarded(cx: &Ctxt, f: &Field) {
    let refused = |attrs: &[syn::Attribute], keys: &[&str], orm: &str| {
        for a in attrs {
            let _ = a.parse_nested_meta(|meta| {
                if keys.iter().any(|k| meta.path.is_ident(k)) {
                    cx.error(
                        meta.path.span(),
                        format!("this {orm} attribute cannot be set on an encrypted field: its stored type is cmk's ciphertext"),
                    );
                }
                attr::skip_value(&meta)
            });
        }
    };
    refused(&f.diesel, &DIESEL_TYPE_KEYS, "Diesel");
    refused(&f.sea_orm, &SEA_ORM_TYPE_KEYS, "SeaORM");
}

/// The tenant and id fields exist and are never classified.
fn check_roles(cx: &Ctxt, m: &Model) {
    if !m.named {
        return;
    }
    let tenant = match m.tenant() {
        Some(TenantSource::Field(f)) => Some(f),
        _ => None,
    };
    for (role, name) in [("tenant", tenant), ("id", m.attrs.id.as_ref())] {
        let Some(name) = name else {
            continue;
        };
        match m.fields.iter().find(|f| f.ident == *name) {
            None => cx.error(name.span(), format!("no field named `{name}` for `{role}`")),
            Some(f) if f.classified.is_some() => cx.error(
                f.ident.span(),
                format!(
                    "the {role} field `{name}` cannot be classified: {role}s are never encrypted"
                ),
            ),
            Some(_) => {}
        }
    }
}

/// Every field maps to its own column, and none to a column the derive generates.
fn check_columns(cx: &Ctxt, m: &Model) {
    let columns: Vec<(String, Span)> = m
        .fields
        .iter()
        .map(|f| {
            let own = f
                .classified
                .as_ref()
                .map_or(f.ident.to_string(), |c| c.column.clone());
            (own, f.ident.span())
        })
        .collect();
    let mut generated: Vec<String> = m
        .classified()
        .filter(|(_, c)| c.blind_index.is_some())
        .map(|(_, c)| format!("{}_bidx", c.column))
        .collect();
    generated.extend(m.key_classes().iter().map(|c| m.key_column_name(c)));
    for (i, (name, span)) in columns.iter().enumerate() {
        if columns[..i].iter().any(|(n, _)| n == name) {
            cx.error(*span, format!("two fields map to column `{name}`: give one a different #[cmk(column = \"...\")]"));
        }
        if generated.contains(name) {
            cx.error(*span, format!("field `{name}` collides with a column the derive generates; rename it or set #[cmk(column = \"...\")]"));
        }
    }
}
