//! The example strategies (`examples/strategy.rs`, `examples/strategy.py`) read consistent
//! snapshots from a real Redis fed by the job, and print exactly what the job's own NDJSON output
//! says the state is at the final mark.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::redis_server::RedisServer;
use common::{dec, final_state, marks, scratch, tampines};
use serde_json::Value;

const SYMBOL: &str = "synth:S001USDT";

/// The line both examples print, computed from the NDJSON output at its last mark.
fn expected(out: &std::path::Path) -> String {
    let marks = marks(out);
    let frontier = marks.last().expect("marks").0;
    let state = final_state(&marks);
    let book = &state[&format!("book:{SYMBOL}:1")];
    let bid = book["bids"][0][0].as_str().expect("a bid");
    let ask = book["asks"][0][0].as_str().expect("an ask");
    let spread = (dec(&book["asks"][0][0]) - dec(&book["bids"][0][0])).normalize();
    let ticker = &state[&format!("ticker:{SYMBOL}")];
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let closed = state
        .iter()
        .filter(|(k, c)| k.starts_with(&format!("candles:{SYMBOL}:1m:")) && c["closed"] == true)
        .map(|(_, c)| c)
        .max_by_key(|c| c["open_time"].as_u64())
        .expect("a closed 1m candle");
    format!(
        "frontier={frontier} symbol={SYMBOL} bid={bid} ask={ask} spread={spread} change_24h={} change_pct={} last_closed_1m={}:{}/{}/{}/{}/{}",
        text(&ticker["change"]),
        text(&ticker["change_pct"]),
        closed["open_time"],
        text(&closed["open"]),
        text(&closed["high"]),
        text(&closed["low"]),
        text(&closed["close"]),
        text(&closed["volume"]),
    )
}

/// Replays a generated market into a fresh Redis; returns the server and the expected line.
fn fed_redis(name: &str) -> (RedisServer, String) {
    let dir = scratch(name);
    let events = dir.join("events.ndjson");
    let out = dir.join("out.ndjson");
    tampines(&[
        "gen",
        "--symbols",
        "3",
        "--events",
        "4000",
        "--hours",
        "2",
        "--seed",
        "11",
        "--out",
        events.to_str().unwrap(),
    ]);
    let redis = RedisServer::start();
    tampines(&[
        "replay",
        events.to_str().unwrap(),
        "--granularity-ms",
        "1000",
        "--redis",
        &redis.url,
        "--out",
        out.to_str().unwrap(),
    ]);
    let line = expected(&out);
    (redis, line)
}

/// The lines a strategy printed for the first 3 updates of the stream.
fn lines(output: std::process::Output) -> Vec<String> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "strategy failed: {stderr}");
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_string)
        .collect()
}

const ARGS: [&str; 6] = ["--symbol", SYMBOL, "--from", "0", "--count", "3"];

#[test]
fn rust_strategy_reads_consistent_snapshots() {
    let (redis, want) = fed_redis("example_rust");
    // Examples are built beside the test binaries: target/<profile>/examples/strategy.
    let exe: PathBuf = std::env::current_exe()
        .expect("test exe")
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join("examples/strategy");
    assert!(
        exe.exists(),
        "{} is missing: run the suite with `cargo test --all-targets` (it builds the examples)",
        exe.display()
    );
    let out = Command::new(exe)
        .args(["--redis", &redis.url])
        .args(ARGS)
        .output()
        .expect("run strategy");
    assert_eq!(lines(out), vec![want; 3]);
}

/// redis-py for the system python (Debian's python3-redis), installed when missing.
fn python() -> &'static str {
    let python = "/usr/bin/python3";
    let has_redis = |p: &str| {
        Command::new(p)
            .args(["-c", "import redis"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has_redis(python) {
        let ok = Command::new("apt-get")
            .args(["install", "-y", "-qq", "python3-redis"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok && has_redis(python),
            "redis-py is needed (apt-get install python3-redis)"
        );
    }
    python
}

#[test]
fn python_strategy_reads_consistent_snapshots() {
    let python = python();
    let (redis, want) = fed_redis("example_python");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/strategy.py");
    let out = Command::new(python)
        .arg(script)
        .args(["--redis", &redis.url])
        .args(ARGS)
        .output()
        .expect("run strategy.py");
    assert_eq!(lines(out), vec![want; 3]);
}
