//! The report's plots, as self-contained SVG (no plotting dependency, viewable anywhere a
//! Markdown report renders): training curves per epoch, and each variant's accuracy against
//! its gzip size with its latency in the label.

use std::fmt::Write as _;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 360.0;
const MARGIN: f64 = 56.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

/// A named series of (x, y) points.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// Line chart of `series` over a shared x axis.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series<'_>]) -> String {
    let points = || series.iter().flat_map(|s| s.points.iter().copied());
    let frame = Frame::fit(points());
    let mut svg = frame.open(title, x_label, y_label);
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", frame.x(x), frame.y(y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let _ = write!(
            svg,
            r#"<text x="{:.0}" y="{:.0}" fill="{color}" font-size="12">{}</text>"#,
            WIDTH - MARGIN - 150.0,
            MARGIN + 16.0 * (i as f64 + 1.0),
            escape(s.name)
        );
    }
    svg + "</svg>\n"
}

/// Scatter of labelled points.
pub fn scatter(title: &str, x_label: &str, y_label: &str, points: &[(f64, f64, String)]) -> String {
    let frame = Frame::fit(points.iter().map(|&(x, y, _)| (x, y)));
    let mut svg = frame.open(title, x_label, y_label);
    for (i, (x, y, label)) in points.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let (px, py) = (frame.x(*x), frame.y(*y));
        let _ = write!(
            svg,
            r#"<circle cx="{px:.1}" cy="{py:.1}" r="5" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="12" fill="{color}">{}</text>"#,
            px + 8.0,
            py - 6.0,
            escape(label)
        );
    }
    svg + "</svg>\n"
}

/// Data bounds mapped onto the plot area, with a little headroom.
struct Frame {
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn fit(points: impl Iterator<Item = (f64, f64)>) -> Self {
        let (mut x, mut y) = ((f64::MAX, f64::MIN), (f64::MAX, f64::MIN));
        for (px, py) in points.filter(|(a, b)| a.is_finite() && b.is_finite()) {
            x = (x.0.min(px), x.1.max(px));
            y = (y.0.min(py), y.1.max(py));
        }
        let widen = |(lo, hi): (f64, f64)| {
            if lo > hi {
                (0.0, 1.0)
            } else if hi - lo < 1e-12 {
                (lo - 0.5, hi + 0.5)
            } else {
                let pad = 0.05 * (hi - lo);
                (lo - pad, hi + pad)
            }
        };
        Self {
            x: widen(x),
            y: widen(y),
        }
    }

    fn x(&self, v: f64) -> f64 {
        MARGIN + (v - self.x.0) / (self.x.1 - self.x.0) * (WIDTH - 2.0 * MARGIN)
    }

    fn y(&self, v: f64) -> f64 {
        HEIGHT - MARGIN - (v - self.y.0) / (self.y.1 - self.y.0) * (HEIGHT - 2.0 * MARGIN)
    }

    fn open(&self, title: &str, x_label: &str, y_label: &str) -> String {
        let (left, right, top, bottom) = (MARGIN, WIDTH - MARGIN, MARGIN, HEIGHT - MARGIN);
        let mut svg = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/><text x="{:.0}" y="24" font-size="15" text-anchor="middle">{}</text><line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="black"/><text x="{:.0}" y="{:.0}" font-size="12" text-anchor="middle">{}</text><text x="16" y="{:.0}" font-size="12" text-anchor="middle" transform="rotate(-90 16 {:.0})">{}</text>"#,
            WIDTH / 2.0,
            escape(title),
            WIDTH / 2.0,
            HEIGHT - 16.0,
            escape(x_label),
            HEIGHT / 2.0,
            HEIGHT / 2.0,
            escape(y_label)
        );
        for i in 0..=4 {
            let t = i as f64 / 4.0;
            let (xv, yv) = (
                self.x.0 + t * (self.x.1 - self.x.0),
                self.y.0 + t * (self.y.1 - self.y.0),
            );
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.0}" font-size="10" text-anchor="middle">{}</text><text x="{:.0}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"#,
                self.x(xv),
                bottom + 14.0,
                tick(xv),
                left - 4.0,
                self.y(yv) + 3.0,
                tick(yv)
            );
        }
        svg
    }
}

fn tick(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed_svg_with_every_series_and_label() {
        let chart = line_chart(
            "loss",
            "epoch",
            "value",
            &[
                Series {
                    name: "train <loss>",
                    points: vec![(1.0, 2.0), (2.0, 1.0), (3.0, 0.5)],
                },
                Series {
                    name: "flat",
                    points: vec![(1.0, 1.0)],
                },
            ],
        );
        assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
        assert_eq!(chart.matches("<polyline").count(), 2);
        assert!(chart.contains("train &lt;loss&gt;"));
        assert!(!chart.contains("NaN") && !chart.contains("inf"));

        let plot = scatter(
            "variants",
            "gzip bytes",
            "accuracy",
            &[(100.0, 0.9, "int8".into())],
        );
        assert!(plot.contains("<circle") && plot.contains(">int8<"));
        assert!(!plot.contains("NaN"));
        let empty = scatter("none", "x", "y", &[]);
        assert!(!empty.contains("NaN"));
    }
}
