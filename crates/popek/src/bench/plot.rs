//! The report drawn as one SVG: bt's ratios to every other runner per
//! workload (log scale), and the translation-cache size sweep (hit rate,
//! evictions and time against the size).

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::measure::Runner;
use super::report::Report;

const WIDTH: u32 = 1500;
const HEIGHT: u32 = 1100;
const FONT: &str = "sans-serif";

/// The marker colour of each baseline and of each swept workload.
const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

type Error = Box<dyn std::error::Error>;

/// Writes the plot of `report` to `path`.
pub fn draw(path: &Path, report: &Report) -> Result<(), Error> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(HEIGHT * 3 / 5);
    ratios(&top, report)?;
    let panels = bottom.split_evenly((1, 3));
    sweep(&panels[0], report, "hit rate (%)", |p| {
        p.tc.hit_rate.map(|r| r * 100.0)
    })?;
    sweep(&panels[1], report, "evictions", |p| {
        Some(p.tc.evictions as f64)
    })?;
    sweep(&panels[2], report, "time (s)", |p| Some(p.seconds))?;
    root.present()?;
    Ok(())
}

/// bt's median over each baseline's: one row per workload, one marker per
/// baseline, on a log scale with 1 (as fast) marked.
fn ratios<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    report: &Report,
) -> Result<(), Error>
where
    DB::ErrorType: 'static,
{
    let names: Vec<&str> = report.workloads.iter().map(|w| w.name.as_str()).collect();
    let baselines = [Runner::Native, Runner::Qemu, Runner::Kvm];
    let all: Vec<f64> = report
        .workloads
        .iter()
        .flat_map(|w| baselines.iter().filter_map(|b| w.ratio(*b)))
        .collect();
    let lo = all.iter().copied().fold(1.0f64, f64::min) / 1.5;
    let hi = all.iter().copied().fold(1.0f64, f64::max) * 1.5;
    let n = names.len().max(1) as i32;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "popek bt against the other runners: bt's median / the runner's (right of 1: bt is slower)",
            (FONT, 18),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(170)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n).into_segmented())?;
    // Rows top to bottom in table order.
    let label = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => names
            .get((n - 1 - *i) as usize)
            .copied()
            .unwrap_or("")
            .to_string(),
        SegmentValue::Last => String::new(),
    };
    chart
        .configure_mesh()
        .y_labels(names.len())
        .y_label_formatter(&label)
        .y_label_style((FONT, 12))
        .light_line_style(WHITE)
        .x_desc("bt / runner (log scale)")
        .draw()?;
    chart.draw_series(LineSeries::new(
        [(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Last)],
        BLACK.stroke_width(2),
    ))?;
    for (k, base) in baselines.into_iter().enumerate() {
        let colour = COLOURS[k];
        let points: Vec<(f64, SegmentValue<i32>)> = report
            .workloads
            .iter()
            .enumerate()
            .filter_map(|(i, w)| Some((w.ratio(base)?, SegmentValue::CenterOf(n - 1 - i as i32))))
            .collect();
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 5, colour.filled())),
            )?
            .label(format!("bt/{base}"))
            .legend(move |(x, y)| Circle::new((x, y), 5, colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// One quantity of the sweep against the cache size, a line per workload.
fn sweep<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    report: &Report,
    what: &str,
    value: fn(&super::measure::SweepPoint) -> Option<f64>,
) -> Result<(), Error>
where
    DB::ErrorType: 'static,
{
    let mut workloads: Vec<&str> = Vec::new();
    for p in report.sweep {
        if !workloads.contains(&p.workload.as_str()) {
            workloads.push(&p.workload);
        }
    }
    let values: Vec<f64> = report.sweep.iter().filter_map(value).collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if values.is_empty() {
        (0.0, 1.0)
    } else {
        let pad = ((hi - lo) * 0.1).max(hi.abs() * 0.01).max(1e-3);
        ((lo - pad).max(0.0), hi + pad)
    };
    let max_kib = f64::from(bt::engine::TC_MAX / 1024);
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{what} against tc size"), (FONT, 16))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((48f64..max_kib * 1.3).log_scale(), lo..hi)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_labels(6)
        .x_desc("--tc-size (KiB)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc(what)
        .draw()?;
    for (k, name) in workloads.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let points: Vec<(f64, f64)> = report
            .sweep
            .iter()
            .filter(|p| p.workload == *name)
            .filter_map(|p| Some((f64::from(p.tc_size / 1024), value(p)?)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(name.to_string())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 4, colour.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_svg_is_xml_with_every_series() {
        let (w, s, n) = super::super::report::tests::sample();
        let report = Report {
            runs: 3,
            quick: true,
            workloads: &w,
            sweep: &s,
            notes: &n,
            elapsed: std::time::Duration::from_secs(1),
        };
        let path = std::env::temp_dir().join(format!("popek-plot-{}.svg", std::process::id()));
        draw(&path, &report).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).ok();
        let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
        let labels: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .map(str::trim)
            .collect();
        for want in [
            "bt/native",
            "bt/qemu",
            "demo/forkwait",
            "linux/syscall",
            "demo",
        ] {
            assert!(labels.contains(&want), "no {want:?} in {labels:?}");
        }
    }
}
