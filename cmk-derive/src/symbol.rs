//! The names of the derive's attribute keys, in one place: the parser matches on them and the
//! "valid ones" lists in error messages are made from them.

pub(crate) const TABLE: &str = "table";
pub(crate) const TENANT: &str = "tenant";
pub(crate) const ID: &str = "id";
pub(crate) const IDS: &str = "ids";
pub(crate) const ROW_ID: &str = "row_id";
pub(crate) const SEALED: &str = "sealed";
pub(crate) const KEY_COLUMNS: &str = "key_columns";
pub(crate) const LOOKUPS: &str = "lookups";
pub(crate) const CRATE: &str = "crate";

pub(crate) const CLASS: &str = "class";
pub(crate) const COLUMN: &str = "column";
pub(crate) const BLIND_INDEX: &str = "blind_index";
pub(crate) const DETERMINISTIC: &str = "deterministic";
pub(crate) const HIDE_NULL: &str = "hide_null";
pub(crate) const PAD: &str = "pad";

pub(crate) const NORMALIZE: &str = "normalize";
pub(crate) const DERIVE: &str = "derive";
pub(crate) const ATTR: &str = "attr";

/// The keys of `#[cmk(...)]` on the struct, in the order error messages list them.
pub(crate) const STRUCT_KEYS: [&str; 9] = [
    TABLE,
    TENANT,
    ID,
    IDS,
    ROW_ID,
    SEALED,
    KEY_COLUMNS,
    LOOKUPS,
    CRATE,
];

/// The keys of `#[cmk(...)]` on a field.
pub(crate) const FIELD_KEYS: [&str; 6] =
    [CLASS, COLUMN, BLIND_INDEX, DETERMINISTIC, HIDE_NULL, PAD];

/// Normaliser names, as `cmk_core::crypto::normalize::Normalizer` spells them.
pub(crate) const NORMALIZERS: [&str; 3] = ["exact", "trimmed", "casefold"];

/// `#[diesel(...)]` keys that would change an encrypted field's stored type.
pub(crate) const DIESEL_TYPE_KEYS: [&str; 4] =
    ["sql_type", "serialize_as", "deserialize_as", "embed"];

/// `#[sea_orm(...)]` keys that would change an encrypted field's stored type.
pub(crate) const SEA_ORM_TYPE_KEYS: [&str; 3] = ["column_type", "select_as", "save_as"];
