//! The reference model: CONTRACT sections 1-3 computed from scratch, deliberately simply.
//!
//! Nothing here is incremental. For every timestamp at which a result can change (an event's
//! timestamp, a trade leaving the window, a candle's close, the last mark) the whole state is
//! recomputed from all events applied at or before it: books replayed from their first event,
//! the window filtered from all trades, candles regrouped from all trades. The expected output is
//! then, per such timestamp, the records whose value differs from the previous one.
//!
//! Shared with the system under test: line parsing (`event::parse`, unit-tested on its own) and
//! the JSON rendering of a record (`Record::to_json`). Everything that is incremental, ordered or
//! windowed is recomputed here independently.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rust_decimal::Decimal;
use serde_json::Value;
use tampines_dataflows::agg::Candle;
use tampines_dataflows::agg::{self, Agg};
use tampines_dataflows::config::Config;
use tampines_dataflows::event::{parse, Body, Event};
use tampines_dataflows::results::{Record, Status, TickerStats};
use tampines_dataflows::stats::{StateCounts, Totals};
use tampines_dataflows::types::Bbo;
use tampines_dataflows::types::{Price, Qty, Sym, SymbolName, TradeId, TradeSide};

/// One expected progress mark: its time and the JSON of every record published with it.
#[derive(Clone, Debug, PartialEq)]
pub struct Mark {
    /// The progress mark.
    pub time: u64,
    /// Records whose value changed, in publishing order.
    pub changed: Vec<Value>,
    /// Candles that retention dropped: their series' key without prefix
    /// (`candles:EX:SYM:INTERVAL`) and their open time.
    pub removed: Vec<(String, u64)>,
}

/// What the model expects.
#[derive(Clone, Debug)]
pub struct Expected {
    /// Every progress mark, in order.
    pub marks: Vec<Mark>,
    /// The accounting.
    pub totals: Totals,
    /// Dead letters, in input order per input: the reason and the line as given.
    pub dead: Vec<(String, String)>,
    /// What the stages hold after the last mark: the books' raw levels, the trades inside the
    /// window (each id once), the candles retained.
    pub state: StateCounts,
}

/// An event with its mark and place, and its names: the model keys symbols by their names
/// (exchange, symbol), not by the dataflow's 64-bit id of them.
#[derive(Clone, Debug)]
struct Ev {
    time: u64,
    pos: (u32, u64),
    name: SymbolName,
    event: Event,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Book(String, String, u32),
    Ticker(String, String),
    Candle(String, String, u64, u64),
}

/// Computes the expected output of `inputs` (each a list of lines, read in order) under `config`.
pub fn expected(inputs: &[Vec<String>], config: &Config) -> Expected {
    let g = config.granularity_ms;
    let ceil_g = |x: u64| x.div_ceil(g) * g;
    let mut totals = Totals::default();
    let mut dead = Vec::new();
    let mut events: Vec<Ev> = Vec::new();
    let mut last_mark = 0u64;
    let span = config.retention_span_ms();
    for (input, lines) in inputs.iter().enumerate() {
        let mut max_ts: Option<u64> = None;
        let mut last_book: HashMap<SymbolName, u64> = HashMap::new();
        for (offset, line) in lines.iter().enumerate() {
            // Blank: JSON's whitespace only (README); other whitespace is a line to dead-letter.
            if line.chars().all(|c| matches!(c, ' ' | '\t' | '\r' | '\n')) {
                continue;
            }
            totals.read += 1;
            let parsed = match parse(line.trim_end_matches([' ', '\t', '\r', '\n'])) {
                Ok(p) => p,
                Err(e) => {
                    totals.dead_lettered += 1;
                    dead.push((e.to_string(), line.clone()));
                    continue;
                }
            };
            let name = parsed.name();
            let ev = parsed.event;
            let is_book = ev.is_book();
            let natural = ceil_g(ev.ts);
            let open = max_ts.map_or(0, |m| ceil_g(m.saturating_sub(config.lateness_ms)));
            // Too late: a late trade (its timestamp closed) older than the retention's span.
            if natural < open && !is_book && max_ts.is_some_and(|m| ev.ts + span <= m) {
                totals.dead_lettered += 1;
                dead.push(("too_late".into(), line.clone()));
                continue;
            }
            if natural < open {
                totals.late += 1;
            }
            let mut time = natural.max(open);
            if is_book {
                time = time.max(last_book.get(&name).copied().unwrap_or(0));
                last_book.insert(name.clone(), time);
            }
            max_ts = Some(max_ts.map_or(ev.ts, |m| m.max(ev.ts)));
            events.push(Ev {
                time,
                pos: (input as u32, offset as u64),
                name,
                event: ev,
            });
        }
        if let Some(m) = max_ts {
            last_mark = last_mark.max(ceil_g(m));
        }
    }
    events.sort_by_key(|e| (e.time, e.pos));

    // Book duplicates and trade duplicates do not depend on the mark: find them once, in order.
    let (book_dups, accepted) = classify(&events, config);
    totals.duplicates = book_dups.len() as u64
        + (events.iter().filter(|e| !e.event.is_book()).count() - accepted.len()) as u64;
    totals.processed = events.len() as u64 - totals.duplicates;

    let mut candidates: BTreeSet<u64> = events.iter().map(|e| e.time).collect();
    for (_, t) in &accepted {
        let Body::Trade(_) = &t.event.body else {
            continue;
        };
        candidates.insert(ceil_g(t.event.ts + config.window_ms));
        for i in &config.intervals {
            candidates.insert(ceil_g(t.event.ts / i.ms * i.ms + i.ms));
        }
    }
    if last_mark > 0 {
        candidates.insert(last_mark);
    }
    let mut marks = Vec::new();
    let mut previous: BTreeMap<Key, (Value, Record)> = BTreeMap::new();
    let mut held = StateCounts::default();
    for &time in candidates.iter().filter(|&&t| t <= last_mark) {
        let (state, raw_levels) = state_at(time, &events, &book_dups, &accepted, config);
        if time == last_mark {
            held.book_levels = raw_levels as i64;
            held.candles = state
                .keys()
                .filter(|k| matches!(k, Key::Candle(..)))
                .count() as i64;
        }
        let mut changed = Vec::new();
        for (key, record) in &state {
            if previous.get(key).map(|(_, r)| r) != Some(record) {
                changed.push((key.clone(), record.to_json(time)));
            }
        }
        let removed: Vec<(String, u64)> = previous
            .keys()
            .filter(|k| !state.contains_key(*k))
            .filter_map(|k| match k {
                Key::Candle(exchange, symbol, ms, open) => {
                    let interval = config
                        .intervals
                        .iter()
                        .find(|i| i.ms == *ms)
                        .map(|i| i.name.clone())
                        .unwrap_or_default();
                    Some((format!("candles:{exchange}:{symbol}:{interval}"), *open))
                }
                _ => None,
            })
            .collect();
        if !changed.is_empty() || !removed.is_empty() || time == last_mark {
            marks.push(Mark {
                time,
                changed: changed.into_iter().map(|(_, v)| v).collect(),
                removed,
            });
        }
        previous = state
            .into_iter()
            .map(|(k, r)| (k, (Value::Null, r)))
            .collect();
    }
    // A trade id is inside the window after the last mark if a copy of it leaves later.
    let inside: BTreeSet<(&SymbolName, &TradeId)> = accepted
        .iter()
        .filter_map(|(_, e)| match &e.event.body {
            Body::Trade(t) if ceil_g(e.event.ts + config.window_ms) > last_mark => {
                Some((&e.name, &t.id))
            }
            _ => None,
        })
        .collect();
    held.window_trades = inside.len() as i64;
    Expected {
        marks,
        totals,
        dead,
        state: held,
    }
}

/// Indices (into `events`) of book duplicates, and the trades counted once with their timestamps.
fn classify<'a>(events: &'a [Ev], config: &Config) -> (BTreeSet<usize>, Vec<(u64, &'a Ev)>) {
    let g = config.granularity_ms;
    let mut dups = BTreeSet::new();
    let mut last_seq: HashMap<&SymbolName, Option<u64>> = HashMap::new(); // Some(seq state) when synced
    let mut accepted: Vec<(u64, &Ev)> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        match &e.event.body {
            Body::Snapshot { seq, .. } => {
                last_seq.insert(&e.name, *seq);
            }
            Body::Book { seq, .. } => {
                let state = last_seq.entry(&e.name).or_insert(None);
                if let (Some(last), Some(s)) = (*state, *seq) {
                    if s <= last {
                        dups.insert(i);
                        continue;
                    }
                }
                if state.is_some() && seq.is_some() {
                    *state = *seq;
                }
            }
            Body::Trade(t) => {
                let dup = accepted.iter().any(|(_, a)| {
                    let Body::Trade(at) = &a.event.body else {
                        return false;
                    };
                    a.name == e.name
                        && at.id == t.id
                        && (a.event.ts + config.window_ms).div_ceil(g) * g > e.time
                });
                if !dup {
                    accepted.push((e.time, e));
                }
            }
        }
    }
    (dups, accepted)
}

#[derive(Default, Clone)]
struct RefBook {
    bids: BTreeMap<Price, Qty>,
    asks: BTreeMap<Price, Qty>,
    seq: Option<u64>,
    synced: bool,
    snapshot: bool,
    gap: bool,
    digits: u32,
}

fn state_at(
    time: u64,
    events: &[Ev],
    book_dups: &BTreeSet<usize>,
    accepted: &[(u64, &Ev)],
    config: &Config,
) -> (BTreeMap<Key, Record>, usize) {
    let mut out = BTreeMap::new();
    // Books, replayed from scratch.
    let mut books: BTreeMap<&SymbolName, RefBook> = BTreeMap::new();
    for (i, e) in events.iter().enumerate().filter(|(_, e)| e.time <= time) {
        if book_dups.contains(&i) {
            continue;
        }
        let book = match &e.event.body {
            Body::Trade(_) => continue,
            _ => books.entry(&e.name).or_default(),
        };
        let apply = |book: &mut RefBook, bids: &[(Price, Qty)], asks: &[(Price, Qty)]| {
            for (side, levels) in [(&mut book.bids, bids), (&mut book.asks, asks)] {
                for &(p, q) in levels {
                    if q.is_zero_qty() {
                        side.remove(&p);
                    } else {
                        side.insert(p, q);
                    }
                }
            }
            for (p, _) in bids.iter().chain(asks) {
                book.digits = book.digits.max(p.fraction_digits());
            }
        };
        match &e.event.body {
            Body::Snapshot { bids, asks, seq } => {
                book.bids.clear();
                book.asks.clear();
                apply(book, bids, asks);
                book.seq = *seq;
                book.synced = seq.is_some();
                book.snapshot = true;
                book.gap = false;
            }
            Body::Book {
                bids,
                asks,
                seq,
                prev_seq,
            } => {
                if book.synced {
                    let last = book.seq.unwrap_or(0);
                    let ok = match prev_seq {
                        Some(p) => *p <= last,
                        None => seq.is_some() && *seq == last.checked_add(1),
                    };
                    if !ok {
                        book.gap = true;
                    }
                }
                apply(book, bids, asks);
                if seq.is_some() {
                    book.seq = *seq;
                }
            }
            Body::Trade(_) => {}
        }
    }
    let bbo_of = |b: &RefBook| Bbo {
        bid: b.bids.keys().next_back().copied(),
        ask: b.asks.keys().next().copied(),
    };
    for (&name, book) in &books {
        let name = name.clone();
        let tick = config
            .tick_sizes
            .get(&Sym::of(&name.exchange, &name.symbol))
            .map(|p| p.value())
            .unwrap_or_else(|| Decimal::new(1, book.digits));
        let bbo = bbo_of(book);
        let status = if !book.snapshot || book.gap {
            Status::Stale
        } else if matches!((bbo.bid, bbo.ask), (Some(b), Some(a)) if b >= a) {
            Status::Crossed
        } else {
            Status::Ok
        };
        for &r in &config.resolutions {
            let step = tick * Decimal::from(r);
            let group = |levels: &BTreeMap<Price, Qty>, up: bool| {
                let mut groups: BTreeMap<Decimal, Decimal> = BTreeMap::new();
                for (p, q) in levels {
                    let k = (p.value() / step).floor() * step;
                    let k = if up && k != p.value() { k + step } else { k };
                    *groups.entry(k.normalize()).or_default() += q.value();
                }
                groups
            };
            let bids: Vec<(Price, Qty)> = group(&book.bids, false)
                .into_iter()
                .rev()
                .take(config.depth)
                .map(|(p, q)| (Price::from_decimal(p), Qty::from_decimal(q)))
                .collect();
            let asks: Vec<(Price, Qty)> = group(&book.asks, true)
                .into_iter()
                .take(config.depth)
                .map(|(p, q)| (Price::from_decimal(p), Qty::from_decimal(q)))
                .collect();
            out.insert(
                Key::Book(name.exchange.to_string(), name.symbol.to_string(), r),
                Record::Book {
                    name: name.clone(),
                    resolution: r,
                    seq: book.seq,
                    status,
                    bids,
                    asks,
                },
            );
        }
    }
    // Trades counted once, applied by this time.
    let trades: Vec<(&SymbolName, u64, &tampines_dataflows::event::Trade)> = accepted
        .iter()
        .filter(|(t, _)| *t <= time)
        .filter_map(|(_, e)| match &e.event.body {
            Body::Trade(t) => Some((&e.name, e.event.ts, t)),
            _ => None,
        })
        .collect();
    let traded: BTreeSet<&SymbolName> = trades.iter().map(|(s, _, _)| *s).collect();
    for sym in traded {
        let name = sym.clone();
        let window: Vec<_> = trades
            .iter()
            .filter(|(s, ts, _)| *s == sym && *ts + config.window_ms > time)
            .map(|(_, ts, t)| (*ts, *t))
            .collect();
        let stats = summarize(&window).map(|agg| {
            let open = agg.open.price.value();
            let change = agg.last.price.value() - open;
            TickerStats {
                vwap: quotient(agg.quote_volume.value(), agg.volume.value(), 8)
                    .expect("a mean of prices is a decimal"),
                change: change.normalize(),
                // Beyond a 96-bit decimal: published as null (see `TickerStats`).
                change_pct: quotient(change * Decimal::from(100), open, 4),
                agg,
            }
        });
        let bbo = books.get(&sym).map(bbo_of).unwrap_or_default();
        out.insert(
            Key::Ticker(name.exchange.to_string(), name.symbol.to_string()),
            Record::Ticker {
                name: name.clone(),
                stats,
                bbo,
            },
        );
        for interval in &config.intervals {
            let mut by_open: BTreeMap<u64, Vec<(u64, &tampines_dataflows::event::Trade)>> =
                BTreeMap::new();
            for (s, ts, t) in &trades {
                if *s == sym {
                    by_open
                        .entry(ts / interval.ms * interval.ms)
                        .or_default()
                        .push((*ts, *t));
                }
            }
            for (open_time, ts) in by_open.into_iter().rev().take(config.candle_retention) {
                let agg = summarize(&ts).expect("a candle has trades");
                out.insert(
                    Key::Candle(
                        name.exchange.to_string(),
                        name.symbol.to_string(),
                        interval.ms,
                        open_time,
                    ),
                    Record::Candle {
                        name: name.clone(),
                        interval: interval.name.clone(),
                        interval_ms: interval.ms,
                        open_time,
                        candle: Candle {
                            agg,
                            closed: time >= open_time + interval.ms,
                        },
                    },
                );
            }
        }
    }
    let raw_levels = books.values().map(|b| b.bids.len() + b.asks.len()).sum();
    (out, raw_levels)
}

/// The aggregate of a list of trades, computed directly.
/// The contract's order of trade ids, written out here rather than taken from `TradeId`: ids that
/// are integers (digits only, no leading zero), of any size, by value, before every other id, by
/// text. Ids compare as `(id_class(id), id)`: with the length first, digit strings compare as
/// their values.
fn id_class(id: &str) -> (bool, usize) {
    let integer = !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && (id == "0" || !id.starts_with('0'));
    if integer {
        (false, id.len())
    } else {
        (true, 0)
    }
}

/// `a / b` to `dp` places, half away from zero, from the exact fraction in big integers: the
/// whole part of `10^dp x |a| / |b|`, plus one when twice the remainder reaches `|b|`. `None`
/// when the value is beyond a decimal (or `b` is zero).
fn quotient(a: Decimal, b: Decimal, dp: u32) -> Option<Decimal> {
    use num_bigint::BigInt;
    let as_fraction = |d: Decimal| {
        let denominator = BigInt::from(10).pow(d.scale());
        (BigInt::from(d.mantissa()), denominator)
    };
    let ((an, ad), (bn, bd)) = (as_fraction(a), as_fraction(b));
    // a / b = (an x bd) / (ad x bn); both denominators are positive.
    let numerator = an * bd * BigInt::from(10).pow(dp);
    let denominator = ad * bn;
    if denominator == BigInt::from(0) {
        return None;
    }
    let negative = (numerator < BigInt::from(0)) != (denominator < BigInt::from(0));
    let (n, d) = (
        numerator.magnitude().clone(),
        denominator.magnitude().clone(),
    );
    let (whole, rest) = (&n / &d, &n % &d);
    let units = if rest * 2u32 >= d {
        whole + 1u32
    } else {
        whole
    };
    let sign = if negative && units.bits() > 0 {
        "-"
    } else {
        ""
    };
    // Written out with `dp` places, trailing fractional zeros dropped, then read exactly.
    let digits = format!("{units:0>width$}", width = dp as usize + 1);
    let (int, frac) = digits.split_at(digits.len() - dp as usize);
    let frac = frac.trim_end_matches('0');
    let text = if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    };
    Decimal::from_str_exact(&text).ok()
}

fn summarize(trades: &[(u64, &tampines_dataflows::event::Trade)]) -> Option<Agg> {
    let order = |(ts, t): &&(u64, &tampines_dataflows::event::Trade)| {
        let id = t.id.to_string();
        (*ts, id_class(&id), id)
    };
    let first = trades.iter().min_by_key(order)?;
    let last = trades.iter().max_by_key(order)?;
    let mark = |(ts, t): &(u64, &tampines_dataflows::event::Trade)| agg::Mark {
        ts: *ts,
        id: t.id.clone(),
        price: t.price,
    };
    let sum = |f: &dyn Fn(&tampines_dataflows::event::Trade) -> Decimal| {
        Qty::from_decimal(trades.iter().map(|(_, t)| f(t)).sum::<Decimal>())
    };
    Some(Agg {
        open: mark(first),
        last: mark(last),
        high: trades.iter().map(|(_, t)| t.price).max()?,
        low: trades.iter().map(|(_, t)| t.price).min()?,
        volume: sum(&|t| t.qty.value()),
        buy_volume: sum(&|t| {
            if t.side == TradeSide::Buy {
                t.qty.value()
            } else {
                Decimal::ZERO
            }
        }),
        quote_volume: sum(&|t| t.price.value() * t.qty.value()),
        count: trades.len() as u64,
    })
}
