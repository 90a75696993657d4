//! The `[executor]` table of `agentloop.toml`: where training runs execute.
//!
//! ```toml
//! [executor]
//! kind = "local"          # or "slurm"
//! slots = 2               # runs at once (local: one GPU each when there are GPUs)
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
    pub slurm: SlurmConfig,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            kind: ExecutorKind::Local,
            slots: 1,
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
            Some(v) => v
                .clone()
                .try_into()
                .map_err(|e| anyhow::anyhow!("agentloop.toml [executor]: {e}")),
        }
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
}
