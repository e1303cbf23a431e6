//! Seeded adversarial inputs: several symbols and inputs, snapshots (and symbols without one,
//! repeated ones, ones with `"0"` levels, ones with a side empty), zero-size deletes, crossed
//! books, sequence gaps and duplicates (`prev_seq` overlapping the last `seq` or past it, book
//! events without `seq`), book updates mostly in the contract's field order (the parser's usual
//! path) and now and then with `seq` after the levels, prices whose precision grows (the inferred
//! tick changes), prices of about 5 x 10^10 or with 12 to 14 places and sizes with 9 places (beyond
//! the decimals' common fast paths), disorder within lateness, events within a few ms of their
//! input's watermark, late events beyond it, trades repeated with the same id (as they were, or at
//! another time, price and size), text trade ids, very old trades (`too_late`), names whose
//! `exchange:symbol` texts are equal (`ex:x` + `SYM1`, `ex` + `x:SYM1`), and bad lines of every
//! kind.

use serde_json::json;

/// SplitMix64: small, fast, seeded.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x9e37_79b9_7f4a_7c15)
    }
    /// 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// True with probability `p` percent.
    pub fn pct(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// Shape of a generated case.
#[derive(Clone, Debug)]
pub struct Shape {
    /// Events (lines) in all.
    pub events: usize,
    /// Symbols.
    pub symbols: usize,
    /// Inputs; each symbol lives in one input.
    pub inputs: usize,
    /// Mean ms between events.
    pub step_ms: u64,
    /// Jitter within lateness, ms.
    pub jitter_ms: u64,
    /// Lateness the case is meant for: late events go further back than this.
    pub lateness_ms: u64,
}

fn price(ticks: i64, places: u32, pad: bool) -> String {
    let d = rust_decimal::Decimal::new(ticks, places);
    if pad {
        format!("{d:.prec$}", prec = places as usize + 2)
    } else {
        d.normalize().to_string()
    }
}

/// What a symbol's prices and sizes look like.
#[derive(Clone, Copy, PartialEq)]
enum Scale {
    /// Prices about 1000 with 1 to 4 places, sizes `whole.frac` (up to 3 places).
    Usual,
    /// Prices about 5 x 10^10, and now and then sizes about 10^8 to 10^9.
    Large,
    /// Prices about 0.0000123 with 12 to 14 places, and now and then sizes with 9 places.
    Fine,
}

/// A size above zero, below `whole + 1` unless `scale` is `Large`. Products and their sums stay
/// within 28 digits (a larger sum rounds: README, Known limitations).
fn size(rng: &mut Rng, scale: Scale, whole: u64) -> String {
    match (rng.below(10), scale) {
        (0..=2, Scale::Fine) => format!("{}.{:09}", rng.below(whole), 1 + rng.below(999_999_999)),
        (0..=1, Scale::Large) => format!("{}.5", 100_000_000 + rng.below(900_000_000)),
        _ => format!("{}.{}", rng.below(whole), 1 + rng.below(999)),
    }
}

/// Generates the inputs (each a list of lines) of one case.
pub fn case(seed: u64, shape: &Shape) -> Vec<Vec<String>> {
    let mut rng = Rng::new(seed);
    let mut inputs: Vec<Vec<String>> = vec![Vec::new(); shape.inputs.max(1)];
    struct S {
        exchange: &'static str,
        symbol: String,
        input: usize,
        places: u32,
        /// Prices get finer up to this many places.
        max_places: u32,
        scale: Scale,
        mid: i64,
        seq: u64,
        tid: u64,
        ts: u64,
        sent: Vec<String>,
        trades: Vec<String>,
        /// The last new trade's ts: trades often come several to a millisecond.
        trade_ts: Option<u64>,
    }
    let base = 1_700_000_000_000u64;
    let mut syms: Vec<S> = (0..shape.symbols.max(1))
        .map(|i| {
            // Symbol 2's prices are about 5 x 10^10 (even seeds) or 0.0000123 with 12 places
            // (odd seeds): beyond the decimals' common fast paths.
            let (mid, places, scale) = match i {
                2 if seed.is_multiple_of(2) => (5_000_000_000_037, 2, Scale::Large),
                2 => (12_345_678, 12, Scale::Fine),
                _ => (1000 + 37 * i as i64, 1 + (i as u32 % 2), Scale::Usual),
            };
            S {
                // `ex:x` + `SYM1` and `ex` + `x:SYM1` (with 4 symbols) share `ex:x:SYM1`: they
                // are two symbols all the same.
                exchange: match i {
                    1 => "ex:x",
                    _ if i % 3 == 2 => "other",
                    _ => "ex",
                },
                symbol: if i == 3 {
                    "x:SYM1".to_string()
                } else {
                    format!("SYM{i}")
                },
                input: i % shape.inputs.max(1),
                places,
                max_places: places.max(2) + 2,
                scale,
                mid,
                seq: 100,
                tid: 0,
                ts: base,
                sent: Vec::new(),
                trades: Vec::new(),
                trade_ts: None,
            }
        })
        .collect();
    for (i, s) in syms.iter_mut().enumerate() {
        if i == 1 {
            continue; // this symbol never gets a snapshot: stale
        }
        let bids: Vec<_> = (1..=4)
            .map(|k| json!([price(s.mid - k, s.places, k == 2), "1.5"]))
            .collect();
        let asks: Vec<_> = (1..=4)
            .map(|k| json!([price(s.mid + k, s.places, false), "2"]))
            .collect();
        let line = json!({"type":"snapshot","exchange":s.exchange,"symbol":s.symbol,"ts":s.ts,"seq":s.seq,"bids":bids,"asks":asks}).to_string();
        inputs[s.input].push(line);
    }
    let mut clock = base;
    // Each input's highest ts so far.
    let mut highest = vec![base; inputs.len()];
    for _ in 0..shape.events {
        clock += rng.below(2 * shape.step_ms + 1);
        let i = rng.below(syms.len() as u64) as usize;
        let s = &mut syms[i];
        let mut ts = clock
            .saturating_sub(rng.below(shape.jitter_ms + 1))
            .max(base + 1);
        if rng.pct(3) {
            ts = ts
                .saturating_sub(shape.lateness_ms * 3 + rng.below(500))
                .max(base + 1); // late
        } else if rng.pct(3) {
            // About the watermark (the input's highest ts less lateness), a few ms either
            // side: where an event is just in time or just late.
            ts = highest[s.input]
                .saturating_sub(shape.lateness_ms)
                .saturating_add_signed(rng.range(-20, 20))
                .max(base + 1);
        } else if rng.pct(1) {
            // Very old: older than the finest candle retention of the tests (4 x 1 s) for trades.
            ts = ts.saturating_sub(6_000).max(base + 1);
        } else if rng.pct(1) {
            // Older than lateness + window where the window is short (1.5-2 s), younger than the
            // candle retention: a trade counted (candles) that never enters the window.
            ts = ts.saturating_sub(2_100 + rng.below(1_800)).max(base + 1);
        }
        s.ts = s.ts.max(ts);
        let roll = rng.below(100);
        let line = match roll {
            0..=2 => bad_line(&mut rng, s.exchange, &s.symbol, ts),
            3..=5 if !s.sent.is_empty() => s.sent[rng.below(s.sent.len() as u64) as usize].clone(), // duplicate book event
            6..=8 if !s.trades.is_empty() => {
                let line = s.trades[rng.below(s.trades.len() as u64) as usize].clone();
                if rng.pct(30) {
                    // The same id at another time, price and size: a repeat by its id alone
                    // (counted once while the first copy is inside the window, else counted).
                    // Half keep the time: once the first copy has left the window, a candle
                    // holds two trades tied on `(ts, id)`, ordered by when they were read.
                    let mut ev: serde_json::Value = serde_json::from_str(&line).unwrap();
                    if rng.pct(50) {
                        ev["ts"] = json!(ts);
                    }
                    ev["price"] = json!(price(s.mid, s.places, false));
                    ev["qty"] = json!(size(&mut rng, s.scale, 4));
                    ev.to_string()
                } else {
                    line // repeated as it was
                }
            }
            9..=10 => {
                // a new snapshot, now and then with a "0" level (no level), or with one side
                // empty: a book in sequence (`ok`, or `crossed` once updates cross it) with no
                // best bid or no best ask
                s.seq += 1 + rng.below(3);
                let zero = if rng.pct(30) {
                    rng.below(3) as i64 + 1
                } else {
                    0
                };
                let qty = |k: i64, q: &str| if k == zero { "0" } else { q }.to_string();
                let (n_bids, n_asks) = match rng.below(5) {
                    0 => (0, 3),
                    1 => (3, 0),
                    _ => (3, 3),
                };
                let bids: Vec<_> = (1..=n_bids)
                    .map(|k| json!([price(s.mid - k, s.places, false), qty(k, "3")]))
                    .collect();
                let asks: Vec<_> = (1..=n_asks)
                    .map(|k| json!([price(s.mid + k, s.places, false), qty(k, "4")]))
                    .collect();
                let line = json!({"type":"snapshot","exchange":s.exchange,"symbol":s.symbol,"ts":ts,"seq":s.seq,"bids":bids,"asks":asks}).to_string();
                s.sent.push(line.clone()); // repeated later, it takes the book back
                line
            }
            11..=44 => {
                s.tid += 1;
                let id = if s.exchange == "other" && rng.pct(30) {
                    format!("x{}", s.tid)
                } else if rng.pct(if i == 0 { 50 } else { 10 }) {
                    // An integer id above 2^64 - 1, of 21 to 26 digits: ordered as an integer,
                    // which is not their order as text (6 x 10^20 < 5 x 10^22).
                    format!("{}{}", s.tid, "0".repeat(20 + (s.tid % 3) as usize))
                } else {
                    s.tid.to_string()
                };
                // A fill at the millisecond of the last one: ties are ordered by id.
                let ts = match s.trade_ts {
                    Some(last) if rng.pct(25) => last,
                    _ => ts,
                };
                s.trade_ts = Some(ts);
                let p = price(s.mid + rng.below(5) as i64 - 2, s.places, rng.pct(20));
                let q = size(&mut rng, s.scale, 4);
                let side = if rng.pct(50) { "buy" } else { "sell" };
                let line = json!({"type":"trade","exchange":s.exchange,"symbol":s.symbol,"ts":ts,"id":id,"price":p,"qty":q,"side":side}).to_string();
                s.trades.push(line.clone());
                line
            }
            _ => {
                if rng.pct(10) {
                    s.mid += rng.below(5) as i64 - 2;
                }
                if rng.pct(2) && s.places < s.max_places {
                    s.places += 1; // finer prices from now on: the inferred tick changes
                    s.mid *= 10;
                }
                let side = |rng: &mut Rng, sign: i64| -> Vec<serde_json::Value> {
                    (0..rng.below(3))
                        .map(|_| {
                            let off = 1 + rng.below(6) as i64;
                            let off = if rng.pct(3) { -off } else { off }; // crosses the book now and then
                            let q = if rng.pct(30) {
                                "0".to_string()
                            } else {
                                size(rng, s.scale, 5)
                            };
                            json!([price(s.mid + sign * off, s.places, rng.pct(15)), q])
                        })
                        .collect()
                };
                let bids = side(&mut rng, -1);
                let asks = side(&mut rng, 1);
                // Mostly in the contract's order (`seq` and `prev_seq` before the levels), as
                // feeds write them and the parser's usual path reads them; now and then after
                // them, which the general path reads.
                let in_order = rng.pct(85);
                let mut ev = json!({"type":"book","exchange":s.exchange,"symbol":s.symbol,"ts":ts});
                let step = if rng.pct(4) { 2 + rng.below(3) } else { 1 }; // a gap now and then
                if rng.pct(25) {
                    // `prev_seq` mostly the last `seq`; now and then before it (an update
                    // overlapping what it follows: in sequence) or past it (a gap).
                    let prev = match rng.below(10) {
                        0 => s.seq.saturating_sub(1 + rng.below(3)),
                        1 => s.seq + 1 + rng.below(2),
                        _ => s.seq,
                    };
                    ev["prev_seq"] = json!(prev);
                    s.seq += step + rng.below(3);
                } else {
                    s.seq += step;
                }
                // Now and then no `seq` at all: a gap, once synced, unless `prev_seq` says
                // otherwise.
                if !rng.pct(3) {
                    ev["seq"] = json!(s.seq);
                }
                if in_order {
                    // `seq` first: the contract's order (`prev_seq` was set first above).
                    if let (Some(seq), Some(prev)) =
                        (ev.get("seq").cloned(), ev.get("prev_seq").cloned())
                    {
                        let map = ev.as_object_mut().unwrap();
                        map.shift_remove("prev_seq");
                        map.shift_remove("seq");
                        map.insert("seq".into(), seq);
                        map.insert("prev_seq".into(), prev);
                    }
                }
                ev["bids"] = json!(bids);
                ev["asks"] = json!(asks);
                if !in_order {
                    let map = ev.as_object_mut().unwrap();
                    for key in ["prev_seq", "seq"] {
                        if let Some(v) = map.shift_remove(key) {
                            map.insert(key.into(), v);
                        }
                    }
                }
                let line = ev.to_string();
                s.sent.push(line.clone());
                line
            }
        };
        let input = syms[i].input;
        if let Some(ts) = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|ev| ev["ts"].as_u64())
        {
            highest[input] = highest[input].max(ts);
        }
        inputs[input].push(line);
    }
    inputs
}

/// The same lines with every input split in two, as a Kafka deployment reads them: its trades
/// (in order) in one input, everything else (books, snapshots, bad lines) in the other. A
/// symbol's ticker then joins best prices from one input with trades from another, each with
/// its own watermark.
pub fn by_kind(inputs: Vec<Vec<String>>) -> Vec<Vec<String>> {
    inputs
        .into_iter()
        .flat_map(|lines| {
            let (trades, books) = lines
                .into_iter()
                .partition(|l: &String| l.contains(r#""type":"trade""#));
            [books, trades]
        })
        .collect()
}

fn bad_line(rng: &mut Rng, exchange: &str, symbol: &str, ts: u64) -> String {
    match rng.below(14) {
        0 => "{not json".to_string(),
        1 => json!({"type":"quote","exchange":exchange,"symbol":symbol,"ts":ts}).to_string(),
        2 => json!({"type":"trade","exchange":exchange,"symbol":symbol,"ts":ts,"id":"1","price":"1","qty":"0","side":"buy"}).to_string(),
        3 => json!({"type":"book","exchange":exchange,"symbol":symbol,"ts":ts,"bids":[["1e2","1"]],"asks":[]}).to_string(),
        4 => json!({"type":"book","exchange":exchange,"symbol":symbol,"ts":-(ts as i64),"bids":[],"asks":[]}).to_string(),
        5 => json!({"type":"trade","exchange":exchange,"symbol":symbol,"ts":ts,"price":"1","qty":"1","side":"buy"}).to_string(),
        6 => json!({"type":"book","exchange":exchange,"symbol":symbol,"ts":ts,"bids":[["-1","1"]],"asks":[]}).to_string(),
        7 => json!({"type":"trade","exchange":exchange,"symbol":symbol,"ts":ts.to_string(),"id":"1","price":"1","qty":"1","side":"buy"}).to_string(),
        8 => json!({"type":"trade","exchange":exchange,"symbol":symbol,"ts":ts,"id":"1","price":"0","qty":"1","side":"buy"}).to_string(),
        9 => json!({"type":"book","exchange":exchange,"symbol":symbol,"ts":ts,"seq":1,"bids":[],"asks":[["1","-2"]]}).to_string(),
        10 => json!({"type":"snapshot","exchange":exchange,"symbol":symbol,"ts":0,"seq":1,"bids":[],"asks":[]}).to_string(),
        11 => json!({"type":"trade","exchange":exchange,"symbol":symbol,"ts":ts,"id":"1","price":"1","qty":"1","side":"hold"}).to_string(),
        12 => format!("[{ts},\"{symbol}\"]"), // JSON, not an object
        _ => " \u{a0}".to_string(), // no-break space: not JSON's whitespace, so not blank
    }
}
