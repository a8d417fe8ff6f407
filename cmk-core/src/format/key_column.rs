//! The key column: one per class per row, holding that row-class's wrapped DEK.
//!
//! ```text
//! 0       version            0x03 (bound; 0x01 before write ids, still read)
//! 1..5    KEK id             u32 BE   \ queryable: the rows a KEK rotation must
//! 5..9    KEK version        u32 BE   / touch are `substr(col, 2, 8) = ?`
//! 9..21   nonce              12 bytes
//! 21..53  encrypted DEK      32 bytes  AES-256-GCM under the KEK
//! 53..69  tag                16 bytes
//! 69..85  write id           16 bytes (version 0x03 only)
//! ..      column list        one or more entries: u8 (bit 7: NULL, bits 0-6: name length
//!                            1..=127) then the column name
//! ```
//!
//! The column list records which columns the DEK sealed and which were NULL; it is
//! authenticated as part of the wrap's associated data, so a field cannot be nulled out or
//! moved between classes unnoticed, and a reclassified field is found under its old class.
//!
//! The write id is random per write of a row and the same in every key column the write
//! leaves (a class whose values did not change keeps its DEK and is re-wrapped with the new
//! id); it is authenticated in each wrap, so key columns of different writes of a row never
//! read together: a class cannot be rolled back alone.

use super::FORMAT_V1;
use super::{NONCE_LEN, TAG_LEN};

/// Length of the queryable prefix (version, KEK id, KEK version).
pub const PREFIX_LEN: usize = 9;
/// Offset of the column list in an unbound (version 0x01) key column, and of the write id in
/// a bound one.
pub const LIST_OFFSET: usize = PREFIX_LEN + NONCE_LEN + 32 + TAG_LEN;
/// First byte of a key column with a write id (the version cmk writes).
pub const BOUND_V1: u8 = 0x03;
/// Length of a write id.
pub const WRITE_ID_LEN: usize = 16;
/// Offset of the column list in a bound key column.
pub const BOUND_LIST_OFFSET: usize = LIST_OFFSET + WRITE_ID_LEN;

/// The id every key column of one write of a row carries (random per write).
pub type WriteId = [u8; WRITE_ID_LEN];
/// Longest column name a key column can record.
pub const MAX_COLUMN_NAME: usize = 127;
const NULL_BIT: u8 = 0x80;

/// One column recorded in a key column.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListedColumn<'a> {
    /// Stored column name.
    pub name: &'a str,
    /// True when the column was NULL (no ciphertext stored).
    pub null: bool,
}

/// A parsed key column (borrowing the stored bytes).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ParsedKeyColumn<'a> {
    /// Format version.
    pub version: u8,
    /// KEK id.
    pub kek_id: u32,
    /// KEK version.
    pub kek_version: u32,
    /// Nonce of the DEK wrap.
    pub nonce: [u8; NONCE_LEN],
    /// Encrypted DEK.
    pub encrypted_dek: [u8; 32],
    /// Tag of the DEK wrap.
    pub tag: [u8; TAG_LEN],
    /// The write id (bound key columns), `None` in a version 0x01 key column.
    pub write_id: Option<WriteId>,
    /// The raw column-list bytes (bound into the wrap's associated data), checked well formed.
    pub list_bytes: &'a [u8],
}

impl<'a> ParsedKeyColumn<'a> {
    /// The recorded columns, in order.
    pub fn columns(&self) -> ListIter<'a> {
        ListIter(self.list_bytes)
    }

    /// Whether `column` is listed, and if so whether it was NULL.
    pub fn listing(&self, column: &str) -> Option<bool> {
        listing(self.list_bytes, column)
    }
}

/// Iterates over a column list that [`parse`] has checked.
#[derive(Debug, Clone)]
pub struct ListIter<'a>(&'a [u8]);

impl<'a> Iterator for ListIter<'a> {
    type Item = ListedColumn<'a>;
    fn next(&mut self) -> Option<ListedColumn<'a>> {
        let (&head, rest) = self.0.split_first()?;
        let len = usize::from(head & !NULL_BIT);
        let name = std::str::from_utf8(rest.get(..len)?).unwrap_or("\u{FFFD}");
        self.0 = &rest[len..];
        Some(ListedColumn {
            name,
            null: head & NULL_BIT != 0,
        })
    }
}

/// First byte of a classic-mode key column (the DEK wrapped by the KMS itself).
pub const CLASSIC_V1: u8 = 0x02;
/// First byte of a classic-mode key column with a write id (the version cmk writes).
pub const CLASSIC_BOUND_V1: u8 = 0x04;

/// Whether a key column is in classic mode (either version).
pub fn is_classic(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(&CLASSIC_V1 | &CLASSIC_BOUND_V1))
}

/// A parsed classic-mode key column:
/// `0x04 ‖ KEK id (u32) ‖ 0 (u32) ‖ blob length (u16) ‖ KMS blob ‖ write id (16) ‖ column
/// list` (`0x02` has no write id).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ParsedClassicKeyColumn<'a> {
    /// The class's KEK id (identifies the class; there is no KEK).
    pub kek_id: u32,
    /// What the KMS returned when it wrapped the DEK.
    pub blob: &'a [u8],
    /// The write id (`0x04`), `None` in a `0x02` key column.
    pub write_id: Option<WriteId>,
    /// The raw column-list bytes (bound into the wrap's associated data), checked well formed.
    pub list_bytes: &'a [u8],
}

/// Parses a classic-mode key column; malformed input is `Tampered`.
///
/// # Errors
/// [`crate::Error::Tampered`] when the value does not start with `0x02` or `0x04`, is shorter
/// than its 11-byte header, has a non-zero KEK version, ends inside the blob or the write id,
/// or has an empty or truncated column list.
pub fn parse_classic(bytes: &[u8]) -> crate::Result<ParsedClassicKeyColumn<'_>> {
    let bad = crate::Error::Tampered;
    if bytes.len() < 11 || !is_classic(bytes) || bytes[5..9] != [0; 4] {
        return Err(bad);
    }
    let kek_id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let n = usize::from(u16::from_be_bytes([bytes[9], bytes[10]]));
    let blob = bytes.get(11..11 + n).ok_or(crate::Error::Tampered)?;
    let (write_id, list_bytes) = if bytes[0] == CLASSIC_BOUND_V1 {
        let id = bytes
            .get(11 + n..11 + n + WRITE_ID_LEN)
            .ok_or(crate::Error::Tampered)?;
        (id.try_into().ok(), &bytes[11 + n + WRITE_ID_LEN..])
    } else {
        (None, &bytes[11 + n..])
    };
    check_list(list_bytes)?;
    Ok(ParsedClassicKeyColumn {
        kek_id,
        blob,
        write_id,
        list_bytes,
    })
}

/// Lays out a classic-mode key column (`0x04` with a write id, `0x02` without).
///
/// # Errors
/// [`crate::Error::InvalidInput`] when `blob` is longer than 65535 bytes, since its length is
/// stored in two bytes.
pub fn build_classic(
    kek_id: u32,
    blob: &[u8],
    write_id: Option<&WriteId>,
    list: &[u8],
) -> crate::Result<Vec<u8>> {
    let n = u16::try_from(blob.len()).map_err(|_| {
        crate::Error::InvalidInput("the KMS returned a wrapped key over 65535 bytes".into())
    })?;
    let mut out = Vec::with_capacity(11 + blob.len() + WRITE_ID_LEN + list.len());
    out.push(if write_id.is_some() {
        CLASSIC_BOUND_V1
    } else {
        CLASSIC_V1
    });
    out.extend_from_slice(&kek_id.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(blob);
    if let Some(id) = write_id {
        out.extend_from_slice(id);
    }
    out.extend_from_slice(list);
    Ok(out)
}

/// Whether `column` is listed in a column list, and if so whether it was NULL.
pub fn listing(list_bytes: &[u8], column: &str) -> Option<bool> {
    let want = column.as_bytes();
    let mut rest = list_bytes;
    while let Some((&head, tail)) = rest.split_first() {
        let len = usize::from(head & !NULL_BIT);
        let name = tail.get(..len)?;
        if name == want {
            return Some(head & NULL_BIT != 0);
        }
        rest = &tail[len..];
    }
    None
}

/// The queryable prefix of an unbound key column: `0x01 ‖ kek_id ‖ kek_version`.
pub fn prefix(kek_id: u32, kek_version: u32) -> [u8; PREFIX_LEN] {
    prefix_of(FORMAT_V1, kek_id, kek_version)
}

/// The queryable prefix of a bound key column (what cmk writes): `0x03 ‖ kek_id ‖
/// kek_version`.
pub fn bound_prefix(kek_id: u32, kek_version: u32) -> [u8; PREFIX_LEN] {
    prefix_of(BOUND_V1, kek_id, kek_version)
}

fn prefix_of(version: u8, kek_id: u32, kek_version: u32) -> [u8; PREFIX_LEN] {
    let mut p = [0u8; PREFIX_LEN];
    p[0] = version;
    p[1..5].copy_from_slice(&kek_id.to_be_bytes());
    p[5..9].copy_from_slice(&kek_version.to_be_bytes());
    p
}

/// Appends a column list to `out`; fails on an empty list or a name of 0 or over 127 bytes.
///
/// # Errors
/// [`crate::Error::InvalidInput`] when the list is empty or a name is empty or longer than
/// [`MAX_COLUMN_NAME`] bytes. Entries before the bad name are already appended to `out`.
pub fn encode_list_into<'a>(
    out: &mut Vec<u8>,
    columns: impl IntoIterator<Item = (&'a str, bool)>,
) -> crate::Result<()> {
    let start = out.len();
    for (name, null) in columns {
        if name.is_empty() || name.len() > MAX_COLUMN_NAME {
            return Err(crate::Error::InvalidInput(format!(
                "column name `{name}` must be 1 to {MAX_COLUMN_NAME} bytes to be recorded in a key column"
            )));
        }
        out.push(name.len() as u8 | if null { NULL_BIT } else { 0 });
        out.extend_from_slice(name.as_bytes());
    }
    if out.len() == start {
        return Err(crate::Error::InvalidInput(
            "a key column must list at least one column".into(),
        ));
    }
    Ok(())
}

/// Encodes a column list on its own.
///
/// # Errors
/// [`crate::Error::InvalidInput`] when the list is empty or a name is empty or longer than
/// [`MAX_COLUMN_NAME`] bytes.
pub fn encode_list<'a>(
    columns: impl IntoIterator<Item = (&'a str, bool)>,
) -> crate::Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_list_into(&mut out, columns)?;
    Ok(out)
}

/// Checks that a column list is well formed: one or more entries, each 1..=127 bytes of UTF-8.
fn check_list(mut bytes: &[u8]) -> crate::Result<()> {
    if bytes.is_empty() {
        return Err(crate::Error::Tampered);
    }
    while let Some((&head, rest)) = bytes.split_first() {
        let len = usize::from(head & !NULL_BIT);
        // Names are compared as bytes; the public iterator validates UTF-8 where it shows them.
        if len == 0 || rest.len() < len {
            return Err(crate::Error::Tampered);
        }
        bytes = &rest[len..];
    }
    Ok(())
}

/// Parses a key column. Unknown versions and malformed input are `Tampered`.
///
/// # Errors
/// [`crate::Error::Tampered`] when the value does not start with version `0x01` or `0x03`,
/// ends before the column list, or has an empty or truncated column list (an entry of length
/// 0, or longer than the bytes left).
pub fn parse(bytes: &[u8]) -> crate::Result<ParsedKeyColumn<'_>> {
    let list_offset = match bytes.first() {
        Some(&FORMAT_V1) => LIST_OFFSET,
        Some(&BOUND_V1) => BOUND_LIST_OFFSET,
        _ => return Err(crate::Error::Tampered),
    };
    if bytes.len() <= list_offset {
        return Err(crate::Error::Tampered);
    }
    let bad = |_| crate::Error::Tampered;
    let list_bytes = &bytes[list_offset..];
    check_list(list_bytes)?;
    let write_id = if list_offset == BOUND_LIST_OFFSET {
        Some(
            bytes[LIST_OFFSET..BOUND_LIST_OFFSET]
                .try_into()
                .map_err(bad)?,
        )
    } else {
        None
    };
    Ok(ParsedKeyColumn {
        version: bytes[0],
        kek_id: u32::from_be_bytes(bytes[1..5].try_into().map_err(bad)?),
        kek_version: u32::from_be_bytes(bytes[5..9].try_into().map_err(bad)?),
        nonce: bytes[9..21].try_into().map_err(bad)?,
        encrypted_dek: bytes[21..53].try_into().map_err(bad)?,
        tag: bytes[53..69].try_into().map_err(bad)?,
        write_id,
        list_bytes,
    })
}

/// Lays out a key column from its parts: bound (`0x03`) with a write id, `0x01` without.
pub fn build(
    kek_id: u32,
    kek_version: u32,
    nonce: &[u8; NONCE_LEN],
    encrypted_dek: &[u8; 32],
    tag: &[u8; TAG_LEN],
    write_id: Option<&WriteId>,
    list: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(BOUND_LIST_OFFSET + list.len());
    out.extend_from_slice(&match write_id {
        Some(_) => bound_prefix(kek_id, kek_version),
        None => prefix(kek_id, kek_version),
    });
    out.extend_from_slice(nonce);
    out.extend_from_slice(encrypted_dek);
    out.extend_from_slice(tag);
    if let Some(id) = write_id {
        out.extend_from_slice(id);
    }
    out.extend_from_slice(list);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips() {
        let list = encode_list([("email", false), ("phone", true)]).unwrap();
        let bytes = build(7, 2, &[1; 12], &[2; 32], &[3; 16], None, &list);
        assert_eq!(&bytes[..9], &prefix(7, 2));
        let k = parse(&bytes).unwrap();
        assert_eq!((k.kek_id, k.kek_version), (7, 2));
        assert_eq!(k.write_id, None);
        let bound = build(7, 2, &[1; 12], &[2; 32], &[3; 16], Some(&[4; 16]), &list);
        assert_eq!(&bound[..9], &bound_prefix(7, 2));
        let b = parse(&bound).unwrap();
        assert_eq!(b.write_id, Some([4; 16]));
        assert_eq!(b.list_bytes, k.list_bytes);
        assert_eq!(k.listing("phone"), Some(true));
        assert_eq!(k.listing("fax"), None);
        assert_eq!(
            k.columns().collect::<Vec<_>>(),
            vec![
                ListedColumn {
                    name: "email",
                    null: false
                },
                ListedColumn {
                    name: "phone",
                    null: true
                },
            ]
        );
    }

    #[test]
    fn malformed_key_columns_are_tampered_never_panics() {
        let list = encode_list([("email", false)]).unwrap();
        let bytes = build(7, 2, &[1; 12], &[2; 32], &[3; 16], None, &list);
        for len in 0..bytes.len() {
            assert!(parse(&bytes[..len]).unwrap_err().is_tampered());
        }
        let bound = build(7, 2, &[1; 12], &[2; 32], &[3; 16], Some(&[4; 16]), &list);
        for len in 0..bound.len() {
            assert!(parse(&bound[..len]).unwrap_err().is_tampered());
        }
        let classic = build_classic(7, &[5; 40], Some(&[4; 16]), &list).unwrap();
        assert_eq!(parse_classic(&classic).unwrap().write_id, Some([4; 16]));
        for len in 0..classic.len() {
            assert!(parse_classic(&classic[..len]).unwrap_err().is_tampered());
        }
        let mut long = bytes.clone();
        long.push(9); // a list entry claiming 9 bytes that are not there
        assert!(parse(&long).unwrap_err().is_tampered());
        assert!(encode_list([("", false)]).is_err());
        assert!(encode_list(std::iter::empty()).is_err());
    }
}
