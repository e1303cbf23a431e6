//! Kafka -> dataflow throughput, run with `cargo bench --bench kafka`: `tampines broker` in its
//! own process, 100k live-density events produced into it (the mock cluster keeps at most 5 MiB
//! per partition: 150k did not fit, and the runs read 10% fewer events than replay), then
//! `run --until-end` with -w 1 and -w 2 against `replay` of the same file. Each run is a whole
//! process; its own group, so each reads everything, and each must read every event produced
//! (the bench stops otherwise).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Runs `tampines args` (with no `TAMPINES_` setting of the environment); its seconds and
/// stderr.
fn tampines(args: &[&str]) -> (f64, String) {
    let start = Instant::now();
    let out = (common::bare(env!("CARGO_BIN_EXE_tampines")).args(args))
        .output()
        .expect("run tampines");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {stderr}");
    (start.elapsed().as_secs_f64(), stderr)
}

/// The `read N` of a job's closing line.
fn read(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .rfind(|l| l.starts_with("read "))
        .expect("closing line");
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("read N")
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("kafka benchmark: run it with `cargo bench --bench kafka`");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let events = 100_000u64;
    let file = dir.join("kafka_100k.ndjson");
    let f = file.to_str().unwrap();
    tampines(&[
        "gen",
        "--symbols",
        "50",
        "--events",
        &events.to_string(),
        "--hours",
        "0.005",
        "--seed",
        "7",
        "--out",
        f,
    ]);
    let mut broker = Command::new(env!("CARGO_BIN_EXE_tampines"))
        .args(["broker", "--partitions", "4"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("broker");
    let mut line = String::new();
    BufReader::new(broker.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let bootstrap = line.trim().trim_start_matches("bootstrap=").to_string();
    let (produce, _) = tampines(&["produce", f, "--brokers", &bootstrap]);
    let total = events + 50;
    println!("| what | options | seconds | events/s |");
    println!("|---|---|---|---|");
    println!(
        "| produce | | {produce:.2} | {:.0} |",
        total as f64 / produce
    );
    for w in ["1", "2"] {
        let (replay, replayed) = tampines(&["replay", f, "-w", w, "--out", "/dev/null"]);
        let (run, ran) = tampines(&[
            "run",
            "--brokers",
            &bootstrap,
            "--until-end",
            "--group",
            &format!("bench{w}"),
            "-w",
            w,
            "--out",
            "/dev/null",
        ]);
        // The same events, or the figures compare nothing: the broker's retention drops the
        // oldest messages of a partition past 5 MiB.
        assert_eq!(read(&ran), total, "run read: {ran}");
        assert_eq!(read(&replayed), total, "replay read: {replayed}");
        println!(
            "| replay | `-w {w}` | {replay:.2} | {:.0} |",
            total as f64 / replay
        );
        println!(
            "| run --until-end | `-w {w}` | {run:.2} | {:.0} (x{:.2} of replay's time) |",
            total as f64 / run,
            run / replay
        );
    }
    let _ = broker.kill();
    let _ = broker.wait();
}
