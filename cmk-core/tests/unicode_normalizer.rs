//! The `casefold` normaliser checked against Unicode 16.0.0 data, independently of the
//! pinned crates: vectors from `scripts/gen-unicode-vectors.py` (unicodedata2 16.0.0 and
//! CaseFolding-16.0.0.txt). Every code point is covered: listed ones must give the listed
//! result, all others must map to themselves.

use std::collections::HashMap;

use cmk_core::crypto::normalize::{Normalizer, UNICODE_VERSION, casefold};

fn parse_cps(s: &str) -> String {
    s.split_whitespace()
        .map(|h| char::from_u32(u32::from_str_radix(h, 16).unwrap()).unwrap())
        .collect()
}

fn vectors() -> Vec<(String, String)> {
    include_str!("data/normalizer-16.0.0.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let parts: Vec<&str> = l.split(';').collect();
            (parse_cps(parts[0]), parse_cps(parts[2]))
        })
        .collect()
}

#[test]
fn tables_are_the_pinned_unicode_version() {
    assert_eq!(UNICODE_VERSION, (16, 0, 0));
    assert!(include_str!("data/CaseFolding-16.0.0.txt").starts_with("# CaseFolding-16.0.0.txt"));
}

#[test]
fn casefold_matches_unicode_16_for_every_code_point_and_sample_strings() {
    let vectors = vectors();
    assert!(vectors.len() > 8000, "vector file looks truncated");
    let mut listed: HashMap<char, String> = HashMap::new();
    let mut failures = Vec::new();
    for (input, expected) in &vectors {
        let got = casefold(input);
        if got.as_str() != expected {
            failures.push(format!(
                "{input:?}: got {:?}, want {expected:?}",
                got.as_str()
            ));
        }
        let mut chars = input.chars();
        if let (Some(c), None) = (chars.next(), chars.next()) {
            listed.insert(c, expected.clone());
        }
    }
    for cp in (0..=0x10FFFFu32).filter(|cp| !(0xD800..=0xDFFF).contains(cp)) {
        let c = char::from_u32(cp).unwrap();
        if !listed.contains_key(&c) {
            let s = c.to_string();
            let got = casefold(&s);
            if got.as_str() != s {
                failures.push(format!(
                    "U+{cp:04X} should map to itself, got {:?}",
                    got.as_str()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[test]
fn the_check_can_fail() {
    // Planted: a vector that is wrong must be caught by the comparison above.
    let planted = ("A".to_string(), "A".to_string());
    assert_ne!(casefold(&planted.0).as_str(), planted.1);
    // And the normaliser applies trimming before folding.
    let n = Normalizer::Casefold
        .apply(" \u{2003}ÅNGSTRÖM\u{3000}".as_bytes())
        .unwrap();
    assert_eq!(std::str::from_utf8(&n).unwrap(), "ångström");
}
