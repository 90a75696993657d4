//! Why a prompt template could not be read or rendered. Its own file so the proposer can name
//! it without importing the renderer (which imports the proposer's request types).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PromptError {
    #[error("prompt template {template}: placeholder {{{{{name}}}}} has no value")]
    MissingValue { template: String, name: String },
    #[error("prompt template {template}: `{{{{` at byte {offset} is never closed with `}}}}`")]
    Unclosed { template: String, offset: usize },
    #[error("cannot read prompt template {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}
