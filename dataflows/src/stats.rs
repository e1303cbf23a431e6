//! Counters every worker of a process adds to: the accounting of CONTRACT section 1
//! (`processed + dead-lettered + duplicates = read`) and the late-event count of section 2.
//! `read`, `dead_lettered` and `late` are counted by the worker that reads an input (a dead
//! letter that is not JSON has no symbol), `processed` and `duplicates` by the worker that owns
//! the symbol, which may be in another process: with several processes the equation holds for
//! the sum over all of them, not for each.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Process-wide counters, shared by all workers through an `Arc`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Input messages read (non-blank lines, Kafka messages).
    pub read: AtomicU64,
    /// Events applied: book events and snapshots not dropped as duplicates, trades counted once.
    pub processed: AtomicU64,
    /// Messages sent to the dead-letter output.
    pub dead_lettered: AtomicU64,
    /// Book events with an old sequence number, and repeated trades.
    pub duplicates: AtomicU64,
    /// Events whose own timestamp was already closed when they were read.
    pub late: AtomicU64,
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
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads all counters.
    pub fn totals(&self) -> Totals {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
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
    pub book_levels: AtomicI64,
    /// Trades inside the ticker window.
    pub window_trades: AtomicI64,
    /// Candles held (open and retained).
    pub candles: AtomicI64,
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
        let get = |g: &AtomicI64| g.load(Ordering::Relaxed);
        StateCounts {
            book_levels: get(&self.book_levels),
            window_trades: get(&self.window_trades),
            candles: get(&self.candles),
        }
    }
}

/// A worker's share of one [`StateSizes`] gauge: reports its local size as a change of the sum.
#[derive(Debug, Default)]
pub struct Share {
    last: i64,
}

impl Share {
    /// Sets this worker's part of `gauge` to `now`.
    pub fn report(&mut self, gauge: &AtomicI64, now: usize) {
        let now = now as i64;
        if now != self.last {
            gauge.fetch_add(now - self.last, Ordering::Relaxed);
            self.last = now;
        }
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
