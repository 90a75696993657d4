//! Live progress during `agentloop start`: a budget bar with the current change, its stage, the
//! best trunk metric and the counts on a terminal; plain log lines otherwise (CI, `nohup`, a
//! pipe). Fed the ledger's events as the loop appends them, so it shows exactly what `status`
//! would.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use agentloop_ledger::Event;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::status::{format_duration, one_line};
use crate::report::summary::{Replay, SummaryError};
use crate::report::Status;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An indicatif bar on stderr (redrawn in place).
    Bar,
    /// One line per change of state, on the writer given.
    Lines,
    /// Nothing (tests, `--quiet`).
    Hidden,
}

impl Mode {
    /// A bar when stdout is a terminal, plain lines when it is not.
    pub fn detect() -> Mode {
        if std::io::stdout().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }
}

enum Output {
    Bar(ProgressBar),
    Lines(Box<dyn Write + Send>),
    Hidden,
}

pub struct Progress {
    replay: Replay,
    output: Output,
    /// The last line written, without the clock, so a line is logged only when something
    /// a person cares about changed.
    last_key: String,
}

impl Progress {
    /// Lines go to stdout.
    pub fn new(mode: Mode) -> Progress {
        match mode {
            Mode::Bar => Progress::with_output(Output::Bar(new_bar())),
            Mode::Lines => Progress::lines(Box::new(std::io::stdout())),
            Mode::Hidden => Progress::with_output(Output::Hidden),
        }
    }

    /// Plain lines to `out`.
    pub fn lines(out: Box<dyn Write + Send>) -> Progress {
        Progress::with_output(Output::Lines(out))
    }

    fn with_output(output: Output) -> Progress {
        Progress {
            replay: Replay::default(),
            output,
            last_key: String::new(),
        }
    }

    /// Takes in the events already in the ledger (a resumed session), then shows the state.
    pub fn catch_up(&mut self, events: &[Event]) -> Result<(), SummaryError> {
        for e in events {
            self.replay.apply(e)?;
        }
        self.refresh();
        Ok(())
    }

    /// One event the loop just appended.
    pub fn record(&mut self, event: &Event) -> Result<(), SummaryError> {
        self.replay.apply(event)?;
        self.refresh();
        Ok(())
    }

    /// What is shown now (`None` before the session_start event).
    pub fn status(&self) -> Option<Status> {
        self.replay.status()
    }

    /// Leaves the bar's last state on screen.
    pub fn finish(&mut self) {
        if let Output::Bar(bar) = &self.output {
            bar.finish();
        }
    }

    fn refresh(&mut self) {
        let Some(status) = self.replay.status() else {
            return;
        };
        let line = one_line(&status);
        match &mut self.output {
            Output::Bar(bar) => {
                bar.set_length(status.budget_s.max(1.0) as u64);
                bar.set_position(status.spent_s.min(status.budget_s) as u64);
                bar.set_message(line);
            }
            Output::Lines(out) => {
                // The clock moves with every event; log only when the rest changed.
                let key = line
                    .rsplit_once(" | ")
                    .map_or(line.as_str(), |(k, _)| k)
                    .to_string();
                if key != self.last_key {
                    // A closed stdout must not stop the loop; the ledger has it all anyway.
                    let _ = writeln!(
                        out,
                        "[{} / {}] {}",
                        format_duration(status.spent_s),
                        format_duration(status.budget_s),
                        key
                    );
                    let _ = out.flush();
                    self.last_key = key;
                }
            }
            Output::Hidden => {}
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

fn new_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{spinner} [{bar:30}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}
