//! The report's plots, drawn with `plotters` and written as SVG (embedded in `report.md`) and
//! PNG: line charts of per-epoch and per-step curves ([`line`]) and accuracy-against-size
//! scatters with the Pareto frontier marked and labels placed clear of each other ([`frontier`],
//! [`labels`]). Text is drawn with a bundled subset of DejaVu Sans, so the PNGs come out the
//! same on every machine.

pub mod frontier;
pub mod labels;
pub mod line;

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;

pub use frontier::{FrontierChart, FrontierPanel, LabeledPoint, pareto_frontier};
pub use line::{Axis, LineChart, Panel, Series};

/// A plot in both formats; written as `<stem>.svg` and `<stem>.png`.
#[derive(Clone)]
pub struct Plot {
    pub stem: String,
    pub svg: String,
    pub png: Vec<u8>,
}

impl Plot {
    pub fn svg_name(&self) -> String {
        format!("{}.svg", self.stem)
    }

    pub fn png_name(&self) -> String {
        format!("{}.png", self.stem)
    }

    /// Writes both files into `dir`, each atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        for (name, bytes) in [
            (self.svg_name(), self.svg.as_bytes()),
            (self.png_name(), self.png.as_slice()),
        ] {
            let path = dir.join(&name);
            kiln_tflite::write_atomically(&path, bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}

/// Wide enough for axis labels at 15 px to stay readable where Markdown viewers scale a plot
/// to their column (about 900 px).
pub const WIDTH: u32 = 960;
pub const PANEL_HEIGHT: u32 = 440;

pub const FONT: &str = "sans-serif";
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
];

/// Registers the bundled fonts with plotters once per process.
fn register_fonts() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        let regular = include_bytes!("../fonts/DejaVuSans-subset.ttf");
        let bold = include_bytes!("../fonts/DejaVuSans-Bold-subset.ttf");
        plotters::style::register_font(FONT, FontStyle::Normal, regular).is_ok()
            && plotters::style::register_font(FONT, FontStyle::Bold, bold).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!("the bundled plot font does not load"))
    }
}

/// A chart that draws itself on any plotters backend.
pub trait Draw {
    fn height(&self) -> u32;
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// Draws `chart` on both backends: the plot as SVG and as PNG.
pub fn render(stem: &str, chart: &impl Draw) -> Result<Plot> {
    register_fonts()?;
    let height = chart.height();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        chart
            .draw(&root)
            .with_context(|| format!("drawing {stem}.svg"))?;
        root.present().map_err(plot_error)?;
    }
    let mut rgb = vec![255u8; WIDTH as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        chart
            .draw(&root)
            .with_context(|| format!("drawing {stem}.png"))?;
        root.present().map_err(plot_error)?;
    }
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &rgb,
        WIDTH,
        height,
        image::ExtendedColorType::Rgb8,
    )
    .with_context(|| format!("encoding {stem}.png"))?;
    Ok(Plot {
        stem: stem.to_owned(),
        svg,
        png,
    })
}

/// plotters' errors (generic over the backend) as `anyhow` errors.
pub fn plot_error<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow!("plotting failed: {error:?}")
}

/// A legend entry: name, color, dashed.
pub type LegendEntry = (String, RGBColor, bool);

/// Where each legend entry goes: left to right, wrapping to new rows; and the height needed.
fn legend_layout<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
) -> Result<(Vec<(i32, i32)>, u32)> {
    let font = TextStyle::from((FONT, 18).into_font());
    let (width, _) = area.dim_in_pixel();
    let (mut x, mut y) = (60i32, 6i32);
    let mut positions = Vec::with_capacity(entries.len());
    for (name, _, _) in entries {
        let (text_width, _) = area.estimate_text_size(name, &font).map_err(plot_error)?;
        let entry_width = 28 + text_width as i32 + 24;
        if x + entry_width > width as i32 && x > 60 {
            x = 60;
            y += 24;
        }
        positions.push((x, y));
        x += entry_width;
    }
    Ok((positions, (y + 28) as u32))
}

/// Splits `area` into a legend strip (drawn: a swatch and a name per entry, never over data)
/// and the rest, which it returns.
pub fn with_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
) -> Result<DrawingArea<DB, Shift>> {
    let (positions, height) = legend_layout(area, entries)?;
    let (strip, rest) = area.split_vertically(height);
    let font = (FONT, 18).into_font().color(&BLACK);
    for ((name, color, dashed), (x, y)) in entries.iter().zip(positions) {
        let style = color.stroke_width(3);
        let dashes: &[(i32, i32)] = if *dashed {
            &[(0, 6), (10, 16)]
        } else {
            &[(0, 20)]
        };
        for &(from, to) in dashes {
            strip
                .draw(&PathElement::new(
                    vec![(x + from, y + 9), (x + to, y + 9)],
                    style,
                ))
                .map_err(plot_error)?;
        }
        strip
            .draw(&Text::new(name.clone(), (x + 28, y), font.clone()))
            .map_err(plot_error)?;
    }
    Ok(rest)
}

/// Bytes as a short round figure: `950 B`, `120 kB`, `1.5 MB`.
pub fn format_bytes(bytes: f64) -> String {
    let (value, unit) = if bytes.abs() >= 1e6 {
        (bytes / 1e6, "MB")
    } else if bytes.abs() >= 1e3 {
        (bytes / 1e3, "kB")
    } else {
        (bytes, "B")
    };
    let text = format!("{value:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {unit}")
}

#[cfg(test)]
mod tests;
