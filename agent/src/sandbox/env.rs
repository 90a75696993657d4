//! The environment a build or run gets: an allow-list of the loop's variables, never a secret.
//!
//! Allow-list, not deny-list: a variable reaches the command only when its name is one of the
//! toolchain's own (below) or the target lists it in `[target] env`. Names that look like
//! credentials are refused even inside an allowed prefix (`CARGO_REGISTRY_TOKEN`), the
//! provider key's variable is refused whatever it is called, and so is any variable whose value
//! contains that key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

const EXACT: &[&str] = &[
    "PATH",
    "HOME",
    "RUSTFLAGS",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TERM",
];
const PREFIXES: &[&str] = &["CARGO_", "RUSTUP_", "RAYON_", "OMP_", "CUDA_", "LC_"];
/// Name parts of credentials: refused unless the target lists the exact name.
const SECRET_PARTS: &[&str] = &[
    "KEY",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "AUTH",
];

/// What `sandbox-exec` keeps of the environment it was started with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvPolicy {
    /// `[target] env`: passed through as they are.
    pub allow: Vec<String>,
    /// Never passed (the provider key's variable), and no variable whose value contains theirs.
    pub never: Vec<String>,
    /// Set by the loop (TMPDIR, AGENTLOOP_*), over anything inherited.
    pub set: BTreeMap<String, String>,
}

fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_PARTS.iter().any(|p| upper.contains(p))
}

fn allowed_by_default(name: &str) -> bool {
    (EXACT.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))) && !looks_secret(name)
}

/// The environment of the command, from the one `sandbox-exec` inherited.
pub fn filter(
    inherited: impl IntoIterator<Item = (String, String)>,
    policy: &EnvPolicy,
) -> BTreeMap<String, String> {
    let inherited: Vec<(String, String)> = inherited.into_iter().collect();
    let secrets: Vec<&str> = inherited
        .iter()
        .filter(|(k, v)| policy.never.contains(k) && v.trim().len() >= 4)
        .map(|(_, v)| v.trim())
        .collect();
    let mut out: BTreeMap<String, String> = inherited
        .iter()
        .filter(|(k, _)| !policy.never.contains(k))
        .filter(|(k, _)| policy.allow.contains(k) || allowed_by_default(k))
        .filter(|(_, v)| !secrets.iter().any(|s| v.contains(s)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in &policy.set {
        out.insert(k.clone(), v.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_allowed_names_pass_and_never_a_secret() {
        let policy = EnvPolicy {
            allow: vec!["HF_HOME".into()],
            // The provider key hidden under a name an allowed prefix would let through.
            never: vec!["RAYON_PROVIDER_AUTH_X".into(), "RAYON_PLAIN".into()],
            set: BTreeMap::from([("TMPDIR".into(), "/run/tmp".into())]),
        };
        let env = filter(
            vars(&[
                ("PATH", "/usr/bin"),
                ("HOME", "/root"),
                ("CARGO_TARGET_DIR", "/t"),
                ("CARGO_REGISTRY_TOKEN", "cio-123456"),
                ("OPENAI_API_KEY", "sk-abcdefgh"),
                ("RAYON_PLAIN", "sk-the-provider-key"),
                ("CUDA_COPY", "prefix sk-the-provider-key suffix"),
                ("HF_HOME", "/hf"),
                ("AWS_SECRET_ACCESS_KEY", "x"),
                ("SSH_AUTH_SOCK", "/tmp/ssh"),
                ("TMPDIR", "/tmp"),
                ("LC_ALL", "C"),
                ("AGENTLOOP_LOG", "debug"),
            ]),
            &policy,
        );
        let names: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "CARGO_TARGET_DIR",
                "HF_HOME",
                "HOME",
                "LC_ALL",
                "PATH",
                "TMPDIR"
            ]
        );
        assert_eq!(env["TMPDIR"], "/run/tmp");
    }
}
