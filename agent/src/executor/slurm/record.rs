//! `out/slurm-job.json`: which job a run was submitted as, written before the loop waits for
//! it, so that a loop that died meanwhile finds its job again instead of submitting another.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub const RECORD: &str = "slurm-job.json";

/// Where a run's job stands, as far as the loop knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Submitted; nobody has taken its result yet.
    Submitted,
    /// Its result was handed to the loop (which records it in the ledger).
    Collected,
    /// The loop cancelled it (stop or its own timeout): not a result to pick up later.
    Cancelled,
}

/// A job of this run that the cluster lost and that was submitted again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LostJob {
    pub job_id: String,
    pub state: String,
    pub ended_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: String,
    /// RFC 3339, UTC.
    pub submitted_at: String,
    /// SHA-256 of `job.sh`: the same run renders the same script.
    pub script_sha256: String,
    pub phase: Phase,
    /// Earlier jobs of this run lost to preemption or node failures, oldest first.
    #[serde(default)]
    pub retries: Vec<LostJob>,
}

impl JobRecord {
    pub fn new(job_id: String, script_sha256: String) -> JobRecord {
        JobRecord {
            job_id,
            submitted_at: now(),
            script_sha256,
            phase: Phase::Submitted,
            retries: Vec::new(),
        }
    }

    pub fn path(out: &Path) -> PathBuf {
        out.join(RECORD)
    }

    /// The record in `out`, if there is a readable one (a torn or foreign file counts as none:
    /// the run is then submitted afresh).
    pub fn load(out: &Path) -> Option<JobRecord> {
        let bytes = std::fs::read(Self::path(out)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Written whole or not at all (temp file, fsync, rename).
    pub fn save(&self, out: &Path) -> anyhow::Result<()> {
        let path = Self::path(out);
        let tmp = out.join(format!("{RECORD}.tmp"));
        let text = serde_json::to_vec_pretty(self)?;
        (|| -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })()
        .with_context(|| format!("writing {}", path.display()))
    }
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What to do about a run given the record its directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    /// A job of this very run (same script) was submitted and its result never taken:
    /// wait for it or collect it.
    Reattach(String),
    /// Submit a new job (after clearing the run directory).
    Submit,
}

/// Re-attach only to a job that was submitted for the same script and whose result nobody
/// took: a collected one was recorded (running the same run again is a retry), a cancelled
/// one was stopped on purpose.
pub fn decide(record: Option<&JobRecord>, script_sha256: &str) -> Attach {
    match record {
        Some(r) if r.script_sha256 == script_sha256 && r.phase == Phase::Submitted => {
            Attach::Reattach(r.job_id.clone())
        }
        _ => Attach::Submit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reattach_only_to_an_uncollected_job_of_the_same_script() {
        let mut r = JobRecord::new("42".into(), "aaa".into());
        assert_eq!(decide(Some(&r), "aaa"), Attach::Reattach("42".into()));
        assert_eq!(decide(Some(&r), "bbb"), Attach::Submit, "another script");
        assert_eq!(decide(None, "aaa"), Attach::Submit);
        r.phase = Phase::Collected;
        assert_eq!(decide(Some(&r), "aaa"), Attach::Submit, "already recorded");
        r.phase = Phase::Cancelled;
        assert_eq!(
            decide(Some(&r), "aaa"),
            Attach::Submit,
            "stopped on purpose"
        );
    }

    #[test]
    fn record_round_trips_and_a_torn_file_counts_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = JobRecord::new("7".into(), "abc".into());
        r.retries.push(LostJob {
            job_id: "6".into(),
            state: "PREEMPTED".into(),
            ended_at: now(),
        });
        r.save(dir.path()).unwrap();
        assert_eq!(JobRecord::load(dir.path()), Some(r));
        assert!(!dir.path().join("slurm-job.json.tmp").exists());
        std::fs::write(JobRecord::path(dir.path()), "{\"job_id\": \"7\", \"subm").unwrap();
        assert_eq!(JobRecord::load(dir.path()), None);
    }
}
