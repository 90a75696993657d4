//! agentloop's audit trail: an append-only, hash-chained SQLite event log.
//!
//! Every step of the loop (proposal, policy check, build, run, decision, merge, rollback, ...)
//! is appended as an [`Event`] whose entry hash chains it to the one before, so that
//! [`Ledger::verify`] can prove nobody altered, removed or reordered the record. Derived tables
//! (`changes`, `runs`, `decisions`, `merges`, `rollbacks`) are kept current on append and can be
//! rebuilt from the events alone with [`Ledger::rebuild_views`].

pub mod canonical;
pub mod chain;
pub mod change_id;
mod error;
mod event;
pub mod export;
mod git_anchor;
pub mod head_ref;
mod kind;
mod ledger;
pub mod payload;
pub mod redact;
pub mod review;
mod schema;
pub mod state;
pub mod trailer;
mod verify;
mod views;

pub use change_id::new_change_id;
pub use error::{LedgerError, Result};
pub use event::Event;
pub use kind::EventKind;
pub use ledger::{Appended, ChainHead, Ledger, NewEvent};
pub use verify::{verify_path, Problem, RecomputeHook, VerifyOptions, VerifyReport};
pub use views::{ChangeRow, ChangeStatus, DecisionRow, RunRow};
