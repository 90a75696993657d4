//! Appending the loop's events: typed payloads from `agentloop_ledger::payload`, one session.

use agentloop_ledger::payload::EventPayload;
use agentloop_ledger::{Appended, Ledger, NewEvent};
use anyhow::{Context, Result};
use std::sync::Mutex;

use crate::progress::Progress;

pub struct Recorder {
    pub ledger: Ledger,
    pub session: String,
    /// Shown the session's events as they are appended (`agentloop start`'s live display).
    progress: Option<Mutex<Progress>>,
}

impl Recorder {
    pub fn new(ledger: Ledger, session: &str) -> Recorder {
        Recorder {
            ledger,
            session: session.to_string(),
            progress: None,
        }
    }

    /// Shows progress from now on, starting from what the ledger already holds (a resume).
    pub fn with_progress(mut self, mut progress: Progress) -> Result<Recorder> {
        progress.catch_up(&self.ledger.events_for_session(&self.session)?)?;
        self.progress = Some(Mutex::new(progress));
        Ok(self)
    }

    pub fn append<P: EventPayload>(&self, change: Option<&str>, payload: &P) -> Result<Appended> {
        let payload = serde_json::to_value(payload).context("serializing an event payload")?;
        self.ledger
            .append(NewEvent {
                kind: P::KIND,
                session: self.session.clone(),
                change: change.map(str::to_string),
                payload,
            })
            .with_context(|| format!("recording a {} event in the ledger", P::KIND))
            .inspect(|appended| {
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
