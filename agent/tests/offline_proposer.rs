//! The offline proposer against a real config file on disk.

use std::path::Path;
use std::time::Duration;

use agentloop::patch;
use agentloop::proposer::{
    HistoryItem, OfflineProposer, OfflineSpace, Proposal, ProposalContext, ProposeError, Proposer,
    Request,
};

const CONFIG_PATH: &str = "trainer/config/default.toml";

// `embed_lr` shares its value with `lr`, and `[train]` repeats `lr = 0.002` as a key of
// another section, so a naive SEARCH would match more than once.
const CONFIG: &str = "# default training config\n\
[model]\ndepth = 4\nwidth = 128\nheads = 4\nseq_len = 128\n\n\
[optim]\nlr = 0.002          # peak learning rate\nembed_lr = 0.002\nweight_decay = 0.1\nbeta1 = 0.9\nbeta2 = 0.95\n\
warmup_frac = 0.1\nwarmdown_frac = 0.3\ngrad_clip = 1.0\n\n\
[train]\nbatch_size = 16\n\n[sched]\nlr = 0.002\n";

const AGENTLOOP_TOML: &str = r#"
[target]
editable = ["trainer/config/*.toml"]

[proposer.offline]
file = "trainer/config/default.toml"

[[proposer.offline.space]]
key = "optim.lr"
values = [0.001, 0.002, 0.004, 0.008]

[[proposer.offline.space]]
key = "model.depth"
values = [2, 4, 6]

[[proposer.offline.space]]
key = "optim.weight_decay"
values = [0.0, 0.1, 0.2]
"#;

/// A target checkout on disk: the config file the proposer edits.
fn target() -> (tempfile::TempDir, OfflineSpace) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("trainer/config")).unwrap();
    std::fs::write(dir.path().join(CONFIG_PATH), CONFIG).unwrap();
    std::fs::write(dir.path().join("agentloop.toml"), AGENTLOOP_TOML).unwrap();
    let space = OfflineSpace::load(dir.path())
        .unwrap()
        .expect("space present");
    (dir, space)
}

fn ctx(root: &Path, history: Vec<HistoryItem>) -> ProposalContext {
    let content = std::fs::read_to_string(root.join(CONFIG_PATH)).unwrap();
    ProposalContext {
        editable_files: vec![(CONFIG_PATH.into(), content)],
        history,
        noise_floor: None,
        min_gain: None,
        budget_left: Duration::from_secs(600),
        metric: "val_bpb".into(),
        request: Request::New,
        notice: None,
    }
}

fn apply_on_disk(root: &Path, p: &Proposal) -> (toml::Table, toml::Table) {
    let edits = patch::apply(&p.patch, &|path| {
        std::fs::read_to_string(root.join(path)).ok()
    })
    .unwrap();
    assert_eq!(edits.len(), 1);
    assert_eq!(edits[0].path, CONFIG_PATH);
    let before: toml::Table = edits[0].before.as_deref().unwrap().parse().unwrap();
    let after_text = edits[0].after.clone().unwrap();
    std::fs::write(root.join(CONFIG_PATH), &after_text).unwrap();
    (before, after_text.parse().unwrap())
}

/// Every leaf `(dotted key, value)` of a TOML table.
fn leaves(t: &toml::Table) -> Vec<(String, toml::Value)> {
    let mut out = Vec::new();
    for (k, v) in t {
        match v {
            toml::Value::Table(inner) => out.extend(
                leaves(inner)
                    .into_iter()
                    .map(|(ik, iv)| (format!("{k}.{ik}"), iv)),
            ),
            other => out.push((k.clone(), other.clone())),
        }
    }
    out
}

/// The space cut down to the learning rate.
fn only_lr(space: OfflineSpace) -> OfflineSpace {
    OfflineSpace {
        space: space
            .space
            .into_iter()
            .filter(|p| p.key == "optim.lr")
            .collect(),
        ..space
    }
}

/// Proposes until the space is used up on this trunk, each proposal rejected on it; their
/// descriptions in order.
async fn propose_until_exhausted(
    proposer: &mut OfflineProposer,
    root: &Path,
    history: &mut Vec<HistoryItem>,
) -> Vec<String> {
    let mut proposed = Vec::new();
    while let Ok(p) = proposer.propose(&ctx(root, history.clone())).await {
        history.push(rejected(history.len(), &p));
        proposed.push(p.description);
    }
    proposed
}

fn rejected(id: usize, p: &Proposal) -> HistoryItem {
    HistoryItem {
        change_id: format!("c{id:06x}"),
        description: p.description.clone(),
        outcome: "rejected".into(),
        effect: Some(-0.001),
        ci_low: Some(-0.003),
        ci_high: Some(0.001),
        on_current_trunk: true,
    }
}

#[tokio::test]
async fn same_seed_and_history_give_the_same_proposal() {
    let (dir, space) = target();
    let a = OfflineProposer::new(space.clone(), 7)
        .propose(&ctx(dir.path(), vec![]))
        .await
        .unwrap();
    let b = OfflineProposer::new(space.clone(), 7)
        .propose(&ctx(dir.path(), vec![]))
        .await
        .unwrap();
    assert_eq!(a, b);
    // The nearest grid neighbours of the current values are tried first.
    let neighbours = [
        "set optim.lr = 0.001 (was 0.002)",
        "set optim.lr = 0.004 (was 0.002)",
        "set model.depth = 2 (was 4)",
        "set model.depth = 6 (was 4)",
        "set optim.weight_decay = 0.0 (was 0.1)",
        "set optim.weight_decay = 0.2 (was 0.1)",
    ];
    assert!(
        neighbours.contains(&a.description.as_str()),
        "{}",
        a.description
    );
    assert_eq!(
        (a.provider.as_str(), a.prompt_tokens, a.cost_usd),
        ("offline", 0, 0.0)
    );
    assert_eq!(a.patch_format, patch::PatchFormat::SearchReplace);
    assert!(a.patch_text.contains("<<<<<<< SEARCH"));
}

#[tokio::test]
async fn proposals_never_repeat_and_each_changes_exactly_one_value() {
    let (dir, space) = target();
    let mut proposer = OfflineProposer::new(space.clone(), 42);
    let original = std::fs::read_to_string(dir.path().join(CONFIG_PATH)).unwrap();
    let mut history = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut order: Vec<String> = Vec::new();
    loop {
        // A fresh proposer sees only the history (as after a resume) and agrees.
        let fresh = OfflineProposer::new(space.clone(), 42)
            .propose(&ctx(dir.path(), history.clone()))
            .await;
        match proposer.propose(&ctx(dir.path(), history.clone())).await {
            Ok(p) => {
                assert_eq!(fresh.unwrap(), p);
                assert!(
                    seen.insert(p.description.clone()),
                    "repeated {}",
                    p.description
                );
                order.push(format!("{} | {}", p.description, p.rationale));
                let (before, after) = apply_on_disk(dir.path(), &p);
                let changed: Vec<_> = leaves(&before)
                    .into_iter()
                    .zip(leaves(&after))
                    .filter(|(b, a)| b != a)
                    .collect();
                assert_eq!(changed.len(), 1, "{}: {changed:?}", p.description);
                let ((key, _), (_, new)) = &changed[0];
                assert!(
                    p.description.starts_with(&format!("set {key} = {new}")),
                    "{} vs {key}={new}",
                    p.description
                );
                assert!(
                    p.rationale.contains(key.as_str()) && p.rationale.contains(": "),
                    "{}",
                    p.rationale
                );
                // Comments and layout survive: only that one line differs.
                let now = std::fs::read_to_string(dir.path().join(CONFIG_PATH)).unwrap();
                let diff = original
                    .lines()
                    .zip(now.lines())
                    .filter(|(a, b)| a != b)
                    .count();
                assert_eq!(diff, 1);
                assert!(now.contains("# peak learning rate"));
                // Rejected: the trunk stays as it was.
                std::fs::write(dir.path().join(CONFIG_PATH), &original).unwrap();
                history.push(rejected(history.len(), &p));
            }
            Err(ProposeError::Exhausted { tried }) => {
                assert!(matches!(fresh, Err(ProposeError::Exhausted { .. })));
                // First the grid: 4 + 3 + 3 values, minus the 3 current ones.
                let grid: Vec<&String> = order.iter().take(7).collect();
                assert!(grid.iter().all(|d| !d.contains("halfway")), "{order:#?}");
                // Then finer steps of the float settings (not of the integer `depth`), until
                // none is worth a run.
                let finer = &order[7..];
                assert!(finer.len() >= 4, "{order:#?}");
                assert!(
                    finer
                        .iter()
                        .all(|d| d.contains("halfway") && !d.contains("depth")),
                    "{finer:#?}"
                );
                assert_eq!(tried, seen.len());
                break;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
}

#[tokio::test]
async fn an_accepted_change_moves_the_search_to_the_new_value() {
    let (dir, space) = target();
    let mut proposer = OfflineProposer::new(space, 3);
    let mut history = Vec::new();
    let first = proposer.propose(&ctx(dir.path(), vec![])).await.unwrap();
    apply_on_disk(dir.path(), &first); // accepted: the trunk now holds it
    let mut item = rejected(1, &first);
    item.outcome = "accepted".into();
    item.effect = Some(0.004);
    history.push(item);
    let second = proposer.propose(&ctx(dir.path(), history)).await.unwrap();
    assert_ne!(first.description, second.description);
    // The second patch applies to the updated trunk file.
    apply_on_disk(dir.path(), &second);
}

#[tokio::test]
async fn history_mentions_of_the_same_key_reach_the_rationale() {
    let (dir, space) = target();
    let only_lr = only_lr(space);
    let history = vec![HistoryItem {
        change_id: "c000001".into(),
        description: "set optim.lr = 0.004 (was 0.002)".into(),
        outcome: "rejected".into(),
        effect: Some(-0.0021),
        ci_low: None,
        ci_high: None,
        on_current_trunk: true,
    }];
    let p = OfflineProposer::new(only_lr, 0)
        .propose(&ctx(dir.path(), history))
        .await
        .unwrap();
    assert_eq!(p.description, "set optim.lr = 0.001 (was 0.002)");
    assert!(
        p.rationale
            .starts_with("lower optim.lr from 0.002 to 0.001"),
        "{}",
        p.rationale
    );
    assert!(
        p.rationale.contains("0.004 was rejected (gain -0.00210)"),
        "{}",
        p.rationale
    );
}

#[tokio::test]
async fn bad_requests_and_inputs_are_clear_errors() {
    let (dir, space) = target();
    let mut proposer = OfflineProposer::new(space.clone(), 0);
    let mut c = ctx(dir.path(), vec![]);
    c.request = Request::FixBuild {
        previous_patch: "x".into(),
        compiler_errors: "error".into(),
    };
    assert!(matches!(
        proposer.propose(&c).await,
        Err(ProposeError::Unsupported { .. })
    ));

    let mut c = ctx(dir.path(), vec![]);
    c.editable_files = vec![("trainer/src/model.rs".into(), "fn main() {}\n".into())];
    let err = proposer.propose(&c).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("trainer/config/default.toml is not among the editable files"),
        "{err}"
    );

    let mut c = ctx(dir.path(), vec![]);
    c.editable_files[0].1 = "[model]\ndepth = 4\n".into();
    let err = proposer.propose(&c).await.unwrap_err();
    assert!(err.to_string().contains("has no key optim.lr"), "{err}");

    let err =
        OfflineSpace::from_agentloop_toml("[proposer.offline]\nfile = \"x.toml\"\nspace = []\n")
            .unwrap_err();
    assert!(err.to_string().contains("`space` has no entries"), "{err}");
    let err = OfflineSpace::from_agentloop_toml(
        "[proposer.offline]\nfile = \"x.toml\"\n[[proposer.offline.space]]\nkey = \"lr\"\nvalue = [1]\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("unknown field `value`"), "{err}");
    assert_eq!(
        OfflineSpace::from_agentloop_toml("[target]\n").unwrap(),
        None
    );
}

/// A nanoGPT-style Python config: top-level `name = value` lines, some of which are not TOML
/// (`False`, calls); the proposer edits the numeric ones and nothing else.
#[tokio::test]
async fn python_config_lines_are_edited_one_value_at_a_time() {
    let config = "# train a miniature character-level model\n\
out_dir = 'out-shakespeare-char'\n\
wandb_log = False # override via command line if you like\n\
learning_rate = 3e-4 # with baby networks can afford to go a bit higher\n\
n_embd = 64\n\
device = get_device()\n\
\n\
def schedule(step):\n\
    learning_rate = 1.0\n\
    return learning_rate\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.py"), config).unwrap();
    let space = OfflineSpace::from_agentloop_toml(
        "[proposer.offline]\nfile = \"config.py\"\n\
         [[proposer.offline.space]]\nkey = \"learning_rate\"\nvalues = [3e-4, 1e-3]\n\
         [[proposer.offline.space]]\nkey = \"n_embd\"\nvalues = [64, 128]\n",
    )
    .unwrap()
    .unwrap();
    let mut proposer = OfflineProposer::new(space, 1);
    let mut seen = Vec::new();
    let mut history = Vec::new();
    for i in 0..2 {
        let c = ProposalContext {
            editable_files: vec![("config.py".into(), config.into())],
            history: history.clone(),
            noise_floor: None,
            min_gain: None,
            budget_left: Duration::from_secs(600),
            metric: "val_bpb".into(),
            request: Request::New,
            notice: None,
        };
        let p = proposer.propose(&c).await.unwrap();
        let edits = patch::apply(&p.patch, &|path| {
            std::fs::read_to_string(dir.path().join(path)).ok()
        })
        .unwrap();
        let after = edits[0].after.clone().unwrap();
        let changed: Vec<(&str, &str)> = config
            .lines()
            .zip(after.lines())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(changed.len(), 1, "{after}");
        seen.push(changed[0].1.to_string());
        history.push(rejected(i, &p));
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "learning_rate = 0.001 # with baby networks can afford to go a bit higher",
            "n_embd = 128"
        ]
    );
}

#[tokio::test]
async fn a_merge_opens_the_grid_again_except_the_value_it_replaced() {
    let (dir, space) = target();
    let mut proposer = OfflineProposer::new(space, 5);
    let mut history: Vec<HistoryItem> = Vec::new();
    let original = std::fs::read_to_string(dir.path().join(CONFIG_PATH)).unwrap();
    // Everything on the first trunk is rejected until nothing is left.
    let first_trunk = propose_until_exhausted(&mut proposer, dir.path(), &mut history).await;
    assert!(first_trunk.contains(&"set optim.lr = 0.004 (was 0.002)".to_string()));
    // Then one of them is merged (as a re-test would be): the trunk moves, and everything
    // tried so far belongs to an earlier trunk.
    let depth = first_trunk
        .iter()
        .position(|d| d == "set model.depth = 6 (was 4)")
        .unwrap();
    for h in &mut history {
        h.on_current_trunk = false;
    }
    history[depth].outcome = "accepted".into();
    std::fs::write(
        dir.path().join(CONFIG_PATH),
        original.replace("depth = 4", "depth = 6"),
    )
    .unwrap();
    let second_trunk = propose_until_exhausted(&mut proposer, dir.path(), &mut history).await;
    // The learning rate's grid is worth trying again on the new trunk...
    assert!(
        second_trunk.contains(&"set optim.lr = 0.004 (was 0.002)".to_string()),
        "{second_trunk:#?}"
    );
    // ...but not the depth the merge showed to be worse.
    assert!(
        !second_trunk
            .iter()
            .any(|d| d.starts_with("set model.depth = 4 ")),
        "{second_trunk:#?}"
    );
}

#[tokio::test]
async fn a_setting_the_audit_rolled_back_is_not_proposed_again_on_a_later_trunk() {
    let (dir, space) = target();
    let only_lr = only_lr(space);
    let item = |description: &str, outcome: &str| HistoryItem {
        change_id: "c000001".into(),
        description: description.into(),
        outcome: outcome.into(),
        effect: Some(0.001),
        ci_low: None,
        ci_high: None,
        on_current_trunk: false,
    };
    let mut proposer = OfflineProposer::new(only_lr, 1);
    let mut history = vec![item("set optim.lr = 0.001 (was 0.002)", "rolled_back")];
    let proposed = propose_until_exhausted(&mut proposer, dir.path(), &mut history).await;
    assert!(
        !proposed
            .iter()
            .any(|d| d.starts_with("set optim.lr = 0.001 ")),
        "{proposed:#?}"
    );
    // A change merely rejected on an earlier trunk is worth another try.
    let mut proposer = OfflineProposer::new(proposer.space().clone(), 1);
    let mut history = vec![item("set optim.lr = 0.001 (was 0.002)", "rejected")];
    let again = propose_until_exhausted(&mut proposer, dir.path(), &mut history).await;
    assert!(
        again.iter().any(|d| d.starts_with("set optim.lr = 0.001 ")),
        "{again:#?}"
    );
}
