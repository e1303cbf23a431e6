//! Counters every worker of a process adds to: the accounting of CONTRACT section 1
//! (`processed + dead-lettered + duplicates = read`) and the late-event count of section 2.

use std::sync::atomic::{AtomicU64, Ordering};

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
}

impl Totals {
    /// True when every message read is accounted for.
    pub fn balanced(&self) -> bool {
        self.processed + self.dead_lettered + self.duplicates == self.read
    }
}
