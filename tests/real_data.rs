//! Every real capture in `shared/data/real` through `tampines replay`.
//!
//! - Binance (spot BTCUSDT and ETHUSDT, USD-M BTCUSDT and ETHUSDT, COIN-M BTCUSD_PERP; a stream's
//!   files in order): after every book update the resolution-1 best bid and ask equal Binance's
//!   own bookTicker (`*.expected_bbo.ndjson.gz`, matched by update id); a book is `stale` exactly
//!   while no snapshot has come; the 1-minute candles and the ticker equal the DuckDB
//!   recomputation.
//! - tardis.dev samples: BitMEX trades with text ids against the same recomputation (its trade
//!   order is the file's, the contract's is the ids' text: they differ only in the last id);
//!   Binance futures snapshots of 5 and of 25 levels, two datasets, agree at depth 5; Deribit's
//!   one-sided snapshot is its sorted asks.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use common::{dec, final_state, marks, scratch, shared, tampines};
use flate2::read::GzDecoder;
use rust_decimal::Decimal;
use serde_json::Value;

/// The lines of an NDJSON file, gunzipped when its name ends in `.gz`.
fn json_lines(path: &Path) -> Vec<Value> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    BufReader::new(reader)
        .lines()
        .map(|l| serde_json::from_str(&l.expect("line")).expect("json"))
        .collect()
}

fn level(v: &Value) -> (Decimal, Decimal) {
    (dec(&v[0]), dec(&v[1]))
}

fn real(dir: &str) -> PathBuf {
    let path = shared().join("data/real").join(dir);
    // Beside the repository, as in the workspace and CI: a clone elsewhere reads no capture.
    assert!(
        path.is_dir(),
        "the real captures are read from {}: a checkout needs ../shared beside it",
        path.display()
    );
    path
}

/// `tampines replay FILES --granularity-ms 1 -w W EXTRA`: its marks, after asserting that every
/// line was read and processed, none rejected or repeated.
fn replay(name: &str, files: &[PathBuf], workers: &str, extra: &[&str]) -> Vec<(u64, Vec<Value>)> {
    let dir = scratch(name);
    let out = dir.join("out.ndjson");
    let mut args = vec!["replay"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    // 1 ms timestamps: every depth update (no two of a stream share an E) is its own mark.
    args.extend(["--granularity-ms", "1", "-w", workers, "--out"]);
    args.push(out.to_str().unwrap());
    args.extend(extra);
    let stderr = tampines(&args);
    let lines: usize = files.iter().map(|f| json_lines(f).len()).sum();
    let summary = format!("read {lines} processed {lines} dead-lettered 0 duplicates 0");
    assert!(stderr.contains(&summary), "{name}: {summary}?\n{stderr}");
    marks(&out)
}

/// One Binance stream of the hftbacktest captures.
struct Capture {
    /// `spot`, `usdm` or `cm`.
    market: &'static str,
    exchange: &'static str,
    symbol: &'static str,
    /// The capture's file stem, `btcusdt`.
    stem: &'static str,
    /// Its files' dates, in reading order.
    days: &'static [&'static str],
    workers: &'static str,
    /// Updates where Binance's bookTicker shows a level its depth feed never announced.
    omissions: &'static [u64],
}

impl Capture {
    fn dir(&self) -> PathBuf {
        real("hftbacktest").join(self.market)
    }

    fn events(&self) -> Vec<PathBuf> {
        self.days
            .iter()
            .map(|day| {
                let plain = self
                    .dir()
                    .join(format!("{}_{day}.events.ndjson", self.stem));
                if plain.exists() {
                    plain
                } else {
                    plain.with_extension("ndjson.gz")
                }
            })
            .collect()
    }

    /// The name of the recomputed candles and ticker: the days joined, `_20240808-20240809`.
    fn reference(&self, suffix: &str) -> PathBuf {
        let days = self.days.join("-");
        self.dir().join(format!("{}_{days}.{suffix}", self.stem))
    }

    fn check(&self) {
        let name = format!("real_{}_{}", self.market, self.stem);
        let events = self.events();
        let marks = replay(&name, &events, self.workers, &[]);
        self.check_books(&marks, &events);
        let state = final_state(&marks);
        let last_mark = marks.last().expect("marks").0;
        self.check_candles(&state, last_mark);
        self.check_ticker(&state);
    }

    fn check_books(&self, marks: &[(u64, Vec<Value>)], events: &[PathBuf]) {
        let name = format!("{} {}", self.exchange, self.symbol);
        let mut bbo_by_seq: HashMap<u64, (Value, Value)> = HashMap::new();
        let mut stale = 0;
        for (_, records) in marks {
            for r in records
                .iter()
                .filter(|r| r["kind"] == "book" && r["resolution"] == 1)
            {
                assert_eq!(r["exchange"], self.exchange);
                assert_eq!(r["symbol"], self.symbol);
                bbo_by_seq.insert(
                    r["seq"].as_u64().expect("seq"),
                    (r["bids"][0].clone(), r["asks"][0].clone()),
                );
                match r["status"].as_str() {
                    Some("stale") => stale += 1,
                    Some("ok") => {}
                    other => panic!("{name}: status {other:?} (these books never cross)"),
                }
            }
        }
        // Stale exactly while no snapshot has come: the updates read before the first one, less
        // any at the snapshot's own ms (that mark shows the snapshot's book).
        let all: Vec<Value> = events.iter().flat_map(|f| json_lines(f)).collect();
        let snapshot = all
            .iter()
            .position(|e| e["type"] == "snapshot")
            .expect("a snapshot");
        let before = all[..snapshot]
            .iter()
            .filter(|e| e["type"] == "book" && e["ts"] != all[snapshot]["ts"])
            .count();
        assert_eq!(stale, before, "{name}: stale books");

        let mut checked = 0;
        let mut omissions = Vec::new();
        for day in self.days {
            let file = format!("{}_{day}.expected_bbo.ndjson.gz", self.stem);
            for e in json_lines(&self.dir().join(file)) {
                let seq = e["seq"].as_u64().expect("seq");
                let (bid, ask) = bbo_by_seq
                    .get(&seq)
                    .unwrap_or_else(|| panic!("{name}: no book published with seq {seq}"));
                let matches = level(bid) == level(&e["bid"]) && level(ask) == level(&e["ask"]);
                if e["note"] == "source_omission" {
                    // Binance showed a level its own depth feed never announced: no replay can
                    // match.
                    assert!(
                        !matches,
                        "{name}: seq {seq} is a documented source omission"
                    );
                    omissions.push(seq);
                } else {
                    assert!(
                        matches,
                        "{name}: seq {seq}: ours {bid} / {ask}, binance {} / {}",
                        e["bid"], e["ask"]
                    );
                }
                checked += 1;
            }
        }
        // Every update from the first snapshot on has its oracle line.
        let updates = all[snapshot..]
            .iter()
            .filter(|e| e["type"] != "trade")
            .count();
        assert_eq!(checked, updates, "{name}: updates checked");
        assert_eq!(omissions, self.omissions, "{name}: source omissions");
    }

    fn check_candles(&self, state: &BTreeMap<String, Value>, last_mark: u64) {
        let csv = std::fs::read_to_string(self.reference("candles_1m.csv")).expect("csv");
        let prefix = format!("candles:{}:{}:1m:", self.exchange, self.symbol);
        let mut candles = 0;
        for row in csv.lines().skip(1) {
            check_candle(state, &prefix, row, last_mark);
            candles += 1;
        }
        assert_eq!(
            candles,
            state.keys().filter(|k| k.starts_with(&prefix)).count()
        );
    }

    fn check_ticker(&self, state: &BTreeMap<String, Value>) {
        let t = reference_ticker(&self.reference("ticker.json"));
        let ours = &state[&format!("ticker:{}:{}", self.exchange, self.symbol)];
        check_ticker(ours, &t);
        // Integer ids order as the file does: the contract's last trade is the reference's.
        assert_eq!(ours["last_id"], t["last_trade_id"]);
    }
}

/// A 1-minute candle of the recomputation's CSV against ours.
fn check_candle(state: &BTreeMap<String, Value>, prefix: &str, row: &str, last_mark: u64) {
    let c: Vec<&str> = row.split(',').collect();
    let key = format!("{prefix}{}", c[0]);
    let ours = state.get(&key).unwrap_or_else(|| panic!("no candle {key}"));
    let d = |s: &str| s.parse::<Decimal>().expect("csv decimal");
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
}

fn reference_ticker(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("ticker json")).expect("json")
}

/// Our ticker against the recomputation's, but for the last id (see the callers).
fn check_ticker(ours: &Value, t: &Value) {
    for f in ["open", "high", "low", "last", "volume", "quote_volume"] {
        assert_eq!(dec(&ours[f]), dec(&t[f]), "ticker {f}");
    }
    assert_eq!(ours["count"], t["count"]);
    assert_eq!(ours["first_id"], t["first_trade_id"]);
    assert_eq!(ours["open_ts"], t["first_trade_ts"]);
    // vwap and change, computed here independently.
    let vwap = (dec(&t["quote_volume"]) / dec(&t["volume"]))
        .round_dp_with_strategy(8, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    assert_eq!(dec(&ours["vwap"]), vwap);
    assert_eq!(dec(&ours["change"]), dec(&t["last"]) - dec(&t["open"]));
}

#[test]
fn spot_btcusdt_matches_binance() {
    Capture {
        market: "spot",
        exchange: "binance",
        symbol: "BTCUSDT",
        stem: "btcusdt",
        days: &["20240808", "20240809"],
        workers: "2",
        omissions: &[50093478174, 50093480542],
    }
    .check();
}

#[test]
fn spot_ethusdt_matches_binance() {
    Capture {
        market: "spot",
        exchange: "binance",
        symbol: "ETHUSDT",
        stem: "ethusdt",
        days: &["20240808", "20240809"],
        workers: "1",
        omissions: &[],
    }
    .check();
}

#[test]
fn usdm_btcusdt_matches_binance() {
    Capture {
        market: "usdm",
        exchange: "binance-futures",
        symbol: "BTCUSDT",
        stem: "btcusdt",
        days: &["20240808"],
        workers: "3",
        omissions: &[],
    }
    .check();
}

#[test]
fn usdm_ethusdt_matches_binance() {
    Capture {
        market: "usdm",
        exchange: "binance-futures",
        symbol: "ETHUSDT",
        stem: "ethusdt",
        days: &["20240808"],
        workers: "2",
        omissions: &[],
    }
    .check();
}

#[test]
fn coin_m_btcusd_perp_matches_binance() {
    Capture {
        market: "cm",
        exchange: "binance-delivery",
        symbol: "BTCUSD_PERP",
        stem: "btcusd_perp",
        days: &["20240808", "20240809"],
        workers: "2",
        omissions: &[],
    }
    .check();
}

#[test]
fn bitmex_trades_with_text_ids_match_the_recomputation() {
    let dir = real("nautilus_trader/tardis");
    let file = dir.join("bitmex_trades_XBTUSD.events.ndjson");
    let marks = replay("real_bitmex", std::slice::from_ref(&file), "2", &[]);
    let state = final_state(&marks);
    let last_mark = marks.last().expect("marks").0;
    for row in std::fs::read_to_string(dir.join("bitmex_trades_XBTUSD.candles_1m.csv"))
        .expect("csv")
        .lines()
        .skip(1)
    {
        check_candle(&state, "candles:bitmex:XBTUSD:1m:", row, last_mark);
    }
    let t = reference_ticker(&dir.join("bitmex_trades_XBTUSD.ticker.json"));
    let ours = &state["ticker:bitmex:XBTUSD"];
    check_ticker(ours, &t);
    // The contract orders trades of one ts by id, as text when ids are not integers; the
    // recomputation keeps the file's order. Nine trades share the last ts here.
    let trades = json_lines(&file);
    let last_ts = trades.iter().map(|e| e["ts"].as_u64().unwrap()).max();
    let last_id = trades
        .iter()
        .filter(|e| e["ts"].as_u64() == last_ts)
        .map(|e| e["id"].as_str().unwrap())
        .max()
        .unwrap();
    assert_eq!(ours["last_id"], last_id);
    assert_eq!(last_id, "fde4ff9b-cfc3-947a-9409-b3de08ac904c");
    assert_ne!(
        ours["last_id"], t["last_trade_id"],
        "the orders differ here"
    );
    assert_eq!(ours["last_ts"].as_u64(), last_ts);
}

/// The best `depth` levels of a side as decimals, in the order given.
fn top(levels: &Value, depth: usize) -> Vec<(Decimal, Decimal)> {
    let levels = levels.as_array().expect("levels");
    levels.iter().take(depth).map(level).collect()
}

/// The book as published at or before `ts`.
fn at(books: &BTreeMap<u64, Value>, ts: u64) -> &Value {
    books.range(..=ts).next_back().expect("a book by then").1
}

#[test]
fn binance_futures_snapshots_of_5_and_25_levels_agree() {
    let dir = real("nautilus_trader/tardis");
    // A book as published at each mark; a snapshot that changes no level publishes nothing.
    let books = |name: &str, file: &str| -> BTreeMap<u64, Value> {
        let marks = replay(name, &[dir.join(file)], "2", &["--depth", "5"]);
        let mut by_ts = BTreeMap::new();
        for (ts, records) in marks {
            for r in records.into_iter().filter(|r| r["resolution"] == 1) {
                by_ts.insert(ts, r);
            }
        }
        by_ts
    };
    let five = books(
        "real_tardis_5",
        "binance-futures_book_snapshot_5_BTCUSDT.events.ndjson",
    );
    let deep = books(
        "real_tardis_25",
        "binance-futures_book_snapshot_25_BTCUSDT.events.ndjson",
    );
    // Each published book is its snapshot's best five (the snapshots are sorted best first).
    for (file, books) in [
        (
            "binance-futures_book_snapshot_5_BTCUSDT.events.ndjson",
            &five,
        ),
        (
            "binance-futures_book_snapshot_25_BTCUSDT.events.ndjson",
            &deep,
        ),
    ] {
        let mut last_by_ts = HashMap::new();
        for e in json_lines(&dir.join(file)) {
            last_by_ts.insert(e["ts"].as_u64().unwrap(), e);
        }
        for (ts, e) in &last_by_ts {
            let b = at(books, *ts);
            assert_eq!(top(&b["bids"], 5), top(&e["bids"], 5), "{file} at {ts}");
            assert_eq!(top(&b["asks"], 5), top(&e["asks"], 5), "{file} at {ts}");
            assert_eq!(b["status"], "ok");
        }
    }
    // Two datasets of one book: where both have a snapshot, its top five agree (the data's
    // README counts 4 such ms).
    let ms = |file: &str| -> BTreeSet<u64> {
        json_lines(&dir.join(file))
            .iter()
            .map(|e| e["ts"].as_u64().unwrap())
            .collect()
    };
    let both: Vec<u64> = ms("binance-futures_book_snapshot_5_BTCUSDT.events.ndjson")
        .intersection(&ms(
            "binance-futures_book_snapshot_25_BTCUSDT.events.ndjson",
        ))
        .copied()
        .collect();
    assert_eq!(both.len(), 4);
    for ts in both {
        for side in ["bids", "asks"] {
            assert_eq!(at(&five, ts)[side], at(&deep, ts)[side], "{side} at {ts}");
        }
    }
}

#[test]
fn deribit_one_sided_snapshot_is_its_asks() {
    let dir = real("nautilus_trader/tardis");
    let file = dir.join("deribit_incremental_book_L2_BTC-PERPETUAL.events.ndjson");
    let marks = replay(
        "real_deribit",
        std::slice::from_ref(&file),
        "1",
        &["--resolutions", "1"],
    );
    let snapshot = &json_lines(&file)[0];
    let mut asks = top(&snapshot["asks"], 20);
    asks.sort();
    assert_eq!(marks.len(), 1);
    let book = &marks[0].1[0];
    assert_eq!(book["kind"], "book");
    assert_eq!(top(&book["asks"], 20), asks);
    assert_eq!(book["bids"], serde_json::json!([]));
    // No bid, so nothing to cross: the book is as it should be.
    assert_eq!(book["status"], "ok");
}
