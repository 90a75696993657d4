//! `agentloop report`: the HTML, PNG and SVG written from a real ledger, parsed, decoded and
//! opened in headless Chromium.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use agentloop::report::{self, chart, ReportFiles};
use agentloop_ledger::{EventKind, Ledger, VerifyOptions};
use scraper::{Html, Selector};

use common::*;

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn write_report(dir: &Path) -> (Ledger, ReportFiles) {
    let ledger = Ledger::open(dir.join("ledger.db")).unwrap();
    populate(&ledger);
    let files = report::generate(
        &ledger,
        None,
        &dir.join("report"),
        &VerifyOptions::default(),
    )
    .unwrap();
    (ledger, files)
}

#[test]
fn every_change_appears_with_its_status_and_the_chart_is_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, files) = write_report(dir.path());
    assert!(files.verified);
    let page = Html::parse_document(&std::fs::read_to_string(&files.html).unwrap());

    let expected = [
        (ACCEPTED, "accepted"),
        (REJECTED, "rejected"),
        (CRASHED, "crashed"),
        (POLICY_REJECTED, "policy_rejected"),
        (ROLLED_BACK, "rolled_back"),
        (BUILD_FAILED, "build_failed"),
    ];
    let rows: Vec<_> = page.select(&sel("#changes tbody tr.change")).collect();
    assert_eq!(rows.len(), expected.len(), "one row per change");
    for (row, (id, status)) in rows.iter().zip(expected) {
        assert_eq!(
            row.value().attr("data-change"),
            Some(id),
            "changes in proposal order"
        );
        assert_eq!(row.value().attr("data-status"), Some(status));
        let shown: String = row
            .select(&sel("td.status"))
            .next()
            .unwrap()
            .text()
            .collect();
        assert_eq!(shown, status.replace('_', "-"), "{id}");
        // Diff and rationale are one click away.
        let details = row.select(&sel("details")).next().expect("details");
        let text: String = details.text().collect();
        assert!(text.contains(&format!("Rationale for {id}")), "{text}");
        assert!(text.contains(&format!("+let lr = 6e-4; // {id}")), "{text}");
    }

    // The accepted change shows its effect (trunk minus candidate), interval and p.
    let accepted: Vec<String> = rows[0]
        .select(&sel("td.n"))
        .map(|td| td.text().collect())
        .collect();
    assert_eq!(
        accepted,
        ["1", "0.01000", "[0.00600, 0.01400]", "0.0010", "6"]
    );
    let policy: String = rows[3].text().collect();
    assert!(policy.contains("trainer/src/eval.rs is frozen"), "{policy}");

    // The chart is inline SVG with a point per candidate and a holdout audit.
    let svg = page
        .select(&sel("#chart svg"))
        .next()
        .expect("inline svg chart");
    let circles = svg.select(&sel("circle")).count();
    assert!(
        circles >= 3,
        "accepted, rejected and rolled-back points: {circles}"
    );
    let svg_text: String = svg.text().collect();
    assert!(svg_text.contains("holdout audit (flagged)"), "{svg_text}");
    assert!(svg_text.contains("policy-rejected"), "{svg_text}");
    // Changes are drawn at their gain against their own trunk, with the test's interval.
    assert!(svg_text.contains("gain vs its own trunk"), "{svg_text}");
    assert!(
        svg_text.contains("95% interval of the mean paired gain"),
        "{svg_text}"
    );

    // The agent's text is escaped, never executed.
    assert!(!page.root_element().html().contains(HOSTILE));
    assert_eq!(
        page.select(&sel("script")).count(),
        1,
        "only the report's own script"
    );

    // Self-contained: nothing is fetched from anywhere.
    let external: Vec<String> = page
        .select(&sel("[src], link[rel=stylesheet], link[href]"))
        .map(|el| el.html())
        .collect();
    assert!(external.is_empty(), "external resources: {external:?}");
    for a in page.select(&sel("[href]")) {
        let href = a.value().attr("href").unwrap();
        assert!(!href.contains("://"), "absolute link {href}");
    }

    // The ledger's head and verdict.
    let head = ledger.head().unwrap().unwrap();
    let shown: String = page
        .select(&sel("#ledger-head"))
        .next()
        .unwrap()
        .text()
        .collect();
    assert_eq!(shown, format!("{}:{}", head.seq, head.hash));
    let verdict: String = page
        .select(&sel("#ledger-verify"))
        .next()
        .unwrap()
        .text()
        .collect();
    assert!(verdict.starts_with("passed"), "{verdict}");

    let budget: String = page
        .select(&sel("#budget"))
        .next()
        .unwrap()
        .text()
        .collect();
    assert!(budget.contains("8400 prompt + 2100 completion"), "{budget}");
    assert!(budget.contains("$0.0840"), "{budget}");
    let audits: String = page
        .select(&sel("#audits"))
        .next()
        .unwrap()
        .text()
        .collect();
    assert!(audits.contains("flagged"), "{audits}");
}

#[test]
fn a_failed_verification_is_shown_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path().join("ledger.db")).unwrap();
    populate(&ledger);
    // A decision that cannot be reproduced is one of the things `ledger verify` catches.
    let disagree = |e: &agentloop_ledger::Event| {
        (e.kind == EventKind::Decision && e.change.as_deref() == Some(ACCEPTED))
            .then(|| Err("recomputed outcome differs: rejected".to_string()))
    };
    let options = VerifyOptions {
        recompute: Some(&disagree),
        ..Default::default()
    };
    let files = report::generate(&ledger, Some(SESSION), dir.path(), &options).unwrap();
    assert!(!files.verified);
    let page = Html::parse_document(&std::fs::read_to_string(&files.html).unwrap());
    let verdict: String = page
        .select(&sel("#ledger-verify"))
        .next()
        .unwrap()
        .text()
        .collect();
    assert!(verdict.starts_with("FAILED"), "{verdict}");
    let all: String = page.select(&sel("body")).next().unwrap().text().collect();
    assert!(
        all.contains("recomputed outcome differs"),
        "the problem is named"
    );
}

#[test]
fn png_chart_decodes_at_the_promised_size_and_is_not_blank() {
    let dir = tempfile::tempdir().unwrap();
    let (_, files) = write_report(dir.path());
    let image = decode_png(&files.png);
    assert_eq!((image.width, image.height), (chart::WIDTH, chart::HEIGHT));
    let (variance, inked) = ink(&image, (0, 0, image.width, image.height));
    assert!(
        variance > 100.0 && inked > 0.01,
        "variance {variance}, inked {inked}"
    );
    let svg = std::fs::read_to_string(&files.svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("</svg>"));
}

#[test]
fn unknown_session_is_refused_by_name_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path().join("ledger.db")).unwrap();
    let out = dir.path().join("out");
    let err = report::generate(&ledger, None, &out, &VerifyOptions::default()).unwrap_err();
    assert!(err.to_string().contains("no session yet"), "{err}");
    populate(&ledger);
    let err =
        report::generate(&ledger, Some("s-nope"), &out, &VerifyOptions::default()).unwrap_err();
    assert!(err.to_string().contains("\"s-nope\""), "{err}");
    assert!(!out.exists());
}

// ---- headless Chromium ------------------------------------------------------------------

struct Decoded {
    width: u32,
    height: u32,
    /// RGB, row-major.
    rgb: Vec<[u8; 3]>,
}

fn decode_png(path: &Path) -> Decoded {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let rgb = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| match channels {
            1 | 2 => [p[0]; 3],
            _ => [p[0], p[1], p[2]],
        })
        .collect();
    Decoded {
        width: info.width,
        height: info.height,
        rgb,
    }
}

/// Luminance variance in a region, and the share of its pixels that are not near-white.
fn ink(image: &Decoded, (x, y, w, h): (u32, u32, u32, u32)) -> (f64, f64) {
    let mut values = Vec::new();
    for row in y..(y + h).min(image.height) {
        for col in x..(x + w).min(image.width) {
            let [r, g, b] = image.rgb[(row * image.width + col) as usize];
            values.push(0.299 * r as f64 + 0.587 * g as f64 + 0.114 * b as f64);
        }
    }
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let inked = values.iter().filter(|v| **v < 235.0).count() as f64 / n;
    (variance, inked)
}

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("which").arg(name).output() {
            if out.status.success() {
                return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            }
        }
    }
    panic!(
        "headless Chromium is needed for this test and was not found; install it with \
         `apt-get update && apt-get install -y chromium` (CI's .ci/run does)"
    );
}

/// Runs headless Chromium on `page` with `extra` flags; returns (stdout, stderr).
fn run_chromium(page: &Path, extra: &[String]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--window-size=1280,1400",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("running chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn console_errors(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .filter(|l| l.contains("ERROR") || l.contains("Uncaught") || l.contains("rror"))
        .collect()
}

#[test]
fn the_report_loads_in_headless_chromium_without_errors_and_the_chart_is_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let (_, files) = write_report(dir.path());

    // The page's script ran to the end and recorded where the chart was laid out.
    let (dom, stderr) = run_chromium(&files.html, &["--dump-dom".to_string()]);
    let errors = console_errors(&stderr);
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    let dom = Html::parse_document(&dom);
    let body = dom.select(&sel("body")).next().unwrap();
    assert_eq!(
        body.value().attr("data-ready"),
        Some("1"),
        "the page's script did not finish"
    );
    assert!(
        dom.select(&sel("script")).count() == 1,
        "no script was injected"
    );
    let rect: Vec<u32> = body
        .value()
        .attr("data-chart-rect")
        .expect("chart laid out")
        .split(',')
        .map(|v| v.parse::<f64>().unwrap().max(0.0) as u32)
        .collect();
    let (x, y, w, h) = (rect[0], rect[1], rect[2], rect[3]);
    assert!(w > 400 && h > 150, "chart too small: {rect:?}");

    // The screenshot's chart region holds a drawing, not a blank box.
    let shot = dir.path().join("shot.png");
    let (_, stderr) = run_chromium(&files.html, &[format!("--screenshot={}", shot.display())]);
    assert!(console_errors(&stderr).is_empty(), "{stderr}");
    let image = decode_png(&shot);
    assert!(
        y + h / 2 < image.height,
        "chart below the screenshot: {rect:?}"
    );
    let (variance, inked) = ink(&image, (x, y, w, h));
    assert!(
        variance > 100.0 && inked > 0.01,
        "chart region looks blank: variance {variance}, inked {inked}"
    );
}

#[test]
fn console_errors_are_detected() {
    // The check above can fail: a page with a script error is caught.
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("broken.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><script>undefinedFunction();</script></body></html>",
    )
    .unwrap();
    let (_, stderr) = run_chromium(&page, &["--dump-dom".to_string()]);
    assert!(!console_errors(&stderr).is_empty(), "{stderr}");
}
