//! What `#[derive(Encrypted)]` implements: a model struct whose classified fields are sealed
//! into a companion row type, and the encodings of field values.
//!
//! Field values are encoded as bytes before sealing (docs/FORMAT.md §5a): `String` as its
//! UTF-8 bytes, `Vec<u8>` as is (both without a copy), and any other
//! `T: Serialize + DeserializeOwned` as JSON (RFC 8259) as `serde_json` writes it, so an
//! implementation in another language can read it.

use std::borrow::Cow;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crypto::secret::SecretBytes;
use crate::error::{Error, Result};
use crate::format::aad::RowId;
use crate::rows::handle::TenantKeys;
use crate::rows::schema::RowSchema;

/// A model with classified fields. Implemented by `#[derive(Encrypted)]`.
pub trait Encrypted: Sized {
    /// The row as stored: unclassified fields as they are, ciphertext, index and key columns.
    type Sealed;
    /// Stored table name (bound into associated data).
    const TABLE: &'static str;
    /// Classes of the classified fields, to pass to `Cmk::keys_for`.
    const CLASSES: &'static [&'static str];
    /// Stored names of the key columns, one per class in the order of
    /// [`RowSchema::key_classes`].
    const KEY_COLUMNS: &'static [&'static str];

    /// The table's classified part, built once (the derive checks at compile time what could
    /// make this fail).
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] or [`crate::Error::InvalidName`] when the table, a column or
    /// a class breaks its rule ([`RowSchema::new`], [`crate::Class::new`]); the derive rules these
    /// out at compile time.
    fn schema() -> Result<&'static RowSchema>;

    /// Seals this model with keys fetched beforehand (synchronous CPU work). The handle's
    /// request context ([`TenantKeys::context`]) is the one audited and checked.
    ///
    /// # Errors
    /// [`crate::Error::TenantMismatch`] when the model's tenant is not the context's;
    /// [`crate::Error::InvalidInput`] when a serde field cannot be serialised as JSON; and every
    /// error of [`TenantKeys::seal_into`].
    fn seal(&self, keys: &TenantKeys) -> Result<Self::Sealed>;

    /// Unseals a stored row; fails if any class may not be read by the handle's actor.
    ///
    /// # Errors
    /// Every error of [`TenantKeys::unseal`] ([`crate::Error::AccessDenied`] among them), and
    /// [`crate::Error::Decode`] when an authentic value does not decode as its field's type or is
    /// NULL in a field that is not an `Option`.
    fn unseal(sealed: &Self::Sealed, keys: &TenantKeys) -> Result<Self>;

    /// The stored key columns of a sealed row, `(column, value)` in class order. Every write
    /// that changes a classified value changes every key column (a fresh DEK, or the kept
    /// DEK re-wrapped with the write's id), so together they are the row's version for
    /// compare-and-set updates.
    fn key_columns(sealed: &Self::Sealed) -> Vec<(&'static str, Option<&[u8]>)>;

    /// Re-wraps, in place, every key column of `sealed` that is not under its class's
    /// active KEK (KEK retirement); field ciphertexts are untouched. Returns how many key
    /// columns changed (0: the row is already current).
    ///
    /// # Errors
    /// As [`TenantKeys::rekey_key_column`], for the first key column that fails; `sealed` is then
    /// left unchanged.
    fn rekey(sealed: &mut Self::Sealed, keys: &std::sync::Arc<TenantKeys>) -> Result<usize>;

    /// The row id bound into this model's ciphertexts (application-assigned ids), if any.
    fn bound_row_id(&self) -> Option<RowId> {
        None
    }

    /// Which classes, one entry per key column in [`Encrypted::KEY_COLUMNS`] order, hold
    /// different values in `self` and `other` (compared as the bytes they seal to): an
    /// update writes fresh DEKs for those only. The default says every class changed.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] when a serde field of either model cannot be serialised as
    /// JSON. The default implementation never fails.
    fn changed_classes(&self, other: &Self) -> Result<Vec<bool>> {
        let _ = other;
        Ok(vec![true; Self::KEY_COLUMNS.len()])
    }

    /// The model's manifest (docs/FORMAT.md §12): its table, tenant and id columns, its
    /// classified columns with their classes, encodings, search and index columns, and its
    /// key columns, for readers that are not Rust (`cmk verify --manifest`, a decryptor in
    /// another language). The derive implements it.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] from the default implementation (a hand-written model
    /// that does not describe itself), and what [`Encrypted::schema`] returns.
    fn manifest() -> Result<crate::rows::manifest::Manifest> {
        Err(Error::InvalidInput(format!(
            "the model of table `{}` does not describe its manifest",
            Self::TABLE
        )))
    }

    /// Puts back into `fresh` the stored columns (fields, index columns) of each class marked
    /// in `keep`, as `old` holds them, with the class's DEK re-wrapped into `fresh`'s write
    /// ([`TenantKeys::carry_key_column`]): an update of one class leaves the others'
    /// ciphertexts and DEKs as they were, and every key column of the row written carries the
    /// same write id, so no class can later be rolled back alone. The default keeps nothing.
    ///
    /// # Errors
    /// As [`TenantKeys::carry_key_column`]. The default implementation never fails.
    fn keep_classes(
        fresh: &mut Self::Sealed,
        old: &Self::Sealed,
        keep: &[bool],
        keys: &TenantKeys,
    ) -> Result<()> {
        let _ = (fresh, old, keep, keys);
        Ok(())
    }

    /// The partial view: classified fields say whether they were revealed or withheld.
    type View;

    /// Unseals what the handle's actor may read; fields of other classes come back withheld.
    ///
    /// # Errors
    /// As [`Encrypted::unseal`], except [`crate::Error::AccessDenied`]: fields of a class the
    /// actor may not read come back withheld instead.
    fn unseal_partial(sealed: &Self::Sealed, keys: &TenantKeys) -> Result<Self::View>;

    /// Seals many models with the same keys; failures are reported per row, by position.
    fn seal_many(models: &[Self], keys: &TenantKeys) -> Vec<Result<Self::Sealed>> {
        models.iter().map(|m| m.seal(keys)).collect()
    }

    /// Unseals many rows with the same keys; failures are reported per row, by position.
    fn unseal_many(rows: &[Self::Sealed], keys: &TenantKeys) -> Vec<Result<Self>> {
        rows.iter().map(|r| Self::unseal(r, keys)).collect()
    }

    /// Like [`Encrypted::unseal`] for a sealed row the caller no longer needs: the derive
    /// moves its unclassified fields (ids, the tenant) into the model instead of cloning
    /// them, as the ORM adapters do with the rows they load.
    ///
    /// # Errors
    /// As [`Encrypted::unseal`].
    fn unseal_owned(sealed: Self::Sealed, keys: &TenantKeys) -> Result<Self> {
        Self::unseal(&sealed, keys)
    }

    /// [`Encrypted::unseal_owned`] for many rows; failures are reported per row, by position.
    fn unseal_many_owned(rows: Vec<Self::Sealed>, keys: &TenantKeys) -> Vec<Result<Self>> {
        rows.into_iter()
            .map(|r| Self::unseal_owned(r, keys))
            .collect()
    }
}

/// A classified field of a partial view.
#[derive(Clone, PartialEq, Eq)]
// Exhaustive by design: revealed or withheld is the whole of a partial read; applications match on both.
#[allow(clippy::exhaustive_enums)]
pub enum Partial<T> {
    /// Decrypted.
    Revealed(T),
    /// Not decrypted: the actor holds no reader role of the field's class.
    Withheld,
}

impl<T> Partial<T> {
    /// The value, if revealed.
    pub fn revealed(&self) -> Option<&T> {
        match self {
            Partial::Revealed(v) => Some(v),
            Partial::Withheld => None,
        }
    }
}

impl<T> std::fmt::Debug for Partial<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values are plaintext: never printed.
        match self {
            Partial::Revealed(_) => f.write_str("Revealed(..)"),
            Partial::Withheld => f.write_str("Withheld"),
        }
    }
}

/// A value type stored by its own bytes (no serde).
pub trait RawField: Sized {
    /// The bytes to seal.
    fn to_field_bytes(&self) -> Cow<'_, [u8]>;
    /// Rebuilds the value from unsealed bytes.
    ///
    /// # Errors
    /// [`crate::Error::Decode`] naming `column` when the bytes are not a value of the type (for
    /// `String`: not UTF-8). `Vec<u8>` never fails.
    fn from_field_bytes(bytes: SecretBytes, column: &str) -> Result<Self>;
}

impl RawField for String {
    fn to_field_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
    fn from_field_bytes(bytes: SecretBytes, column: &str) -> Result<Self> {
        String::from_utf8(bytes.into_exposed()).map_err(|e| {
            let mut v = e.into_bytes();
            zeroize::Zeroize::zeroize(&mut v);
            decode_error(column)
        })
    }
}

impl RawField for Vec<u8> {
    fn to_field_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_slice())
    }
    fn from_field_bytes(bytes: SecretBytes, _column: &str) -> Result<Self> {
        Ok(bytes.into_exposed())
    }
}

fn decode_error(column: &str) -> Error {
    Error::Decode {
        column: column.to_string(),
        reason: "the unsealed value does not decode as its Rust type",
    }
}

/// JSON encoding of a serde field, in a buffer wiped on drop (the error never carries the
/// value).
///
/// # Errors
/// [`crate::Error::InvalidInput`] naming `column` when `serde_json` cannot serialise the value
/// (a map with non-string keys, a `Serialize` implementation that fails).
pub fn encode_json<T: Serialize>(value: &T, column: &str) -> Result<SecretBytes> {
    serde_json::to_vec(value)
        .map(SecretBytes::new)
        .map_err(|_| {
            Error::InvalidInput(format!(
                "column `{column}`: the value cannot be serialised as JSON"
            ))
        })
}

/// Decodes a serde field; the plaintext buffer is wiped afterwards.
///
/// # Errors
/// [`crate::Error::Decode`] naming `column` when the bytes are not JSON of type `T` (the
/// field's type changed since the value was sealed).
pub fn decode_json<T: DeserializeOwned>(bytes: SecretBytes, column: &str) -> Result<T> {
    serde_json::from_slice(bytes.expose_secret()).map_err(|_| decode_error(column))
}

/// Values that can serve as an application-assigned row id.
pub trait IntoRowId {
    /// The row id bound into associated data.
    fn to_row_id(&self) -> RowId;
}

impl IntoRowId for i64 {
    fn to_row_id(&self) -> RowId {
        RowId::Int(*self)
    }
}

impl IntoRowId for i32 {
    fn to_row_id(&self) -> RowId {
        RowId::Int(i64::from(*self))
    }
}

impl IntoRowId for u32 {
    fn to_row_id(&self) -> RowId {
        RowId::Int(i64::from(*self))
    }
}

impl IntoRowId for String {
    fn to_row_id(&self) -> RowId {
        RowId::Text(self.clone())
    }
}

impl IntoRowId for [u8; 16] {
    fn to_row_id(&self) -> RowId {
        RowId::Uuid(*self)
    }
}

/// A UUID binds as its 16 bytes (feature `uuid`), the same encoding as `[u8; 16]`.
#[cfg(feature = "uuid")]
impl IntoRowId for uuid::Uuid {
    fn to_row_id(&self) -> RowId {
        RowId::Uuid(*self.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_fields_round_trip_and_refuse_bad_utf8() {
        let s = "grüße".to_string();
        assert_eq!(s.to_field_bytes().as_ref(), "grüße".as_bytes());
        let back = String::from_field_bytes(SecretBytes::new(s.as_bytes().to_vec()), "c").unwrap();
        assert_eq!(back, s);
        let err = String::from_field_bytes(SecretBytes::new(vec![0xff, 0xfe]), "c").unwrap_err();
        assert!(err.to_string().contains("column `c`"), "{err}");
        assert_eq!(
            Vec::<u8>::from_field_bytes(SecretBytes::new(vec![1, 2]), "b").unwrap(),
            vec![1, 2]
        );
    }

    #[test]
    fn json_fields_round_trip_and_errors_hide_values() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct D {
            code: String,
            n: u8,
        }
        let d = D {
            code: "X1".into(),
            n: 7,
        };
        let bytes = encode_json(&d, "d").unwrap();
        assert_eq!(bytes.expose_secret(), br#"{"code":"X1","n":7}"#);
        assert_eq!(decode_json::<D>(bytes, "d").unwrap(), d);
        let err =
            decode_json::<D>(SecretBytes::new(b"{\"secret-canary\":1}".to_vec()), "d").unwrap_err();
        assert!(!err.to_string().contains("canary"));
    }

    #[test]
    fn row_ids_convert() {
        assert_eq!(5i32.to_row_id(), RowId::Int(5));
        assert_eq!("a".to_string().to_row_id(), RowId::Text("a".into()));
        assert_eq!([1u8; 16].to_row_id(), RowId::Uuid([1; 16]));
    }
}

/// Items the derive's generated code uses; not a stable API.
#[doc(hidden)]
pub mod derive_support {
    use std::borrow::Cow;

    pub use crate::rows::manifest::{Encoding, FieldFacts, Manifest, RowIdColumn, TenantColumn};

    use crate::crypto::secret::SecretBytes;
    use crate::error::{Error, Result};

    /// A field value's bytes while a row is sealed: borrowed (strings, bytes) or an encoded
    /// copy wiped on drop (JSON).
    #[non_exhaustive]
    pub enum Holder<'a> {
        /// Borrowed from the model.
        Raw(Cow<'a, [u8]>),
        /// Encoded.
        Json(SecretBytes),
    }

    impl Holder<'_> {
        /// The bytes.
        pub fn bytes(&self) -> &[u8] {
            match self {
                Holder::Raw(c) => c,
                Holder::Json(s) => s.expose_secret(),
            }
        }
    }

    /// A sealed row's storage on the derive's stack: `K` key classes, `N` fields.
    #[non_exhaustive]
    pub struct SealSlots<const K: usize, const N: usize> {
        /// Key columns.
        pub key_columns: [Option<Vec<u8>>; K],
        /// Field ciphertexts (or deterministic values).
        pub fields: [Option<Vec<u8>>; N],
        /// Blind index values.
        pub indexes: [Option<Vec<u8>>; N],
    }

    impl<const K: usize, const N: usize> SealSlots<K, N> {
        /// Empty slots.
        pub fn new() -> Self {
            SealSlots {
                key_columns: [const { None }; K],
                fields: [const { None }; N],
                indexes: [const { None }; N],
            }
        }

        /// The slots as [`crate::rows::seal::TenantKeys::seal_into`] takes them.
        pub fn as_out(&mut self) -> crate::rows::seal::SealOut<'_> {
            crate::rows::seal::SealOut {
                key_columns: &mut self.key_columns,
                fields: &mut self.fields,
                indexes: &mut self.indexes,
            }
        }
    }

    impl<const K: usize, const N: usize> Default for SealSlots<K, N> {
        fn default() -> Self {
            Self::new()
        }
    }

    /// A sealed value that must be present.
    pub fn present(v: Option<Vec<u8>>) -> Result<Vec<u8>> {
        v.ok_or(Error::Tampered)
    }

    /// The error for a withheld field of a strict unseal (cannot happen: strict unseal refuses).
    pub fn withheld(column: &str) -> Error {
        Error::InvalidInput(format!("column `{column}` was withheld"))
    }

    /// The error for NULL in a field whose Rust type cannot hold it.
    pub fn unexpected_null(column: &str) -> Error {
        Error::Decode {
            column: column.to_string(),
            reason: "NULL, but its Rust type is not an Option",
        }
    }

    /// Unseals a row with the keys of the current key scope, keeping withheld fields apart.
    pub fn unseal_partial_in_scope<M: super::Encrypted>(sealed: &M::Sealed) -> Result<M::View> {
        let keys = crate::rows::scope::current_keys()?;
        M::unseal_partial(sealed, &keys)
    }

    /// Unseals a row with the keys (and request context) of the current key scope, as the
    /// ORM row-loading implementations do.
    pub fn unseal_in_scope<M: super::Encrypted>(sealed: &M::Sealed) -> Result<M> {
        let keys = crate::rows::scope::current_keys()?;
        M::unseal(sealed, &keys)
    }

    /// Sealing a model of another tenant than the request's is refused.
    pub fn check_model_tenant(ctx: &crate::RequestContext, model_tenant: &str) -> Result<()> {
        if model_tenant == ctx.tenant().as_str() {
            Ok(())
        } else {
            Err(Error::TenantMismatch {
                expected: ctx.tenant().to_string(),
                found: model_tenant.to_string(),
            })
        }
    }
}

/// Which classes a read-modify-write keeps from the row it read instead of re-sealing them:
/// those whose values did not change (`changed`, from [`Encrypted::changed_classes`]) and
/// whose stored key column lists the same columns as the fresh seal's (both absent, or both
/// present with equal lists). A row written before a field moved to another class, or before
/// a class was added, fails that test and is re-sealed whole, so the row written always
/// reads back.
pub fn classes_to_keep<M: Encrypted>(
    read: &M::Sealed,
    fresh: &M::Sealed,
    changed: &[bool],
) -> Vec<bool> {
    use crate::format::key_column;
    let (old, new) = (M::key_columns(read), M::key_columns(fresh));
    changed
        .iter()
        .enumerate()
        .map(|(k, changed)| {
            !changed
                && match (old.get(k).and_then(|c| c.1), new.get(k).and_then(|c| c.1)) {
                    (None, None) => old.get(k).is_some() && new.get(k).is_some(),
                    (Some(a), Some(b)) => matches!(
                        (key_column::parse(a), key_column::parse(b)),
                        (Ok(a), Ok(b)) if a.list_bytes == b.list_bytes
                    ),
                    _ => false,
                }
        })
        .collect()
}

/// Refuses a read-modify-write whose change altered the bound row id: the row would be
/// written under its old id with ciphertexts bound to the new one, and never read again.
///
/// # Errors
/// [`crate::Error::InvalidInput`] when `before` and `after` bind different row ids.
pub fn check_row_id_kept<M: Encrypted>(before: &M, after: &M) -> Result<()> {
    if before.bound_row_id() == after.bound_row_id() {
        Ok(())
    } else {
        Err(Error::InvalidInput(
            "the change altered the row's id; update the id with a delete and an insert".into(),
        ))
    }
}
