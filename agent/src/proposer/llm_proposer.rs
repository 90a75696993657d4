//! A proposer that asks a language model: render the prompts, call the provider, parse the
//! reply into a patch.

use super::{BadReply, Proposal, ProposalContext, ProposeError, Proposer};
use crate::llm::LlmClient;
use crate::patch::parse_reply;
use crate::prompts::Templates;

#[derive(Debug, Clone)]
pub struct LlmProposer {
    client: LlmClient,
    templates: Templates,
    templates_sha256: String,
}

impl LlmProposer {
    pub fn new(client: LlmClient, templates: Templates) -> Self {
        let templates_sha256 = templates.sha256();
        LlmProposer {
            client,
            templates,
            templates_sha256,
        }
    }

    pub fn client(&self) -> &LlmClient {
        &self.client
    }
}

impl Proposer for LlmProposer {
    async fn propose(&mut self, ctx: &ProposalContext) -> Result<Proposal, ProposeError> {
        let messages = self.templates.render(ctx)?;
        let completion = self.client.complete(&messages).await?;
        let reply = match parse_reply(&completion.text) {
            Ok(r) => r,
            Err(error) => {
                return Err(ProposeError::BadReply(Box::new(BadReply {
                    error,
                    reply_text: completion.text,
                    provider: self.client.provider().to_string(),
                    model: completion.model,
                    usage: completion.usage,
                })))
            }
        };
        Ok(Proposal {
            description: reply.description,
            rationale: reply.rationale,
            patch_text: reply.patch.to_text(),
            patch_format: reply.patch.format(),
            patch: reply.patch,
            reply_text: completion.text,
            provider: self.client.provider().to_string(),
            model: completion.model,
            prompt_tokens: completion.usage.prompt_tokens,
            completion_tokens: completion.usage.completion_tokens,
            cost_usd: completion.usage.cost_usd,
            prompt_template_sha256: self.templates_sha256.clone(),
        })
    }
}
