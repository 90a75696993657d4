//! Appending the loop's events: typed payloads from `agentloop_ledger::payload`, one session.
//! The recorder folds each event it appends into the session's state (the ledger's one fold),
//! so the loop reads its state from memory instead of replaying the session.

use agentloop_ledger::payload::EventPayload;
use agentloop_ledger::state::SessionState;
use agentloop_ledger::{Appended, Ledger, NewEvent};
use anyhow::{Context, Result};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::progress::Progress;

/// What the recorders of a session's threads share: the progress display and the state.
#[derive(Clone)]
pub struct SharedProgress {
    progress: Option<Arc<Mutex<Progress>>>,
    state: Arc<Mutex<Option<SessionState>>>,
}

pub struct Recorder {
    pub ledger: Ledger,
    pub session: String,
    /// Shown the session's events as they are appended (`agentloop start`'s live display).
    /// Shared by the recorders of a session's worker threads: each shows what it appends.
    progress: Option<Arc<Mutex<Progress>>>,
    /// The session as its events tell it, folded as they are appended (loaded on first use).
    /// Held while appending, so the events of all threads fold in seq order.
    state: Arc<Mutex<Option<SessionState>>>,
}

impl Recorder {
    pub fn new(ledger: Ledger, session: &str) -> Recorder {
        Recorder {
            ledger,
            session: session.to_string(),
            progress: None,
            state: Arc::default(),
        }
    }

    /// The session's state now: every event recorded so far, folded.
    pub fn state(&self) -> Result<SessionState> {
        let mut state = self.lock_state();
        if state.is_none() {
            *state = Some(SessionState::load(&self.ledger, &self.session)?);
        }
        Ok(state.clone().expect("loaded above"))
    }

    fn lock_state(&self) -> MutexGuard<'_, Option<SessionState>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Folds the events just appended. A gap (an event appended by another recorder of the
    /// ledger) or a payload the fold refuses drops the state: the next read replays the session.
    fn fold(&self, state: &mut Option<SessionState>, appended: &[Appended]) {
        let Some(current) = state.as_mut() else {
            return;
        };
        for a in appended {
            let next = match self.ledger.event(a.seq) {
                Ok(Some(e)) if e.seq == current.last_seq + 1 || e.session != self.session => {
                    current.apply(&e).map_err(anyhow::Error::from)
                }
                Ok(_) => Err(anyhow::anyhow!("event {} does not follow the state", a.seq)),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = next {
                tracing::debug!("session state replayed on next read: {e:#}");
                *state = None;
                return;
            }
        }
    }

    /// Shows progress from now on, starting from what the ledger already holds (a resume).
    pub fn with_progress(mut self, mut progress: Progress) -> Result<Recorder> {
        progress.catch_up(&self.ledger.events_for_session(&self.session)?)?;
        self.progress = Some(Arc::new(Mutex::new(progress)));
        Ok(self)
    }

    /// The progress display, to hand to another thread's recorder of the same session.
    pub fn shared_progress(&self) -> SharedProgress {
        SharedProgress {
            progress: self.progress.clone(),
            state: self.state.clone(),
        }
    }

    /// A recorder for another thread of the session: its own ledger connection (a connection
    /// is not shared between threads), the same progress display (each event shown once, by
    /// the recorder that appended it).
    pub fn on_thread(ledger: Ledger, session: &str, progress: SharedProgress) -> Recorder {
        Recorder {
            ledger,
            session: session.to_string(),
            progress: progress.progress,
            state: progress.state,
        }
    }

    /// Events that must land together or not at all (a kill between them loses neither).
    pub fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>> {
        let mut state = self.lock_state();
        let appended = self
            .ledger
            .append_batch(events)
            .context("recording events in the ledger")?;
        self.fold(&mut state, &appended);
        drop(state);
        for a in &appended {
            self.show(a.seq);
        }
        pause_after_event();
        Ok(appended)
    }

    /// A typed event of this session, for `append_batch`.
    pub fn event<P: EventPayload>(&self, change: Option<&str>, payload: &P) -> Result<NewEvent> {
        NewEvent::typed(self.session.clone(), change.map(str::to_string), payload)
            .context("serializing an event payload")
    }

    pub fn append<P: EventPayload>(&self, change: Option<&str>, payload: &P) -> Result<Appended> {
        let payload = serde_json::to_value(payload).context("serializing an event payload")?;
        let mut state = self.lock_state();
        let appended = self
            .ledger
            .append(NewEvent {
                kind: P::KIND,
                session: self.session.clone(),
                change: change.map(str::to_string),
                payload,
            })
            .with_context(|| format!("recording a {} event in the ledger", P::KIND))?;
        self.fold(&mut state, std::slice::from_ref(&appended));
        drop(state);
        Ok(appended).inspect(|appended| {
            self.show(appended.seq);
            pause_after_event()
        })
    }

    /// A display problem never stops the loop: the ledger holds the record either way.
    fn show(&self, seq: i64) {
        let Some(progress) = &self.progress else {
            return;
        };
        if let Ok(Some(event)) = self.ledger.event(seq) {
            let mut progress = progress.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = progress.record(&event) {
                tracing::warn!("progress display: {e}");
            }
        }
    }

    /// The `seq:hash` the next commit trailer anchors to.
    pub fn head_trailer(&self) -> Result<String> {
        let head = self
            .ledger
            .head()?
            .context("the ledger is empty, there is no head to anchor")?;
        Ok(agentloop_ledger::trailer::format(&head))
    }
}

/// `AGENTLOOP_PAUSE_AFTER_EVENT_MS`: sleep after every recorded event. Slow motion for crash
/// testing, so a kill can land right after any given event; unset (no pause) in normal use.
fn pause_after_event() {
    static PAUSE: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    let pause = PAUSE.get_or_init(|| {
        std::env::var("AGENTLOOP_PAUSE_AFTER_EVENT_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(std::time::Duration::from_millis)
    });
    if let Some(p) = pause {
        std::thread::sleep(*p);
    }
}
