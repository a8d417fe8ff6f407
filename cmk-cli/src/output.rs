//! What a command prints: a JSON document with `--json`, readable text otherwise.

use serde_json::Value;

/// Prints `value` as JSON, or `text` for a person.
pub(crate) fn print(json: bool, value: &Value, text: impl FnOnce() -> String) {
    if json {
        println!("{value}");
    } else {
        println!("{}", text());
    }
}
