//! The rule and the results in words: the table `agentloop simulate` prints.

use super::*;

/// The screen in words, for the table's header.
pub fn describe_screen(rule: &DecisionRule) -> String {
    match (&rule.screen, rule.screen_enabled) {
        (_, false) => "no screen".into(),
        (ScreenRule::Greedy, true) => "greedy: one run, kept if lower (no statistical test)".into(),
        (ScreenRule::Single, true) => format!(
            "one screening run, rejected below {} run sd",
            rule.screen_reject_below_sd
        ),
        (
            ScreenRule::Sequential {
                effect_sd,
                alpha,
                beta,
                max_runs,
            },
            true,
        ) => format!(
            "sequential screen (SPRT, H1 = {effect_sd} run sd, alpha {alpha}, beta {beta}, at most {max_runs} runs)"
        ),
        (
            ScreenRule::Paired {
                effect_sd,
                alpha,
                beta,
                max_runs,
            },
            true,
        ) => format!(
            "paired screen on the trunk's cached seeds (SPRT, H1 = {effect_sd} paired sd, alpha {alpha}, beta {beta}, at most {max_runs} runs)"
        ),
    }
}

/// The confirmation in words, for the table's header.
pub fn describe_confirmation(rule: &DecisionRule) -> String {
    match &rule.confirm {
        Some(c) if rule.is_v3() => format!(
            "looks at {} fresh pairs, futility at t <= {} or CI below the minimum effect; min effect {}",
            c.looks
                .iter()
                .map(|l| format!("{} @ p < {}", l.pairs, l.alpha))
                .collect::<Vec<_>>()
                .join(", "),
            c.futility_t,
            rule.min_effect.map_or("-".into(), |m| m.to_string())
        ),
        _ => format!(
            "stages {}; min effect {} run sd",
            rule.stages
                .iter()
                .map(|s| format!("{} pairs @ p < {}", s.pairs, s.p_threshold))
                .collect::<Vec<_>>()
                .join(", "),
            rule.min_effect_sd
        ),
    }
}

impl SimReport {
    /// Null rows: the false-accept rate is within alpha and its upper bound within 2 alpha.
    pub fn false_accept_ok(&self) -> bool {
        self.false_accept_within(self.alpha)
    }

    /// Null rows: the false-accept rate is within `alpha` and its upper bound within 2 `alpha`.
    pub fn false_accept_within(&self, alpha: f64) -> bool {
        self.rows
            .iter()
            .filter(|r| r.effect_paired_sd == 0.0)
            .all(|r| r.accept_rate <= alpha && r.accept_upper95 <= 2.0 * alpha)
    }

    /// Power at `effect` for every scenario: the accept rate among decisions that did not
    /// crash (random crashes end a decision as a crash, whatever the rule).
    pub fn power_at(&self, effect: f64) -> Vec<(Scenario, f64)> {
        self.rows
            .iter()
            .filter(|r| (r.effect_paired_sd - effect).abs() < 1e-12)
            .map(|r| (r.scenario, r.accept_rate_without_crashes))
            .collect()
    }

    /// Runs per decision on null changes, per scenario.
    pub fn null_runs(&self) -> Vec<(Scenario, f64)> {
        self.rows
            .iter()
            .filter(|r| r.effect_paired_sd == 0.0)
            .map(|r| (r.scenario, r.runs_per_decision))
            .collect()
    }

    /// Rows whose power the report checks (>= 0.8): effects of at least
    /// [`POWER_CHECKED_FROM_PAIRED_SD`] paired sd and at most 2 paired sd.
    fn power_checked(r: &SimRow) -> bool {
        r.effect_paired_sd >= POWER_CHECKED_FROM_PAIRED_SD - 1e-9 && r.effect_paired_sd <= 2.0
    }

    /// Checked rows (see [`SimReport::render_table`]) whose power is below 0.8.
    pub fn power_failures(&self) -> Vec<&SimRow> {
        self.rows
            .iter()
            .filter(|r| Self::power_checked(r) && r.accept_rate_without_crashes < 0.8)
            .collect()
    }

    /// Markdown table of every cell.
    pub fn render_table(&self) -> String {
        let mut out = format!(
            "Rule `{}`: {}; {}; alpha (false-accept bound) = {}. rho = {}, run sd {} (paired sd {:.5}), trunk {}, {} trials per row, seed {}.\n\n",
            self.rule.rule_version,
            describe_screen(&self.rule),
            describe_confirmation(&self.rule),
            self.alpha,
            self.config.rho,
            self.config.run_sd,
            self.config.paired_sd(),
            if self.config.trunk_moves { "moving (a merge every 4 decisions)" } else { "fixed" },
            self.config.trials,
            self.config.seed,
        );
        out.push_str(
            "| noise | crash p | effect (paired sd) | effect (metric) | accept rate | 95% upper | accept w/o crashes | screen rejects | crash decisions | runs / decision | check |\n",
        );
        out.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let check = if r.effect_paired_sd == 0.0 {
                if r.accept_rate <= self.alpha && r.accept_upper95 <= 2.0 * self.alpha {
                    "false accepts <= alpha, bound <= 2 alpha: ok"
                } else {
                    "FALSE ACCEPTS TOO HIGH"
                }
            } else if Self::power_checked(r) {
                if r.accept_rate_without_crashes >= 0.8 {
                    "power >= 0.8: ok"
                } else {
                    "POWER BELOW 0.8"
                }
            } else {
                ""
            };
            out.push_str(&format!(
                "| {} | {} | {:.2} | {:.5} | {:.4} | {:.4} | {:.4} | {:.3} | {:.3} | {:.2} | {} |\n",
                r.scenario.noise.label(),
                r.scenario.crash_probability,
                r.effect_paired_sd,
                r.effect_metric,
                r.accept_rate,
                r.accept_upper95,
                r.accept_rate_without_crashes,
                r.screen_rejects as f64 / r.trials.max(1) as f64,
                r.crashes as f64 / r.trials.max(1) as f64,
                r.runs_per_decision,
                check
            ));
        }
        out
    }
}
