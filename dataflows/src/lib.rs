//! Tampines' dataflow logic: the event model, orderbooks, the rolling ticker and candles, on
//! timely and differential dataflow. No I/O: inputs arrive as iterators of lines, results leave as
//! a stream of [`results::Published`] batches and dead letters as a stream of
//! [`source::DeadLetter`]s; the binary attaches files, Kafka and Redis to them.
//!
//! Data flow, source to sink ([`build`]):
//!
//! ```text
//! source::lines ──exchange by symbol──┬─ books  ─ orderbook::orderbooks ─┬─ sides, meta, bbo ─┐
//!                                     │                                  │                    │
//!                                     └─ trades ─ ticker::window ─┬─ window ─ ticker::aggregate ┤
//!                                                                 └─ accepted ─ candles::candles ┤
//!                                   names, ends ─ results::publish (assembled per symbol, gathered on worker 0)
//! ```

#![warn(missing_docs)]

pub mod agg;
pub mod candles;
pub mod config;
pub mod event;
pub mod orderbook;
pub mod results;
pub mod sequence;
pub mod source;
pub mod stats;
pub mod ticker;
pub mod time;
pub mod types;

use std::sync::Arc;

use timely::dataflow::operators::vec::{Map, Partition};
use timely::dataflow::operators::Exchange;
use timely::dataflow::StreamVec;

use crate::config::Config;
use crate::results::{Components, Published};
use crate::source::{DeadLetter, SourceRecord};
use crate::stats::Stats;

/// The streams a built dataflow offers to sinks. Both carry data on worker 0 only.
pub struct Outputs<'s> {
    /// One batch per published progress mark, in increasing time.
    pub published: StreamVec<'s, u64, Published>,
    /// Dead letters, as they are found.
    pub dead: StreamVec<'s, u64, DeadLetter>,
}

/// Builds the whole dataflow over a source stream (see the crate doc for its shape).
pub fn build<'s>(
    source: StreamVec<'s, u64, (SourceRecord, u64)>,
    config: Arc<Config>,
    stats: Arc<Stats>,
) -> Outputs<'s> {
    let scope = source.scope();
    let routed = source.exchange(|(r, _)| r.route());
    let mut parts = routed.partition(5, |(r, t)| {
        let part = match &r {
            SourceRecord::Event(s) if s.event.is_book() => 0,
            SourceRecord::Event(_) => 1,
            SourceRecord::Name(..) => 2,
            SourceRecord::Dead(_) => 3,
            SourceRecord::End { .. } => 4,
        };
        (part, (r, t))
    });
    let ends = parts.pop().expect("5 parts").flat_map(|(r, _)| match r {
        SourceRecord::End { last, .. } => Some(last),
        _ => None,
    });
    let dead = parts.pop().expect("5 parts").flat_map(|(r, _)| match r {
        SourceRecord::Dead(d) => Some(d),
        _ => None,
    });
    let names = parts.pop().expect("5 parts").flat_map(|(r, t)| match r {
        SourceRecord::Name(sym, name) => Some(((sym, name), t)),
        _ => None,
    });
    let event = |(r, t): (SourceRecord, u64)| match r {
        SourceRecord::Event(s) => Some((s, t)),
        _ => None,
    };
    let trades = parts.pop().expect("5 parts").flat_map(event);
    let books = parts.pop().expect("5 parts").flat_map(event);

    let books = orderbook::orderbooks(books, ends.clone(), config.clone(), stats.clone());
    let window = ticker::window(trades, ends.clone(), config.clone(), stats.clone());
    let ticker = ticker::aggregate(window.window, ends.clone(), config.granularity_ms);
    let candles = candles::candles(window.accepted, ends.clone(), config.clone(), stats);
    let components = Components {
        names,
        sides: books.sides,
        meta: books.meta,
        bbo: books.bbo,
        ticker,
        candles,
    };
    let published = results::publish(scope, components, ends, config);
    Outputs { published, dead }
}
