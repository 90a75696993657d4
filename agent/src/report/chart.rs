//! The metric-per-change chart, drawn once for any plotters backend: PNG and SVG files, and the
//! SVG inlined in the HTML report.
//!
//! Text is drawn with DejaVu Sans compiled into the binary (plotters' `ab_glyph` backend), not
//! with system fonts, so the PNG is the same picture on every machine.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::summary::{ChangeState, ChangeSummary, SessionSummary};

/// Pixel size of the PNG (and the SVG's view box).
pub const WIDTH: u32 = 1100;
pub const HEIGHT: u32 = 520;

const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("drawing the chart: {0}")]
    Draw(String),
    #[error("the bundled chart font could not be loaded")]
    Font,
}

fn draw_err<E: std::fmt::Debug>(e: E) -> ChartError {
    ChartError::Draw(format!("{e:?}"))
}

fn register_font() -> Result<(), ChartError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok()
    });
    ok.then_some(()).ok_or(ChartError::Font)
}

/// Colour and shape of each kind of candidate; the HTML table uses the same colours.
pub fn state_color(state: ChangeState) -> RGBColor {
    match state {
        ChangeState::Accepted => RGBColor(0x1a, 0x9a, 0x3c),
        ChangeState::Rejected => RGBColor(0x8c, 0x8c, 0x8c),
        ChangeState::Crashed => RGBColor(0xd6, 0x27, 0x28),
        ChangeState::PolicyRejected => RGBColor(0x94, 0x4f, 0xc4),
        ChangeState::BuildFailed => RGBColor(0x8c, 0x56, 0x4b),
        ChangeState::RolledBack => RGBColor(0xe6, 0x8a, 0x00),
        ChangeState::Superseded => RGBColor(0xbc, 0xbd, 0x22),
        ChangeState::InFlight => RGBColor(0x1f, 0x77, 0xb4),
    }
}

const AUDIT_HELD: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const AUDIT_FLAGGED: RGBColor = RGBColor(0xd6, 0x27, 0x28);

pub fn write_png(summary: &SessionSummary, path: &Path) -> Result<(), ChartError> {
    register_font()?;
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    draw(summary, &root)?;
    root.present().map_err(draw_err)
}

pub fn render_svg(summary: &SessionSummary) -> Result<String, ChartError> {
    register_font()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        draw(summary, &root)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// A decided change's gain against its own trunk (trunk minus candidate, positive helped), as
/// its decision measured it: the mean paired difference, or a greedy rule's one run against
/// the trunk's value. `None` for changes that measured nothing (crashed, policy, build).
fn gain(c: &ChangeSummary) -> Option<f64> {
    c.effect.filter(|v| v.is_finite())
}

/// The gain's interval from the decision record, when its test gave one.
fn gain_ci(c: &ChangeSummary) -> Option<(f64, f64)> {
    c.ci.filter(|(a, b)| a.is_finite() && b.is_finite())
}

fn padded((lo, hi): (f64, f64)) -> (f64, f64) {
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(hi.abs().max(lo.abs()).max(1e-9) * 1e-3);
    (lo - pad, hi + pad)
}

fn extent(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        })
}

/// The trunk as a step line from the first measurement to the right edge.
fn trunk_steps(summary: &SessionSummary, x_end: f64) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    for (i, level) in summary.trunk.iter().enumerate() {
        if i > 0 {
            points.push((level.x, summary.trunk[i - 1].value));
        }
        points.push((level.x, level.value));
    }
    if let Some(last) = summary.trunk.last() {
        points.push((x_end, last.value));
    }
    points
}

/// Two panels on one x axis (the changes in the order proposed): above, the trunk's level;
/// below, each decided change's gain against the trunk it was tested on, with its interval.
/// A rejected change is never drawn at its absolute metric, where a different trunk or other
/// seeds could put it below the trunk line and make it look like a missed win.
fn draw<DB: DrawingBackend>(
    summary: &SessionSummary,
    root: &DrawingArea<DB, Shift>,
) -> Result<(), ChartError> {
    root.fill(&WHITE).map_err(draw_err)?;
    let (top, bottom) = root.split_vertically(HEIGHT * 2 / 5);
    // Both panels share the x axis; the gains' legend gets its own column so it hides no point.
    let (top, _) = top.split_horizontally(WIDTH - LEGEND_W);
    let (bottom, legend) = bottom.split_horizontally(WIDTH - LEGEND_W);
    let x_end = summary.changes.len().max(1) as f64 + 0.5;
    draw_trunk(summary, &top, x_end)?;
    let entries = draw_gains(summary, &bottom, x_end)?;
    draw_legend(&legend, &entries)
}

/// Width of the legend column beside the plots, in pixels.
const LEGEND_W: u32 = 250;

/// What a legend entry is drawn with.
enum Glyph {
    State(ChangeState),
    Line(RGBColor),
    Bar,
    Greedy,
    /// A continuation line of the entry above.
    None,
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(String, Glyph)],
) -> Result<(), ChartError> {
    let x = 6;
    for (i, (text, glyph)) in entries.iter().enumerate() {
        let y = 24 + 17 * i as i32;
        match glyph {
            Glyph::State(state) => area.draw(&marker(*state, (x + 8, y), state_color(*state), 5)),
            Glyph::Line(color) => area.draw(&PathElement::new(
                [(x, y), (x + 16, y)],
                color.stroke_width(1),
            )),
            Glyph::Bar => area.draw(&PathElement::new(
                [(x + 8, y - 6), (x + 8, y + 6)],
                BLACK.stroke_width(1),
            )),
            Glyph::Greedy => area.draw(&Rectangle::new(
                [(x + 3, y - 5), (x + 13, y + 5)],
                BLACK.stroke_width(2),
            )),
            Glyph::None => Ok(()),
        }
        .map_err(draw_err)?;
        area.draw(&Text::new(text.clone(), (x + 24, y - 7), (FONT, 12)))
            .map_err(draw_err)?;
    }
    Ok(())
}

fn x_labels(x: &f64) -> String {
    // Changes are numbered 1, 2, ...: whole numbers only, or ticks at 0.5 would print as
    // duplicated integers.
    if x.fract().abs() < 1e-9 {
        format!("{x:.0}")
    } else {
        String::new()
    }
}

fn draw_trunk<DB: DrawingBackend>(
    summary: &SessionSummary,
    area: &DrawingArea<DB, Shift>,
    x_end: f64,
) -> Result<(), ChartError> {
    let (y_lo, y_hi) = padded(extent(summary.trunk.iter().map(|l| l.value)));
    let caption = format!(
        "{}: the trunk's {} ({} proposed, {} accepted)",
        summary.session, summary.metric, summary.counts.proposed, summary.counts.accepted
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 18))
        .margin(10)
        .x_label_area_size(22)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_end, y_lo..y_hi)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .y_desc(format!("trunk {}", summary.metric))
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .x_label_formatter(&x_labels)
        .y_label_formatter(&|y| format!("{y:.4}"))
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .draw()
        .map_err(draw_err)?;

    // One legend entry per audit outcome, however many audits there were.
    let mut labelled: Vec<&str> = Vec::new();
    for audit in &summary.audits {
        let color = if audit.outcome == "held" {
            AUDIT_HELD
        } else {
            AUDIT_FLAGGED
        };
        let series = chart
            .draw_series(DashedLineSeries::new(
                [(audit.x, y_lo), (audit.x, y_hi)],
                6,
                4,
                color.stroke_width(2),
            ))
            .map_err(draw_err)?;
        if !labelled.contains(&audit.outcome.as_str()) {
            labelled.push(&audit.outcome);
            series
                .label(format!("holdout audit ({})", audit.outcome))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
    }
    let trunk = trunk_steps(summary, x_end);
    if !trunk.is_empty() {
        chart
            .draw_series(LineSeries::new(trunk, BLACK.stroke_width(2)))
            .map_err(draw_err)?
            .label(format!(
                "trunk {} (lower is better; steps at merges)",
                summary.metric
            ))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(0xbb, 0xbb, 0xbb))
        .label_font((FONT, 12))
        .draw()
        .map_err(draw_err)
}

/// The gains panel; returns its legend's entries (drawn beside it).
fn draw_gains<DB: DrawingBackend>(
    summary: &SessionSummary,
    area: &DrawingArea<DB, Shift>,
    x_end: f64,
) -> Result<Vec<(String, Glyph)>, ChartError> {
    let grey = RGBColor(0x55, 0x55, 0x55);
    let mut legend = vec![
        ("0: no gain over the trunk".to_string(), Glyph::Line(grey)),
        ("it was tested on (above: better)".to_string(), Glyph::None),
    ];
    let values = summary.changes.iter().flat_map(|c| {
        let ci = gain_ci(c);
        [gain(c), ci.map(|x| x.0), ci.map(|x| x.1)]
            .into_iter()
            .flatten()
    });
    let (lo, hi) = extent(values.chain([0.0]));
    let (y_lo, y_hi) = padded((lo, hi));
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_end, y_lo..y_hi)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("change, in the order proposed")
        .y_desc("gain vs its own trunk")
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .x_label_formatter(&x_labels)
        .y_label_formatter(&|y| format!("{y:+.4}"))
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .draw()
        .map_err(draw_err)?;
    // Zero: no gain over the trunk the change was tested on.
    chart
        .draw_series(LineSeries::new(
            [(0.0, 0.0), (x_end, 0.0)],
            grey.stroke_width(1),
        ))
        .map_err(draw_err)?;

    // Intervals first, so the points sit on top of them.
    let intervals: Vec<_> = summary
        .changes
        .iter()
        .filter_map(|c| Some((c, gain_ci(c)?, gain(c)?)))
        .collect();
    if !intervals.is_empty() {
        chart
            .draw_series(intervals.iter().map(|(c, (a, b), g)| {
                ErrorBar::new_vertical(
                    c.index as f64,
                    *a,
                    *g,
                    *b,
                    state_color(c.state).stroke_width(1),
                    8,
                )
            }))
            .map_err(draw_err)?;
        legend.push(("95% interval of the mean paired gain".into(), Glyph::Bar));
    }

    // Smaller markers when there are many changes, so a night of 300 stays readable.
    let size = (6.0 * (40.0 / summary.changes.len().max(1) as f64).sqrt()).clamp(2.5, 6.0) as i32;
    for state in [
        ChangeState::Rejected,
        ChangeState::Accepted,
        ChangeState::RolledBack,
        ChangeState::Superseded,
        ChangeState::Crashed,
        ChangeState::BuildFailed,
        ChangeState::PolicyRejected,
        ChangeState::InFlight,
    ] {
        // Changes that measured nothing sit on the zero line, with their own glyph.
        let points: Vec<(f64, f64)> = summary
            .changes
            .iter()
            .filter(|c| c.state == state && !c.no_test)
            .map(|c| (c.index as f64, gain(c).unwrap_or(0.0)))
            .collect();
        if points.is_empty() {
            continue;
        }
        let color = state_color(state);
        let label = match state {
            ChangeState::Crashed | ChangeState::BuildFailed | ChangeState::PolicyRejected => {
                format!("{} (no gain measured)", state.label())
            }
            other => other.label(),
        };
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(move |p| marker(state, p, color, size)),
            )
            .map_err(draw_err)?;
        legend.push((label, Glyph::State(state)));
    }
    // Greedy decisions: one run against the trunk's value, so a point and no interval.
    let greedy: Vec<(f64, f64, RGBColor)> = summary
        .changes
        .iter()
        .filter(|c| c.no_test)
        .map(|c| (c.index as f64, gain(c).unwrap_or(0.0), state_color(c.state)))
        .collect();
    if !greedy.is_empty() {
        // About `size` pixels on each axis (the plotting area, less its axis labels).
        let half = (
            x_end * size as f64 / (WIDTH - LEGEND_W - 100) as f64,
            (y_hi - y_lo) * size as f64 / 250.0,
        );
        chart
            .draw_series(greedy.into_iter().map(move |(x, y, color)| {
                let filled = color == state_color(ChangeState::Accepted);
                square((x, y), half, color, filled)
            }))
            .map_err(draw_err)?;
        legend.push(("greedy: one run, no statistical test".into(), Glyph::Greedy));
        legend.push(("(no interval; filled = kept)".into(), Glyph::None));
    }
    Ok(legend)
}

/// A greedy decision's point: a square in data units (`half`: its half-size on each axis),
/// filled when kept.
fn square(
    (x, y): (f64, f64),
    half: (f64, f64),
    color: RGBColor,
    filled: bool,
) -> Rectangle<(f64, f64)> {
    let style = if filled {
        color.filled()
    } else {
        color.stroke_width(2)
    };
    Rectangle::new([(x - half.0, y - half.1), (x + half.0, y + half.1)], style)
}

/// One glyph per kind: filled circle (kept), hollow circle (rejected), cross (crashed,
/// build-failed), triangle (policy-rejected).
fn marker<C: Clone + 'static, DB: DrawingBackend>(
    state: ChangeState,
    at: C,
    color: RGBColor,
    size: i32,
) -> DynElement<'static, DB, C> {
    let stroke = if size >= 5 { 2 } else { 1 };
    match state {
        ChangeState::Accepted | ChangeState::RolledBack | ChangeState::InFlight => {
            Circle::new(at, size, color.filled()).into_dyn()
        }
        ChangeState::Rejected | ChangeState::Superseded => {
            Circle::new(at, size - 1, color.stroke_width(stroke)).into_dyn()
        }
        ChangeState::Crashed | ChangeState::BuildFailed => {
            Cross::new(at, size, color.stroke_width(stroke + 1)).into_dyn()
        }
        ChangeState::PolicyRejected => TriangleMarker::new(at, size + 1, color.filled()).into_dyn(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(state: ChangeState, effect: Option<f64>, candidate: Option<f64>) -> ChangeSummary {
        ChangeSummary {
            id: "c1".into(),
            index: 1,
            first_seq: 1,
            state,
            stage: None,
            description: String::new(),
            rationale: String::new(),
            patch: String::new(),
            model: None,
            effect,
            ci: None,
            p_value: None,
            no_test: false,
            mean_baseline: None,
            candidate_metric: candidate,
            trunk_metric_before: Some(3.70),
            runs: 2,
            run_s: 1.0,
            reason: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_usd: 0.0,
        }
    }

    #[test]
    fn a_rejected_change_is_drawn_at_its_gain_over_its_own_trunk_not_its_absolute_metric() {
        // Its runs came out at 3.65 (below the trunk's level of 3.70, e.g. on lucky seeds), but
        // against its own trunk on the same seeds it lost 0.002: it is drawn below zero.
        let c = change(ChangeState::Rejected, Some(-0.002), Some(3.65));
        assert_eq!(gain(&c), Some(-0.002));
        // No gain measured (a crash): nothing to draw as a gain.
        let c = change(ChangeState::Crashed, None, None);
        assert_eq!(gain(&c), None);
    }
}
