use std::collections::HashMap;

use super::*;

fn files(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(p, c)| (p.to_string(), c.to_string()))
        .collect()
}

fn apply_to(patch: &Patch, fs: &HashMap<String, String>) -> Result<Vec<FileEdit>, ApplyError> {
    apply(patch, &|p: &str| fs.get(p).cloned())
}

const MODEL: &str = "fn lr() -> f64 {\n    0.002\n}\n\nfn depth() -> usize {\n    4\n}\n";

#[test]
fn fenced_search_replace_block_with_prose_applies() {
    let reply = "DESCRIPTION: raise the learning rate\n\
        RATIONALE: loss is still falling fast at the end of the budget.\n\n\
        Here is the change:\n\n\
        trainer/src/model.rs\n\
        ```rust\n\
        <<<<<<< SEARCH\n\
        fn lr() -> f64 {\n    0.002\n}\n\
        =======\n\
        fn lr() -> f64 {\n    0.004\n}\n\
        >>>>>>> REPLACE\n\
        ```\n\nThat should help.\n";
    let parsed = parse_reply(reply).unwrap();
    assert_eq!(parsed.description, "raise the learning rate");
    assert_eq!(
        parsed.rationale,
        "loss is still falling fast at the end of the budget."
    );
    assert_eq!(parsed.patch.format(), PatchFormat::SearchReplace);
    let fs = files(&[("trainer/src/model.rs", MODEL)]);
    let edits = apply_to(&parsed.patch, &fs).unwrap();
    assert_eq!(edits.len(), 1);
    assert_eq!(edits[0].before.as_deref(), Some(MODEL));
    assert_eq!(
        edits[0].after.as_deref(),
        Some(MODEL.replace("0.002", "0.004").as_str())
    );
}

#[test]
fn unfenced_blocks_reuse_the_previous_path_and_apply_in_order() {
    let reply =
        "trainer/src/model.rs\n<<<<<<< SEARCH\n    0.002\n=======\n    0.003\n>>>>>>> REPLACE\n\
        <<<<<<< SEARCH\n    4\n=======\n    6\n>>>>>>> REPLACE\n";
    let patch = parse(reply).unwrap();
    assert_eq!(patch.paths(), vec!["trainer/src/model.rs".to_string()]);
    let edits = apply_to(&patch, &files(&[("trainer/src/model.rs", MODEL)])).unwrap();
    let after = edits[0].after.clone().unwrap();
    assert!(after.contains("    0.003\n") && after.contains("    6\n"));
}

#[test]
fn decorated_description_and_multiline_rationale_are_read() {
    let reply = "**Description:** halve weight decay\n## Rationale: the model underfits;\nless decay should help.\n\n\
        `a.toml`\n<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n>>>>>>> REPLACE\n";
    let r = parse_reply(reply).unwrap();
    assert_eq!(r.description, "halve weight decay");
    assert_eq!(r.rationale, "the model underfits; less decay should help.");
    assert_eq!(r.patch.paths(), vec!["a.toml".to_string()]);
}

#[test]
fn reply_without_description_or_patch_is_a_clear_error() {
    let no_desc = "RATIONALE: x\na.toml\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n";
    assert_eq!(parse_reply(no_desc), Err(ParseError::MissingDescription));
    let no_rationale = "DESCRIPTION: x\na.toml\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n";
    assert_eq!(parse_reply(no_rationale), Err(ParseError::MissingRationale));
    let no_patch = "DESCRIPTION: x\nRATIONALE: y\nI would raise the learning rate.";
    assert_eq!(parse_reply(no_patch), Err(ParseError::NoPatch));
    assert!(ParseError::NoPatch.to_string().contains("<<<<<<< SEARCH"));
}

#[test]
fn block_without_path_or_end_marker_is_named() {
    let err =
        parse("Let me change this:\n<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n").unwrap_err();
    assert_eq!(err, ParseError::MissingPath { block: 1 });
    assert!(err.to_string().contains("SEARCH block 1 has no file path"));
    let err = parse("a.rs\n<<<<<<< SEARCH\na\n=======\nb\n").unwrap_err();
    assert!(matches!(err, ParseError::Unterminated { block: 1, .. }));
    assert!(err.to_string().contains(">>>>>>> REPLACE"), "{err}");
}

#[test]
fn search_matching_zero_times_names_block_and_file() {
    let reply =
        "trainer/src/model.rs\n<<<<<<< SEARCH\n    0.002\n=======\n    0.003\n>>>>>>> REPLACE\n\
        trainer/src/model.rs\n<<<<<<< SEARCH\n    8\n=======\n    6\n>>>>>>> REPLACE\n";
    let err = apply_to(
        &parse(reply).unwrap(),
        &files(&[("trainer/src/model.rs", MODEL)]),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("SEARCH block 2 for trainer/src/model.rs matched 0 times"),
        "{msg}"
    );
    assert!(msg.contains("`8` does not occur"), "{msg}");
}

#[test]
fn search_matching_twice_is_ambiguous_with_line_numbers() {
    let content = "a = 1\nb = 2\na = 1\n";
    let reply = "x.toml\n<<<<<<< SEARCH\na = 1\n=======\na = 3\n>>>>>>> REPLACE\n";
    let err = apply_to(&parse(reply).unwrap(), &files(&[("x.toml", content)])).unwrap_err();
    assert_eq!(
        err,
        ApplyError::Ambiguous {
            block: 1,
            path: "x.toml".into(),
            count: 2,
            lines: "1, 3".into()
        }
    );
    assert!(err.to_string().contains("matched 2 times"));
}

#[test]
fn search_matches_whole_lines_only() {
    // `lr = 0.002` must not match inside `embed_lr = 0.002`.
    let content = "embed_lr = 0.002\nlr = 0.002\n";
    let reply = "c.toml\n<<<<<<< SEARCH\nlr = 0.002\n=======\nlr = 0.004\n>>>>>>> REPLACE\n";
    let edits = apply_to(&parse(reply).unwrap(), &files(&[("c.toml", content)])).unwrap();
    assert_eq!(
        edits[0].after.as_deref(),
        Some("embed_lr = 0.002\nlr = 0.004\n")
    );
}

#[test]
fn trailing_whitespace_difference_is_rejected_with_a_hint() {
    let content = "lr = 0.002   \nsteps = 10\n";
    let reply = "c.toml\n<<<<<<< SEARCH\nlr = 0.002\n=======\nlr = 0.004\n>>>>>>> REPLACE\n";
    let err = apply_to(&parse(reply).unwrap(), &files(&[("c.toml", content)])).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("matched 0 times"), "{msg}");
    assert!(
        msg.contains("line 1 if trailing whitespace were ignored"),
        "{msg}"
    );
}

#[test]
fn crlf_reply_and_crlf_file_keep_the_file_line_endings() {
    let content = "[optim]\r\nlr = 0.002\r\nsteps = 10\r\n";
    let reply =
        "c.toml\r\n<<<<<<< SEARCH\r\nlr = 0.002\r\n=======\r\nlr = 0.004\r\n>>>>>>> REPLACE\r\n";
    let edits = apply_to(&parse(reply).unwrap(), &files(&[("c.toml", content)])).unwrap();
    assert_eq!(
        edits[0].after.as_deref(),
        Some("[optim]\r\nlr = 0.004\r\nsteps = 10\r\n")
    );
}

#[test]
fn last_line_without_newline_still_matches_and_stays_without_newline() {
    let reply = "c.toml\n<<<<<<< SEARCH\nsteps = 10\n=======\nsteps = 20\n>>>>>>> REPLACE\n";
    let edits = apply_to(
        &parse(reply).unwrap(),
        &files(&[("c.toml", "lr = 1\nsteps = 10")]),
    )
    .unwrap();
    assert_eq!(edits[0].after.as_deref(), Some("lr = 1\nsteps = 20"));
}

#[test]
fn empty_search_creates_a_file_but_not_over_an_existing_one() {
    let reply =
        "trainer/src/sched.rs\n<<<<<<< SEARCH\n=======\npub fn warmup() {}\n>>>>>>> REPLACE\n";
    let patch = parse(reply).unwrap();
    let edits = apply_to(&patch, &files(&[])).unwrap();
    assert_eq!(edits[0].before, None);
    assert_eq!(edits[0].after.as_deref(), Some("pub fn warmup() {}\n"));
    let err = apply_to(&patch, &files(&[("trainer/src/sched.rs", "x\n")])).unwrap_err();
    assert!(matches!(err, ApplyError::FileExists { block: 1, .. }));
    let edit_missing = parse("nope.rs\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n").unwrap();
    assert!(apply_to(&edit_missing, &files(&[]))
        .unwrap_err()
        .to_string()
        .contains("does not exist"));
}

const DIFF_OK: &str = concat!(
    "DESCRIPTION: deeper model\nRATIONALE: more capacity.\n\n```diff\n",
    "--- a/trainer/src/model.rs\n",
    "+++ b/trainer/src/model.rs\n",
    "@@ -4,4 +4,4 @@\n",
    " \n",
    " fn depth() -> usize {\n",
    "-    4\n",
    "+    6\n",
    " }\n",
    "```\n"
);

#[test]
fn unified_diff_applies_with_context() {
    let r = parse_reply(DIFF_OK).unwrap();
    assert_eq!(r.patch.format(), PatchFormat::UnifiedDiff);
    assert_eq!(r.description, "deeper model");
    let edits = apply_to(&r.patch, &files(&[("trainer/src/model.rs", MODEL)])).unwrap();
    assert_eq!(
        edits[0].after.as_deref(),
        Some(MODEL.replace("    4\n", "    6\n").as_str())
    );
}

#[test]
fn unified_diff_with_wrong_context_names_the_line() {
    let diff = "--- a/trainer/src/model.rs\n+++ b/trainer/src/model.rs\n@@ -5,3 +5,3 @@\n fn depth() -> u32 {\n-    4\n+    6\n }\n";
    let err = apply_to(
        &parse(diff).unwrap(),
        &files(&[("trainer/src/model.rs", MODEL)]),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("hunk 1 of trainer/src/model.rs (@@ -5,3 +5,3 @@) does not apply"),
        "{msg}"
    );
    assert!(
        msg.contains("line 5 of the file is `fn depth() -> usize {` but the hunk expects `fn depth() -> u32 {`"),
        "{msg}"
    );
}

#[test]
fn unified_diff_creates_and_deletes_files() {
    let diff = "--- /dev/null\n+++ b/trainer/src/sched.rs\n@@ -0,0 +1,2 @@\n+pub fn warmup() {}\n+pub fn decay() {}\n\
--- a/old.rs\n+++ /dev/null\n@@ -1,1 +0,0 @@\n-gone\n";
    let patch = parse(diff).unwrap();
    let fs = files(&[("old.rs", "gone\n")]);
    let edits = apply_to(&patch, &fs).unwrap();
    assert_eq!(edits[0].path, "trainer/src/sched.rs");
    assert_eq!(edits[0].before, None);
    assert_eq!(
        edits[0].after.as_deref(),
        Some("pub fn warmup() {}\npub fn decay() {}\n")
    );
    assert_eq!(edits[1].path, "old.rs");
    assert_eq!(edits[1].after, None);
    let exists = files(&[("trainer/src/sched.rs", "x\n"), ("old.rs", "gone\n")]);
    assert_eq!(
        apply_to(&patch, &exists).unwrap_err(),
        ApplyError::DiffFileExists {
            path: "trainer/src/sched.rs".into()
        }
    );
}

#[test]
fn unified_diff_on_crlf_file_keeps_crlf_and_tolerates_wrong_counts() {
    let content = "a\r\nb\r\nc\r\n";
    // The header's counts are wrong (models miscount); the context decides.
    let diff = "--- a/f.txt\n+++ b/f.txt\n@@ -1,9 +1,9 @@\n a\n-b\n+B\n c\n";
    let edits = apply_to(&parse(diff).unwrap(), &files(&[("f.txt", content)])).unwrap();
    assert_eq!(edits[0].after.as_deref(), Some("a\r\nB\r\nc\r\n"));
}

#[test]
fn unified_diff_trailing_whitespace_mismatch_is_explained() {
    let diff = "--- a/f.txt\n+++ b/f.txt\n@@ -1,2 +1,2 @@\n a\n-b\n+B\n";
    let err = apply_to(&parse(diff).unwrap(), &files(&[("f.txt", "a \nb\n")])).unwrap_err();
    assert!(err.to_string().contains("trailing whitespace"), "{err}");
}

#[test]
fn patch_text_round_trips_through_the_parser() {
    for reply in [
        DIFF_OK,
        "a.toml\n<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n>>>>>>> REPLACE\n",
    ] {
        let patch = parse(reply).unwrap();
        assert_eq!(parse(&patch.to_text()).unwrap(), patch);
    }
}
