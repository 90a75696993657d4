//! `agentloop status` and the progress display's words: a compact view of a [`SessionSummary`],
//! as text for people and as JSON for scripts.

use agentloop_ledger::payload::Pause;

pub use super::summary::Status;
use super::summary::{guard_tag, Counts, SessionSummary};

impl Status {
    /// The same numbers as [`super::summary::Replay::status`], taken from a full summary.
    pub fn of(s: &SessionSummary) -> Status {
        Status {
            session: s.session.clone(),
            state: if s.ended.is_some() {
                "ended"
            } else {
                "running"
            },
            end_reason: s.ended.clone(),
            trunk_branch: s.trunk_branch.clone(),
            trunk_commit: s.trunk_commit.clone(),
            metric: s.metric.clone(),
            budget_s: s.budget_s,
            spent_s: s.spent_s,
            left_s: s.left_s,
            workers: s.workers,
            slots: s.slots,
            sandbox: s.sandbox.clone(),
            counts: s.counts.clone(),
            trunk_metric: s.trunk_metric,
            best_trunk_metric: s.best_trunk_metric,
            baseline_metric: s.baseline_metric,
            current: s.current.clone(),
            costs: s.costs.clone(),
            waiting: s.waiting.clone(),
            verdict: s.verdict.clone(),
            overhead_share: None,
            decisions_per_hour: None,
            overhead_s_per_decision: None,
            guard_rejects: s
                .changes
                .iter()
                .filter_map(|c| c.reason.as_deref().and_then(guard_tag))
                .collect(),
            last_seq: s.last_seq,
        }
        .with_rates()
    }
}

pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn metric(v: Option<f64>) -> String {
    v.map_or_else(|| "not measured yet".into(), |v| format!("{v:.6}"))
}

/// "2 accepted, 1 rejected, 1 crashed, ..." (zero counts beyond the first three left out).
pub fn counts_line(c: &Counts) -> String {
    let mut parts = vec![
        format!("{} accepted", c.accepted),
        format!("{} rejected", c.rejected),
        format!("{} crashed", c.crashed),
    ];
    for (n, what) in [
        (c.policy_rejected, "policy-rejected"),
        (c.build_failed, "build-failed"),
        (c.rolled_back, "rolled back"),
        (c.superseded, "superseded (re-tested on a newer trunk)"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    parts.join(", ")
}

/// The current change and its stage, or what the loop is between.
pub fn current_line(s: &Status) -> String {
    match (&s.current, s.state) {
        (Some(c), _) => format!("{} at {}: {}", c.change, c.stage, c.description),
        (None, "ended") => format!("ended ({})", s.end_reason.as_deref().unwrap_or("?")),
        (None, _) => "between changes".into(),
    }
}

/// One line for logs and the progress bar's message.
pub fn one_line(s: &Status) -> String {
    format!(
        "{} | best {} {} | {} | {}",
        current_line(s),
        s.metric,
        s.best_trunk_metric
            .map_or_else(|| "-".into(), |v| format!("{v:.6}")),
        counts_line(&s.counts),
        format_duration(s.spent_s) + " of " + &format_duration(s.budget_s),
    )
}

/// `agentloop status` as text.
pub fn text(s: &Status) -> String {
    let state = match &s.end_reason {
        Some(r) => format!("ended: {r}"),
        None => "running (or killed; `agentloop start` resumes it)".into(),
    };
    let c = &s.costs;
    let mut out = vec![
        format!("session   {} ({state})", s.session),
        format!("trunk     {} at {}", s.trunk_branch, s.trunk_commit),
        format!(
            "budget    {} used of {} ({} left)",
            format_duration(s.spent_s),
            format_duration(s.budget_s),
            format_duration(s.left_s)
        ),
        format!(
            "changes   {} proposed: {}",
            s.counts.proposed,
            counts_line(&s.counts)
        ),
        format!(
            "{:<9} trunk {}, best {}, baseline {}",
            s.metric,
            metric(s.trunk_metric),
            metric(s.best_trunk_metric),
            metric(s.baseline_metric)
        ),
        format!(
            "time      {} training ({} runs), {} building, {} lost to crashes",
            format_duration(c.training_s),
            c.runs,
            format_duration(c.build_s),
            format_duration(c.crash_lost_s)
        ),
        format!(
            "llm       {} prompt + {} completion tokens, ${:.4}",
            c.prompt_tokens, c.completion_tokens, c.cost_usd
        ),
    ];
    if c.base_build_s > 0.0 {
        out.push(format!(
            "setup     {} building the base commit, before the budget started",
            format_duration(c.base_build_s)
        ));
    }
    if let (Some(o), Some(d)) = (s.overhead_share, s.decisions_per_hour) {
        out.push(format!(
            "pace      {d:.1} decisions/hour; loop overhead {:.1}% of wall time",
            o * 100.0
        ));
    }
    if !s.guard_rejects.is_empty() {
        out.push(format!(
            "guards    {} accept(s) turned into rejects: {}",
            s.guard_rejects.len(),
            s.guard_rejects.join(", ")
        ));
    }
    if let (Some(w), None) = (&s.waiting, &s.end_reason) {
        out.push(format!("waiting   {}", waiting_line(w, chrono::Utc::now())));
    }
    if let Some(v) = &s.verdict {
        out.push(format!("verdict   {v} (base vs final trunk)"));
    }
    if let Some(sandbox) = &s.sandbox {
        out.push(format!("sandbox   {}", sandbox_line(sandbox)));
    }
    out.push(format!("current   {}", current_line(s)));
    out.join("\n") + "\n"
}

/// "for the provider since 03:12 (HTTP 503), next try in 4m" (local time of day).
pub fn waiting_line(w: &Pause, now: chrono::DateTime<chrono::Utc>) -> String {
    let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    let since = at(&w.since).map_or_else(
        || w.since.clone(),
        |t| t.with_timezone(&chrono::Local).format("%H:%M").to_string(),
    );
    let next = match at(&w.until).map(|t| (t.with_timezone(&chrono::Utc) - now).num_seconds()) {
        Some(s) if s > 0 => format!("next try in {}", short_duration(s as u64)),
        _ => "trying again now".to_string(),
    };
    if w.stage == Pause::BREAKER_PAUSE {
        format!(
            "paused by the circuit breaker since {since} (trip {}: {}), {next}",
            w.count, w.message
        )
    } else {
        let why = match w.status {
            Some(code) => format!("HTTP {code}"),
            None => w.message.chars().take(80).collect(),
        };
        format!(
            "for the provider since {since} ({why}), {next} ({} failure{} in a row)",
            w.count,
            if w.count == 1 { "" } else { "s" }
        )
    }
}

/// 45s, 4m, 2h05m: minutes rounded up, as a person reads a countdown.
fn short_duration(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s.div_ceil(60)),
        _ => {
            let m = s.div_ceil(60);
            format!("{}h{:02}m", m / 60, m % 60)
        }
    }
}

/// "on (Landlock ABI 7, network netns), eval step separated", and what is weaker.
pub fn sandbox_line(v: &serde_json::Value) -> String {
    let enforced = v.get("enforced").and_then(serde_json::Value::as_bool) == Some(true);
    let mut line = if enforced {
        format!(
            "on (Landlock ABI {}, network {})",
            v.get("landlock_abi").map_or("?".into(), |a| a.to_string()),
            v.get("network").and_then(|n| n.as_str()).unwrap_or("?")
        )
    } else {
        "OFF (--no-sandbox)".to_string()
    };
    if v.get("eval_separated").and_then(serde_json::Value::as_bool) == Some(true) {
        line.push_str(", eval step separated");
    }
    if let Some(w) = v.get("weaker").and_then(|w| w.as_str()) {
        line.push_str(&format!("; WEAKER: {w}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pause(stage: &str, status: Option<u16>) -> Pause {
        Pause {
            stage: stage.into(),
            message: "openai failed with HTTP 503 on all 5 attempts: overloaded".into(),
            since: "2026-01-01T03:12:00Z".into(),
            wait_s: 240.0,
            until: "2026-01-01T03:20:00Z".into(),
            count: 3,
            status,
            for_change: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn waiting_line_says_since_when_why_and_when_next() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T03:16:10Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let since = chrono::DateTime::parse_from_rfc3339("2026-01-01T03:12:00Z")
            .unwrap()
            .with_timezone(&chrono::Local)
            .format("%H:%M")
            .to_string();
        assert_eq!(
            waiting_line(&pause(Pause::PROVIDER_WAIT, Some(503)), now),
            format!(
                "for the provider since {since} (HTTP 503), next try in 4m (3 failures in a row)"
            )
        );
        let line = waiting_line(&pause(Pause::PROVIDER_WAIT, None), now);
        assert!(line.contains("(openai failed with HTTP 503"), "{line}");
        let later = now + chrono::Duration::minutes(10);
        assert!(waiting_line(&pause(Pause::PROVIDER_WAIT, Some(503)), later)
            .contains("trying again now"));
        let line = waiting_line(&pause(Pause::BREAKER_PAUSE, None), now);
        assert!(
            line.starts_with(&format!(
                "paused by the circuit breaker since {since} (trip 3"
            )),
            "{line}"
        );
        assert_eq!(short_duration(7199), "2h00m");
        assert_eq!(short_duration(61), "2m");
    }
}
