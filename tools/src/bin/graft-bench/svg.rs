//! graft-bench's charts, written as SVG (plotters).
use std::path::Path;

use crate::measure::{Point, Scale, SERIES};
use crate::server::VARIANTS;

pub(crate) fn chart(path: &Path, rps: &[f64], cpu: &[f64], machine: &str) {
    use plotters::prelude::*;
    let root_area = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root_area.fill(&WHITE).unwrap();
    let (left, right) = root_area.split_horizontally(450);
    let names: Vec<&str> = VARIANTS.iter().map(|v| v.slug()).collect();
    for (area, values, title) in [
        (left, rps, "requests/s (higher is better)"),
        (right, cpu, "worker CPU µs per request (lower is better)"),
    ] {
        let max = values.iter().cloned().fold(0.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d((0..values.len()).into_segmented(), 0.0..max)
            .unwrap();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) => names.get(*i).unwrap_or(&"").to_string(),
                _ => String::new(),
            })
            .draw()
            .unwrap();
        chart
            .draw_series(values.iter().enumerate().map(|(i, v)| {
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), *v),
                    ],
                    BLUE.mix(0.6).filled(),
                );
                bar.set_margin(0, 0, 8, 8);
                bar
            }))
            .unwrap();
    }
    root_area.titled(machine, ("sans-serif", 10)).ok();
    root_area.present().unwrap();
}

/// Per series, CPU per request and RSS against size (log scale), Lua and
/// native.
pub(crate) fn scaling_chart(path: &Path, scaling: &[Scale], machine: &str) {
    use plotters::prelude::*;
    let root_area = SVGBackend::new(path, (1200, 640)).into_drawing_area();
    root_area.fill(&WHITE).unwrap();
    let rows = root_area.split_evenly((2, SERIES.len()));
    for (col, (series, _)) in SERIES.iter().enumerate() {
        let points: Vec<&Scale> = scaling.iter().filter(|p| p.series == *series).collect();
        let (min_x, max_x) = (
            points.iter().map(|p| p.size).min().unwrap_or(1) as f64,
            points.iter().map(|p| p.size).max().unwrap_or(10) as f64,
        );
        for (row, (what, of)) in [
            (
                "CPU µs/req above plain",
                (|p: &Point| p.cpu_us) as fn(&Point) -> f64,
            ),
            ("worker RSS MiB", |p: &Point| p.rss_kib as f64 / 1024.0),
        ]
        .into_iter()
        .enumerate()
        {
            let area = &rows[row * SERIES.len() + col];
            let max_y = points
                .iter()
                .flat_map(|p| [of(&p.lua), of(&p.native)])
                .fold(0.0, f64::max)
                * 1.15
                + 0.1;
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{series}: {what}"), ("sans-serif", 13))
                .margin(10)
                .x_label_area_size(28)
                .y_label_area_size(50)
                .build_cartesian_2d((min_x..max_x).log_scale(), 0.0..max_y)
                .unwrap();
            chart.configure_mesh().draw().unwrap();
            for (name, color, pick) in [
                ("Lua", RED, (|p: &Scale| &p.lua) as fn(&Scale) -> &Point),
                ("native", BLUE, |p: &Scale| &p.native),
            ] {
                chart
                    .draw_series(LineSeries::new(
                        points.iter().map(|p| (p.size as f64, of(pick(p)))),
                        color.stroke_width(2),
                    ))
                    .unwrap()
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .unwrap();
        }
    }
    root_area.titled(machine, ("sans-serif", 10)).ok();
    root_area.present().unwrap();
}
