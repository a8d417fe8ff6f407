//! Blind-index values checked against the row they are stored in.
//!
//! A blind index is an HMAC of a normalised value with no row in it (equal values must give
//! equal indexes), so the database cannot authenticate which row it belongs to: a writer who
//! copies one row's index onto another makes a lookup return that other row. Every unseal
//! therefore recomputes the index of each revealed, blind-indexed value and compares it with
//! the stored one; a difference is [`Error::IndexMismatch`], audited like any failed read.

use subtle::ConstantTimeEq;

use super::handle::TenantKeys;
use super::schema::{FieldSearch, RowSchema};
use super::seal::{Revealed, StoredRow};
use crate::crypto::search;
use crate::error::{Error, Result};

/// Checks the row's stored blind indexes against the values unsealing revealed.
///
/// Withheld values are not checked (nothing of them is revealed, and their DEK is not
/// opened for this actor). A handle that holds no index root (the tenant has no blind-index
/// policy) checks nothing: no lookup through it can match a row. An index under a root
/// version the handle does not hold (a forged version byte, or a root retired before its
/// rows were re-indexed) is a mismatch.
pub(crate) fn check_indexes(
    keys: &TenantKeys,
    schema: &RowSchema,
    row: &StoredRow<'_>,
    values: &[Revealed],
) -> Result<()> {
    if !schema.has_blind_index() {
        return Ok(());
    }
    let fields = schema.fields();
    if row.indexes.len() != fields.len() {
        return Err(Error::InvalidInput(format!(
            "table `{}` has blind-indexed columns: a stored row needs one index entry per field \
             ({}), not {}",
            schema.table(),
            fields.len(),
            row.indexes.len()
        )));
    }
    if keys.index_roots.is_empty() {
        return Ok(());
    }
    for (i, f) in fields.iter().enumerate() {
        let FieldSearch::BlindIndex(normalizer) = f.search else {
            continue;
        };
        let mismatch = || Error::IndexMismatch {
            column: f.column.clone(),
        };
        let (value, stored) = match (&values[i], row.indexes[i]) {
            (Revealed::Withheld, _) | (Revealed::Null, None) => continue,
            (Revealed::Value(value), Some(stored)) => (value, stored),
            // A NULL with an index, or a value without one: the index column was edited.
            (Revealed::Null, Some(_)) | (Revealed::Value(_), None) => return Err(mismatch()),
        };
        let Some(&version) = stored.first().filter(|v| keys.index_roots.contains_key(v)) else {
            return Err(mismatch());
        };
        let key = keys.index_key(schema.table(), &f.column, version)?;
        let normalised = normalizer.apply(value.expose_secret())?;
        let expected = search::blind_index(&key, version, &normalised);
        if let std::borrow::Cow::Owned(mut owned) = normalised {
            zeroize::Zeroize::zeroize(&mut owned);
        }
        if !bool::from(expected.as_slice().ct_eq(stored)) {
            return Err(mismatch());
        }
    }
    Ok(())
}
