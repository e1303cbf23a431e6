//! Event time to dataflow time (CONTRACT section 2), per input.
//!
//! One [`Stamper`] per input (file or Kafka partition). It sees that input's events in read order
//! and decides, for each, the dataflow timestamp at which it applies.
//!
//! Rules, in order, for an event with time `ts` (all in ms, timestamps are multiples of `g`):
//! - the watermark is `W = highest ts seen so far - lateness` (nothing seen: no watermark);
//! - timestamp `T` is *closed* once `T < W`; the earliest open timestamp is `open = ceil(W / g) * g`
//!   (0 with no watermark). The input's capability is held at `open`;
//! - the event's natural timestamp is `ceil(ts / g) * g`; if it is closed, the event is *late* and
//!   applies at `open` instead;
//! - a trade with `ts + candle_retention * finest interval <= highest ts seen` is `too_late`;
//! - a book event never applies before an earlier-read book event of the same symbol on this
//!   input: its timestamp is raised to that event's timestamp.
//!
//! Consequences: every assigned timestamp is `>= open` at the time of reading and
//! `<= ceil(highest ts / g) * g`, so the last mark of a finite input is `ceil(max ts / g) * g`.

use crate::config::Config;
use crate::types::{FoldMap, Sym};

/// What the stamper decided for one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamp {
    /// Apply at this timestamp; `late` when the natural timestamp was already closed.
    At {
        /// The dataflow timestamp.
        time: u64,
        /// The event's own timestamp was closed.
        late: bool,
    },
    /// A trade older than candle retention: dead-letter it as `too_late`.
    TooLate,
}

/// Per-input event-time state.
#[derive(Clone, Debug)]
pub struct Stamper {
    granularity: u64,
    lateness: u64,
    retention_span: u64,
    max_ts: Option<u64>,
    last_book: FoldMap<Sym, u64>,
}

impl Stamper {
    /// A stamper for a fresh input.
    pub fn new(config: &Config) -> Stamper {
        Stamper {
            granularity: config.granularity_ms,
            lateness: config.lateness_ms,
            retention_span: config.retention_span_ms(),
            max_ts: None,
            last_book: Default::default(),
        }
    }

    /// The earliest open timestamp: the input's capability may sit here.
    pub fn open(&self) -> u64 {
        match self.max_ts {
            None => 0,
            Some(max) => {
                max.saturating_sub(self.lateness).div_ceil(self.granularity) * self.granularity
            }
        }
    }

    /// The watermark, if any event was seen.
    pub fn watermark(&self) -> Option<u64> {
        self.max_ts.map(|m| m.saturating_sub(self.lateness))
    }

    /// The timestamp of the newest event seen: the last mark this input can produce.
    pub fn last_mark(&self) -> Option<u64> {
        self.max_ts
            .map(|m| m.div_ceil(self.granularity) * self.granularity)
    }

    /// Stamps the next event read from this input; `floor` is the source's capability (never
    /// above this input's own earliest open timestamp unless the input was idle).
    pub fn stamp(&mut self, sym: Sym, ts: u64, is_book: bool, floor: u64) -> Stamp {
        if !is_book {
            if let Some(max) = self.max_ts {
                if ts.saturating_add(self.retention_span) <= max {
                    return Stamp::TooLate;
                }
            }
        }
        let natural = ts.div_ceil(self.granularity) * self.granularity;
        let open = self.open().max(floor);
        let late = natural < open;
        let mut time = natural.max(open);
        if is_book {
            let last = self.last_book.entry(sym).or_insert(time);
            time = time.max(*last);
            *last = time;
        }
        self.max_ts = Some(self.max_ts.map_or(ts, |m| m.max(ts)));
        Stamp::At { time, late }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(g: u64, lateness: u64) -> Config {
        Config {
            granularity_ms: g,
            lateness_ms: lateness,
            ..Config::default()
        }
    }

    #[test]
    fn late_events_move_to_the_earliest_open_timestamp() {
        let mut s = Stamper::new(&cfg(100, 1000));
        let a = Sym(1);
        assert_eq!(
            s.stamp(a, 5_050, false, 0),
            Stamp::At {
                time: 5_100,
                late: false
            }
        );
        assert_eq!(s.open(), 4_100);
        // 4_100 is open: not late.
        assert_eq!(
            s.stamp(a, 4_001, false, 0),
            Stamp::At {
                time: 4_100,
                late: false
            }
        );
        // 4_000 is closed (4_000 < W = 4_050): late, moves to 4_100.
        assert_eq!(
            s.stamp(a, 3_950, false, 0),
            Stamp::At {
                time: 4_100,
                late: true
            }
        );
    }

    #[test]
    fn book_events_keep_read_order_per_symbol() {
        let mut s = Stamper::new(&cfg(100, 1000));
        assert_eq!(
            s.stamp(Sym(1), 900, true, 0),
            Stamp::At {
                time: 900,
                late: false
            }
        );
        assert_eq!(
            s.stamp(Sym(1), 450, true, 0),
            Stamp::At {
                time: 900,
                late: false
            }
        );
        assert_eq!(
            s.stamp(Sym(2), 450, true, 0),
            Stamp::At {
                time: 500,
                late: false
            }
        );
        assert_eq!(
            s.stamp(Sym(2), 450, false, 0),
            Stamp::At {
                time: 500,
                late: false
            }
        );
    }

    #[test]
    fn zero_lateness_keeps_equal_timestamps_open() {
        let mut s = Stamper::new(&cfg(100, 0));
        assert_eq!(
            s.stamp(Sym(1), 150, false, 0),
            Stamp::At {
                time: 200,
                late: false
            }
        );
        assert_eq!(
            s.stamp(Sym(1), 150, false, 0),
            Stamp::At {
                time: 200,
                late: false
            }
        );
        assert_eq!(
            s.stamp(Sym(1), 101, false, 0),
            Stamp::At {
                time: 200,
                late: false
            }
        );
        assert_eq!(
            s.stamp(Sym(1), 99, false, 0),
            Stamp::At {
                time: 200,
                late: true
            }
        );
        assert_eq!(s.last_mark(), Some(200));
    }

    #[test]
    fn very_old_trades_are_too_late() {
        let c = Config {
            candle_retention: 2,
            ..cfg(100, 1000)
        };
        let mut s = Stamper::new(&c);
        s.stamp(Sym(1), 1_000_000, false, 0);
        assert_eq!(
            s.stamp(Sym(1), 1_000_000 - 120_000, false, 0),
            Stamp::TooLate
        );
        assert!(matches!(
            s.stamp(Sym(1), 1_000_000 - 119_999, false, 0),
            Stamp::At { late: true, .. }
        ));
    }
}
