//! The built-in offline proposer: one-value changes to the training config, drawn from the
//! search space in `agentloop.toml`. It writes a real search/replace reply and parses it with
//! the same parser as model replies, so it exercises the whole pipeline without an API key.
//!
//! Strategy: among settings not yet tried on this trunk, prefer those nearest the current
//! value in their grid (a local search); ties are broken by a RNG seeded from the seed and the
//! number of settings tried, so the same seed and history give the same proposal. A merge
//! opens the grid again (the best value of one setting can move when another changes), and
//! once the grid is used up on a trunk, float settings are refined between the current value
//! and its nearest tried neighbours (`refine`), so a session ends only when no step is left
//! that is worth a run.

use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::refine::refinements;
use super::space::OfflineSpace;
use super::toml_edit::{as_f64, find_value_line, format_value, lookup, parse_value, same_value};
use super::{HistoryItem, Proposal, ProposalContext, ProposeError, Proposer, Request};
use crate::patch::parse_reply;

pub const OFFLINE_PROVIDER: &str = "offline";
pub const OFFLINE_MODEL: &str = "offline-grid";

#[derive(Debug, Clone)]
pub struct OfflineProposer {
    space: OfflineSpace,
    seed: u64,
    /// Settings proposed by this instance, in case the history does not list them yet, with
    /// the hash of the config file they were proposed against (that is, their trunk).
    proposed: BTreeSet<(u64, String, String)>,
    /// Proposals made by this instance (settings and null changes).
    issued: u64,
}

/// One candidate setting.
#[derive(Debug, Clone)]
struct Candidate {
    key: String,
    value: toml::Value,
    current: toml::Value,
    /// Steps from the current value in the grid (1 = neighbour).
    distance: usize,
    grid: Vec<toml::Value>,
    /// `Some(known value beyond it)` for a refinement between grid values.
    refines_towards: Option<f64>,
}

impl OfflineProposer {
    pub fn new(space: OfflineSpace, seed: u64) -> Self {
        OfflineProposer {
            space,
            seed,
            proposed: BTreeSet::new(),
            issued: 0,
        }
    }

    pub fn space(&self) -> &OfflineSpace {
        &self.space
    }

    /// The description the proposer gives a setting; parsed back from history to know what
    /// was tried.
    pub fn describe(key: &str, value: &toml::Value, current: &toml::Value) -> String {
        format!(
            "set {key} = {} (was {})",
            format_value(value),
            format_value(current)
        )
    }

    /// Computes the next proposal (synchronously; the async trait method wraps it).
    pub fn next_proposal(&mut self, ctx: &ProposalContext) -> Result<Proposal, ProposeError> {
        if let Request::FixBuild { .. } = ctx.request {
            return Err(ProposeError::Unsupported {
                proposer: OFFLINE_PROVIDER,
                reason: "it only edits config values and cannot fix compile errors".into(),
            });
        }
        let file = &self.space.file;
        let content = ctx
            .editable_files
            .iter()
            .find(|(p, _)| p == file)
            .map(|(_, c)| c.as_str())
            .ok_or_else(|| {
                let listed: Vec<&str> =
                    ctx.editable_files.iter().map(|(p, _)| p.as_str()).collect();
                ProposeError::Offline(format!(
                    "the config file {file} is not among the editable files ({})",
                    listed.join(", ")
                ))
            })?;
        let doc = config_table(file, content)?;

        let trunk = content_hash(content);
        let tried = self.tried(&ctx.history, trunk);
        let mut candidates = self.candidates(&doc, &tried)?;
        if candidates.is_empty() {
            candidates = self.refinement_candidates(&doc, &tried);
        }
        let Some(best) = candidates.iter().map(|c| c.distance).min() else {
            return Err(ProposeError::Exhausted { tried: tried.len() });
        };
        // A null change instead, for `null_fraction` of the proposals (drawn from the seed and
        // the position, so two sessions with the same seed and history get the same stream).
        // (The history lists decided proposals; this instance's count covers those in flight.)
        let position = (ctx.history.len() as u64).max(self.issued);
        self.issued = position + 1;
        if self.space.null_fraction > 0.0
            && null_coin(self.seed, position) < self.space.null_fraction
        {
            let reply_text = super::null_change::reply(file, content, position);
            return self.proposal(reply_text);
        }
        let pool: Vec<&Candidate> = candidates.iter().filter(|c| c.distance == best).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ (tried.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let pick = pool[rng.random_range(0..pool.len())].clone();

        let reply_text = self.reply(content, &pick, &ctx.history)?;
        self.proposed
            .insert((trunk, pick.key.clone(), format_value(&pick.value)));
        self.proposal(reply_text)
    }

    /// The proposal of a reply this proposer wrote (parsed as a model's reply would be).
    fn proposal(&self, reply_text: String) -> Result<Proposal, ProposeError> {
        let reply = parse_reply(&reply_text)
            .map_err(|e| ProposeError::Offline(format!("own reply did not parse: {e}")))?;
        Ok(Proposal {
            description: reply.description,
            rationale: reply.rationale,
            patch_text: reply.patch.to_text(),
            patch_format: reply.patch.format(),
            patch: reply.patch,
            reply_text,
            provider: OFFLINE_PROVIDER.into(),
            model: OFFLINE_MODEL.into(),
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_usd: 0.0,
            // No prompt is rendered offline.
            prompt_template_sha256: String::new(),
        })
    }

    /// `(key, formatted value)` pairs already tried on this trunk (or in flight): from the
    /// history's descriptions and from this instance's own proposals.
    fn tried(&self, history: &[HistoryItem], trunk: u64) -> BTreeSet<(String, String)> {
        let mut tried: BTreeSet<(String, String)> = self
            .proposed
            .iter()
            .filter(|(t, _, _)| *t == trunk)
            .map(|(_, k, v)| (k.clone(), v.clone()))
            .collect();
        // Tried on this trunk, or rolled back (by an audit or a user) on any: a setting that
        // did not hold up is not proposed again.
        for h in history
            .iter()
            .filter(|h| h.on_current_trunk || h.outcome == "rolled_back")
        {
            if let Some(setting) = parse_description(&h.description) {
                tried.insert(setting);
            }
        }
        // A merged change showed its old value to be worse: not worth going straight back.
        for h in history.iter().filter(|h| h.outcome == "accepted") {
            if let Some(setting) = parse_replaced(&h.description) {
                tried.insert(setting);
            }
        }
        tried
    }

    /// Once the grid is used up on this trunk: the finer steps of `refine`, coarsest first
    /// (their `distance` ranks them by step size).
    fn refinement_candidates(
        &self,
        doc: &toml::Table,
        tried: &BTreeSet<(String, String)>,
    ) -> Vec<Candidate> {
        let mut found: Vec<(f64, Candidate)> = Vec::new();
        for p in &self.space.space {
            let Some(toml::Value::Float(current)) = lookup(doc, &p.key) else {
                continue;
            };
            if !p.values.iter().all(toml::Value::is_float) {
                continue;
            }
            let tried_here: BTreeSet<String> = tried
                .iter()
                .filter(|(k, _)| *k == p.key)
                .map(|(_, v)| v.clone())
                .collect();
            for r in refinements(&p.values, *current, &tried_here) {
                let candidate = Candidate {
                    key: p.key.clone(),
                    value: toml::Value::Float(r.value),
                    current: toml::Value::Float(*current),
                    distance: 0,
                    grid: p.values.clone(),
                    refines_towards: Some(r.towards),
                };
                found.push((r.step, candidate));
            }
        }
        // Rank by halvings below the coarsest step, so steps of a similar size tie.
        let coarsest = found.iter().map(|(s, _)| *s).fold(0.0, f64::max);
        found
            .into_iter()
            .map(|(step, mut c)| {
                c.distance = (coarsest / step).log2().floor().max(0.0) as usize;
                c
            })
            .collect()
    }

    fn candidates(
        &self,
        doc: &toml::Table,
        tried: &BTreeSet<(String, String)>,
    ) -> Result<Vec<Candidate>, ProposeError> {
        let mut out = Vec::new();
        for p in &self.space.space {
            let current = lookup(doc, &p.key).cloned().ok_or_else(|| {
                ProposeError::Offline(format!("{} has no key {}", self.space.file, p.key))
            })?;
            let distances = grid_distances(&p.values, &current);
            for (v, distance) in p.values.iter().zip(distances) {
                if same_value(v, &current) || tried.contains(&(p.key.clone(), format_value(v))) {
                    continue;
                }
                out.push(Candidate {
                    key: p.key.clone(),
                    value: v.clone(),
                    current: current.clone(),
                    distance,
                    grid: p.values.clone(),
                    refines_towards: None,
                });
            }
        }
        Ok(out)
    }

    /// The reply a model would have written for this setting.
    fn reply(
        &self,
        content: &str,
        c: &Candidate,
        history: &[HistoryItem],
    ) -> Result<String, ProposeError> {
        let lines: Vec<&str> = content.lines().collect();
        let at = find_value_line(content, &c.key).ok_or_else(|| {
            ProposeError::Offline(format!(
                "{} sets {} in a way the offline proposer cannot edit (inline table or array?)",
                self.space.file, c.key
            ))
        })?;
        let old_line = lines[at.line];
        let new_line = format!(
            "{}{}{}",
            &old_line[..at.value.start],
            format_value(&c.value),
            &old_line[at.value.end..]
        );
        // Grow the SEARCH context upwards until it matches exactly once.
        let mut start = at.line;
        while start > 0 && occurrences(&lines, &lines[start..=at.line]) > 1 {
            start -= 1;
        }
        let context = &lines[start..at.line];
        let mut search = String::new();
        let mut replace = String::new();
        for l in context {
            search.push_str(l);
            search.push('\n');
            replace.push_str(l);
            replace.push('\n');
        }
        search.push_str(old_line);
        search.push('\n');
        replace.push_str(&new_line);
        replace.push('\n');
        Ok(format!(
            "DESCRIPTION: {}\nRATIONALE: {}\n\n{}\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n",
            Self::describe(&c.key, &c.value, &c.current),
            rationale(c, history),
            self.space.file
        ))
    }
}

impl Proposer for OfflineProposer {
    async fn propose(&mut self, ctx: &ProposalContext) -> Result<Proposal, ProposeError> {
        self.next_proposal(ctx)
    }
}

/// Uniform in [0, 1), from a hash of the seed and the proposal's position: independent draws
/// (an RNG seeded with nearby integers gave long runs of the same side).
fn null_coin(seed: u64, position: u64) -> f64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"agentloop null change\0");
    h.update(seed.to_le_bytes());
    h.update(position.to_le_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&h.finalize()[..8]);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// `set optim.lr = 0.004 (was 0.002)` -> `("optim.lr", "0.004")`.
fn parse_description(description: &str) -> Option<(String, String)> {
    let rest = description.trim().strip_prefix("set ")?;
    let (key, rest) = rest.split_once(" = ")?;
    let value = rest.split(" (was ").next()?.trim();
    let value = parse_value(value)?;
    Some((key.trim().to_string(), format_value(&value)))
}

/// `set optim.lr = 0.004 (was 0.002)` -> `("optim.lr", "0.002")`.
fn parse_replaced(description: &str) -> Option<(String, String)> {
    let rest = description.trim().strip_prefix("set ")?;
    let (key, rest) = rest.split_once(" = ")?;
    let was = rest.split_once(" (was ")?.1.strip_suffix(')')?;
    let value = parse_value(was.trim())?;
    Some((key.trim().to_string(), format_value(&value)))
}

/// How many grid steps each value is from the current one. When the current value is off
/// the grid, numeric closeness ranks the values instead.
fn grid_distances(values: &[toml::Value], current: &toml::Value) -> Vec<usize> {
    if let Some(i) = values.iter().position(|v| same_value(v, current)) {
        return (0..values.len()).map(|j| j.abs_diff(i)).collect();
    }
    let gap = |v: &toml::Value| match (as_f64(v), as_f64(current)) {
        (Some(a), Some(b)) => (a - b).abs(),
        _ => f64::INFINITY,
    };
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| gap(&values[a]).total_cmp(&gap(&values[b])));
    let mut distances = vec![0; values.len()];
    for (rank, &idx) in order.iter().enumerate() {
        distances[idx] = rank + 1;
    }
    distances
}

/// Identifies the trunk by its config file: the only file this proposer changes.
fn content_hash(content: &str) -> u64 {
    let mut h = DefaultHasher::new();
    content.hash(&mut h);
    h.finish()
}

fn occurrences(lines: &[&str], block: &[&str]) -> usize {
    lines.windows(block.len()).filter(|w| *w == block).count()
}

fn rationale(c: &Candidate, history: &[HistoryItem]) -> String {
    let from = format_value(&c.current);
    let to = format_value(&c.value);
    let direction = match (as_f64(&c.value), as_f64(&c.current)) {
        (Some(a), Some(b)) if a > b => "raise",
        (Some(a), Some(b)) if a < b => "lower",
        _ => "change",
    };
    let grid: Vec<String> = c.grid.iter().map(format_value).collect();
    let place = match c.refines_towards {
        Some(towards) => format!(
            "halfway towards {}, since every value of its grid [{}] was tried on this trunk",
            format_value(&toml::Value::Float(towards)),
            grid.join(", ")
        ),
        None if c.distance == 1 => {
            format!("the nearest untried step on its grid [{}]", grid.join(", "))
        }
        None => format!(
            "{} steps away, the nearest untried on its grid [{}]",
            c.distance,
            grid.join(", ")
        ),
    };
    let mut text = format!(
        "{direction} {} from {from} to {to}: {place}; {}",
        c.key,
        mechanism(&c.key, direction)
    );
    let earlier: Vec<String> = history
        .iter()
        .filter(|h| h.on_current_trunk)
        .filter_map(|h| {
            let (key, value) = parse_description(&h.description)?;
            (key == c.key).then(|| match h.effect {
                Some(e) => format!("{value} was {} (gain {e:+.5})", h.outcome),
                None => format!("{value} was {}", h.outcome),
            })
        })
        .collect();
    if !earlier.is_empty() {
        text.push_str(&format!(" Earlier on this trunk: {}.", earlier.join("; ")));
    }
    text
}

/// A one-line reason why moving this knob could help within a fixed budget.
fn mechanism(key: &str, direction: &str) -> String {
    let name = key.rsplit('.').next().unwrap_or(key);
    let up = direction == "raise";
    let why = match name {
        "lr" | "embed_lr" if up => "with a short fixed budget a larger step size may reach a lower loss before time runs out",
        "lr" | "embed_lr" => "a smaller step size may train more stably and end lower if the current one is noisy",
        "weight_decay" => "regularization strength trades fit against generalization on the validation split",
        "warmup_frac" | "warmdown_frac" => "the schedule's shape decides how much of the budget runs at peak learning rate",
        "grad_clip" => "clipping bounds the update on loss spikes; its threshold trades stability against speed",
        "beta1" | "beta2" => "Adam's averaging horizon changes how quickly the optimizer reacts to the gradient",
        "depth" | "width" | "heads" => "model shape trades capacity against tokens processed within the budget",
        "batch_size" => "batch size trades gradient noise against the number of optimizer steps in the budget",
        "seq_len" => "context length trades longer dependencies against tokens per step",
        _ => "it is an untried point of the configured search space",
    };
    format!("{why}.")
}

/// The settings of the config file: a TOML document, or a Python file's top-level
/// `name = value` lines whose values read as TOML scalars (`learning_rate = 3e-4`,
/// `out_dir = 'out'`; lines like `wandb_log = False` or `x = f(y)` are not editable settings).
fn config_table(file: &str, content: &str) -> Result<toml::Table, ProposeError> {
    match content.parse::<toml::Table>() {
        Ok(doc) => Ok(doc),
        Err(_) if file.ends_with(".py") => Ok(python_settings(content)),
        Err(e) => Err(ProposeError::Offline(format!(
            "{file} is not valid TOML: {}",
            e.message()
        ))),
    }
}

fn python_settings(content: &str) -> toml::Table {
    let mut doc = toml::Table::new();
    for line in content.lines() {
        // Top level only: an indented assignment belongs to a function or a block.
        if line.starts_with(|c: char| c.is_whitespace() || c == '#') {
            continue;
        }
        let Some((name, rest)) = line.split_once('=') else {
            continue;
        };
        let name = name.trim();
        let is_name = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !is_name || rest.starts_with('=') || doc.contains_key(name) {
            continue;
        }
        let Some(at) = super::toml_edit::find_value_line(line, name) else {
            continue;
        };
        if let Some(v) = parse_value(&line[at.value]) {
            doc.insert(name.to_string(), v);
        }
    }
    doc
}

#[cfg(test)]
#[path = "offline_tests.rs"]
mod tests;
