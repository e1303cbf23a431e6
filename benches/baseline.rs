//! A plain single-threaded implementation to compare the dataflow against, run with
//! `cargo bench --bench baseline -- FILE [--granularity-ms G]`.
//!
//! BTreeMap books, per-minute trade buckets for the 24 h ticker, a BTreeMap of candles per series;
//! events applied in read order, each timestamp's changed books, tickers and candles rendered with
//! the same record writer as the dataflow, to a sink that discards them. No sequence checks, no
//! dead-letter output, no late-event bookkeeping, no parallelism: the cheapest way to produce the
//! same kind of output, for an honest ratio (with the same allocator as `tampines`).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write as _};
use std::time::Instant;

use rust_decimal::Decimal;
use tampines_dataflows::agg::Candle;
use tampines_dataflows::agg::{Agg, TradeRec};
use tampines_dataflows::config::Config;
use tampines_dataflows::event::{parse, Body};
use tampines_dataflows::results::{Record, Status, TickerStats};
use tampines_dataflows::types::{Bbo, Levels};
use tampines_dataflows::types::{Price, Qty, Side, Sym, SymbolName};

/// The allocator the `tampines` binary uses, so the ratio compares the implementations.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Default)]
struct Book {
    bids: BTreeMap<Price, Qty>,
    asks: BTreeMap<Price, Qty>,
    seq: Option<u64>,
    digits: u32,
}

/// The best `depth` groups of a side: prices are sorted, so a group is a run of neighbours.
fn top<'a>(
    levels: impl Iterator<Item = (&'a Price, &'a Qty)>,
    step: Price,
    side: Side,
    depth: usize,
) -> Levels {
    let mut out: Levels = Vec::new();
    for (p, q) in levels {
        let g = p.group(step, side);
        if let Some((last, sum)) = out.last_mut().filter(|(last, _)| *last == g) {
            debug_assert_eq!(*last, g);
            *sum = Qty::from_decimal(sum.value() + q.value());
        } else if out.len() == depth {
            break;
        } else {
            out.push((g, *q));
        }
    }
    out
}

struct Minute {
    minute: u64,
    trades: Vec<TradeRec>,
    agg: Option<Agg>,
}

fn fold(trades: &[TradeRec]) -> Option<Agg> {
    let mut it = trades.iter();
    let mut acc = Agg::of(it.next()?);
    for t in it {
        acc.merge(&Agg::of(t));
    }
    Some(acc)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(path) = args.first() else {
        println!(
            "baseline: run it with `cargo bench --bench baseline -- FILE [--granularity-ms G]`"
        );
        return;
    };
    let g: u64 = args
        .iter()
        .position(|a| a == "--granularity-ms")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let config = Config {
        granularity_ms: g,
        ..Config::default()
    };
    let start = Instant::now();
    let reader = BufReader::with_capacity(1 << 20, std::fs::File::open(path).expect("open input"));
    let mut sink = std::io::sink();
    let mut text = String::new();
    let mut names: HashMap<Sym, SymbolName> = HashMap::new();
    let mut books: HashMap<Sym, Book> = HashMap::new();
    let mut minutes: HashMap<Sym, VecDeque<Minute>> = HashMap::new();
    let mut candles: HashMap<(Sym, usize), BTreeMap<u64, Candle>> = HashMap::new();
    let mut changed_books: BTreeSet<Sym> = BTreeSet::new();
    let mut changed_candles: BTreeSet<(Sym, usize, u64)> = BTreeSet::new();
    let mut current = 0u64;
    let mut events = 0u64;
    let mut records = 0u64;
    let mut flush = |time: u64,
                     text: &mut String,
                     books: &HashMap<Sym, Book>,
                     minutes: &mut HashMap<Sym, VecDeque<Minute>>,
                     candles: &mut HashMap<(Sym, usize), BTreeMap<u64, Candle>>,
                     changed_books: &mut BTreeSet<Sym>,
                     changed_candles: &mut BTreeSet<(Sym, usize, u64)>,
                     names: &HashMap<Sym, SymbolName>| {
        text.clear();
        let bbo = |b: &Book| Bbo {
            bid: b.bids.keys().next_back().copied(),
            ask: b.asks.keys().next().copied(),
        };
        for sym in changed_books.iter() {
            let b = &books[sym];
            let tick = Decimal::new(1, b.digits);
            for &r in &config.resolutions {
                let step = Price::from_decimal(tick * Decimal::from(r));
                let rec = Record::Book {
                    name: names[sym].clone(),
                    resolution: r,
                    seq: b.seq,
                    status: Status::Ok,
                    bids: top(b.bids.iter().rev(), step, Side::Bid, config.depth),
                    asks: top(b.asks.iter(), step, Side::Ask, config.depth),
                };
                rec.write_json(time, text);
                text.push('\n');
                records += 1;
            }
        }
        for (sym, window) in minutes.iter_mut() {
            // Drop what left the window; recompute the partly expired oldest minute.
            let mut touched = changed_books.contains(sym);
            while let Some(front) = window.front_mut() {
                let before = front.trades.len();
                front.trades.retain(|t| t.ts + config.window_ms > time);
                if front.trades.len() != before {
                    touched = true;
                    front.agg = fold(&front.trades);
                }
                if front.trades.is_empty() {
                    window.pop_front();
                } else {
                    break;
                }
            }
            if window.back().is_some_and(|m| m.agg.is_none()) {
                touched = true;
            }
            if !touched {
                continue;
            }
            for m in window.iter_mut().filter(|m| m.agg.is_none()) {
                m.agg = fold(&m.trades);
            }
            let mut total: Option<Agg> = None;
            for a in window.iter().filter_map(|m| m.agg.as_ref()) {
                match total.as_mut() {
                    None => total = Some(a.clone()),
                    Some(t) => t.merge(a),
                }
            }
            let rec = Record::Ticker {
                name: names[sym].clone(),
                stats: total.map(TickerStats::new),
                bbo: books.get(sym).map(bbo).unwrap_or_default(),
            };
            rec.write_json(time, text);
            text.push('\n');
            records += 1;
        }
        for &(sym, ivl, open) in changed_candles.iter() {
            if let Some(c) = candles.get(&(sym, ivl)).and_then(|s| s.get(&open)) {
                let interval = &config.intervals[ivl];
                let rec = Record::Candle {
                    name: names[&sym].clone(),
                    interval: interval.name.clone(),
                    interval_ms: interval.ms,
                    open_time: open,
                    candle: c.clone(),
                };
                rec.write_json(time, text);
                text.push('\n');
                records += 1;
            }
        }
        text.push_str(&format!("{{\"kind\":\"progress\",\"ts\":{time}}}\n"));
        sink.write_all(text.as_bytes()).expect("sink");
        changed_books.clear();
        changed_candles.clear();
    };
    for line in reader.lines() {
        let line = line.expect("read");
        let Ok(parsed) = parse(&line) else { continue };
        events += 1;
        let name = parsed.name();
        let ev = parsed.event;
        let time = config.timestamp_of(ev.ts).max(current);
        if time > current && current > 0 {
            flush(
                current,
                &mut text,
                &books,
                &mut minutes,
                &mut candles,
                &mut changed_books,
                &mut changed_candles,
                &names,
            );
        }
        current = time;
        names.entry(ev.sym).or_insert(name);
        match &ev.body {
            Body::Snapshot { bids, asks, seq }
            | Body::Book {
                bids, asks, seq, ..
            } => {
                let b = books.entry(ev.sym).or_default();
                if matches!(ev.body, Body::Snapshot { .. }) {
                    b.bids.clear();
                    b.asks.clear();
                }
                for (side, levels) in [(&mut b.bids, bids), (&mut b.asks, asks)] {
                    for &(p, q) in levels {
                        b.digits = b.digits.max(p.fraction_digits());
                        if q.is_zero_qty() {
                            side.remove(&p);
                        } else {
                            side.insert(p, q);
                        }
                    }
                }
                if seq.is_some() {
                    b.seq = *seq;
                }
                changed_books.insert(ev.sym);
            }
            Body::Trade(t) => {
                let rec = TradeRec::new(ev.ts, t);
                let window = minutes.entry(ev.sym).or_default();
                let minute = ev.ts / 60_000;
                match window.back_mut() {
                    Some(m) if m.minute == minute => {
                        m.trades.push(rec.clone());
                        m.agg = None;
                    }
                    _ => window.push_back(Minute {
                        minute,
                        trades: vec![rec.clone()],
                        agg: None,
                    }),
                }
                for (ivl, interval) in config.intervals.iter().enumerate() {
                    let open = ev.ts / interval.ms * interval.ms;
                    let series = candles.entry((ev.sym, ivl)).or_default();
                    series
                        .entry(open)
                        .and_modify(|c| c.agg.merge(&Agg::of(&rec)))
                        .or_insert_with(|| Candle {
                            agg: Agg::of(&rec),
                            closed: false,
                        });
                    while series.len() > config.candle_retention {
                        series.pop_first();
                    }
                    changed_candles.insert((ev.sym, ivl, open));
                }
            }
        }
    }
    if current > 0 {
        flush(
            current,
            &mut text,
            &books,
            &mut minutes,
            &mut candles,
            &mut changed_books,
            &mut changed_candles,
            &names,
        );
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "baseline: {events} events in {secs:.2} s = {:.0} events/s, {records} records",
        events as f64 / secs
    );
}
