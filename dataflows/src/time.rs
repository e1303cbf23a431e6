//! Event time to dataflow time (CONTRACT section 2), per input.
//!
//! One [`Stamper`] per input (file or Kafka partition). It sees that input's events in read order
//! and decides, for each, the dataflow timestamp at which it applies.
//!
//! Rules, in order, for an event with time `ts` (all in ms, timestamps are multiples of `g`):
//! - the watermark is `W = highest ts seen so far - lateness` (nothing seen: no watermark);
//! - timestamp `T` is *closed* once `T < W`; the earliest open timestamp is `open = ceil(W / g) *
//!   g` (0 with no watermark). The input's capability is held at `open`;
//! - the event's natural timestamp is `ceil(ts / g) * g`; if it is closed, the event is *late* and
//!   applies at `open` instead;
//! - a late trade with `ts + candle_retention * finest interval <= highest ts seen` is
//!   `too_late`; a trade whose timestamp is still open is never (possible only where the lateness
//!   is at least that span);
//! - a book event never applies before an earlier-read book event of the same symbol on this
//!   input: its timestamp is raised to that event's timestamp.
//!
//! Consequences: every assigned timestamp is `>= open` at the time of reading and, unless the
//! input was idle and the job's progress moved past it (a live source's `floor`, see
//! `source.rs`), `<= ceil(highest ts / g) * g`, so the last mark of a finite input is
//! `ceil(max ts / g) * g`.

use crate::config::Config;
use crate::types::{FoldMap, Sym};

/// A step of time in ms (the granularity, a candle interval) with its reciprocal, so that the
/// multiples of it around a time are found with a multiplication, not a division: a 64-bit
/// division takes some 40 cycles, and the stages took several per event.
///
/// The method is Granlund and Montgomery's ("Division by invariant integers using
/// multiplication", 1994, figure 4.1): exact for every `u64` (a property test compares it with
/// `/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    ms: u64,
    /// `floor(2^64 * (2^l - ms) / ms) + 1`, where `l = ceil(log2 ms)`.
    magic: u64,
    /// `min(l, 1)` and `max(l - 1, 0)`.
    shifts: (u32, u32),
}

impl Step {
    /// The step of `ms` (> 0) milliseconds.
    pub fn new(ms: u64) -> Step {
        assert!(ms > 0, "a step of time is positive");
        let l = 64 - (ms - 1).leading_zeros();
        let magic = ((1u128 << 64) * ((1u128 << l) - u128::from(ms)) / u128::from(ms) + 1) as u64;
        Step {
            ms,
            magic,
            shifts: (l.min(1), l.saturating_sub(1)),
        }
    }

    /// Its length in ms.
    pub fn ms(self) -> u64 {
        self.ms
    }

    /// `n / ms`.
    #[inline]
    pub fn quotient(self, n: u64) -> u64 {
        let t = ((u128::from(n) * u128::from(self.magic)) >> 64) as u64;
        (t + ((n - t) >> self.shifts.0)) >> self.shifts.1
    }

    /// The last multiple of the step at or before `n`: `n / ms * ms`.
    #[inline]
    pub fn floor(self, n: u64) -> u64 {
        self.quotient(n) * self.ms
    }

    /// The first multiple of the step at or after `n`: `n.div_ceil(ms) * ms`.
    #[inline]
    pub fn ceil(self, n: u64) -> u64 {
        let floor = self.floor(n);
        if floor < n {
            floor + self.ms
        } else {
            floor
        }
    }
}

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
    granularity: Step,
    lateness: u64,
    retention_span: u64,
    max_ts: Option<u64>,
    last_book: FoldMap<Sym, u64>,
}

impl Stamper {
    /// A stamper for a fresh input.
    pub fn new(config: &Config) -> Stamper {
        Stamper {
            granularity: Step::new(config.granularity_ms),
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
            Some(max) => self.granularity.ceil(max.saturating_sub(self.lateness)),
        }
    }

    /// The watermark, if any event was seen.
    pub fn watermark(&self) -> Option<u64> {
        self.max_ts.map(|m| m.saturating_sub(self.lateness))
    }

    /// The timestamp of the newest event seen: the last mark this input can produce.
    pub fn last_mark(&self) -> Option<u64> {
        self.max_ts.map(|m| self.granularity.ceil(m))
    }

    /// Stamps the next event read from this input; `floor` is the source's capability (never
    /// above this input's own earliest open timestamp unless the input was idle).
    pub fn stamp(&mut self, sym: Sym, ts: u64, is_book: bool, floor: u64) -> Stamp {
        let natural = self.granularity.ceil(ts);
        let open = self.open().max(floor);
        let late = natural < open;
        // Only a late trade (CONTRACT 2): one whose timestamp is still open applies there, even
        // where the lateness is longer than the retention's span.
        if late && !is_book {
            if let Some(max) = self.max_ts {
                if ts.saturating_add(self.retention_span) <= max {
                    return Stamp::TooLate;
                }
            }
        }
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

    use proptest::prelude::*;

    /// Steps of every kind: small, the usual ones, powers of two and their neighbours, large.
    fn steps() -> impl Strategy<Value = u64> {
        prop_oneof![
            1u64..1000,
            prop::sample::select(vec![
                1000,
                60_000,
                300_000,
                3_600_000,
                86_400_000,
                604_800_000
            ]),
            (0u32..64)
                .prop_flat_map(|k| prop::sample::select(vec![
                    (1u64 << k) - 1,
                    1 << k,
                    (1 << k) + 1
                ]))
                .prop_filter("positive", |&d| d > 0),
            any::<u64>().prop_filter("positive", |&d| d > 0),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        #[test]
        fn a_step_divides_as_division_does(
            ms in steps(),
            n in prop_oneof![any::<u64>(), 0u64..10_000_000_000_000, Just(u64::MAX)],
        ) {
            let step = Step::new(ms);
            prop_assert_eq!(step.quotient(n), n / ms, "{} / {}", n, ms);
            prop_assert_eq!(step.floor(n), n / ms * ms);
            if let Some(ceil) = n.div_ceil(ms).checked_mul(ms) {
                prop_assert_eq!(step.ceil(n), ceil);
            }
        }
    }

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
        two_minutes_kept(&c);
    }

    /// With 2 minutes of candles kept: after a trade at 1,000,000 one 2 minutes older is too
    /// late, and one a millisecond younger is only late.
    fn two_minutes_kept(c: &Config) {
        let mut s = Stamper::new(c);
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

    /// Only a late trade is too late: with a lateness longer than the retention's span, a trade
    /// older than that span whose timestamp is still open applies there (CONTRACT 2 names
    /// `too_late` among late events).
    #[test]
    fn a_trade_whose_timestamp_is_open_is_never_too_late() {
        let c = Config {
            candle_retention: 2,
            ..cfg(100, 200_000)
        };
        let mut s = Stamper::new(&c);
        s.stamp(Sym(1), 1_000_000, false, 0);
        // The watermark is 800,000: 880,000 is 120,000 older than the highest ts, and open.
        assert_eq!(
            s.stamp(Sym(1), 880_000, false, 0),
            Stamp::At {
                time: 880_000,
                late: false
            }
        );
        assert_eq!(s.stamp(Sym(1), 700_000, false, 0), Stamp::TooLate);
    }

    /// The retention's span is that of the finest interval, wherever the list names it.
    #[test]
    fn too_late_follows_the_finest_interval_in_any_order() {
        let c = Config {
            candle_retention: 2,
            intervals: ["5m", "1m", "1h"]
                .iter()
                .map(|i| i.parse::<crate::config::Interval>().unwrap())
                .collect(),
            ..cfg(100, 1000)
        };
        two_minutes_kept(&c);
    }
}
