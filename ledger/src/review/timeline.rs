//! The one-line text of an event in a timeline, by event kind.

use serde_json::Value;

use super::style::short;
use crate::{Event, EventKind};

/// A one-line description of an event for timelines.
pub fn summary(e: &Event) -> String {
    let s = |key: &str| {
        e.payload
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let n = |key: &str| e.payload.get(key).map_or(String::new(), |v| v.to_string());
    let text = match e.kind {
        EventKind::Propose => format!("{} (attempt {})", s("description"), n("attempt")),
        EventKind::Policy => format!("{} {} {}", s("outcome"), s("code"), s("message")),
        EventKind::Build => format!("ok={} {}", n("ok"), short(&s("commit"), 10)),
        EventKind::RunResult => format!(
            "{} {} seed {} -> {} {}",
            s("arm"),
            s("stage"),
            n("seed"),
            s("exit_status"),
            e.payload
                .get("metrics")
                .and_then(|m| m.get(
                    e.payload
                        .get("metric")
                        .and_then(Value::as_str)
                        .unwrap_or("val_bpb")
                ))
                .map_or(String::new(), |v| v.to_string())
        ),
        EventKind::Decision => format!("{} p={} {}", s("outcome"), n("p_value"), s("reason")),
        EventKind::Merge => format!("{} into {}", short(&s("commit"), 10), s("trunk_branch")),
        EventKind::Discard => s("kept_ref"),
        EventKind::Rollback => format!(
            "reverted by {}: {}",
            short(&s("revert_commit"), 10),
            s("reason")
        ),
        EventKind::Error => format!("{}: {}", s("stage"), s("message")),
        EventKind::Compare => format!(
            "{} vs {} on {}: B-A {} [{}, {}] p={} ({} pairs)",
            s("a_rev"),
            s("b_rev"),
            s("split"),
            n("mean_diff"),
            n("ci_low"),
            n("ci_high"),
            n("p_value"),
            n("n")
        ),
        _ => String::new(),
    };
    short(text.trim(), 100).to_string()
}
