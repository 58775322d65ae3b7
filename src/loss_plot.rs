//! Training-loss curves, shared by `sdlab lora train` and `sdlab recsys
//! train`: the loss of every step as CSV, and as an SVG with a moving average.

use anyhow::Result;

/// `step,loss` rows.
pub fn write_csv(path: &std::path::Path, losses: &[f32]) -> Result<()> {
    let mut text = String::from("step,loss\n");
    for (i, l) in losses.iter().enumerate() {
        text.push_str(&format!("{},{l}\n", i + 1));
    }
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The loss of each step, and its moving average over ~5% of the run.
pub fn plot(path: &std::path::Path, losses: &[f32], y_desc: &str, title: &str) -> Result<()> {
    use anyhow::anyhow;
    use plotters::prelude::*;
    let raw: Vec<(f64, f64)> = losses
        .iter()
        .enumerate()
        .map(|(i, &l)| ((i + 1) as f64, l as f64))
        .collect();
    let w = (losses.len() / 20).max(1);
    let smooth: Vec<(f64, f64)> = (0..losses.len())
        .map(|i| {
            let lo = i.saturating_sub(w - 1);
            let win = &losses[lo..=i];
            (
                (i + 1) as f64,
                win.iter().map(|&l| l as f64).sum::<f64>() / win.len() as f64,
            )
        })
        .collect();
    let ymax = raw.iter().map(|p| p.1).fold(1e-9, f64::max) * 1.05;
    let xmax = losses.len().max(2) as f64;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(1.0..xmax, 0.0..ymax)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_desc)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let light = RGBColor(31, 119, 180).mix(0.35);
    let dark = RGBColor(214, 39, 40);
    chart
        .draw_series(LineSeries::new(raw, light.stroke_width(1)))
        .map_err(|e| anyhow!("{e}"))?
        .label("loss per step")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], light.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(smooth, dark.stroke_width(2)))
        .map_err(|e| anyhow!("{e}"))?
        .label(format!("moving average of {w}"))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], dark.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
