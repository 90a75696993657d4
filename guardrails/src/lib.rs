//! Guardrails for the agentloop optimization loop.
//!
//! - [`exit_code`]: the exit codes of the trainer contract and of the CLI, named once.
//! - [`target`]: parses a target's `agentloop.toml` (what may change, how to build and train).
//! - [`policy`]: the pure patch policy (paths, size, forbidden Rust constructs).
//! - [`run_policy`]: the divergence watch over a run's streamed losses, and the circuit breaker.
//! - [`decision`]: calibration, screening and the two-stage paired test.
//! - [`process`]: the screen + stages driver as a pure state machine, shared by loop and simulation.
//! - [`fdr`]: LORD++ online false-discovery-rate control and session risk.
//! - [`audit`]: holdout audits and the bisection plan over merged changes.
//! - [`simulate`]: replays the exact decision code on synthetic noise to prove the rule.

pub mod audit;
pub mod decision;
pub mod exit_code;
pub mod fdr;
mod forbidden_name;
pub mod guards;
pub mod policy;
pub mod process;
pub mod run_policy;
mod rust_scan;
pub mod simulate;
pub mod stats;
pub mod target;
