//! Slurm's client commands (`sbatch`, `squeue`, `sacct`, `scontrol`, `scancel`), run as
//! processes with their arguments as a list, never through a shell. They talk to whichever
//! cluster `SLURM_CONF` (or the machine's configuration) names.

use std::collections::HashMap;
use std::process::{Command, Output, Stdio};

use super::script::parse_job_id;
use super::state::{is_active, normalize, parse_exit_code};

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error(
        "`{command}` could not be started ({source}); the slurm executor needs Slurm's client \
         commands (sbatch, squeue, scancel) on PATH and a cluster to talk to"
    )]
    Missing {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` printed no job id (stdout: {stdout:?})")]
    NoJobId { command: String, stdout: String },
}

/// Where a job stands in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queue {
    /// Still queued, running or finishing, in this state.
    Active(String),
    /// No longer in the queue; `Some(state)` when squeue still showed its final state.
    Left(Option<String>),
}

/// A finished job's final state and Slurm's exit code, with where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Final {
    pub state: String,
    pub exit_code: Option<i32>,
    pub source: &'static str,
}

/// Names of environment variables that hold secrets: never handed to a job (Slurm copies the
/// submitting environment into the job and keeps it in its state files).
fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["_API_KEY", "_TOKEN", "_SECRET", "_KEY", "_PASSWORD"]
        .iter()
        .any(|s| n.ends_with(s))
}

fn display(program: &str, args: &[String]) -> String {
    std::iter::once(program.to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn run(program: &str, args: &[String]) -> Result<Output, SlurmError> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if is_secret_name(&name.to_string_lossy()) {
            cmd.env_remove(&name);
        }
    }
    cmd.output().map_err(|source| SlurmError::Missing {
        command: display(program, args),
        source,
    })
}

fn failed(program: &str, args: &[String], out: &Output) -> SlurmError {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr = stderr.trim();
    SlurmError::Failed {
        command: display(program, args),
        status: out.status.to_string(),
        stderr: stderr.chars().take(2000).collect(),
    }
}

/// Submits a batch job; its id.
pub fn submit(args: &[String]) -> Result<String, SlurmError> {
    let out = run("sbatch", args)?;
    if !out.status.success() {
        return Err(failed("sbatch", args, &out));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    parse_job_id(&stdout).ok_or_else(|| SlurmError::NoJobId {
        command: display("sbatch", args),
        stdout: stdout.into_owned(),
    })
}

/// `sbatch --version`: is the client there at all (checked once, before the loop starts).
pub fn check_available() -> Result<(), SlurmError> {
    let args = vec!["--version".to_string()];
    let out = run("sbatch", &args)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed("sbatch", &args, &out))
    }
}

/// Where each of `job_ids` stands, from one `squeue` call: a job squeue does not list has
/// left the queue.
pub fn queue(job_ids: &[String]) -> Result<HashMap<String, Queue>, SlurmError> {
    let args: Vec<String> = vec![
        "-h".into(),
        "-j".into(),
        job_ids.join(","),
        "-o".into(),
        "%i|%T".into(),
    ];
    let out = run("squeue", &args)?;
    let listed = if out.status.success() {
        parse_queue(&String::from_utf8_lossy(&out.stdout))
    } else if String::from_utf8_lossy(&out.stderr).contains("Invalid job id") {
        // Asked about one job only, squeue calls a job it has forgotten an error (about several,
        // it just leaves it out).
        HashMap::new()
    } else {
        return Err(failed("squeue", &args, &out));
    };
    Ok(job_ids
        .iter()
        .map(|id| {
            let q = listed.get(id).cloned().unwrap_or(Queue::Left(None));
            (id.clone(), q)
        })
        .collect())
}

fn parse_queue(stdout: &str) -> HashMap<String, Queue> {
    stdout
        .lines()
        .filter_map(|line| {
            let (id, state) = line.trim().split_once('|')?;
            let q = if is_active(state) {
                Queue::Active(normalize(state))
            } else {
                Queue::Left(Some(normalize(state)))
            };
            Some((id.trim().to_string(), q))
        })
        .collect()
}

/// The final state of a job that left the queue: from accounting (`sacct`) when the cluster
/// keeps it, else from the controller's memory of recent jobs (`scontrol`); `None` when
/// neither knows the job.
pub fn final_state(job_id: &str) -> Option<Final> {
    let sacct: Vec<String> = ["-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode"]
        .map(String::from)
        .to_vec();
    if let Ok(out) = run("sacct", &sacct) {
        if out.status.success() {
            // The accounting database may lag behind the controller: a job squeue no longer
            // shows can still read RUNNING there. Only a final state counts.
            if let Some(f) =
                parse_sacct(&String::from_utf8_lossy(&out.stdout)).filter(|f| !is_active(&f.state))
            {
                return Some(f);
            }
        }
    }
    let scontrol: Vec<String> = ["-o", "show", "job", job_id].map(String::from).to_vec();
    match run("scontrol", &scontrol) {
        Ok(out) if out.status.success() => parse_scontrol(&String::from_utf8_lossy(&out.stdout)),
        _ => None,
    }
}

fn parse_sacct(stdout: &str) -> Option<Final> {
    let line = stdout.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut fields = line.split('|');
    let state = normalize(fields.next()?);
    (!state.is_empty()).then(|| Final {
        state,
        exit_code: fields.next().and_then(parse_exit_code),
        source: "sacct",
    })
}

fn parse_scontrol(stdout: &str) -> Option<Final> {
    let field = |key: &str| {
        stdout
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key).map(str::to_string))
    };
    let state = normalize(&field("JobState=")?);
    (!state.is_empty()).then(|| Final {
        state,
        exit_code: field("ExitCode=").as_deref().and_then(parse_exit_code),
        source: "scontrol",
    })
}

pub fn cancel(job_id: &str) -> Result<(), SlurmError> {
    let args = vec![job_id.to_string()];
    let out = run("scancel", &args)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed("scancel", &args, &out))
    }
}

/// Ids of this user's queued or running jobs called `name`.
pub fn jobs_named(name: &str) -> Result<Vec<String>, SlurmError> {
    let args: Vec<String> = ["-h", "--me", "--name", name, "-o", "%i"]
        .map(String::from)
        .to_vec();
    let out = run("squeue", &args)?;
    if !out.status.success() {
        return Err(failed("squeue", &args, &out));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_output_tells_active_from_gone() {
        let q = parse_queue("12|RUNNING\n13|PENDING\n14|TIMEOUT\n");
        assert_eq!(q["12"], Queue::Active("RUNNING".into()));
        assert_eq!(q["13"], Queue::Active("PENDING".into()));
        assert_eq!(q["14"], Queue::Left(Some("TIMEOUT".into())));
        assert!(parse_queue("").is_empty());
    }

    #[test]
    fn sacct_and_scontrol_give_state_and_exit_code() {
        assert_eq!(
            parse_sacct("CANCELLED by 0|0:15\n"),
            Some(Final {
                state: "CANCELLED".into(),
                exit_code: Some(0),
                source: "sacct"
            })
        );
        assert_eq!(parse_sacct("\n"), None);
        let shown = "JobId=1 JobName=agentloop-x UserId=root(0) JobState=FAILED Reason=NonZeroExitCode Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=3:0 DerivedExitCode=0:0";
        assert_eq!(
            parse_scontrol(shown),
            Some(Final {
                state: "FAILED".into(),
                exit_code: Some(3),
                source: "scontrol"
            })
        );
        assert_eq!(parse_scontrol("no such job"), None);
    }

    #[test]
    fn secret_variables_are_recognised_and_others_kept() {
        for s in [
            "OPENAI_API_KEY",
            "HF_TOKEN",
            "AWS_SECRET",
            "MY_PASSWORD",
            "ssh_key",
        ] {
            assert!(is_secret_name(s), "{s}");
        }
        for s in ["PATH", "SLURM_CONF", "CARGO_TARGET_DIR", "KEYBOARD"] {
            assert!(!is_secret_name(s), "{s}");
        }
    }

    #[test]
    fn a_missing_client_is_named_in_the_error() {
        let e = run("agentloop-no-such-sbatch", &["--parsable".into()]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("agentloop-no-such-sbatch --parsable") && text.contains("on PATH"),
            "{text}"
        );
    }
}
