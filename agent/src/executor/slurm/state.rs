//! Slurm's job states, and what each one means for a training run.

use crate::executor::process::Exit;

/// States in which a job is still Slurm's business: queued, starting, running or finishing.
const ACTIVE: [&str; 13] = [
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
    "RESV_DEL_HOLD",
];

/// The state word without what Slurm may add to it: `CANCELLED by 0` → `CANCELLED`,
/// sacct's truncation mark `CANCELLED+` → `CANCELLED`.
pub fn normalize(state: &str) -> String {
    state
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_end_matches('+')
        .to_ascii_uppercase()
}

pub fn is_active(state: &str) -> bool {
    ACTIVE.contains(&normalize(state).as_str())
}

/// What to do with a job that has ended in some state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The run is over; this is how it ended.
    Done(Exit),
    /// The cluster lost the run (preemption, a failed node): submit it again.
    Resubmit,
}

/// How a job that ended in `state` ended for the loop. `command_exit` is the train command's
/// own exit code, from the `exit_code` file the job script writes when the command returns
/// (absent when the job was killed before that); `slurm_exit` is Slurm's `ExitCode` of the job.
pub fn verdict(state: &str, command_exit: Option<i32>, slurm_exit: Option<i32>) -> Verdict {
    match normalize(state).as_str() {
        // The script exits with the command's code, so a command that exited non-zero (3:
        // diverged, 4: timed out) ends the job FAILED: its own code still says what happened.
        "COMPLETED" => Verdict::Done(Exit::Code(command_exit.or(slurm_exit))),
        "FAILED" => Verdict::Done(Exit::Code(command_exit)),
        "TIMEOUT" | "DEADLINE" => Verdict::Done(Exit::TimedOut),
        "OUT_OF_MEMORY" => Verdict::Done(Exit::OutOfMemory),
        "PREEMPTED" | "NODE_FAIL" | "REQUEUED" => Verdict::Resubmit,
        // CANCELLED (by someone else than the loop), BOOT_FAIL, and anything we do not know.
        _ => Verdict::Done(Exit::Code(None)),
    }
}

/// The first number of Slurm's `ExitCode` field (`3:0` → 3; `0:9` → 0).
pub fn parse_exit_code(field: &str) -> Option<i32> {
    field.split(':').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_and_failed_jobs_end_with_the_commands_own_code() {
        assert_eq!(
            verdict("COMPLETED", Some(0), Some(0)),
            Verdict::Done(Exit::Code(Some(0)))
        );
        // The trainer's codes: 3 diverged, 4 timed out (the script exits with them: FAILED).
        assert_eq!(
            verdict("FAILED", Some(3), Some(3)),
            Verdict::Done(Exit::Code(Some(3)))
        );
        assert_eq!(
            verdict("FAILED", Some(4), Some(4)),
            Verdict::Done(Exit::Code(Some(4)))
        );
        // FAILED without the command's code: the script itself never got that far.
        assert_eq!(
            verdict("FAILED", None, Some(1)),
            Verdict::Done(Exit::Code(None))
        );
        // COMPLETED with the file lost: Slurm's exit code is the script's, i.e. the command's.
        assert_eq!(
            verdict("COMPLETED", None, Some(0)),
            Verdict::Done(Exit::Code(Some(0)))
        );
    }

    #[test]
    fn limits_cancellations_and_failures_map_to_their_exits() {
        assert_eq!(
            verdict("TIMEOUT", None, None),
            Verdict::Done(Exit::TimedOut)
        );
        assert_eq!(
            verdict("DEADLINE", None, None),
            Verdict::Done(Exit::TimedOut)
        );
        assert_eq!(
            verdict("OUT_OF_MEMORY", None, Some(0)),
            Verdict::Done(Exit::OutOfMemory)
        );
        for crashed in ["CANCELLED by 0", "CANCELLED+", "BOOT_FAIL", "SPECIAL_EXIT"] {
            assert_eq!(
                verdict(crashed, None, Some(0)),
                Verdict::Done(Exit::Code(None)),
                "{crashed}"
            );
        }
        // A cancelled job's command may have written nothing, or an exit code: still crashed.
        assert_eq!(
            verdict("CANCELLED", Some(0), Some(0)),
            Verdict::Done(Exit::Code(None))
        );
    }

    #[test]
    fn lost_jobs_are_resubmitted() {
        for lost in ["PREEMPTED", "NODE_FAIL", "REQUEUED"] {
            assert_eq!(verdict(lost, None, None), Verdict::Resubmit, "{lost}");
        }
    }

    #[test]
    fn active_states_and_exit_codes_parse() {
        assert!(is_active("PENDING") && is_active("RUNNING") && is_active("COMPLETING"));
        assert!(!is_active("COMPLETED") && !is_active("CANCELLED by 0") && !is_active(""));
        assert_eq!(parse_exit_code("3:0"), Some(3));
        assert_eq!(parse_exit_code("0:9"), Some(0));
        assert_eq!(parse_exit_code(""), None);
    }
}
