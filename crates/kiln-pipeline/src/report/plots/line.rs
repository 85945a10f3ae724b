//! Line charts: one or more panels stacked, each with its own y axis (loss and accuracy have
//! different scales), over a shared kind of x axis (epochs or steps), with the legend in a
//! strip of its own above each panel.

use anyhow::Result;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::{Draw, FONT, PALETTE, PANEL_HEIGHT, format_bytes, plot_error, with_legend};

/// A named curve.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed (validation curves next to their training curve).
    pub dashed: bool,
    /// Index into the palette (same color for train and validation of one quantity).
    pub color: usize,
}

impl Series {
    pub fn new(name: impl Into<String>, color: usize, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
            dashed: false,
            color,
        }
    }

    pub fn dashed(mut self) -> Self {
        self.dashed = true;
        self
    }
}

/// How an axis labels its ticks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Axis {
    /// Plain numbers (loss, learning rate).
    Number,
    /// Whole numbers (epochs, steps).
    Count,
    /// Fractions shown as percentages (accuracy, sparsity); the range is kept within 0–100%.
    Percent,
    Bytes,
}

pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_axis: Axis,
    pub y_axis: Axis,
    pub series: Vec<Series>,
}

pub struct LineChart {
    pub panels: Vec<Panel>,
}

impl Draw for LineChart {
    fn height(&self) -> u32 {
        PANEL_HEIGHT * self.panels.len().max(1) as u32
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let areas = root.split_evenly((self.panels.len().max(1), 1));
        for (panel, area) in self.panels.iter().zip(&areas) {
            draw_panel(panel, area)?;
        }
        Ok(())
    }
}

fn draw_panel<DB: DrawingBackend>(panel: &Panel, area: &DrawingArea<DB, Shift>) -> Result<()> {
    let area = area
        .titled(&panel.title, (FONT, 23).into_font().style(FontStyle::Bold))
        .map_err(plot_error)?;
    let entries: Vec<_> = panel
        .series
        .iter()
        .map(|s| (s.name.clone(), PALETTE[s.color % PALETTE.len()], s.dashed))
        .collect();
    let chart_area = with_legend(&area, &entries)?;

    let points = || panel.series.iter().flat_map(|s| s.points.iter().copied());
    let finite = |v: &f64| v.is_finite();
    let xs: Vec<f64> = points().map(|p| p.0).filter(finite).collect();
    let ys: Vec<f64> = points().map(|p| p.1).filter(finite).collect();
    // A count axis gets a sliver of room so the end markers are not cut.
    let x_range = range(&xs, panel.x_axis, panel.x_axis == Axis::Count);
    let y_range = range(&ys, panel.y_axis, true);
    let x_ticks = if panel.x_axis == Axis::Count {
        count_ticks(x_range)
    } else {
        8
    };
    let mut chart = axes(
        &chart_area,
        [
            (panel.x_label.as_str(), panel.x_axis, x_range, x_ticks),
            (panel.y_label.as_str(), panel.y_axis, y_range, 7),
        ],
    )?;
    for series in &panel.series {
        let color = PALETTE[series.color % PALETTE.len()];
        let points: Vec<(f64, f64)> = series
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        if series.dashed {
            chart
                .draw_series(DashedLineSeries::new(
                    points.clone(),
                    8,
                    5,
                    color.stroke_width(2),
                ))
                .map_err(plot_error)?;
        } else {
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(plot_error)?;
        }
        // Markers only where points are few enough to tell apart.
        if points.len() <= 60 {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(plot_error)?;
        }
    }
    Ok(())
}

/// A chart on `area` with its x and y axes drawn: (description, kind, range, about how many
/// ticks) each, light grid lines at the ticks only.
pub(crate) fn axes<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    [x, y]: [(&str, Axis, (f64, f64), usize); 2],
) -> Result<ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>> {
    let mut chart = ChartBuilder::on(area)
        .margin_left(8)
        .margin_right(24)
        .margin_bottom(6)
        .x_label_area_size(54)
        .y_label_area_size(86)
        .build_cartesian_2d(x.2.0..x.2.1, y.2.0..y.2.1)
        .map_err(plot_error)?;
    let x_format = formatter(x.1, x.2);
    let y_format = formatter(y.1, y.2);
    chart
        .configure_mesh()
        .x_desc(x.0)
        .y_desc(y.0)
        .x_labels(x.3)
        .y_labels(y.3)
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        .label_style((FONT, 18))
        .axis_desc_style((FONT, 19))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(plot_error)?;
    Ok(chart)
}

/// The axis range over `values`: counts start at their first value, percentages stay in
/// [0, 1], and y ranges get a little headroom.
fn range(values: &[f64], axis: Axis, headroom: bool) -> (f64, f64) {
    let (mut lo, mut hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        let pad = if lo.abs() > 1e-12 {
            lo.abs() * 0.1
        } else {
            1.0
        };
        (lo, hi) = (lo - pad, hi + pad);
    }
    if headroom {
        let pad = (hi - lo) * 0.04;
        (lo, hi) = (lo - pad, hi + pad);
    }
    match axis {
        Axis::Percent => (lo.max(0.0), hi.min(1.0)),
        Axis::Number | Axis::Bytes if values.iter().all(|&v| v >= 0.0) => (lo.max(0.0), hi),
        _ => (lo, hi),
    }
}

/// Ticks for a count axis: at most 10, so that plotters picks whole steps.
fn count_ticks((lo, hi): (f64, f64)) -> usize {
    ((hi - lo).round() as usize + 1).clamp(2, 10)
}

/// Tick labels: whole counts, percentages with as many decimals as the range needs, bytes in
/// kB/MB, and plain numbers with enough significant digits.
pub(crate) fn formatter(axis: Axis, (lo, hi): (f64, f64)) -> impl Fn(&f64) -> String {
    let span = (hi - lo).abs().max(1e-12);
    move |&v: &f64| match axis {
        Axis::Count => {
            if (v - v.round()).abs() < 1e-9 {
                format!("{}", v.round() as i64)
            } else {
                String::new()
            }
        }
        Axis::Percent => {
            let decimals = decimals_for_ticks(span * 100.0).min(3);
            format!("{:.*}%", decimals, v * 100.0)
        }
        Axis::Bytes => format_bytes(v),
        Axis::Number => {
            if v == 0.0 {
                "0".into()
            } else if span < 1e-4 {
                format!("{v:.1e}")
            } else {
                let decimals = decimals_for_ticks(span).min(6);
                format!("{:.*}", decimals, v)
            }
        }
    }
}

/// Decimals that tell apart ticks about a seventh of `span` apart (plotters rounds the step to
/// 1, 2 or 5 times a power of ten).
fn decimals_for_ticks(span: f64) -> usize {
    (-(span / 7.0).log10().floor()).max(0.0) as usize
}
