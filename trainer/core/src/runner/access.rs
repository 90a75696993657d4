//! The capability token that lets the runner, and nothing else, load the evaluation tokens.

/// Proof of being the frozen runner: only the `runner` module can create one, and the validation
/// and holdout tokens cannot be loaded without it.
pub struct EvalAccess(());

impl EvalAccess {
    /// Visible only inside the `runner` module, so no other code can construct the token.
    pub(in crate::runner) fn new() -> Self {
        EvalAccess(())
    }
}
