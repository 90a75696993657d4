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

use super::summary::{ChangeState, SessionSummary};

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

/// Where a candidate's point goes: its own metric, or (crashed, policy-rejected, build-failed:
/// no metric) the trunk's value when it was tried.
fn point_y(c: &super::summary::ChangeSummary) -> Option<f64> {
    c.candidate_metric
        .filter(|v| v.is_finite())
        .or(c.trunk_metric_before)
}

/// The candidate-metric interval implied by the gain's interval: baseline minus gain.
fn ci_on_metric(c: &super::summary::ChangeSummary) -> Option<(f64, f64)> {
    let (lo, hi) = c.ci?;
    let baseline = c
        .mean_baseline
        .or_else(|| c.candidate_metric.zip(c.effect).map(|(m, e)| m + e))?;
    let (a, b) = (baseline - hi, baseline - lo);
    (a.is_finite() && b.is_finite()).then_some((a, b))
}

fn y_range(summary: &SessionSummary) -> (f64, f64) {
    let mut values: Vec<f64> = summary.trunk.iter().map(|l| l.value).collect();
    for c in &summary.changes {
        values.extend(point_y(c));
        if let Some((a, b)) = ci_on_metric(c) {
            values.extend([a, b]);
        }
    }
    let finite = values.into_iter().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(hi.abs().max(1e-9) * 1e-4);
    (lo - pad, hi + pad)
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

fn draw<DB: DrawingBackend>(
    summary: &SessionSummary,
    root: &DrawingArea<DB, Shift>,
) -> Result<(), ChartError> {
    root.fill(&WHITE).map_err(draw_err)?;
    let x_end = summary.changes.len().max(1) as f64 + 0.5;
    let (y_lo, y_hi) = y_range(summary);
    let caption = format!(
        "{}: {} per change ({} proposed, {} accepted)",
        summary.session, summary.metric, summary.counts.proposed, summary.counts.accepted
    );
    let mut chart = ChartBuilder::on(root)
        .caption(caption, (FONT, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_end, y_lo..y_hi)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("change, in the order proposed")
        .y_desc(format!("{} (lower is better)", summary.metric))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        // Changes are numbered 1, 2, ...: label whole numbers only, or ticks at 0.5 would
        // print as duplicated integers.
        .x_label_formatter(&|x| {
            if x.fract().abs() < 1e-9 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        })
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
            .label("trunk (kept changes)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.stroke_width(2)));
    }

    // Intervals first, so the points sit on top of them.
    let intervals: Vec<_> = summary
        .changes
        .iter()
        .filter(|c| matches!(c.state, ChangeState::Accepted | ChangeState::RolledBack))
        .filter_map(|c| ci_on_metric(c).map(|ci| (c, ci)))
        .collect();
    chart
        .draw_series(intervals.iter().map(|(c, (a, b))| {
            let x = c.index as f64;
            ErrorBar::new_vertical(
                x,
                *a,
                point_y(c).unwrap_or(*a),
                *b,
                state_color(c.state).stroke_width(2),
                10,
            )
        }))
        .map_err(draw_err)?;

    // Smaller markers when there are many changes, so a night of 300 stays readable.
    let size = (6.0 * (40.0 / summary.changes.len().max(1) as f64).sqrt()).clamp(2.5, 6.0) as i32;
    for state in [
        ChangeState::Rejected,
        ChangeState::Accepted,
        ChangeState::RolledBack,
        ChangeState::Crashed,
        ChangeState::BuildFailed,
        ChangeState::PolicyRejected,
        ChangeState::InFlight,
    ] {
        let points: Vec<(f64, f64)> = summary
            .changes
            .iter()
            .filter(|c| c.state == state)
            .map(|c| (c.index as f64, point_y(c).unwrap_or(y_hi)))
            .collect();
        if points.is_empty() {
            continue;
        }
        let color = state_color(state);
        let label = match state {
            ChangeState::Accepted => "accepted (with interval)".to_string(),
            other => other.label(),
        };
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(move |p| marker(state, p, color, size)),
            )
            .map_err(draw_err)?
            .label(label)
            .legend(move |(x, y)| marker(state, (x + 8, y), color, 6));
    }

    // Lower left: the metric falls as changes are kept, so that corner is usually empty.
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(0xbb, 0xbb, 0xbb))
        .label_font((FONT, 13))
        .draw()
        .map_err(draw_err)?;
    Ok(())
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
