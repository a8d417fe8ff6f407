//! KMIP's TTLV encoding (KMIP 1.4 §9.1), for the dozen items cmk sends and reads.
//!
//! Each item is `tag (3 bytes) ‖ type (1) ‖ length (u32 BE) ‖ value`, the value padded with
//! zeros to a multiple of 8 bytes; a structure's value is its items in order. The decoder
//! takes bytes from the network: it checks every length against what is left, caps nesting
//! depth and never panics; byte strings (key material) are wiped on drop.

use zeroize::Zeroizing;

/// Item types.
mod kind {
    pub(super) const STRUCTURE: u8 = 0x01;
    pub(super) const INTEGER: u8 = 0x02;
    pub(super) const LONG_INTEGER: u8 = 0x03;
    pub(super) const BIG_INTEGER: u8 = 0x04;
    pub(super) const ENUMERATION: u8 = 0x05;
    pub(super) const BOOLEAN: u8 = 0x06;
    pub(super) const TEXT: u8 = 0x07;
    pub(super) const BYTES: u8 = 0x08;
    pub(super) const DATE_TIME: u8 = 0x09;
    pub(super) const INTERVAL: u8 = 0x0A;
}

/// The tags cmk uses (KMIP 1.4 §9.1.3.1).
pub(crate) mod tag {
    pub(crate) const ATTRIBUTE: u32 = 0x42_0008;
    pub(crate) const ATTRIBUTE_NAME: u32 = 0x42_000A;
    pub(crate) const ATTRIBUTE_VALUE: u32 = 0x42_000B;
    pub(crate) const BATCH_COUNT: u32 = 0x42_000D;
    pub(crate) const BATCH_ITEM: u32 = 0x42_000F;
    pub(crate) const BLOCK_CIPHER_MODE: u32 = 0x42_0011;
    pub(crate) const CRYPTOGRAPHIC_ALGORITHM: u32 = 0x42_0028;
    pub(crate) const CRYPTOGRAPHIC_PARAMETERS: u32 = 0x42_002B;
    pub(crate) const IV_COUNTER_NONCE: u32 = 0x42_003D;
    pub(crate) const OBJECT_TYPE: u32 = 0x42_0057;
    pub(crate) const OPERATION: u32 = 0x42_005C;
    pub(crate) const PROTOCOL_VERSION: u32 = 0x42_0069;
    pub(crate) const PROTOCOL_VERSION_MAJOR: u32 = 0x42_006A;
    pub(crate) const PROTOCOL_VERSION_MINOR: u32 = 0x42_006B;
    pub(crate) const REQUEST_HEADER: u32 = 0x42_0077;
    pub(crate) const REQUEST_MESSAGE: u32 = 0x42_0078;
    pub(crate) const REQUEST_PAYLOAD: u32 = 0x42_0079;
    pub(crate) const RESPONSE_MESSAGE: u32 = 0x42_007B;
    pub(crate) const RESPONSE_PAYLOAD: u32 = 0x42_007C;
    pub(crate) const RESULT_MESSAGE: u32 = 0x42_007D;
    pub(crate) const RESULT_REASON: u32 = 0x42_007E;
    pub(crate) const RESULT_STATUS: u32 = 0x42_007F;
    pub(crate) const REVOCATION_REASON: u32 = 0x42_0081;
    pub(crate) const REVOCATION_REASON_CODE: u32 = 0x42_0082;
    pub(crate) const TEMPLATE_ATTRIBUTE: u32 = 0x42_0091;
    pub(crate) const UNIQUE_IDENTIFIER: u32 = 0x42_0094;
    pub(crate) const DATA: u32 = 0x42_00C2;
    pub(crate) const TAG_LENGTH: u32 = 0x42_00CE;
    pub(crate) const AE_ADDITIONAL_DATA: u32 = 0x42_00FE;
    pub(crate) const AE_TAG: u32 = 0x42_00FF;
}

/// Nesting deeper than this is refused (KMIP messages nest about five deep).
const MAX_DEPTH: usize = 16;

/// An item's value.
#[derive(PartialEq, Eq)]
pub(crate) enum Value {
    Structure(Vec<Item>),
    Integer(i32),
    LongInteger(i64),
    BigInteger(Vec<u8>),
    Enumeration(u32),
    Boolean(bool),
    Text(String),
    Bytes(Zeroizing<Vec<u8>>),
    DateTime(i64),
    Interval(u32),
}

/// One TTLV item.
#[derive(PartialEq, Eq)]
pub(crate) struct Item {
    pub(crate) tag: u32,
    pub(crate) value: Value,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tags and shapes only: byte strings may be key material.
        match &self.value {
            Value::Structure(items) => f.debug_map().entry(&self.tag, items).finish(),
            Value::Bytes(b) => write!(f, "{:06x}: <{} bytes>", self.tag, b.len()),
            Value::Text(t) => write!(f, "{:06x}: {t:?}", self.tag),
            Value::Integer(v) => write!(f, "{:06x}: {v}", self.tag),
            Value::Enumeration(v) | Value::Interval(v) => write!(f, "{:06x}: {v:#x}", self.tag),
            Value::LongInteger(v) | Value::DateTime(v) => write!(f, "{:06x}: {v}", self.tag),
            Value::Boolean(v) => write!(f, "{:06x}: {v}", self.tag),
            Value::BigInteger(_) => write!(f, "{:06x}: <big integer>", self.tag),
        }
    }
}

impl Item {
    pub(crate) fn structure(tag: u32, items: Vec<Item>) -> Item {
        Item {
            tag,
            value: Value::Structure(items),
        }
    }
    pub(crate) fn integer(tag: u32, v: i32) -> Item {
        Item {
            tag,
            value: Value::Integer(v),
        }
    }
    pub(crate) fn enumeration(tag: u32, v: u32) -> Item {
        Item {
            tag,
            value: Value::Enumeration(v),
        }
    }
    pub(crate) fn text(tag: u32, v: impl Into<String>) -> Item {
        Item {
            tag,
            value: Value::Text(v.into()),
        }
    }
    pub(crate) fn bytes(tag: u32, v: &[u8]) -> Item {
        Item {
            tag,
            value: Value::Bytes(Zeroizing::new(v.to_vec())),
        }
    }

    /// The first child with `tag`, if this is a structure.
    pub(crate) fn child(&self, tag: u32) -> Option<&Item> {
        match &self.value {
            Value::Structure(items) => items.iter().find(|i| i.tag == tag),
            _ => None,
        }
    }

    pub(crate) fn as_enumeration(&self) -> Option<u32> {
        match self.value {
            Value::Enumeration(v) => Some(v),
            _ => None,
        }
    }
    pub(crate) fn as_text(&self) -> Option<&str> {
        match &self.value {
            Value::Text(v) => Some(v),
            _ => None,
        }
    }
    pub(crate) fn as_bytes(&self) -> Option<&[u8]> {
        match &self.value {
            Value::Bytes(v) => Some(v),
            _ => None,
        }
    }

    /// The length of this item's value, before padding.
    fn value_len(&self) -> usize {
        match &self.value {
            Value::Structure(items) => items.iter().map(Item::encoded_len).sum(),
            Value::Integer(_) | Value::Enumeration(_) | Value::Interval(_) => 4,
            Value::LongInteger(_) | Value::Boolean(_) | Value::DateTime(_) => 8,
            Value::BigInteger(v) => v.len(),
            Value::Text(v) => v.len(),
            Value::Bytes(v) => v.len(),
        }
    }

    /// The length of this item's encoding, padding included.
    fn encoded_len(&self) -> usize {
        let len = self.value_len();
        8 + len + padding(len)
    }

    /// Appends the encoding of this item to `out`, which has room for it (see
    /// [`Item::to_bytes`]: a buffer that never grows leaves no copy of key material behind).
    fn encode(&self, out: &mut Vec<u8>) {
        let len = self.value_len();
        out.extend_from_slice(&self.tag.to_be_bytes()[1..]);
        let kind = match &self.value {
            Value::Structure(_) => kind::STRUCTURE,
            Value::Integer(_) => kind::INTEGER,
            Value::LongInteger(_) => kind::LONG_INTEGER,
            Value::BigInteger(_) => kind::BIG_INTEGER,
            Value::Enumeration(_) => kind::ENUMERATION,
            Value::Boolean(_) => kind::BOOLEAN,
            Value::Text(_) => kind::TEXT,
            Value::Bytes(_) => kind::BYTES,
            Value::DateTime(_) => kind::DATE_TIME,
            Value::Interval(_) => kind::INTERVAL,
        };
        out.push(kind);
        // Messages cmk builds are a few kilobytes.
        out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
        match &self.value {
            Value::Structure(items) => items.iter().for_each(|i| i.encode(out)),
            Value::Integer(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::LongInteger(v) | Value::DateTime(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Enumeration(v) | Value::Interval(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Boolean(v) => out.extend_from_slice(&u64::from(*v).to_be_bytes()),
            Value::BigInteger(v) => out.extend_from_slice(v),
            Value::Text(v) => out.extend_from_slice(v.as_bytes()),
            Value::Bytes(v) => out.extend_from_slice(v),
        }
        out.resize(out.len() + padding(len), 0);
    }

    /// Encodes into a buffer of exactly the encoding's size.
    pub(crate) fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(self.encoded_len()));
        self.encode(&mut out);
        out
    }

    /// Decodes exactly one item spanning all of `bytes`.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Item, String> {
        let (item, used) = decode_at(bytes, 0)?;
        if used != bytes.len() {
            return Err(format!("{} bytes after the message", bytes.len() - used));
        }
        Ok(item)
    }
}

fn padding(len: usize) -> usize {
    (8 - len % 8) % 8
}

/// Decodes one item at the start of `bytes`; returns it and the bytes it used (padding
/// included).
fn decode_at(bytes: &[u8], depth: usize) -> Result<(Item, usize), String> {
    if depth > MAX_DEPTH {
        return Err("nested too deeply".into());
    }
    let header: &[u8; 8] = bytes
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .ok_or("truncated item header")?;
    let tag = u32::from_be_bytes([0, header[0], header[1], header[2]]);
    let kind = header[3];
    let len = usize::try_from(u32::from_be_bytes([
        header[4], header[5], header[6], header[7],
    ]))
    .map_err(|_| "length out of range")?;
    let padded = len.checked_add(padding(len)).ok_or("length out of range")?;
    let body = bytes
        .get(8..8 + len)
        .ok_or_else(|| format!("item {tag:06x} longer than the message"))?;
    if bytes.len() < 8 + padded {
        return Err(format!("item {tag:06x} misses its padding"));
    }
    let fixed = |want: usize| -> Result<&[u8], String> {
        if len == want {
            Ok(body)
        } else {
            Err(format!("item {tag:06x} has length {len}, not {want}"))
        }
    };
    let value = match kind {
        kind::STRUCTURE => {
            let mut items = Vec::new();
            let mut at = 0;
            while at < len {
                let (item, used) = decode_at(&body[at..], depth + 1)?;
                items.push(item);
                at += used;
            }
            if at != len {
                return Err(format!("structure {tag:06x} overruns its length"));
            }
            Value::Structure(items)
        }
        kind::INTEGER => Value::Integer(i32::from_be_bytes(arr(fixed(4)?)?)),
        kind::LONG_INTEGER => Value::LongInteger(i64::from_be_bytes(arr(fixed(8)?)?)),
        kind::BIG_INTEGER => Value::BigInteger(body.to_vec()),
        kind::ENUMERATION => Value::Enumeration(u32::from_be_bytes(arr(fixed(4)?)?)),
        kind::BOOLEAN => Value::Boolean(u64::from_be_bytes(arr(fixed(8)?)?) != 0),
        kind::TEXT => Value::Text(
            String::from_utf8(body.to_vec()).map_err(|_| format!("text {tag:06x} is not UTF-8"))?,
        ),
        kind::BYTES => Value::Bytes(Zeroizing::new(body.to_vec())),
        kind::DATE_TIME => Value::DateTime(i64::from_be_bytes(arr(fixed(8)?)?)),
        kind::INTERVAL => Value::Interval(u32::from_be_bytes(arr(fixed(4)?)?)),
        other => return Err(format!("item {tag:06x} has unknown type {other:#04x}")),
    };
    Ok((Item { tag, value }, 8 + padded))
}

fn arr<const N: usize>(b: &[u8]) -> Result<[u8; N], String> {
    b.try_into().map_err(|_| "bad length".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Item {
        Item::structure(
            tag::REQUEST_MESSAGE,
            vec![
                Item::integer(tag::BATCH_COUNT, 1),
                Item::enumeration(tag::OPERATION, 0x1F),
                Item::text(tag::UNIQUE_IDENTIFIER, "42"),
                Item::bytes(tag::DATA, &[1, 2, 3, 4, 5, 6, 7, 8, 9]),
                Item {
                    tag: tag::RESULT_STATUS,
                    value: Value::Boolean(true),
                },
                Item {
                    tag: tag::RESULT_REASON,
                    value: Value::LongInteger(-7),
                },
            ],
        )
    }

    #[test]
    fn encodes_as_the_specification_example() {
        // KMIP 1.4 §9.1.2: an Integer 8 under tag 0x420020 and a Text "Hello World".
        let i = Item::integer(0x42_0020, 8).to_bytes();
        assert_eq!(
            &i[..],
            [0x42, 0x00, 0x20, 0x02, 0, 0, 0, 4, 0, 0, 0, 8, 0, 0, 0, 0]
        );
        let t = Item::text(0x42_0020, "Hello World").to_bytes();
        assert_eq!(&t[..8], [0x42, 0x00, 0x20, 0x07, 0, 0, 0, 0x0B]);
        assert_eq!(&t[8..19], b"Hello World");
        assert_eq!(&t[19..], [0, 0, 0, 0, 0]);
    }

    #[test]
    fn round_trips_and_refuses_every_truncation() {
        let bytes = sample().to_bytes();
        assert_eq!(bytes.len(), bytes.capacity(), "sized once, never grown");
        assert_eq!(Item::decode(&bytes).unwrap(), sample());
        for len in 0..bytes.len() {
            assert!(Item::decode(&bytes[..len]).is_err(), "length {len}");
        }
        let mut long = bytes.to_vec();
        long.extend_from_slice(&[0; 8]);
        assert!(Item::decode(&long).is_err());
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let bytes = sample().to_bytes();
        for i in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xFF] {
                let mut bad = bytes.to_vec();
                bad[i] ^= flip;
                let _ = Item::decode(&bad);
            }
        }
        // A structure claiming 4 GiB, and deep nesting.
        let huge = [0x42, 0x00, 0x78, 0x01, 0xFF, 0xFF, 0xFF, 0xF8];
        assert!(Item::decode(&huge).is_err());
        let mut deep = Item::integer(tag::BATCH_COUNT, 1);
        for _ in 0..40 {
            deep = Item::structure(tag::BATCH_ITEM, vec![deep]);
        }
        assert!(Item::decode(&deep.to_bytes()).is_err());
    }
}
