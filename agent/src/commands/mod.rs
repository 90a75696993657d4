//! Subcommands of the `agentloop` binary.

pub mod ledger;
