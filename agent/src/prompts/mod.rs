//! Prompt templates (`prompts/*.md` at the repository root, embedded at build time) and
//! their rendering into a chat conversation.
//!
//! Templates use `{{name}}` placeholders. Values are inserted verbatim and never re-scanned,
//! so file contents full of `{{` (Rust format strings) are safe. A placeholder without a
//! value is an error, so a template edit cannot silently drop the files or the history.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::llm::{ChatMessage, Role};
use crate::proposer::{HistoryItem, ProposalContext, Request};

pub mod error;
pub use error::PromptError;

/// Template file names, in the order they are hashed.
pub const TEMPLATE_NAMES: [&str; 5] = [
    "system.md",
    "program.md",
    "patch_format.md",
    "fix_build.md",
    "retry.md",
];

/// Compiler output beyond this many lines is cut: the first errors are the ones that matter.
const MAX_COMPILER_LINES: usize = 200;

/// The set of templates a proposer renders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Templates {
    /// `(file name, text)` in [`TEMPLATE_NAMES`] order.
    files: Vec<(String, String)>,
}

impl Templates {
    /// The templates compiled into the binary from `prompts/`.
    pub fn embedded() -> Self {
        let texts = [
            include_str!("../../../prompts/system.md"),
            include_str!("../../../prompts/program.md"),
            include_str!("../../../prompts/patch_format.md"),
            include_str!("../../../prompts/fix_build.md"),
            include_str!("../../../prompts/retry.md"),
        ];
        Templates {
            files: TEMPLATE_NAMES
                .iter()
                .zip(texts)
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect(),
        }
    }

    /// Templates from a directory holding all of [`TEMPLATE_NAMES`] (a user's own prompts).
    pub fn from_dir(dir: &Path) -> Result<Self, PromptError> {
        let files = TEMPLATE_NAMES
            .iter()
            .map(|name| {
                let path = dir.join(name);
                std::fs::read_to_string(&path)
                    .map(|text| (name.to_string(), text))
                    .map_err(|source| PromptError::Read {
                        path: path.display().to_string(),
                        source,
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Templates { files })
    }

    fn text(&self, name: &str) -> &str {
        self.files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
            .unwrap_or_default()
    }

    /// SHA-256 (hex) over every template's name and text; recorded in each proposal event
    /// so that a result can be traced to the exact prompts that produced it.
    pub fn sha256(&self) -> String {
        let mut h = Sha256::new();
        for (name, text) in &self.files {
            // Length prefixes keep ("ab","c") and ("a","bc") apart.
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update((text.len() as u64).to_le_bytes());
            h.update(text.as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// The conversation for a proposal request: system prompt, the research program with
    /// files and history, and for a fix or retry the previous reply and what went wrong.
    pub fn render(&self, ctx: &ProposalContext) -> Result<Vec<ChatMessage>, PromptError> {
        let patch_format = render(
            "patch_format.md",
            self.text("patch_format.md"),
            &values(&[]),
        )?;
        let program = render(
            "program.md",
            self.text("program.md"),
            &values(&[
                ("metric", ctx.metric.clone()),
                (
                    "noise_floor",
                    render_noise_floor(ctx.noise_floor, ctx.min_gain, &ctx.metric),
                ),
                ("budget_left", render_budget(ctx.budget_left)),
                ("history", render_history(&ctx.history)),
                ("files", render_files(&ctx.editable_files)),
                ("patch_format", patch_format),
            ]),
        )?;
        // Appended, not a template value: the user's own templates keep working unchanged.
        let program = match &ctx.notice {
            Some(notice) => format!("{program}\n\n## Why the loop paused\n\n{notice}\n"),
            None => program,
        };
        let mut messages = vec![
            ChatMessage::new(
                Role::System,
                render("system.md", self.text("system.md"), &values(&[]))?,
            ),
            ChatMessage::new(Role::User, program),
        ];
        match &ctx.request {
            Request::New => {}
            Request::FixBuild {
                previous_patch,
                compiler_errors,
            } => {
                messages.push(ChatMessage::new(Role::Assistant, previous_patch.clone()));
                messages.push(ChatMessage::new(
                    Role::User,
                    render(
                        "fix_build.md",
                        self.text("fix_build.md"),
                        &values(&[("compiler_errors", truncate_lines(compiler_errors))]),
                    )?,
                ));
            }
            Request::Retry {
                previous_reply,
                reason,
            } => {
                messages.push(ChatMessage::new(Role::Assistant, previous_reply.clone()));
                messages.push(ChatMessage::new(
                    Role::User,
                    render(
                        "retry.md",
                        self.text("retry.md"),
                        &values(&[("reason", reason.clone())]),
                    )?,
                ));
            }
        }
        Ok(messages)
    }
}

/// The hash of the embedded templates (see [`Templates::sha256`]).
pub fn template_sha256() -> String {
    Templates::embedded().sha256()
}

fn values(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Replaces each `{{name}}` in `template` with its value. Names are trimmed (`{{ name }}`).
pub fn render(
    template_name: &str,
    template: &str,
    values: &BTreeMap<String, String>,
) -> Result<String, PromptError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or_else(|| PromptError::Unclosed {
            template: template_name.to_string(),
            offset: template.len() - rest.len() + open,
        })?;
        let name = after[..close].trim();
        let value = values.get(name).ok_or_else(|| PromptError::MissingValue {
            template: template_name.to_string(),
            name: name.to_string(),
        })?;
        out.push_str(value);
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Each file under its path, in a fence long enough not to be closed by the content.
fn render_files(files: &[(String, String)]) -> String {
    if files.is_empty() {
        return "(no editable files)".to_string();
    }
    files
        .iter()
        .map(|(path, content)| {
            let longest_run = content
                .lines()
                .map(|l| l.trim_start().chars().take_while(|&c| c == '`').count())
                .max()
                .unwrap_or(0);
            let fence = "`".repeat(longest_run.max(2) + 1);
            let lang = Path::new(path)
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("");
            let newline = if content.ends_with('\n') { "" } else { "\n" };
            format!("### {path}\n{fence}{lang}\n{content}{newline}{fence}\n")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn render_history(history: &[HistoryItem]) -> String {
    if history.is_empty() {
        return "(nothing tried yet)".to_string();
    }
    history
        .iter()
        .map(|h| {
            let effect = match (h.effect, h.ci_low, h.ci_high) {
                (Some(e), Some(lo), Some(hi)) => {
                    format!("gain {e:+.5} (95% CI {lo:+.5} .. {hi:+.5})")
                }
                (Some(e), _, _) => format!("gain {e:+.5}"),
                _ => "not measured".to_string(),
            };
            let when = if h.on_current_trunk {
                ""
            } else {
                " (on an earlier trunk)"
            };
            format!(
                "- {} [{}] {}: {}{when}",
                h.change_id, h.outcome, h.description, effect
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn render_noise_floor(noise_floor: Option<f64>, min_gain: Option<f64>, metric: &str) -> String {
    match (noise_floor, min_gain) {
        (Some(sd), Some(min)) if min > 0.0 => format!(
            "run-to-run standard deviation of {metric} is {sd:.5}, but changes are compared with the trunk on the same seeds, so much smaller gains are measurable: a change is accepted when its gain is statistically clear and at least {min:.5}."
        ),
        (Some(sd), _) => format!("run-to-run standard deviation of {metric} is {sd:.5}."),
        (None, _) => "not calibrated yet; assume small gains are indistinguishable from noise.".into(),
    }
}

fn render_budget(left: Duration) -> String {
    humantime::format_duration(Duration::from_secs(left.as_secs())).to_string()
}

fn truncate_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= MAX_COMPILER_LINES {
        return text.trim_end().to_string();
    }
    format!(
        "{}\n... ({} more lines cut)",
        lines[..MAX_COMPILER_LINES].join("\n"),
        lines.len() - MAX_COMPILER_LINES
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(request: Request) -> ProposalContext {
        ProposalContext {
            editable_files: vec![
                (
                    "trainer/config/default.toml".into(),
                    "[optim]\nlr = 0.002\n".into(),
                ),
                (
                    "trainer/src/model.rs".into(),
                    "fn f() { println!(\"{{}}\"); }\n".into(),
                ),
            ],
            history: vec![HistoryItem {
                change_id: "c1a2b3c".into(),
                description: "set optim.lr = 0.004 (was 0.002)".into(),
                outcome: "rejected".into(),
                effect: Some(-0.0012),
                ci_low: Some(-0.003),
                ci_high: Some(0.0004),
                on_current_trunk: true,
            }],
            noise_floor: Some(0.0021),
            min_gain: Some(0.001),
            budget_left: Duration::from_secs(3 * 3600 + 61),
            metric: "val_bpb".into(),
            request,
            notice: None,
        }
    }

    #[test]
    fn new_request_includes_files_history_noise_floor_and_budget() {
        let msgs = Templates::embedded().render(&ctx(Request::New)).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].role, Role::System);
        let user = &msgs[1].content;
        assert!(user.contains("### trainer/config/default.toml\n```toml\n[optim]\nlr = 0.002\n```"));
        // File content is inserted verbatim, placeholders-looking text included.
        assert!(user.contains("println!(\"{{}}\")"));
        assert!(user.contains(
            "- c1a2b3c [rejected] set optim.lr = 0.004 (was 0.002): gain -0.00120 (95% CI -0.00300 .. +0.00040)"
        ));
        assert!(user.contains("run-to-run standard deviation of val_bpb is 0.00210"));
        // The rule's real floor, not the run-to-run spread, bounds what can be accepted.
        assert!(
            user.contains("statistically clear and at least 0.00100"),
            "{user}"
        );
        assert!(user.contains("3h 1m 1s"));
        assert!(user.contains("DESCRIPTION:"), "patch format is included");
        let without_file = user.replace("println!(\"{{}}\")", "");
        assert!(!without_file.contains("{{"), "no placeholder left: {user}");
    }

    #[test]
    fn fix_build_request_replays_the_patch_and_the_errors() {
        let msgs = Templates::embedded()
            .render(&ctx(Request::FixBuild {
                previous_patch: "PREVIOUS PATCH".into(),
                compiler_errors: "error[E0308]: mismatched types".into(),
            }))
            .unwrap();
        assert_eq!(msgs.len(), 4);
        assert_eq!(msgs[2].role, Role::Assistant);
        assert_eq!(msgs[2].content, "PREVIOUS PATCH");
        assert!(msgs[3].content.contains("error[E0308]: mismatched types"));
    }

    #[test]
    fn retry_request_states_the_reason() {
        let msgs = Templates::embedded()
            .render(&ctx(Request::Retry {
                previous_reply: "bad".into(),
                reason: "SEARCH block 2 for trainer/src/model.rs matched 0 times".into(),
            }))
            .unwrap();
        assert!(msgs[3]
            .content
            .contains("SEARCH block 2 for trainer/src/model.rs matched 0 times"));
    }

    #[test]
    fn missing_or_unclosed_placeholder_is_an_error() {
        let err = render(
            "x.md",
            "a {{ files }} b {{nope}}",
            &values(&[("files", "F".into())]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "prompt template x.md: placeholder {{nope}} has no value"
        );
        assert!(matches!(
            render("x.md", "a {{files", &values(&[])),
            Err(PromptError::Unclosed { offset: 2, .. })
        ));
        assert_eq!(
            render(
                "x.md",
                "a {{ files }}!",
                &values(&[("files", "{{x}}".into())])
            )
            .unwrap(),
            "a {{x}}!"
        );
    }

    #[test]
    fn template_hash_changes_when_a_template_changes() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in &Templates::embedded().files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let same = Templates::from_dir(dir.path()).unwrap();
        assert_eq!(same.sha256(), template_sha256());
        assert_eq!(template_sha256().len(), 64);

        let program = dir.path().join("program.md");
        let mut text = std::fs::read_to_string(&program).unwrap();
        text.push_str("\nTry rotary embeddings.\n");
        std::fs::write(&program, text).unwrap();
        let edited = Templates::from_dir(dir.path()).unwrap();
        assert_ne!(edited.sha256(), template_sha256());

        std::fs::remove_file(dir.path().join("retry.md")).unwrap();
        let err = Templates::from_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains("retry.md"), "{err}");
    }
}
