//! `agentloop init [--check]`: argument handling and output; the work is in `crate::init`.

use std::path::Path;

use agentloop_guardrails::exit_code;
use agentloop_guardrails::target::TargetSpec;
use anyhow::Result;

use crate::cli::InitArgs;
use crate::init::Kind;
use crate::orchestrator::workspace::Workspace;

pub fn run(repo: Option<&Path>, args: &InitArgs) -> Result<i32> {
    let ws = Workspace::open(repo)?;
    if args.check {
        return check(&ws, args);
    }
    let (path, found) = crate::init::write(&ws.root)?;
    let kind = match found.kind {
        Kind::Python => format!(
            "a Python trainer ({})",
            found.script.as_deref().unwrap_or("?")
        ),
        Kind::Cargo => "a Cargo workspace".into(),
        Kind::Unknown => "no trainer I recognise (a generic template)".into(),
    };
    println!("wrote {} for {kind}", path.display());
    if !found.ignored_dirs.is_empty() {
        println!(
            "data not in git, listed as [target] inputs: {}",
            found.ignored_dirs.join(", ")
        );
    }
    println!(
        "next: edit the lines marked EDIT in {}, commit it, then run:\n  agentloop init --check",
        path.display()
    );
    Ok(exit_code::OK)
}

fn check(ws: &Workspace, args: &InitArgs) -> Result<i32> {
    let _lock = ws.lock()?;
    let target = TargetSpec::load(&ws.root)?;
    crate::sandbox::set_up(ws, &target, args.no_sandbox, None)?;
    let target_dir = super::start::shared_target_dir(&ws.root, args.target_dir.as_deref());
    let report = crate::init::check::run(ws, &target, &target_dir)?;
    print!("{}", report.text());
    if report.problems.is_empty() {
        println!(
            "all checks passed; next:\n  agentloop start --budget 5m{}",
            if args.no_sandbox { " --no-sandbox" } else { "" }
        );
        Ok(exit_code::OK)
    } else {
        println!(
            "{} problem(s) to fix before `agentloop start`",
            report.problems.len()
        );
        Ok(exit_code::FAILED)
    }
}
