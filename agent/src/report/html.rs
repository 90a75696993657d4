//! The HTML report: one self-contained file (inline SVG chart, inline style and script, no
//! network), readable in any browser after a night of experiments.

use std::fmt::Write as _;

use super::chart::state_color;
use super::status::{counts_line, format_duration};
use super::summary::{ChangeState, ChangeSummary, SessionSummary};

/// What the ledger says about its own integrity, shown at the bottom of the report.
#[derive(Debug, Clone)]
pub struct Integrity {
    pub head_seq: Option<i64>,
    pub head_hash: Option<String>,
    pub verified: bool,
    pub events_checked: i64,
    pub problems: Vec<String>,
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn num(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => "–".into(),
    }
}

fn p_value(v: Option<f64>) -> String {
    match v {
        Some(p) if p < 1e-4 => format!("{p:.1e}"),
        other => num(other, 4),
    }
}

fn css_hex(state: ChangeState) -> String {
    let c = state_color(state);
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
.sub{color:#666;margin-top:0}
.cards{display:flex;flex-wrap:wrap;gap:.8em}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em .9em;min-width:11em}
.card b{display:block;font-size:1.3em}
#chart svg{max-width:100%;height:auto;border:1px solid #eee}
table{border-collapse:collapse;width:100%;font-size:.92em}
th,td{border-bottom:1px solid #eee;padding:.35em .5em;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.status{font-weight:600;white-space:nowrap}
.no-test{color:#d62728;font-weight:600;white-space:nowrap}
pre{background:#f6f8fa;padding:.6em;overflow:auto;max-height:30em;font-size:.85em}
.ok{color:#1a9a3c;font-weight:600} .bad{color:#d62728;font-weight:600}
code.hash{word-break:break-all}
.filters button{margin-right:.3em}
"#;

/// Lets the reader show one kind of change at a time. It also marks the page as loaded and
/// notes where the chart was laid out (`data-ready`, `data-chart-rect`), which the headless
/// browser test reads.
const SCRIPT: &str = r#"
(function(){
  var rows=document.querySelectorAll('#changes tbody tr.change');
  document.querySelectorAll('.filters button').forEach(function(b){
    b.addEventListener('click',function(){
      var want=b.getAttribute('data-status');
      rows.forEach(function(r){
        var show=want==='all'||r.getAttribute('data-status')===want;
        r.style.display=show?'':'none';
      });
    });
  });
  var svg=document.querySelector('#chart svg');
  if(svg){var r=svg.getBoundingClientRect();
    document.body.setAttribute('data-chart-rect',[r.left,r.top,r.width,r.height].map(Math.round).join(','));}
  document.body.setAttribute('data-ready','1');
})();
"#;

pub fn render(summary: &SessionSummary, svg: &str, integrity: &Integrity) -> String {
    let mut h = String::new();
    let s = summary;
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>agentloop report: {session}</title><style>{STYLE}</style></head><body>\n\
         <h1>agentloop session {session}</h1>\
         <p class=\"sub\">trunk <code>{branch}</code> at <code>{commit}</code>, from <code>{base}</code>; \
         proposer {agent}{model}; started {started}; {state}</p>\n",
        session = escape(&s.session),
        branch = escape(&s.trunk_branch),
        commit = escape(&s.trunk_commit),
        base = escape(&s.base_commit),
        agent = escape(&s.agent),
        model = s
            .model
            .as_deref()
            .map(|m| format!(" ({})", escape(m)))
            .unwrap_or_default(),
        started = escape(&s.started),
        state = match (&s.ended, &s.verdict) {
            (Some(r), Some(v)) => format!("ended: {}; final verdict: {}", escape(r), escape(v)),
            (Some(r), None) => format!("ended: {}", escape(r)),
            (None, _) => "still running (or killed)".into(),
        },
    );
    cards(&mut h, s);
    let _ = writeln!(
        h,
        "<h2>Metric per change</h2><figure id=\"chart\">{svg}\
         <figcaption>Above, the trunk's level (steps at merges; dashed lines are holdout audits); below, \
         each decided change's gain against the trunk it was tested on, with the 95% interval of \
         its mean paired gain where its test gave one (greedy decisions: one run, no interval). Also as \
         <a href=\"chart.png\">chart.png</a> and <a href=\"chart.svg\">chart.svg</a>.</figcaption></figure>"
    );
    changes_table(&mut h, s);
    audits(&mut h, s);
    budget(&mut h, s);
    ledger(&mut h, integrity);
    let _ = writeln!(
        h,
        "<p class=\"sub\">Computed from the ledger alone, up to event {}.</p>\
         <script>{SCRIPT}</script></body></html>",
        s.last_seq
    );
    h
}

fn cards(h: &mut String, s: &SessionSummary) {
    let gain = s.baseline_metric.zip(s.trunk_metric).map(|(b, t)| b - t);
    let card = |h: &mut String, title: &str, value: String, note: String| {
        let _ = write!(
            h,
            "<div class=\"card\">{}<b>{}</b>{}</div>",
            escape(title),
            escape(&value),
            escape(&note)
        );
    };
    h.push_str("<div class=\"cards\">");
    card(
        h,
        "changes",
        s.counts.proposed.to_string(),
        counts_line(&s.counts),
    );
    card(
        h,
        &format!("trunk {}", s.metric),
        num(s.trunk_metric, 6),
        format!(
            "baseline {}, best {}",
            num(s.baseline_metric, 6),
            num(s.best_trunk_metric, 6)
        ),
    );
    card(
        h,
        "gain kept",
        num(gain, 6),
        format!(
            "run-to-run sd {}, min effect {}",
            num(s.run_sd, 6),
            num(s.min_effect, 6)
        ),
    );
    card(
        h,
        "budget",
        format!(
            "{} / {}",
            format_duration(s.spent_s),
            format_duration(s.budget_s)
        ),
        format!("{} left", format_duration(s.left_s)),
    );
    h.push_str("</div>\n");
}

fn changes_table(h: &mut String, s: &SessionSummary) {
    h.push_str(
        "<h2>Changes</h2><p class=\"filters\">Show: <button data-status=\"all\">all</button>",
    );
    for state in [
        ChangeState::Accepted,
        ChangeState::Rejected,
        ChangeState::Crashed,
        ChangeState::PolicyRejected,
        ChangeState::BuildFailed,
        ChangeState::RolledBack,
        ChangeState::Superseded,
        ChangeState::InFlight,
    ] {
        if s.changes.iter().any(|c| c.state == state) {
            let _ = write!(
                h,
                "<button data-status=\"{}\">{}</button>",
                state.as_str(),
                state.label()
            );
        }
    }
    h.push_str(
        "</p><table id=\"changes\"><thead><tr><th>#</th><th>change</th><th>status</th>\
         <th>description</th><th>effect</th><th>interval</th><th>p</th><th>runs</th></tr></thead><tbody>\n",
    );
    for c in &s.changes {
        change_row(h, c);
    }
    h.push_str("</tbody></table>\n<p class=\"sub\">Effect = trunk minus candidate in the \
                metric (positive helped); interval and p from the paired test that decided it.</p>\n");
}

fn change_row(h: &mut String, c: &ChangeSummary) {
    let interval =
        c.ci.map(|(lo, hi)| format!("[{}, {}]", num(Some(lo), 5), num(Some(hi), 5)))
            .unwrap_or_else(|| "–".into());
    let stage = c
        .stage
        .as_deref()
        .map(|st| format!(" ({})", escape(st)))
        .unwrap_or_default();
    let _ = writeln!(
        h,
        "<tr class=\"change\" id=\"change-{id}\" data-change=\"{id}\" data-status=\"{status}\">\
         <td class=\"n\">{index}</td><td><code>{id}</code></td>\
         <td class=\"status\" style=\"color:{color}\">{label}{stage}</td>\
         <td>{desc}<details><summary>diff and rationale</summary>\
         <p><b>Rationale.</b> {rationale}</p>{reason}<pre>{patch}</pre></details></td>\
         <td class=\"n\">{effect}</td><td class=\"n\">{interval}</td><td class=\"n\">{p}</td>\
         <td class=\"n\">{runs}</td></tr>",
        id = escape(&c.id),
        index = c.index,
        status = c.state.as_str(),
        color = css_hex(c.state),
        label = c.state.label(),
        desc = escape(&c.description),
        rationale = escape(&c.rationale),
        reason = c
            .reason
            .as_deref()
            .map(|r| format!("<p><b>Decision.</b> {}</p>", escape(r)))
            .unwrap_or_default(),
        patch = escape(&c.patch),
        effect = num(c.effect, 5),
        p = if c.no_test {
            "<span class=\"no-test\" title=\"greedy rule: one run, kept if lower\">no statistical test</span>".to_string()
        } else {
            p_value(c.p_value)
        },
        runs = c.runs,
    );
}

fn audits(h: &mut String, s: &SessionSummary) {
    h.push_str("<h2>Holdout audits</h2>");
    if s.audits.is_empty() {
        h.push_str("<p>No holdout audit in this session.</p>\n");
        return;
    }
    h.push_str(
        "<table id=\"audits\"><thead><tr><th>after change</th><th>trunk commit</th>\
         <th>outcome</th><th>gain on holdout</th><th>p</th></tr></thead><tbody>",
    );
    for a in &s.audits {
        let _ = write!(
            h,
            "<tr><td class=\"n\">{}</td><td><code>{}</code></td><td class=\"{}\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            (a.x - 0.5) as usize,
            escape(&a.trunk_commit),
            if a.outcome == "held" { "ok" } else { "bad" },
            escape(&a.outcome),
            num(a.mean_diff, 5),
            p_value(a.p_value)
        );
    }
    h.push_str("</tbody></table>\n");
}

fn budget(h: &mut String, s: &SessionSummary) {
    let c = &s.costs;
    let rows = [
        (
            "wall clock",
            format!(
                "{} of {} ({} left)",
                format_duration(s.spent_s),
                format_duration(s.budget_s),
                format_duration(s.left_s)
            ),
        ),
        (
            "training runs (GPU/CPU time)",
            format!("{} in {} runs", format_duration(c.training_s), c.runs),
        ),
        ("builds", format_duration(c.build_s)),
        (
            "base build, before the budget",
            format_duration(c.base_build_s),
        ),
        ("lost to crashes", format_duration(c.crash_lost_s)),
        (
            "LLM tokens",
            format!(
                "{} prompt + {} completion",
                c.prompt_tokens, c.completion_tokens
            ),
        ),
        ("LLM cost", format!("${:.4}", c.cost_usd)),
    ];
    h.push_str("<h2>Budget and cost</h2><table id=\"budget\"><tbody>");
    for (k, v) in rows {
        let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(&v));
    }
    h.push_str("</tbody></table>\n");
}

fn ledger(h: &mut String, i: &Integrity) {
    let head = match (i.head_seq, &i.head_hash) {
        (Some(seq), Some(hash)) => format!("{seq}:{}", escape(hash)),
        _ => "(empty)".into(),
    };
    let _ = write!(
        h,
        "<h2>Ledger</h2><table id=\"ledger\"><tbody>\
         <tr><th>head</th><td><code class=\"hash\" id=\"ledger-head\">{head}</code></td></tr>\
         <tr><th>ledger verify</th><td id=\"ledger-verify\" class=\"{cls}\">{verdict}</td></tr>\
         </tbody></table>",
        cls = if i.verified { "ok" } else { "bad" },
        verdict = if i.verified {
            format!("passed ({} events checked)", i.events_checked)
        } else {
            format!("FAILED ({} problems)", i.problems.len())
        },
    );
    if !i.problems.is_empty() {
        h.push_str("<ul>");
        for p in &i.problems {
            let _ = write!(h, "<li>{}</li>", escape(p));
        }
        h.push_str("</ul>");
    }
    h.push('\n');
}
