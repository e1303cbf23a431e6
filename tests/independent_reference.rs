//! The replay's results at every progress mark equal an independent reference written in Python
//! (`tests/reference/reference.py`) over streams from a generator of its own
//! (`tests/reference/streams.py`): neither shares code with Tampines. The harness's model
//! (`harness/`) recomputes from scratch too, but parses with the dataflow's parser and renders
//! with its record writer, so a bug there would not show in its check; here it would.
//!
//! Each case is replayed at 1, 2 and 4 workers (byte-identical outputs) and its output checked,
//! and the replay's counts must equal the reference's.

mod common;

use std::path::Path;
use std::process::Command;

use common::{scratch, tampines};
use serde_json::Value;

const STREAMS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/streams.py");
const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/reference.py");

struct Case {
    name: &'static str,
    seed: u32,
    events: u32,
    /// `streams.py` options.
    stream: &'static [&'static str],
    /// Input files the stream is split into.
    files: usize,
    /// The replay's options, which the reference reads too.
    options: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "short_window_coarse_depth",
        seed: 1,
        events: 600,
        stream: &[],
        files: 1,
        options: &[
            "--window-ms",
            "3000",
            "--intervals",
            "1s,5s",
            "--depth",
            "4",
        ],
    },
    // Marks that divide neither the window nor the intervals; trades too old for retention.
    Case {
        name: "odd_granularity_retention_2_too_late",
        seed: 2,
        events: 600,
        stream: &["--long-ago-ms", "3000"],
        files: 1,
        options: &[
            "--granularity-ms",
            "300",
            "--lateness-ms",
            "400",
            "--window-ms",
            "1000",
            "--intervals",
            "700ms,1s",
            "--candle-retention",
            "2",
            "--depth",
            "5",
        ],
    },
    // 1 ms marks, no lateness, a window of 50 ms.
    Case {
        name: "millisecond_marks",
        seed: 3,
        events: 500,
        stream: &["--span-ms", "2000", "--back-ms", "30"],
        files: 1,
        options: &[
            "--granularity-ms",
            "1",
            "--lateness-ms",
            "0",
            "--window-ms",
            "50",
            "--intervals",
            "7ms,20ms",
            "--depth",
            "3",
        ],
    },
    Case {
        name: "configured_ticks",
        seed: 4,
        events: 600,
        stream: &["--max-places", "4"],
        files: 1,
        options: &[
            "--tick-size",
            "ex:S0=0.05",
            "--tick-size",
            "ex:S1=0.0025",
            "--resolutions",
            "3,7",
            "--window-ms",
            "2000",
            "--intervals",
            "1s",
        ],
    },
    // 35 days at minute marks: day and week candles (weeks open on Thursdays), a 24 h window.
    Case {
        name: "weeks_of_minutes",
        seed: 5,
        events: 400,
        stream: &["--span-ms", "3024000000", "--back-ms", "3600000"],
        files: 1,
        options: &[
            "--granularity-ms",
            "60000",
            "--lateness-ms",
            "3600000",
            "--intervals",
            "4h,1d,1w",
        ],
    },
    // No sequence numbers at all, and one symbol name on two exchanges.
    Case {
        name: "no_sequence_numbers",
        seed: 6,
        events: 600,
        stream: &["--no-seq"],
        files: 1,
        options: &["--depth", "1", "--window-ms", "3000", "--intervals", "1s"],
    },
    // A symbol's trades from two inputs, each with its own watermark; retention 1.
    Case {
        name: "trades_from_two_inputs",
        seed: 7,
        events: 900,
        stream: &["--symbols", "3"],
        files: 2,
        options: &[
            "--window-ms",
            "3000",
            "--intervals",
            "500ms,1s,1300ms",
            "--candle-retention",
            "1",
        ],
    },
    Case {
        name: "three_inputs_two_minutes",
        seed: 8,
        events: 2500,
        stream: &["--symbols", "3", "--span-ms", "120000"],
        files: 3,
        options: &[
            "--window-ms",
            "10000",
            "--intervals",
            "1s,1m",
            "--lateness-ms",
            "500",
        ],
    },
];

/// The summary's counts: `read N processed N dead-lettered N duplicates N late N`.
fn summary(stderr: &str) -> Vec<u64> {
    let line = (stderr.lines())
        .rfind(|l| l.starts_with("read "))
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    (line.split_whitespace())
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// Runs the reference over `out`: its exit status, and its output (the summary line first).
fn reference(out: &Path, inputs: &[String], options: &[&str]) -> (bool, String) {
    let run = Command::new("python3")
        .arg(REFERENCE)
        .arg(out)
        .args(inputs)
        .args(options)
        .output()
        .expect("run python3");
    let text =
        String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
    (run.status.success(), text)
}

/// Writes a case's inputs: their paths.
fn inputs(dir: &Path, case: &Case) -> Vec<String> {
    let paths: Vec<String> = (0..case.files)
        .map(|i| dir.join(format!("in{i}.ndjson")).display().to_string())
        .collect();
    let made = Command::new("python3")
        .arg(STREAMS)
        .args([case.seed.to_string(), case.events.to_string()])
        .args(&paths)
        .args(case.stream)
        .status()
        .expect("run python3");
    assert!(made.success(), "{}: streams.py failed", case.name);
    paths
}

#[test]
fn every_mark_equals_the_independent_reference() {
    for case in CASES {
        let dir = scratch(&format!("independent_{}", case.name));
        let files = inputs(&dir, case);
        let mut outputs = Vec::new();
        let mut counts = Vec::new();
        for workers in ["1", "2", "4"] {
            let out = dir.join(format!("out{workers}.ndjson"));
            let mut args = vec!["replay"];
            args.extend(files.iter().map(String::as_str));
            args.extend(["--out", out.to_str().unwrap(), "-w", workers]);
            args.extend(case.options);
            counts.push(summary(&tampines(&args)));
            outputs.push(std::fs::read(&out).unwrap());
        }
        assert!(
            outputs.iter().all(|o| *o == outputs[0]) && counts.iter().all(|c| *c == counts[0]),
            "{}: the outputs or counts differ across 1, 2 and 4 workers",
            case.name
        );
        let (ok, text) = reference(&dir.join("out1.ndjson"), &files, case.options);
        assert!(ok, "{} (seed {}): {text}", case.name, case.seed);
        let found: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let n = |k: &str| found[k].as_u64().unwrap();
        // read, processed, dead-lettered, duplicates, late
        let (read, dead, duplicates, late) =
            (counts[0][0], counts[0][2], counts[0][3], counts[0][4]);
        assert_eq!(read, u64::from(case.events), "{}", case.name);
        assert_eq!(
            (dead, duplicates, late),
            (
                n("too_late"),
                n("trade_duplicates") + n("book_duplicates"),
                n("late")
            ),
            "{}: the replay's counts (dead-lettered, duplicates, late) against the reference's {found}",
            case.name
        );
        assert!(
            n("marks") > 20 && n("compared") > 500,
            "{}: {found}",
            case.name
        );
    }
}

/// The reference finds a wrong result: one quantity changed in one book record of a real
/// output, and one record dropped.
#[test]
fn the_reference_finds_a_changed_or_missing_record() {
    let case = &CASES[0];
    let dir = scratch("independent_negative");
    let files = inputs(&dir, case);
    let out = dir.join("out.ndjson");
    let mut args = vec!["replay"];
    args.extend(files.iter().map(String::as_str));
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend(case.options);
    tampines(&args);
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let book = (lines.iter())
        .position(|l| l.contains(r#""kind":"book""#) && l.contains(r#""bids":[["#))
        .expect("a book with bids");
    for (what, changed) in [
        ("a changed quantity", {
            let mut record: Value = serde_json::from_str(lines[book]).unwrap();
            let q = record["bids"][0][1].as_str().unwrap().to_string();
            record["bids"][0][1] = Value::String(format!("{q}1"));
            let mut changed = lines.clone();
            let line = record.to_string();
            changed[book] = &line;
            changed.join("\n") + "\n"
        }),
        ("a missing record", {
            let mut changed = lines.clone();
            changed.remove(book);
            changed.join("\n") + "\n"
        }),
    ] {
        let wrong = dir.join("wrong.ndjson");
        std::fs::write(&wrong, changed).unwrap();
        let (ok, found) = reference(&wrong, &files, case.options);
        assert!(!ok && found.contains("problems"), "{what}: {found}");
    }
    let (ok, found) = reference(&out, &files, case.options);
    assert!(ok, "the output as written: {found}");
}
