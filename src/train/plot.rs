//! The loss curve of a run (and its held-out metric), drawn with `plotters`
//! into a self-contained SVG.
//!
//! Needs the `cli` feature (on by default). The SVG backend writes text as
//! `<text>` elements that the viewer draws, so no font library is linked.
//!
//! Layout: x is the step; the left axis is the training loss (each step,
//! light, and its moving average, dark); the right axis is the held-out metric
//! (exact match for `add`/`copy`, token accuracy for `text`/`xml`) in 0–100 %; a
//! legend names the three curves.
#![cfg(feature = "cli")]

use std::path::Path;

use plotters::prelude::*;

use super::{EvalReport, HistoryPoint};
use crate::error::{Error, Result};
use crate::io::write_atomic;

const W: u32 = 800;
const H: u32 = 420;
/// Most points drawn per curve (the curves of long runs are thinned evenly).
const MAX_POINTS: usize = 2000;

const RAW: RGBColor = RGBColor(0x9e, 0xca, 0xe1);
const SMOOTH: RGBColor = RGBColor(0x08, 0x51, 0x9c);
const HELD_OUT: RGBColor = RGBColor(0xe6, 0x55, 0x0d);

/// Writes the curve of `history` (loss, raw and smoothed) and `evals`
/// (held-out metric, right axis) to `path`, atomically.
pub fn write_svg(
    path: &Path,
    title: &str,
    history: &[HistoryPoint],
    evals: &[EvalReport],
) -> Result<()> {
    write_atomic(path, svg(title, history, evals)?.as_bytes())
}

/// The curves to draw: raw and smoothed loss (at most [`MAX_POINTS`] each),
/// held-out metric in percent, and the smoothing window in steps.
struct Curves {
    raw: Vec<(u64, f64)>,
    smooth: Vec<(u64, f64)>,
    window: usize,
    held_out: Vec<(u64, f64)>,
}

fn curves(history: &[HistoryPoint], evals: &[EvalReport]) -> Curves {
    let finite: Vec<&HistoryPoint> = history.iter().filter(|p| p.loss.is_finite()).collect();
    // A moving average over ~1 % of the run.
    let window = (finite.len() / 100).max(1);
    let every = finite.len().div_ceil(MAX_POINTS).max(1);
    let raw = finite
        .iter()
        .step_by(every)
        .map(|p| (p.step, p.loss))
        .collect();
    // Running sum: O(n) however wide the window.
    let mut sum = 0.0;
    let mut smooth = Vec::new();
    for (i, p) in finite.iter().enumerate() {
        sum += p.loss;
        if i >= window {
            sum -= finite[i - window].loss;
        }
        if i + 1 >= window && (i + 1 - window).is_multiple_of(every) {
            smooth.push((p.step, sum / window as f64));
        }
    }
    let held_out = evals
        .iter()
        .map(|e| {
            let v = 100.0 * e.exact_match.unwrap_or(e.token_accuracy);
            (e.step, if v.is_finite() { v } else { 0.0 })
        })
        .collect();
    Curves {
        raw,
        smooth,
        window,
        held_out,
    }
}

fn draw_err(e: impl std::fmt::Display) -> Error {
    Error::invalid("plot", format!("cannot draw the loss curve: {e}"))
}

/// The SVG text.
pub fn svg(title: &str, history: &[HistoryPoint], evals: &[EvalReport]) -> Result<String> {
    let c = curves(history, evals);
    let last_step = c
        .raw
        .iter()
        .chain(&c.held_out)
        .map(|p| p.0)
        .fold(1, u64::max);
    let max_loss = c.raw.iter().map(|p| p.1).fold(0.0, f64::max);
    // Headroom above the highest loss; a positive range even when all are 0.
    let top = if max_loss > 0.0 { 1.05 * max_loss } else { 1.0 };
    let metric = match evals.first().map(|e| e.exact_match.is_some()) {
        Some(true) => "held-out exact match",
        Some(false) => "held-out token accuracy",
        None => "held-out accuracy",
    };
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .right_y_label_area_size(60)
            .build_cartesian_2d(0..last_step, 0.0..top)
            .map_err(draw_err)?
            .set_secondary_coord(0..last_step, 0.0..100.0);
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("training loss")
            .light_line_style(WHITE)
            .draw()
            .map_err(draw_err)?;
        chart
            .configure_secondary_axes()
            .y_desc(format!("{metric} (%)"))
            .y_label_formatter(&|v| format!("{v:.0} %"))
            .draw()
            .map_err(draw_err)?;
        chart
            .draw_series(LineSeries::new(c.raw.iter().copied(), RAW.stroke_width(1)))
            .map_err(draw_err)?
            .label("training loss (each step)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RAW.stroke_width(2)));
        let smoothed = if c.window > 1 {
            format!("training loss (mean of {} steps)", c.window)
        } else {
            "training loss (smoothed)".to_string()
        };
        chart
            .draw_series(LineSeries::new(
                c.smooth.iter().copied(),
                SMOOTH.stroke_width(2),
            ))
            .map_err(draw_err)?
            .label(smoothed)
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], SMOOTH.stroke_width(2)));
        chart
            .draw_secondary_series(LineSeries::new(
                c.held_out.iter().copied(),
                HELD_OUT.stroke_width(2),
            ))
            .map_err(draw_err)?
            .label(format!("{metric} (right axis)"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], HELD_OUT.stroke_width(2)));
        // Markers too: a run evaluated once has a one-point "line".
        chart
            .draw_secondary_series(
                c.held_out
                    .iter()
                    .map(|&p| Circle::new(p, 3, HELD_OUT.filled())),
            )
            .map_err(draw_err)?;
        chart
            .configure_series_labels()
            // The loss starts high on the left and the metric ends high on
            // the right: the top middle is the emptiest corner of most runs.
            .position(SeriesLabelPosition::UpperMiddle)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(out)
}

/// What a reader of a plot sees: the contents of every `<text>` element of
/// the SVG (title, tick labels, axis labels, legend), in document order, as
/// written (XML-escaped).
pub fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim().to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(n: u64) -> Vec<HistoryPoint> {
        (0..n)
            .map(|i| HistoryPoint {
                step: i,
                loss: 1.0 / (1.0 + i as f64),
                accuracy: 0.5,
            })
            .collect()
    }

    fn eval(step: u64, exact: Option<f64>) -> EvalReport {
        EvalReport {
            step,
            loss: 0.5,
            token_accuracy: 0.75,
            exact_match: exact,
            closing_accuracy: None,
            problems: 10,
        }
    }

    #[test]
    fn long_runs_draw_a_bounded_number_of_points() {
        let s = svg("t <&>", &history(200_000), &[]).unwrap();
        // Each point of a polyline is "x,y"; nothing else here has a comma.
        assert!(s.matches(',').count() < 3 * MAX_POINTS, "too many points");
    }

    #[test]
    fn titles_are_escaped() {
        let s = svg("t <&> \"q\"", &history(10), &[]).unwrap();
        assert!(svg_texts(&s).contains(&"t &lt;&amp;&gt; &quot;q&quot;".to_string()));
        assert!(!s.contains("<&>"));
    }

    #[test]
    fn axes_ticks_and_legend_are_text() {
        let s = svg(
            "add",
            &history(1000),
            &[eval(500, Some(0.4)), eval(1000, Some(0.9))],
        )
        .unwrap();
        let t = svg_texts(&s);
        for needle in [
            "add",
            "step",
            "training loss",
            "held-out exact match (%)",
            "0 %",
            "100 %",
            "0",
            "500",
            "training loss (each step)",
            "training loss (mean of 10 steps)",
            "held-out exact match (right axis)",
        ] {
            assert!(t.iter().any(|x| x == needle), "{needle:?} not in {t:?}");
        }
        let text = svg("text", &history(3), &[eval(3, None)]).unwrap();
        assert!(svg_texts(&text).contains(&"held-out token accuracy (right axis)".to_string()));
    }

    #[test]
    fn degenerate_runs_still_draw() {
        for h in [vec![], history(1)] {
            let s = svg("empty", &h, &[]).unwrap();
            assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        }
        let zeros: Vec<HistoryPoint> = (0..5)
            .map(|i| HistoryPoint {
                step: i,
                loss: if i == 2 { f64::NAN } else { 0.0 },
                accuracy: 1.0,
            })
            .collect();
        assert!(svg("zeros", &zeros, &[eval(5, Some(f64::NAN))]).is_ok());
    }
}
