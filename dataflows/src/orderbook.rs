//! Orderbooks: raw books from snapshots and deltas, grouped and cut to depth at every resolution.
//!
//! Input: book and snapshot events of the symbols this worker owns (exchanged by symbol), each at
//! its timestamp with its read position.
//!
//! Stages:
//! 1. [`raw_books`], a [`sequence`] stage, applies each timestamp's events per symbol in read
//!    order with the sequence rules of CONTRACT section 1 (duplicate dropped, gap -> stale until the
//!    next snapshot, no snapshot yet -> stale) and emits three collections:
//!    - `levels`: `LevelKey { sym, side, price, tick }` with the level's size as the *difference*.
//!      A size change is one update `new - old`; a tick change re-emits the book under the new tick.
//!      A symbol's changed levels are emitted together, in book order (after a tick change, the
//!      book under each tick side by side in price order: grouping is then right, in more updates);
//!    - `meta`: `(sym, BookMeta { seq, stale })`, one record per book;
//!    - `bbo`: `(sym, Bbo)`, the raw best bid and ask, one record per book.
//! 2. [`group_levels`]: each level mapped to `(sym, resolution, side)` and its group price (bids
//!    floor, asks ceil to `resolution x tick`) in book order ([`BookPrice`]: best first on both
//!    sides). Sizes of a group add up by consolidation (a timestamp's run of levels in one group
//!    already summed here).
//! 3. [`top_levels`]: arranges the groups by `(sym, resolution, side)`, exchanged by symbol as the
//!    events were (a symbol's groups never leave its worker); the best `depth` of each
//!    side are a prefix of its groups there, which an operator keeps up to date from the
//!    arrangement's batches and reads again from the arrangement when deletions exhaust it.
//!
//! Invariants: every level in `levels` has a positive accumulated size; the tick of a symbol is the
//! configured one or `10^-s`, `s` the most fractional digits among prices of its applied book events.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use differential_dataflow::difference::Semigroup;
use differential_dataflow::operators::arrange::arrangement::arrange_core;
use differential_dataflow::trace::cursor::cursor_list;
use differential_dataflow::trace::implementations::chunker::ContainerChunker;
use differential_dataflow::trace::implementations::{ValBatcher, ValBuilder, ValSpine};
use differential_dataflow::trace::{BatchReader, Cursor, TraceReader};
use differential_dataflow::{AsCollection, VecCollection};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Operator;
use timely::dataflow::StreamVec;
use timely::progress::Antichain;

use crate::config::Config;
use crate::event::{Body, Level};
use crate::sequence::{no_finish, sequence, Timers};
use crate::source::Stamped;
use crate::split::{split3, Part3};
use crate::stats::{Share, Stats};
use crate::types::{FoldMap, Price, Qty, Side, Sym};

/// A raw level of a book, under the tick in force.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LevelKey {
    /// Symbol.
    pub sym: Sym,
    /// Side.
    pub side: Side,
    /// Raw price.
    pub price: Price,
    /// The symbol's tick when emitted.
    pub tick: Price,
}

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
    /// Raw levels, size as difference.
    pub levels: VecCollection<'s, u64, LevelKey, Qty>,
    /// Sequence state per book.
    pub meta: VecCollection<'s, u64, (Sym, BookMeta), isize>,
    /// Raw best prices per book.
    pub bbo: VecCollection<'s, u64, (Sym, Bbo), isize>,
    /// Top `depth` groups per symbol, resolution and side.
    pub sides: VecCollection<'s, u64, (SideKey, Levels), isize>,
}

#[derive(Clone, Debug)]
enum Update {
    Level(LevelKey, u64, Qty),
    Meta((Sym, BookMeta), u64, isize),
    Bbo((Sym, Bbo), u64, isize),
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
    start: Option<(Option<BookMeta>, Bbo, Option<Price>)>,
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

    fn begin(&mut self, exists: bool, configured: Option<Price>) {
        if self.start.is_none() {
            let meta = exists.then(|| self.meta());
            self.start = Some((meta, self.bbo(), self.tick(configured)));
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

    /// Emits the changes of the current timestamp and resets the per-timestamp bookkeeping.
    fn flush(&mut self, sym: Sym, time: u64, configured: Option<Price>, out: &mut Vec<Update>) {
        let Some((meta0, bbo0, tick0)) = self.start.take() else {
            return;
        };
        // In book order (bids best first, then asks best first): grouping sums runs and emits
        // them in the arrangement's order.
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_by_key(|&(level, _, _)| level);
        // One entry per level: its size at the start of the timestamp and now.
        touched.dedup_by(|later, first| {
            let same = later.0 == first.0;
            if same {
                first.2 = later.2;
            }
            same
        });
        let tick = self.tick(configured);
        let level = |side, price, tick, diff| {
            Update::Level(
                LevelKey {
                    sym,
                    side,
                    price,
                    tick,
                },
                time,
                diff,
            )
        };
        if tick == tick0 {
            if let Some(tick) = tick {
                for &(BookPrice { side, price }, old, new) in &touched {
                    let diff = new.value() - old.value();
                    if !diff.is_zero() {
                        out.push(level(side, price, tick, Qty::from_decimal(diff)));
                    }
                }
            }
        } else {
            // Retract the book as it was under the old tick, insert it as it is under the new one.
            if let Some(tick0) = tick0 {
                for side in [Side::Bid, Side::Ask] {
                    let mut before: BTreeMap<Price, Qty> = self.side_mut(side).clone();
                    for &(at, old, _) in touched.iter().filter(|(at, _, _)| at.side == side) {
                        let price = at.price;
                        if old.is_zero_qty() {
                            before.remove(&price);
                        } else {
                            before.insert(price, old);
                        }
                    }
                    for (price, qty) in before {
                        out.push(level(side, price, tick0, Qty::from_decimal(-qty.value())));
                    }
                }
            }
            if let Some(tick) = tick {
                for side in [Side::Bid, Side::Ask] {
                    for (&price, &qty) in self.side_mut(side).iter() {
                        out.push(level(side, price, tick, qty));
                    }
                }
            }
        }
        touched.clear();
        self.touched = touched;
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

/// Raw levels (size as difference), sequence state and best prices.
pub type RawBooks<'s> = (
    VecCollection<'s, u64, LevelKey, Qty>,
    VecCollection<'s, u64, (Sym, BookMeta), isize>,
    VecCollection<'s, u64, (Sym, Bbo), isize>,
);

/// Applies book events in order and emits raw levels, sequence state and best prices.
pub fn raw_books<'s>(
    events: StreamVec<'s, u64, (Stamped, u64)>,
    ends: StreamVec<'s, u64, u64>,
    config: Arc<Config>,
    stats: Arc<Stats>,
) -> RawBooks<'s> {
    let mut books: FoldMap<Sym, Book> = FoldMap::default();
    let mut share = Share::default();
    let updates = sequence(
        events,
        ends,
        Pipeline,
        "RawBooks",
        |(_, t)| *t,
        move |time, mut records, _timers: &mut Timers, out| {
            records.sort_by_key(|r| r.0.pos);
            let mut dirty: Vec<Sym> = Vec::new();
            // Counted here, added to the shared counters once per timestamp.
            let (mut processed, mut duplicates) = (0, 0);
            for (stamped, _) in records {
                let event = stamped.event;
                let configured = config.tick_sizes.get(&event.sym).copied();
                let exists = books.contains_key(&event.sym);
                let book = books.entry(event.sym).or_default();
                match &event.body {
                    Body::Snapshot { bids, asks, seq } => {
                        book.begin(exists, configured);
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
                        book.begin(exists, configured);
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
                    book.flush(sym, time, configured, out);
                }
            }
            let levels = books.values().map(|b| b.bids.len() + b.asks.len()).sum();
            share.report(&stats.state.book_levels, levels);
        },
        no_finish,
    );
    let (levels, meta, bbo) = split3(updates, "BookParts", |u| match u {
        Update::Level(d, t, r) => Part3::First((d, t, r)),
        Update::Meta(d, t, r) => Part3::Second((d, t, r)),
        Update::Bbo(d, t, r) => Part3::Third((d, t, r)),
    });
    (
        levels.as_collection(),
        meta.as_collection(),
        bbo.as_collection(),
    )
}

/// The whole orderbook stage: raw books, grouped levels, top `depth` per side.
pub fn orderbooks<'s>(
    events: StreamVec<'s, u64, (Stamped, u64)>,
    ends: StreamVec<'s, u64, u64>,
    config: Arc<Config>,
    stats: Arc<Stats>,
) -> Books<'s> {
    let (levels, meta, bbo) = raw_books(events, ends, config.clone(), stats);
    let sides = top_levels(
        group_levels(levels.clone(), &config.resolutions),
        config.depth,
    );
    Books {
        levels,
        meta,
        bbo,
        sides,
    }
}

/// A group price in book order: on both sides the best comes first (bids descending, asks
/// ascending), so the top of a side is a prefix of its arrangement.
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

/// Maps raw levels to their group at every resolution; sizes add up by consolidation.
///
/// Raw books emit a symbol's changed levels in book order (bids best first, then asks), so the
/// levels of one group arrive one after another: at each resolution the sizes of a run of levels
/// in one group are summed here before they reach the arrangement (at coarse resolutions many
/// changed levels share a group, and the arrangement's sort costs several times an addition).
/// Zero sums are dropped. A symbol's groups go out once its levels end, resolution by resolution
/// in increasing order: the arrangement's own order, which its chunker then finds sorted. Levels
/// in any other order are still grouped right, in more updates.
pub fn group_levels<'s>(
    levels: VecCollection<'s, u64, LevelKey, Qty>,
    resolutions: &[u32],
) -> VecCollection<'s, u64, (SideKey, BookPrice), Qty> {
    let resolutions = resolutions.to_vec();
    levels
        .inner
        .unary(Pipeline, "GroupLevels", move |_, _| {
            // The steps of the last tick seen, one per resolution: ticks change rarely.
            let steps_of = |tick: Price, resolutions: &[u32]| -> Vec<Price> {
                let tick_value = tick.value();
                resolutions
                    .iter()
                    .map(|&r| Price::from_decimal(tick_value * Decimal::from(r)))
                    .collect()
            };
            let mut last: Option<(Price, Vec<Price>)> = None;
            // Per resolution, the group being summed and its time, and the symbol's finished
            // groups, held until its last level so that they go out in arrangement order.
            type Run = ((SideKey, BookPrice), u64, Qty);
            let mut runs: Vec<Option<Run>> = vec![None; resolutions.len()];
            let mut held: Vec<Vec<Run>> = vec![Vec::new(); resolutions.len()];
            let mut ascending: Vec<usize> = (0..resolutions.len()).collect();
            ascending.sort_by_key(|&i| resolutions[i]);
            let mut symbol: Option<Sym> = None;
            move |input, output| {
                input.for_each_time(|cap, data| {
                    let mut session = output.session(&cap);
                    let mut release = |runs: &mut Vec<Option<Run>>, held: &mut Vec<Vec<Run>>| {
                        for (run, held) in runs.iter_mut().zip(held.iter_mut()) {
                            held.extend(run.take());
                        }
                        for &i in &ascending {
                            for run in held[i].drain(..) {
                                if !run.2.is_zero_qty() {
                                    session.give(run);
                                }
                            }
                        }
                    };
                    for batch in data {
                        for (l, time, size) in batch.drain(..) {
                            if symbol != Some(l.sym) {
                                release(&mut runs, &mut held);
                                symbol = Some(l.sym);
                            }
                            if last.as_ref().is_none_or(|(tick, _)| *tick != l.tick) {
                                last = Some((l.tick, steps_of(l.tick, &resolutions)));
                            }
                            let steps = &last.as_ref().expect("just set").1;
                            let at = resolutions.iter().zip(steps).zip(&mut runs).zip(&mut held);
                            for (((&r, &step), run), held) in at {
                                let group = (
                                    (l.sym, r, l.side),
                                    BookPrice {
                                        side: l.side,
                                        price: l.price.group(step, l.side),
                                    },
                                );
                                match run {
                                    Some((g, t, sum)) if *g == group && *t == time => {
                                        sum.plus_equals(&size);
                                    }
                                    _ => held.extend(run.replace((group, time, size))),
                                }
                            }
                        }
                    }
                    release(&mut runs, &mut held);
                    symbol = None;
                });
            }
        })
        .as_collection()
}

/// The best groups of one side that [`top_levels`] keeps at hand, in book order: a prefix of
/// the side's groups in the arrangement.
#[derive(Default)]
struct Prefix {
    /// Groups with positive size, best first.
    groups: Vec<(BookPrice, Qty)>,
    /// `groups` is the whole side; otherwise it is exactly the side's groups up to its last.
    whole: bool,
    /// The best `depth` groups as last emitted (empty: nothing emitted).
    shown: Levels,
}

impl Prefix {
    /// Applies a change of a group's size, if the group is inside the prefix (a change past its
    /// end, when it is not the whole side, stays in the arrangement only).
    fn apply(&mut self, group: BookPrice, diff: Qty) {
        let inside = self.whole || self.groups.last().is_some_and(|(last, _)| group <= *last);
        if !inside {
            return;
        }
        match self.groups.binary_search_by(|(g, _)| g.cmp(&group)) {
            Ok(i) => {
                self.groups[i].1.plus_equals(&diff);
                if self.groups[i].1.value() <= Decimal::ZERO {
                    self.groups.remove(i);
                }
            }
            Err(i) if diff.value() > Decimal::ZERO => self.groups.insert(i, (group, diff)),
            Err(_) => {}
        }
    }

    /// The best `depth` groups, best first.
    fn best(&self, depth: usize) -> impl Iterator<Item = (Price, Qty)> + '_ {
        self.groups
            .iter()
            .take(depth)
            .map(|(g, size)| (g.price, *size))
    }

    /// The best `depth` groups are the ones last emitted.
    fn shows_top(&self, depth: usize) -> bool {
        self.best(depth).eq(self.shown.iter().copied())
    }

    /// The best `depth` groups.
    fn top(&self, depth: usize) -> Levels {
        self.best(depth).collect()
    }
}

/// The best `depth` groups of each side, from the arrangement of the grouped levels.
///
/// A `reduce` would hand its logic every group of a side at every change, and keep its own
/// arrangement of the output. Here an operator keeps a [`Prefix`] of every side, between
/// `depth` and `4 x depth` of its best groups, and applies each batch's changes to it in time
/// order; only when deletions leave fewer than `depth` groups in a prefix that is not the whole
/// side does it read the side's best `2 x depth` groups again from the arrangement (group prices
/// are in book order, so that is a prefix of the side there too). At every time a side changed
/// and its best `depth` differ from the last output, it retracts the old and inserts the new.
///
/// Invariants: a prefix holds exactly the side's groups up to its last one (all of them when
/// `whole`), with the sizes accumulated up to the last time processed; batches arrive in time
/// order, and the trace is compacted only up to the frontier of what has been processed, so a
/// refill can accumulate sizes up to any time still to be processed. A refill reads the batch being
/// processed from the trace: differential's arrange (0.25) inserts a batch into the trace before
/// it sends it downstream. Compaction advances only when a batch arrives (an idle side's history
/// waits for the next one: memory, not correctness).
pub fn top_levels<'s>(
    grouped: VecCollection<'s, u64, (SideKey, BookPrice), Qty>,
    depth: usize,
) -> VecCollection<'s, u64, (SideKey, Levels), isize> {
    // Exchanged by symbol, as the events were: a symbol's groups stay on the worker that owns
    // the symbol, which also assembles its records.
    let by_symbol =
        Exchange::new(|(((sym, _, _), _), _, _): &((SideKey, BookPrice), u64, Qty)| sym.0);
    let arranged = arrange_core::<
        _,
        _,
        ContainerChunker<_>,
        ValBatcher<_, _, _, _>,
        ValBuilder<_, _, _, _>,
        ValSpine<_, _, _, _>,
    >(grouped.inner, by_symbol, "Arrange: BookGroups");
    let mut trace = arranged.trace.clone();
    arranged
        .stream
        .unary(Pipeline, "BookTopLevels", move |_, _| {
            let mut prefixes: FoldMap<SideKey, Prefix> = FoldMap::default();
            let mut upper = Antichain::from_elem(0u64);
            move |input, output| {
                let mut batches = Vec::new();
                let mut cap = None;
                input.for_each(|capability, data| {
                    // Batches arrive in order: the first capability is the least.
                    cap.get_or_insert_with(|| capability.retain(0));
                    for batch in data.drain(..) {
                        upper.clone_from(batch.upper());
                        batches.push(batch);
                    }
                });
                let Some(cap) = cap else {
                    return;
                };
                let mut session = output.session(&cap);
                let (mut changed, changed_storage) = cursor_list(batches);
                let mut arranged = None;
                let mut updates: Vec<(u64, BookPrice, Qty)> = Vec::new();
                while let Some(key) = changed.get_key(&changed_storage) {
                    updates.clear();
                    while let Some(group) = changed.get_val(&changed_storage) {
                        changed.map_times(&changed_storage, |t, diff| {
                            updates.push((*t, *group, *diff));
                        });
                        changed.step_val(&changed_storage);
                    }
                    updates.sort_by_key(|u| u.0);
                    let prefix = prefixes.entry(*key).or_insert_with(|| Prefix {
                        whole: true,
                        ..Prefix::default()
                    });
                    for at_time in updates.chunk_by(|a, b| a.0 == b.0) {
                        let time = at_time[0].0;
                        for &(_, group, diff) in at_time {
                            prefix.apply(group, diff);
                        }
                        if prefix.groups.len() > 4 * depth {
                            prefix.groups.truncate(2 * depth);
                            prefix.whole = false;
                        } else if prefix.groups.len() < depth && !prefix.whole {
                            let (cursor, storage) = arranged.get_or_insert_with(|| {
                                trace.cursor_through(upper.borrow()).expect(
                                    "the trace is compacted only up to what this operator read",
                                )
                            });
                            refill(prefix, cursor, storage, key, time, 2 * depth);
                        }
                        if !prefix.shows_top(depth) {
                            let top = prefix.top(depth);
                            let before = std::mem::replace(&mut prefix.shown, top);
                            if !before.is_empty() {
                                session.give(((*key, before), time, -1));
                            }
                            if !prefix.shown.is_empty() {
                                session.give(((*key, prefix.shown.clone()), time, 1));
                            }
                        }
                    }
                    if prefix.groups.is_empty() && prefix.whole {
                        prefixes.remove(key);
                    }
                    changed.step_key(&changed_storage);
                }
                trace.set_logical_compaction(upper.borrow());
                trace.set_physical_compaction(upper.borrow());
            }
        })
        .as_collection()
}

/// Reads the best `len` groups of a side from the arrangement, sizes accumulated up to `time`.
fn refill<C>(
    prefix: &mut Prefix,
    cursor: &mut C,
    storage: &C::Storage,
    key: &SideKey,
    time: u64,
    len: usize,
) where
    C: for<'a> Cursor<Key<'a> = &'a SideKey, Val<'a> = &'a BookPrice, TimeGat<'a> = &'a u64>,
    for<'a> C: Cursor<DiffGat<'a> = &'a Qty>,
{
    prefix.groups.clear();
    prefix.whole = true;
    cursor.rewind_keys(storage);
    cursor.seek_key(storage, key);
    if cursor.get_key(storage) != Some(key) {
        return;
    }
    while let Some(group) = cursor.get_val(storage) {
        let mut size = Qty::ZERO;
        cursor.map_times(storage, |t, diff| {
            if *t <= time {
                size.plus_equals(diff);
            }
        });
        if size.value() > Decimal::ZERO {
            if prefix.groups.len() == len {
                prefix.whole = false;
                break;
            }
            prefix.groups.push((*group, size));
        }
        cursor.step_val(storage);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use differential_dataflow::input::Input;
    use std::sync::Mutex;

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

    type Outputs = Vec<((SideKey, Levels), u64, isize)>;

    /// Runs `top_levels` over size changes given per time (absolute sizes; zero deletes), with
    /// the worker stepped only now and then so that batches span several times.
    fn run(script: &[Vec<(SideKey, BookPrice, Qty)>], depth: usize, seed: u64) -> Outputs {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let script = script.to_vec();
        timely::execute(timely::Config::thread(), move |worker| {
            let sink = sink.clone();
            let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, grouped) = scope.new_collection();
                let (probe, _) = top_levels(grouped, depth)
                    .inspect(move |x| sink.lock().expect("lock").push(x.clone()))
                    .probe();
                (input, probe)
            });
            let mut sizes: BTreeMap<(SideKey, BookPrice), Qty> = BTreeMap::new();
            let mut rng = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
            for (t, changes) in script.iter().enumerate() {
                for &(key, group, size) in changes {
                    let old = sizes.insert((key, group), size).unwrap_or(Qty::ZERO);
                    let diff = Qty::from_decimal(size.value() - old.value());
                    if !diff.is_zero_qty() {
                        input.update((key, group), diff);
                    }
                }
                input.advance_to(t as u64 + 1);
                if rng.below(4) == 0 {
                    input.flush();
                    worker.step_while(|| probe.less_than(input.time()));
                }
            }
            input.close();
            while worker.step() {}
        })
        .expect("timely runs");
        let out = out.lock().expect("lock").clone();
        out
    }

    #[test]
    fn tops_equal_the_best_groups_at_every_time() {
        let depth = 3;
        let keys: [SideKey; 2] = [(Sym(1), 1, Side::Bid), (Sym(1), 1, Side::Ask)];
        for seed in 1..=30u64 {
            let mut rng = Rng(seed);
            let mut model: BTreeMap<SideKey, BTreeMap<BookPrice, Qty>> = BTreeMap::new();
            let mut script = Vec::new();
            let mut expected = Vec::new();
            for _ in 0..300 {
                let mut changes = Vec::new();
                for key in keys {
                    let book = model.entry(key).or_default();
                    let price =
                        |g: &BookPrice| -> u64 { g.price.value().try_into().expect("integer") };
                    let sets: Vec<(u64, u64)> = match rng.below(20) {
                        // A snapshot's clearing, or a burst of new groups: both move the prefix.
                        0 => book.keys().map(|g| (price(g), 0)).collect(),
                        1 => (0..30)
                            .map(|_| (1 + rng.below(60), 1 + rng.below(4)))
                            .collect(),
                        // Deletions of the best groups, so that a truncated prefix runs short.
                        2 => book.keys().take(5).map(|g| (price(g), 0)).collect(),
                        _ => (0..rng.below(6))
                            .map(|_| (1 + rng.below(60), rng.below(4)))
                            .collect(),
                    };
                    for (p, q) in sets {
                        let group = BookPrice {
                            side: key.2,
                            price: Price::from_decimal(Decimal::from(p)),
                        };
                        let size = Qty::from_decimal(Decimal::from(q));
                        changes.push((key, group, size));
                        if size.is_zero_qty() {
                            book.remove(&group);
                        } else {
                            book.insert(group, size);
                        }
                    }
                }
                script.push(changes);
                let tops: BTreeMap<SideKey, Levels> = model
                    .iter()
                    .filter(|(_, book)| !book.is_empty())
                    .map(|(k, book)| {
                        let top = book.iter().take(depth).map(|(g, q)| (g.price, *q));
                        (*k, top.collect())
                    })
                    .collect();
                expected.push(tops);
            }
            let outputs = run(&script, depth, seed);
            for (t, expected) in expected.iter().enumerate() {
                let mut acc: BTreeMap<(SideKey, Levels), isize> = BTreeMap::new();
                for (record, time, diff) in &outputs {
                    if *time <= t as u64 {
                        *acc.entry(record.clone()).or_default() += diff;
                    }
                }
                acc.retain(|_, d| *d != 0);
                let actual: Vec<_> = acc.iter().map(|((k, l), d)| (*k, l.clone(), *d)).collect();
                let wanted: Vec<_> = expected.iter().map(|(k, l)| (*k, l.clone(), 1)).collect();
                assert_eq!(actual, wanted, "seed {seed}, time {t}");
            }
        }
    }
}
