//! Scatter plots as SVG (plotters) and their PNG copies (resvg), shared by the study report
//! and the CLI (`datamix fit`'s predicted-vs-true plot).
//!
//! Everything renders in memory ([`scatter_svg`], [`svg_to_png`]), so a caller can check that
//! every output renders before it writes any file.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};

/// An RGB colour.
pub type Rgb = (u8, u8, u8);

/// Blue, for the first series.
pub const BLUE_RGB: Rgb = (0, 0, 255);
/// Red, for the second series.
pub const RED_RGB: Rgb = (255, 0, 0);
/// Green, for the third series.
pub const GREEN_RGB: Rgb = (0, 255, 0);

/// Pixel width of a scatter figure (three panels per row).
const FIGURE_WIDTH: u32 = 1200;
/// Pixel height of one row of panels.
const ROW_HEIGHT: u32 = 340;
/// Panels per row.
const PANELS_PER_ROW: usize = 3;

/// One scatter panel: the y values (`truth`) against one or more x series.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Caption.
    pub name: String,
    /// The y value of every point.
    pub truth: Vec<f64>,
    /// x series, each with its colour, one value per entry of `truth`.
    pub series: Vec<(Rgb, Vec<f64>)>,
    /// Draw the line `y = x` (for predicted-vs-true plots, with both axes on one range).
    pub diagonal: bool,
}

/// Padded range of some values (finite ones only).
fn range(v: &[f64]) -> std::ops::Range<f64> {
    let (lo, hi) = v
        .iter()
        .filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    (lo - pad)..(hi + pad)
}

/// Draws scatter panels, three per row, into SVG text.
pub fn scatter_svg(panels: &[Panel], x_desc: &str, y_desc: &str) -> Result<String> {
    let plot_err = |e: String| Error::Invalid(format!("plot: {e}"));
    let rows = panels.len().div_ceil(PANELS_PER_ROW).max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (FIGURE_WIDTH, ROW_HEIGHT * rows as u32))
            .into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(e.to_string()))?;
        for (area, p) in root.split_evenly((rows, PANELS_PER_ROW)).iter().zip(panels) {
            let all: Vec<f64> = p
                .series
                .iter()
                .flat_map(|(_, v)| v.iter().copied())
                .collect();
            let (xr, yr) = if p.diagonal {
                let both: Vec<f64> = all.iter().chain(&p.truth).copied().collect();
                (range(&both), range(&both))
            } else {
                (range(&all), range(&p.truth))
            };
            let mut chart = ChartBuilder::on(area)
                .caption(&p.name, ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(xr.clone(), yr)
                .map_err(|e| plot_err(e.to_string()))?;
            chart
                .configure_mesh()
                .x_labels(5)
                .y_labels(6)
                .x_desc(x_desc)
                .y_desc(y_desc)
                .draw()
                .map_err(|e| plot_err(e.to_string()))?;
            if p.diagonal {
                chart
                    .draw_series(LineSeries::new(
                        [(xr.start, xr.start), (xr.end, xr.end)],
                        RGBColor(150, 150, 150),
                    ))
                    .map_err(|e| plot_err(e.to_string()))?;
            }
            for (colour, proxy) in &p.series {
                let (r, g, b) = *colour;
                chart
                    .draw_series(
                        proxy
                            .iter()
                            .zip(&p.truth)
                            .filter(|(x, y)| x.is_finite() && y.is_finite())
                            .map(|(&x, &y)| Circle::new((x, y), 3, RGBColor(r, g, b).filled())),
                    )
                    .map_err(|e| plot_err(e.to_string()))?;
            }
        }
        root.present().map_err(|e| plot_err(e.to_string()))?;
    }
    Ok(svg)
}

/// Writes [`scatter_svg`] to `path` (temporary file, then renamed).
pub fn write_scatter(path: &Path, panels: &[Panel], x_desc: &str, y_desc: &str) -> Result<()> {
    let svg = scatter_svg(panels, x_desc, y_desc)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    datamix_io::write_file(path, svg.as_bytes())?;
    Ok(())
}

/// Rasterises SVG text to PNG bytes with resvg and the system's fonts (text is left out
/// where none is installed).
pub fn svg_to_png(svg: &str) -> Result<Vec<u8>> {
    use resvg::{tiny_skia, usvg};
    let bad = |e: String| Error::Invalid(format!("plot: {e}"));
    let mut opt = usvg::Options::default();
    let db = opt.fontdb_mut();
    db.load_system_fonts();
    if db
        .faces()
        .any(|f| f.families.iter().any(|(n, _)| n == "DejaVu Sans"))
    {
        db.set_sans_serif_family("DejaVu Sans");
    }
    let tree = usvg::Tree::from_data(svg.as_bytes(), &opt).map_err(|e| bad(e.to_string()))?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| bad("empty image".into()))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| bad(e.to_string()))
}

/// Writes a PNG beside an SVG plot file (`x.svg` -> `x.png`).
pub fn png_copy(svg: &Path) -> Result<()> {
    let data = std::fs::read_to_string(svg).map_err(|e| Error::io(svg, e))?;
    let png = svg_to_png(&data).map_err(|e| Error::Invalid(format!("{}: {e}", svg.display())))?;
    datamix_io::write_file(&svg.with_extension("png"), &png)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scatter_renders_to_svg_and_png() {
        let panel = Panel {
            name: "p".into(),
            truth: vec![1.0, 2.0, 3.0],
            series: vec![(BLUE_RGB, vec![1.1, 1.9, 3.2])],
            diagonal: true,
        };
        let svg = scatter_svg(&[panel], "predicted", "true").unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        // One circle per point.
        assert_eq!(svg.matches("<circle").count(), 3);
        let png = svg_to_png(&svg).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}
