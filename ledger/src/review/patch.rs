//! A proposal's patch as a coloured unified diff (search/replace blocks converted first).

use similar::TextDiff;

use super::style::Style;

/// The patch as a coloured unified diff. Unified diffs are coloured as they are;
/// search/replace blocks are turned into unified diffs with `similar`.
pub fn render_patch(patch: &str, patch_format: &str, style: Style) -> String {
    let looks_unified = patch_format.eq_ignore_ascii_case("unified")
        || patch.starts_with("--- ")
        || patch.starts_with("diff --git");
    let unified = if looks_unified {
        patch.to_string()
    } else {
        match search_replace_to_unified(patch) {
            Some(diff) => diff,
            None => patch.to_string(),
        }
    };
    let mut out = String::new();
    for line in unified.lines() {
        let painted = if line.starts_with("+++") || line.starts_with("---") {
            style.bold(line)
        } else if line.starts_with("@@") {
            style.cyan(line)
        } else if line.starts_with('+') {
            style.green(line)
        } else if line.starts_with('-') {
            style.red(line)
        } else {
            line.to_string()
        };
        out.push_str("  ");
        out.push_str(&painted);
        out.push('\n');
    }
    out
}

/// Converts aider-style blocks (`path`, `<<<<<<< SEARCH`, old, `=======`, new,
/// `>>>>>>> REPLACE`) into a unified diff; `None` if the text has no such block.
fn search_replace_to_unified(patch: &str) -> Option<String> {
    enum State {
        Outside,
        Search,
        Replace,
    }
    let mut state = State::Outside;
    let mut path = String::from("file");
    let mut last_plain = String::new();
    let (mut old, mut new) = (String::new(), String::new());
    let mut out = String::new();
    let mut blocks = 0;
    for line in patch.lines() {
        let marker = line.trim_end();
        match state {
            State::Outside if marker.starts_with("<<<<<<<") && marker.ends_with("SEARCH") => {
                if !last_plain.is_empty() {
                    path = last_plain.trim_matches('`').to_string();
                }
                old.clear();
                new.clear();
                state = State::Search;
            }
            State::Outside => {
                if !marker.trim().is_empty() && !marker.starts_with("```") {
                    last_plain = marker.trim().to_string();
                }
            }
            State::Search if marker == "=======" => state = State::Replace,
            State::Search => {
                old.push_str(line);
                old.push('\n');
            }
            State::Replace if marker.starts_with(">>>>>>>") && marker.ends_with("REPLACE") => {
                let diff = TextDiff::from_lines(&old, &new);
                out.push_str(
                    &diff
                        .unified_diff()
                        .context_radius(3)
                        .header(&format!("a/{path}"), &format!("b/{path}"))
                        .to_string(),
                );
                blocks += 1;
                state = State::Outside;
            }
            State::Replace => {
                new.push_str(line);
                new.push('\n');
            }
        }
    }
    (blocks > 0).then_some(out)
}
