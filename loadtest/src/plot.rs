//! The latency distributions of a comparison as an SVG: one line per target, latency
//! against percentile on a scale that spreads the tail (50%, 90%, 99%, 99.9%, 99.99%),
//! as HdrHistogram's plots do.

use std::path::Path;

use plotters::prelude::*;

/// One target's line: its name and (percentile, microseconds) points.
#[derive(Debug, Clone)]
pub struct Series {
    /// The target.
    pub name: String,
    /// Points from [`crate::histogram::Latencies::distribution`].
    pub points: Vec<(f64, u64)>,
}

/// Why the plot could not be written.
#[derive(Debug, thiserror::Error)]
#[error("plot {path}: {message}")]
pub struct PlotError {
    path: String,
    message: String,
}

/// Position on the x axis of a percentile: -log10(1 - p/100), so 90% is 1, 99% is 2.
pub fn tail_scale(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(1e-6);
    -rest.log10()
}

/// The label of an x position: `90%`, `99.9%`.
pub fn tail_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let text = format!("{p:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// Writes the SVG of `series` to `path`, titled `title`.
///
/// Fails when the file cannot be written.
pub fn write_svg(path: &Path, title: &str, series: &[Series]) -> Result<(), PlotError> {
    let fail = |e: &dyn std::fmt::Display| PlotError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let max_ms = series
        .iter()
        .flat_map(|s| {
            s.points
                .iter()
                .filter(|(p, _)| *p <= 99.99)
                .map(|(_, us)| *us)
        })
        .max()
        .unwrap_or(1) as f64
        / 1000.0;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..4f64, 0f64..(max_ms * 1.1).max(0.01))
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_labels(5)
        .x_label_formatter(&|x| tail_label(*x))
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .draw()
        .map_err(|e| fail(&e))?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points = s
            .points
            .iter()
            .filter(|(p, _)| *p <= 99.99)
            .map(|(p, us)| (tail_scale(*p), *us as f64 / 1000.0));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| fail(&e))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_scale_spreads_the_nines() {
        assert!((tail_scale(0.0)).abs() < 1e-9);
        assert!((tail_scale(90.0) - 1.0).abs() < 1e-9);
        assert!((tail_scale(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(tail_label(0.0), "0%");
        assert_eq!(tail_label(1.0), "90%");
        assert_eq!(tail_label(3.0), "99.9%");
    }

    #[test]
    fn svg_names_every_target() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latency.svg");
        let series = [
            Series {
                name: "gateway".into(),
                points: vec![(0.0, 100), (90.0, 200), (99.0, 400), (99.9, 900)],
            },
            Series {
                name: "nginx".into(),
                points: vec![(0.0, 120), (90.0, 220), (99.0, 500), (99.9, 1000)],
            },
        ];
        write_svg(&path, "http1 keep-alive", &series).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        let text = |t: &str| svg.lines().any(|l| l.trim() == t);
        assert!(text("gateway") && text("nginx"), "{svg}");
        assert!(text("99.9%"), "{svg}");
    }
}
