//! Tampines' dataflow logic: the event model, orderbooks, the rolling ticker and candles, on
//! timely and differential dataflow. No I/O: inputs arrive through [`source::Inputs`] (files'
//! lines, parsed ahead by [`ahead`], or Kafka messages; the harness's [`source::lines`] takes
//! plain iterators), results leave as a stream of [`results::Published`] batches and dead letters
//! as a stream of [`source::DeadLetter`]s; the binary attaches files, Kafka and Redis to them.
//!
//! Data flow, source to sink ([`build`]):
//!
//! ```text
//! source::source ─routing::to_workers─┬─ books, names ─ orderbook::orderbooks ─ book records ─────────────────┐
//!            (split::split3 by kind)  │                              │ bbo                                    │
//!                                     └─ trades ─ ticker::window ─┬─ entering, bbo, names ─ ticker::aggregate ┤
//!                                                                 │                       ticker records ────┤
//!                                                                 └─ accepted, names ─ candles::candles ─────┤
//!                                                                                       candle records ──────┤
//!                                              results::gather: every mark's records, on worker 0 ◄───────────┘
//! ```
//!
//! Not drawn: the source's rare records are split off again into names (to every stage that
//! renders records: books, ticker and candles),
//! dead letters (straight to [`Outputs::dead`]) and inputs' ends (to every stage, which closes
//! its last marks with them), and the window's `outside` (the symbol of a trade that was already
//! outside the window when it arrived, so that the symbol has a ticker from then on) goes to the
//! ticker too.
//!
//! Invariant: after [`routing::to_workers`], every stage reads with the `Pipeline` pact, but
//! [`results::gather`], which sends every rendered record to worker 0. All of a
//! symbol's records, books and trades alike, are on the worker `sym % peers` of the job, which is
//! what lets the ticker join the book's best prices without another exchange.
//!
//! Live sources (Kafka) also tell each other how far their inputs are, on a small dataflow of
//! its own beside this one ([`idle`]), so silent inputs are judged over the whole job.

#![warn(missing_docs)]

pub mod agg;
pub mod ahead;
pub mod candles;
pub mod config;
pub mod event;
pub mod idle;
pub mod orderbook;
pub mod quotients;
pub mod results;
pub mod routing;
pub mod sequence;
pub mod source;
pub mod split;
pub mod stats;
pub mod ticker;
pub mod time;
pub mod types;
mod words;

use std::sync::Arc;

use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, Concatenate};
use timely::dataflow::StreamVec;

use crate::candles::CandleInput;
use crate::config::Config;
use crate::orderbook::BookInput;
use crate::results::Published;
use crate::source::{DeadLetter, SourceRecord};
use crate::split::{split3, Part3};
use crate::stats::Stats;
use crate::ticker::TickerInput;
use crate::types::{Sym, SymbolName};

/// The streams a built dataflow offers to sinks. Both carry data on worker 0 only.
pub struct Outputs<'s> {
    /// One batch per published progress mark, in increasing time.
    pub published: StreamVec<'s, u64, Published>,
    /// Dead letters, as they are found.
    pub dead: StreamVec<'s, u64, DeadLetter>,
}

/// The rare kinds of source record, split off together.
#[derive(Clone)]
enum Other {
    Name(((Sym, SymbolName), u64)),
    Dead(DeadLetter),
    End(u64),
}

/// Builds the whole dataflow over a source stream (see the crate doc for its shape).
pub fn build<'s>(
    source: StreamVec<'s, u64, (SourceRecord, u64)>,
    config: Arc<Config>,
    stats: Arc<Stats>,
) -> Outputs<'s> {
    let scope = source.scope();
    let routed = routing::to_workers(source);
    let (books, trades, others) = split3(routed, "Route", |(r, t)| match r {
        SourceRecord::Event(s) if s.event.is_book() => Part3::First((BookInput::Event(s), t)),
        SourceRecord::Event(s) => Part3::Second((s, t)),
        SourceRecord::Name(sym, name) => Part3::Third(Other::Name(((sym, name), t))),
        SourceRecord::Dead(d) => Part3::Third(Other::Dead(d)),
        SourceRecord::End { last, .. } => Part3::Third(Other::End(last)),
    });
    // Names, dead letters and ends are rare: a second split is cheaper than wider enums.
    let (names, dead, ends) = split3(others, "RouteOthers", |o| match o {
        Other::Name(n) => Part3::First(n),
        Other::Dead(d) => Part3::Second(d),
        Other::End(last) => Part3::Third(last),
    });

    // Every stage that publishes renders its own records, under the symbols' names: they go to
    // each of them.
    let book_names = names
        .clone()
        .map(|((sym, name), t)| (BookInput::Name(sym, name), t));
    let books = orderbook::orderbooks(
        books.concat(book_names),
        ends.clone(),
        config.clone(),
        stats.clone(),
    );
    let window = ticker::window(trades, ends.clone(), config.clone(), stats.clone());
    let ticker_input = scope.concatenate([
        (window.entering)
            .map(|((sym, leaves, trade), t)| (TickerInput::Enter(sym, leaves, trade), t)),
        (window.outside).map(|(sym, t)| (TickerInput::Outside(sym), t)),
        (books.bbo.inner).map(|((sym, bbo), t, diff)| (TickerInput::Bbo(sym, bbo, diff), t)),
        names
            .clone()
            .map(|((sym, name), t)| (TickerInput::Name(sym, name), t)),
    ]);
    let tickers = ticker::aggregate(ticker_input, ends.clone(), config.clone(), stats.clone());
    let candle_names = names.map(|((sym, name), t)| (CandleInput::Name(sym, name), t));
    let accepted = window
        .accepted
        .map(|((sym, trade), t)| (CandleInput::Trade(sym, trade), t));
    let candles = candles::candles(
        accepted.concat(candle_names),
        ends.clone(),
        config.clone(),
        stats,
    );
    let published = results::gather(scope, [books.changes, tickers, candles], ends);
    Outputs { published, dead }
}
