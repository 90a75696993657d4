//! Scripted model replies for the e2e tests: the format the loop asks the model for, so a
//! test's patch goes through the same parser and policy as a real reply.

use agentloop::testing::CannedReply;

/// An OpenAI chat completion whose text is a reply in the loop's format (900 prompt and 120
/// completion tokens, for the cost column).
pub fn reply(description: &str, rationale: &str, blocks: &str) -> CannedReply {
    CannedReply::openai_chat(
        &format!("DESCRIPTION: {description}\nRATIONALE: {rationale}\n\n{blocks}"),
        900,
        120,
    )
}

/// One search/replace block on `path`.
pub fn block(path: &str, search: &str, replace: &str) -> String {
    format!("{path}\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n")
}
