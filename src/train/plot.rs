//! The loss curve (and held-out accuracy) of a run, as a self-contained SVG.

use std::fmt::Write;
use std::path::Path;

use super::{EvalReport, HistoryPoint};
use crate::error::Result;
use crate::io::write_atomic;

const W: f64 = 720.0;
const H: f64 = 360.0;
const PAD: f64 = 50.0;
const MAX_POINTS: usize = 2000;

/// Writes the curve of `history` (loss, smoothed) and `evals` (exact-match or
/// token accuracy on held-out problems, right axis) to `path`, atomically.
pub fn write_svg(
    path: &Path,
    title: &str,
    history: &[HistoryPoint],
    evals: &[EvalReport],
) -> Result<()> {
    write_atomic(path, svg(title, history, evals).as_bytes())
}

/// The SVG text.
pub fn svg(title: &str, history: &[HistoryPoint], evals: &[EvalReport]) -> String {
    let last_step = history.last().map_or(1, |p| p.step.max(1)) as f64;
    let finite: Vec<&HistoryPoint> = history.iter().filter(|p| p.loss.is_finite()).collect();
    let max_loss = finite.iter().map(|p| p.loss).fold(1e-9, f64::max);
    let x = |step: u64| PAD + (W - 2.0 * PAD) * step as f64 / last_step;
    let y = |v: f64, max: f64| H - PAD - (H - 2.0 * PAD) * (v / max).clamp(0.0, 1.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{PAD}" y="24" font-size="14">{}</text>
<line x1="{PAD}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/>
<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{b}" stroke="black"/>
<text x="{r}" y="{t}" text-anchor="end">step {}</text>
<text x="8" y="{PAD}">{:.3}</text><text x="8" y="{b}">0</text>
"#,
        escape(title),
        last_step as u64,
        max_loss,
        b = H - PAD,
        r = W - PAD,
        t = H - PAD + 20.0,
    );
    // Raw loss, light; a moving average over ~1% of the run, dark. At most
    // MAX_POINTS points of each are drawn.
    let window = (finite.len() / 100).max(1);
    let every = finite.len().div_ceil(MAX_POINTS).max(1);
    let raw: Vec<String> = finite
        .iter()
        .step_by(every)
        .map(|p| format!("{:.1},{:.1}", x(p.step), y(p.loss, max_loss)))
        .collect();
    let _ = writeln!(
        s,
        r##"<polyline fill="none" stroke="#9ecae1" stroke-width="1" points="{}"/>"##,
        raw.join(" ")
    );
    // Running sum: O(n) however wide the window.
    let mut sum = 0.0;
    let mut smooth = Vec::new();
    for (i, p) in finite.iter().enumerate() {
        sum += p.loss;
        if i >= window {
            sum -= finite[i - window].loss;
        }
        if i + 1 >= window && (i + 1 - window).is_multiple_of(every) {
            let mean = sum / window as f64;
            smooth.push(format!("{:.1},{:.1}", x(p.step), y(mean, max_loss)));
        }
    }
    let _ = writeln!(
        s,
        r##"<polyline fill="none" stroke="#08519c" stroke-width="2" points="{}"/><text x="{}" y="{}" fill="#08519c">training loss</text>"##,
        smooth.join(" "),
        PAD + 10.0,
        PAD + 14.0
    );
    if !evals.is_empty() {
        let pts: Vec<String> = evals
            .iter()
            .map(|e| {
                let acc = e.exact_match.unwrap_or(e.token_accuracy);
                format!("{:.1},{:.1}", x(e.step), y(acc, 1.0))
            })
            .collect();
        let label = if evals[0].exact_match.is_some() {
            "held-out exact match"
        } else {
            "held-out token accuracy"
        };
        let _ = writeln!(
            s,
            r##"<polyline fill="none" stroke="#e6550d" stroke-width="2" points="{}"/><text x="{}" y="{}" fill="#e6550d">{label} (right axis, 0–100 %)</text><text x="{}" y="{PAD}" fill="#e6550d">100 %</text>"##,
            pts.join(" "),
            PAD + 10.0,
            PAD + 30.0,
            W - PAD + 4.0,
        );
    }
    s.push_str("</svg>\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_runs_draw_a_bounded_number_of_points() {
        let history: Vec<HistoryPoint> = (0..200_000)
            .map(|i| HistoryPoint {
                step: i,
                loss: 1.0 / (1.0 + i as f64),
                accuracy: 0.5,
            })
            .collect();
        let s = svg("t <&>", &history, &[]);
        assert!(s.matches(',').count() < 3 * MAX_POINTS, "too many points");
        assert!(s.contains("t &lt;&amp;&gt;"));
    }
}
