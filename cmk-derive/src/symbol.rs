//! The names of the derive's attribute keys, in one place: the parser matches on them and the
//! "valid ones" lists in error messages are made from them.

pub const TABLE: &str = "table";
pub const TENANT: &str = "tenant";
pub const ID: &str = "id";
pub const IDS: &str = "ids";
pub const ROW_ID: &str = "row_id";
pub const SEALED: &str = "sealed";
pub const KEY_COLUMNS: &str = "key_columns";
pub const LOOKUPS: &str = "lookups";
pub const CRATE: &str = "crate";

pub const CLASS: &str = "class";
pub const COLUMN: &str = "column";
pub const BLIND_INDEX: &str = "blind_index";
pub const DETERMINISTIC: &str = "deterministic";
pub const HIDE_NULL: &str = "hide_null";
pub const PAD: &str = "pad";

pub const NORMALIZE: &str = "normalize";
pub const DERIVE: &str = "derive";
pub const ATTR: &str = "attr";

/// The keys of `#[cmk(...)]` on the struct, in the order error messages list them.
pub const STRUCT_KEYS: [&str; 9] = [
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
pub const FIELD_KEYS: [&str; 6] = [CLASS, COLUMN, BLIND_INDEX, DETERMINISTIC, HIDE_NULL, PAD];

/// Normaliser names, as `cmk_core::crypto::normalize::Normalizer` spells them.
pub const NORMALIZERS: [&str; 3] = ["exact", "trimmed", "casefold"];

/// `#[diesel(...)]` keys that would change an encrypted field's stored type.
pub const DIESEL_TYPE_KEYS: [&str; 4] = ["sql_type", "serialize_as", "deserialize_as", "embed"];

/// `#[sea_orm(...)]` keys that would change an encrypted field's stored type.
pub const SEA_ORM_TYPE_KEYS: [&str; 3] = ["column_type", "select_as", "save_as"];
