//! The concurrency sweep as a picture: output tokens/s, TTFT p50 and TPOT
//! p50 against the concurrency limit, one line per mode (SVG).

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

pub struct Series {
    pub label: String,
    pub throughput: Vec<(f64, f64)>,
    pub ttft_ms: Vec<(f64, f64)>,
    pub tpot_ms: Vec<(f64, f64)>,
}

const COLORS: [RGBColor; 3] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
];

pub fn draw(path: &Path, series: &[Series], model: &str) -> Result<()> {
    let root = SVGBackend::new(path, (1500, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let root = root
        .titled(
            &format!("sdlab bench batching: {model}, all requests at once"),
            ("sans-serif", 22),
        )
        .map_err(|e| anyhow!("{e}"))?;
    let panels = root.split_evenly((1, 3));
    type Pick = fn(&Series) -> &Vec<(f64, f64)>;
    let specs: [(&str, Pick); 3] = [
        ("output tokens/s", |s| &s.throughput),
        ("TTFT p50 (ms)", |s| &s.ttft_ms),
        ("TPOT p50 (ms)", |s| &s.tpot_ms),
    ];
    for (panel, (title, pick)) in panels.iter().zip(specs) {
        let all: Vec<(f64, f64)> = series.iter().flat_map(|s| pick(s).clone()).collect();
        let xmax = all.iter().map(|p| p.0).fold(1.0, f64::max);
        let ymax = all.iter().map(|p| p.1).fold(1e-9, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..xmax * 1.05, 0.0..ymax)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("concurrency limit")
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        for (s, color) in series.iter().zip(COLORS.iter().cycle()) {
            let pts = pick(s).clone();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| anyhow!("{e}"))?
                .label(s.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
                .map_err(|e| anyhow!("{e}"))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
