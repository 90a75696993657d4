//! The screen + stages driver as a pure state machine.
//!
//! The loop and the simulation both drive a [`DecisionProcess`]: ask [`DecisionProcess::next_request`]
//! which runs are needed, run them, feed them back with [`DecisionProcess::add_result`], until it
//! returns [`Request::Done`]. Crash handling (the documented contract):
//! - a crashed (or diverged, timed-out, out-of-memory) **candidate** run ends the decision as
//!   [`Verdict::Crash`];
//! - a crashed **baseline** run says nothing about the candidate: the loop retries it on the same
//!   seed and submits the pair only when the baseline run succeeded. Submitting a crashed
//!   baseline is refused ([`ProcessError::BaselineCrashed`]) and leaves the state unchanged.
//!   The same holds for a trunk run v3 asks for to fill a common seed.
//!
//! Rule v3 screens against the trunk's *common control* ([`CommonControl`]): a fixed list of
//! seeds with the trunk's cached run on each. A screening request names the seed
//! ([`Arm::Common`]) and whether the trunk's run on it must be made too (a missing cached value
//! is filled lazily); each screening run thus yields a pair for the price of one run.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::decision::{
    confirm_look, confirm_stage, screen_greedy, screen_paired, screen_runs, Calibration,
    DecisionError, DecisionRule, ScreenOutcome, ScreenRule, ScreenVerdict, StageOutcome,
    StageVerdict,
};

mod recompute;
mod run;
mod types;

pub use recompute::*;
pub use run::*;
pub use types::*;
