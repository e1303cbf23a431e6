//! The trade aggregate shared by the ticker and the candles: a monoid.
//!
//! `open`/`last` are the first/last trade in `(ts, id)` order, so merging partial aggregates in
//! any order gives the same result as folding the trades in order, as long as no two trades tie
//! on `(ts, id)`. Two may: a trade repeated after its first copy left the window counts again
//! (CONTRACT 1), in the candles only, since it is outside the window too. Tied trades are
//! ordered as they were read, so [`Agg::merge`] takes the earlier aggregate as `self` (the
//! candles merge each trade into its candle as read; the ticker's window never holds a tie).
//! Sums are exact decimals.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::event::Trade;
use crate::types::{Price, Qty, TradeId, TradeSide};

/// A trade as the window and the candles keep it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TradeRec {
    /// Exchange time.
    pub ts: u64,
    /// Trade id.
    pub id: TradeId,
    /// Price.
    pub price: Price,
    /// Quantity.
    pub qty: Qty,
    /// Taker side.
    pub side: TradeSide,
}

impl TradeRec {
    /// From a parsed trade and its time.
    pub fn new(ts: u64, trade: &Trade) -> TradeRec {
        TradeRec {
            ts,
            id: trade.id.clone(),
            price: trade.price,
            qty: trade.qty,
            side: trade.side,
        }
    }
}

/// One end of an aggregate: the trade's time, id and price.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Mark {
    /// Trade time.
    pub ts: u64,
    /// Trade id.
    pub id: TradeId,
    /// Trade price.
    pub price: Price,
}

/// Aggregate of a non-empty set of trades.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Agg {
    /// First trade by `(ts, id)`.
    pub open: Mark,
    /// Last trade by `(ts, id)`.
    pub last: Mark,
    /// Highest price.
    pub high: Price,
    /// Lowest price.
    pub low: Price,
    /// Sum of quantities.
    pub volume: Qty,
    /// Sum of quantities of taker buys.
    pub buy_volume: Qty,
    /// Sum of price x quantity.
    pub quote_volume: Qty,
    /// Number of trades.
    pub count: u64,
}

impl Agg {
    /// The aggregate of one trade.
    pub fn of(t: &TradeRec) -> Agg {
        let mark = Mark {
            ts: t.ts,
            id: t.id.clone(),
            price: t.price,
        };
        let buy = if t.side == TradeSide::Buy {
            t.qty
        } else {
            Qty::ZERO
        };
        Agg {
            open: mark.clone(),
            last: mark,
            high: t.price,
            low: t.price,
            volume: t.qty,
            buy_volume: buy,
            quote_volume: Qty::product(t.price, t.qty),
            count: 1,
        }
    }

    /// Merges the aggregate of trades read later into this one: on a tie on `(ts, id)` the
    /// open stays this one's and the last becomes the other's.
    pub fn merge(&mut self, o: &Agg) {
        if (o.open.ts, &o.open.id) < (self.open.ts, &self.open.id) {
            self.open = o.open.clone();
        }
        if (o.last.ts, &o.last.id) >= (self.last.ts, &self.last.id) {
            self.last = o.last.clone();
        }
        self.high = self.high.max(o.high);
        self.low = self.low.min(o.low);
        self.volume = self.volume.sum(o.volume);
        self.buy_volume = self.buy_volume.sum(o.buy_volume);
        self.quote_volume = self.quote_volume.sum(o.quote_volume);
        self.count += o.count;
    }

    /// Merges this aggregate, of trades read after `acc`'s, into `acc`, or makes `acc` of it.
    pub fn merge_into(&self, acc: &mut Option<Agg>) {
        match acc {
            Some(acc) => acc.merge(self),
            None => *acc = Some(self.clone()),
        }
    }

    /// vwap = quote_volume / volume, rounded to 8 decimal places.
    pub fn vwap(&self) -> Decimal {
        // The volume is positive, and a mean of prices below `VALUE_LIMIT` is below it too.
        crate::quotients::div_round(self.quote_volume.value(), self.volume.value(), 8)
            .expect("a weighted mean of prices is a decimal")
    }
}

/// A candle's value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Candle {
    /// Aggregate of its trades.
    pub agg: Agg,
    /// The interval is over.
    pub closed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_equal_decimal_addition_at_any_scale() {
        let big = "79228162514264.3379354395"; // near the 96-bit mantissa limit at scale 10
        let cases = [
            ("1.5", "2.25"),
            ("0.0000000001", "3"),
            ("0.00000000001", "1.1"), // 11 fractional digits: not at the common scale
            (big, big),               // the mantissa sum overflows 96 bits: falls back
            ("123456789", "0.000000001"),
            ("1800000000", "1700000000.5"), // 64-bit magnitudes whose sum is not: falls back
        ];
        for (a, b) in cases {
            let (qa, qb) = (Qty::parse(a).unwrap(), Qty::parse(b).unwrap());
            let expected =
                Qty::from_decimal(a.parse::<Decimal>().unwrap() + b.parse::<Decimal>().unwrap());
            let got = qa.sum(qb);
            assert_eq!(got, expected, "{a} + {b}");
            assert_eq!(
                got.value().to_string(),
                expected.value().to_string(),
                "{a} + {b}"
            );
        }
    }
}
