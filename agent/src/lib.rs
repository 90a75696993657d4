//! agentloop: an auditable optimization loop over LLM training code.

pub mod cli;
pub mod commands;
pub mod executor;
pub mod git;
pub mod init;
pub mod inputs;
pub mod ledger_anchor;
pub mod llm;
pub mod orchestrator;
pub mod patch;
pub mod progress;
pub mod prompts;
pub mod proposer;
pub mod report;
pub mod sandbox;
#[cfg(feature = "testing")]
pub mod testing;

use std::ffi::OsString;

use agentloop_guardrails::exit_code;
use clap::Parser;

/// Runs the command line and returns the process exit code (errors are printed here, with
/// their causes, so `main` stays a one-liner).
pub fn run<I: IntoIterator<Item = OsString>>(args: I) -> i32 {
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit_code::USAGE
            } else {
                exit_code::OK
            };
        }
    };
    if let cli::Command::SandboxExec(a) = &cli.command {
        // Before anything else: this process becomes the sandboxed command.
        return sandbox::exec::main(
            &a.policy,
            a.timeout.map(std::time::Duration::from_secs),
            &a.command,
        );
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AGENTLOOP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in logs and pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let repo = cli.repo();
    let result = match &cli.command {
        cli::Command::Start(a) => commands::start::run(repo, a),
        cli::Command::Init(a) => commands::init::run(repo, a),
        cli::Command::Status(a) => commands::status::run(repo, a),
        cli::Command::Report(a) => commands::report::run(repo, a),
        cli::Command::Rollback(a) => commands::rollback::run(repo, a),
        cli::Command::Compare(a) => commands::compare::run(repo, a),
        cli::Command::Simulate(a) => commands::simulate::run(repo, a),
        cli::Command::SandboxExec(_) => unreachable!("handled above"),
        cli::Command::Ledger(a) => orchestrator::workspace::Workspace::open(repo)
            .and_then(|ws| commands::ledger::run(a, &ws.ledger_path())),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit_code::FAILED
        }
    }
}
