//! The loop: each change (one at a time, or several with `--workers`) through propose, policy, apply, build, smoke, screen,
//! confirm, and merge or discard, with every step recorded in the ledger before the next.

pub mod agent_adapter;
pub mod artifacts;
pub mod audit;
pub mod build;
pub mod calibrate;
pub mod change;
pub mod common_control;
pub mod compare;
pub mod decision_check;
pub mod pause;
pub mod proposals;
pub mod record;
pub mod rollback;
pub mod runs;
pub mod scheduler;
pub mod seeds;
pub mod session;
pub mod trunk;
pub mod workspace;
