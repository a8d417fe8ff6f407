//! The shape of an encrypted table: which columns are classified, how, and which key
//! columns exist. Built once per model (the derive keeps it in a static) and reused for
//! every row, so the hot path allocates nothing for it.

use std::sync::Arc;

use crate::crypto::normalize::Normalizer;
use crate::format::key_column::MAX_COLUMN_NAME;
use crate::tenant::policy::Class;

/// How a field can be searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldSearch {
    /// Not searchable.
    None,
    /// A blind index column (`<column>_bidx` by convention) holds HMAC-SHA256 of the
    /// normalised value.
    BlindIndex(Normalizer),
    /// The field itself is encrypted deterministically (AES-SIV) and compared for equality.
    Deterministic,
}

/// One classified column.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FieldSpec {
    /// Stored column name (bound into associated data; renaming the Rust field is free).
    pub column: String,
    /// Class.
    pub class: Class,
    /// Search mode.
    pub search: FieldSearch,
    /// Hide NULL (encrypt a presence byte) for this field.
    pub hide_null: bool,
    /// Padding block in bytes (0: none); the class policy may raise it.
    pub pad_to: u16,
}

impl FieldSpec {
    /// An envelope-encrypted, non-searchable field with visible NULL and no padding.
    pub fn new(column: impl Into<String>, class: Class) -> Self {
        FieldSpec {
            column: column.into(),
            class,
            search: FieldSearch::None,
            hide_null: false,
            pad_to: 0,
        }
    }

    /// Adds a blind index.
    pub fn blind_index(mut self, normalizer: Normalizer) -> Self {
        self.search = FieldSearch::BlindIndex(normalizer);
        self
    }

    /// Makes the field deterministic.
    pub fn deterministic(mut self) -> Self {
        self.search = FieldSearch::Deterministic;
        self
    }

    /// Hides NULL.
    pub fn hide_null(mut self) -> Self {
        self.hide_null = true;
        self
    }

    /// Pads to a multiple of `block` bytes.
    pub fn pad_to(mut self, block: u16) -> Self {
        self.pad_to = block;
        self
    }

    /// True when the field is sealed with the row's DEK (not deterministic).
    pub fn is_envelope(&self) -> bool {
        self.search != FieldSearch::Deterministic
    }
}

/// The classified part of a table.
#[derive(Debug, Clone)]
pub struct RowSchema {
    table: String,
    fields: Vec<FieldSpec>,
    /// Classes that have a key column, in order: classes of envelope fields first (in field
    /// order), then legacy classes kept only to read rows sealed before a reclassification.
    key_classes: Vec<Class>,
    /// Per key class, the indexes of the envelope fields it seals.
    members: Vec<Vec<usize>>,
    /// Per key class, its KEK id (a SHA-256 each time would cost more than a field's AES).
    kek_ids: Vec<u32>,
    /// Shared lists for events.
    shared: SharedNames,
    /// Per field, the schema-fixed start of its associated data (see `seal`).
    field_aad_prefixes: Vec<Vec<u8>>,
    /// Per key class, the schema-fixed start of its DEK wrap's associated data.
    dek_aad_prefixes: Vec<Vec<u8>>,
    /// The class set a seal binds: every key class with envelope fields.
    sealed_class_set: Vec<u8>,
    /// Per key class, its column list when no member is NULL (the common row).
    full_lists: Vec<Vec<u8>>,
    /// Per field, the key class that seals it (`None` for deterministic fields).
    field_key_class: Vec<Option<usize>>,
    /// Identifies this content for per-handle caches ([`crate::rows::plan`]); new on every change.
    id: u64,
}

/// Names events repeat, built once.
#[derive(Debug, Clone)]
pub(crate) struct SharedNames {
    pub(crate) table: Arc<str>,
    pub(crate) columns: Arc<[String]>,
    pub(crate) classes: Arc<[String]>,
}

impl RowSchema {
    /// Checks and builds a schema for `table`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] when the table name is not 1 to 255 bytes, a column name is
    /// not 1 to 127 bytes (what a key column can record), a column appears twice, a searchable
    /// field hides NULL (its index would reveal NULL), a padding block exceeds 4096 bytes, or
    /// there is no field at all.
    pub fn new(table: impl Into<String>, fields: Vec<FieldSpec>) -> crate::Result<Self> {
        let table = table.into();
        if table.is_empty() || table.len() > 255 {
            return Err(crate::Error::InvalidInput(
                "a table name must be 1 to 255 bytes".into(),
            ));
        }
        let mut key_classes: Vec<Class> = Vec::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            if f.column.is_empty() || f.column.len() > MAX_COLUMN_NAME {
                return Err(crate::Error::InvalidInput(format!(
                    "column `{}` must be 1 to {MAX_COLUMN_NAME} bytes long",
                    f.column
                )));
            }
            if fields[..i].iter().any(|g| g.column == f.column) {
                return Err(crate::Error::InvalidInput(format!(
                    "column `{}` appears twice in table `{table}`",
                    f.column
                )));
            }
            if f.hide_null && f.search != FieldSearch::None {
                return Err(crate::Error::InvalidInput(format!(
                    "column `{}`: a hidden NULL cannot be searchable (the index would reveal NULL)",
                    f.column
                )));
            }
            if f.pad_to > 4096 {
                return Err(crate::Error::InvalidInput(format!(
                    "column `{}`: padding block {} exceeds 4096",
                    f.column, f.pad_to
                )));
            }
            if f.is_envelope() {
                match key_classes.iter().position(|c| *c == f.class) {
                    Some(k) => members[k].push(i),
                    None => {
                        key_classes.push(f.class.clone());
                        members.push(vec![i]);
                    }
                }
            }
        }
        if fields.is_empty() {
            return Err(crate::Error::InvalidInput(format!(
                "table `{table}` has no classified columns"
            )));
        }
        let mut schema = RowSchema {
            shared: SharedNames {
                table: Arc::from(table.as_str()),
                columns: Arc::from([]),
                classes: Arc::from([]),
            },
            table,
            fields,
            key_classes,
            members,
            kek_ids: Vec::new(),
            field_aad_prefixes: Vec::new(),
            dek_aad_prefixes: Vec::new(),
            sealed_class_set: Vec::new(),
            full_lists: Vec::new(),
            field_key_class: Vec::new(),
            id: 0,
        };
        schema.refresh();
        Ok(schema)
    }

    fn refresh(&mut self) {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        self.id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.full_lists = self
            .members
            .iter()
            .map(|m| {
                let names = m.iter().map(|&i| (self.fields[i].column.as_str(), false));
                // Column names were checked in `new`; an empty member list has no list.
                crate::format::key_column::encode_list(names).unwrap_or_default()
            })
            .collect();
        self.field_key_class = (0..self.fields.len())
            .map(|i| self.members.iter().position(|m| m.contains(&i)))
            .collect();
        self.kek_ids = self
            .key_classes
            .iter()
            .map(|c| crate::keys::registry::kek_id(c.as_str()))
            .collect();
        self.shared.columns = self.fields.iter().map(|f| f.column.clone()).collect();
        self.shared.classes = self.classes().iter().map(|c| c.to_string()).collect();
        self.field_aad_prefixes = self
            .fields
            .iter()
            .map(|f| crate::rows::aad::field_aad_prefix(&self.table, &f.column, f.class.as_str()))
            .collect();
        self.sealed_class_set = self.class_set(|k| !self.members(k).is_empty());
        self.dek_aad_prefixes = self
            .key_classes
            .iter()
            .map(|c| crate::rows::aad::dek_aad_prefix(&self.table, c.as_str()))
            .collect();
    }

    /// Encodes the key classes `k` for which `present(k)` holds: their names sorted, each as
    /// a length byte and the name (FORMAT.md §4).
    fn class_set(&self, present: impl Fn(usize) -> bool) -> Vec<u8> {
        let mut names: Vec<&str> = (0..self.key_classes.len())
            .filter(|&k| present(k))
            .map(|k| self.key_classes[k].as_str())
            .collect();
        names.sort_unstable();
        let mut out = Vec::with_capacity(names.iter().map(|n| n.len() + 1).sum());
        for n in names {
            // Class names are at most 32 bytes (checked by `Class::new`).
            out.push(n.len() as u8);
            out.extend_from_slice(n.as_bytes());
        }
        out
    }

    /// The class set a seal of this schema binds.
    pub(crate) fn sealed_class_set(&self) -> &[u8] {
        &self.sealed_class_set
    }

    /// The class set of a stored row: the classes whose key column is present.
    pub(crate) fn present_class_set(
        &self,
        key_columns: &[Option<&[u8]>],
    ) -> std::borrow::Cow<'_, [u8]> {
        let present = |k: usize| key_columns.get(k).is_some_and(Option::is_some);
        if (0..self.key_classes.len()).all(|k| present(k) != self.members(k).is_empty()) {
            std::borrow::Cow::Borrowed(&self.sealed_class_set)
        } else {
            std::borrow::Cow::Owned(self.class_set(present))
        }
    }

    pub(crate) fn field_aad_prefix(&self, field: usize) -> &[u8] {
        self.field_aad_prefixes
            .get(field)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub(crate) fn dek_aad_prefix(&self, key_class: usize) -> &[u8] {
        self.dek_aad_prefixes
            .get(key_class)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The column list key class `k` records when none of its members is NULL.
    pub(crate) fn full_list(&self, key_class: usize) -> &[u8] {
        self.full_lists
            .get(key_class)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Whether any field has a blind index.
    pub(crate) fn has_blind_index(&self) -> bool {
        self.fields
            .iter()
            .any(|f| matches!(f.search, FieldSearch::BlindIndex(_)))
    }

    /// The key class that seals field `i`, if any.
    pub(crate) fn field_key_class(&self, field: usize) -> Option<usize> {
        self.field_key_class.get(field).copied().flatten()
    }

    /// Identifies this schema's content (see [`crate::rows::plan`]).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn shared(&self) -> &SharedNames {
        &self.shared
    }

    pub(crate) fn kek_id(&self, key_class: usize) -> u32 {
        self.kek_ids.get(key_class).copied().unwrap_or_default()
    }

    /// Keeps a key column for `class` even if no field has that class any more, so rows
    /// sealed before a reclassification stay readable.
    pub fn with_legacy_class(mut self, class: Class) -> Self {
        if !self.key_classes.contains(&class) {
            self.key_classes.push(class);
            self.members.push(Vec::new());
            self.refresh();
        }
        self
    }

    /// Stored table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Fields in order.
    pub fn fields(&self) -> &[FieldSpec] {
        &self.fields
    }

    /// Classes with a key column, in key-column order.
    pub fn key_classes(&self) -> &[Class] {
        &self.key_classes
    }

    /// Distinct classes of all fields, plus legacy classes.
    pub fn classes(&self) -> Vec<&Class> {
        let mut out: Vec<&Class> = Vec::new();
        for c in self
            .fields
            .iter()
            .map(|f| &f.class)
            .chain(self.key_classes.iter())
        {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }

    pub(crate) fn members(&self, key_class: usize) -> &[usize] {
        self.members
            .get(key_class)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Checks that a row brings one value per classified field.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] when `given` is not the number of classified fields.
    pub fn check_values(&self, given: usize) -> crate::Result<()> {
        if given == self.fields.len() {
            Ok(())
        } else {
            Err(crate::Error::InvalidInput(format!(
                "table `{}` has {} classified fields but {} values were given",
                self.table,
                self.fields.len(),
                given
            )))
        }
    }

    /// Position of a column.
    pub fn position(&self, column: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.column == column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Class {
        Class::new(s).unwrap()
    }

    #[test]
    fn key_classes_follow_envelope_fields() {
        let s = RowSchema::new(
            "patients",
            vec![
                FieldSpec::new("email", c("private")).blind_index(Normalizer::Casefold),
                FieldSpec::new("ssn", c("restricted")),
                FieldSpec::new("code", c("secret")).deterministic(),
                FieldSpec::new("name", c("private")),
            ],
        )
        .unwrap();
        assert_eq!(s.key_classes(), &[c("private"), c("restricted")]);
        assert_eq!(s.members(0), &[0, 3]);
        assert_eq!(s.classes().len(), 3);
        let s = s.with_legacy_class(c("public"));
        assert_eq!(s.key_classes().len(), 3);
    }

    #[test]
    fn bad_schemas_are_refused() {
        assert!(RowSchema::new("t", vec![]).is_err());
        assert!(
            RowSchema::new(
                "t",
                vec![FieldSpec::new("a", c("x")), FieldSpec::new("a", c("y"))]
            )
            .is_err()
        );
        assert!(
            RowSchema::new(
                "t",
                vec![FieldSpec::new("a", c("x")).deterministic().hide_null()]
            )
            .is_err()
        );
        assert!(RowSchema::new("t", vec![FieldSpec::new("x".repeat(128), c("x"))]).is_err());
        assert!(RowSchema::new("", vec![FieldSpec::new("a", c("x"))]).is_err());
    }
}
