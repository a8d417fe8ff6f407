//! Schema manifests: what the derive knows of a model's table (its classified columns,
//! classes, value encodings, search, index and key columns), as JSON that a reader in another
//! language or an operator's tool reads instead of the Rust model (docs/FORMAT.md §12).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rows::schema::{FieldSearch, RowSchema};
use crate::tenant::policy::kek_id;

/// The `schema` value of a manifest of this layout.
pub const MANIFEST_SCHEMA: &str = "cmk.manifest/1";

/// A model's table as cmk stores it (`Encrypted::manifest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Manifest {
    /// Always [`MANIFEST_SCHEMA`].
    pub schema: String,
    /// The byte format version of the rows (docs/FORMAT.md).
    pub format: u8,
    /// The stored table name.
    pub table: String,
    /// Where a row's tenant comes from.
    pub tenant: TenantColumn,
    /// The row id column, if the model names one.
    pub row_id: Option<RowIdColumn>,
    /// The classified columns, in the model's order.
    pub fields: Vec<ManifestField>,
    /// One key column per class, in the order of the schema's key classes.
    pub key_columns: Vec<ManifestKeyColumn>,
}

/// Where a row's tenant comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TenantColumn {
    /// A column of the row.
    Column(String),
    /// A single-tenant table: this fixed tenant.
    Fixed(String),
}

/// The row id column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RowIdColumn {
    /// The column.
    pub column: String,
    /// Whether the id is bound into the ciphertexts (application-assigned ids; docs/FORMAT.md
    /// §2 says how each id type is encoded).
    pub bound: bool,
}

impl RowIdColumn {
    /// A row id column, bound or not.
    pub fn new(column: impl Into<String>, bound: bool) -> Self {
        RowIdColumn {
            column: column.into(),
            bound,
        }
    }
}

/// How a field's value is encoded before sealing (docs/FORMAT.md §5a).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Encoding {
    /// UTF-8 text (`String`).
    Utf8,
    /// Raw bytes (`Vec<u8>`).
    Bytes,
    /// JSON as `serde_json` writes it (any other serde type).
    Json,
}

/// One classified column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ManifestField {
    /// The stored column.
    pub column: String,
    /// Its class.
    pub class: String,
    /// How its value is encoded.
    pub encoding: Encoding,
    /// Whether it may be NULL (an `Option`).
    pub nullable: bool,
    /// `none`, `blind_index` or `deterministic`.
    pub search: String,
    /// The blind index's normaliser (`exact`, `trimmed`, `casefold`).
    pub normalizer: Option<String>,
    /// The column holding the blind index.
    pub index_column: Option<String>,
    /// NULL is encrypted like a value (the class policy may also ask for it).
    pub hide_null: bool,
    /// Padding block in bytes, 0 for none (the class policy may raise it).
    pub pad_to: u16,
}

/// A class's key column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ManifestKeyColumn {
    /// The class.
    pub class: String,
    /// The stored column.
    pub column: String,
    /// The class's KEK id (docs/FORMAT.md §3).
    pub kek_id: u32,
}

/// What the derive knows of a field beyond its [`crate::schema::FieldSpec`].
#[derive(Debug, Clone, Copy)]
// Exhaustive by design: built by generated code, one literal per field.
#[allow(clippy::exhaustive_structs)]
pub struct FieldFacts<'a> {
    /// How its value is encoded.
    pub encoding: Encoding,
    /// Whether it is an `Option`.
    pub nullable: bool,
    /// The blind index column, for a blind-indexed field.
    pub index_column: Option<&'a str>,
}

impl Manifest {
    /// The manifest of `schema`, whose key columns are `key_columns` (one per key class) and
    /// whose fields have `facts` (one per field).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `key_columns` or `facts` do not match the schema's key
    /// classes and fields one for one.
    pub fn describe(
        schema: &RowSchema,
        tenant: TenantColumn,
        row_id: Option<RowIdColumn>,
        key_columns: &[&str],
        facts: &[FieldFacts<'_>],
    ) -> Result<Manifest> {
        let (fields, classes) = (schema.fields(), schema.key_classes());
        if key_columns.len() != classes.len() || facts.len() != fields.len() {
            return Err(Error::InvalidInput(format!(
                "the manifest of `{}` needs {} key columns and {} fields",
                schema.table(),
                classes.len(),
                fields.len()
            )));
        }
        let fields = fields
            .iter()
            .zip(facts)
            .map(|(f, facts)| {
                let (search, normalizer) = match f.search {
                    FieldSearch::None => ("none", None),
                    FieldSearch::BlindIndex(n) => ("blind_index", Some(n.as_str().to_string())),
                    FieldSearch::Deterministic => ("deterministic", None),
                };
                ManifestField {
                    column: f.column.clone(),
                    class: f.class.to_string(),
                    encoding: facts.encoding,
                    nullable: facts.nullable,
                    search: search.to_string(),
                    normalizer,
                    index_column: facts.index_column.map(str::to_string),
                    hide_null: f.hide_null,
                    pad_to: f.pad_to,
                }
            })
            .collect();
        let key_columns = classes
            .iter()
            .zip(key_columns)
            .map(|(class, column)| ManifestKeyColumn {
                class: class.to_string(),
                column: (*column).to_string(),
                kek_id: kek_id(class.as_str()),
            })
            .collect();
        Ok(Manifest {
            schema: MANIFEST_SCHEMA.to_string(),
            format: crate::format::FORMAT_V1,
            table: schema.table().to_string(),
            tenant,
            row_id,
            fields,
            key_columns,
        })
    }

    /// The manifest as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // A manifest holds strings, numbers and booleans only: it always serialises.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads a manifest.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `json` is not a manifest of [`MANIFEST_SCHEMA`].
    pub fn from_json(json: &str) -> Result<Manifest> {
        let m: Manifest = serde_json::from_str(json)
            .map_err(|e| Error::InvalidInput(format!("not a cmk manifest: {e}")))?;
        if m.schema != MANIFEST_SCHEMA {
            return Err(Error::InvalidInput(format!(
                "manifest schema `{}` is not `{MANIFEST_SCHEMA}`",
                m.schema
            )));
        }
        Ok(m)
    }
}

/// Writes each manifest to `dir` as `<table>.manifest.json` (the directory is created if
/// missing), and returns the files written: the way an application hands all its models'
/// manifests to `cmk verify --manifest` or to another team.
///
/// # Errors
/// [`Error::Io`] when the directory or a file cannot be written; [`Error::InvalidInput`] when
/// two manifests name the same table.
pub fn write_manifests(dir: &Path, manifests: &[Manifest]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let mut written: Vec<PathBuf> = Vec::with_capacity(manifests.len());
    for m in manifests {
        if m.table.contains(['/', '\\', '\0']) || m.table.starts_with('.') {
            return Err(Error::InvalidInput(format!(
                "table `{}` does not make a file name",
                m.table
            )));
        }
        let path = dir.join(format!("{}.manifest.json", m.table));
        if written.contains(&path) {
            return Err(Error::InvalidInput(format!(
                "two manifests describe table `{}`",
                m.table
            )));
        }
        std::fs::write(&path, m.to_json() + "\n")
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        written.push(path);
    }
    Ok(written)
}
