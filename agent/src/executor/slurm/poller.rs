//! One `squeue` call answers every thread watching a job of this executor: with many runs in
//! flight the controller sees a few calls a second, not one per job per poll.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::cli::{self, Queue, SlurmError};

/// An answer this recent is good enough for any watcher.
const FRESH: Duration = Duration::from_millis(250);
/// A job nobody asked about for this long is no longer watched (its run has ended).
const FORGET: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct QueuePoller {
    state: Mutex<Snapshot>,
}

#[derive(Default)]
struct Snapshot {
    /// Job ids, with when someone last asked about each.
    asked: HashMap<String, Instant>,
    taken: Option<Instant>,
    states: HashMap<String, Queue>,
}

impl QueuePoller {
    /// Where `job_id` stands: from the last squeue call if it is fresh and covered this job,
    /// else from a new call about every job watched.
    pub fn state(&self, job_id: &str) -> Result<Queue, SlurmError> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        s.asked.insert(job_id.to_string(), now);
        let fresh = s.taken.is_some_and(|t| now.duration_since(t) < FRESH);
        if let (true, Some(q)) = (fresh, s.states.get(job_id)) {
            return Ok(q.clone());
        }
        s.asked.retain(|_, at| now.duration_since(*at) < FORGET);
        let mut ids: Vec<String> = s.asked.keys().cloned().collect();
        ids.sort();
        s.states = cli::queue(&ids)?;
        s.taken = Some(Instant::now());
        Ok(s.states.get(job_id).cloned().unwrap_or(Queue::Left(None)))
    }
}
