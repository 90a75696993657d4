//! Canonical JSON: object keys sorted by their UTF-8 bytes, no insignificant whitespace.
//!
//! Keys are sorted here explicitly rather than relying on `serde_json::Map` being a BTreeMap,
//! because any crate in the build enabling serde_json's `preserve_order` would silently change
//! the hashes otherwise.

use serde_json::Value;

/// The canonical text of `value`; equal values always give byte-identical text.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_scalar(&Value::String(key.clone()), out);
                out.push(':');
                write_value(val, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut String) {
    // Serializing a scalar Value cannot fail: there are no map keys to reject.
    out.push_str(&serde_json::to_string(value).expect("scalar JSON serializes"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_recursively_without_whitespace() {
        let v = json!({"b": 1, "a": {"z": [1, {"y": 2, "x": 3}], "c": "s t"}});
        assert_eq!(
            to_string(&v),
            r#"{"a":{"c":"s t","z":[1,{"x":3,"y":2}]},"b":1}"#
        );
    }

    #[test]
    fn reparsing_canonical_text_gives_the_same_text() {
        let v = json!({"f": 0.1, "g": 1e-300, "h": -0.0, "i": u64::MAX, "j": "é\n\"q\""});
        let text = to_string(&v);
        let again: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(to_string(&again), text);
    }
}
