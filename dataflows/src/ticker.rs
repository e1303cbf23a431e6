//! The rolling ticker: trades in the exact window `(T - window_ms, T]`, aggregated hierarchically.
//!
//! Input: trade events of the symbols this worker owns, each at its timestamp with its read
//! position.
//!
//! Stages:
//! 1. [`window`], a [`sequence`] stage, drops repeated trades (same symbol and id while an earlier
//!    copy is still inside the window; counted as duplicates), and emits
//!    - `accepted`: every trade counted once, at its timestamp (the candles' input);
//!    - `entering`: each trade that enters the window, at its timestamp, with the timestamp at
//!      which it leaves: the first one `>= ts + window_ms`. A trade already outside the window
//!      when it arrives never enters it;
//!    - `outside`: the symbol of each such trade, at its timestamp, so that a symbol whose first
//!      trade is one still has a ticker from then on.
//! 2. [`aggregate`], a [`sequence`] stage, keeps per symbol the window as aggregates, never as
//!    trades: one bucket per timestamp at which trades leave (every trade of such a bucket
//!    leaves at that timestamp, so a bucket leaves whole and is never refolded from its trades);
//!    above them, levels of buckets of leaving time of 10 ms, 100 ms, 1 s, 1 min and 1 h, those
//!    of 4 marks or more (with 10 s or 10 min first where needed), so that a bucket has at most
//!    60 children (`spans`); and their total. A level's bucket with a single child holds no
//!    aggregate of its own (it reads its child's): where trades are sparse, most have one. A trade entering is merged into its
//!    bucket, the buckets above it and the total; a bucket leaving at T (the stage holds a
//!    timer for it) marks the buckets above it, refolded once per timestamp from their
//!    children, and the total from the top level's (at most `window / 1h + 1` hours): the
//!    work per update does not grow with the number of trades in the window, and the memory is
//!    about one aggregate per leaving timestamp and symbol, however many trades it holds.
//!    (Until 2026-12-07 the window stage kept every trade to retract it and the ticker kept it
//!    again, by second, to refold its second: about 440 bytes a trade where a bucket holds a
//!    few, 900 where trades are sparse.)
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
//! timestamp T a symbol's buckets hold exactly its counted trades with `T - window_ms < ts <=
//! T`, each in the bucket of the timestamp at which it leaves, and its total equals the merge of
//! those trades; from its first trade on, a symbol's ticker is published at T when its total or
//! its best prices changed at T, and only then.

use std::borrow::Cow;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::ops::RangeBounds;
use std::sync::Arc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::StreamVec;

use crate::agg::{Agg, TradeRec};
use crate::config::Config;
use crate::event::Body;
use crate::results::{
    named_result, Change, NamedResult, Names, Rendering, ResultKey, TickerStats, View,
};
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
    /// Trades entering the window, at their timestamp, with the timestamp at which they leave it.
    pub entering: StreamVec<'s, u64, ((Sym, u64, TradeRec), u64)>,
    /// The symbols of trades already outside the window when they arrived, at their timestamp.
    pub outside: StreamVec<'s, u64, (Sym, u64)>,
}

#[derive(Clone, Debug)]
enum Out {
    Accepted((Sym, TradeRec), u64),
    Entering((Sym, u64, TradeRec), u64),
    Outside(Sym, u64),
}

/// Deduplicates trades and tells which enter the window (see the module doc).
pub fn window<'s>(
    trades: StreamVec<'s, u64, (Stamped, u64)>,
    ends: StreamVec<'s, u64, u64>,
    config: Arc<Config>,
    stats: Arc<Stats>,
) -> Window<'s> {
    let g = Step::new(config.granularity_ms);
    let length = config.window_ms;
    let worker = trades.scope().index();
    // Ids of trades inside the window, with the timestamp at which they leave it.
    let mut inside = Inside::default();
    let out = sequence(
        trades,
        ends,
        Pipeline,
        "TradeWindow",
        |(_, t)| *t,
        move |time, mut records, _timers, out| {
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
                    inside.insert(key, leaves, time);
                    out.push(Out::Entering((sym, leaves, rec.clone()), time));
                } else {
                    out.push(Out::Outside(sym, time));
                }
                out.push(Out::Accepted((sym, rec), time));
            }
            Stats::add(&stats.processed, worker, processed);
            Stats::add(&stats.duplicates, worker, duplicates);
        },
        no_finish,
    );
    let (entering, accepted, outside) = split3(out, "WindowParts", |o| match o {
        Out::Entering(d, t) => Part3::First((d, t)),
        Out::Accepted(d, t) => Part3::Second((d, t)),
        Out::Outside(sym, t) => Part3::Third((sym, t)),
    });
    Window {
        accepted,
        entering,
        outside,
    }
}

/// Appends `value` to the vector under `key`, a new one made for exactly one value: a vector's
/// first push reserves room for four, and where trades are sparse most leaving timestamps hold
/// one symbol's bucket. (When the window stage kept its trades by leaving timestamp this way,
/// the 24 h window of the trade-heavy bench file peaked at 352 MiB instead of 481.)
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
///
/// An id whose trade has left (its time passed) counts as absent, and stays until its shard is
/// full: a shard about to grow first drops the ids that have left, and grows only if that
/// freed less than half of it, so each id is swept about once and a shard holds at most about
/// twice the ids inside the window. (Ids were removed as their trades left, which needed a list
/// of them by leaving time: about 60 bytes a trade.)
struct Inside {
    hasher: foldhash::fast::RandomState,
    shards: Vec<FoldMap<(Sym, TradeId), u64>>,
}

impl Default for Inside {
    fn default() -> Inside {
        Inside {
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..SHARDS).map(|_| FoldMap::default()).collect(),
        }
    }
}

impl Inside {
    fn shard(&mut self, key: &(Sym, TradeId)) -> &mut FoldMap<(Sym, TradeId), u64> {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        &mut self.shards[i]
    }

    /// When `key`'s trade leaves the window, if one was inside it at some time (the caller
    /// compares it with the current time).
    fn get(&mut self, key: &(Sym, TradeId)) -> Option<u64> {
        self.shard(key).get(key).copied()
    }

    /// Notes `key`'s trade as leaving at `leaves`, at `time`.
    fn insert(&mut self, key: (Sym, TradeId), leaves: u64, time: u64) {
        let shard = self.shard(&key);
        if shard.len() == shard.capacity() && !shard.contains_key(&key) {
            shard.retain(|_, leaves| *leaves > time);
            if shard.len() > shard.capacity() / 2 {
                shard.reserve(shard.capacity());
            }
        }
        shard.insert(key, leaves);
    }
}

/// What the ticker stage reads: the trades entering the window, the best prices of the
/// symbols' books (a collection), and the names of the symbols it publishes.
#[derive(Clone, Debug)]
pub enum TickerInput {
    /// A trade entering the window, and the timestamp at which it leaves it.
    Enter(Sym, u64, TradeRec),
    /// A trade of the symbol that never entered the window: it has a ticker from now on.
    Outside(Sym),
    /// A change of a book's raw best prices.
    Bbo(Sym, Bbo, isize),
    /// A symbol's names (the first ones seen are kept).
    Name(Sym, SymbolName),
}

/// The levels above the buckets, in ms of leaving time: those of 10 ms, 100 ms, 1 s, 1 min and
/// 1 h of 4 marks or more, and one of 10 s or 10 min first where 1 s or 1 min is under 4 marks.
/// A level's bucket then has at most 60 children: a first level's are its span over the
/// granularity, under 40 as the candidate below it is under 4 marks and at most 10 times
/// shorter (34 at marks of 3 ms, 40 just above 250 ms and 15 s); a higher level's 6, 10 or 60.
/// With marks over 15 min there is none, and the total folds the buckets, at most `window /
/// granularity + 1`. (With levels of only 100 ms, 1 min and 1 h a minute had 2,307 children at
/// marks of 26 ms, and one steady symbol took 8 times as long to replay: a review's. A level is a
/// lookup per trade, so 10 s and 10 min come only where they are needed.)
fn spans(granularity_ms: u64) -> Vec<u64> {
    let mut spans = Vec::new();
    for span in [10, 100, 1_000, 10_000, 60_000, 600_000, 3_600_000] {
        let second_choice = span == 10_000 || span == 600_000;
        if span >= 4 * granularity_ms && (spans.is_empty() || !second_choice) {
            spans.push(span);
        }
    }
    spans
}

/// Aggregates the window per symbol, in buckets of leaving timestamp and the levels above them
/// (see the module doc), as a [`sequence`] stage, and publishes the tickers whose aggregate or
/// best prices changed.
pub fn aggregate<'s>(
    input: StreamVec<'s, u64, (TickerInput, u64)>,
    ends: StreamVec<'s, u64, u64>,
    config: Arc<Config>,
    stats: Arc<Stats>,
) -> StreamVec<'s, u64, (Change, u64)> {
    let spans = spans(config.granularity_ms);
    let mut symbols: FoldMap<Sym, Hierarchy> = FoldMap::default();
    // The symbols with a bucket leaving at each timestamp (the stage holds a timer for each).
    let mut leaving: BTreeMap<u64, Vec<Sym>> = BTreeMap::new();
    // The trades inside the window, over this worker's symbols, for the metrics gauge.
    let mut held: usize = 0;
    let mut share = Share::of(input.scope().index());
    let mut names = Names::default();
    let mut bbo: FoldMap<Sym, Bbo> = FoldMap::default();
    // The symbols that have had a trade (they have a ticker from then on), with their ticker's
    // result once made.
    let mut traded: FoldMap<Sym, Option<NamedResult>> = FoldMap::default();
    let mut rendering = Rendering::default();
    sequence(
        input,
        ends,
        Pipeline,
        "Ticker",
        |(_, t)| *t,
        move |time, mut updates, timers, out: &mut Vec<(Change, u64)>| {
            // Names and retractions of best prices first, so that `-old +new` leaves `new`.
            updates.sort_by_key(|(u, _)| match u {
                TickerInput::Name(..) => 0,
                TickerInput::Bbo(_, _, diff) if *diff < 0 => 1,
                _ => 2,
            });
            // A trade entering is merged upwards at once; a bucket leaving marks its parents,
            // refolded after all of the timestamp's updates.
            let mut touched: Vec<Sym> = Vec::new();
            // The tickers that changed: their best prices did (a stage emits a change only when
            // the value changes), or their aggregate did.
            let mut changed: Vec<Sym> = Vec::new();
            let due = leaving.split_off(&(time + 1));
            for sym in std::mem::replace(&mut leaving, due).into_values().flatten() {
                if let Some(h) = symbols.get_mut(&sym) {
                    h.touch(sym, &mut touched);
                    held -= h.leave(&spans, time);
                }
            }
            for (update, _) in updates {
                let (sym, leaves, rec) = match update {
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
                    TickerInput::Enter(sym, leaves, rec) => (sym, leaves, rec),
                };
                let h = symbols
                    .entry(sym)
                    .or_insert_with(|| Hierarchy::new(spans.len()));
                h.touch(sym, &mut touched);
                if h.enter(&spans, leaves, &rec) {
                    push_one(&mut leaving, leaves, sym);
                    timers.schedule(leaves);
                }
                held += 1;
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
            share.report(&stats.state.window_trades, held);
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
                rendering.push(result, None, Some(&view), time);
            }
            rendering.finish(|change| out.push((change, time)));
            // Sorted here, on every worker, so that gathering merges sorted runs.
            out[start..].sort_unstable_by(|a, b| a.0.order(&b.0));
        },
        no_finish,
    )
}

/// One symbol's window: the aggregate of its trades by the timestamp at which they leave (its
/// buckets), the aggregate of every bucket of leaving time at every level above them, and the
/// total.
///
/// Depth 0 is the buckets, depth `k` (from 1) the level `levels[k - 1]`, whose buckets span
/// `spans[k - 1]` ms of leaving time; the children of one are the buckets of depth `k - 1` inside
/// it.
///
/// Invariant (between timestamps): `buckets` holds, for every leaving timestamp of a trade in
/// the window, the aggregate of exactly those trades; `levels[k - 1]` holds an entry for every
/// bucket of depth `k` with a child: the aggregate of its trades where it has two children or
/// more, `None` where it has one (the aggregate is its child's: where trades are sparse most
/// buckets hold one, and a copy of it at every level doubled the memory of a trade); and
/// `total` is the aggregate of all of them. During a timestamp, `stale[k - 1]` lists the
/// buckets of depth `k` that a leaving bucket left out of date.
struct Hierarchy {
    buckets: BTreeMap<u64, Bucket>,
    levels: Vec<BTreeMap<u64, Option<Box<Agg>>>>,
    stale: Vec<BTreeSet<u64>>,
    total: Option<Agg>,
    total_stale: bool,
    /// The total before the current timestamp, once the symbol was touched in it.
    before: Option<Option<Agg>>,
}

impl Hierarchy {
    fn new(depth: usize) -> Hierarchy {
        Hierarchy {
            buckets: BTreeMap::new(),
            levels: vec![BTreeMap::new(); depth],
            stale: vec![BTreeSet::new(); depth],
            total: None,
            total_stale: false,
            before: None,
        }
    }

    /// Notes the total before the current timestamp's first change, and `sym` as touched.
    fn touch(&mut self, sym: Sym, touched: &mut Vec<Sym>) {
        if self.before.is_none() {
            self.before = Some(self.total.clone());
            touched.push(sym);
        }
    }

    /// Adds a trade leaving at `leaves` to its bucket, the buckets above it and the total (a
    /// bucket marked for refolding is refolded anyway, this trade included). True if its bucket
    /// is new.
    fn enter(&mut self, spans: &[u64], leaves: u64, rec: &TradeRec) -> bool {
        let one = Agg::of(rec);
        let new = match self.buckets.entry(leaves) {
            Entry::Occupied(mut bucket) => {
                bucket.get_mut().add(&one);
                false
            }
            Entry::Vacant(bucket) => {
                bucket.insert(Bucket::One(rec.clone()));
                true
            }
        };
        // Whether the bucket below, at the depth before, is new: a parent of one child that
        // gets a second one gets an aggregate.
        let mut new_child = new;
        for k in 1..=self.levels.len() {
            let key = leaves / spans[k - 1];
            let (below, level) = self.levels.split_at_mut(k - 1);
            let tree = Levels {
                buckets: &self.buckets,
                levels: below,
                spans,
            };
            new_child = match level[0].entry(key) {
                Entry::Vacant(part) => {
                    part.insert(None);
                    true
                }
                Entry::Occupied(mut part) => {
                    match part.get_mut() {
                        Some(agg) => agg.merge(&one),
                        None if new_child => {
                            let mut acc = None;
                            tree.merge_children(k, key, &mut acc);
                            *part.get_mut() = acc.map(Box::new);
                        }
                        // Its one child took the trade.
                        None => {}
                    }
                    false
                }
            };
        }
        match self.total.as_mut() {
            Some(total) => total.merge(&one),
            None => self.total = Some(one),
        }
        new
    }

    /// Drops the buckets leaving at or before `time`, marking the buckets above them for
    /// refolding. Returns how many trades left.
    fn leave(&mut self, spans: &[u64], time: u64) -> usize {
        let mut left = 0;
        while let Some(entry) = self.buckets.first_entry().filter(|e| *e.key() <= time) {
            let leaves = *entry.key();
            left += entry.remove().count() as usize;
            for (stale, span) in self.stale.iter_mut().zip(spans) {
                stale.insert(leaves / span);
            }
            self.total_stale = true;
        }
        left
    }

    /// Refolds the stale buckets of each level from their children, finest first, then the
    /// total.
    fn refold(&mut self, spans: &[u64]) {
        for k in 1..=self.levels.len() {
            for b in std::mem::take(&mut self.stale[k - 1]) {
                let (below, level) = self.levels.split_at_mut(k - 1);
                let tree = Levels {
                    buckets: &self.buckets,
                    levels: below,
                    spans,
                };
                match tree.children(k, b) {
                    0 => {
                        level[0].remove(&b);
                    }
                    1 => {
                        level[0].insert(b, None);
                    }
                    _ => {
                        let mut acc = None;
                        tree.merge_children(k, b, &mut acc);
                        level[0].insert(b, acc.map(Box::new));
                    }
                }
            }
        }
        if std::mem::take(&mut self.total_stale) {
            let tree = Levels {
                buckets: &self.buckets,
                levels: &self.levels,
                spans,
            };
            let mut acc = None;
            tree.merge_depth(self.levels.len(), .., &mut acc);
            self.total = acc;
        }
    }
}

/// A symbol's buckets and its levels up to some depth, read.
struct Levels<'a> {
    buckets: &'a BTreeMap<u64, Bucket>,
    levels: &'a [BTreeMap<u64, Option<Box<Agg>>>],
    spans: &'a [u64],
}

impl Levels<'_> {
    /// The leaving times, or level keys, of the children of bucket `b` of depth `k` (>= 1).
    fn child_range(&self, k: usize, b: u64) -> std::ops::Range<u64> {
        let per = match k {
            1 => self.spans[0],
            _ => self.spans[k - 1] / self.spans[k - 2],
        };
        b * per..(b + 1) * per
    }

    /// How many children bucket `b` of depth `k` has: 0, 1, or 2 for more.
    fn children(&self, k: usize, b: u64) -> usize {
        let range = self.child_range(k, b);
        match k {
            1 => self.buckets.range(range).take(2).count(),
            _ => self.levels[k - 2].range(range).take(2).count(),
        }
    }

    /// Merges the aggregates of the children of bucket `b` of depth `k` (>= 1) into `acc`.
    fn merge_children(&self, k: usize, b: u64, acc: &mut Option<Agg>) {
        self.merge_depth(k - 1, self.child_range(k, b), acc);
    }

    /// Merges the aggregates of the buckets of depth `depth` in `range`, in order, into `acc`.
    fn merge_depth(&self, depth: usize, range: impl RangeBounds<u64>, acc: &mut Option<Agg>) {
        if depth == 0 {
            (self.buckets.range(range)).for_each(|(_, bucket)| bucket.merge_into(acc));
            return;
        }
        for (&b, part) in self.levels[depth - 1].range(range) {
            match part {
                Some(agg) => agg.merge_into(acc),
                None => self.merge_children(depth, b, acc),
            }
        }
    }
}

/// The trades of a symbol that leave the window at one timestamp: one trade as it came (most
/// buckets where trades are sparse: 80 bytes, where an aggregate is 200), or their aggregate.
enum Bucket {
    One(TradeRec),
    Many(Box<Agg>),
}

impl Bucket {
    /// Merges a trade read after this bucket's.
    fn add(&mut self, one: &Agg) {
        match self {
            Bucket::One(rec) => {
                let mut agg = Agg::of(rec);
                agg.merge(one);
                *self = Bucket::Many(Box::new(agg));
            }
            Bucket::Many(agg) => agg.merge(one),
        }
    }

    fn count(&self) -> u64 {
        match self {
            Bucket::One(_) => 1,
            Bucket::Many(agg) => agg.count,
        }
    }

    /// Merges this bucket's aggregate into `acc`, or makes `acc` of it.
    fn merge_into(&self, acc: &mut Option<Agg>) {
        match self {
            Bucket::One(rec) => Agg::of(rec).merge_into(acc),
            Bucket::Many(agg) => agg.merge_into(acc),
        }
    }
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

    /// Each level nests in the next, and no bucket of a level has more than 60 children, at
    /// any granularity (the first level's children are marks).
    #[test]
    fn levels_nest_and_hold_at_most_60_children() {
        assert_eq!(spans(1), [10, 100, 1_000, 60_000, 3_600_000]);
        assert_eq!(spans(100), [1_000, 60_000, 3_600_000]);
        assert_eq!(spans(300), [10_000, 60_000, 3_600_000]);
        assert_eq!(spans(20_000), [600_000, 3_600_000]);
        assert!(spans(900_001).is_empty());
        let granularities = (1..5_000).chain((5_000..1_000_000).step_by(997));
        for g in granularities {
            let spans = spans(g);
            if let Some(first) = spans.first() {
                assert!(first.div_ceil(g) <= 60, "granularity {g}: {spans:?}");
            }
            for pair in spans.windows(2) {
                assert!(
                    pair[1] % pair[0] == 0 && pair[1] / pair[0] <= 60,
                    "{g}: {spans:?}"
                );
            }
        }
    }

    /// Ids of trades that left are swept when their shard fills: with 100 inside the window at
    /// any time, 100,000 ids come and go and the shards stay small (without the sweep they hold
    /// every id, about 114,000 places). An id counts as inside until it leaves, whether swept
    /// or not.
    #[test]
    fn ids_that_left_are_swept_as_their_shard_fills() {
        let mut inside = Inside::default();
        let key = |i: u64| (Sym(i % 7), TradeId::Num(i));
        for time in 0..100_000 {
            inside.insert(key(time), time + 100, time);
        }
        let places: usize = inside.shards.iter().map(|s| s.capacity()).sum();
        assert!(places < 2_000, "{places} places for 100 ids inside");
        let now = 99_999;
        let inside_now = (0..100_000)
            .filter(|&i| inside.get(&key(i)).is_some_and(|leaves| leaves > now))
            .count();
        assert_eq!(inside_now, 100);
    }
}
