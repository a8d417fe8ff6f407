//! The associated-data encoding: typed, length-prefixed parts, so that it is injective.
//!
//! Each part is `tag (1 byte) ‖ length (u32 big-endian) ‖ bytes`. Integers always use one
//! canonical width (u8: 1, u32: 4, i64: 8 bytes, big-endian). Two different sequences of
//! parts can never encode to the same bytes: the tag and length of each part are explicit.
//! docs/FORMAT.md §2 specifies the tags.

/// Part tags.
mod tag {
    pub(super) const LABEL: u8 = 0x01;
    pub(super) const TEXT: u8 = 0x02;
    pub(super) const BYTES: u8 = 0x03;
    pub(super) const U8: u8 = 0x04;
    pub(super) const U32: u8 = 0x05;
    pub(super) const I64: u8 = 0x06;
    pub(super) const ABSENT: u8 = 0x07;
    pub(super) const UUID: u8 = 0x08;
}

/// A row identifier bound into associated data when ids are application-assigned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RowId {
    /// An integer id (a sequence value fetched before the insert).
    Int(i64),
    /// A UUID (for example UUIDv7), as its 16 bytes.
    Uuid([u8; 16]),
    /// A textual id.
    Text(String),
}

/// Builds associated data.
#[derive(Debug, Default, Clone)]
pub struct Aad(Vec<u8>);

impl Aad {
    /// Starts with a label naming what the data authenticates (`cmk/field`, `cmk/dek`, ...).
    pub fn new(label: &str) -> Self {
        Self::with_buffer(Vec::with_capacity(128), label)
    }

    /// Like [`Aad::new`], reusing `buf`'s allocation (its contents are discarded).
    pub fn with_buffer(mut buf: Vec<u8>, label: &str) -> Self {
        buf.clear();
        let mut a = Aad(buf);
        a.part(tag::LABEL, label.as_bytes());
        a
    }

    /// Starts from already encoded parts (a cached prefix), reusing `buf`'s allocation.
    pub fn from_prefix(mut buf: Vec<u8>, prefix: &[u8]) -> Self {
        buf.clear();
        buf.extend_from_slice(prefix);
        Aad(buf)
    }

    /// Gives the allocation back for reuse.
    pub fn into_buffer(self) -> Vec<u8> {
        self.0
    }

    fn part(&mut self, tag: u8, bytes: &[u8]) {
        self.0.push(tag);
        // Inputs are names and small values; u32 cannot overflow for anything cmk encodes
        // (callers bound lengths), and saturating keeps this total on absurd input.
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(bytes);
    }

    /// Appends a UTF-8 string.
    pub fn text(mut self, s: &str) -> Self {
        self.part(tag::TEXT, s.as_bytes());
        self
    }

    /// Appends raw bytes.
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.part(tag::BYTES, b);
        self
    }

    /// Appends a byte.
    pub fn u8(mut self, v: u8) -> Self {
        self.part(tag::U8, &[v]);
        self
    }

    /// Appends a u32.
    pub fn u32(mut self, v: u32) -> Self {
        self.part(tag::U32, &v.to_be_bytes());
        self
    }

    /// Appends an optional row id (absent with database-assigned ids).
    pub fn row_id(mut self, id: Option<&RowId>) -> Self {
        match id {
            None => self.part(tag::ABSENT, &[]),
            Some(RowId::Int(v)) => self.part(tag::I64, &v.to_be_bytes()),
            Some(RowId::Uuid(u)) => self.part(tag::UUID, u),
            Some(RowId::Text(s)) => self.part(tag::TEXT, s.as_bytes()),
        }
        self
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_between_parts_are_unambiguous() {
        let a = Aad::new("x").text("ab").text("c");
        let b = Aad::new("x").text("a").text("bc");
        assert_ne!(a.as_bytes(), b.as_bytes());
    }

    #[test]
    fn types_are_distinguished() {
        let int = Aad::new("x").row_id(Some(&RowId::Int(0x3132_3334)));
        let text = Aad::new("x").row_id(Some(&RowId::Text("1234".into())));
        let none = Aad::new("x").row_id(None);
        let empty = Aad::new("x").text("");
        assert_ne!(int.as_bytes(), text.as_bytes());
        assert_ne!(none.as_bytes(), empty.as_bytes());
    }

    #[test]
    fn integers_use_one_width() {
        let a = Aad::new("x").row_id(Some(&RowId::Int(1)));
        assert_eq!(
            &a.as_bytes()[6..],
            &[0x06, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1]
        );
    }
}
