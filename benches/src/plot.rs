//! The recovery plot: activation time against history length, log-log, one curve per
//! (backend, full replay | snapshot + tail), as SVG.

use std::path::Path;

use plotters::prelude::*;

use crate::BoxError;

/// One curve: a label and (events in history, activation time in ms) points.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points, in increasing history length.
    pub points: Vec<(f64, f64)>,
    /// Dashed (snapshot + tail) or solid (full replay).
    pub dashed: bool,
    /// Colour index.
    pub colour: usize,
}

const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Draws the curves into an SVG at `path`.
pub fn recovery_svg(path: &Path, title: &str, series: &[Series]) -> Result<(), BoxError> {
    let points = || series.iter().flat_map(|s| s.points.iter().copied());
    let (x_min, x_max) = bounds(points().map(|p| p.0));
    let (y_min, y_max) = bounds(points().map(|p| p.1));
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(
            (x_min / 1.5..x_max * 1.5).log_scale(),
            (y_min / 2.0..y_max * 2.0).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("events in the aggregate's history")
        .y_desc("activation time (ms)")
        .x_label_formatter(&|x| format_events(*x))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()?;
    for s in series {
        let colour = COLOURS[s.colour % COLOURS.len()];
        let style = ShapeStyle::from(&colour).stroke_width(2);
        let anno = if s.dashed {
            chart.draw_series(DashedLineSeries::new(s.points.iter().copied(), 8, 5, style))?
        } else {
            chart.draw_series(LineSeries::new(s.points.iter().copied(), style))?
        };
        let dashed = s.dashed;
        anno.label(s.label.clone()).legend(move |(x, y)| {
            let style = ShapeStyle::from(&colour).stroke_width(2);
            // Two short strokes with a gap for a dashed curve, touching for a solid one.
            let (end, start) = if dashed { (8, 12) } else { (10, 10) };
            EmptyElement::at((x, y))
                + PathElement::new(vec![(0, 0), (end, 0)], style)
                + PathElement::new(vec![(start, 0), (20, 0)], style)
        });
        chart.draw_series(
            s.points
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 3, ShapeStyle::from(&colour).filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (min, max) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if min.is_finite() && max > 0.0 {
        (min, max)
    } else {
        (0.001, 1.0)
    }
}

fn format_events(x: f64) -> String {
    if x >= 1_000_000.0 {
        format!("{}M", x / 1_000_000.0)
    } else if x >= 1_000.0 {
        format!("{}k", x / 1_000.0)
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_svg_is_written() -> Result<(), BoxError> {
        let dir = std::env::temp_dir().join(format!("bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("r.svg");
        let series = vec![
            Series {
                label: "full".into(),
                points: vec![(1e3, 1.0), (1e4, 10.0)],
                dashed: false,
                colour: 0,
            },
            Series {
                label: "snap".into(),
                points: vec![(1e3, 0.1), (1e4, 0.1)],
                dashed: true,
                colour: 0,
            },
        ];
        recovery_svg(&path, "t", &series)?;
        let svg = std::fs::read_to_string(&path)?;
        assert!(svg.contains("<svg"));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
