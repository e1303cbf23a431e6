//! Orderbooks: raw books from snapshots and deltas, grouped and cut to depth at every resolution.
//!
//! Input: book and snapshot events of the symbols this worker owns (exchanged by symbol), each at
//! its timestamp with its read position.
//!
//! [`orderbooks`] is one [`sequence`] stage ("Books") that owns every book of its symbols. Per
//! complete timestamp it applies each symbol's events in read order with the sequence rules of
//! CONTRACT section 1 (duplicate dropped, gap -> stale until the next snapshot, no snapshot yet ->
//! stale), then, once per symbol that changed:
//! 1. adds each changed raw level's size difference (`new - old`) to its group at every
//!    resolution (bids floor, asks ceil to `resolution x tick`, [`Price::group`]); a group whose
//!    sum falls to zero is removed. A change of the inferred tick regroups the whole book;
//! 2. for every resolution and side whose best `depth` groups may have moved (a changed group
//!    ranks inside them, or fewer than `depth` are shown), compares the best `depth` with what it
//!    last emitted, and when they differ retracts the old and inserts the new;
//! 3. emits the book's sequence state and raw best prices when they changed.
//!
//! Output: three differential collections, each holding at most one value per key at any time:
//! - `sides`: `((sym, resolution, side), levels)`, the best `depth` groups, best first;
//! - `meta`: `(sym, BookMeta { seq, stale })`, one record per book;
//! - `bbo`: `(sym, Bbo)`, the raw best bid and ask, one record per book.
//!
//! Why one stage ([design note](../../doc/design/20261204_books_in_one_stage.md)): the grouped
//! levels were a differential collection arranged by side, and book tops an operator over that
//! arrangement. The arrangement's batching and merging, the operator and the groups' records
//! between the stages were over half of a book update's cost, and only this stage ever wrote the
//! groups. Work per update is now a few map updates per changed level and resolution and at most
//! `depth` comparisons per side that may have moved: it grows with neither the book nor the
//! number of timestamps.
//!
//! Invariants: a group's size is the exact sum of the sizes of the raw levels in it, and only
//! groups with a positive size are kept; what `sides` holds for a side equals the best `depth`
//! groups of that side at the end of every complete timestamp (absent when the side is empty);
//! the tick of a symbol is the configured one or `10^-s`, `s` the most fractional digits among
//! prices of its applied book events.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use differential_dataflow::difference::Semigroup;
use differential_dataflow::{AsCollection, VecCollection};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::StreamVec;

use crate::config::Config;
use crate::event::{Body, Level};
use crate::sequence::{no_finish, sequence, Timers};
use crate::source::Stamped;
use crate::split::{split3, Part3};
use crate::stats::{Share, Stats};
use crate::types::{FoldMap, Price, Qty, Side, Sym};

/// Sequence state of a book.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BookMeta {
    /// Last applied sequence number.
    pub seq: Option<u64>,
    /// No snapshot yet, or a gap since the last one.
    pub stale: bool,
}

/// Raw best bid and ask prices.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Bbo {
    /// Highest bid, if any.
    pub bid: Option<Price>,
    /// Lowest ask, if any.
    pub ask: Option<Price>,
}

/// The best groups of one side, best first.
pub type Levels = Vec<(Price, Qty)>;

/// Key of a grouped book side.
pub type SideKey = (Sym, u32, Side);

/// The collections the orderbook stage produces.
pub struct Books<'s> {
    /// Sequence state per book.
    pub meta: VecCollection<'s, u64, (Sym, BookMeta), isize>,
    /// Raw best prices per book.
    pub bbo: VecCollection<'s, u64, (Sym, Bbo), isize>,
    /// Top `depth` groups per symbol, resolution and side.
    pub sides: VecCollection<'s, u64, (SideKey, Levels), isize>,
}

#[derive(Clone, Debug)]
enum Update {
    Side((SideKey, Levels), u64, isize),
    Meta((Sym, BookMeta), u64, isize),
    Bbo((Sym, Bbo), u64, isize),
}

/// One side of a book grouped at one resolution.
#[derive(Default)]
struct GroupedSide {
    /// Every group with a positive size, by group price.
    groups: BTreeMap<Price, Qty>,
    /// The best `depth` groups as last emitted (empty: nothing emitted).
    shown: Levels,
    /// A group that may rank among the best `depth` changed in the current timestamp.
    moved: bool,
}

impl GroupedSide {
    /// Adds `diff` to the size of `group` (removing it at zero), noting whether the best `depth`
    /// may have moved: they may unless `depth` groups are shown and `group` ranks below them all.
    fn add(&mut self, side: Side, group: Price, diff: Qty, depth: usize) {
        match self.groups.entry(group) {
            std::collections::btree_map::Entry::Occupied(mut e) => {
                e.get_mut().plus_equals(&diff);
                if e.get().value() <= Decimal::ZERO {
                    e.remove();
                }
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                if diff.value() > Decimal::ZERO {
                    e.insert(diff);
                }
            }
        }
        if !self.moved {
            let below = |&(worst, _): &(Price, Qty)| match side {
                Side::Bid => group < worst,
                Side::Ask => group > worst,
            };
            self.moved = self.shown.len() < depth || !self.shown.last().is_some_and(below);
        }
    }

    /// The best `depth` groups, best first.
    fn best(&self, side: Side, depth: usize) -> impl Iterator<Item = (Price, Qty)> + '_ {
        let (asks, bids) = match side {
            Side::Ask => (Some(self.groups.iter()), None),
            Side::Bid => (None, Some(self.groups.iter().rev())),
        };
        let best = asks.into_iter().flatten().chain(bids.into_iter().flatten());
        best.take(depth).map(|(&price, &size)| (price, size))
    }

    /// Emits the change of the best `depth` groups, if they moved and differ from the last
    /// emitted ones.
    fn emit(&mut self, key: SideKey, depth: usize, time: u64, out: &mut Vec<Update>) {
        if !std::mem::take(&mut self.moved) {
            return;
        }
        if self.best(key.2, depth).eq(self.shown.iter().copied()) {
            return;
        }
        let top: Levels = self.best(key.2, depth).collect();
        let before = std::mem::replace(&mut self.shown, top);
        if !before.is_empty() {
            out.push(Update::Side((key, before), time, -1));
        }
        if !self.shown.is_empty() {
            out.push(Update::Side((key, self.shown.clone()), time, 1));
        }
    }
}

/// A book grouped under one tick, at every resolution (in the configured order).
struct Grouped {
    /// The tick the groups were built under.
    tick: Price,
    /// `resolution x tick`, per resolution.
    steps: Vec<Price>,
    /// Bids and asks, per resolution.
    sides: Vec<[GroupedSide; 2]>,
}

impl Grouped {
    fn new(tick: Price, resolutions: &[u32]) -> Grouped {
        let steps = resolutions
            .iter()
            .map(|&r| Price::from_decimal(tick.value() * Decimal::from(r)))
            .collect();
        Grouped {
            tick,
            steps,
            sides: resolutions.iter().map(|_| Default::default()).collect(),
        }
    }

    /// Adds each raw level's size difference to its group at every resolution. `diffs` are in
    /// book order ([`BookPrice`]), so the levels of one group come one after another: a run of
    /// them is summed first and updates its group once (at coarse resolutions most changed
    /// levels of a timestamp share a few groups).
    fn add(&mut self, diffs: &[(BookPrice, Qty)], depth: usize) {
        for (&step, sides) in self.steps.iter().zip(&mut self.sides) {
            let mut run: Option<(Side, Price, Qty)> = None;
            let mut end = |run: Option<(Side, Price, Qty)>| {
                if let Some((side, group, sum)) = run.filter(|r| !r.2.is_zero_qty()) {
                    sides[usize::from(side == Side::Ask)].add(side, group, sum, depth);
                }
            };
            for &(BookPrice { side, price }, diff) in diffs {
                let group = price.group(step, side);
                match &mut run {
                    Some((s, g, sum)) if *s == side && *g == group => sum.plus_equals(&diff),
                    _ => end(run.replace((side, group, diff))),
                }
            }
            end(run);
        }
    }
}

#[derive(Default)]
struct Book {
    bids: BTreeMap<Price, Qty>,
    asks: BTreeMap<Price, Qty>,
    seq: Option<u64>,
    /// The last snapshot carried a sequence number: the sequence rules apply.
    synced: bool,
    has_snapshot: bool,
    gap: bool,
    digits: Option<u32>,
    /// The levels set in the current timestamp, each with its size before and after, in the
    /// order set (the first entry of a level has its size at the start of the timestamp, the
    /// last its size now).
    touched: Vec<(BookPrice, Qty, Qty)>,
    /// State at the start of the current timestamp, if the book changed in it.
    start: Option<(Option<BookMeta>, Bbo)>,
    /// The groups at every resolution, once the book has a tick.
    grouped: Option<Grouped>,
}

impl Book {
    fn meta(&self) -> BookMeta {
        BookMeta {
            seq: self.seq,
            stale: !self.has_snapshot || self.gap,
        }
    }

    fn bbo(&self) -> Bbo {
        Bbo {
            bid: self.bids.keys().next_back().copied(),
            ask: self.asks.keys().next().copied(),
        }
    }

    fn tick(&self, configured: Option<Price>) -> Option<Price> {
        configured.or_else(|| self.digits.map(|d| Price::from_decimal(Decimal::new(1, d))))
    }

    fn side_mut(&mut self, side: Side) -> &mut BTreeMap<Price, Qty> {
        match side {
            Side::Bid => &mut self.bids,
            Side::Ask => &mut self.asks,
        }
    }

    fn begin(&mut self, exists: bool) {
        if self.start.is_none() {
            let meta = exists.then(|| self.meta());
            self.start = Some((meta, self.bbo()));
        }
    }

    fn set(&mut self, side: Side, price: Price, qty: Qty) {
        let book = self.side_mut(side);
        let old = if qty.is_zero_qty() {
            book.remove(&price)
        } else {
            book.insert(price, qty)
        };
        self.touched
            .push((BookPrice { side, price }, old.unwrap_or(Qty::ZERO), qty));
    }

    fn apply(&mut self, side: Side, levels: &[Level]) {
        for &(price, qty) in levels {
            self.digits = Some(self.digits.unwrap_or(0).max(price.fraction_digits()));
            self.set(side, price, qty);
        }
    }

    /// Brings the groups up to date with the current timestamp's changes and emits what changed
    /// (best groups, sequence state, best prices); resets the per-timestamp bookkeeping.
    fn flush(
        &mut self,
        sym: Sym,
        time: u64,
        configured: Option<Price>,
        config: &Config,
        out: &mut Vec<Update>,
    ) {
        let Some((meta0, bbo0)) = self.start.take() else {
            return;
        };
        let depth = config.depth;
        // One entry per level: its size at the start of the timestamp and now.
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_by_key(|&(level, _, _)| level);
        touched.dedup_by(|later, first| {
            let same = later.0 == first.0;
            if same {
                first.2 = later.2;
            }
            same
        });
        let tick = self.tick(configured);
        match (&mut self.grouped, tick) {
            (Some(grouped), Some(tick)) if grouped.tick == tick => {
                let diffs: Vec<(BookPrice, Qty)> = touched
                    .iter()
                    .filter_map(|&(level, old, new)| {
                        let diff = new.value() - old.value();
                        (!diff.is_zero()).then(|| (level, Qty::from_decimal(diff)))
                    })
                    .collect();
                grouped.add(&diffs, depth);
            }
            (_, None) => {}
            (old, Some(tick)) => {
                // The first tick, or a finer one (precision only grows): the whole book is
                // grouped again, and every side is compared with what it showed under the old.
                let mut grouped = Grouped::new(tick, &config.resolutions);
                if let Some(old) = old.take() {
                    for (new, old) in grouped.sides.iter_mut().zip(old.sides) {
                        for (new, old) in new.iter_mut().zip(old) {
                            new.shown = old.shown;
                        }
                    }
                }
                let bids = self
                    .bids
                    .iter()
                    .rev()
                    .map(|(&price, &size)| (Side::Bid, price, size));
                let asks = self
                    .asks
                    .iter()
                    .map(|(&price, &size)| (Side::Ask, price, size));
                let levels: Vec<(BookPrice, Qty)> = bids
                    .chain(asks)
                    .map(|(side, price, size)| (BookPrice { side, price }, size))
                    .collect();
                grouped.add(&levels, depth);
                for sides in &mut grouped.sides {
                    for side in sides {
                        side.moved = true;
                    }
                }
                *old = Some(grouped);
            }
        }
        touched.clear();
        self.touched = touched;
        if let Some(grouped) = &mut self.grouped {
            for (&resolution, sides) in config.resolutions.iter().zip(&mut grouped.sides) {
                for (side, grouped) in [Side::Bid, Side::Ask].into_iter().zip(sides) {
                    grouped.emit((sym, resolution, side), depth, time, out);
                }
            }
        }
        let meta = self.meta();
        if meta0.as_ref() != Some(&meta) {
            if let Some(m0) = meta0 {
                out.push(Update::Meta((sym, m0), time, -1));
            }
            out.push(Update::Meta((sym, meta), time, 1));
        }
        let bbo = self.bbo();
        if bbo != bbo0 {
            out.push(Update::Bbo((sym, bbo0), time, -1));
            out.push(Update::Bbo((sym, bbo), time, 1));
        }
    }
}

/// The whole orderbook stage (see the module doc): applies book events in order and emits each
/// book's best groups per resolution and side, its sequence state and its best prices.
pub fn orderbooks<'s>(
    events: StreamVec<'s, u64, (Stamped, u64)>,
    ends: StreamVec<'s, u64, u64>,
    config: Arc<Config>,
    stats: Arc<Stats>,
) -> Books<'s> {
    let mut books: FoldMap<Sym, Book> = FoldMap::default();
    let mut share = Share::default();
    let updates = sequence(
        events,
        ends,
        Pipeline,
        "Books",
        |(_, t)| *t,
        move |time, mut records, _timers: &mut Timers, out| {
            records.sort_by_key(|r| r.0.pos);
            let mut dirty: Vec<Sym> = Vec::new();
            // Counted here, added to the shared counters once per timestamp.
            let (mut processed, mut duplicates) = (0, 0);
            for (stamped, _) in records {
                let event = stamped.event;
                let exists = books.contains_key(&event.sym);
                let book = books.entry(event.sym).or_default();
                match &event.body {
                    Body::Snapshot { bids, asks, seq } => {
                        book.begin(exists);
                        for side in [Side::Bid, Side::Ask] {
                            let old: Vec<Price> = book.side_mut(side).keys().copied().collect();
                            for price in old {
                                book.set(side, price, Qty::ZERO);
                            }
                        }
                        book.apply(Side::Bid, bids);
                        book.apply(Side::Ask, asks);
                        book.seq = *seq;
                        book.synced = seq.is_some();
                        book.has_snapshot = true;
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
                            if seq.is_some_and(|s| s <= last) {
                                duplicates += 1;
                                if !exists {
                                    books.remove(&event.sym);
                                }
                                continue;
                            }
                            let in_sequence = match prev_seq {
                                Some(p) => *p <= last,
                                None => *seq == Some(last + 1),
                            };
                            book.gap |= !in_sequence;
                        }
                        book.begin(exists);
                        book.apply(Side::Bid, bids);
                        book.apply(Side::Ask, asks);
                        if seq.is_some() {
                            book.seq = *seq;
                        }
                    }
                    Body::Trade(_) => continue,
                }
                processed += 1;
                dirty.push(event.sym);
            }
            Stats::add(&stats.processed, processed);
            Stats::add(&stats.duplicates, duplicates);
            dirty.sort();
            dirty.dedup();
            for sym in dirty {
                let configured = config.tick_sizes.get(&sym).copied();
                if let Some(book) = books.get_mut(&sym) {
                    book.flush(sym, time, configured, &config, out);
                }
            }
            let levels = books.values().map(|b| b.bids.len() + b.asks.len()).sum();
            share.report(&stats.state.book_levels, levels);
        },
        no_finish,
    );
    let (sides, meta, bbo) = split3(updates, "BookParts", |u| match u {
        Update::Side(d, t, r) => Part3::First((d, t, r)),
        Update::Meta(d, t, r) => Part3::Second((d, t, r)),
        Update::Bbo(d, t, r) => Part3::Third((d, t, r)),
    });
    Books {
        meta: meta.as_collection(),
        bbo: bbo.as_collection(),
        sides: sides.as_collection(),
    }
}

/// A price in book order: on both sides the best comes first (bids descending, asks ascending).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BookPrice {
    /// The side, which decides the order.
    pub side: Side,
    /// The group price.
    pub price: Price,
}

impl Ord for BookPrice {
    fn cmp(&self, other: &Self) -> Ordering {
        self.side.cmp(&other.side).then_with(|| match self.side {
            Side::Bid => other.price.cmp(&self.price),
            Side::Ask => self.price.cmp(&other.price),
        })
    }
}

impl PartialOrd for BookPrice {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: enough randomness for a seeded script, no dependency.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    /// A book driven through random timestamps of level changes on both sides (now and then a
    /// whole side cleared, its best levels deleted, or a price with more fractional digits, which
    /// makes the inferred tick finer and regroups the book): after every timestamp, the sides the
    /// emitted changes add up to equal the best `depth` groups computed from scratch from the raw
    /// levels, and nothing is emitted for a side whose best groups did not change.
    #[test]
    fn emitted_tops_equal_the_best_groups_after_every_timestamp() {
        let config = Config {
            depth: 3,
            resolutions: vec![1, 3, 10],
            ..Config::default()
        };
        let sym = Sym(1);
        for seed in 1..=40u64 {
            let mut rng = Rng(seed);
            let mut book = Book::default();
            let mut acc: BTreeMap<(SideKey, Levels), isize> = BTreeMap::new();
            let mut digits = 0;
            for time in 0..300u64 {
                if rng.below(100) == 0 {
                    digits += 1;
                }
                book.begin(true);
                for side in [Side::Bid, Side::Ask] {
                    let prices: Vec<Price> = match side {
                        Side::Bid => book.bids.keys().rev().copied().collect(),
                        Side::Ask => book.asks.keys().copied().collect(),
                    };
                    let price = |rng: &mut Rng| {
                        let p = Decimal::new(100 + rng.below(60) as i64, 0);
                        let scale = digits.min(4);
                        let fraction = Decimal::new(rng.below(10u64.pow(scale)) as i64, scale);
                        Price::from_decimal(p + fraction)
                    };
                    let size = |q: u64| Qty::from_decimal(Decimal::from(q));
                    let sets: Vec<(Price, Qty)> = match rng.below(20) {
                        0 => prices.iter().map(|&p| (p, size(0))).collect(),
                        1 => (0..30)
                            .map(|_| (price(&mut rng), size(1 + rng.below(4))))
                            .collect(),
                        2 => prices.iter().take(5).map(|&p| (p, size(0))).collect(),
                        _ => (0..rng.below(6))
                            .map(|_| (price(&mut rng), size(rng.below(4))))
                            .collect(),
                    };
                    book.apply(side, &sets);
                }
                let mut out = Vec::new();
                book.flush(sym, time, None, &config, &mut out);
                let mut emitted: BTreeMap<SideKey, Vec<(Levels, isize)>> = BTreeMap::new();
                for update in out {
                    if let Update::Side((key, levels), at, diff) = update {
                        assert_eq!(at, time);
                        emitted.entry(key).or_default().push((levels.clone(), diff));
                        *acc.entry((key, levels)).or_default() += diff;
                    }
                }
                // A side is emitted only when its best groups changed: at most one retraction
                // and one insertion, of different values.
                for (key, changes) in &emitted {
                    let differ = match &changes[..] {
                        [(old, -1), (new, 1)] => old != new,
                        [(_, -1)] | [(_, 1)] => true,
                        _ => false,
                    };
                    assert!(differ, "seed {seed}, time {time}, {key:?}: {changes:?}");
                }
                acc.retain(|_, d| *d != 0);
                let tick = book.tick(None);
                let mut expected = BTreeMap::new();
                for &r in &config.resolutions {
                    let Some(tick) = tick else { break };
                    let step = tick.value() * Decimal::from(r);
                    for (side, raw) in [(Side::Bid, &book.bids), (Side::Ask, &book.asks)] {
                        let mut groups: BTreeMap<Decimal, Decimal> = BTreeMap::new();
                        for (p, q) in raw {
                            let g = match side {
                                Side::Bid => (p.value() / step).floor() * step,
                                Side::Ask => (p.value() / step).ceil() * step,
                            };
                            *groups.entry(g.normalize()).or_default() += q.value();
                        }
                        let best: Vec<(Decimal, Decimal)> = match side {
                            Side::Bid => groups.into_iter().rev().take(config.depth).collect(),
                            Side::Ask => groups.into_iter().take(config.depth).collect(),
                        };
                        if !best.is_empty() {
                            let levels = best
                                .into_iter()
                                .map(|(p, q)| (Price::from_decimal(p), Qty::from_decimal(q)))
                                .collect();
                            expected.insert(((sym, r, side), levels), 1);
                        }
                    }
                }
                assert_eq!(acc, expected, "seed {seed}, time {time}");
            }
        }
    }
}
