//! The associated data of field ciphertexts and DEK wraps (docs/FORMAT.md §2), built into one
//! reused buffer per thread.

use crate::format::FORMAT_V1;
use crate::format::aad::{Aad, RowId};
use crate::format::key_column::WriteId;

/// The part of a field's associated data fixed by the schema:
/// `label "cmk/field" ‖ u8 version ‖ text table ‖ text column ‖ text class`.
pub(crate) fn field_aad_prefix(table: &str, column: &str, class: &str) -> Vec<u8> {
    Aad::new("cmk/field")
        .u8(FORMAT_V1)
        .text(table)
        .text(column)
        .text(class)
        .into_buffer()
}

/// The part of a DEK wrap's associated data fixed by the schema:
/// `label "cmk/dek" ‖ u8 version ‖ text table ‖ text class`.
pub(crate) fn dek_aad_prefix(table: &str, class: &str) -> Vec<u8> {
    Aad::new("cmk/dek")
        .u8(FORMAT_V1)
        .text(table)
        .text(class)
        .into_buffer()
}

/// A field's associated data: the schema prefix, then `text tenant ‖ u8 flags ‖ row_id`.
pub(crate) fn field_aad(
    buf: Vec<u8>,
    prefix: &[u8],
    tenant: &str,
    flags: u8,
    row_id: Option<&RowId>,
) -> Aad {
    field_aad_tail(Aad::from_prefix(buf, prefix).text(tenant), flags, row_id)
}

/// A field's associated data after `prefix ‖ text tenant` (a [`crate::rows::plan`] head).
pub(crate) fn field_aad_tail(head: Aad, flags: u8, row_id: Option<&RowId>) -> Aad {
    head.u8(flags).row_id(row_id)
}

/// A DEK wrap's associated data: the schema prefix, then
/// `text tenant ‖ u32 kek_id ‖ u32 kek_version ‖ row_id ‖ bytes column_list ‖ bytes class_set`
/// and, in a bound key column, `‖ bytes write_id`. The class set names every class of the
/// row that has a key column, so that removing one key column (and NULL-ing its fields) makes
/// the others fail; the write id ties the key columns to one write of the row.
#[allow(clippy::too_many_arguments)] // the parts of the associated data, named
pub(crate) fn dek_aad(
    buf: Vec<u8>,
    prefix: &[u8],
    tenant: &str,
    kek: (u32, u32),
    row_id: Option<&RowId>,
    list: &[u8],
    class_set: &[u8],
    write_id: Option<&WriteId>,
) -> Aad {
    dek_aad_tail(
        Aad::from_prefix(buf, prefix).text(tenant),
        kek,
        row_id,
        list,
        class_set,
        write_id,
    )
}

/// A DEK wrap's associated data after `prefix ‖ text tenant` (a [`crate::rows::plan`] head).
pub(crate) fn dek_aad_tail(
    head: Aad,
    kek: (u32, u32),
    row_id: Option<&RowId>,
    list: &[u8],
    class_set: &[u8],
    write_id: Option<&WriteId>,
) -> Aad {
    let aad = head
        .u32(kek.0)
        .u32(kek.1)
        .row_id(row_id)
        .bytes(list)
        .bytes(class_set);
    match write_id {
        Some(id) => aad.bytes(id),
        None => aad,
    }
}

thread_local! {
    /// One associated-data buffer per thread, reused across rows: building associated data
    /// then allocates nothing. (It holds names and ids only, never plaintext.)
    static AAD_BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

pub(crate) fn take_aad_buffer() -> Vec<u8> {
    let mut buf = AAD_BUFFER.with(|b| b.take());
    buf.reserve(256);
    buf
}

pub(crate) fn give_back_aad_buffer(buf: Vec<u8>) {
    if buf.capacity() > 0 {
        AAD_BUFFER.with(|b| b.set(buf));
    }
}
