//! Secrets kept from commands and their output: the provider key's names, and the scrubbing of
//! what a run or build left.

use std::path::Path;

use agentloop_guardrails::target::TargetSpec;

use super::settings::settings;

/// The provider key's variable names (never passed to a command): `[agent] api_key_env` or
/// the provider's default, and the well-known ones.
pub fn provider_key_names(target: &TargetSpec, agent_flag: Option<&str>) -> Vec<String> {
    let mut names = vec![
        "OPENAI_API_KEY".to_string(),
        "ANTHROPIC_API_KEY".to_string(),
    ];
    let mut doc = toml::Table::new();
    if let Some(agent) = target.extra.get("agent") {
        doc.insert("agent".into(), agent.clone());
    }
    if let Ok(mut cfg) = toml::to_string(&doc)
        .ok()
        .and_then(|t| crate::proposer::AgentConfig::from_toml(&t).ok())
        .ok_or(())
    {
        if let Some(kind) = agent_flag.and_then(|k| k.parse().ok()) {
            cfg.provider = kind;
        }
        names.extend(cfg.key_env());
        names.extend(cfg.api_key_env.clone());
    }
    names.sort();
    names.dedup();
    names
}

/// Scrubs secrets (the provider key and its encoded forms, credential-shaped strings) from the
/// files a run or build left, before anyone reads them.
pub fn redact_files(paths: &[&Path]) {
    let keys: Vec<String> = settings()
        .map(|s| s.never_env)
        .unwrap_or_default()
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .collect();
    redact_files_with(paths, &keys);
}

/// [`redact_files`] with the provider key values given.
pub(super) fn redact_files_with(paths: &[&Path], keys: &[String]) {
    let mut redactor = agentloop_ledger::redact::Redactor::from_env();
    for key in keys {
        redactor.add_literal(key);
    }
    for path in paths {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        let clean = redactor.redact_text(&text);
        if clean != text {
            let _ = std::fs::write(path, clean);
        }
    }
}
