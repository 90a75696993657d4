//! The one signal that ends a session: the wall-clock budget running out, or Ctrl-C/SIGTERM.
//! Every long wait in the loop polls it, so the loop stops within a fraction of a second.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    BudgetSpent,
    Interrupted,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::BudgetSpent => "budget_spent",
            StopReason::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug)]
struct Inner {
    requested: AtomicBool,
    why: Mutex<Option<String>>,
    deadline: Mutex<Option<Instant>>,
}

/// Cheap to clone; all clones see the same stop.
#[derive(Debug, Clone)]
pub struct Stop(Arc<Inner>);

impl Stop {
    fn with_deadline(deadline: Option<Instant>) -> Stop {
        Stop(Arc::new(Inner {
            requested: AtomicBool::new(false),
            why: Mutex::new(None),
            deadline: Mutex::new(deadline),
        }))
    }

    pub fn new() -> Stop {
        Stop::with_deadline(None)
    }

    /// Stops by itself when `left` has passed.
    pub fn after(left: Duration) -> Stop {
        Stop::with_deadline(Some(Instant::now() + left))
    }

    /// For work that must never be interrupted by the loop's stop (tests, one-off commands).
    pub fn never() -> Stop {
        Stop::new()
    }

    /// Asks the loop to stop (Ctrl-C, SIGTERM, or a test).
    pub fn request(&self, why: &str) {
        *self.0.why.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.to_string());
        self.0.requested.store(true, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.reason().is_some()
    }

    pub fn reason(&self) -> Option<StopReason> {
        if self.0.requested.load(Ordering::SeqCst) {
            return Some(StopReason::Interrupted);
        }
        match self.deadline() {
            Some(d) if Instant::now() >= d => Some(StopReason::BudgetSpent),
            _ => None,
        }
    }

    pub fn time_left(&self) -> Option<Duration> {
        self.deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    fn deadline(&self) -> Option<Instant> {
        *self.0.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the deadline (the session keeps its final verdict's time out of proposing).
    pub fn set_deadline(&self, at: Instant) {
        *self.0.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
    }

    /// Turns Ctrl-C and SIGTERM into a stop request, on a small thread of its own.
    pub fn on_signals(&self) {
        let stop = self.clone();
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(s) => s,
                        Err(_) => return,
                    };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => stop.request("SIGINT"),
                    _ = term.recv() => stop.request("SIGTERM"),
                }
            });
        });
    }
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_stops_as_budget_spent_and_request_as_interrupted() {
        let s = Stop::after(Duration::from_millis(30));
        assert_eq!(s.reason(), None);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(s.reason(), Some(StopReason::BudgetSpent));
        let s = Stop::after(Duration::from_secs(60));
        s.clone().request("SIGINT");
        assert_eq!(s.reason(), Some(StopReason::Interrupted));
        assert!(s.time_left().unwrap() > Duration::from_secs(50));
    }
}
