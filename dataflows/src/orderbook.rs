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
//!      A size change is one update `new - old`; a tick change re-emits the book under the new tick;
//!    - `meta`: `(sym, BookMeta { seq, stale })`, one record per book;
//!    - `bbo`: `(sym, Bbo)`, the raw best bid and ask, one record per book.
//! 2. `grouped`: each level mapped to `(sym, resolution, side)` and its group price (bids floor,
//!    asks ceil to `resolution x tick`) in book order ([`BookPrice`]: best first on both sides).
//!    Sizes of a group add up by consolidation.
//! 3. [`top_levels`]: arranges the groups by `(sym, resolution, side)` and reads the best `depth`
//!    of every changed side from the arrangement, a prefix of the side's groups.
//!
//! Invariants: every level in `levels` has a positive accumulated size; the tick of a symbol is the
//! configured one or `10^-s`, `s` the most fractional digits among prices of its applied book events.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use differential_dataflow::difference::Semigroup;
use differential_dataflow::trace::cursor::cursor_list;
use differential_dataflow::trace::{BatchReader, Cursor, TraceReader};
use differential_dataflow::{AsCollection, VecCollection};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::{Map, Partition};
use timely::dataflow::operators::Operator;
use timely::progress::Antichain;
use timely::dataflow::StreamVec;

use crate::config::Config;
use crate::event::{Body, Level};
use crate::sequence::{no_finish, sequence, Timers};
use crate::source::Stamped;
use crate::stats::{Share, Stats};
use crate::types::{Price, Qty, Side, Sym};

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
    /// Sizes at the start of the current timestamp of the levels touched in it.
    touched: HashMap<(Side, Price), Qty>,
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
            .entry((side, price))
            .or_insert(old.unwrap_or(Qty::ZERO));
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
        let touched = std::mem::take(&mut self.touched);
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
                for ((side, price), old) in touched {
                    let new = self
                        .side_mut(side)
                        .get(&price)
                        .copied()
                        .unwrap_or(Qty::ZERO);
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
                    for (&(s, price), &old) in touched.iter().filter(|((s, _), _)| *s == side) {
                        debug_assert_eq!(s, side);
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
    let mut books: HashMap<Sym, Book> = HashMap::new();
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
                                Stats::add(&stats.duplicates, 1);
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
                Stats::add(&stats.processed, 1);
                dirty.push(event.sym);
            }
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
    let mut parts = updates.partition(3, |u| {
        let part = match &u {
            Update::Level(..) => 0,
            Update::Meta(..) => 1,
            Update::Bbo(..) => 2,
        };
        (part, u)
    });
    let bbo = parts.pop().expect("3 parts").flat_map(|u| match u {
        Update::Bbo(d, t, r) => Some((d, t, r)),
        _ => None,
    });
    let meta = parts.pop().expect("3 parts").flat_map(|u| match u {
        Update::Meta(d, t, r) => Some((d, t, r)),
        _ => None,
    });
    let levels = parts.pop().expect("3 parts").flat_map(|u| match u {
        Update::Level(d, t, r) => Some((d, t, r)),
        _ => None,
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
        self.side
            .cmp(&other.side)
            .then_with(|| match self.side {
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
pub fn group_levels<'s>(
    levels: VecCollection<'s, u64, LevelKey, Qty>,
    resolutions: &[u32],
) -> VecCollection<'s, u64, (SideKey, BookPrice), Qty> {
    let resolutions = resolutions.to_vec();
    levels.flat_map(move |l: LevelKey| {
        resolutions
            .iter()
            .map(|&r| {
                let step = Price::from_decimal(l.tick.value() * Decimal::from(r));
                let price = l.price.group(step, l.side);
                ((l.sym, r, l.side), BookPrice { side: l.side, price })
            })
            .collect::<Vec<_>>()
    })
}

/// The best `depth` groups of each side, read from the arrangement of the grouped levels.
///
/// A `reduce` would hand the logic every group of a side at every change, and keep its own
/// arrangement of the output; here an operator reads only the prefix it needs. For every side
/// changed in a batch and every time it changed at (in increasing order), it walks the side's
/// groups in book order, accumulating their sizes up to that time, until `depth` are positive;
/// when that differs from the side's last output it retracts the old top and inserts the new.
///
/// Invariants: `last` holds every side's current output (absent: no groups, nothing emitted);
/// batches arrive in time order, and the trace is compacted only up to the frontier of what has
/// been processed, so every time still to be read is distinguishable.
pub fn top_levels<'s>(
    grouped: VecCollection<'s, u64, (SideKey, BookPrice), Qty>,
    depth: usize,
) -> VecCollection<'s, u64, (SideKey, Levels), isize> {
    let arranged = grouped.arrange_by_key_named("Arrange: BookGroups");
    let mut trace = arranged.trace.clone();
    arranged
        .stream
        .unary(Pipeline, "BookTopLevels", move |_, _| {
            let mut last: HashMap<SideKey, Levels> = HashMap::new();
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
                let (mut cursor, storage) = trace
                    .cursor_through(upper.borrow())
                    .expect("the trace is compacted only up to what this operator read");
                let mut times: Vec<u64> = Vec::new();
                let mut levels: Levels = Vec::with_capacity(depth);
                while let Some(key) = changed.get_key(&changed_storage) {
                    times.clear();
                    while changed.val_valid(&changed_storage) {
                        changed.map_times(&changed_storage, |t, _| times.push(*t));
                        changed.step_val(&changed_storage);
                    }
                    times.sort_unstable();
                    times.dedup();
                    cursor.seek_key(&storage, key);
                    for &time in &times {
                        levels.clear();
                        cursor.rewind_vals(&storage);
                        while levels.len() < depth {
                            let Some(group) = cursor.get_val(&storage) else {
                                break;
                            };
                            let mut size = Qty::ZERO;
                            cursor.map_times(&storage, |t, q| {
                                if *t <= time {
                                    size.plus_equals(q);
                                }
                            });
                            if size.value() > Decimal::ZERO {
                                levels.push((group.price, size));
                            }
                            cursor.step_val(&storage);
                        }
                        let before = last.get(key);
                        if before.map_or(levels.is_empty(), |b| *b == levels) {
                            continue;
                        }
                        if let Some(before) = before {
                            session.give(((*key, before.clone()), time, -1));
                        }
                        if levels.is_empty() {
                            last.remove(key);
                        } else {
                            session.give(((*key, levels.clone()), time, 1));
                            last.insert(*key, levels.clone());
                        }
                    }
                    changed.step_key(&changed_storage);
                }
                trace.set_logical_compaction(upper.borrow());
                trace.set_physical_compaction(upper.borrow());
            }
        })
        .as_collection()
}
