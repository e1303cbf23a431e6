//! Candles per symbol and interval, with `closed` flags and bounded retention.
//!
//! Input: trades counted once (the window stage's `accepted` stream), at their timestamps.
//!
//! A [`sequence`] stage keeps, per (symbol, interval), the newest `candle_retention` candles by
//! `open_time`. Trades are only ever added to a candle, so each candle is an aggregate updated in
//! O(1) per trade ([`Agg::merge`]); a differential `reduce` would re-read every trade of the candle
//! (a 1d candle holds a day of trades) at every change.
//!
//! Output: the collection `((sym, interval index, open_time), Candle)`, one record per retained
//! candle: `-old +new` when a candle changes, `-old` when retention drops it.
//!
//! Invariants: `closed` is true exactly from the first timestamp `>= open_time + interval` (a
//! timer fires there; a late trade into an already closed candle finds it closed); at most
//! `candle_retention` candles per series are in the collection, and dropped candles' state is gone.

use std::collections::BTreeMap;
use std::sync::Arc;

use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::StreamVec;

use crate::agg::{Agg, TradeRec};
use crate::config::Config;
use crate::sequence::{no_finish, sequence};
use crate::stats::{Share, Stats};
use crate::types::{FoldMap, Sym};

/// A candle's value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Candle {
    /// Aggregate of its trades.
    pub agg: Agg,
    /// The interval is over.
    pub closed: bool,
}

/// Key of a candle: symbol, index into the configured intervals, open time.
pub type CandleKey = (Sym, u32, u64);

/// Maintains the candles (see the module doc).
pub fn candles<'s>(
    accepted: StreamVec<'s, u64, ((Sym, TradeRec), u64)>,
    ends: StreamVec<'s, u64, u64>,
    config: Arc<Config>,
    stats: Arc<Stats>,
) -> VecCollection<'s, u64, (CandleKey, Candle), isize> {
    let g = config.granularity_ms;
    let mut series: FoldMap<(Sym, u32), BTreeMap<u64, Candle>> = FoldMap::default();
    let mut closing: BTreeMap<u64, Vec<CandleKey>> = BTreeMap::new();
    let mut held = 0usize;
    let mut share = Share::default();
    sequence(
        accepted,
        ends,
        Pipeline,
        "Candles",
        |(_, t)| *t,
        move |time, records, timers, out| {
            // The value of every candle touched at this timestamp, as it was before it.
            let mut before: BTreeMap<CandleKey, Option<Candle>> = BTreeMap::new();
            for key @ (sym, ivl, open) in closing.remove(&time).unwrap_or_default() {
                if let Some(candle) = series.get_mut(&(sym, ivl)).and_then(|s| s.get_mut(&open)) {
                    before.entry(key).or_insert_with(|| Some(candle.clone()));
                    candle.closed = true;
                }
            }
            for ((sym, trade), _) in records {
                let agg = Agg::of(&trade);
                for (ivl, interval) in config.intervals.iter().enumerate() {
                    let ivl = ivl as u32;
                    let open = trade.ts / interval.ms * interval.ms;
                    let closes = (open + interval.ms).div_ceil(g) * g;
                    let candles = series.entry((sym, ivl)).or_default();
                    before
                        .entry((sym, ivl, open))
                        .or_insert_with(|| candles.get(&open).cloned());
                    match candles.get_mut(&open) {
                        Some(candle) => candle.agg.merge(&agg),
                        None => {
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
                                if let Some((&oldest, candle)) = candles.iter().next() {
                                    before
                                        .entry((sym, ivl, oldest))
                                        .or_insert_with(|| Some(candle.clone()));
                                    candles.remove(&oldest);
                                    held -= 1;
                                }
                            }
                        }
                    }
                }
            }
            share.report(&stats.state.candles, held);
            for (key @ (sym, ivl, open), old) in before {
                let new = series.get(&(sym, ivl)).and_then(|s| s.get(&open));
                if old.as_ref() != new {
                    if let Some(old) = old {
                        out.push(((key, old), time, -1));
                    }
                    if let Some(new) = new {
                        out.push(((key, new.clone()), time, 1));
                    }
                }
            }
        },
        no_finish,
    )
    .as_collection()
}
