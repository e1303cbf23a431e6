//! Candles per symbol and interval, with `closed` flags and bounded retention.
//!
//! Input: trades counted once (the window stage's `accepted` stream), at their timestamps, and
//! the symbols' names, which it publishes under.
//!
//! A [`sequence`] stage keeps, per (symbol, interval), the newest `candle_retention` candles by
//! `open_time`. Trades are only ever added to a candle, so each candle is an aggregate updated in
//! O(1) per trade ([`Agg::merge`]); a differential `reduce` would re-read every trade of the candle
//! (a 1d candle holds a day of trades) at every change.
//!
//! Output: the rendered records of the candles that changed at each mark, and a removal (no
//! record) for each candle retention drops, sorted per mark as gathering merges them. Candles
//! are rendered here, where they live, as books are in theirs ([`crate::orderbook`]), and only
//! the records go on to [`crate::results::gather`].
//!
//! Invariants: `closed` is true exactly from the first timestamp `>= open_time + interval` (a
//! timer fires there; a late trade into an already closed candle finds it closed); at most
//! `candle_retention` candles per series are kept, and dropped candles' state is gone. A symbol's
//! names arrive no later than its first trade (they travel at the input's floor and are applied
//! first in a timestamp), so every candle is published from its creation on; without names
//! nothing of the symbol is published.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::StreamVec;

use crate::agg::{Agg, Candle, TradeRec};
use crate::config::Config;
use crate::results::{
    named_result, push_candle_body, push_candle_times, Change, NamedResult, Names, Rendering,
    ResultKey, View,
};
use crate::sequence::{no_finish, sequence};
use crate::stats::{Share, Stats};
use crate::time::Step;
use crate::types::{FoldMap, Sym, SymbolName};

/// A series' candles by open time, and the timestamp and open time of the candle its last trade
/// went to.
#[derive(Default)]
struct Series {
    candles: BTreeMap<u64, Candle>,
    last: Option<(u64, u64)>,
}

/// Key of a candle: symbol, index into the configured intervals, open time.
pub type CandleKey = (Sym, u32, u64);

/// What the candle stage reads: accepted trades, and the names of the symbols it publishes.
#[derive(Clone, Debug)]
pub enum CandleInput {
    /// A trade counted once.
    Trade(Sym, TradeRec),
    /// A symbol's names (the first ones seen are kept).
    Name(Sym, SymbolName),
}

/// Maintains and publishes the candles (see the module doc).
pub fn candles<'s>(
    input: StreamVec<'s, u64, (CandleInput, u64)>,
    ends: StreamVec<'s, u64, u64>,
    config: Arc<Config>,
    stats: Arc<Stats>,
) -> StreamVec<'s, u64, (Change, u64)> {
    // Candle bounds and closing marks by multiplication (see `Step`): 14 divisions per trade.
    let g = Step::new(config.granularity_ms);
    let steps: Vec<Step> = config.intervals.iter().map(|i| Step::new(i.ms)).collect();
    let mut series: FoldMap<(Sym, u32), Series> = FoldMap::default();
    let mut names = Names::default();
    // The result of every series, made once, and the open time of the candle it rendered last
    // with that candle's times rendered (a series' newest candle is rendered at every trade).
    let mut results: FoldMap<(Sym, u32), (NamedResult, Option<u64>, String)> = FoldMap::default();
    let mut closing: BTreeMap<u64, Vec<CandleKey>> = BTreeMap::new();
    let mut held = 0usize;
    let mut share = Share::of(input.scope().index());
    let mut rendering = Rendering::default();
    sequence(
        input,
        ends,
        Pipeline,
        "Candles",
        |(_, t)| *t,
        move |time, mut records, timers, out: &mut Vec<(Change, u64)>| {
            // Names first; trades keep their order.
            records.sort_by_key(|(r, _)| !matches!(r, CandleInput::Name(..)));
            // Every candle touched at this timestamp, and whether it existed before it. A touched
            // candle changed (its creation, a trade merged into it, its close), or, if it existed,
            // was dropped by retention; one created and dropped here was never there.
            let mut touched: Vec<(CandleKey, bool)> = Vec::new();
            for key @ (sym, ivl, open) in closing.remove(&time).unwrap_or_default() {
                let series = series.get_mut(&(sym, ivl));
                if let Some(candle) = series.and_then(|s| s.candles.get_mut(&open)) {
                    touched.push((key, true));
                    candle.closed = true;
                }
            }
            for (record, _) in records {
                let (sym, trade) = match record {
                    CandleInput::Name(sym, name) => {
                        names.note(sym, name);
                        continue;
                    }
                    CandleInput::Trade(sym, trade) => (sym, trade),
                };
                let agg = Agg::of(&trade);
                for (ivl, step) in steps.iter().enumerate() {
                    let ivl = ivl as u32;
                    let open = step.floor(trade.ts);
                    let closes = g.ceil(open + step.ms());
                    let Series { candles, last } = series.entry((sym, ivl)).or_default();
                    // A candle is noted once per timestamp (unless trades alternate between
                    // candles of a series; the notes are deduplicated below anyway).
                    let noted = last.replace((time, open)) == Some((time, open));
                    match candles.get_mut(&open) {
                        Some(candle) => {
                            if !noted {
                                touched.push(((sym, ivl, open), true));
                            }
                            candle.agg.merge(&agg);
                        }
                        None => {
                            touched.push(((sym, ivl, open), false));
                            held += 1;
                            candles.insert(
                                open,
                                Candle {
                                    agg: agg.clone(),
                                    closed: closes <= time,
                                },
                            );
                            if closes > time {
                                closing.entry(closes).or_default().push((sym, ivl, open));
                                timers.schedule(closes);
                            }
                            if candles.len() > config.candle_retention {
                                if let Some((&oldest, _)) = candles.iter().next() {
                                    touched.push(((sym, ivl, oldest), true));
                                    candles.remove(&oldest);
                                    held -= 1;
                                }
                            }
                        }
                    }
                }
            }
            share.report(&stats.state.candles, held);
            // One entry per candle, the first: whether it existed at the start of the timestamp.
            touched.sort_by_key(|&(key, _)| key);
            touched.dedup_by_key(|&mut (key, _)| key);
            let start = out.len();
            // The aggregate fields of the candle rendered last, with its symbol and aggregate:
            // a symbol's candles of one mark, in interval order, often hold the same trades
            // (77% of the candle records of the live file repeat the previous one's fields,
            // 29% of the Flink file's), and those fields are most of rendering a candle.
            let mut body = String::new();
            let mut rendered: Option<(Sym, &Agg)> = None;
            for ((sym, ivl, open), existed) in touched {
                let new = series.get(&(sym, ivl)).and_then(|s| s.candles.get(&open));
                if new.is_none() && !existed {
                    continue;
                }
                let (Some(name), Some(interval)) =
                    (names.get(&sym), config.intervals.get(ivl as usize))
                else {
                    continue;
                };
                let ((result, head), times_of, times) =
                    results.entry((sym, ivl)).or_insert_with(|| {
                        let result = named_result(&ResultKey::Candle(sym, ivl, 0), name, &config);
                        (result, None, String::new())
                    });
                let view = new.map(|candle| {
                    if rendered != Some((sym, &candle.agg)) {
                        body.clear();
                        push_candle_body(&mut body, &candle.agg);
                        rendered = Some((sym, &candle.agg));
                    }
                    if *times_of != Some(open) {
                        times.clear();
                        push_candle_times(times, open, interval.ms);
                        *times_of = Some(open);
                    }
                    View::Candle {
                        head: Cow::Borrowed(head),
                        interval_ms: interval.ms,
                        open_time: open,
                        candle,
                        times: Some(times),
                        body: Some(&body),
                    }
                });
                rendering.push(result, Some(open), view.as_ref(), time);
            }
            rendering.finish(|change| out.push((change, time)));
            // Sorted here, on every worker, so that gathering merges sorted runs.
            out[start..].sort_unstable_by(|a, b| a.0.order(&b.0));
        },
        no_finish,
    )
}
