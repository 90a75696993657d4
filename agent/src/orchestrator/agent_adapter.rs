//! Connects the loop's `Proposals` to the agent's proposers (LLM or offline) and patch parser.

use agentloop_guardrails::target::TargetSpec;
use anyhow::{Context as _, Result};

use super::proposals::{Context, Edit, Proposals, ProviderFailure, Reply};
use super::workspace::Workspace;
use crate::cli::StartArgs;
use crate::llm::{ErrorClass, LlmError};
use crate::patch;
use crate::proposer::{
    from_config, AgentConfig, AnyProposer, OfflineSpace, ProposalContext, ProposeError, Proposer,
    ProviderKind,
};

pub struct AgentProposals {
    inner: AnyProposer,
    metric: String,
    runtime: tokio::runtime::Runtime,
}

/// The proposer for `agentloop start`: `[agent]` of agentloop.toml, overridden by the flags.
pub fn from_args(
    ws: &Workspace,
    target: &TargetSpec,
    args: &StartArgs,
) -> Result<Box<AgentProposals>> {
    let mut cfg = agent_config(target)?;
    if let Some(kind) = &args.agent {
        cfg.provider = kind.parse::<ProviderKind>()?;
    }
    if let Some(model) = &args.model {
        cfg.model = Some(model.clone());
    }
    if let Some(url) = &args.base_url {
        cfg.base_url = Some(url.clone());
    }
    let space =
        OfflineSpace::load(&ws.root).context("reading [proposer.offline] of agentloop.toml")?;
    let inner = from_config(&cfg, space)?;
    tracing::info!("proposer: {} ({})", inner.provider(), inner.reason());
    Ok(Box::new(AgentProposals::new(inner, &target.metric)?))
}

fn agent_config(target: &TargetSpec) -> Result<AgentConfig> {
    match target.extra.get("agent") {
        None => Ok(AgentConfig::default()),
        Some(table) => {
            let mut doc = toml::Table::new();
            doc.insert("agent".into(), table.clone());
            Ok(AgentConfig::from_toml(&toml::to_string(&doc)?)?)
        }
    }
}

impl AgentProposals {
    pub fn new(inner: AnyProposer, metric: &str) -> Result<AgentProposals> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime for the LLM client")?;
        Ok(AgentProposals {
            inner,
            metric: metric.to_string(),
            runtime,
        })
    }
}

/// The loop's view of an LLM error: wait on a transient one; name the setting on a fatal one.
fn provider_failure(e: &LlmError) -> ProviderFailure {
    let transient = e.class() == ErrorClass::Transient;
    let message = match e.setting_to_fix() {
        Some(setting) if !transient => {
            format!(
                "{e}; fix {setting} in agentloop.toml, then `agentloop start` resumes the session"
            )
        }
        _ => e.to_string(),
    };
    ProviderFailure {
        transient,
        status: e.status(),
        retry_after: e.retry_after(),
        message,
    }
}

impl Proposals for AgentProposals {
    fn propose(&mut self, ctx: &Context) -> Result<Option<Reply>> {
        let pctx = ProposalContext {
            editable_files: ctx.editable_files.clone(),
            history: ctx.history.clone(),
            noise_floor: ctx.noise_floor,
            min_gain: ctx.min_gain,
            budget_left: ctx.budget_left,
            metric: self.metric.clone(),
            request: ctx.ask.clone(),
            notice: ctx.notice.clone(),
        };
        match self.runtime.block_on(self.inner.propose(&pctx)) {
            Ok(p) => Ok(Some(Reply {
                description: p.description,
                rationale: p.rationale,
                patch_text: p.patch_text,
                patch_format: p.patch_format.as_str().to_string(),
                malformed: None,
                provider: Some(p.provider),
                model: Some(p.model),
                prompt_tokens: Some(p.prompt_tokens),
                completion_tokens: Some(p.completion_tokens),
                cost_usd: Some(p.cost_usd),
                prompt_template_sha256: Some(p.prompt_template_sha256),
            })),
            // A reply without a usable patch is a result to record, not a failure of the loop.
            Err(ProposeError::BadReply(bad)) => Ok(Some(Reply {
                description: "unusable reply".into(),
                rationale: String::new(),
                patch_text: bad.reply_text,
                patch_format: "none".into(),
                malformed: Some(bad.error.to_string()),
                provider: Some(bad.provider),
                model: Some(bad.model),
                prompt_tokens: Some(bad.usage.prompt_tokens),
                completion_tokens: Some(bad.usage.completion_tokens),
                cost_usd: Some(bad.usage.cost_usd),
                prompt_template_sha256: None,
            })),
            Err(ProposeError::Exhausted { tried }) => {
                tracing::info!("the offline search space is exhausted ({tried} settings tried)");
                Ok(None)
            }
            Err(ProposeError::Llm(e)) => Err(provider_failure(&e).into()),
            Err(e) => Err(e.into()),
        }
    }

    fn kind(&self) -> &str {
        self.inner.provider()
    }

    fn apply(
        &self,
        patch_text: &str,
        read: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<Edit>, String> {
        let parsed = patch::parse(patch_text).map_err(|e| e.to_string())?;
        let edits = patch::apply(&parsed, read).map_err(|e| e.to_string())?;
        Ok(edits
            .into_iter()
            .map(|e| Edit {
                path: e.path,
                before: e.before,
                after: e.after,
            })
            .collect())
    }
}
