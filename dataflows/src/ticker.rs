//! The rolling ticker: trades in the exact window `(T - window_ms, T]`, aggregated hierarchically.
//!
//! Input: trade events of the symbols this worker owns, each at its timestamp with its read
//! position.
//!
//! Stages:
//! 1. [`window`], a [`sequence`] stage, drops repeated trades (same symbol and id while an earlier
//!    copy is still inside the window; counted as duplicates), and emits
//!    - `accepted`: every trade counted once, at its timestamp (the candles' input);
//!    - `window`: the collection of trades inside the window: `+1` at the trade's timestamp, `-1`
//!      at the first timestamp `>= ts + window_ms`. The retraction is held back inside the stage
//!      (one capability, a timer) and released only when that timestamp completes, so no later
//!      stage ever holds future updates. A trade already outside the window when it arrives
//!      never enters it;
//!    - `outside`: the symbol of each such trade, at its timestamp, so that a symbol whose first
//!      trade is one still has a ticker from then on.
//! 2. [`aggregate`], a [`sequence`] stage over the window collection's updates, keeps per symbol
//!    the window's trades by second and the aggregate of every non-empty second, minute and hour,
//!    and their total. A trade entering is merged into its second, minute, hour and the total (four
//!    merges, five with the 100 ms level below); a trade leaving marks its second, minute and hour,
//!    which are refolded once per timestamp from their trades, 60 seconds, 60 minutes, and the
//!    total from at most `window / 1h + 1` hours: the work per update does not grow with the number
//!    of trades in the window, and memory is the trades inside it. With marks finer than 100 ms a
//!    100 ms level comes first, so that a bucket of trades is refolded at no more than 100 ms /
//!    granularity marks (10 at 10 ms; at 1 ms marks up to 100). (Four chained `reduce`s did the
//!    same with an input and an output arrangement each and refolded a second at every mark that
//!    added to it: about 15% of the live job's instructions.)
//!
//!    The same stage publishes the tickers: it also reads the raw best prices of the symbols'
//!    books (the orderbook stage's `bbo` collection) and their names, and renders a symbol's
//!    ticker at every mark where its aggregate or its best prices changed, from its first trade
//!    on (with no trade left in the window: `count` 0 and the trade-derived fields null).
//!
//! Output: the rendered tickers that changed at each mark, sorted per mark as gathering merges
//! them. Fields derived from the aggregate (vwap, change) are computed as the record is
//! rendered ([`crate::results::TickerStats`]).
//!
//! Invariants: a trade id of a symbol is counted at most once while a counted copy is inside
//! the window (a copy dropped as a duplicate extends nothing); at the end of every complete
//! timestamp T the window holds exactly the counted trades with `T - window_ms < ts <= T`, and
//! each symbol's total equals the merge of those trades; from its first trade on, a symbol's
//! ticker is published at T when its total or its best prices changed at T, and only then.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::StreamVec;

use crate::agg::{Agg, TradeRec};
use crate::config::Config;
use crate::event::Body;
use crate::results::{named_result, Change, NamedResult, Names, ResultKey, TickerStats, View};
use crate::sequence::{no_finish, sequence};
use crate::source::Stamped;
use crate::split::{split3, Part3};
use crate::stats::{Share, Stats};
use crate::time::Step;
use crate::types::{Bbo, FoldMap, Sym, SymbolName, TradeId};

/// Outputs of the window stage.
pub struct Window<'s> {
    /// Trades counted once, at their timestamp.
    pub accepted: StreamVec<'s, u64, ((Sym, TradeRec), u64)>,
    /// Trades inside the window.
    pub window: VecCollection<'s, u64, (Sym, TradeRec), isize>,
    /// The symbols of trades already outside the window when they arrived, at their timestamp.
    pub outside: StreamVec<'s, u64, (Sym, u64)>,
}

#[derive(Clone, Debug)]
enum Out {
    Accepted((Sym, TradeRec), u64),
    Window((Sym, TradeRec), u64, isize),
    Outside(Sym, u64),
}

/// Deduplicates trades and maintains the window collection (see the module doc).
pub fn window<'s>(
    trades: StreamVec<'s, u64, (Stamped, u64)>,
    ends: StreamVec<'s, u64, u64>,
    config: Arc<Config>,
    stats: Arc<Stats>,
) -> Window<'s> {
    let g = Step::new(config.granularity_ms);
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
            // Counted here, added to the shared counters once per timestamp.
            let (mut processed, mut duplicates) = (0, 0);
            for (stamped, _) in records {
                let Body::Trade(trade) = &stamped.event.body else {
                    continue;
                };
                let sym = stamped.event.sym;
                let key = (sym, trade.id.clone());
                if inside.get(&key).is_some_and(|leaves| leaves > time) {
                    duplicates += 1;
                    continue;
                }
                processed += 1;
                let rec = TradeRec::new(stamped.event.ts, trade);
                let leaves = g.ceil(stamped.event.ts + length);
                if leaves > time {
                    inside.insert(key, leaves);
                    push_one(&mut expiring, leaves, (sym, rec.clone()));
                    timers.schedule(leaves);
                    out.push(Out::Window((sym, rec.clone()), time, 1));
                } else {
                    out.push(Out::Outside(sym, time));
                }
                out.push(Out::Accepted((sym, rec), time));
            }
            Stats::add(&stats.processed, processed);
            Stats::add(&stats.duplicates, duplicates);
            share.report(&stats.state.window_trades, inside.len());
        },
        no_finish,
    );
    let (window, accepted, outside) = split3(out, "WindowParts", |o| match o {
        Out::Window(d, t, r) => Part3::First((d, t, r)),
        Out::Accepted(d, t) => Part3::Second((d, t)),
        Out::Outside(sym, t) => Part3::Third((sym, t)),
    });
    Window {
        accepted,
        window: window.as_collection(),
        outside,
    }
}

/// Appends `value` to the vector under `key`, a new one made for exactly one value. At 1 s or
/// coarser marks most expiry times and most seconds of a window hold a single trade, and a
/// vector's first push reserves room for four: with `Vec::default` the 24 h window of the
/// trade-heavy bench file peaked at 481 MiB, with this at 352 MiB (the Flink file 411 -> 358 MiB),
/// in the same time.
fn push_one<K: Ord, V>(map: &mut BTreeMap<K, Vec<V>>, key: K, value: V) {
    map.entry(key)
        .or_insert_with(|| Vec::with_capacity(1))
        .push(value);
}

/// How many maps [`Inside`] spreads its ids over: a constant, so that picking one is a mask,
/// not a division.
const SHARDS: usize = 64;

/// The ids of the trades inside the window, with the timestamp at which each leaves it, in
/// [`SHARDS`] hash maps chosen by the key's hash: a map grows by doubling, and rehashing one map
/// of a whole day's trades stalled the stage for up to 95 ms (the live job's worst marks); a
/// shard is a 64th of that. Hashed with foldhash, seeded per instance (the shard's hasher and
/// each shard's own are independent): SipHash, the standard one, was 1% of all instructions on
/// the live file.
struct Inside {
    hasher: foldhash::fast::RandomState,
    shards: Vec<FoldMap<(Sym, TradeId), u64>>,
    /// The ids held, over all shards, for the metrics gauge: counted as they come and go, not
    /// summed over the 64 shards at every timestamp (the harness checks it against the model).
    len: usize,
}

impl Default for Inside {
    fn default() -> Inside {
        Inside {
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..SHARDS).map(|_| FoldMap::default()).collect(),
            len: 0,
        }
    }
}

impl Inside {
    fn shard(&mut self, key: &(Sym, TradeId)) -> &mut FoldMap<(Sym, TradeId), u64> {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        &mut self.shards[i]
    }

    fn get(&mut self, key: &(Sym, TradeId)) -> Option<u64> {
        self.shard(key).get(key).copied()
    }

    fn insert(&mut self, key: (Sym, TradeId), leaves: u64) {
        if self.shard(&key).insert(key, leaves).is_none() {
            self.len += 1;
        }
    }

    /// Forgets `key` if it leaves the window at `time` (a later copy may have replaced it).
    fn remove_if_leaving(&mut self, key: (Sym, TradeId), time: u64) {
        let shard = self.shard(&key);
        if shard.get(&key) == Some(&time) {
            shard.remove(&key);
            self.len -= 1;
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// What the ticker stage reads: the window collection's updates, the best prices of the
/// symbols' books (a collection), and the names of the symbols it publishes.
#[derive(Clone, Debug)]
pub enum TickerInput {
    /// A trade entering (`+1`) or leaving (`-1`) the window.
    Window(Sym, TradeRec, isize),
    /// A trade of the symbol that never entered the window: it has a ticker from now on.
    Outside(Sym),
    /// A change of a book's raw best prices.
    Bbo(Sym, Bbo, isize),
    /// A symbol's names (the first ones seen are kept).
    Name(Sym, SymbolName),
}

/// Aggregates the window per symbol, through (100 ms,) second, minute and hour buckets (see the
/// module doc), as a [`sequence`] stage over the window collection's updates, and publishes the
/// tickers whose aggregate or best prices changed.
pub fn aggregate<'s>(
    input: StreamVec<'s, u64, (TickerInput, u64)>,
    ends: StreamVec<'s, u64, u64>,
    config: Arc<Config>,
) -> StreamVec<'s, u64, (Change, u64)> {
    // A finest bucket is refolded at every mark that retracts from it: at most 100 ms /
    // granularity marks each (10 at 10 ms, up to 100 at 1 ms; one at 100 ms and coarser).
    let spans: Vec<u64> = if config.granularity_ms < 100 {
        vec![100, 1_000, 60_000, 3_600_000]
    } else {
        vec![1_000, 60_000, 3_600_000]
    };
    let mut symbols: FoldMap<Sym, Hierarchy> = FoldMap::default();
    let mut names = Names::default();
    let mut bbo: FoldMap<Sym, Bbo> = FoldMap::default();
    // The symbols that have had a trade (they have a ticker from then on), with their ticker's
    // result once made.
    let mut traded: FoldMap<Sym, Option<NamedResult>> = FoldMap::default();
    sequence(
        input,
        ends,
        Pipeline,
        "Ticker",
        |(_, t)| *t,
        move |time, mut updates, _timers, out: &mut Vec<(Change, u64)>| {
            // Names and retractions of best prices first, so that `-old +new` leaves `new`.
            updates.sort_by_key(|(u, _)| match u {
                TickerInput::Name(..) => 0,
                TickerInput::Bbo(_, _, diff) if *diff < 0 => 1,
                _ => 2,
            });
            // An insertion is merged upwards at once; a retraction marks its buckets, refolded
            // after all of the timestamp's updates (which makes their order irrelevant).
            let mut touched: Vec<Sym> = Vec::new();
            // The tickers that changed: their best prices did (a stage emits a change only when
            // the value changes), or their aggregate did.
            let mut changed: Vec<Sym> = Vec::new();
            for (update, _) in updates {
                let (sym, rec, diff) = match update {
                    TickerInput::Name(sym, name) => {
                        names.note(sym, name);
                        continue;
                    }
                    TickerInput::Bbo(sym, value, diff) => {
                        if diff < 0 {
                            bbo.remove(&sym);
                        } else {
                            bbo.insert(sym, value);
                        }
                        changed.push(sym);
                        continue;
                    }
                    TickerInput::Outside(sym) => {
                        if let std::collections::hash_map::Entry::Vacant(e) = traded.entry(sym) {
                            e.insert(None);
                            changed.push(sym);
                        }
                        continue;
                    }
                    TickerInput::Window(sym, rec, diff) => (sym, rec, diff),
                };
                let h = symbols
                    .entry(sym)
                    .or_insert_with(|| Hierarchy::new(spans.len()));
                if h.before.is_none() {
                    h.before = Some(h.total.clone());
                    touched.push(sym);
                }
                for _ in 0..diff.unsigned_abs() {
                    if diff > 0 {
                        h.insert(&spans, rec.clone());
                    } else {
                        h.retract(&spans, &rec);
                    }
                }
            }
            for sym in touched {
                let h = symbols.get_mut(&sym).expect("touched symbols exist");
                h.refold(&spans);
                if h.before.take().flatten() != h.total {
                    changed.push(sym);
                }
                if h.total.is_some() {
                    traded.entry(sym).or_default();
                } else {
                    symbols.remove(&sym);
                }
            }
            changed.sort_unstable();
            changed.dedup();
            let start = out.len();
            for sym in changed {
                // A symbol has a ticker from its first trade on.
                let (Some(result), Some(name)) = (traded.get_mut(&sym), names.get(&sym)) else {
                    continue;
                };
                let (result, head) = result
                    .get_or_insert_with(|| named_result(&ResultKey::Ticker(sym), name, &config));
                let view = View::Ticker {
                    head: Cow::Borrowed(head),
                    stats: symbols
                        .get(&sym)
                        .and_then(|h| h.total.clone())
                        .map(TickerStats::new),
                    bbo: bbo.get(&sym).cloned().unwrap_or_default(),
                };
                let json = view.render(time);
                out.push((Change::new(result, None, Some(json)), time));
            }
            // Sorted here, on every worker, so that gathering merges sorted runs.
            out[start..].sort_unstable_by(|a, b| a.0.order(&b.0));
        },
        no_finish,
    )
}

/// One symbol's window: its trades by finest bucket, the aggregate of every non-empty bucket at
/// every level, and the total.
///
/// Invariant (between timestamps): `levels[i]` holds, for every bucket `b` of `spans[i]` with a
/// trade in the window, the aggregate of exactly those trades, and `total` that of all of them.
/// During a timestamp, `stale[i]` lists the buckets that a retraction left out of date.
struct Hierarchy {
    trades: BTreeMap<u64, Vec<TradeRec>>,
    levels: Vec<BTreeMap<u64, Agg>>,
    stale: Vec<BTreeSet<u64>>,
    /// The trades retracted in the current timestamp (with multiplicity), removed from their
    /// buckets in one pass per bucket when it is refolded: a second's trades leave in the order
    /// they came, and searching for each in turn was quadratic in a busy second.
    leaving: FoldMap<TradeRec, usize>,
    total: Option<Agg>,
    total_stale: bool,
    /// The total before the current timestamp, once the symbol was touched in it.
    before: Option<Option<Agg>>,
}

impl Hierarchy {
    fn new(depth: usize) -> Hierarchy {
        Hierarchy {
            trades: BTreeMap::new(),
            levels: vec![BTreeMap::new(); depth],
            stale: vec![BTreeSet::new(); depth],
            leaving: FoldMap::default(),
            total: None,
            total_stale: false,
            before: None,
        }
    }

    /// Adds a trade, merging it into its bucket at every level and the total (a bucket marked
    /// for refolding is refolded anyway, this trade included).
    fn insert(&mut self, spans: &[u64], rec: TradeRec) {
        let one = Agg::of(&rec);
        for (level, span) in self.levels.iter_mut().zip(spans) {
            match level.get_mut(&(rec.ts / span)) {
                Some(agg) => agg.merge(&one),
                None => {
                    level.insert(rec.ts / span, one.clone());
                }
            }
        }
        match self.total.as_mut() {
            Some(total) => total.merge(&one),
            None => self.total = Some(one),
        }
        push_one(&mut self.trades, rec.ts / spans[0], rec);
    }

    /// Notes a trade (one copy) as leaving and marks its buckets at every level for refolding.
    fn retract(&mut self, spans: &[u64], rec: &TradeRec) {
        *self.leaving.entry(rec.clone()).or_insert(0) += 1;
        for (i, span) in spans.iter().enumerate() {
            self.stale[i].insert(rec.ts / span);
        }
        self.total_stale = true;
    }

    /// Refolds the stale buckets, finest first, then the total.
    fn refold(&mut self, spans: &[u64]) {
        for i in 0..spans.len() {
            for b in std::mem::take(&mut self.stale[i]) {
                let agg = if i == 0 {
                    let leaving = &mut self.leaving;
                    let mut trades = self.trades.get_mut(&b);
                    if let Some(trades) = trades.as_deref_mut().filter(|_| !leaving.is_empty()) {
                        trades.retain(|r| match leaving.get_mut(r) {
                            Some(n) if *n > 0 => {
                                *n -= 1;
                                false
                            }
                            _ => true,
                        });
                    }
                    let trades = trades.map(|t| t.as_slice()).unwrap_or_default();
                    fold(trades.iter().map(Agg::of))
                } else {
                    let per = spans[i] / spans[i - 1];
                    let children = self.levels[i - 1].range(b * per..(b + 1) * per);
                    fold(children.map(|(_, a)| a.clone()))
                };
                match agg {
                    Some(agg) => {
                        self.levels[i].insert(b, agg);
                    }
                    None => {
                        self.levels[i].remove(&b);
                        if i == 0 {
                            self.trades.remove(&b);
                        }
                    }
                }
            }
        }
        debug_assert!(
            self.leaving.values().all(|&n| n == 0),
            "every retracted trade was in the window"
        );
        self.leaving.clear();
        if std::mem::take(&mut self.total_stale) {
            let top = self.levels.last().expect("at least one level");
            self.total = fold(top.values().cloned());
        }
    }
}

/// Merges aggregates; `None` when there are none.
fn fold(aggs: impl Iterator<Item = Agg>) -> Option<Agg> {
    aggs.reduce(|mut acc, a| {
        acc.merge(&a);
        acc
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key's first value gets a vector of exactly its room; later ones grow it as a vector
    /// grows, in the order pushed.
    #[test]
    fn a_new_key_holds_room_for_one_value() {
        let mut map: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        push_one(&mut map, 7, 1);
        assert_eq!(map[&7].capacity(), 1);
        push_one(&mut map, 7, 2);
        push_one(&mut map, 8, 3);
        assert_eq!(
            (map[&7].as_slice(), map[&8].as_slice()),
            (&[1, 2][..], &[3][..])
        );
        assert_eq!(map[&8].capacity(), 1);
    }
}
