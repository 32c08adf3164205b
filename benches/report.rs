//! Draws the plots of BENCHMARKS.md from the latest results:
//! `target/criterion/throughput_reliable_60B` (criterion's medians),
//! `target/bench-results/latency.json`, `staleness.json` and
//! `payloads.json`. Run the other benches first:
//!
//! ```text
//! cargo bench --bench throughput && cargo bench --bench latency && \
//! cargo bench --bench staleness && cargo bench --bench payloads && \
//! cargo bench --bench report
//! ```
//!
//! Writes `benches/plots/*.png`. Missing results (or no DejaVu font for the
//! labels) are reported and skipped.

mod common;

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::Value as Json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(path: &Path) -> Option<Json> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn register_font() -> bool {
    for p in [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    ] {
        if let Ok(bytes) = std::fs::read(p) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            return plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok();
        }
    }
    false
}

type Res = Result<(), Box<dyn std::error::Error>>;
/// A plot: its file name and the function that draws it.
type Plot<'a> = (&'static str, &'a dyn Fn(&Path) -> Res);

/// Row `i` of a horizontal bar chart, from `x0` to `x1`: blue for
/// vuer-client, red for a baseline.
fn client_bar(name: &str, i: usize, x0: f64, x1: f64) -> Rectangle<(f64, SegmentValue<usize>)> {
    let color = if name.starts_with("vuer") {
        BLUE.mix(0.7)
    } else {
        RED.mix(0.5)
    };
    Rectangle::new(
        [
            (x0, SegmentValue::Exact(i)),
            (x1, SegmentValue::Exact(i + 1)),
        ],
        color.filled(),
    )
}

/// Events/s of each throughput bench (criterion median, one event per iteration).
fn throughput(out: &Path) -> Res {
    let dir = root().join("target/criterion/throughput_reliable_60B");
    let mut bars = Vec::new();
    for name in [
        "vuer_client_publish_from_thread",
        "vuer_client_publish_many64_from_thread",
        "vuer_client_publish_from_4_threads",
        "vuer_client_send_blocking_from_thread",
        "vuer_client_send_await",
        "tokio_tungstenite_feed64_flush",
        "tokio_tungstenite_flush_each",
    ] {
        let Some(est) = read_json(&dir.join(name).join("new/estimates.json")) else {
            println!("no criterion result for {name}; run `cargo bench --bench throughput`");
            return Ok(());
        };
        let ns = est["median"]["point_estimate"].as_f64().unwrap_or(f64::NAN);
        bars.push((name.replace('_', " "), 1e9 / ns / 1e6));
    }
    let root = BitMapBackend::new(out, (900, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Reliable 60-byte events to an in-process sink (median, M events/s)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(30)
        .y_label_area_size(260)
        .build_cartesian_2d(0.0..max, (0..bars.len()).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => bars.get(*i).map(|b| b.0.clone()).unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc("million events per second")
        .draw()?;
    chart.draw_series(
        bars.iter()
            .enumerate()
            .map(|(i, (name, v))| client_bar(name, i, 0.0, *v)),
    )?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
        Text::new(
            format!("{v:.2}"),
            (*v, SegmentValue::CenterOf(i)),
            ("sans-serif", 16),
        )
    }))?;
    root.present()?;
    println!("wrote {}", out.display());
    Ok(())
}

/// p50 and p99 one-way latency per rate, both clients.
fn latency(out: &Path) -> Res {
    let Some(rows) = read_json(&root().join("target/bench-results/latency.json")) else {
        println!("no latency.json; run `cargo bench --bench latency`");
        return Ok(());
    };
    let rows = rows.as_array().cloned().unwrap_or_default();
    // Median over repeated runs of the same (client, rate); of two runs,
    // the slower (the upper median).
    let mut groups: Vec<(String, u64, Vec<f64>, Vec<f64>)> = Vec::new();
    for r in &rows {
        let client = r["client"].as_str().unwrap_or("").to_owned();
        let rate = r["rate_hz"].as_u64().unwrap_or(0);
        let (p50, p99) = (
            r["p50_us"].as_f64().unwrap_or(0.0),
            r["p99_us"].as_f64().unwrap_or(0.0),
        );
        match groups.iter_mut().find(|g| g.0 == client && g.1 == rate) {
            Some(g) => {
                g.2.push(p50);
                g.3.push(p99);
            }
            None => groups.push((client, rate, vec![p50], vec![p99])),
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    groups.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let bars: Vec<(String, f64, f64)> = groups
        .iter_mut()
        .map(|g| {
            (
                format!("{} @ {} Hz", g.0, g.1),
                med(&mut g.2),
                med(&mut g.3),
            )
        })
        .collect();
    let root = BitMapBackend::new(out, (900, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = bars.iter().map(|b| b.2).fold(1.0, f64::max) * 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "One-way latency of a paced stream (µs; bar: p50, line: p99)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(30)
        .y_label_area_size(230)
        .build_cartesian_2d((1.0..max).log_scale(), (0..bars.len()).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => bars.get(*i).map(|b| b.0.clone()).unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc("microseconds (log scale)")
        .draw()?;
    chart.draw_series(
        bars.iter()
            .enumerate()
            .map(|(i, (name, p50, _))| client_bar(name, i, 1.0, *p50)),
    )?;
    for (i, (_, _, p99)) in bars.iter().enumerate() {
        chart.draw_series(LineSeries::new(
            vec![
                (*p99, SegmentValue::Exact(i)),
                (*p99, SegmentValue::Exact(i + 1)),
            ],
            BLACK.stroke_width(3),
        ))?;
    }
    root.present()?;
    println!("wrote {}", out.display());
    Ok(())
}

/// p99 age per second for each case of one peer (`prefix`).
fn staleness(out: &Path, prefix: &str, title: &str) -> Res {
    let Some(cases) = read_json(&root().join("target/bench-results/staleness.json")) else {
        println!("no staleness.json; run `cargo bench --bench staleness`");
        return Ok(());
    };
    let cases = cases.as_array().cloned().unwrap_or_default();
    let series: Vec<(String, Vec<(f64, f64)>)> = cases
        .iter()
        .filter(|c| c["case"].as_str().unwrap_or("").starts_with(prefix))
        .map(|c| {
            let pts = c["per_second"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| (p[0].as_f64().unwrap_or(0.0), p[2].as_f64().unwrap_or(0.0)))
                        .collect()
                })
                .unwrap_or_default();
            let name = c["case"].as_str().unwrap_or("");
            (
                name.trim_start_matches(prefix)
                    .trim_start_matches(": ")
                    .to_owned(),
                pts,
            )
        })
        .collect();
    let tmax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(1.0, f64::max)
        + 1.0;
    let ymax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 2.0;
    let root = BitMapBackend::new(out, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..tmax, (10.0..ymax).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds into the run")
        .y_desc("p99 age, ms (log)")
        .draw()?;
    let colors = [BLUE, RED, MAGENTA, BLACK];
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0 + 0.5, p.1.max(10.0))),
                c.stroke_width(2),
            ))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    println!("wrote {}", out.display());
    Ok(())
}

/// Throughput (MB/s) and client CPU per MB by frame size: vuer-client,
/// both baselines and the ceiling (`benches/payloads.rs`).
fn payloads(out: &Path) -> Res {
    let Some(rows) = read_json(&root().join("target/bench-results/payloads.json")) else {
        println!("no payloads.json; run `cargo bench --bench payloads`");
        return Ok(());
    };
    let rows = rows.as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        return Ok(());
    }
    let f = |r: &Json, k: &str| r[k].as_f64().unwrap_or(0.0);
    let frame = |r: &Json| f(r, "frame").max(1.0);
    let mbs = |r: &Json, k: &str| f(r, k) * frame(r) / 1e6;
    let xmin = rows.iter().map(frame).fold(f64::MAX, f64::min) / 1.5;
    let xmax = rows.iter().map(frame).fold(1.0, f64::max) * 1.5;
    let root = BitMapBackend::new(out, (1100, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(560);
    let series = [
        ("vuer-client", "ours", BLUE),
        ("tokio-tungstenite feed 64", "tt", RED),
        ("fastwebsockets", "fws", MAGENTA),
        ("ceiling (pre-encoded)", "ceiling", BLACK),
    ];
    let ymax = rows
        .iter()
        .flat_map(|r| series.iter().map(move |s| mbs(r, s.1)))
        .fold(1.0, f64::max)
        * 1.3;
    let mut chart = ChartBuilder::on(&left)
        .caption("Reliable events: MB/s by frame size", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d((xmin..xmax).log_scale(), 0.0..ymax)?;
    chart
        .configure_mesh()
        .x_desc("frame bytes (log)")
        .y_desc("MB/s")
        .draw()?;
    for (name, key, color) in series {
        chart
            .draw_series(LineSeries::new(
                rows.iter().map(|r| (frame(r), mbs(r, key))),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    let cpu = |r: &Json, i: usize| r["cpu_ms_per_mb"][i].as_f64().unwrap_or(0.0);
    let cmax = rows
        .iter()
        .flat_map(|r| (0..3).map(move |i| cpu(r, i)))
        .fold(0.1, f64::max)
        * 1.5;
    let mut chart = ChartBuilder::on(&right)
        .caption("Client CPU per MB sent (ms, log)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d((xmin..xmax).log_scale(), (0.05..cmax).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("frame bytes (log)")
        .y_desc("ms per MB")
        .draw()?;
    for (i, (name, _, color)) in series.iter().take(3).enumerate() {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                rows.iter().map(|r| (frame(r), cpu(r, i).max(0.05))),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    println!("wrote {}", out.display());
    Ok(())
}

fn main() {
    if !register_font() {
        println!("no DejaVuSans.ttf found: plots skipped");
        return;
    }
    // A smoke run (`cargo bench -- --test`) must not overwrite the plots
    // of BENCHMARKS.md with its own short results.
    let smoke = common::smoke_run();
    let dir = if smoke {
        root().join("target/bench-results/plots")
    } else {
        root().join("benches/plots")
    };
    std::fs::create_dir_all(&dir).unwrap();
    let staleness_reader = |p: &Path| {
        staleness(
            p,
            "60 msg/s reader",
            "Age of the values a 60 msg/s reader gets (p99 per second; 10 keys x 10 kHz)",
        )
    };
    let staleness_link = |p: &Path| {
        staleness(
            p,
            "20 kB/s link",
            "Age of the values read through a 20 kB/s link (p99 per second; 10 keys x 10 kHz)",
        )
    };
    let plots: [Plot; 5] = [
        ("throughput.png", &throughput),
        ("payloads.png", &payloads),
        ("latency.png", &latency),
        ("staleness_slow_reader.png", &staleness_reader),
        ("staleness_slow_link.png", &staleness_link),
    ];
    // `REPORT_ONLY=payloads` redraws one plot and leaves the others as
    // they are.
    let only = std::env::var("REPORT_ONLY").ok();
    for (name, f) in plots {
        if only.as_deref().is_some_and(|o| !name.starts_with(o)) {
            continue;
        }
        if let Err(e) = f(&dir.join(name)) {
            println!("{name}: {e}");
        }
    }
}
