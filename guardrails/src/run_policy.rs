//! Run policy: the divergence watch every training run is under (the loop's process runner,
//! `agent/src/orchestrator/process.rs`, feeds it each line the run prints and kills the run
//! when it fires; timeout and memory ceiling live there too), and the circuit breaker that
//! pauses the loop after repeated failures.

use std::fmt;

use serde::{Deserialize, Serialize};

/// When a run counts as diverged, from its streamed `{"event":"step","loss":..}` lines.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DivergenceRule {
    /// Diverged when a loss exceeds this multiple of the first finite loss; `None` = only
    /// non-finite losses (NaN, inf, null) count.
    pub loss_ratio: Option<f64>,
}

impl Default for DivergenceRule {
    fn default() -> Self {
        DivergenceRule {
            loss_ratio: Some(10.0),
        }
    }
}

/// Why a run was judged diverged.
#[derive(Debug, Clone, PartialEq)]
pub enum Divergence {
    /// The loss became NaN, infinite or null.
    NonFinite { step: Option<u64> },
    /// The loss grew past `ratio` times the first loss.
    BlowUp {
        step: Option<u64>,
        loss: f64,
        first: f64,
        ratio: f64,
    },
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |step: &Option<u64>| step.map(|s| format!(" at step {s}")).unwrap_or_default();
        match self {
            Divergence::NonFinite { step } => {
                write!(f, "training loss became non-finite{}", at(step))
            }
            Divergence::BlowUp {
                step,
                loss,
                first,
                ratio,
            } => write!(
                f,
                "training loss blew up{}: {loss} is more than {ratio} times the first loss {first}",
                at(step)
            ),
        }
    }
}

/// The state of the watch over one run: feed it every output line, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct DivergenceWatch {
    rule: DivergenceRule,
    first_loss: Option<f64>,
}

impl DivergenceWatch {
    pub fn new(rule: DivergenceRule) -> Self {
        DivergenceWatch {
            rule,
            first_loss: None,
        }
    }

    /// Looks at one line of the run's output; `Some` once the loss diverged. Lines that are
    /// not step events (logs, warnings, other JSON) are ignored.
    pub fn observe(&mut self, line: &str) -> Option<Divergence> {
        let (step, loss) = step_loss(line)?;
        if !loss.is_finite() {
            return Some(Divergence::NonFinite { step });
        }
        let first = *self.first_loss.get_or_insert(loss);
        match self.rule.loss_ratio {
            Some(ratio) if first > 0.0 && loss > first * ratio => Some(Divergence::BlowUp {
                step,
                loss,
                first,
                ratio,
            }),
            _ => None,
        }
    }
}

/// Step and loss of a `{"event":"step","loss":..}` line; the loss is NaN when it is null,
/// "NaN" or "inf" (serializers write non-finite floats that way).
fn step_loss(line: &str) -> Option<(Option<u64>, f64)> {
    let value: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    if value.get("event")?.as_str()? != "step" {
        return None;
    }
    let loss = match value.get("loss")? {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(s) => s.parse::<f64>().unwrap_or(f64::NAN),
        serde_json::Value::Null => f64::NAN,
        _ => return None,
    };
    Some((value.get("step").and_then(serde_json::Value::as_u64), loss))
}

/// What the loop reports to the breaker after each proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LoopOutcome {
    /// A decision was reached (accept or reject): the loop is healthy.
    Decided,
    /// The build, smoke or a training run crashed, diverged, timed out or ran out of memory.
    Crashed { detail: String },
    /// The patch policy refused the proposal.
    PolicyRejected { code: String },
}

/// Why the breaker tripped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trip {
    pub reason: String,
}

/// Pauses the loop after `k` consecutive crashes or policy rejections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CircuitBreaker {
    pub k: usize,
    /// The current run of consecutive failures, oldest first.
    pub streak: Vec<LoopOutcome>,
}

impl CircuitBreaker {
    pub fn new(k: usize) -> Self {
        CircuitBreaker {
            k: k.max(1),
            streak: Vec::new(),
        }
    }

    /// Records one outcome; returns a trip when the streak reaches `k` (the streak then resets,
    /// so a resumed loop gets `k` fresh attempts).
    pub fn record(&mut self, outcome: LoopOutcome) -> Option<Trip> {
        if outcome == LoopOutcome::Decided {
            self.streak.clear();
            return None;
        }
        self.streak.push(outcome);
        if self.streak.len() < self.k {
            return None;
        }
        let crashes = self
            .streak
            .iter()
            .filter(|o| matches!(o, LoopOutcome::Crashed { .. }))
            .count();
        let rejections = self.streak.len() - crashes;
        let last = match self.streak.last() {
            Some(LoopOutcome::Crashed { detail }) => format!("crash: {detail}"),
            Some(LoopOutcome::PolicyRejected { code }) => format!("policy rejection: {code}"),
            _ => String::new(),
        };
        let reason = format!(
            "paused after {} consecutive failures ({crashes} crashes, {rejections} policy rejections); last {last}",
            self.streak.len()
        );
        self.streak.clear();
        Some(Trip { reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(loss: &str) -> String {
        format!("{{\"event\":\"step\",\"step\":7,\"loss\":{loss}}}")
    }

    #[test]
    fn non_finite_losses_diverge_whatever_the_ratio() {
        for loss in ["null", "\"NaN\"", "\"inf\"", "\"-inf\""] {
            let mut w = DivergenceWatch::new(DivergenceRule { loss_ratio: None });
            assert_eq!(w.observe(&step("4.0")), None);
            assert_eq!(
                w.observe(&step(loss)),
                Some(Divergence::NonFinite { step: Some(7) }),
                "{loss}"
            );
        }
    }

    #[test]
    fn a_loss_past_the_ratio_of_the_first_diverges() {
        let mut w = DivergenceWatch::new(DivergenceRule::default());
        assert_eq!(w.observe(&step("4.0")), None);
        assert_eq!(w.observe(&step("39.0")), None, "below 10x the first loss");
        assert_eq!(w.observe(&step("1.0")), None);
        let d = w.observe(&step("41.0")).unwrap();
        assert!(matches!(d, Divergence::BlowUp { first, .. } if first == 4.0));
        assert!(d.to_string().contains("blew up at step 7"), "{d}");
        // Without a ratio only non-finite losses count.
        let mut w = DivergenceWatch::new(DivergenceRule { loss_ratio: None });
        w.observe(&step("4.0"));
        assert_eq!(w.observe(&step("4000.0")), None);
    }

    #[test]
    fn other_lines_are_ignored() {
        let mut w = DivergenceWatch::new(DivergenceRule::default());
        for line in [
            "warning: loss is NaN somewhere",
            "{\"event\":\"done\",\"loss\":null}",
            "{\"event\":\"step\",\"lr\":0.1}",
            "{\"event\":\"step\",\"loss\":[1]}",
            "",
        ] {
            assert_eq!(w.observe(line), None, "{line}");
        }
    }
}
