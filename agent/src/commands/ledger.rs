//! `agentloop ledger list|show|verify|export|import|rebuild-views`: thin wiring of the review
//! functions in `agentloop_ledger::review`.

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use agentloop_guardrails::exit_code;
use agentloop_ledger::review::{self, Format, Style};
use agentloop_ledger::{verify_path, ChangeStatus, Ledger, VerifyOptions};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::orchestrator::decision_check;

/// Review the ledger: what was tried, why it was kept or not, and whether the record is intact.
#[derive(Debug, Args)]
pub struct LedgerArgs {
    #[command(subcommand)]
    pub command: LedgerCommand,
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// List changes, optionally only those with one status.
    List {
        /// accepted, rejected, crashed, policy-rejected, build-failed, rolled-back or proposed.
        #[arg(long, value_parser = parse_status)]
        status: Option<ChangeStatus>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one change: rationale, diff, per-seed metrics, statistics, decision, timeline.
    Show {
        /// A change id or a unique prefix of one (e.g. c7f3).
        id: String,
    },
    /// Recompute the hash chain, run SQLite's checks, compare the derived tables with the
    /// events, re-run every stored decision and check the git trailers. Exit status 1 on any
    /// mismatch.
    Verify {
        /// The git repository whose `Ledger-Head` trailers to check (default: the repository
        /// holding the ledger's `.agentloop` directory).
        #[arg(long)]
        repo: Option<PathBuf>,
        /// Do not check git trailers.
        #[arg(long, conflicts_with = "repo")]
        no_git: bool,
    },
    /// Export the ledger: json and jsonl carry every event with its hashes, tsv is a summary
    /// with results.tsv's columns.
    Export {
        #[arg(long, default_value = "jsonl", value_parser = parse_format)]
        format: Format,
        /// Write here instead of to stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Import a json or jsonl export into an empty ledger, checking every hash first.
    Import {
        input: PathBuf,
        #[arg(long, default_value = "jsonl", value_parser = parse_format)]
        format: Format,
    },
    /// Rebuild the derived tables (changes, runs, decisions, merges, rollbacks) from the events.
    RebuildViews,
}

fn parse_status(s: &str) -> Result<ChangeStatus, String> {
    s.parse()
        .map_err(|e: agentloop_ledger::LedgerError| e.to_string())
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
        .map_err(|e: agentloop_ledger::LedgerError| e.to_string())
}

/// Runs the command against the ledger at `ledger_path`; returns the process exit code.
pub fn run(args: &LedgerArgs, ledger_path: &Path) -> anyhow::Result<i32> {
    let stdout = std::io::stdout();
    let style = Style {
        color: stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let mut out = stdout.lock();
    run_to(args, ledger_path, style, &mut out)
}

/// [`run`], writing to `out`.
pub fn run_to(
    args: &LedgerArgs,
    ledger_path: &Path,
    style: Style,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    if let LedgerCommand::Import { input, format } = &args.command {
        let ledger = open(ledger_path)?;
        let file = File::open(input).with_context(|| format!("cannot read {}", input.display()))?;
        let count = review::import(&ledger, *format, &mut BufReader::new(file))?;
        writeln!(
            out,
            "imported {count} events into {}",
            ledger_path.display()
        )?;
        return Ok(exit_code::OK);
    }
    if !ledger_path.exists() {
        bail!(
            "no ledger at {} (it is created by `agentloop start`)",
            ledger_path.display()
        );
    }
    if let LedgerCommand::Verify { repo, no_git } = &args.command {
        let repo = match (repo, no_git) {
            (_, true) => None,
            (Some(repo), false) => Some(repo.clone()),
            (None, false) => default_repo(ledger_path),
        };
        let recomputer = decision_check::Recomputer::default();
        let hook = |e: &agentloop_ledger::Event| recomputer.recompute(e);
        let options = VerifyOptions {
            repo: repo.as_deref(),
            check_views: true,
            recompute: Some(&hook),
        };
        // verify_path, not open: a damaged file still gets a report naming the first bad seq.
        let report = verify_path(ledger_path, &options)
            .with_context(|| format!("cannot verify the ledger at {}", ledger_path.display()))?;
        review::write_report(&report, &options, out)?;
        return Ok(if report.ok {
            exit_code::OK
        } else {
            exit_code::FAILED
        });
    }
    let ledger = open(ledger_path)?;
    match &args.command {
        LedgerCommand::List { status, json } => {
            review::list(&ledger, *status, *json, style, out)?;
        }
        LedgerCommand::Show { id } => review::show(&ledger, id, style, out)?,
        LedgerCommand::Export { format, output } => match output {
            Some(path) => {
                let file = File::create(path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                review::export(&ledger, *format, &mut BufWriter::new(file))?;
            }
            None => review::export(&ledger, *format, out)?,
        },
        LedgerCommand::RebuildViews => {
            ledger.rebuild_views()?;
            writeln!(out, "derived tables rebuilt from {} events", ledger.len()?)?;
        }
        LedgerCommand::Import { .. } | LedgerCommand::Verify { .. } => {
            unreachable!("handled above")
        }
    }
    Ok(exit_code::OK)
}

fn open(path: &Path) -> anyhow::Result<Ledger> {
    Ledger::open(path).with_context(|| format!("cannot open the ledger at {}", path.display()))
}

/// `<repo>/.agentloop/ledger.db` -> `<repo>`, when that is a git repository.
fn default_repo(ledger_path: &Path) -> Option<PathBuf> {
    let dir = ledger_path.parent()?;
    if dir.file_name()? != ".agentloop" {
        return None;
    }
    let repo = dir.parent()?;
    repo.join(".git").exists().then(|| repo.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentloop_ledger::{EventKind, NewEvent};
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        ledger: LedgerArgs,
    }

    fn run_cli(path: &Path, argv: &[&str]) -> (anyhow::Result<i32>, String) {
        let cli =
            Cli::try_parse_from(std::iter::once("agentloop-ledger").chain(argv.iter().copied()))
                .expect("arguments parse");
        let mut out = Vec::new();
        let code = run_to(&cli.ledger, path, Style { color: false }, &mut out);
        (code, String::from_utf8(out).unwrap())
    }

    fn sample(path: &Path) {
        let ledger = Ledger::open(path).unwrap();
        let e = |kind, payload| NewEvent {
            kind,
            session: "s1".into(),
            change: Some("c7f3a2b".into()),
            payload,
        };
        ledger
            .append(e(
                EventKind::Propose,
                json!({"description": "longer warmup", "rationale": "r", "patch": "--- a/x\n+++ b/x\n",
                       "patch_format": "unified"}),
            ))
            .unwrap();
        ledger
            .append(e(
                EventKind::Decision,
                json!({"outcome": "rejected", "rule_version": "v1", "p_value": 0.6}),
            ))
            .unwrap();
    }

    #[test]
    fn list_show_verify_and_export_through_the_cli() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".agentloop/ledger.db");
        sample(&path);

        let (code, out) = run_cli(&path, &["list", "--status", "rejected"]);
        assert_eq!(code.unwrap(), 0);
        assert!(
            out.contains("c7f3a2b") && out.contains("longer warmup"),
            "{out}"
        );

        let (code, out) = run_cli(&path, &["show", "c7f"]);
        assert_eq!(code.unwrap(), 0);
        assert!(out.contains("change c7f3a2b"), "{out}");

        let (code, out) = run_cli(&path, &["verify"]);
        assert_eq!(code.unwrap(), 0, "{out}");

        let (code, out) = run_cli(&path, &["export", "--format", "tsv"]);
        assert_eq!(code.unwrap(), 0);
        assert!(
            out.starts_with("commit\tval_bpb\tmemory_gb\tstatus\tdescription"),
            "{out}"
        );

        let export = dir.path().join("ledger.jsonl");
        let (code, _) = run_cli(&path, &["export", "--output", export.to_str().unwrap()]);
        assert_eq!(code.unwrap(), 0);
        let copy = dir.path().join("copy.db");
        let (code, out) = run_cli(&copy, &["import", export.to_str().unwrap()]);
        assert_eq!(code.unwrap(), 0);
        assert_eq!(
            out.trim(),
            format!("imported 2 events into {}", copy.display())
        );
    }

    #[test]
    fn verify_exits_non_zero_naming_the_first_bad_seq() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".agentloop/ledger.db");
        sample(&path);
        forge_payload_in_file(&path);
        let (code, out) = run_cli(&path, &["verify", "--no-git"]);
        assert_eq!(code.unwrap(), 1, "{out}");
        assert!(out.contains("first bad seq 2"), "{out}");
    }

    /// Edits seq 2's payload in the database file itself, as a hex editor would (the ledger
    /// was closed, so its WAL has been checkpointed into the file).
    fn forge_payload_in_file(path: &Path) {
        let bytes = std::fs::read(path).unwrap();
        let patched = replace_bytes(&bytes, b"\"p_value\":0.6", b"\"p_value\":0.0");
        std::fs::write(path, patched).unwrap();
    }

    fn replace_bytes(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let mut out = haystack.to_vec();
        let at = out
            .windows(from.len())
            .position(|w| w == from)
            .expect("pattern present");
        out[at..at + from.len()].copy_from_slice(to);
        out
    }

    #[test]
    fn a_missing_ledger_is_an_error_not_an_empty_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".agentloop/ledger.db");
        let (code, _) = run_cli(&path, &["list"]);
        let err = code.unwrap_err().to_string();
        assert!(err.starts_with("no ledger at"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn bad_arguments_are_refused_by_name() {
        let err = Cli::try_parse_from(["x", "list", "--status", "merged"])
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("unknown change status \"merged\""),
            "{err}"
        );
        let err = Cli::try_parse_from(["x", "export", "--format", "csv"])
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("unknown export format \"csv\""),
            "{err}"
        );
    }
}
