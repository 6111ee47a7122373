//! `cargo xtask bench [--quick]`: drives the release binary as a separate process, measures every figure of BENCHMARKS.md against its baseline in the same run, prints the table and writes it as JSON under `target/bench/`.

mod baseline;
mod client;
mod figures;
mod memory;
mod server;

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde_json::json;

/// Sizes and counts of one run.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Bytes streamed by each throughput figure.
    pub stream_bytes: u64,
    /// Repetitions of each throughput figure (the median is reported).
    pub stream_reps: usize,
    /// Untimed round trips before the timed pty echoes.
    pub echo_warmup: usize,
    /// Timed pty echo round trips.
    pub echo_count: usize,
    /// Untimed spawns before the timed ones.
    pub spawn_warmup: usize,
    /// Timed spawns.
    pub spawn_count: usize,
    /// Live processes of the scale figure.
    pub live_processes: usize,
    /// Simultaneous connections of the fairness figure.
    pub connections: usize,
    /// Bytes each of those connections streams.
    pub per_connection_bytes: u64,
    /// Connections of the memory figure.
    pub memory_connections: usize,
    /// Processes each of them runs at once.
    pub memory_processes: usize,
    /// Bytes each of those processes prints.
    pub memory_bytes: u64,
}

impl Sizes {
    const FULL: Sizes = Sizes {
        stream_bytes: 256 << 20,
        stream_reps: 5,
        echo_warmup: 200,
        echo_count: 5000,
        spawn_warmup: 20,
        spawn_count: 500,
        live_processes: 1000,
        connections: 64,
        per_connection_bytes: 8 << 20,
        memory_connections: 64,
        memory_processes: 8,
        memory_bytes: 4 << 20,
    };
    const QUICK: Sizes = Sizes {
        stream_bytes: 4 << 20,
        stream_reps: 2,
        echo_warmup: 5,
        echo_count: 50,
        spawn_warmup: 2,
        spawn_count: 20,
        live_processes: 50,
        connections: 8,
        per_connection_bytes: 1 << 20,
        memory_connections: 4,
        memory_processes: 2,
        memory_bytes: 1 << 20,
    };
}

/// What a figure must reach.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// value / baseline ≥ x.
    RatioAtLeast(f64),
    /// value / baseline ≤ x.
    RatioAtMost(f64),
    /// value ≤ x (in the figure's unit).
    AtMost(f64),
    /// Reported only.
    None,
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub unit: &'static str,
    pub value: f64,
    pub baseline: Option<f64>,
    pub target: Target,
    /// The median of the ratios of value to baseline measured side by side in each
    /// round, when the figure has rounds: it pairs measurements taken seconds apart, so
    /// outside load moves it less than the ratio of the two medians.
    pub paired: Option<f64>,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        self.paired.or_else(|| {
            self.baseline
                .filter(|b| *b > 0.0)
                .map(|baseline| self.value / baseline)
        })
    }

    fn met(&self) -> Option<bool> {
        match self.target {
            Target::RatioAtLeast(x) => self.ratio().map(|r| r >= x),
            Target::RatioAtMost(x) => self.ratio().map(|r| r <= x),
            Target::AtMost(x) => Some(self.value <= x),
            Target::None => None,
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::RatioAtLeast(x) => format!(">= {x}x"),
            Target::RatioAtMost(x) => format!("<= {x}x"),
            Target::AtMost(x) => format!("<= {} {}", number(x), self.unit),
            Target::None => "-".into(),
        }
    }
}

fn number(x: f64) -> String {
    if x >= 100.0 || x == x.trunc() {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// The median of `values` (sorted in place).
pub fn median(values: &mut [f64]) -> f64 {
    percentile(values, 0.5)
}

/// The `p` quantile (nearest rank) of `values` (sorted in place).
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    let rank = ((values.len() as f64) * p).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

fn sh(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": sh("uname", &["-r"]),
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    })
}

fn table(rows: &[Row], quick: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| figure | value | baseline | ratio | target | met |\n|---|---|---|---|---|---|"
    );
    for row in rows {
        let baseline = row
            .baseline
            .map(|b| format!("{} {}", number(b), row.unit))
            .unwrap_or_else(|| "-".into());
        let ratio = row
            .ratio()
            .map(|r| format!("{r:.2}x"))
            .unwrap_or_else(|| "-".into());
        let met = match (quick, row.met()) {
            (true, _) => "(quick)",
            (false, Some(true)) => "yes",
            (false, Some(false)) => "NO",
            (false, None) => "-",
        };
        let _ = writeln!(
            out,
            "| {} | {} {} | {baseline} | {ratio} | {} | {met} |",
            row.name,
            number(row.value),
            row.unit,
            row.target_text()
        );
    }
    out
}

/// Builds the release binaries and runs the bench in the release build of xtask (the
/// client's decoding must not be the unoptimised one of a dev build).
pub fn run(root: &Path, quick: bool, only: Option<&str>) -> Result<()> {
    if let Some(only) = only
        && !figures::GROUPS.contains(&only)
    {
        anyhow::bail!(
            "--only takes one of {}, not {only:?}",
            figures::GROUPS.join(", ")
        );
    }
    let started = Instant::now();
    if cfg!(debug_assertions) {
        super::run(
            root,
            "cargo",
            &[
                "build",
                "--release",
                "--quiet",
                "-p",
                "exec-server",
                "-p",
                "xtask",
            ],
        )?;
        let mut args = vec!["bench"];
        if quick {
            args.push("--quick");
        }
        if let Some(only) = only {
            args.extend(["--only", only]);
        }
        return super::run(
            root,
            &root.join("target/release/xtask").to_string_lossy(),
            &args,
        );
    }
    let bin = server::binary(root);
    let sizes = if quick { Sizes::QUICK } else { Sizes::FULL };
    let machine_before = machine();
    let rows = figures::all(&bin, sizes, only)?;
    let text = table(&rows, quick);
    println!("\n{text}");
    let elapsed = started.elapsed();
    println!(
        "{} run in {:.1} s; load average at the end: {}",
        if quick { "quick" } else { "full" },
        elapsed.as_secs_f64(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let report = json!({
        "quick": quick,
        "unixTime": stamp,
        "seconds": elapsed.as_secs_f64(),
        "commit": sh("git", &["-C", &root.to_string_lossy(), "rev-parse", "HEAD"]),
        "machineBefore": machine_before,
        "machineAfter": machine(),
        "sizes": format!("{sizes:?}"),
        "figures": rows.iter().map(|r| json!({
            "figure": r.name,
            "unit": r.unit,
            "value": r.value,
            "baseline": r.baseline,
            "ratio": r.ratio(),
            "target": r.target_text(),
            "met": if quick { None } else { r.met() },
        })).collect::<Vec<_>>(),
        "table": text,
    });
    let name = match (quick, only) {
        (true, _) => "quick",
        (false, None) => "full",
        (false, Some(only)) => only,
    };
    let path = dir.join(format!("{name}-{stamp}.json"));
    let body = serde_json::to_string_pretty(&report)?;
    std::fs::write(&path, &body).with_context(|| format!("writing {}", path.display()))?;
    std::fs::write(dir.join(format!("{name}-latest.json")), &body)?;
    println!("wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let mut values: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut values, 0.5), 50.0);
        assert_eq!(percentile(&mut values, 0.99), 99.0);
        assert_eq!(percentile(&mut values, 1.0), 100.0);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn targets_are_judged_on_the_ratio_or_the_value() {
        let row = |value, baseline, target| Row {
            name: "x".into(),
            unit: "us",
            value,
            baseline,
            target,
            paired: None,
        };
        assert_eq!(
            row(60.0, Some(100.0), Target::RatioAtLeast(0.5)).met(),
            Some(true)
        );
        assert_eq!(
            row(40.0, Some(100.0), Target::RatioAtLeast(0.5)).met(),
            Some(false)
        );
        assert_eq!(
            row(1.6, Some(1.0), Target::RatioAtMost(1.5)).met(),
            Some(false)
        );
        assert_eq!(
            row(1.4, Some(1.0), Target::RatioAtMost(1.5)).met(),
            Some(true)
        );
        assert_eq!(
            row(90.0, Some(10.0), Target::AtMost(100.0)).met(),
            Some(true)
        );
        assert_eq!(row(1.0, None, Target::RatioAtLeast(0.5)).met(), None);
        assert_eq!(row(1.0, None, Target::None).met(), None);
        let table = table(&[row(90.0, Some(45.0), Target::AtMost(100.0))], false);
        assert!(
            table.contains("| x | 90 us | 45 us | 2.00x | <= 100 us | yes |"),
            "{table}"
        );
    }
}
