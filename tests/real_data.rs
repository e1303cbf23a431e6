//! Real Binance spot BTCUSDT (two capture files, in order) through `tampines replay`:
//! after every book update the resolution-1 best bid and ask equal Binance's own bookTicker
//! (`*.expected_bbo.ndjson.gz`, matched by update id), and the 1-minute candles and the ticker
//! equal the independent DuckDB recomputation in `shared/data/real`.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};

use common::{dec, final_state, marks, scratch, shared, tampines};
use flate2::read::GzDecoder;
use serde_json::Value;

fn gz_lines(path: &std::path::Path) -> Vec<Value> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    BufReader::new(GzDecoder::new(f))
        .lines()
        .map(|l| serde_json::from_str(&l.expect("line")).expect("json"))
        .collect()
}

fn level(v: &Value) -> (rust_decimal::Decimal, rust_decimal::Decimal) {
    (dec(&v[0]), dec(&v[1]))
}

#[test]
fn btcusdt_spot_matches_binance_bbo_candles_and_ticker() {
    let spot = shared().join("data/real/hftbacktest/spot");
    // Beside the repository, as in the workspace and CI: a clone elsewhere reads no capture.
    assert!(
        spot.is_dir(),
        "the real captures are read from {}: a checkout needs ../shared beside it",
        spot.display()
    );
    let dir = scratch("real_btcusdt");
    let out = dir.join("out.ndjson");
    // 1 ms timestamps: every depth update (no two share an E) is its own progress mark.
    let stderr = tampines(&[
        "replay",
        spot.join("btcusdt_20240808.events.ndjson.gz")
            .to_str()
            .unwrap(),
        spot.join("btcusdt_20240809.events.ndjson.gz")
            .to_str()
            .unwrap(),
        "--granularity-ms",
        "1",
        "-w",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    // 6,496 book events + 19,904 trades, nothing rejected or repeated.
    assert!(
        stderr.contains("read 26400 processed 26400 dead-lettered 0 duplicates 0"),
        "{stderr}"
    );

    let marks = marks(&out);
    let mut bbo_by_seq: HashMap<u64, (Value, Value)> = HashMap::new();
    for (_, records) in &marks {
        for r in records
            .iter()
            .filter(|r| r["kind"] == "book" && r["resolution"] == 1)
        {
            bbo_by_seq.insert(
                r["seq"].as_u64().expect("seq"),
                (r["bids"][0].clone(), r["asks"][0].clone()),
            );
        }
    }
    let mut checked = 0;
    let mut omissions = Vec::new();
    for file in [
        "btcusdt_20240808.expected_bbo.ndjson.gz",
        "btcusdt_20240809.expected_bbo.ndjson.gz",
    ] {
        for e in gz_lines(&spot.join(file)) {
            let seq = e["seq"].as_u64().expect("seq");
            let (bid, ask) = bbo_by_seq
                .get(&seq)
                .unwrap_or_else(|| panic!("no book published with seq {seq}"));
            let matches = level(bid) == level(&e["bid"]) && level(ask) == level(&e["ask"]);
            if e["note"] == "source_omission" {
                // Binance showed a level its own depth feed never announced: no replay can match.
                assert!(!matches, "seq {seq} is a documented source omission");
                omissions.push(seq);
            } else {
                assert!(
                    matches,
                    "seq {seq}: ours {bid} / {ask}, binance {} / {}",
                    e["bid"], e["ask"]
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 6494);
    assert_eq!(omissions, vec![50093478174, 50093480542]);

    let state = final_state(&marks);
    let last_mark = marks.last().expect("marks").0;
    let csv = std::fs::read_to_string(spot.join("btcusdt_20240808-20240809.candles_1m.csv"))
        .expect("csv");
    let mut candles = 0;
    for row in csv.lines().skip(1) {
        let c: Vec<&str> = row.split(',').collect();
        let key = format!("candles:binance:BTCUSDT:1m:{}", c[0]);
        let ours = state.get(&key).unwrap_or_else(|| panic!("no candle {key}"));
        let d = |s: &str| s.parse::<rust_decimal::Decimal>().expect("csv decimal");
        assert_eq!(ours["close_time"].as_u64().unwrap().to_string(), c[1]);
        for (field, col) in [
            ("open", 3),
            ("high", 4),
            ("low", 5),
            ("close", 6),
            ("volume", 7),
            ("quote_volume", 8),
        ] {
            assert_eq!(dec(&ours[field]), d(c[col]), "{key} {field}");
        }
        assert_eq!(
            ours["count"].as_u64().unwrap().to_string(),
            c[9],
            "{key} count"
        );
        let open_time: u64 = c[0].parse().unwrap();
        assert_eq!(
            ours["closed"],
            last_mark >= open_time + 60_000,
            "{key} closed"
        );
        candles += 1;
    }
    assert_eq!(candles, state.keys().filter(|k| k.contains(":1m:")).count());

    let t: Value = serde_json::from_str(
        &std::fs::read_to_string(spot.join("btcusdt_20240808-20240809.ticker.json")).unwrap(),
    )
    .unwrap();
    let ours = &state["ticker:binance:BTCUSDT"];
    for f in ["open", "high", "low", "last", "volume", "quote_volume"] {
        assert_eq!(dec(&ours[f]), dec(&t[f]), "ticker {f}");
    }
    assert_eq!(ours["count"], t["count"]);
    assert_eq!(ours["first_id"], t["first_trade_id"]);
    assert_eq!(ours["last_id"], t["last_trade_id"]);
    assert_eq!(ours["open_ts"], t["first_trade_ts"]);
    // vwap and change, computed here independently.
    let vwap = (dec(&t["quote_volume"]) / dec(&t["volume"]))
        .round_dp_with_strategy(8, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    assert_eq!(dec(&ours["vwap"]), vwap);
    assert_eq!(dec(&ours["change"]), dec(&t["last"]) - dec(&t["open"]));
}
