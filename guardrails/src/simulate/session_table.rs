//! The session simulation's results in words: the table `agentloop simulate --session` prints.

use super::session::{SessionReport, SessionRow};

impl SessionReport {
    /// The table `agentloop simulate --session` prints (README.md shows it).
    pub fn render_table(&self) -> String {
        let c = &self.config;
        let mut out = format!(
            "Session simulation: {} sessions of {} training runs each (calibration included)\n\
             noise: run sd {}, rho {} (same-seed pair sd {:.4}), validation-set term sd {}, per-seed effect of a change sd {} (mean)\n\
             proposals: {}\n\
             false = true effect <= 0; harmful = true effect < -{}; gains in the metric's units, per session\n\n",
            c.sessions,
            c.budget_runs,
            c.run_sd,
            c.rho,
            c.run_sd * (2.0 * (1.0 - c.rho)).sqrt(),
            c.val_sd,
            c.interaction_sd,
            c.mix.describe(),
            c.harm_threshold,
        );
        out.push_str(
            "| rule | decisions | runs / decision | merges | false merges | harmful merges | measured gain (of it, by false merges) | val gain (fresh seeds) | true gain (holdout) | true gain / 1000 runs | sessions ending worse |\n\
             |---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            out.push_str(&format!(
                "| {} | {:.1} | {:.2} | {:.2} | {:.2} ({:.0}%) | {:.2} ({:.0}%) | {:.4} ({:.4}) | {:.4} | {:.4} | {:.4} | {:.1}% |\n",
                r.rule_version,
                r.decisions,
                r.runs_per_decision,
                r.merges,
                r.false_merges,
                100.0 * r.false_merges / r.merges.max(1e-12),
                r.harmful_merges,
                100.0 * r.harmful_merges / r.merges.max(1e-12),
                r.measured_gain,
                r.false_claimed,
                r.val_gain,
                r.true_gain,
                r.true_gain_per_1000_runs(),
                100.0 * r.sessions_worse,
            ));
        }
        out
    }

    pub fn row(&self, rule_version: &str) -> Option<&SessionRow> {
        self.rows.iter().find(|r| r.rule_version == rule_version)
    }
}
