//! Null changes for the offline proposer: edits that change no setting (a comment added, a
//! note appended to a line), as a large share of real model output is. A benchmark mixes
//! them in (`[proposer.offline] null_fraction`) so a rule's false merges can be counted.

/// The reply (description, rationale, one search/replace block on `file`) of null change
/// number `index`: odd indices append a note to the first line, even ones add a comment line
/// after it. The note names the index, so every null change differs from the trunk.
pub fn reply(file: &str, content: &str, index: u64) -> String {
    let lines: Vec<&str> = content.lines().collect();
    let first = lines.first().copied().unwrap_or("");
    // SEARCH: the file's first lines, as few as match exactly once.
    let mut take = 1;
    while take < lines.len() && lines.windows(take).filter(|w| *w == &lines[..take]).count() > 1 {
        take += 1;
    }
    let search: String = lines[..take.min(lines.len())]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    let rest: String = lines[1..take.min(lines.len())]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    let (description, replace) = if index % 2 == 1 {
        (
            format!("annotate the first line of {file} (note {index}; no setting changes)"),
            format!("{first}  # reviewed, note {index}\n{rest}"),
        )
    } else {
        (
            format!("add a comment to {file} (note {index}; no setting changes)"),
            format!("{first}\n# note {index}: settings chosen by the search below\n{rest}"),
        )
    };
    format!(
        "DESCRIPTION: {description}\nRATIONALE: documents the config for readers; \
         training reads the same values.\n\n{file}\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::{apply, parse_reply};

    #[test]
    fn null_changes_apply_and_change_only_comments() {
        let config = "[optim]\nlr = 0.1\n\n# spacer\nweight_decay = 0.5\n";
        for index in 0..4 {
            let reply = parse_reply(&reply("config.toml", config, index)).unwrap();
            let edits = apply(&reply.patch, &|_| Some(config.to_string())).unwrap();
            let after = edits[0].after.clone().unwrap();
            assert_ne!(after, config);
            let parsed: toml::Table = after.parse().unwrap();
            assert_eq!(parsed, config.parse::<toml::Table>().unwrap(), "{after}");
            assert!(!reply.description.starts_with("set "));
        }
    }
}
