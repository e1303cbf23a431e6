//! Replay benchmarks (CONTRACT workloads of issue 2), run with `cargo bench --bench replay`.
//!
//! Generates the inputs with `shared/tools/gen_events.py` (falls back to `tampines gen`), runs the
//! release binary as a whole process per configuration, and prints events/s and peak memory (RSS,
//! from GNU time). `BENCH_SCALE=0.1` shrinks every input for a quick look.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

struct Input {
    name: &'static str,
    path: PathBuf,
    events: u64,
}

fn data_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).expect("bench data dir");
    dir
}

fn generate(
    name: &'static str,
    symbols: u32,
    events: u64,
    hours: f64,
    seed: u32,
    extra: &[&str],
) -> Input {
    let path = data_dir().join(format!("{name}.ndjson"));
    if !path.exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/gen_events.py");
        let args = [
            "--symbols".to_string(),
            symbols.to_string(),
            "--events".to_string(),
            events.to_string(),
            "--hours".to_string(),
            hours.to_string(),
            "--seed".to_string(),
            seed.to_string(),
        ];
        let out = std::fs::File::create(&path).expect("create input");
        let status = if script.exists() {
            Command::new("python3")
                .arg(&script)
                .args(&args)
                .args(extra)
                .stdout(out)
                .status()
        } else {
            Command::new(env!("CARGO_BIN_EXE_tampines"))
                .arg("gen")
                .args(&args)
                .stdout(out)
                .status()
        };
        assert!(status.expect("run generator").success(), "generator failed");
    }
    Input {
        name,
        path,
        events: events + u64::from(symbols),
    }
}

/// Runs one replay; returns (seconds, peak RSS in MiB).
fn replay(input: &Input, args: &[&str]) -> (f64, f64) {
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(env!("CARGO_BIN_EXE_tampines"))
        .arg("replay")
        .arg(&input.path)
        .args(args)
        .args(["--out", "/dev/null"])
        .output()
        .expect("run /usr/bin/time tampines replay");
    let secs = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "replay failed: {stderr}");
    let kb: f64 = stderr
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(f64::NAN);
    (secs, kb / 1024.0)
}

fn main() {
    // `cargo test --all-targets` builds and runs bench targets too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("replay benchmark: run it with `cargo bench --bench replay`");
        return;
    }
    let scale: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let n = |x: f64| (x * scale) as u64;
    let live = generate("live_50sym_1m", 50, n(1_000_000.0), 0.03 * scale, 7, &[]);
    let long = generate("long_400k_30h", 50, n(400_000.0), 30.0, 7, &[]);
    let trades = generate(
        "trades_400k_30h",
        50,
        n(400_000.0),
        30.0,
        7,
        &["--trade-ratio", "0.9"],
    );
    let flink = generate("flink_50sym_1m_30h", 50, n(1_000_000.0), 30.0, 7, &[]);
    let runs: Vec<(&Input, &str, Vec<&str>)> = vec![
        (&live, "live density, all defaults", vec!["-w", "1"]),
        (&live, "live density, all defaults", vec!["-w", "2"]),
        (&long, "long span, 100 ms granularity", vec!["-w", "2"]),
        (
            &trades,
            "trade-heavy, 1 h window",
            vec!["-w", "2", "--window-ms", "3600000"],
        ),
        (&trades, "trade-heavy, 24 h window", vec!["-w", "2"]),
        (
            &flink,
            "Flink comparison, 1 s granularity",
            vec!["-w", "2", "--granularity-ms", "1000"],
        ),
    ];
    println!("| input | workload | options | seconds | events/s | peak RSS MiB |");
    println!("|---|---|---|---|---|---|");
    for (input, what, args) in runs {
        let (secs, mib) = replay(input, &args);
        println!(
            "| {} | {what} | `{}` | {secs:.2} | {:.0} | {mib:.0} |",
            input.name,
            args.join(" "),
            input.events as f64 / secs,
        );
    }
}
