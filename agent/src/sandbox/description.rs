//! The sandbox as recorded in the ledger's `session_start` and shown by `status`.

use agentloop_guardrails::target::TargetSpec;
use serde_json::{json, Value};

/// The sandbox as recorded in `session_start` (`extra.sandbox`) and shown by `status`.
pub fn describe(target: &TargetSpec, enforce: bool, probed: Option<(i64, &str)>) -> Value {
    let separated = target.eval.is_some();
    let mut v = json!({
        "enforced": enforce,
        "eval_separated": separated,
        "eval_data": target.eval_data,
        "env": "allow-list",
    });
    if let Some((abi, net)) = probed {
        v["landlock_abi"] = json!(abi);
        v["network"] = json!(net);
    }
    if !enforce {
        v["weaker"] =
            json!("--no-sandbox: builds and runs may read and write anything the user can");
    } else if !separated {
        v["weaker"] = json!("no [eval] step: the training run may read eval_data");
    } else if target.eval_data.is_empty() {
        v["weaker"] = json!("[eval] without [target] eval_data: nothing is hidden from training");
    }
    v
}
