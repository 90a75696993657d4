//! What a run becomes on the cluster: the batch script (`out/job.sh`) and the `sbatch`
//! arguments that submit it. Both are pure functions of the run, so a resumed loop writes the
//! very same script and can recognise the job it submitted before it died.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agentloop_guardrails::target::shell_quote;
use sha2::{Digest, Sha256};

use super::super::RunJob;
use crate::executor::config::SlurmConfig;

pub const SCRIPT: &str = "job.sh";
pub const EXIT_CODE: &str = "exit_code";

pub fn script_path(out: &Path) -> PathBuf {
    out.join(SCRIPT)
}

fn quoted(path: &Path) -> String {
    shell_quote(&path.to_string_lossy())
}

/// The batch script: cd to the worktree, export the run's environment, run the command with
/// `sh -c`, then record its exit code in `out/exit_code` (written whole: temp file, then mv),
/// and exit with it.
pub fn job_script(job: &RunJob) -> String {
    let mut s = String::from("#!/bin/sh\n");
    s.push_str(&format!(
        "# agentloop run {}: written by agentloop, submitted with sbatch.\n",
        job.name
    ));
    for (key, value) in &job.env {
        s.push_str(&format!("export {key}={}\n", shell_quote(value)));
    }
    let exit_file = job.out.join(EXIT_CODE);
    let tmp = job.out.join(format!("{EXIT_CODE}.tmp"));
    s.push_str(&format!(
        "cd {} && sh -c {}\n",
        quoted(&job.cwd),
        shell_quote(&job.command)
    ));
    s.push_str("code=$?\n");
    s.push_str(&format!(
        "printf '%s\\n' \"$code\" > {tmp} && mv -f {tmp} {exit}\n",
        tmp = quoted(&tmp),
        exit = quoted(&exit_file)
    ));
    s.push_str("exit \"$code\"\n");
    s
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// `sbatch`'s arguments for `job`, the script path last. The log is appended to, so a
/// resubmitted job's output follows the lost one's (and the note about why).
pub fn sbatch_args(job: &RunJob, config: &SlurmConfig) -> Vec<String> {
    let mut args = vec![
        "--parsable".to_string(),
        format!("--job-name={}", job_name(job)),
        format!("--output={}", job.log().display()),
        "--open-mode=append".to_string(),
        format!("--chdir={}", job.cwd.display()),
    ];
    if let Some(partition) = &config.partition {
        args.push(format!("--partition={partition}"));
    }
    args.push(format!("--time={}", time_limit(config, job.timeout)));
    if let Some(bytes) = job.memory_limit {
        args.push(format!("--mem={}M", bytes.div_ceil(1 << 20)));
    }
    args.extend(config.sbatch_options.iter().cloned());
    args.push(script_path(&job.out).display().to_string());
    args
}

pub fn job_name(job: &RunJob) -> String {
    format!("agentloop-{}", job.name)
}

/// `[executor.slurm] time_limit`, else the train timeout rounded up to whole minutes.
fn time_limit(config: &SlurmConfig, timeout: Duration) -> String {
    match &config.time_limit {
        Some(t) => t.clone(),
        None => timeout.as_secs().div_ceil(60).max(1).to_string(),
    }
}

/// The job id in `sbatch --parsable`'s output: `12345`, or `12345;cluster` on a federation.
pub fn parse_job_id(stdout: &str) -> Option<String> {
    let line = stdout.lines().map(str::trim).find(|l| !l.is_empty())?;
    let id = line.split(';').next()?.trim();
    let valid = !id.is_empty() && id.chars().all(|c| c.is_ascii_digit() || c == '_');
    valid.then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> RunJob {
        RunJob {
            command: "sh .agentloop-bin/train 7 val 1steps '/runs/c1/it'\\''s'".into(),
            cwd: "/repo/.agentloop/worktrees/trunk-s1".into(),
            env: vec![("CARGO_TARGET_DIR".into(), "/shared/target dir".into())],
            timeout: Duration::from_secs(90),
            memory_limit: Some(1 << 30),
            divergence: None,
            out: "/repo/.agentloop/runs/c1/smoke-candidate-0".into(),
            name: "c1-smoke-candidate-0".into(),
        }
    }

    #[test]
    fn sbatch_arguments_carry_every_setting_and_the_script_last() {
        let config = SlurmConfig {
            partition: Some("gpu".into()),
            time_limit: None,
            sbatch_options: vec!["--gres=gpu:1".into(), "--account=lab".into()],
        };
        let args = sbatch_args(&job(), &config);
        assert_eq!(
            args,
            [
                "--parsable",
                "--job-name=agentloop-c1-smoke-candidate-0",
                "--output=/repo/.agentloop/runs/c1/smoke-candidate-0/run.log",
                "--open-mode=append",
                "--chdir=/repo/.agentloop/worktrees/trunk-s1",
                "--partition=gpu",
                "--time=2",
                "--mem=1024M",
                "--gres=gpu:1",
                "--account=lab",
                "/repo/.agentloop/runs/c1/smoke-candidate-0/job.sh",
            ]
        );
    }

    #[test]
    fn configured_time_limit_wins_and_absent_settings_are_left_out() {
        let config = SlurmConfig {
            partition: None,
            time_limit: Some("00:20:00".into()),
            sbatch_options: vec![],
        };
        let mut j = job();
        j.memory_limit = None;
        let args = sbatch_args(&j, &config);
        assert!(args.contains(&"--time=00:20:00".to_string()), "{args:?}");
        assert!(!args
            .iter()
            .any(|a| a.starts_with("--partition") || a.starts_with("--mem")));
        // Under a minute still asks for one whole minute; memory rounds up to the next MiB.
        j.timeout = Duration::from_secs(5);
        j.memory_limit = Some((1 << 20) + 1);
        let args = sbatch_args(&j, &SlurmConfig::default());
        assert!(args.contains(&"--time=1".to_string()), "{args:?}");
        assert!(args.contains(&"--mem=2M".to_string()), "{args:?}");
    }

    #[test]
    fn parsable_output_gives_the_job_id() {
        assert_eq!(parse_job_id("12345\n").as_deref(), Some("12345"));
        assert_eq!(parse_job_id("12345;cluster\n").as_deref(), Some("12345"));
        assert_eq!(parse_job_id("\n 77 \n").as_deref(), Some("77"));
        assert_eq!(parse_job_id(""), None);
        assert_eq!(parse_job_id("Submitted batch job 5"), None);
    }

    #[test]
    fn the_script_runs_the_command_in_the_worktree_and_records_its_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out dir");
        let cwd = dir.path().join("work");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::create_dir_all(&cwd).unwrap();
        std::fs::write(cwd.join("marker"), "").unwrap();
        let j = RunJob {
            command: "ls marker && echo \"$GREETING\" && exit 3".into(),
            cwd,
            env: vec![("GREETING".into(), "it's me".into())],
            timeout: Duration::from_secs(10),
            memory_limit: None,
            divergence: None,
            out: out.clone(),
            name: "t".into(),
        };
        let script = job_script(&j);
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(3), "{script}");
        assert_eq!(String::from_utf8_lossy(&o.stdout), "marker\nit's me\n");
        assert_eq!(std::fs::read_to_string(out.join(EXIT_CODE)).unwrap(), "3\n");
        assert!(!out.join("exit_code.tmp").exists());
        // The same run gives the same script (and hash): a resumed loop recognises its job.
        assert_eq!(sha256_hex(&job_script(&j)), sha256_hex(&script));
        let mut other = j.clone();
        other.command.push_str(" # changed");
        assert_ne!(sha256_hex(&job_script(&other)), sha256_hex(&script));
    }
}
