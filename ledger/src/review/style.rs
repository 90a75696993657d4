//! How review text looks: ANSI colours for terminals, and the number and string formats of its cells.

use crate::ChangeStatus;

/// ANSI colours, used only when the output is a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    pub(super) fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }
    pub(super) fn green(self, text: &str) -> String {
        self.paint("32", text)
    }
    pub(super) fn red(self, text: &str) -> String {
        self.paint("31", text)
    }
    pub(super) fn cyan(self, text: &str) -> String {
        self.paint("36", text)
    }
    fn yellow(self, text: &str) -> String {
        self.paint("33", text)
    }

    pub(super) fn status(self, status: ChangeStatus) -> String {
        let label = format!("{:<15}", status.label());
        match status {
            ChangeStatus::Accepted => self.green(&label),
            ChangeStatus::Rejected | ChangeStatus::Proposed => label,
            ChangeStatus::RolledBack => self.yellow(&label),
            _ => self.red(&label),
        }
    }
}

pub(super) fn fmt_opt(v: Option<f64>, places: usize) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.places$}"))
}

pub(super) fn fmt_p(p: Option<f64>) -> String {
    p.map_or("-".to_string(), |p| format!("{p:.2e}"))
}

pub(super) fn short(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
