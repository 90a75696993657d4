//! Exit codes, named once. The trainer contract (ARCHITECTURE.md §2: what a target's train
//! command exits with) and the `agentloop` CLI share one convention for 0, 1 and 2, so a
//! script reads both the same way.

/// Success (a train run wrote its metrics; a command did what it was asked).
pub const OK: i32 = 0;
/// A failure: the train run crashed, or a command failed (the error is printed).
pub const FAILED: i32 = 1;
/// Bad input or usage: nothing ran (a train run writes no metrics).
pub const USAGE: i32 = 2;
/// Trainer contract: the loss went NaN or blew up, and the run stopped itself.
pub const DIVERGED: i32 = 3;
/// Trainer contract: the run hit its own time limit.
pub const TIMED_OUT: i32 = 4;
/// CLI: stopped by Ctrl-C (128 + SIGINT, the shell's convention); the session can resume.
pub const INTERRUPTED: i32 = 130;
