//! Accuracy against size: one panel per size measure (raw bytes, gzip bytes), every variant a
//! labelled point, the Pareto frontier (no other variant is both smaller and more accurate)
//! drawn as a dashed step line through filled markers; other variants are hollow. Labels are
//! placed by [`super::labels`], clear of each other and of every marker.

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::labels::{self, Rect};
use super::line::{Axis, axes};
use super::{Draw, FONT, PALETTE, PANEL_HEIGHT, plot_error, with_legend};

/// A variant: size (x), accuracy (y), its label, and its group (the run, in a comparison).
#[derive(Clone, Debug)]
pub struct LabeledPoint {
    pub x: f64,
    pub y: f64,
    pub label: String,
    pub group: usize,
}

pub struct FrontierPanel {
    pub title: String,
    pub x_label: String,
    pub points: Vec<LabeledPoint>,
}

pub struct FrontierChart {
    pub panels: Vec<FrontierPanel>,
    /// Group names for the legend (one group: no legend entry per group).
    pub groups: Vec<String>,
}

/// Indices of the points on the Pareto frontier of (small x, high y), sorted by x.
pub fn pareto_frontier(points: &[LabeledPoint]) -> Vec<usize> {
    let mut frontier: Vec<usize> = (0..points.len())
        .filter(|&i| {
            let p = &points[i];
            p.x.is_finite()
                && p.y.is_finite()
                && !points
                    .iter()
                    .any(|q| q.x <= p.x && q.y >= p.y && (q.x < p.x || q.y > p.y))
        })
        .collect();
    frontier.sort_by(|&a, &b| points[a].x.total_cmp(&points[b].x));
    frontier
}

impl Draw for FrontierChart {
    fn height(&self) -> u32 {
        (PANEL_HEIGHT + 40) * self.panels.len().max(1) as u32
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let areas = root.split_evenly((self.panels.len().max(1), 1));
        for (panel, area) in self.panels.iter().zip(&areas) {
            self.draw_panel(panel, area)?;
        }
        Ok(())
    }
}

impl FrontierChart {
    fn draw_panel<DB: DrawingBackend>(
        &self,
        panel: &FrontierPanel,
        area: &DrawingArea<DB, Shift>,
    ) -> Result<()> {
        let area = area
            .titled(&panel.title, (FONT, 23).into_font().style(FontStyle::Bold))
            .map_err(plot_error)?;
        let frontier_color = RGBColor(90, 90, 90);
        let mut entries = vec![("Pareto frontier".to_owned(), frontier_color, true)];
        if self.groups.len() > 1 {
            entries.extend(
                self.groups
                    .iter()
                    .enumerate()
                    .map(|(i, g)| (g.clone(), PALETTE[i % PALETTE.len()], false)),
            );
        }
        let chart_area = with_legend(&area, &entries)?;

        let points: Vec<&LabeledPoint> = panel
            .points
            .iter()
            .filter(|p| p.x.is_finite() && p.y.is_finite())
            .collect();
        let max_x = points.iter().map(|p| p.x).fold(0.0, f64::max).max(1.0);
        let (min_y, max_y) = points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                (lo.min(p.y), hi.max(p.y))
            });
        let (min_y, max_y) = if min_y > max_y {
            (0.0, 1.0)
        } else {
            (min_y, max_y)
        };
        let pad = ((max_y - min_y) * 0.12).max(0.005);
        let y_range = ((min_y - pad).max(0.0), (max_y + pad).min(1.0));
        // Sizes from zero (so ratios read true), with room right of the largest for its label.
        let x_range = (0.0, max_x * 1.08);
        let mut chart = axes(
            &chart_area,
            [
                (panel.x_label.as_str(), Axis::Bytes, x_range, 8),
                ("test accuracy", Axis::Percent, y_range, 7),
            ],
        )?;

        let owned: Vec<LabeledPoint> = points.iter().map(|&p| p.clone()).collect();
        let frontier = pareto_frontier(&owned);
        // The frontier as steps: from each frontier point right to the next one's size, then
        // up to its accuracy (what a smaller budget can reach).
        let mut path = Vec::new();
        for (k, &i) in frontier.iter().enumerate() {
            let p = &owned[i];
            if k > 0 {
                path.push((p.x, owned[frontier[k - 1]].y));
            }
            path.push((p.x, p.y));
        }
        chart
            .draw_series(DashedLineSeries::new(
                path.clone(),
                7,
                5,
                frontier_color.stroke_width(2),
            ))
            .map_err(plot_error)?;
        const MARKER: i32 = 6;
        for (i, p) in owned.iter().enumerate() {
            let color = PALETTE[p.group % PALETTE.len()];
            let style = if frontier.contains(&i) {
                color.filled()
            } else {
                color.stroke_width(2)
            };
            chart
                .draw_series(std::iter::once(Circle::new((p.x, p.y), MARKER, style)))
                .map_err(plot_error)?;
        }

        // Labels, in pixels of the plotting area.
        let plotting = chart.plotting_area();
        let (base_x, base_y) = plotting.get_base_pixel();
        let (width, height) = plotting.dim_in_pixel();
        let canvas = plotting.strip_coord_spec();
        let font = TextStyle::from((FONT, 17).into_font());
        let pixel: Vec<(f64, f64)> = owned
            .iter()
            .map(|p| {
                let (x, y) = chart.backend_coord(&(p.x, p.y));
                (f64::from(x - base_x), f64::from(y - base_y))
            })
            .collect();
        let sizes = owned
            .iter()
            .map(|p| {
                canvas
                    .estimate_text_size(&p.label, &font)
                    .map(|(w, h)| (f64::from(w) + 4.0, f64::from(h) + 2.0))
                    .map_err(plot_error)
            })
            .collect::<Result<Vec<_>>>()?;
        let bounds = Rect {
            x0: 0.0,
            y0: 0.0,
            x1: f64::from(width),
            y1: f64::from(height),
        };
        // The frontier's segments, a few pixels thick, keep labels off the dashed line.
        let to_pixel = |&(x, y): &(f64, f64)| {
            let (px, py) = chart.backend_coord(&(x, y));
            (f64::from(px - base_x), f64::from(py - base_y))
        };
        let segments: Vec<Rect> = path
            .windows(2)
            .map(|pair| {
                let (a, b) = (to_pixel(&pair[0]), to_pixel(&pair[1]));
                Rect {
                    x0: a.0.min(b.0) - 3.0,
                    y0: a.1.min(b.1) - 3.0,
                    x1: a.0.max(b.0) + 3.0,
                    y1: a.1.max(b.1) + 3.0,
                }
            })
            .collect();
        let placed = labels::place(&pixel, &sizes, &segments, bounds, f64::from(MARKER) + 2.0);
        for ((p, &at), place) in owned.iter().zip(&pixel).zip(&placed) {
            let color = PALETTE[p.group % PALETTE.len()];
            if place.leader {
                let end = labels::leader_end(at, &place.rect);
                canvas
                    .draw(&PathElement::new(
                        vec![
                            (at.0.round() as i32, at.1.round() as i32),
                            (end.0.round() as i32, end.1.round() as i32),
                        ],
                        RGBColor(150, 150, 150).stroke_width(1),
                    ))
                    .map_err(plot_error)?;
            }
            canvas
                .draw(&Text::new(
                    p.label.clone(),
                    (
                        place.rect.x0.round() as i32 + 2,
                        place.rect.y0.round() as i32 + 1,
                    ),
                    font.color(&color.mix(0.95)),
                ))
                .map_err(plot_error)?;
        }
        Ok(())
    }
}
