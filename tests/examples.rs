//! The example strategies (`examples/strategy.rs`, `examples/strategy.py`) follow a real Redis
//! while the job writes to it, until they show its last mark; every snapshot they print is exactly
//! the state the job's own NDJSON output has at the frontier the snapshot names.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::broker::KillOnDrop;
use common::redis_server::RedisServer;
use common::{dec, gen_events, key, marks, scratch, tampines};
use serde_json::Value;

const SYMBOL: &str = "synth:S001USDT";

/// The line both examples print for a snapshot at mark `frontier`, given the state (key ->
/// record) after every mark up to `frontier` of the job's NDJSON output.
fn expected(state: &BTreeMap<String, Value>, frontier: u64) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let book = state.get(&format!("book:{SYMBOL}:1"));
    let best = |side: &str| {
        book.and_then(|b| b[side][0][0].as_str())
            .map(str::to_string)
    };
    let (bid, ask) = (best("bids"), best("asks"));
    let spread = match (&bid, &ask) {
        (Some(_), Some(_)) => {
            let b = book.unwrap();
            (dec(&b["asks"][0][0]) - dec(&b["bids"][0][0]))
                .normalize()
                .to_string()
        }
        _ => "-".into(),
    };
    let ticker = state.get(&format!("ticker:{SYMBOL}"));
    let field = |k: &str| ticker.map(|t| text(&t[k])).unwrap_or_else(|| "-".into());
    let closed = state
        .iter()
        .filter(|(k, c)| k.starts_with(&format!("candles:{SYMBOL}:1m:")) && c["closed"] == true)
        .map(|(_, c)| c)
        .max_by_key(|c| c["open_time"].as_u64())
        .map(|c| {
            format!(
                "{}:{}/{}/{}/{}/{}",
                c["open_time"],
                text(&c["open"]),
                text(&c["high"]),
                text(&c["low"]),
                text(&c["close"]),
                text(&c["volume"])
            )
        })
        .unwrap_or_else(|| "-".into());
    format!(
        "frontier={frontier} symbol={SYMBOL} bid={} ask={} status={} spread={spread} change_24h={} change_pct={} last_closed_1m={closed}",
        bid.as_deref().unwrap_or("-"),
        ask.as_deref().unwrap_or("-"),
        book.and_then(|b| b["status"].as_str()).unwrap_or("-"),
        field("change"),
        field("change_pct"),
    )
}

/// One example test at a time: the Rust one builds its example first, which must not eat the
/// other's deadline on a 2-core machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `strategy` (a command reading the Redis at the URL it is given) WHILE the job replays a
/// generated market into that Redis; every line it prints must be exactly the state of the job's
/// NDJSON output at the frontier the line names: no snapshot ever mixes two marks. No line
/// repeats the one before (a read whose entries an earlier snapshot had already shown printed
/// that state again: an audit saw 101 equal lines in a row). SIGTERM ends it with exit 0, saying
/// where to resume (the Python one was killed by it, silently).
fn check_strategy(name: &str, strategy: impl FnOnce(&str) -> Command) {
    let dir = scratch(name);
    let events = dir.join("events.ndjson");
    let out = dir.join("out.ndjson");
    gen_events(&events, 3, 20000, "2", 11, &[]);
    let redis = RedisServer::start();
    // The strategy waits on the stream from its start, reading as the job writes.
    let mut reader = KillOnDrop(
        strategy(&redis.url)
            .args(["--symbol", SYMBOL, "--from", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start strategy"),
    );
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = reader.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
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
    // The strategy keeps following; it is done once it has shown the job's last mark.
    let marks = marks(&out);
    let last = format!("frontier={} ", marks.last().expect("marks").0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines: Vec<String> = Vec::new();
    while !lines.last().is_some_and(|l| l.starts_with(&last)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("the strategy never showed {last}: {lines:?}"),
        }
    }
    let status = common::signalled(&mut reader.0, "TERM").expect("ends within 60 s of SIGTERM");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut reader.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let resume = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        resume.starts_with("strategy: resume with --from "),
        "{stderr}"
    );
    for pair in lines.windows(2) {
        assert_ne!(pair[0], pair[1], "a snapshot printed twice in a row");
    }
    // The state at each frontier a line names, built in one pass over the marks.
    let frontier_of = |line: &str| -> u64 {
        line.strip_prefix("frontier=")
            .and_then(|l| l.split(' ').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no frontier in {line}"))
    };
    let wanted: BTreeSet<u64> = lines.iter().map(|l| frontier_of(l)).collect();
    let mut state = BTreeMap::new();
    let mut at: BTreeMap<u64, String> = BTreeMap::new();
    for (time, records) in &marks {
        for r in records {
            state.insert(key(r), r.clone());
        }
        if wanted.contains(time) {
            at.insert(*time, expected(&state, *time));
        }
    }
    eprintln!("{} snapshots at {} frontiers", lines.len(), wanted.len());
    for line in &lines {
        let frontier = frontier_of(line);
        assert_eq!(Some(line), at.get(&frontier), "a snapshot at {frontier}");
    }
}

/// A Rust example as a plain program. `cargo test --all-targets` builds examples only in test
/// mode (a harness, not their `main`), so the test builds it with the same cargo, profile and
/// target directory; cargo has released its build lock by the time tests run.
fn rust_example(name: &str) -> PathBuf {
    let profile_dir = std::env::current_exe()
        .expect("test exe")
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .to_path_buf();
    let target_dir = profile_dir.parent().expect("target dir");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--quiet", "--example", name, "--manifest-path"])
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir);
    // The profile that built this test: its directory is named after it, except `dev` (debug).
    let profile = match profile_dir.file_name().and_then(|p| p.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    build.args(["--profile", profile]);
    let status = build.status().expect("run cargo build --example");
    assert!(status.success(), "cargo build --example {name}: {status}");
    let exe = profile_dir.join("examples").join(name);
    assert!(exe.exists(), "{} was not built", exe.display());
    exe
}

#[test]
fn rust_strategy_reads_consistent_snapshots() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let exe = rust_example("strategy");
    check_strategy("example_rust", |url| {
        let mut c = Command::new(&exe);
        c.args(["--redis", url]);
        c
    });
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
    common::ensure_package("python3-redis", || has_redis(python));
    python
}

#[test]
fn python_strategy_reads_consistent_snapshots() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let python = python();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/strategy.py");
    check_strategy("example_python", |url| {
        let mut c = Command::new(python);
        c.arg(&script).args(["--redis", url]);
        c
    });
}

/// `examples/check.rs` replays a golden case at 1, 2 and 4 workers against the harness's model:
/// its marks and records are the golden file's (counted there), its dead letters the golden
/// dead-letter file's. A bad option exits 2.
#[test]
fn the_check_example_compares_a_file_with_the_model() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let exe = rust_example("check");
    let case =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/dead_letters_and_duplicates");
    let expected = std::fs::read_to_string(case.join("expected.ndjson")).unwrap();
    let marks = expected
        .lines()
        .filter(|l| l.contains(r#""kind":"progress""#))
        .count();
    let records = expected.lines().count() - marks;
    let dead = std::fs::read_to_string(case.join("expected.dlq.ndjson"))
        .unwrap()
        .lines()
        .count();
    let out = Command::new(&exe)
        .arg(case.join("input.ndjson"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (line, workers) in lines.iter().zip([1, 2, 4]) {
        let head = format!("-w {workers}: {marks} marks, {records} records equal the model (read ");
        assert!(line.starts_with(&head), "{line}");
        assert!(line.contains(&format!(" dead-lettered {dead} ")), "{line}");
    }
    let bad = Command::new(&exe)
        .args(["x.ndjson", "--depth", "0"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr),
        "check: --depth must be positive\n"
    );
}
