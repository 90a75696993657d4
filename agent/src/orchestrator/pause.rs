//! Waiting instead of ending, so a night survives a provider outage or a bad streak: the
//! `[loop]` settings, the provider backoff, and the wait itself. Every wait is recorded first
//! (a [`Pause`] payload), then slept while polling the stop, so Ctrl-C and the budget still end
//! the loop within a fraction of a second, and a kill mid-wait loses nothing.
//!
//! ```toml
//! [loop]
//! provider_wait_min = "30s"   # first wait after the client's own quick retries gave up
//! provider_wait_max = "10m"   # the backoff doubles up to this (a Retry-After may ask for more)
//! breaker_after = 5           # crashed / refused / unbuildable changes in a row that trip the breaker
//! breaker_cooldown = "15m"    # the pause after a trip
//! breaker_trips = 3           # the trip that ends the session
//! ```

use std::time::Duration;

use agentloop_guardrails::target::TargetSpec;
use agentloop_ledger::payload::Pause;
use anyhow::{Context as _, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use serde::{Deserialize, Deserializer};
use serde_json::Map;

use super::proposals::ProviderFailure;
use super::record::Recorder;
use crate::executor::budget::Stop;
use agentloop_ledger::state::SessionState;

/// The `[loop]` table of agentloop.toml.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoopConfig {
    #[serde(deserialize_with = "duration")]
    pub provider_wait_min: Duration,
    #[serde(deserialize_with = "duration")]
    pub provider_wait_max: Duration,
    /// Consecutive crashed, policy-rejected or unbuildable changes that trip the breaker
    /// (0: never).
    pub breaker_after: u32,
    #[serde(deserialize_with = "duration")]
    pub breaker_cooldown: Duration,
    /// The trip that ends the session (1: the first trip ends it, as before).
    pub breaker_trips: u32,
    /// Fresh-seed pairs of the final verdict, base vs final trunk on holdout (0: none).
    pub verdict_pairs: u32,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            provider_wait_min: Duration::from_secs(30),
            provider_wait_max: Duration::from_secs(600),
            breaker_after: 5,
            breaker_cooldown: Duration::from_secs(900),
            breaker_trips: 3,
            // ~1.5 minutes with the default target's ~4.5 s runs on two slots.
            verdict_pairs: 8,
        }
    }
}

impl LoopConfig {
    pub fn from_target(target: &TargetSpec) -> Result<LoopConfig> {
        Self::from_extra(&target.extra)
    }

    /// From the tables of agentloop.toml that the guardrails crate passes through.
    pub fn from_extra(extra: &toml::Table) -> Result<LoopConfig> {
        let Some(table) = extra.get("loop") else {
            return Ok(LoopConfig::default());
        };
        let cfg: LoopConfig = table.clone().try_into().map_err(|e: toml::de::Error| {
            anyhow::anyhow!("[loop] of agentloop.toml: {}", e.message())
        })?;
        anyhow::ensure!(
            !cfg.provider_wait_min.is_zero() && cfg.provider_wait_min <= cfg.provider_wait_max,
            "[loop] of agentloop.toml: provider_wait_min must be above zero and at most provider_wait_max"
        );
        anyhow::ensure!(
            cfg.breaker_trips >= 1,
            "[loop] of agentloop.toml: breaker_trips must be at least 1"
        );
        Ok(cfg)
    }

    /// The wait before asking the provider again after `failures` failures in a row:
    /// `provider_wait_min * 2^(failures-1)` capped at `provider_wait_max`, with equal jitter
    /// (half fixed, half random), and never shorter than the provider's `Retry-After`.
    pub fn provider_backoff(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .provider_wait_min
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(self.provider_wait_max);
        let half = exp / 2;
        let jittered = half + half.mul_f64(rand::rng().random::<f64>());
        jittered.max(retry_after.unwrap_or_default())
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a duration ({e})")))
}

/// Sleeps `wait` unless the loop is stopped first; `true` when the whole wait passed.
pub fn sleep(stop: &Stop, wait: Duration) -> bool {
    let end = std::time::Instant::now() + wait;
    loop {
        if stop.is_stopped() {
            return false;
        }
        let now = std::time::Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

/// Records a provider wait, then waits. `streak`: the wait already recorded for this streak
/// of failures (a resumed session continues its streak). `false` when the loop was stopped.
pub fn wait_for_provider(
    rec: &Recorder,
    stop: &Stop,
    cfg: &LoopConfig,
    change: &str,
    streak: Option<&Pause>,
    failure: &ProviderFailure,
) -> Result<bool> {
    let now = Utc::now();
    let count = streak.map_or(0, |p| p.count) + 1;
    let since = streak.map_or_else(|| rfc3339(now), |p| p.since.clone());
    let wait = cfg.provider_backoff(count, failure.retry_after);
    let pause = Pause {
        stage: Pause::PROVIDER_WAIT.into(),
        message: failure.message.clone(),
        since,
        wait_s: wait.as_secs_f64(),
        until: rfc3339(now + chrono::Duration::from_std(wait).unwrap_or_default()),
        count,
        status: failure.status,
        for_change: Some(change.to_string()),
        extra: Map::new(),
    };
    rec.append(None, &pause)
        .context("recording a wait for the provider")?;
    tracing::warn!(
        "the provider failed ({}); failure {count} in a row, asking again in {}",
        failure.message,
        humantime::format_duration(Duration::from_secs(wait.as_secs()))
    );
    Ok(sleep(stop, wait))
}

/// Records a breaker pause (trip `trip`), then waits the cool-down. `false` when stopped.
pub fn breaker_pause(
    rec: &Recorder,
    stop: &Stop,
    cfg: &LoopConfig,
    trip: u32,
    why: &str,
) -> Result<bool> {
    let now = Utc::now();
    let wait = cfg.breaker_cooldown;
    let pause = Pause {
        stage: Pause::BREAKER_PAUSE.into(),
        message: why.to_string(),
        since: rfc3339(now),
        wait_s: wait.as_secs_f64(),
        until: rfc3339(now + chrono::Duration::from_std(wait).unwrap_or_default()),
        count: trip,
        status: None,
        for_change: None,
        extra: Map::new(),
    };
    rec.append(None, &pause)
        .context("recording a circuit-breaker pause")?;
    tracing::warn!(
        "circuit breaker (trip {trip} of {}): {why}; pausing {}",
        cfg.breaker_trips,
        humantime::format_duration(wait)
    );
    Ok(sleep(stop, wait))
}

/// What to do when the breaker has tripped: pause (trip `trip`), or end the session after
/// `breaker_trips` trips with a reason that says what to look at.
pub enum Trip {
    Pause { trip: u32, why: String },
    End(String),
}

pub fn on_trip(history: &SessionState, cfg: &LoopConfig, why: String) -> Trip {
    let trip = history.breaker_pauses.len() as u32 + 1;
    if trip < cfg.breaker_trips {
        return Trip::Pause { trip, why };
    }
    Trip::End(format!(
        "circuit_breaker: {why} (trip {trip} of {}; each pause changed nothing). Look at \
         `agentloop ledger list --status crashed` and `--status policy-rejected` and \
         `agentloop ledger show <change>`: a build or train command that fails whatever \
         the change, a target with too little editable room, or a model that cannot follow \
         the patch format ([agent] model)",
        cfg.breaker_trips
    ))
}

/// A breaker pause a killed loop did not finish: waits out the rest of it. `false` when
/// stopped.
pub fn finish_breaker_pause(history: &SessionState, stop: &Stop) -> bool {
    let Some((seq, pause)) = history.breaker_pauses.last() else {
        return true;
    };
    if history.changes.iter().any(|c| c.first_seq > *seq) {
        return true;
    }
    let left = DateTime::parse_from_rfc3339(&pause.until)
        .ok()
        .and_then(|t| (t.with_timezone(&Utc) - Utc::now()).to_std().ok())
        .unwrap_or_default();
    sleep(stop, left)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_backoff_doubles_to_the_cap_and_honours_retry_after() {
        let cfg = LoopConfig {
            provider_wait_min: Duration::from_secs(10),
            provider_wait_max: Duration::from_secs(60),
            ..LoopConfig::default()
        };
        for (failures, full) in [(1, 10), (2, 20), (3, 40), (4, 60), (30, 60)] {
            let d = cfg.provider_backoff(failures, None).as_secs_f64();
            assert!(
                d >= full as f64 / 2.0 && d <= full as f64,
                "failure {failures}: {d}s"
            );
        }
        let d = cfg.provider_backoff(1, Some(Duration::from_secs(300)));
        assert_eq!(d, Duration::from_secs(300), "Retry-After is a floor");
    }

    #[test]
    fn loop_table_is_read_and_checked() {
        let target = |extra: &str| toml::from_str::<toml::Table>(extra).unwrap();
        assert_eq!(
            LoopConfig::from_extra(&toml::Table::new()).unwrap(),
            LoopConfig::default()
        );
        let cfg = LoopConfig::from_extra(&target(
            "[loop]\nbreaker_cooldown = \"2s\"\nbreaker_trips = 2\n",
        ))
        .unwrap();
        assert_eq!(cfg.breaker_cooldown, Duration::from_secs(2));
        assert_eq!(cfg.breaker_trips, 2);
        assert_eq!(cfg.breaker_after, 5);
        let err = LoopConfig::from_extra(&target("[loop]\nbreaker_cooldwn = \"2s\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[loop]") && err.contains("breaker_cooldwn"),
            "{err}"
        );
        let err = LoopConfig::from_extra(&target("[loop]\nbreaker_trips = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("breaker_trips"), "{err}");
    }
}
