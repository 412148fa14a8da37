//! How a benchmark run is shown: a progress bar while it runs, then one table, the results as
//! JSON and a chart (PNG).

use std::path::Path;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use super::{Figure, Results};

/// A progress bar for a scenario (drawn only on a terminal).
pub fn progress(scenario: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>14} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(scenario.to_string());
    bar
}

/// The CPU model and count, for the record.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cpus} × {model}")
}

fn num(value: Option<f64>, unit: &str) -> String {
    match value {
        None => "-".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}{unit}"),
        Some(v) if v >= 1.0 => format!("{v:.1}{unit}"),
        Some(v) => format!("{v:.3}{unit}"),
    }
}

/// Milliseconds, or microseconds when smaller than one.
fn time(ms: Option<f64>) -> String {
    match ms {
        Some(ms) if ms < 1.0 => format!("{:.1} µs", ms * 1000.0),
        Some(ms) => format!("{ms:.1} ms"),
        None => "-".into(),
    }
}

/// CPU per unit of a scenario (event, call or request), µs, and its column.
fn per_unit(seconds: Option<f64>, count: u64) -> String {
    match seconds {
        Some(s) if count > 0 => {
            let us = s * 1e6 / count as f64;
            if us >= 100.0 {
                format!("{us:.0}")
            } else {
                format!("{us:.1}")
            }
        }
        _ => "-".into(),
    }
}

pub fn print(results: &Results) {
    println!(
        "\n{} build on {}; {} events over {} partitions and {} products\n",
        results.build, results.machine, results.events, results.partitions, results.products
    );
    println!(
        "{:<19} {:>10} {:>10} {:>10} {:>26} {:>9}  what",
        "scenario", "rate/s", "p50", "p99", "CPU µs each: host pg broker", "peak MiB"
    );
    for f in &results.figures {
        let cpu = format!(
            "{:>8} {:>8} {:>8}",
            per_unit(Some(f.cpu.host_s), f.count),
            per_unit(f.cpu.postgres_s, f.count),
            per_unit(f.cpu.broker_s, f.count)
        );
        println!(
            "{:<19} {:>10} {:>10} {:>10} {:>26} {:>9}  {}",
            f.scenario,
            num(f.rate, ""),
            time(f.p50_ms),
            time(f.p99_ms),
            cpu,
            num(f.peak_rss_mib, ""),
            f.what
        );
    }
    println!();
    for (what, ratio) in &results.ratios {
        println!("{what}: {ratio:.2}×");
    }
    for f in results.figures.iter().filter(|f| !f.statements.is_empty()) {
        let per_k = |n: f64| n * 1000.0 / f.count.max(1) as f64;
        let calls: i64 = f.statements.iter().map(|s| s.calls).sum();
        let ms: f64 = f.statements.iter().map(|s| s.total_ms).sum();
        println!(
            "\n{}: PostgreSQL ran {:.1} statements and {:.1} ms of them per 1,000 events; the most time:",
            f.scenario,
            per_k(calls as f64),
            per_k(ms)
        );
        for statement in f.statements.iter().take(6) {
            println!(
                "  {:>7.2} ms {:>6.2} calls {:>8.0} rows  {}",
                per_k(statement.total_ms),
                per_k(statement.calls as f64),
                per_k(statement.rows as f64),
                statement.query
            );
        }
    }
}

/// `bench.json` and `bench.png` in `dir`.
pub fn write(results: &Results, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join("bench.json");
    std::fs::write(&json, serde_json::to_vec_pretty(results)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let png = dir.join("bench.png");
    match chart(results, &png) {
        Ok(()) => println!("\nwrote {} and {}", json.display(), png.display()),
        Err(e) => println!("\nwrote {}; no chart: {e:#}", json.display()),
    }
    Ok(())
}

/// The font the chart is written in (Debian's fonts-dejavu-core).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Ingest rates side by side, and the ratios.
fn chart(results: &Results, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let font = std::fs::read(FONT)
        .with_context(|| format!("reading {FONT} (apt-get install fonts-dejavu-core)"))?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Vec::leak(font))
        .map_err(|_| anyhow::anyhow!("{FONT} is not a usable font"))?;

    let bars: Vec<&Figure> = results
        .figures
        .iter()
        .filter(|f| {
            f.scenario.starts_with("ingest") || f.scenario == "per-message" || f.scenario == "swaps"
        })
        .collect();
    let max = bars.iter().filter_map(|f| f.rate).fold(1.0, f64::max) * 1.15;
    let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let caption = format!(
        "sluice bench: {} events, {} partitions ({} build, {})",
        results.events, results.partitions, results.build, results.machine
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(90)
        .build_cartesian_2d((0..bars.len().saturating_sub(1)).into_segmented(), 0.0..max)?;
    let labels: Vec<String> = bars.iter().map(|f| f.scenario.to_string()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc("events per second")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 15))
        .draw()?;
    let colors = [
        RGBColor(46, 117, 182),
        RGBColor(112, 173, 71),
        RGBColor(191, 144, 0),
        RGBColor(165, 165, 165),
    ];
    for (i, figure) in bars.iter().enumerate() {
        let rate = figure.rate.unwrap_or(0.0);
        let color = colors[i % colors.len()];
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), rate),
            ],
            color.filled(),
        );
        bar.set_margin(0, 0, 20, 20);
        chart.draw_series(std::iter::once(bar))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{rate:.0}/s"),
            (SegmentValue::CenterOf(i), rate + max * 0.02),
            ("sans-serif", 16),
        )))?;
    }
    let ratios: Vec<String> = results
        .ratios
        .iter()
        .map(|(what, r)| format!("{what}: {r:.2}×"))
        .collect();
    root.draw(&Text::new(
        ratios.join("    "),
        (110, 535),
        ("sans-serif", 15).into_font().color(&BLACK),
    ))?;
    root.present()?;
    Ok(())
}
