//! `gen`: a seeded synthetic market, in the event format of `shared/tools/gen_events.py`.
//!
//! Per symbol: one snapshot, then book updates (absolute sizes, `0` deletes, the mid drifting now
//! and then) and trades at the touch, over a simulated span, with per-symbol order preserved and
//! bounded cross-symbol disorder in `ts`. The same seed gives the same file.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::json;
use tampines_harness::generate::Rng;

/// Parameters of a synthetic market.
#[derive(Clone, Debug)]
pub struct Market {
    /// Symbols.
    pub symbols: usize,
    /// Events after the snapshots.
    pub events: usize,
    /// Span in hours.
    pub hours: f64,
    /// Seed.
    pub seed: u64,
    /// Share of trades.
    pub trade_ratio: f64,
    /// Snapshot depth.
    pub depth: usize,
    /// Cross-symbol jitter.
    pub disorder_ms: u64,
    /// Exchange id.
    pub exchange: String,
    /// First ts.
    pub start_ms: u64,
}

struct SymState {
    name: String,
    places: u32,
    mid: i64,
    bids: BTreeMap<i64, String>,
    asks: BTreeMap<i64, String>,
    seq: u64,
    tid: u64,
    last_ts: u64,
}

fn px(places: u32, ticks: i64) -> String {
    let d = rust_decimal::Decimal::new(ticks, places);
    format!("{d:.prec$}", prec = places as usize)
}

fn qty(rng: &mut Rng, max: i64) -> String {
    px(3, rng.range(1, max))
}

/// A market in progress: symbols with their books, sequence numbers and trade ids. [`generate`]
/// writes a whole span from one; `demo` asks it for events at the wall clock.
pub struct Generator {
    market: Market,
    rng: Rng,
    syms: Vec<SymState>,
}

impl Generator {
    /// The market's symbols, with random tick decimals and mid prices; no event yet.
    pub fn new(m: &Market) -> Generator {
        let mut rng = Rng::new(m.seed);
        let syms: Vec<SymState> = (0..m.symbols.max(1))
            .map(|i| {
                let places = [1, 2, 2, 3, 4][rng.range(0, 4) as usize];
                SymState {
                    name: format!("S{i:03}USDT"),
                    places,
                    mid: rng.range(2000, 500_000),
                    bids: BTreeMap::new(),
                    asks: BTreeMap::new(),
                    seq: 0,
                    tid: 0,
                    last_ts: m.start_ms,
                }
            })
            .collect();
        Generator {
            market: m.clone(),
            rng,
            syms,
        }
    }

    /// One snapshot per symbol at `ts` (`depth` levels a side around the mid).
    pub fn snapshots(&mut self, ts: u64) -> Vec<String> {
        let depth = self.market.depth as i64;
        let exchange = &self.market.exchange;
        let rng = &mut self.rng;
        let mut lines = Vec::new();
        for s in self.syms.iter_mut() {
            for k in 1..=depth {
                s.bids.insert(s.mid - k, qty(rng, 50_000));
                s.asks.insert(s.mid + k, qty(rng, 50_000));
            }
            s.seq += 1;
            s.last_ts = s.last_ts.max(ts);
            let bids: Vec<_> = s
                .bids
                .iter()
                .rev()
                .map(|(t, q)| json!([px(s.places, *t), q]))
                .collect();
            let asks: Vec<_> = s
                .asks
                .iter()
                .map(|(t, q)| json!([px(s.places, *t), q]))
                .collect();
            let ev = json!({"type":"snapshot","exchange":exchange,"symbol":s.name,"ts":ts,"seq":s.seq,"bids":bids,"asks":asks});
            lines.push(ev.to_string());
        }
        lines
    }

    /// One event of a random symbol near `base` (jittered by up to `disorder_ms`, never before
    /// the symbol's previous event): a trade at the touch or a book update.
    pub fn event(&mut self, base: u64) -> String {
        let m = &self.market;
        let rng = &mut self.rng;
        let depth = m.depth as i64;
        let i = rng.range(0, self.syms.len() as i64 - 1) as usize;
        let jitter = rng.range(-(m.disorder_ms as i64), m.disorder_ms as i64);
        let s = &mut self.syms[i];
        let ts = s
            .last_ts
            .max(base.saturating_add_signed(jitter))
            .max(m.start_ms);
        s.last_ts = ts;
        let line = if rng.unit() < m.trade_ratio {
            let buy = rng.range(0, 1) == 0;
            let t = if buy {
                s.asks.keys().next().copied().unwrap_or(s.mid)
            } else {
                s.bids.keys().next_back().copied().unwrap_or(s.mid)
            };
            s.tid += 1;
            json!({"type":"trade","exchange":m.exchange,"symbol":s.name,"ts":ts,"id":s.tid.to_string(),
                   "price":px(s.places, t),"qty":qty(rng, 5_000),"side": if buy {"buy"} else {"sell"}})
        } else {
            let (mut bids, mut asks) = (Vec::new(), Vec::new());
            if rng.unit() < 0.05 {
                s.mid += if rng.range(0, 1) == 0 { -1 } else { 1 };
                let mid = s.mid;
                for t in s.bids.range(mid..).map(|(t, _)| *t).collect::<Vec<_>>() {
                    s.bids.remove(&t);
                    bids.push(json!([px(s.places, t), "0"]));
                }
                for t in s.asks.range(..=mid).map(|(t, _)| *t).collect::<Vec<_>>() {
                    s.asks.remove(&t);
                    asks.push(json!([px(s.places, t), "0"]));
                }
            }
            for _ in 0..rng.range(1, 5) {
                let bid = rng.unit() < 0.5;
                let off = (rng.unit() * rng.unit() * depth as f64) as i64 + 1;
                let t = if bid { s.mid - off } else { s.mid + off };
                let book = if bid { &mut s.bids } else { &mut s.asks };
                let q = if book.contains_key(&t) && rng.unit() < 0.3 {
                    book.remove(&t);
                    "0".to_string()
                } else {
                    let q = qty(rng, 50_000);
                    book.insert(t, q.clone());
                    q
                };
                let level = json!([px(s.places, t), q]);
                if bid {
                    bids.push(level)
                } else {
                    asks.push(level)
                }
            }
            s.seq += 1;
            json!({"type":"book","exchange":m.exchange,"symbol":s.name,"ts":ts,"seq":s.seq,"bids":bids,"asks":asks})
        };
        line.to_string()
    }
}

/// Writes the market's events, one JSON line each.
pub fn generate(m: &Market, out: &mut dyn Write) -> std::io::Result<()> {
    let mut generator = Generator::new(m);
    for line in generator.snapshots(m.start_ms) {
        writeln!(out, "{line}")?;
    }
    let span = (m.hours * 3_600_000.0) as u64;
    let step = span as f64 / m.events.max(1) as f64;
    for n in 0..m.events {
        let base = m.start_ms + (n as f64 * step) as u64;
        writeln!(out, "{}", generator.event(base))?;
    }
    out.flush()
}
