//! Normalisers for blind indexes, specified byte by byte (docs/FORMAT.md §6).
//!
//! Index values must never change under a toolchain upgrade, so nothing here uses the
//! compiler's Unicode tables (`str::trim`, `char::to_lowercase`): White_Space is the fixed
//! list below, and NFKC and case folding come from exactly pinned crates
//! (`unicode-normalization =0.1.24` and `caseless =0.2.2`, both Unicode 16.0.0). The tests
//! check them against that version's data (CaseFolding-16.0.0.txt and vectors from a Unicode
//! 16.0.0 build of Python's `unicodedata`), see `tests/unicode_normalizer.rs`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

/// The Unicode version of the tables in use.
pub const UNICODE_VERSION: (u8, u8, u8) = unicode_normalization::UNICODE_VERSION;

/// The White_Space code points of Unicode 16.0.0 (PropList.txt), fixed here.
pub const WHITE_SPACE: [char; 25] = [
    '\u{0009}', '\u{000A}', '\u{000B}', '\u{000C}', '\u{000D}', '\u{0020}', '\u{0085}', '\u{00A0}',
    '\u{1680}', '\u{2000}', '\u{2001}', '\u{2002}', '\u{2003}', '\u{2004}', '\u{2005}', '\u{2006}',
    '\u{2007}', '\u{2008}', '\u{2009}', '\u{200A}', '\u{2028}', '\u{2029}', '\u{202F}', '\u{205F}',
    '\u{3000}',
];

/// How a value is normalised before its blind index is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Normalizer {
    /// The bytes as they are (any bytes, not only UTF-8).
    Exact,
    /// UTF-8; leading and trailing White_Space removed.
    Trimmed,
    /// UTF-8; trimmed, then NFKC, then full case folding (CaseFolding.txt statuses C and F),
    /// then NFKC again.
    Casefold,
}

impl Normalizer {
    /// A stable name, as in docs and attributes.
    pub fn as_str(self) -> &'static str {
        match self {
            Normalizer::Exact => "exact",
            Normalizer::Trimmed => "trimmed",
            Normalizer::Casefold => "casefold",
        }
    }

    /// Normalises `input`. Text normalisers refuse input that is not UTF-8.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] when a text normaliser (`trimmed`, `casefold`) is given
    /// bytes that are not UTF-8. `Exact` never fails.
    pub fn apply<'a>(self, input: &'a [u8]) -> crate::Result<Cow<'a, [u8]>> {
        if self == Normalizer::Exact {
            return Ok(Cow::Borrowed(input));
        }
        let text = std::str::from_utf8(input).map_err(|_| {
            crate::Error::InvalidInput(format!(
                "the `{}` normaliser needs UTF-8 text; use `exact` for binary values",
                self.as_str()
            ))
        })?;
        let trimmed = trim(text);
        match self {
            Normalizer::Trimmed => Ok(Cow::Borrowed(trimmed.as_bytes())),
            _ => Ok(Cow::Owned(casefold(trimmed).as_bytes().to_vec())),
        }
    }
}

fn is_white_space(c: char) -> bool {
    WHITE_SPACE.contains(&c)
}

/// Removes leading and trailing White_Space (the fixed list above).
pub fn trim(s: &str) -> &str {
    s.trim_matches(is_white_space)
}

/// NFKC, full case folding, NFKC; intermediate strings are zeroized.
pub fn casefold(s: &str) -> Zeroizing<String> {
    let first = Zeroizing::new(s.nfkc().collect::<String>());
    let folded = Zeroizing::new(caseless::default_case_fold_str(&first));
    Zeroizing::new(folded.nfkc().collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_tables_are_unicode_16() {
        assert_eq!(UNICODE_VERSION, (16, 0, 0));
        assert_eq!(caseless::UNICODE_VERSION, (16, 0, 0));
    }

    #[test]
    fn normalisers_behave_as_documented() {
        let n = |m: Normalizer, s: &str| {
            String::from_utf8(m.apply(s.as_bytes()).unwrap().into_owned()).unwrap()
        };
        assert_eq!(n(Normalizer::Exact, " Ann "), " Ann ");
        assert_eq!(n(Normalizer::Trimmed, "\u{3000} Ann\t\n"), "Ann");
        assert_eq!(
            n(Normalizer::Casefold, " Ann@Example.COM "),
            "ann@example.com"
        );
        // ß folds to ss (full folding), ﬁ ligature decomposes under NFKC.
        assert_eq!(n(Normalizer::Casefold, "Straße ﬁle"), "strasse file");
        // Zero width space is not White_Space: it stays.
        assert_eq!(n(Normalizer::Trimmed, "\u{200B}a"), "\u{200B}a");
        assert!(Normalizer::Casefold.apply(&[0xff]).is_err());
        assert_eq!(Normalizer::Exact.apply(&[0xff]).unwrap().as_ref(), &[0xff]);
    }
}
