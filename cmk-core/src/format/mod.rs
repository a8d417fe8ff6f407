//! Byte formats, specified in docs/FORMAT.md; this module only lays out and parses bytes.

pub mod aad;
pub mod field;
pub mod key_column;

/// Nonce length in bytes.
pub const NONCE_LEN: usize = 12;
/// Tag length in bytes.
pub const TAG_LEN: usize = 16;

/// The current format version of key columns and envelope field ciphertexts.
pub const FORMAT_V1: u8 = 0x01;

/// The oldest format version this build accepts unless the deployment raises it
/// (`CmkSettings::min_format_version`). Set in code, never read from the database.
pub const MIN_FORMAT_VERSION: u8 = FORMAT_V1;
