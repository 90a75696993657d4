//! One module per subcommand: argument handling and output; the work is in `orchestrator`.

pub mod compare;
pub mod init;
pub mod ledger;
pub mod report;
pub mod rollback;
pub mod simulate;
pub mod start;
pub mod status;
