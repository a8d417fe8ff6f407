//! A structural check of a sealed row that an ORM is about to write without cmk's typed
//! columns (SeaORM's `ActiveModel`, raw SQL): it catches plaintext or arbitrary bytes in a
//! classified column, and a class written without its key column, before they reach the
//! database.
//!
//! The check parses; it does not decrypt (it needs no keys and no scope). A value forged to
//! look like a ciphertext passes it and then fails authentication on every read: the
//! guard prevents mistakes, the AEAD prevents forgeries.

use crate::crypto::search::deterministic_version;
use crate::error::{Error, Result};
use crate::format::{field, key_column};
use crate::keys::registry::kek_id;
use crate::rows::schema::{FieldSearch, RowSchema};

/// A column's value in the write, as the guard sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Written<'a> {
    /// The write leaves the column as it is.
    NotSet,
    /// The write stores NULL.
    Null,
    /// The write stores these bytes.
    Bytes(&'a [u8]),
}

/// Checks a write of `schema`'s table. `key_columns` are the stored key-column names in
/// [`RowSchema::key_classes`] order (`Encrypted::KEY_COLUMNS`); `value` gives what the write
/// stores in a column. On an insert every class is checked; on an update, every class the
/// write touches (any of its fields or its key column): such a class must come whole, its
/// key column well formed for the class and listing every field, each field NULL where the
/// key column says so and otherwise a well-formed ciphertext. Key columns that carry a write
/// id (what cmk writes) must all carry the same one, and then every class with fields must
/// be written: a row's classes come from one write (docs/FORMAT.md §4), so a write of one
/// class alone would leave a row that never reads.
///
/// # Errors
/// [`crate::Error::InvalidInput`], naming the table and column, when `key_columns` does not
/// name one column per key class, or a class the write touches does not come whole: its key
/// column unset, not a cmk key column or another class's, or a member field not written with
/// it, not listed in it, NULL where it sealed a value (or set where it recorded NULL), or not a
/// cmk ciphertext; when the written key columns come from different writes, or a class with
/// fields is left out of a write whose key columns carry a write id; also when a
/// deterministic field is set to anything but a cmk deterministic value.
pub fn check_write<'a>(
    schema: &RowSchema,
    key_columns: &[&str],
    insert: bool,
    value: impl Fn(&str) -> Written<'a>,
) -> Result<()> {
    let refuse = |column: &str, why: &str| {
        Error::InvalidInput(format!(
            "refusing to write `{}`: column `{column}` {why}",
            schema.table()
        ))
    };
    if key_columns.len() != schema.key_classes().len() {
        return Err(Error::InvalidInput(format!(
            "table `{}` has {} key classes but {} key columns were named",
            schema.table(),
            schema.key_classes().len(),
            key_columns.len()
        )));
    }
    // The write id of the first written key column, and a class with fields left unwritten.
    let mut write_id: Option<(&str, Option<key_column::WriteId>)> = None;
    let mut left_out: Option<&str> = None;
    for (k, (class, key_name)) in schema.key_classes().iter().zip(key_columns).enumerate() {
        let members = schema.members(k);
        let key = value(key_name);
        let touched = insert
            || key != Written::NotSet
            || members
                .iter()
                .filter_map(|&i| schema.fields().get(i))
                .any(|f| value(&f.column) != Written::NotSet);
        if !touched {
            if !members.is_empty() {
                left_out = left_out.or(Some(key_name));
            }
            continue;
        }
        let Written::Bytes(key_bytes) = key else {
            return Err(refuse(key_name, "must be set when its class is written"));
        };
        let (kek, list, id) = match key_column::parse(key_bytes) {
            Ok(parsed) => (parsed.kek_id, parsed.list_bytes, parsed.write_id),
            Err(_) => match key_column::parse_classic(key_bytes) {
                Ok(parsed) => (parsed.kek_id, parsed.list_bytes, parsed.write_id),
                Err(_) => return Err(refuse(key_name, "does not hold a cmk key column")),
            },
        };
        if kek != kek_id(class.as_str()) {
            return Err(refuse(key_name, "holds the key column of another class"));
        }
        match write_id {
            None => write_id = Some((key_name, id)),
            Some((first, other)) if other != id => {
                let why = format!("comes from another write of the row than `{first}`");
                return Err(refuse(key_name, &why));
            }
            Some(_) => {}
        }
        for field in members.iter().filter_map(|&i| schema.fields().get(i)) {
            let column = field.column.as_str();
            match (key_column::listing(list, column), value(column)) {
                (_, Written::NotSet) => {
                    return Err(refuse(
                        column,
                        "must be written with its class's key column",
                    ));
                }
                (None, _) => return Err(refuse(column, "is not sealed under its key column")),
                (Some(true), Written::Null) => {}
                (Some(true), Written::Bytes(_)) => {
                    return Err(refuse(column, "must be NULL (its key column says so)"));
                }
                (Some(false), Written::Null) => {
                    return Err(refuse(column, "is NULL but its key column sealed a value"));
                }
                (Some(false), Written::Bytes(b)) => {
                    if field::parse(b).is_err() {
                        return Err(refuse(column, "does not hold a cmk ciphertext"));
                    }
                }
            }
        }
    }
    if let (Some((first, Some(_))), Some(missing)) = (write_id, left_out) {
        let why = format!(
            "must be written with `{first}`: a row's classes come from one write, re-seal the \
             whole model"
        );
        return Err(refuse(missing, &why));
    }
    // Deterministic fields have no key column: each set value must be a deterministic value.
    for f in schema.fields().iter().filter(|f| !f.is_envelope()) {
        if let (FieldSearch::Deterministic, Written::Bytes(b)) = (&f.search, value(&f.column))
            && deterministic_version(b).is_err()
        {
            return Err(refuse(&f.column, "does not hold a cmk deterministic value"));
        }
    }
    Ok(())
}
