//! Line-ending helpers: replies are parsed with `\n` only; files keep their own endings.

/// Replaces `\r\n` (and lone `\r`) with `\n`.
pub fn normalize_newlines(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// A file's content with `\n` line endings, remembering whether it used `\r\n`,
/// so that an edit written with `\n` can be applied and written back in the file's style.
pub struct Normalized {
    pub text: String,
    crlf: bool,
}

impl Normalized {
    pub fn new(content: &str) -> Self {
        let crlf = content.contains("\r\n");
        let text = if crlf {
            content.replace("\r\n", "\n")
        } else {
            content.to_string()
        };
        Normalized { text, crlf }
    }

    /// Converts edited `\n` text back to the file's line endings.
    pub fn restore(&self, edited: String) -> String {
        if self.crlf {
            edited.replace('\n', "\r\n")
        } else {
            edited
        }
    }
}

/// 1-based line number of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

/// The text with trailing spaces and tabs removed from every line.
pub fn trim_line_ends(text: &str) -> String {
    text.split('\n')
        .map(|l| l.trim_end_matches([' ', '\t']))
        .collect::<Vec<_>>()
        .join("\n")
}
