//! Where to put a scatter plot's point labels so that none overlaps another label, a marker or
//! the plot's edge: each label tries positions around its point, nearest first (right, left,
//! above, below, the diagonals), on rings further out; a label no ring can hold goes to the
//! free spot nearest its point anywhere in the plot, with a leader line back to it.

/// An axis-aligned box in pixels (y grows downwards).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rect {
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
}

impl Rect {
    pub fn around(center: (f64, f64), half_width: f64, half_height: f64) -> Self {
        Self {
            x0: center.0 - half_width,
            y0: center.1 - half_height,
            x1: center.0 + half_width,
            y1: center.1 + half_height,
        }
    }

    pub fn overlaps(&self, other: &Rect) -> bool {
        self.x0 < other.x1 && other.x0 < self.x1 && self.y0 < other.y1 && other.y0 < self.y1
    }

    fn inside(&self, bounds: &Rect) -> bool {
        self.x0 >= bounds.x0 && self.x1 <= bounds.x1 && self.y0 >= bounds.y0 && self.y1 <= bounds.y1
    }
}

/// A placed label: its box, and whether it sits far enough from its point to need a line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placement {
    pub rect: Rect,
    pub leader: bool,
}

/// Boxes for labels of `sizes` (width, height) at `points`, inside `bounds`, clear of every
/// marker (a square of `marker` pixels' half-width around each point), of `obstacles` (lines
/// drawn on the plot) and of each other. Labels are placed in the order given.
pub fn place(
    points: &[(f64, f64)],
    sizes: &[(f64, f64)],
    obstacles: &[Rect],
    bounds: Rect,
    marker: f64,
) -> Vec<Placement> {
    const GAP: f64 = 3.0;
    const RINGS: usize = 4;
    const RING_STEP: f64 = 14.0;
    let markers: Vec<Rect> = points
        .iter()
        .map(|&p| Rect::around(p, marker, marker))
        .collect();
    let mut placed: Vec<Placement> = Vec::with_capacity(points.len());
    for (&point, &(width, height)) in points.iter().zip(sizes) {
        let free = |rect: &Rect, placed: &[Placement]| {
            rect.inside(&bounds)
                && !markers.iter().chain(obstacles).any(|m| m.overlaps(rect))
                && !placed.iter().any(|p| p.rect.overlaps(rect))
        };
        let (hw, hh) = (width / 2.0, height / 2.0);
        let mut chosen = None;
        'rings: for ring in 0..RINGS {
            let d = marker + GAP + ring as f64 * RING_STEP;
            // Centers of boxes whose nearest side lies `d` from the point, nearest first.
            let candidates = [
                (point.0 + d + hw, point.1),
                (point.0 - d - hw, point.1),
                (point.0, point.1 - d - hh),
                (point.0, point.1 + d + hh),
                (point.0 + d + hw, point.1 - d - hh),
                (point.0 + d + hw, point.1 + d + hh),
                (point.0 - d - hw, point.1 - d - hh),
                (point.0 - d - hw, point.1 + d + hh),
            ];
            for center in candidates {
                let rect = Rect::around(center, hw, hh);
                if free(&rect, &placed) {
                    chosen = Some(Placement {
                        rect,
                        leader: ring > 0,
                    });
                    break 'rings;
                }
            }
        }
        let chosen = chosen
            .or_else(|| nearest_free(point, hw, hh, &bounds, |rect| free(rect, &placed)))
            // A plot too crowded for its labels: the label goes right of its point anyway.
            .unwrap_or(Placement {
                rect: Rect::around((point.0 + marker + GAP + hw, point.1), hw, hh),
                leader: false,
            });
        placed.push(chosen);
    }
    placed
}

/// The free box nearest `point` on a 4-pixel grid over `bounds`.
fn nearest_free(
    point: (f64, f64),
    hw: f64,
    hh: f64,
    bounds: &Rect,
    free: impl Fn(&Rect) -> bool,
) -> Option<Placement> {
    const STEP: f64 = 4.0;
    let mut best: Option<(f64, Rect)> = None;
    let mut y = bounds.y0 + hh;
    while y <= bounds.y1 - hh {
        let mut x = bounds.x0 + hw;
        while x <= bounds.x1 - hw {
            let distance = (x - point.0).powi(2) + (y - point.1).powi(2);
            if best.is_none_or(|(d, _)| distance < d) {
                let rect = Rect::around((x, y), hw, hh);
                if free(&rect) {
                    best = Some((distance, rect));
                }
            }
            x += STEP;
        }
        y += STEP;
    }
    best.map(|(_, rect)| Placement { rect, leader: true })
}

/// Where a leader line from `point` meets `rect`'s border (its nearest point).
pub fn leader_end(point: (f64, f64), rect: &Rect) -> (f64, f64) {
    (
        point.0.clamp(rect.x0, rect.x1),
        point.1.clamp(rect.y0, rect.y1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_clear(points: &[(f64, f64)], placed: &[Placement], bounds: Rect, marker: f64) {
        for (i, a) in placed.iter().enumerate() {
            assert!(a.rect.inside(&bounds), "label {i} leaves the plot: {a:?}");
            for (j, b) in placed.iter().enumerate().skip(i + 1) {
                assert!(!a.rect.overlaps(&b.rect), "labels {i} and {j} overlap");
            }
            for (j, &p) in points.iter().enumerate() {
                let m = Rect::around(p, marker, marker);
                assert!(!a.rect.overlaps(&m), "label {i} covers marker {j}");
            }
        }
    }

    #[test]
    fn labels_of_coincident_points_do_not_overlap() {
        // int8, qat_int8, dynamic, student_int8 and pruned80_int8 land within a few pixels.
        let bounds = Rect {
            x0: 0.0,
            y0: 0.0,
            x1: 800.0,
            y1: 400.0,
        };
        let points = [
            (200.0, 100.0),
            (202.0, 101.0),
            (201.0, 99.0),
            (203.0, 100.0),
            (199.0, 102.0),
            (600.0, 390.0),
            (795.0, 5.0),
        ];
        let sizes = [(120.0, 16.0); 7];
        // A frontier line through the cluster's right side.
        let line = Rect {
            x0: 195.0,
            y0: 80.0,
            x1: 400.0,
            y1: 84.0,
        };
        let placed = place(&points, &sizes, &[line], bounds, 5.0);
        assert!(placed.iter().all(|p| !p.rect.overlaps(&line)));
        assert_eq!(placed.len(), points.len());
        assert_clear(&points, &placed, bounds, 5.0);
        // The first label takes the nearest spot: right of its point, no leader.
        assert!(!placed[0].leader);
        assert!(placed[0].rect.x0 > 200.0 && placed[0].rect.x0 < 215.0);
    }

    #[test]
    fn a_crowded_plot_still_places_every_label_clear() {
        let bounds = Rect {
            x0: 0.0,
            y0: 0.0,
            x1: 400.0,
            y1: 300.0,
        };
        let points: Vec<(f64, f64)> = (0..30).map(|i| (200.0 + (i % 3) as f64, 150.0)).collect();
        let sizes = vec![(90.0, 14.0); points.len()];
        let placed = place(&points, &sizes, &[], bounds, 4.0);
        assert_clear(&points, &placed, bounds, 4.0);
        assert!(placed.iter().any(|p| p.leader));
    }
}
