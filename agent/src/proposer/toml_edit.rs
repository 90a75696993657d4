//! Textual edits of one `key = value` line in a TOML file, keeping comments and layout
//! (the patch must change exactly that value and nothing else).

/// Where a key's value sits in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueLine {
    /// 0-based line index.
    pub line: usize,
    /// Byte range of the value within that line.
    pub value: std::ops::Range<usize>,
}

/// Finds the line that sets `dotted_key` (`section.key`, or a root key), either as `key = v`
/// under `[section]` or as a dotted `section.key = v`.
pub fn find_value_line(text: &str, dotted_key: &str) -> Option<ValueLine> {
    let mut section = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('[') {
            let name = line.trim_start_matches('[');
            let name = name.split(']').next().unwrap_or("").trim();
            section = name.to_string();
            continue;
        }
        let Some(eq) = raw.find('=') else { continue };
        let key = raw[..eq].trim();
        if key.is_empty() || key.starts_with('#') {
            continue;
        }
        let key: String = key
            .split('.')
            .map(|k| k.trim().trim_matches('"'))
            .collect::<Vec<_>>()
            .join(".");
        let full = if section.is_empty() {
            key
        } else {
            format!("{section}.{key}")
        };
        if full != dotted_key {
            continue;
        }
        let after = &raw[eq + 1..];
        let start = eq + 1 + (after.len() - after.trim_start().len());
        let end = start + value_len(&raw[start..]);
        return Some(ValueLine {
            line: i,
            value: start..end,
        });
    }
    None
}

/// Length of the value token at the start of `s`: a quoted string, or up to a comment.
fn value_len(s: &str) -> usize {
    let mut chars = s.char_indices();
    match chars.next() {
        Some((_, q @ ('"' | '\''))) => {
            let mut escaped = false;
            for (i, c) in chars {
                if q == '"' && c == '\\' && !escaped {
                    escaped = true;
                    continue;
                }
                if c == q && !escaped {
                    return i + 1;
                }
                escaped = false;
            }
            s.len()
        }
        _ => s.split('#').next().unwrap_or("").trim_end().len(),
    }
}

/// A TOML scalar as it would be written in the file.
pub fn format_value(v: &toml::Value) -> String {
    match v {
        toml::Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.1}"),
        toml::Value::Float(f) => format!("{f}"),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::String(s) => toml::Value::String(s.clone()).to_string(),
        other => other.to_string(),
    }
}

/// Parses a scalar written as in a TOML file (`0.004`, `"adamw"`, `true`).
pub fn parse_value(text: &str) -> Option<toml::Value> {
    let doc: toml::Table = format!("v = {text}").parse().ok()?;
    doc.get("v").cloned()
}

/// The value of `dotted_key` in a parsed document.
pub fn lookup<'a>(doc: &'a toml::Table, dotted_key: &str) -> Option<&'a toml::Value> {
    let mut parts = dotted_key.split('.');
    let mut v = doc.get(parts.next()?)?;
    for p in parts {
        v = v.get(p)?;
    }
    Some(v)
}

/// Same value, treating integers and floats as numbers.
pub fn same_value(a: &toml::Value, b: &toml::Value) -> bool {
    match (as_f64(a), as_f64(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

pub fn as_f64(v: &toml::Value) -> Option<f64> {
    match v {
        toml::Value::Float(f) => Some(*f),
        toml::Value::Integer(i) => Some(*i as f64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_section_keys_dotted_keys_and_keeps_comments_out_of_the_value() {
        let text = "top = 1\n[optim]\nembed_lr = 0.01\nlr = 0.002   # peak\nname = \"a # b\"\n[model]\nlr = 5\n";
        let v = find_value_line(text, "optim.lr").unwrap();
        assert_eq!(v.line, 3);
        assert_eq!(&text.lines().nth(3).unwrap()[v.value.clone()], "0.002");
        let s = find_value_line(text, "optim.name").unwrap();
        assert_eq!(&text.lines().nth(4).unwrap()[s.value], "\"a # b\"");
        assert_eq!(find_value_line(text, "model.lr").unwrap().line, 6);
        assert_eq!(find_value_line(text, "top").unwrap().line, 0);
        assert_eq!(
            find_value_line("optim.lr = 3\n", "optim.lr").unwrap().line,
            0
        );
        assert_eq!(find_value_line(text, "optim.beta1"), None);
    }

    #[test]
    fn values_format_as_toml_scalars() {
        assert_eq!(format_value(&toml::Value::Float(0.004)), "0.004");
        assert_eq!(format_value(&toml::Value::Float(1.0)), "1.0");
        assert_eq!(format_value(&toml::Value::Integer(8)), "8");
        assert_eq!(format_value(&toml::Value::String("x".into())), "\"x\"");
        assert!(same_value(
            &parse_value("2e-3").unwrap(),
            &toml::Value::Float(0.002)
        ));
        assert!(same_value(
            &toml::Value::Integer(4),
            &toml::Value::Float(4.0)
        ));
    }
}
