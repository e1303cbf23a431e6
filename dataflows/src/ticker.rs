//! The rolling ticker: trades in the exact window `(T - window_ms, T]`, aggregated hierarchically.
//!
//! Input: trade events of the symbols this worker owns, each at its timestamp with its read position.
//!
//! Stages:
//! 1. [`window`], a [`sequence`] stage, drops repeated trades (same symbol and id while an earlier
//!    copy is still inside the window; counted as duplicates), and emits
//!    - `accepted`: every trade counted once, at its timestamp (the candles' input);
//!    - `window`: the collection of trades inside the window: `+1` at the trade's timestamp, `-1`
//!      at the first timestamp `>= ts + window_ms`. The retraction is held back inside the stage
//!      (one capability, a timer) and released only when that timestamp completes, so no
//!      arrangement ever holds future updates. A trade already outside the window when it
//!      arrives never enters it.
//! 2. [`aggregate`]: `reduce` per (symbol, second) over trades, then per (symbol, minute) over
//!    those aggregates, per (symbol, hour), and per symbol. A change re-reads one second's trades,
//!    60 seconds, 60 minutes and at most `window / 1h + 1` hours: the work per update does not
//!    grow with the number of trades in the window. With marks finer than 100 ms a (symbol,
//!    100 ms) level comes first, so that no bucket of trades is re-folded at more than 10 marks
//!    (a busy symbol's second at every 10 ms mark was 15% of the live job).
//!
//! Output: `(sym, Agg)` for every symbol with at least one trade in the window. Fields derived
//! from it (vwap, change, bid/ask) are computed where the record is built ([`crate::results`]).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::{Map, Partition};
use timely::dataflow::StreamVec;

use crate::agg::{Agg, TradeRec};
use crate::config::Config;
use crate::event::Body;
use crate::sequence::{no_finish, sequence};
use crate::source::Stamped;
use crate::stats::{Share, Stats};
use crate::types::{Sym, TradeId};

/// Outputs of the window stage.
pub struct Window<'s> {
    /// Trades counted once, at their timestamp.
    pub accepted: StreamVec<'s, u64, ((Sym, TradeRec), u64)>,
    /// Trades inside the window.
    pub window: VecCollection<'s, u64, (Sym, TradeRec), isize>,
}

#[derive(Clone, Debug)]
enum Out {
    Accepted((Sym, TradeRec), u64),
    Window((Sym, TradeRec), u64, isize),
}

/// Deduplicates trades and maintains the window collection (see the module doc).
pub fn window<'s>(
    trades: StreamVec<'s, u64, (Stamped, u64)>,
    ends: StreamVec<'s, u64, u64>,
    config: Arc<Config>,
    stats: Arc<Stats>,
) -> Window<'s> {
    let g = config.granularity_ms;
    let length = config.window_ms;
    // Ids of trades inside the window, with the timestamp at which they leave it.
    let mut inside = Inside::default();
    let mut expiring: BTreeMap<u64, Vec<(Sym, TradeRec)>> = BTreeMap::new();
    let mut share = Share::default();
    let out = sequence(
        trades,
        ends,
        Pipeline,
        "TradeWindow",
        |(_, t)| *t,
        move |time, mut records, timers, out| {
            for (sym, rec) in expiring.remove(&time).unwrap_or_default() {
                inside.remove_if_leaving((sym, rec.id.clone()), time);
                out.push(Out::Window((sym, rec), time, -1));
            }
            records.sort_by_key(|r| r.0.pos);
            for (stamped, _) in records {
                let Body::Trade(trade) = &stamped.event.body else {
                    continue;
                };
                let sym = stamped.event.sym;
                let key = (sym, trade.id.clone());
                if inside.get(&key).is_some_and(|leaves| leaves > time) {
                    Stats::add(&stats.duplicates, 1);
                    continue;
                }
                Stats::add(&stats.processed, 1);
                let rec = TradeRec::new(stamped.event.ts, trade);
                let leaves = (stamped.event.ts + length).div_ceil(g) * g;
                if leaves > time {
                    inside.insert(key, leaves);
                    expiring.entry(leaves).or_default().push((sym, rec.clone()));
                    timers.schedule(leaves);
                    out.push(Out::Window((sym, rec.clone()), time, 1));
                }
                out.push(Out::Accepted((sym, rec), time));
            }
            share.report(&stats.state.window_trades, inside.len());
        },
        no_finish,
    );
    let mut parts = out.partition(2, |o| (matches!(o, Out::Window(..)) as u64, o));
    let window = parts.pop().expect("2 parts").flat_map(|o| match o {
        Out::Window(d, t, r) => Some((d, t, r)),
        Out::Accepted(..) => None,
    });
    let accepted = parts.pop().expect("2 parts").flat_map(|o| match o {
        Out::Accepted(d, t) => Some((d, t)),
        Out::Window(..) => None,
    });
    Window {
        accepted,
        window: window.as_collection(),
    }
}

/// The ids of the trades inside the window, with the timestamp at which each leaves it, in 64
/// hash maps chosen by the key's hash: a map grows by doubling, and rehashing one map of a whole
/// day's trades stalled the stage for up to 95 ms (the live job's worst marks); a shard is a
/// 64th of that.
struct Inside {
    hasher: RandomState,
    shards: Vec<HashMap<(Sym, TradeId), u64>>,
}

impl Default for Inside {
    fn default() -> Inside {
        Inside {
            hasher: RandomState::new(),
            shards: (0..64).map(|_| HashMap::new()).collect(),
        }
    }
}

impl Inside {
    fn shard(&mut self, key: &(Sym, TradeId)) -> &mut HashMap<(Sym, TradeId), u64> {
        let i = self.hasher.hash_one(key) as usize % self.shards.len();
        &mut self.shards[i]
    }

    fn get(&mut self, key: &(Sym, TradeId)) -> Option<u64> {
        self.shard(key).get(key).copied()
    }

    fn insert(&mut self, key: (Sym, TradeId), leaves: u64) {
        self.shard(&key).insert(key, leaves);
    }

    /// Forgets `key` if it leaves the window at `time` (a later copy may have replaced it).
    fn remove_if_leaving(&mut self, key: (Sym, TradeId), time: u64) {
        let shard = self.shard(&key);
        if shard.get(&key) == Some(&time) {
            shard.remove(&key);
        }
    }

    fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }
}

/// Aggregates the window per symbol, through (100 ms,) second, minute and hour buckets.
pub fn aggregate<'s>(
    window: VecCollection<'s, u64, (Sym, TradeRec), isize>,
    granularity_ms: u64,
) -> VecCollection<'s, u64, (Sym, Agg), isize> {
    let fold = |_key: &(Sym, u64), input: &[(&TradeRec, isize)], output: &mut Vec<(Agg, isize)>| {
        if let Some(agg) = Agg::fold(input.iter().map(|(r, n)| (*r, *n)), Agg::of) {
            output.push((agg, 1));
        }
    };
    // The first level re-folds its bucket's trades at every mark that adds to it: at most 10
    // marks per bucket keeps that linear in the trades. A second spans 10 marks at 100 ms.
    let seconds = if granularity_ms < 100 {
        window
            .map(|(sym, rec)| ((sym, rec.ts / 100), rec))
            .reduce_named("TickerTenths", fold)
            .map(|((sym, tenth), agg)| ((sym, tenth / 10), agg))
            .reduce_named("TickerSeconds", merge::<(Sym, u64)>)
    } else {
        window
            .map(|(sym, rec)| ((sym, rec.ts / 1_000), rec))
            .reduce_named("TickerSeconds", fold)
    };
    seconds
        .map(|((sym, second), agg)| ((sym, second / 60), agg))
        .reduce_named("TickerMinutes", merge::<(Sym, u64)>)
        .map(|((sym, minute), agg)| ((sym, minute / 60), agg))
        .reduce_named("TickerHours", merge::<(Sym, u64)>)
        .map(|((sym, _hour), agg)| (sym, agg))
        .reduce_named("Ticker", merge::<Sym>)
}

/// Merges partial aggregates of one key.
fn merge<K>(_key: &K, input: &[(&Agg, isize)], output: &mut Vec<(Agg, isize)>) {
    if let Some(agg) = Agg::fold(input.iter().map(|(a, n)| (*a, *n)), Agg::clone) {
        output.push((agg, 1));
    }
}
