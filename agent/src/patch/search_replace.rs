//! Aider-style search/replace blocks.
//!
//! ```text
//! trainer/src/model.rs
//! <<<<<<< SEARCH
//! exact lines to find
//! =======
//! lines to put instead
//! >>>>>>> REPLACE
//! ```
//! Each SEARCH must match exactly once in the file as it stands after the earlier blocks.
//! An empty SEARCH creates a new file.

use serde::{Deserialize, Serialize};

use super::text::{line_of, trim_line_ends, Normalized};
use super::{ApplyError, FileEdit, ParseError};

/// One search/replace edit. `search` and `replace` hold whole lines, each ending in `\n`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchReplaceBlock {
    pub path: String,
    pub search: String,
    pub replace: String,
}

const SEARCH: &str = "<<<<<<< SEARCH";
const DIVIDER: &str = "=======";
const REPLACE: &str = ">>>>>>> REPLACE";

pub(super) fn looks_like(text: &str) -> bool {
    text.lines().any(is_search_marker)
}

fn is_search_marker(line: &str) -> bool {
    marker(line, '<', "SEARCH")
}

fn is_replace_marker(line: &str) -> bool {
    marker(line, '>', "REPLACE")
}

fn is_divider(line: &str) -> bool {
    let t = line.trim();
    t.len() >= 7 && t.chars().all(|c| c == '=')
}

/// `<<<<<<< SEARCH`, tolerating 5 to 9 marker characters and the word's case.
fn marker(line: &str, ch: char, word: &str) -> bool {
    let t = line.trim();
    let rest = t.trim_start_matches(ch);
    let n = t.len() - rest.len();
    (5..=9).contains(&n) && rest.trim().eq_ignore_ascii_case(word)
}

pub(super) fn parse(text: &str) -> Result<Vec<SearchReplaceBlock>, ParseError> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut blocks: Vec<SearchReplaceBlock> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if !is_search_marker(lines[i]) {
            i += 1;
            continue;
        }
        let block = blocks.len() + 1;
        let path = path_before(&lines, i)
            .or_else(|| blocks.last().map(|b| b.path.clone()))
            .ok_or(ParseError::MissingPath { block })?;
        let unterminated = |expected, line| ParseError::Unterminated {
            block,
            path: path.clone(),
            expected,
            line,
        };
        let (search, divider_at) =
            collect_until(&lines, i + 1, is_divider).ok_or_else(|| unterminated(DIVIDER, i + 1))?;
        let (replace, end_at) = collect_until(&lines, divider_at + 1, is_replace_marker)
            .ok_or_else(|| unterminated(REPLACE, divider_at + 1))?;
        blocks.push(SearchReplaceBlock {
            path,
            search,
            replace,
        });
        i = end_at + 1;
    }
    Ok(blocks)
}

/// Collects whole lines from `start` up to the first line where `stop` holds; `None` when
/// the text ends first or a new SEARCH marker appears (a block left open).
fn collect_until(lines: &[&str], start: usize, stop: fn(&str) -> bool) -> Option<(String, usize)> {
    let mut out = String::new();
    for (k, line) in lines.iter().enumerate().skip(start) {
        if stop(line) {
            return Some((out, k));
        }
        if is_search_marker(line) {
            return None;
        }
        out.push_str(line);
        out.push('\n');
    }
    None
}

/// The file path written just above a SEARCH marker, possibly above an opening fence.
fn path_before(lines: &[&str], marker_at: usize) -> Option<String> {
    let mut j = marker_at;
    let mut fences_skipped = 0;
    while j > 0 {
        j -= 1;
        let t = lines[j].trim();
        if t.is_empty() {
            continue;
        }
        if t.starts_with("```") && fences_skipped == 0 {
            fences_skipped += 1;
            continue;
        }
        return clean_path(t);
    }
    None
}

/// Strips markdown decoration from a path line; `None` when the line is prose, not a path.
fn clean_path(line: &str) -> Option<String> {
    let mut t = line.trim().trim_matches(['`', '*', '#', ' ']).trim();
    for prefix in ["File:", "file:", "FILE:", "Path:", "path:"] {
        if let Some(rest) = t.strip_prefix(prefix) {
            t = rest.trim().trim_matches(['`', '*']);
        }
    }
    let t = t.trim_end_matches(':').trim_start_matches("./");
    let plausible = !t.is_empty()
        && !t.contains(char::is_whitespace)
        && (t.contains('/') || t.contains('.'))
        && !t.contains(['<', '>', '|', '"', '\''])
        && !is_replace_marker(t);
    plausible.then(|| t.to_string())
}

pub(super) fn render(blocks: &[SearchReplaceBlock]) -> String {
    let mut out = String::new();
    for b in blocks {
        out.push_str(&format!(
            "{}\n{SEARCH}\n{}{DIVIDER}\n{}{REPLACE}\n\n",
            b.path, b.search, b.replace
        ));
    }
    out
}

/// A file being edited: its original content and its current, `\n`-normalized text.
struct WorkingFile {
    path: String,
    before: Option<String>,
    style: Normalized,
    current: Option<String>,
    /// We appended a final newline so that whole-line SEARCH text can match the last line.
    added_final_newline: bool,
    edited_by_earlier_block: bool,
}

impl WorkingFile {
    fn load(path: &str, read: &dyn Fn(&str) -> Option<String>) -> Self {
        let before = read(path);
        let style = Normalized::new(before.as_deref().unwrap_or(""));
        let mut current = before.as_ref().map(|_| style.text.clone());
        let mut added_final_newline = false;
        if let Some(text) = current.as_mut() {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
                added_final_newline = true;
            }
        }
        WorkingFile {
            path: path.to_string(),
            before,
            style,
            current,
            added_final_newline,
            edited_by_earlier_block: false,
        }
    }

    fn finish(self) -> FileEdit {
        let after = self.current.map(|mut text| {
            if self.added_final_newline && text.ends_with('\n') {
                text.pop();
            }
            self.style.restore(text)
        });
        FileEdit {
            path: self.path,
            before: self.before,
            after,
        }
    }
}

pub(super) fn apply(
    blocks: &[SearchReplaceBlock],
    read: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<FileEdit>, ApplyError> {
    let mut files: Vec<WorkingFile> = Vec::new();
    for (index, b) in blocks.iter().enumerate() {
        let block = index + 1;
        let at = match files.iter().position(|f| f.path == b.path) {
            Some(at) => at,
            None => {
                files.push(WorkingFile::load(&b.path, read));
                files.len() - 1
            }
        };
        let file = &mut files[at];
        let path = b.path.clone();
        if b.search.is_empty() {
            if file.current.is_some() {
                return Err(ApplyError::FileExists { block, path });
            }
            file.current = Some(b.replace.clone());
        } else {
            let Some(text) = file.current.as_mut() else {
                return Err(ApplyError::MissingFile { block, path });
            };
            let starts = match_starts(text, &b.search);
            match starts.len() {
                1 => {
                    let s = starts[0];
                    text.replace_range(s..s + b.search.len(), &b.replace);
                }
                0 => {
                    let hint = no_match_hint(text, &b.search, file.edited_by_earlier_block);
                    return Err(ApplyError::NoMatch { block, path, hint });
                }
                count => {
                    let lines = starts
                        .iter()
                        .map(|&s| line_of(text, s).to_string())
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(ApplyError::Ambiguous {
                        block,
                        path,
                        count,
                        lines,
                    });
                }
            }
        }
        file.edited_by_earlier_block = true;
    }
    Ok(files.into_iter().map(WorkingFile::finish).collect())
}

/// Byte offsets of every occurrence of `needle` that starts at a line start, overlaps included.
fn match_starts(haystack: &str, needle: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut from = 0;
    while let Some(found) = haystack[from..].find(needle) {
        let s = from + found;
        if s == 0 || haystack.as_bytes()[s - 1] == b'\n' {
            starts.push(s);
        }
        from = s + haystack[s..].chars().next().map_or(1, char::len_utf8);
    }
    starts
}

/// Explains a SEARCH that matched nowhere, so the model can correct it.
fn no_match_hint(text: &str, search: &str, edited_before: bool) -> String {
    let earlier = if edited_before {
        " (earlier blocks for this file were applied first)"
    } else {
        ""
    };
    let trimmed_text = trim_line_ends(text);
    let trimmed_search = trim_line_ends(search);
    if let Some(&s) = match_starts(&trimmed_text, &trimmed_search).first() {
        return format!(
            "{earlier}; it would match at line {} if trailing whitespace were ignored: \
             copy the lines exactly as they are in the file, including trailing spaces",
            line_of(&trimmed_text, s)
        );
    }
    let squash = |t: &str| t.split('\n').map(str::trim).collect::<Vec<_>>().join("\n");
    if let Some(&s) = match_starts(&squash(text), &squash(search)).first() {
        return format!(
            "{earlier}; it would match at line {} if indentation were ignored: \
             copy the indentation exactly as it is in the file",
            line_of(&squash(text), s)
        );
    }
    first_divergence(text, search)
        .map(|d| format!("{earlier}; {d}"))
        .unwrap_or_else(|| earlier.to_string())
}

/// Where the SEARCH lines stop agreeing with the file, starting from its first line.
fn first_divergence(text: &str, search: &str) -> Option<String> {
    let file_lines: Vec<&str> = text.lines().collect();
    let search_lines: Vec<&str> = search.lines().collect();
    let first = *search_lines.first()?;
    let Some(start) = file_lines.iter().position(|l| *l == first) else {
        return Some(format!(
            "its first line `{}` does not occur in the file",
            first.trim()
        ));
    };
    for (k, want) in search_lines.iter().enumerate() {
        match file_lines.get(start + k) {
            Some(have) if have == want => continue,
            Some(have) => {
                return Some(format!(
                    "its first line is line {} of the file, but line {} of the file is `{}` where SEARCH has `{}`",
                    start + 1,
                    start + k + 1,
                    have.trim(),
                    want.trim()
                ))
            }
            None => return Some("the SEARCH text runs past the end of the file".to_string()),
        }
    }
    None
}
