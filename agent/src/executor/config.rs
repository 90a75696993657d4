//! The `[executor]` table of `agentloop.toml`: where training runs execute.
//!
//! ```toml
//! [executor]
//! kind = "local"          # or "slurm"
//! slots = 2               # runs at once (default 1, or one per GPU listed)
//! workers = 2             # changes in flight at once (default: one per slot; --workers wins)
//! gpus = [0, 1]           # local: slot i runs with CUDA_VISIBLE_DEVICES=gpus[i]
//!
//! [executor.slurm]
//! partition = "gpu"
//! time_limit = "00:20:00"
//! sbatch_options = ["--gres=gpu:1"]
//! ```

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    #[default]
    Local,
    Slurm,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    pub kind: ExecutorKind,
    pub slots: usize,
    /// Changes in flight at once (`None`: one per slot); `--workers` wins over it.
    pub workers: Option<usize>,
    /// Local GPU ids, one slot each; empty: CPU slots.
    pub gpus: Vec<u32>,
    pub slurm: SlurmConfig,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            kind: ExecutorKind::Local,
            slots: 1,
            workers: None,
            gpus: Vec::new(),
            slurm: SlurmConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmConfig {
    pub partition: Option<String>,
    /// Slurm's `--time` for each job (e.g. `00:20:00`); the train timeout when unset.
    pub time_limit: Option<String>,
    /// Passed to `sbatch` as they are (`--gres=gpu:1`, `--account=...`).
    pub sbatch_options: Vec<String>,
}

impl ExecutorConfig {
    /// Reads `[executor]` from the target's extra tables; the default (local, 1 slot) if absent.
    pub fn from_target_extra(extra: &toml::Table) -> anyhow::Result<ExecutorConfig> {
        match extra.get("executor") {
            None => Ok(ExecutorConfig::default()),
            Some(v) => {
                let mut config: ExecutorConfig = v
                    .clone()
                    .try_into()
                    .map_err(|e| anyhow::anyhow!("agentloop.toml [executor]: {e}"))?;
                let slots_given = v.get("slots").is_some();
                if !slots_given && !config.gpus.is_empty() {
                    config.slots = config.gpus.len();
                }
                config.check()?;
                Ok(config)
            }
        }
    }

    /// `--workers N` changes in flight need at least N slots (more is better: each change's
    /// pair runs its two arms side by side).
    pub fn with_workers(mut self, workers: usize) -> anyhow::Result<ExecutorConfig> {
        self.slots = self.slots.max(workers);
        self.check()?;
        Ok(self)
    }

    /// Changes in flight when `--workers` is not given: `workers`, else one per slot (more
    /// than `slots` raise the slots, as `--workers` does). Under rule v3 a change
    /// spends most of its time in the screen, one run at a time (each screening run is paired
    /// with the trunk's cached run on its seed), so one change per two slots left every other
    /// slot idle; with one per slot, a change's build and screen overlap another's runs, and a
    /// confirming change's pair takes both slots when they are free.
    pub fn default_workers(&self) -> usize {
        self.workers.unwrap_or(self.slots).max(1)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.slots == 0 {
            anyhow::bail!("agentloop.toml [executor]: slots (or --workers) must be at least 1");
        }
        if self.workers == Some(0) {
            anyhow::bail!("agentloop.toml [executor]: workers must be at least 1");
        }
        if self.kind == ExecutorKind::Local && !self.gpus.is_empty() && self.slots > self.gpus.len()
        {
            anyhow::bail!(
                "{} local slots asked for but [executor] gpus lists only {} GPU(s) ({:?}); list more GPUs or ask for fewer slots",
                self.slots,
                self.gpus.len(),
                self.gpus
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<ExecutorConfig> {
        ExecutorConfig::from_target_extra(&text.parse::<toml::Table>().unwrap())
    }

    #[test]
    fn absent_table_means_one_local_slot() {
        assert_eq!(parse("").unwrap(), ExecutorConfig::default());
    }

    #[test]
    fn slurm_table_is_read_and_typos_are_named() {
        let c = parse(
            "[executor]\nkind = \"slurm\"\nslots = 4\n[executor.slurm]\npartition = \"gpu\"\nsbatch_options = [\"--gres=gpu:1\"]\n",
        )
        .unwrap();
        assert_eq!(c.kind, ExecutorKind::Slurm);
        assert_eq!(c.slots, 4);
        assert_eq!(c.slurm.partition.as_deref(), Some("gpu"));
        let e = parse("[executor]\nslot = 2\n").unwrap_err().to_string();
        assert!(e.contains("[executor]") && e.contains("slot"), "{e}");
        let e = parse("[executor]\nkind = \"k8s\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("k8s"), "{e}");
    }

    #[test]
    fn slots_default_to_the_gpus_listed_and_cannot_exceed_them() {
        let c = parse("[executor]\ngpus = [0, 1, 2]\n").unwrap();
        assert_eq!((c.slots, c.gpus.clone()), (3, vec![0, 1, 2]));
        let c = parse("[executor]\ngpus = [0, 1, 2]\nslots = 2\n").unwrap();
        assert_eq!(c.slots, 2);
        let e = parse("[executor]\ngpus = [0]\nslots = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 local slots") && e.contains("1 GPU"), "{e}");
        let e = c.with_workers(4).unwrap_err().to_string();
        assert!(e.contains("4 local slots"), "{e}");
        let e = parse("[executor]\nslots = 0\n").unwrap_err().to_string();
        assert!(e.contains("at least 1"), "{e}");
        assert_eq!(parse("").unwrap().with_workers(2).unwrap().slots, 2);
    }

    #[test]
    fn one_worker_per_slot_by_default_and_workers_never_shrink_slots() {
        assert_eq!(parse("").unwrap().default_workers(), 1);
        let two = parse("[executor]\nslots = 2\n").unwrap();
        assert_eq!(
            two.default_workers(),
            2,
            "two changes, so the one-run-at-a-time screen leaves no slot idle"
        );
        assert_eq!(two.clone().with_workers(1).unwrap().slots, 2);
        assert_eq!(two.with_workers(3).unwrap().slots, 3);
        let gpus = parse("[executor]\ngpus = [0, 1, 2, 3, 4, 5, 6, 7]\n").unwrap();
        assert_eq!(gpus.default_workers(), 8);
        let pinned = parse("[executor]\nslots = 2\nworkers = 1\n").unwrap();
        assert_eq!((pinned.default_workers(), pinned.slots), (1, 2));
        let e = parse("[executor]\nworkers = 0\n").unwrap_err().to_string();
        assert!(e.contains("workers must be at least 1"), "{e}");
    }
}
