//! Unified diffs (`--- a/x`, `+++ b/x`, `@@ -l,s +l,s @@`), applied strictly on their context.
//!
//! Line counts in hunk headers are not trusted (models miscount them); the context and
//! removed lines must match the file exactly, at the place nearest the header's line number.
//! New files come from `--- /dev/null`, deletions go to `+++ /dev/null`.

use serde::{Deserialize, Serialize};

use super::text::{trim_line_ends, Normalized};
use super::{ApplyError, FileEdit, ParseError};

/// The changes to one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDiff {
    /// `None` for `/dev/null`: the diff creates the file.
    pub old_path: Option<String>,
    /// `None` for `/dev/null`: the diff deletes the file.
    pub new_path: Option<String>,
    pub hunks: Vec<Hunk>,
}

impl FileDiff {
    pub fn path(&self) -> &str {
        self.new_path
            .as_deref()
            .or(self.old_path.as_deref())
            .unwrap_or("")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hunk {
    /// The `@@ ... @@` line as written.
    pub header: String,
    /// 1-based start line on the old side, when the header gives one.
    pub old_start: Option<usize>,
    pub lines: Vec<HunkLine>,
    /// `\ No newline at end of file` after an old-side line.
    pub old_no_newline: bool,
    /// `\ No newline at end of file` after a new-side line.
    pub new_no_newline: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", content = "text", rename_all = "snake_case")]
pub enum HunkLine {
    Context(String),
    Remove(String),
    Add(String),
}

impl Hunk {
    fn old_lines(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|l| match l {
                HunkLine::Context(t) | HunkLine::Remove(t) => Some(t.as_str()),
                HunkLine::Add(_) => None,
            })
            .collect()
    }

    fn new_lines(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|l| match l {
                HunkLine::Context(t) | HunkLine::Add(t) => Some(t.as_str()),
                HunkLine::Remove(_) => None,
            })
            .collect()
    }
}

pub(super) fn looks_like(text: &str) -> bool {
    let lines: Vec<&str> = text.lines().collect();
    lines
        .windows(2)
        .any(|w| w[0].starts_with("--- ") && w[1].starts_with("+++ "))
}

fn header_path(rest: &str, prefix: &str) -> Option<String> {
    // Drop a trailing timestamp (`--- a/x\t2024-01-01 ...`).
    let p = rest.split('\t').next().unwrap_or("").trim();
    if p == "/dev/null" {
        return None;
    }
    Some(p.strip_prefix(prefix).unwrap_or(p).to_string())
}

pub(super) fn parse(text: &str) -> Result<Vec<FileDiff>, ParseError> {
    let lines: Vec<&str> = text.split('\n').collect();
    let is_file_header = |i: usize| {
        lines[i].starts_with("--- ") && lines.get(i + 1).is_some_and(|l| l.starts_with("+++ "))
    };
    let mut diffs = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if !is_file_header(i) {
            i += 1;
            continue;
        }
        let old_path = header_path(&lines[i][4..], "a/");
        let new_path = header_path(&lines[i + 1][4..], "b/");
        let header_line = i + 1;
        let bad = move |message: String| ParseError::BadDiff {
            line: header_line,
            message,
        };
        match (&old_path, &new_path) {
            (None, None) => return Err(bad("both sides are /dev/null".into())),
            (Some(o), Some(n)) if o != n => {
                return Err(bad(format!(
                    "renaming {o} to {n} is not supported; delete and create instead"
                )))
            }
            _ => {}
        }
        i += 2;
        let mut hunks = Vec::new();
        while i < lines.len() && lines[i].starts_with("@@") {
            let (hunk, next) = parse_hunk(&lines, i, &is_file_header)?;
            hunks.push(hunk);
            i = next;
        }
        if hunks.is_empty() {
            return Err(bad(format!(
                "the diff for {} has no `@@` hunk",
                new_path.as_deref().or(old_path.as_deref()).unwrap_or("")
            )));
        }
        diffs.push(FileDiff {
            old_path,
            new_path,
            hunks,
        });
    }
    if diffs.is_empty() {
        return Err(ParseError::NoPatch);
    }
    Ok(diffs)
}

/// Parses the hunk whose header is at `start`; returns it and the index after it.
fn parse_hunk(
    lines: &[&str],
    start: usize,
    is_file_header: &dyn Fn(usize) -> bool,
) -> Result<(Hunk, usize), ParseError> {
    let header = lines[start].trim_end().to_string();
    let mut hunk = Hunk {
        old_start: old_start(&header),
        header,
        lines: Vec::new(),
        old_no_newline: false,
        new_no_newline: false,
    };
    // Blank lines are read as empty context lines (models drop the leading space), but only
    // when more hunk lines follow; trailing ones are prose separators.
    let mut pending_blank = 0;
    let mut i = start + 1;
    while i < lines.len() {
        let line = lines[i];
        if line.starts_with("@@") || is_file_header(i) || line.starts_with("diff ") {
            break;
        }
        if line.is_empty() {
            pending_blank += 1;
            i += 1;
            continue;
        }
        let mut chars = line.chars();
        let op = chars.next().unwrap_or(' ');
        let rest = chars.as_str();
        let parsed = match op {
            ' ' => HunkLine::Context(rest.to_string()),
            '-' => HunkLine::Remove(rest.to_string()),
            '+' => HunkLine::Add(rest.to_string()),
            '\\' => {
                match hunk.lines.last() {
                    Some(HunkLine::Remove(_)) => hunk.old_no_newline = true,
                    Some(HunkLine::Add(_)) => hunk.new_no_newline = true,
                    Some(HunkLine::Context(_)) => {
                        hunk.old_no_newline = true;
                        hunk.new_no_newline = true;
                    }
                    None => {}
                }
                i += 1;
                continue;
            }
            _ => break,
        };
        for _ in 0..pending_blank {
            hunk.lines.push(HunkLine::Context(String::new()));
        }
        pending_blank = 0;
        hunk.lines.push(parsed);
        i += 1;
    }
    if hunk.lines.is_empty() {
        return Err(ParseError::BadDiff {
            line: start + 1,
            message: format!("hunk `{}` has no lines", hunk.header),
        });
    }
    Ok((hunk, i))
}

/// `@@ -12,5 +12,6 @@` -> `Some(12)`.
fn old_start(header: &str) -> Option<usize> {
    let minus = header.split_whitespace().find(|w| w.starts_with('-'))?;
    minus[1..].split(',').next()?.parse().ok()
}

pub(super) fn render(diffs: &[FileDiff]) -> String {
    let mut out = String::new();
    for d in diffs {
        let side = |p: &Option<String>, prefix: &str| match p {
            Some(p) => format!("{prefix}{p}"),
            None => "/dev/null".to_string(),
        };
        out.push_str(&format!(
            "--- {}\n+++ {}\n",
            side(&d.old_path, "a/"),
            side(&d.new_path, "b/")
        ));
        for h in &d.hunks {
            out.push_str(&h.header);
            out.push('\n');
            for l in &h.lines {
                let (op, t) = match l {
                    HunkLine::Context(t) => (' ', t),
                    HunkLine::Remove(t) => ('-', t),
                    HunkLine::Add(t) => ('+', t),
                };
                out.push(op);
                out.push_str(t);
                out.push('\n');
            }
        }
    }
    out
}

pub(super) fn apply(
    diffs: &[FileDiff],
    read: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<FileEdit>, ApplyError> {
    let mut edits: Vec<FileEdit> = Vec::new();
    for diff in diffs {
        let path = diff.path().to_string();
        // A second diff for the same file continues from the first one's result.
        let existing = edits.iter().position(|e| e.path == path);
        let current = match existing {
            Some(k) => edits[k].after.clone(),
            None => read(&path),
        };
        let after = apply_file(diff, &path, current.as_deref())?;
        match existing {
            Some(k) => edits[k].after = after,
            None => edits.push(FileEdit {
                path,
                before: current,
                after,
            }),
        }
    }
    Ok(edits)
}

fn apply_file(
    diff: &FileDiff,
    path: &str,
    current: Option<&str>,
) -> Result<Option<String>, ApplyError> {
    match (&diff.old_path, &diff.new_path, current) {
        (None, _, Some(_)) => Err(ApplyError::DiffFileExists { path: path.into() }),
        (None, _, None) => Ok(Some(created_content(diff))),
        (Some(_), _, None) => Err(ApplyError::DiffMissingFile { path: path.into() }),
        (Some(_), None, Some(content)) => {
            // Deleting: the removed lines must be the file's lines.
            let style = Normalized::new(content);
            let have: Vec<&str> = style.text.lines().collect();
            let want: Vec<&str> = diff.hunks.iter().flat_map(Hunk::old_lines).collect();
            if have != want {
                return Err(ApplyError::DeleteMismatch {
                    path: path.into(),
                    reason: format!(
                        "the file has {} lines, the diff removes {} lines that differ from them",
                        have.len(),
                        want.len()
                    ),
                });
            }
            Ok(None)
        }
        (Some(_), Some(_), Some(content)) => modify(diff, path, content).map(Some),
    }
}

fn created_content(diff: &FileDiff) -> String {
    let lines: Vec<&str> = diff.hunks.iter().flat_map(Hunk::new_lines).collect();
    let mut text = lines.join("\n");
    let no_newline = diff.hunks.iter().any(|h| h.new_no_newline);
    if !lines.is_empty() && !no_newline {
        text.push('\n');
    }
    text
}

fn modify(diff: &FileDiff, path: &str, content: &str) -> Result<String, ApplyError> {
    let style = Normalized::new(content);
    let mut final_newline = style.text.ends_with('\n') || style.text.is_empty();
    let mut lines: Vec<String> = style.text.lines().map(str::to_string).collect();
    let mut min_pos = 0usize;
    let mut delta: isize = 0;
    for (k, hunk) in diff.hunks.iter().enumerate() {
        let old = hunk.old_lines();
        let new = hunk.new_lines();
        let hint = hunk
            .old_start
            .map(|s| (s as isize - 1 + delta).max(0) as usize);
        let mismatch = |reason: String| ApplyError::HunkMismatch {
            hunk: k + 1,
            path: path.into(),
            header: hunk.header.clone(),
            reason,
        };
        let pos = if old.is_empty() {
            // Pure insertion: `-l,0` inserts after line l.
            let at = hunk.old_start.map_or(lines.len(), |s| {
                (s as isize + delta).clamp(0, lines.len() as isize) as usize
            });
            at.max(min_pos)
        } else {
            locate(&lines, &old, min_pos, hint).map_err(mismatch)?
        };
        let replacement: Vec<String> = new.iter().map(|s| s.to_string()).collect();
        lines.splice(pos..pos + old.len(), replacement);
        min_pos = pos + new.len();
        delta += new.len() as isize - old.len() as isize;
        if hunk.new_no_newline {
            final_newline = false;
        } else if hunk.old_no_newline {
            final_newline = true;
        }
    }
    let mut text = lines.join("\n");
    if final_newline && !lines.is_empty() {
        text.push('\n');
    }
    Ok(style.restore(text))
}

/// Where the hunk's old lines sit in the file: the match nearest the header's line number,
/// at or after the end of the previous hunk. Errors explain the mismatch.
fn locate(
    lines: &[String],
    old: &[&str],
    min_pos: usize,
    hint: Option<usize>,
) -> Result<usize, String> {
    let matches_at = |p: usize| {
        p + old.len() <= lines.len() && old.iter().zip(&lines[p..]).all(|(a, b)| *a == b)
    };
    let found: Vec<usize> = (min_pos..=lines.len().saturating_sub(old.len()))
        .filter(|&p| matches_at(p))
        .collect();
    match (found.len(), hint) {
        (1, _) => Ok(found[0]),
        (0, _) => Err(explain_mismatch(lines, old, hint)),
        (_, Some(h)) => Ok(*found.iter().min_by_key(|&&p| p.abs_diff(h)).unwrap_or(&0)),
        (n, None) => Err(format!(
            "its context matches {n} places (lines {}); give the line numbers in the `@@` header or more context",
            found
                .iter()
                .map(|p| (p + 1).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn explain_mismatch(lines: &[String], old: &[&str], hint: Option<usize>) -> String {
    let joined_file = trim_line_ends(&lines.join("\n"));
    let joined_old = trim_line_ends(&old.join("\n"));
    if joined_file.contains(&joined_old) {
        return "its lines match only if trailing whitespace is ignored; copy context and removed lines exactly".into();
    }
    let start = hint
        .filter(|&h| h < lines.len())
        .or_else(|| lines.iter().position(|l| l == old[0]));
    let Some(start) = start else {
        return format!(
            "its first line `{}` does not occur in the file",
            old[0].trim()
        );
    };
    for (k, want) in old.iter().enumerate() {
        match lines.get(start + k) {
            Some(have) if have == want => continue,
            Some(have) => {
                return format!(
                    "line {} of the file is `{}` but the hunk expects `{}`",
                    start + k + 1,
                    have.trim(),
                    want.trim()
                )
            }
            None => {
                return format!(
                    "the hunk runs past the end of the file ({} lines)",
                    lines.len()
                )
            }
        }
    }
    "its lines were not found in the file".into()
}
