//! The whole reply: a one-line description, a rationale and the patch.
//!
//! The format is defined for the model in `prompts/patch_format.md`:
//! `DESCRIPTION: ...` and `RATIONALE: ...` lines, then the patch. Parsing is tolerant of
//! markdown decoration (`**Description:**`, `## Rationale:`) and letter case.

use serde::{Deserialize, Serialize};

use super::{parse, text::normalize_newlines, ParseError, Patch};

/// A model's reply, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub description: String,
    pub rationale: String,
    pub patch: Patch,
}

/// Parses the description, the rationale and the patch out of a reply.
pub fn parse_reply(reply_text: &str) -> Result<Reply, ParseError> {
    let text = normalize_newlines(reply_text);
    let patch = parse(&text)?;
    let description = labelled(&text, "description")
        .map(|(first, _)| first)
        .filter(|d| !d.is_empty())
        .ok_or(ParseError::MissingDescription)?;
    let rationale = labelled(&text, "rationale")
        .map(|(first, rest)| join_paragraph(first, rest))
        .filter(|r| !r.is_empty())
        .ok_or(ParseError::MissingRationale)?;
    Ok(Reply {
        description,
        rationale,
        patch,
    })
}

/// Finds the first line labelled `label:` and returns the text after the colon plus the
/// lines that follow it.
fn labelled<'a>(text: &'a str, label: &str) -> Option<(String, Vec<&'a str>)> {
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(value) = strip_label(line, label) {
            return Some((value, lines[i + 1..].to_vec()));
        }
    }
    None
}

/// `**Description:** text` -> `Some("text")` for label `description`.
fn strip_label(line: &str, label: &str) -> Option<String> {
    let decoration = |c: char| c.is_whitespace() || matches!(c, '#' | '*' | '_' | '-' | '>');
    let rest = line.trim_start_matches(decoration);
    let head = rest.get(..label.len())?;
    if !head.eq_ignore_ascii_case(label) {
        return None;
    }
    let rest = rest[label.len()..].trim_start_matches(['*', '_', ' ']);
    let rest = rest.strip_prefix(':')?;
    let value = rest.trim_start_matches(['*', '_']).trim();
    Some(value.trim_end_matches(['*', '_']).trim().to_string())
}

/// The rationale may continue on the lines below its label, up to a blank line or the patch
/// (including the file path line that heads a SEARCH block).
fn join_paragraph(first: String, rest: Vec<&str>) -> String {
    let mut parts = vec![first];
    for (i, line) in rest.iter().enumerate() {
        let t = line.trim();
        let next = rest.get(i + 1).map(|l| l.trim()).unwrap_or("");
        let starts_patch = t.is_empty()
            || starts_patch_marker(t)
            || starts_patch_marker(next)
            || strip_label(t, "description").is_some();
        if starts_patch {
            break;
        }
        parts.push(t.to_string());
    }
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn starts_patch_marker(line: &str) -> bool {
    line.starts_with("```")
        || line.starts_with("<<<<<<<")
        || line.starts_with("--- ")
        || line.starts_with("diff ")
}
