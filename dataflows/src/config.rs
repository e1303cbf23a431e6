//! The validated settings every stage reads (CONTRACT sections 2 and 3).
//!
//! [`Config::validate`] holds each setting to what the stages can compute exactly: a positive
//! granularity, window and depth; spans (granularity, lateness, window, intervals) of at most
//! [`MAX_SPAN_MS`], far from overflowing any sum of times; positive resolutions and intervals,
//! none repeated (`1m,60s` is one interval twice); a candle retention of at most
//! [`MAX_CANDLE_RETENTION`]. Every process of a job compares their digest
//! ([`Config::fingerprint`]), so a process with other settings is refused.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::types::{Price, Sym};

/// A candle interval such as `1m` or `4h`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Interval {
    /// Its length in ms.
    pub ms: u64,
    /// Its name as configured, e.g. `1m`.
    pub name: String,
}

impl FromStr for Interval {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (n, unit) = s.split_at(split);
        let n: u64 = n.parse().map_err(|_| format!("bad interval {s:?}"))?;
        let unit_ms = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => {
                return Err(format!(
                    "bad interval unit in {s:?} (use ms, s, m, h, d or w)"
                ))
            }
        };
        if n == 0 {
            return Err(format!("interval {s:?} must be positive"));
        }
        let ms = (n.checked_mul(unit_ms))
            .filter(|&ms| ms <= MAX_SPAN_MS)
            .ok_or_else(|| format!("interval {s:?} is longer than {MAX_SPAN_MS} ms"))?;
        Ok(Interval {
            ms,
            name: s.to_string(),
        })
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The longest span any option may give, in ms (about 31,700 years): event times are below 2^63,
/// so a time plus such a span stays inside the `u64` the stages compute in. (Larger values made
/// the job panic on an overflow.)
pub const MAX_SPAN_MS: u64 = 1_000_000_000_000_000;

/// The most candles kept per series (`--candle-retention`): about 3.8 KB of state each, so far
/// beyond what any machine holds, and a rank Redis and its script compute exactly.
pub const MAX_CANDLE_RETENTION: usize = 1_000_000_000;

/// Settings of the dataflow. Built and validated once, shared read-only by all workers.
#[derive(Clone, Debug)]
pub struct Config {
    /// Width of a timestamp in ms (`T = ceil(ts / g) * g`).
    pub granularity_ms: u64,
    /// Allowed disorder: watermark = highest ts - lateness.
    pub lateness_ms: u64,
    /// Ticker window length.
    pub window_ms: u64,
    /// Levels per book side.
    pub depth: usize,
    /// Book resolutions (multiples of the tick).
    pub resolutions: Vec<u32>,
    /// Candle intervals.
    pub intervals: Vec<Interval>,
    /// Configured tick sizes, by symbol.
    pub tick_sizes: HashMap<Sym, Price>,
    /// Candles kept per symbol and interval.
    pub candle_retention: usize,
    /// Lines a source reads before it yields (and may advance its capability).
    pub source_batch: usize,
    /// An event whose `ts` is more than this after the wall clock when it is read is dead-lettered
    /// (`ts ahead of the clock`) instead of moving its input's watermark there; `None`: never.
    pub max_ahead_ms: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            granularity_ms: 100,
            lateness_ms: 1000,
            window_ms: 86_400_000,
            depth: 20,
            resolutions: vec![1, 5, 10, 100],
            intervals: "1m,5m,15m,30m,1h,4h,1d"
                .split(',')
                .map(|s| s.parse().expect("default intervals parse"))
                .collect(),
            tick_sizes: HashMap::new(),
            candle_retention: 1000,
            source_batch: 8192,
            max_ahead_ms: None,
        }
    }
}

impl Config {
    /// A digest of everything that decides the results (not `source_batch`, which decides only
    /// how work is cut): processes of one job must agree on it. Tick sizes are taken in order.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            self.granularity_ms,
            self.lateness_ms,
            self.window_ms,
            self.depth,
        )
            .hash(&mut h);
        (&self.resolutions, self.candle_retention, self.max_ahead_ms).hash(&mut h);
        for i in &self.intervals {
            (i.ms, &i.name).hash(&mut h);
        }
        let mut ticks: Vec<(u64, String)> = (self.tick_sizes.iter())
            .map(|(sym, step)| (sym.0, step.value().to_string()))
            .collect();
        ticks.sort();
        ticks.hash(&mut h);
        h.finish()
    }

    /// Checks the settings; the message names the offending option.
    pub fn validate(&self) -> Result<(), String> {
        if self.granularity_ms == 0 {
            return Err("--granularity-ms must be positive".into());
        }
        for (option, ms) in [
            ("--granularity-ms", self.granularity_ms),
            ("--lateness-ms", self.lateness_ms),
            ("--window-ms", self.window_ms),
        ] {
            if ms > MAX_SPAN_MS {
                return Err(format!("{option} must be at most {MAX_SPAN_MS}"));
            }
        }
        if self.window_ms == 0 {
            return Err("--window-ms must be positive".into());
        }
        if self.depth == 0 {
            return Err("--depth must be positive".into());
        }
        if self.resolutions.is_empty() || self.resolutions.contains(&0) {
            return Err("--resolutions must be positive integers".into());
        }
        if self.intervals.is_empty() {
            return Err("--intervals must name at least one interval".into());
        }
        // Results are ordered by resolution and interval length inside a mark: one of each.
        let mut resolutions = self.resolutions.clone();
        resolutions.sort_unstable();
        if resolutions.windows(2).any(|w| w[0] == w[1]) {
            return Err("--resolutions must not repeat a resolution".into());
        }
        let mut intervals: Vec<&Interval> = self.intervals.iter().collect();
        intervals.sort_by_key(|i| i.ms);
        if let Some(w) = intervals.windows(2).find(|w| w[0].ms == w[1].ms) {
            return Err(format!(
                "--intervals must not repeat a length ({} and {} are the same)",
                w[0].name, w[1].name
            ));
        }
        // Redis trims a candle set by a rank its script computes in doubles, and lists what is
        // beyond retention by a signed rank: both exact only far below u64::MAX (2^64 - 1 as a
        // rank removed every candle, 10^17 failed the script after its first writes).
        if !(1..=MAX_CANDLE_RETENTION).contains(&self.candle_retention) {
            return Err(format!(
                "--candle-retention must be between 1 and {MAX_CANDLE_RETENTION}"
            ));
        }
        if self.source_batch == 0 {
            return Err("source batch must be positive".into());
        }
        Ok(())
    }

    /// The timestamp of an event time: `ceil(ts / g) * g`.
    pub fn timestamp_of(&self, ts: u64) -> u64 {
        ts.div_ceil(self.granularity_ms) * self.granularity_ms
    }

    /// How far back a trade may be before it is `too_late`: the retention of the finest interval.
    pub fn retention_span_ms(&self) -> u64 {
        let finest = self.intervals.iter().map(|i| i.ms).min().unwrap_or(60_000);
        finest.saturating_mul(self.candle_retention as u64)
    }
}

/// Parses `EXCHANGE:SYMBOL=STEP`. Split at the last `=`, which a step never holds: symbols may
/// (Yahoo's `EURUSD=X`); split at the first, they could not be named.
pub(crate) fn parse_tick_size(s: &str) -> Result<(String, String, Price), String> {
    let (name, step) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("bad tick size {s:?}: want EXCHANGE:SYMBOL=STEP"))?;
    let (exchange, symbol) = name
        .split_once(':')
        .filter(|(e, s)| !e.is_empty() && !s.is_empty())
        .ok_or_else(|| format!("bad tick size {s:?}: want EXCHANGE:SYMBOL=STEP"))?;
    let step = Price::parse(step).map_err(|e| format!("bad tick size {s:?}: {e}"))?;
    Ok((exchange.to_string(), symbol.to_string(), step))
}

/// Parses one or more tick sizes: `EXCHANGE:SYMBOL=STEP`, or a comma-separated list of them, as
/// `--resolutions` and `--intervals` take lists (spaces around a part are dropped). A symbol
/// cannot hold `,` here. (A list used to be read whole, as the symbol `X=0.1,b:Y` of `a`, and a
/// list with a typo still so: a tick given to no symbol, without a word.)
pub fn parse_tick_sizes(s: &str) -> Result<Vec<(String, String, Price)>, String> {
    s.split(',')
        .map(|part| parse_tick_size(part.trim()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_tick_sizes_is_read_as_a_list_each_part_a_tick_size() {
        let step = |s: &str| Price::parse(s).unwrap();
        let named = |e: &str, s: &str, p: &str| (e.to_string(), s.to_string(), step(p));
        assert_eq!(
            parse_tick_sizes("a:X=0.1,b:Y=0.25"),
            Ok(vec![named("a", "X", "0.1"), named("b", "Y", "0.25")])
        );
        assert_eq!(
            parse_tick_sizes("a:EURUSD=X=0.0001"),
            Ok(vec![named("a", "EURUSD=X", "0.0001")])
        );
        assert_eq!(
            parse_tick_sizes(" a:X=0.1 , b:Y=0.25"),
            Ok(vec![named("a", "X", "0.1"), named("b", "Y", "0.25")])
        );
        // Each part must be a tick size: these were read whole, as one odd symbol.
        for bad in ["a:X,Y=0.5", "a:X=0.1,", "a:X=0.1,,b:Y=0.2", "a:X=0.1,Y=0.2"] {
            assert!(parse_tick_sizes(bad).is_err(), "{bad}");
        }
    }

    /// Every setting that decides the results changes the digest processes compare (a process
    /// with another retention was let into the job), and `source_batch` does not.
    #[test]
    fn the_fingerprint_covers_every_setting_of_the_results() {
        let base = Config::default();
        type Change = (&'static str, fn(&mut Config));
        let changes: [Change; 9] = [
            ("granularity", |c| c.granularity_ms += 1),
            ("lateness", |c| c.lateness_ms += 1),
            ("window", |c| c.window_ms += 1),
            ("depth", |c| c.depth += 1),
            ("resolutions", |c| c.resolutions.push(1000)),
            ("intervals", |c| c.intervals.truncate(1)),
            ("retention", |c| c.candle_retention += 1),
            ("tick sizes", |c| {
                let step = Price::from_decimal(rust_decimal::Decimal::ONE);
                c.tick_sizes.insert(Sym(7), step);
            }),
            ("interval names", |c| c.intervals[0].name = "60s".into()),
        ];
        for (what, change) in changes {
            let mut config = base.clone();
            change(&mut config);
            assert_ne!(config.fingerprint(), base.fingerprint(), "{what}");
        }
        let mut config = base.clone();
        config.source_batch += 1;
        assert_eq!(config.fingerprint(), base.fingerprint());
    }

    #[test]
    fn a_symbol_may_hold_an_equals_sign() {
        let (exchange, symbol, step) = parse_tick_size("yahoo:EURUSD=X=0.0001").unwrap();
        assert_eq!((exchange.as_str(), symbol.as_str()), ("yahoo", "EURUSD=X"));
        assert_eq!(step, Price::parse("0.0001").unwrap());
    }

    #[test]
    fn intervals_parse() {
        let i: Interval = "15m".parse().unwrap();
        assert_eq!(i.ms, 900_000);
        let ms = |s: &str| s.parse::<Interval>().map(|i| i.ms);
        let units = ["250ms", "30s", "2m", "3h", "1d", "1w"].map(ms);
        let expected = [250, 30_000, 120_000, 10_800_000, 86_400_000, 604_800_000].map(Ok);
        assert_eq!(units, expected);
        assert!("0m".parse::<Interval>().is_err());
        assert!("5x".parse::<Interval>().is_err());
    }

    #[test]
    fn repeated_resolutions_and_interval_lengths_are_refused() {
        let mut c = Config::default();
        assert_eq!(c.validate(), Ok(()));
        c.resolutions = vec![1, 5, 1];
        assert!(c.validate().unwrap_err().contains("--resolutions"));
        c.resolutions = vec![1, 5];
        c.intervals = vec!["1m".parse().unwrap(), "60s".parse().unwrap()];
        assert!(c.validate().unwrap_err().contains("--intervals"));
    }

    #[test]
    fn timestamps_round_up() {
        let c = Config::default();
        assert_eq!(c.timestamp_of(1), 100);
        assert_eq!(c.timestamp_of(100), 100);
        assert_eq!(c.timestamp_of(101), 200);
    }
}
