//! Test support shared with the end-to-end tests (cargo feature `testing`).

pub mod scripted_server;

pub use scripted_server::{CannedReply, RecordedRequest, ScriptedServer};
