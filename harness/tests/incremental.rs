//! The dataflow's output at every progress mark equals the reference model, for seeded adversarial
//! inputs, at 1, 2 and 4 workers, with varied granularity, lateness, window and source batching.
//! Set `TAMPINES_SEEDS=N` to run more seeds (0 to N - 1), or `TAMPINES_SEED=K` to run seed K
//! alone, as a failure names it with its settings.

use tampines_dataflows::config::Config;
use tampines_dataflows::types::{Price, Sym};
use tampines_harness::check;
use tampines_harness::generate::{by_kind, case, Shape};
use tampines_harness::run::Reading;

/// The seeds to run: `0..default`, `0..TAMPINES_SEEDS`, or `TAMPINES_SEED` alone.
fn seeds(default: u64) -> std::ops::Range<u64> {
    let var = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    match (var("TAMPINES_SEED"), var("TAMPINES_SEEDS")) {
        (Some(one), _) => one..one + 1,
        (None, n) => 0..n.unwrap_or(default),
    }
}

struct Setting {
    granularity_ms: u64,
    lateness_ms: u64,
    window_ms: u64,
    batch: usize,
}

const SETTINGS: &[Setting] = &[
    Setting {
        granularity_ms: 100,
        lateness_ms: 1000,
        window_ms: 3_000,
        batch: 8192,
    },
    // A granularity that divides neither the window nor the intervals.
    Setting {
        granularity_ms: 7,
        lateness_ms: 200,
        window_ms: 1_500,
        batch: 7,
    },
    Setting {
        granularity_ms: 1,
        lateness_ms: 0,
        window_ms: 2_000,
        batch: 1,
    },
    Setting {
        granularity_ms: 1000,
        lateness_ms: 500,
        window_ms: 10_000,
        batch: 64,
    },
    // Coarser than the finest interval (1 s): a mark can close several of its candles.
    Setting {
        granularity_ms: 1500,
        lateness_ms: 700,
        window_ms: 4_000,
        batch: 3,
    },
    // A lateness longer than the candles' retention span (4 x 1 s): trades older than that span
    // whose timestamp is still open apply at it like any other, candles included (only late
    // ones are `too_late`).
    Setting {
        granularity_ms: 250,
        lateness_ms: 5_000,
        window_ms: 6_000,
        batch: 16,
    },
    // A window shorter than a mark, and a lateness longer than the window: a trade may be
    // outside the window at its own timestamp (its symbol's ticker then counts nothing), and a
    // repeated id counts again once its first copy has left it (README, Known limitations).
    Setting {
        granularity_ms: 1000,
        lateness_ms: 3_000,
        window_ms: 700,
        batch: 32,
    },
];

/// The generator's seed for `seed` under setting `i`: setting 0 takes the seed itself (the
/// cases `the_cases_exercise_every_feature` counts), the others seeds of their own, so that
/// each setting replays different events, not the same events at other times.
fn case_seed(seed: u64, i: usize) -> u64 {
    seed + 1_000_003 * i as u64
}

fn config(s: &Setting) -> Config {
    Config {
        granularity_ms: s.granularity_ms,
        lateness_ms: s.lateness_ms,
        window_ms: s.window_ms,
        depth: 3,
        resolutions: vec![1, 2, 10],
        intervals: vec![
            "1s".parse().unwrap(),
            "5s".parse().unwrap(),
            "1m".parse().unwrap(),
        ],
        candle_retention: 4,
        source_batch: s.batch,
        // SYM0 has a configured tick; the others infer theirs from their prices.
        tick_sizes: [(Sym::of("ex", "SYM0"), Price::parse("0.05").unwrap())].into(),
        // The cases' times are in 1970: never ahead of the clock.
        max_ahead_ms: None,
    }
}

fn shape(s: &Setting, seed: u64) -> Shape {
    Shape {
        events: 150 + (seed as usize % 5) * 40,
        symbols: 3 + (seed as usize % 2),
        inputs: 1 + (seed as usize % 3),
        step_ms: 60,
        jitter_ms: s.lateness_ms.min(400),
        lateness_ms: s.lateness_ms.max(50),
    }
}

/// Checks a case (panicking with the failure); the number of marks checked.
fn marks_checked(
    label: &str,
    inputs: &[Vec<String>],
    config: &Config,
    workers: usize,
    reading: Reading,
) -> usize {
    // A panic inside the dataflow or the model names the case too (the seed is in `label`).
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check(label, inputs, config, workers, reading)
    }));
    match checked {
        Ok(Ok(expected)) => expected.marks.len(),
        Ok(Err(e)) => panic!("{e}"),
        Err(panic) => {
            let message = (panic.downcast_ref::<String>().map(String::as_str))
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            panic!("{label} (workers {workers}, {reading:?}) panicked: {message}")
        }
    }
}

/// The cases of a test published many marks, as they should.
fn enough_marks(marks: usize) {
    assert!(
        marks > 1000,
        "the cases should publish many marks, got {marks}"
    );
}

#[test]
fn every_mark_equals_the_reference_at_1_2_and_4_workers() {
    let mut marks = 0;
    let seeds = seeds(6);
    let several = seeds.end - seeds.start > 1;
    for seed in seeds {
        for (i, s) in SETTINGS.iter().enumerate() {
            // Every third seed splits books and trades into inputs of their own, as the two
            // Kafka topics do.
            let split = seed % 3 == 2;
            let inputs = match case(case_seed(seed, i), &shape(s, seed)) {
                inputs if split => by_kind(inputs),
                inputs => inputs,
            };
            let config = config(s);
            for workers in [1, 2, 4] {
                let label = format!(
                    "seed {seed} setting {i} (case seed {}, g {} lateness {} window {} batch {}{})",
                    case_seed(seed, i),
                    s.granularity_ms,
                    s.lateness_ms,
                    s.window_ms,
                    s.batch,
                    if split {
                        ", books and trades apart"
                    } else {
                        ""
                    }
                );
                // Lines parsed by the source, or parsed ahead (as files are), in batches of
                // 1 to 64 lines: each case is read both ways across its worker counts.
                let reading = match (seed as usize + workers + i) % 2 {
                    0 => Reading::Lines,
                    _ => Reading::Ahead([1, 5, 64][(seed as usize + i) % 3]),
                };
                marks += marks_checked(&label, &inputs, &config, workers, reading);
            }
        }
    }
    if several {
        enough_marks(marks);
    }
}

#[test]
fn the_cases_exercise_every_feature() {
    // The generator's cases must actually contain what the comparison is meant to cover.
    let s = &SETTINGS[0];
    let mut totals = tampines_dataflows::stats::Totals::default();
    let (mut stale, mut crossed, mut closed, mut removed) = (0, 0, 0, 0);
    let (mut too_late, mut empty_tickers, mut tick_groups) = (0, 0, 0);
    let mut reasons = std::collections::BTreeSet::new();
    let (mut one_sided, mut usual_order, mut other_order, mut near_watermark) = (0, 0, 0, 0);
    for seed in 0..6 {
        let inputs = case(seed, &shape(s, seed));
        for lines in &inputs {
            let mut max_ts = 0u64;
            for line in lines {
                let Ok(ev) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                // Book updates in the contract's order (what the parser's usual path reads)
                // and in another.
                if ev["type"] == "book" && ev.get("seq").is_some() {
                    let keys: Vec<&String> = ev.as_object().unwrap().keys().collect();
                    let seq = keys.iter().position(|k| *k == "seq").unwrap();
                    let bids = keys.iter().position(|k| *k == "bids").unwrap();
                    usual_order += (seq < bids) as usize;
                    other_order += (seq > bids) as usize;
                }
                // Events within 20 ms of their input's watermark, either side.
                if let Some(ts) = ev["ts"].as_u64() {
                    let watermark = max_ts.saturating_sub(s.lateness_ms);
                    near_watermark += (max_ts > 0 && ts.abs_diff(watermark) <= 20) as usize;
                    max_ts = max_ts.max(ts);
                }
            }
        }
        let e = tampines_harness::model::expected(&inputs, &config(s));
        totals.duplicates += e.totals.duplicates;
        totals.dead_lettered += e.totals.dead_lettered;
        totals.late += e.totals.late;
        too_late += e.dead.iter().filter(|(r, _)| r == "too_late").count();

        for m in &e.marks {
            removed += m.removed.len();
            for r in &m.changed {
                stale += (r["status"] == "stale") as usize;
                // A book in sequence with a side empty: no best bid, or no best ask.
                one_sided += (r["kind"] == "book"
                    && r["status"] != "stale"
                    && (r["bids"] == serde_json::json!([]) || r["asks"] == serde_json::json!([])))
                    as usize;
                crossed += (r["status"] == "crossed") as usize;
                closed += (r["closed"] == true) as usize;
                empty_tickers += (r["kind"] == "ticker" && r["count"] == 0) as usize;
                // SYM0's resolution-2 groups are multiples of 2 x 0.05 = 0.1 whatever its prices.
                if r["symbol"] == "SYM0" && r["resolution"] == 2 {
                    for level in r["bids"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .chain(r["asks"].as_array().unwrap())
                    {
                        let p: rust_decimal::Decimal = level[0].as_str().unwrap().parse().unwrap();
                        assert!((p % rust_decimal::Decimal::new(1, 1)).is_zero(), "{r}");
                        tick_groups += 1;
                    }
                }
            }
        }
    }
    assert!(
        totals.duplicates > 10 && totals.dead_lettered > 10 && totals.late > 10,
        "{totals:?}"
    );
    assert!(
        stale > 10 && crossed > 0 && closed > 10 && removed > 0,
        "stale {stale} crossed {crossed} closed {closed} removed {removed}"
    );
    assert!(
        one_sided > 10 && usual_order > 3 * other_order && other_order > 10,
        "in-sequence books with a side empty {one_sided}, book updates in the contract's order \
         {usual_order} and in another {other_order}"
    );
    assert!(
        near_watermark > 20,
        "events about the watermark {near_watermark}"
    );
    // Every kind of bad line, over more seeds (a case holds a few dozen bad lines).
    for seed in 0..30 {
        let e = tampines_harness::model::expected(&case(seed, &shape(s, seed)), &config(s));
        reasons.extend(e.dead.iter().map(|(r, _)| r.clone()));
    }
    assert!(reasons.len() >= 14, "dead-letter reasons {reasons:?}");
    assert!(
        too_late > 0 && empty_tickers > 0 && tick_groups > 0,
        "too_late {too_late} empty tickers {empty_tickers} configured-tick groups {tick_groups}"
    );
}

#[test]
fn lines_parsed_ahead_carry_their_own_names_when_two_names_share_a_text() {
    // `a:b` + `c` and `a` + `b:c` hashed to one symbol id (of `exchange:symbol`); they are two
    // symbols now (`Sym::of`). The first is seen first, in a trade too late to apply; the
    // second's book is published under its own names, read either way.
    let line = |exchange: &str, symbol: &str, rest: &str| {
        format!(r#"{{"exchange":"{exchange}","symbol":"{symbol}",{rest}}}"#)
    };
    let book =
        r#""type":"snapshot","ts":1700000100000,"seq":1,"bids":[["10","1"]],"asks":[["11","2"]]"#;
    let inputs = vec![vec![
        line("ex", "X", book),
        line(
            "a:b",
            "c",
            r#""type":"trade","ts":1700000000000,"id":"1","price":"10.5","qty":"1","side":"buy""#,
        ),
        line("a", "b:c", book),
    ]];
    let config = config(&SETTINGS[0]);
    let text = tampines_harness::run::run(&inputs, &config, 1, Reading::Lines);
    let ahead = tampines_harness::run::run(&inputs, &config, 1, Reading::Ahead(2));
    let names: Vec<(String, String)> = text
        .published
        .iter()
        .flat_map(|b| &b.changes)
        .filter_map(|c| c.json.as_deref())
        .map(|j| serde_json::from_str::<serde_json::Value>(j).unwrap())
        .map(|r| (r["exchange"].to_string(), r["symbol"].to_string()))
        .collect();
    assert!(
        names.contains(&(r#""a""#.to_string(), r#""b:c""#.to_string())),
        "{names:?}"
    );
    assert!(!names.iter().any(|(e, _)| e == r#""a:b""#), "{names:?}");
    assert_eq!(text.dead.len(), 1, "the trade is too late");
    assert_eq!(ahead.published, text.published);
    assert_eq!(ahead.dead, text.dead);
}

/// Two trades tied on `(ts, id)` (a repeat read after the first copy left the window, while its
/// candle is still kept) are ordered as they were read: the first is the candle's open, the later
/// its close. The candles kept the first copy as both (a merge kept the current trade on a tie),
/// where the model, and the Python reference, took the later as the close.
#[test]
fn trades_tied_on_time_and_id_are_ordered_as_read() {
    let base = 1_700_000_000_000u64;
    let trade = |price: &str| {
        format!(
            r#"{{"type":"trade","exchange":"ex","symbol":"X","ts":{},"id":"7","price":"{price}","qty":"1","side":"buy"}}"#,
            base + 1_000
        )
    };
    // The snapshot moves the watermark to base + 3950: the repeat applies at base + 4000, when
    // the first copy (window 3 s) has just left the window, and is not `too_late` (4 x 1 s).
    let snapshot = format!(
        r#"{{"type":"snapshot","exchange":"ex","symbol":"X","ts":{},"seq":1,"bids":[["1","1"]],"asks":[["3","1"]]}}"#,
        base + 4_950
    );
    let inputs = vec![vec![trade("1"), snapshot, trade("2")]];
    let config = config(&SETTINGS[0]);
    for workers in [1, 2] {
        let expected = check("tied trades", &inputs, &config, workers, Reading::Lines)
            .unwrap_or_else(|e| panic!("{e}"));
        let candle = (expected.marks.iter().rev())
            .flat_map(|m| &m.changed)
            .find(|r| r["kind"] == "candle" && r["interval"] == "1s")
            .expect("the 1s candle");
        // Written out by hand, independent of the model.
        assert_eq!(
            (
                &candle["open"],
                &candle["close"],
                &candle["high"],
                &candle["count"]
            ),
            (
                &serde_json::json!("1"),
                &serde_json::json!("2"),
                &serde_json::json!("2"),
                &serde_json::json!(2)
            ),
            "{candle}"
        );
    }
}

/// Long spans of market time: about 8 minutes with a 90 s window, and about 80 minutes with a
/// 1 h window at 10 s marks. The ticker's buckets of whole minutes and hours fill and empty as
/// trades leave the window, and 1m candles close and are dropped by retention: the settings
/// above span about 40 s, so a trade never left a minute's bucket there.
#[test]
fn long_spans_equal_the_reference() {
    let mut marks = 0;
    for (seed, granularity_ms, window_ms, step_ms) in
        [(11, 1_000, 90_000, 1_000), (12, 10_000, 3_600_000, 10_000)]
    {
        let s = Setting {
            granularity_ms,
            lateness_ms: 2_000,
            window_ms,
            batch: 64,
        };
        let shape = Shape {
            events: 480,
            symbols: 3,
            inputs: 2,
            step_ms,
            jitter_ms: 2_000,
            lateness_ms: 2_000,
        };
        let inputs = case(seed, &shape);
        let config = config(&s);
        for workers in [1, 2, 4] {
            let label = format!("seed {seed} long span (g {granularity_ms} window {window_ms})");
            let reading = match workers {
                2 => Reading::Ahead(5),
                _ => Reading::Lines,
            };
            marks += marks_checked(&label, &inputs, &config, workers, reading);
        }
    }
    enough_marks(marks);
}

/// A symbol whose first trade arrives already outside the window (late by more than lateness +
/// window, not yet `too_late`: setting 2 has lateness 0, a 2 s window and a 4 s `too_late`
/// span) has a ticker from then on, with `count` 0, as the contract says ("a symbol has a ticker
/// from its first trade on"); the trade is in its candles. It had candles but no ticker.
#[test]
fn a_first_trade_already_outside_the_window_gives_a_ticker_with_count_0() {
    let base = 1_700_000_000_000u64;
    let inputs = vec![vec![
        format!(
            r#"{{"type":"snapshot","exchange":"ex","symbol":"X","ts":{},"seq":1,"bids":[["10","1"]],"asks":[["11","2"]]}}"#,
            base + 5_000
        ),
        // Applies at 5000 (lateness 0), and would leave the window at 2000 + 2000 = 4000.
        format!(
            r#"{{"type":"trade","exchange":"ex","symbol":"Y","ts":{},"id":"1","price":"7","qty":"3","side":"sell"}}"#,
            base + 2_000
        ),
    ]];
    let config = config(&SETTINGS[2]);
    for workers in [1, 2, 4] {
        for reading in [Reading::Lines, Reading::Ahead(1)] {
            let expected = check("outside the window", &inputs, &config, workers, reading)
                .unwrap_or_else(|e| panic!("{e}"));
            let last = expected.marks.last().expect("a mark");
            assert_eq!(last.time, base + 5_000);
            let ticker = last
                .changed
                .iter()
                .find(|r| r["kind"] == "ticker")
                .expect("Y's ticker");
            // Independent of the model (which renders through the same code): written out by
            // hand, every trade-derived field null, and no book for bid and ask.
            assert_eq!(
                ticker,
                &serde_json::json!({
                    "kind": "ticker", "exchange": "ex", "symbol": "Y", "ts": base + 5_000,
                    "open": null, "high": null, "low": null, "last": null,
                    "volume": null, "quote_volume": null, "vwap": null, "count": 0,
                    "change": null, "change_pct": null, "open_ts": null, "last_ts": null,
                    "first_id": null, "last_id": null, "bid": null, "ask": null,
                }),
                "{ticker}"
            );
            let candle = last
                .changed
                .iter()
                .find(|r| r["kind"] == "candle" && r["interval"] == "1s")
                .expect("Y's 1s candle");
            assert_eq!(
                (&candle["close"], &candle["count"]),
                (&serde_json::json!("7"), &serde_json::json!(1)),
                "{candle}"
            );
        }
    }
}
