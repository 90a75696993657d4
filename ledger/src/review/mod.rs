//! The review commands behind `agentloop ledger list|show|verify|export`, writing text to any
//! `Write` so the CLI stays a thin wrapper and tests can read the output.

mod decision;
mod list;
mod patch;
mod show;
mod style;
mod timeline;
mod verify_report;

pub use crate::export::{export, import, Format};
pub use decision::KEEP_IF_LOWER;
pub use list::list;
pub use patch::render_patch;
pub use show::show;
pub use style::Style;
pub use timeline::summary;
pub use verify_report::{verify, write_report};
