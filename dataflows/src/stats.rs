//! Counters every worker of a process adds to: the accounting of CONTRACT section 1
//! (`processed + dead-lettered + duplicates = read`) and the late-event count of section 2.
//! `read`, `dead_lettered` and `late` are counted by the worker that reads an input (a dead
//! letter that is not JSON has no symbol), `processed` and `duplicates` by the worker that owns
//! the symbol, which may be in another process: with several processes the equation holds for
//! the sum over all of them, not for each.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

/// A process-wide sum that every worker adds to without sharing a cache line with another:
/// each adds to its own slot (its index modulo `SLOTS`), and a reader sums the slots. The
/// stages add once per timestamp; with one shared atomic (all the counters of [`Stats`] lay in
/// one cache line) that line moved between the cores at every add.
#[derive(Debug, Default)]
pub struct Sum {
    slots: [Slot; SLOTS],
}

/// One worker's part of a [`Sum`], alone in its cache lines (128 bytes: the pair of lines that
/// x86 prefetches together).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(AtomicI64);

/// Slots of a [`Sum`]: workers of one process beyond this many share them (still exact).
const SLOTS: usize = 16;

impl Sum {
    /// Adds `n` for `worker` (nothing when `n` is 0).
    pub fn add(&self, worker: usize, n: i64) {
        if n != 0 {
            self.slots[worker % SLOTS].0.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The sum over every worker.
    pub fn get(&self) -> i64 {
        self.slots.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }

    /// The sum of a counter (never below 0).
    pub fn count(&self) -> u64 {
        self.get().max(0) as u64
    }
}

/// Process-wide counters, shared by all workers through an `Arc`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Input messages read (non-blank lines, Kafka messages).
    pub read: Sum,
    /// Events applied: book events and snapshots not dropped as duplicates, trades counted once.
    pub processed: Sum,
    /// Messages sent to the dead-letter output.
    pub dead_lettered: Sum,
    /// Book events with an old sequence number, and repeated trades.
    pub duplicates: Sum,
    /// Events whose own timestamp was already closed when they were read.
    pub late: Sum,
    /// State held by the stages.
    pub state: StateSizes,
    /// Per input: messages read and watermark, updated once per source activation.
    pub inputs: Mutex<BTreeMap<u32, InputProgress>>,
}

/// A copy of the counters at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// See [`Stats::read`].
    pub read: u64,
    /// See [`Stats::processed`].
    pub processed: u64,
    /// See [`Stats::dead_lettered`].
    pub dead_lettered: u64,
    /// See [`Stats::duplicates`].
    pub duplicates: u64,
    /// See [`Stats::late`].
    pub late: u64,
}

impl Stats {
    /// Adds `n` to a counter for `worker`.
    pub fn add(counter: &Sum, worker: usize, n: u64) {
        counter.add(worker, n as i64);
    }

    /// Reads all counters.
    pub fn totals(&self) -> Totals {
        let get = Sum::count;
        Totals {
            read: get(&self.read),
            processed: get(&self.processed),
            dead_lettered: get(&self.dead_lettered),
            duplicates: get(&self.duplicates),
            late: get(&self.late),
        }
    }

    /// A copy of the per-input progress.
    pub fn inputs(&self) -> BTreeMap<u32, InputProgress> {
        self.inputs.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

impl Totals {
    /// True when every message read is accounted for.
    pub fn balanced(&self) -> bool {
        self.processed + self.dead_lettered + self.duplicates == self.read
    }
}

/// Sizes of the state the dataflow's own stages hold, summed over this process's workers
/// (metrics).
#[derive(Debug, Default)]
pub struct StateSizes {
    /// Price levels held by the orderbook stage (raw, every side of every book).
    pub book_levels: Sum,
    /// Trades inside the ticker window.
    pub window_trades: Sum,
    /// Candles held (open and retained).
    pub candles: Sum,
}

/// A copy of the [`StateSizes`] gauges at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StateCounts {
    /// See [`StateSizes::book_levels`].
    pub book_levels: i64,
    /// See [`StateSizes::window_trades`].
    pub window_trades: i64,
    /// See [`StateSizes::candles`].
    pub candles: i64,
}

impl StateSizes {
    /// A copy of the gauges.
    pub fn counts(&self) -> StateCounts {
        let get = Sum::get;
        StateCounts {
            book_levels: get(&self.book_levels),
            window_trades: get(&self.window_trades),
            candles: get(&self.candles),
        }
    }
}

/// A worker's share of one [`StateSizes`] gauge: reports its local size as a change of the sum,
/// in the worker's slot ([`Share::of`]).
#[derive(Debug)]
pub struct Share {
    worker: usize,
    last: i64,
}

impl Share {
    /// The share of worker `worker`, nothing reported yet.
    pub fn of(worker: usize) -> Share {
        Share { worker, last: 0 }
    }

    /// Sets this worker's part of `gauge` to `now`.
    pub fn report(&mut self, gauge: &Sum, now: usize) {
        let now = now as i64;
        gauge.add(self.worker, now - self.last);
        self.last = now;
    }
}

/// Progress of one input (a file, a Kafka partition), for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InputProgress {
    /// Messages read.
    pub read: u64,
    /// Highest event time read minus the lateness (None before the first event that applies).
    pub watermark: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sum is exact over any workers, also beyond its slots (which they then share), and each
    /// slot has cache lines of its own.
    #[test]
    fn sums_are_exact_in_slots_of_their_own() {
        let sum = Sum::default();
        let mut expected = 0i64;
        for worker in 0..3 * SLOTS {
            let n = worker as i64 * 7 - 40;
            sum.add(worker, n);
            expected += n;
        }
        assert_eq!(sum.get(), expected);
        assert_eq!(sum.count(), expected.max(0) as u64);
        let gauge = Sum::default();
        let (mut a, mut b) = (Share::of(0), Share::of(SLOTS + 1));
        a.report(&gauge, 10);
        b.report(&gauge, 5);
        a.report(&gauge, 3);
        assert_eq!(gauge.get(), 8);
        assert_eq!(gauge.count(), 8);
        assert_eq!(std::mem::align_of::<Slot>(), 128);
        let addr = |i: usize| &sum.slots[i] as *const Slot as usize;
        assert_eq!(addr(1) - addr(0), 128);
    }
}
