//! Results: the records of CONTRACT section 3, how they are rendered, and how a mark's records
//! are gathered.
//!
//! Every stage that owns a kind of result renders its records where they live, on the worker
//! that owns their symbol, with the pieces this module offers: books (`RenderedSide` keeps a
//! side's text between renderings), tickers and candles (`View` writes any record, borrowing
//! its parts from the stage's state), each change named by its [`ResultName`], made once per
//! result. A stage renders its records of a mark one after another into one text
//! (`Rendering`), which they share ([`Json`]); a mark larger than a buffer lies in several. A stage renders a record exactly when its value
//! (all but `ts`) changed, and sorts the changes of each mark it emits.
//!
//! [`gather`] runs on worker 0: it collects the rendered [`Change`]s of a complete timestamp from
//! all stages and workers into one [`Published`] batch, sorted (kind, exchange, symbol,
//! resolution or interval, open time) so the output does not depend on the number of workers,
//! and adds the final mark `ceil(max ts / g) * g` of a finite input.
//!
//! Output: one batch per timestamp with a change, in increasing time, on worker 0.

use std::borrow::Cow;
use std::cell::Cell;
use std::cmp::Ordering;
use std::ops::Range;
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::{Bytes, BytesMut};
use rust_decimal::Decimal;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use timely::dataflow::operators::Concatenate;
use timely::dataflow::{Scope, StreamVec};

use crate::agg::{Agg, Candle};
use crate::config::Config;
use crate::quotients::change_pct;
use crate::sequence::sequence;
use crate::types::{
    push_decimal as push_decimal_text, Bbo, BigId, BookPrice, FoldMap, Levels, Price, Side, Sym,
    SymbolName, TradeId,
};

/// A book's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// In sequence, not crossed.
    Ok,
    /// No snapshot yet, or a gap since the last one.
    Stale,
    /// Raw best bid >= raw best ask.
    Crossed,
}

impl Status {
    /// As written in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Stale => "stale",
            Status::Crossed => "crossed",
        }
    }
}

/// Identifies a result: what a Redis key or a record stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResultKey {
    /// A book at a resolution.
    Book(Sym, u32),
    /// A ticker.
    Ticker(Sym),
    /// A candle: symbol, interval index, open time.
    Candle(Sym, u32, u64),
}

impl ResultKey {
    /// The result's symbol.
    pub fn sym(&self) -> Sym {
        match *self {
            ResultKey::Book(sym, _) | ResultKey::Ticker(sym) | ResultKey::Candle(sym, _, _) => sym,
        }
    }
}

/// The ticker's trade-derived fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TickerStats {
    /// Aggregate of the trades in the window.
    pub agg: Agg,
    /// vwap, rounded to 8 places.
    pub vwap: Decimal,
    /// last - open.
    pub change: Decimal,
    /// change / open x 100, rounded to 4 places; `None` when that is beyond a 96-bit decimal
    /// with its 4 places (above about 7.9 x 10^24: `open` below about 10^-8, as no price
    /// reaches 10^15), which is published as `null` rather than stopping the job.
    pub change_pct: Option<Decimal>,
}

impl TickerStats {
    /// Derives the ticker fields from the window's aggregate.
    pub fn new(agg: Agg) -> TickerStats {
        let (change, change_pct) = change_pct(agg.last.price.value(), agg.open.price.value());
        TickerStats {
            vwap: agg.vwap(),
            change,
            change_pct,
            agg,
        }
    }
}

/// A result record (without its `ts`, which is the mark it is published at), as a value: the
/// form the harness's model and the benchmarks' baseline compute. The stages do not build it;
/// they render their records straight from their state through `View`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A book at one resolution.
    Book {
        /// Names.
        name: SymbolName,
        /// Resolution.
        resolution: u32,
        /// Last applied seq.
        seq: Option<u64>,
        /// Status.
        status: Status,
        /// Bids, best first.
        bids: Levels,
        /// Asks, best first.
        asks: Levels,
    },
    /// The rolling ticker.
    Ticker {
        /// Names.
        name: SymbolName,
        /// `None` when no trade is in the window.
        stats: Option<TickerStats>,
        /// Raw best bid and ask.
        bbo: Bbo,
    },
    /// A candle.
    Candle {
        /// Names.
        name: SymbolName,
        /// Interval name.
        interval: String,
        /// Interval length.
        interval_ms: u64,
        /// Open time.
        open_time: u64,
        /// Value.
        candle: Candle,
    },
}

/// Where records are written: a [`Rendering`]'s text (bytes that become shared pieces) or a
/// `String` (a book side's text, a record rendered alone). Only text is written, so the bytes
/// are always UTF-8.
pub(crate) trait Out: std::fmt::Write {
    /// Appends `s`.
    fn push_str(&mut self, s: &str);
    /// Appends `c`.
    fn push(&mut self, c: char);
}

impl Out for String {
    fn push_str(&mut self, s: &str) {
        String::push_str(self, s);
    }

    fn push(&mut self, c: char) {
        String::push(self, c);
    }
}

impl Out for BytesMut {
    fn push_str(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }

    fn push(&mut self, c: char) {
        self.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
    }
}

/// Appends a trade id as a JSON string literal, without formatting it into a string first.
fn push_id(out: &mut impl Out, id: &TradeId) {
    match id {
        TradeId::Num(n) => {
            out.push('"');
            push_u64(out, *n);
            out.push('"');
        }
        TradeId::Big(BigId(s)) | TradeId::Text(s) => push_str(out, s),
    }
}

/// Appends `s` as a JSON string literal.
fn push_str(out: &mut impl Out, s: &str) {
    out.push('"');
    push_escaped(out, s);
    out.push('"');
}

/// Appends the text of `s` as inside a JSON string, escaped as needed.
fn push_escaped(out: &mut impl Out, s: &str) {
    // Names and ids rarely need escaping: then they go in whole.
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// `,"name":` as one literal: a record's keys are appended in one piece each (three appends a
/// key were a twentieth of rendering tickers and candles).
macro_rules! key {
    ($name:literal) => {
        concat!(",\"", $name, "\":")
    };
}

/// Appends `key` (a [`key!`]) and a decimal as a JSON string.
fn push_dec(out: &mut impl Out, key: &str, d: impl Into<Decimal>) {
    out.push_str(key);
    push_decimal(out, d.into());
}

/// `key` and the decimal in quotes, or `null`.
fn push_opt_dec(out: &mut impl Out, key: &str, d: Option<impl Into<Decimal>>) {
    match d {
        Some(d) => push_dec(out, key, d),
        None => {
            out.push_str(key);
            out.push_str("null");
        }
    }
}

fn push_decimal(out: &mut impl Out, d: Decimal) {
    out.push('"');
    push_decimal_text(out, d);
    out.push('"');
}

/// A book side rendered as its JSON array (`[["price","size"],...]`), with where each level's
/// text starts. The book stage keeps two per side and resolution (the one shown, and the buffers
/// of the one before) and renders a changed side from the one shown, copying the text of every
/// level whose price and size are unchanged, and the price's text of a level whose size alone
/// changed (an update touches a few levels; rendering all of them again was most of the cost of
/// publishing a book).
#[derive(Clone, Debug, Default)]
pub(crate) struct RenderedSide {
    levels: Levels,
    text: String,
    starts: Vec<usize>,
}

impl RenderedSide {
    /// The levels rendered.
    pub(crate) fn levels(&self) -> &Levels {
        &self.levels
    }

    /// The levels rendered, taken out (their allocation is reused); the text stays.
    pub(crate) fn take_levels(&mut self) -> Levels {
        std::mem::take(&mut self.levels)
    }

    /// The JSON array (`[]` for a side never rendered).
    pub(crate) fn text(&self) -> &str {
        if self.text.is_empty() {
            "[]"
        } else {
            &self.text
        }
    }

    /// Renders `levels` (best first on `side`), reusing the text of `old`'s equal levels (see
    /// [`RenderedSide::render`]).
    pub(crate) fn new(side: Side, levels: Levels, old: Option<&RenderedSide>) -> RenderedSide {
        let mut rendered = RenderedSide::default();
        rendered.render(side, levels, old);
        rendered
    }

    /// Renders `levels` (best first on `side`) into these buffers, whose text is replaced,
    /// reusing the text of `old`'s equal levels: the levels both share at the front and at the
    /// back are copied in one piece each (an update usually changes one level); between them, a
    /// level found in `old` is copied with the ones after it that follow it there too, in one
    /// piece (a level inserted or removed near the top shifts every level below it). The book
    /// stage renders each side into the buffers of the text it showed before the last (two per
    /// side, taking turns), so that rendering allocates nothing.
    pub(crate) fn render(&mut self, side: Side, levels: Levels, old: Option<&RenderedSide>) {
        let shared = old.map_or((0, 0), |o| o.shared(&levels));
        self.render_sharing(side, levels, old, shared);
    }

    /// [`RenderedSide::render`], given how many levels `old` and `levels` share at the front
    /// and then at the back ([`RenderedSide::shared`], which a caller that compared them
    /// already knows).
    pub(crate) fn render_sharing(
        &mut self,
        side: Side,
        levels: Levels,
        old: Option<&RenderedSide>,
        (front, back): (usize, usize),
    ) {
        let old = old.filter(|o| !o.levels.is_empty());
        let n = levels.len();
        let order = |p: Price| BookPrice { side, price: p };
        let (text, starts) = (&mut self.text, &mut self.starts);
        text.clear();
        starts.clear();
        text.reserve(2 + 40 * n);
        starts.reserve(n);
        text.push('[');
        if let Some(old) = old.filter(|_| front > 0) {
            // The first level starts right after the bracket, in both.
            text.push_str(&old.text[1..old.end(front - 1)]);
            starts.extend_from_slice(&old.starts[..front]);
        }
        let (mut i, mut j, middle_end) = (front, front, n - back);
        while i < middle_end {
            let (price, size) = levels[i];
            if i > 0 {
                text.push(',');
            }
            if let Some(old) = old {
                // Both are in book order: walk the old levels along with the new.
                while j < old.levels.len() && order(old.levels[j].0) < order(price) {
                    j += 1;
                }
                if old.levels.get(j) == Some(&(price, size)) {
                    // This level and the ones after it that follow it in the old side too, in
                    // one piece (a level inserted or removed near the top shifts all below it,
                    // which then share neither the front nor the back).
                    let mut run = 1;
                    while i + run < middle_end && old.levels.get(j + run) == Some(&levels[i + run])
                    {
                        run += 1;
                    }
                    let (from, at) = (old.starts[j], text.len());
                    text.push_str(&old.text[from..old.end(j + run - 1)]);
                    starts.extend(old.starts[j..j + run].iter().map(|&s| s - from + at));
                    (i, j) = (i + run, j + run);
                    continue;
                }
            }
            starts.push(text.len());
            i += 1;
            // `["price","size"]`; a level whose size alone changed (most of those rendered)
            // keeps its price's text.
            text.push_str("[\"");
            match old.and_then(|old| old.price_text(j, price)) {
                Some(shown) => text.push_str(shown),
                None => push_decimal_text(text, price.value()),
            }
            text.push_str("\",\"");
            push_decimal_text(text, size.value());
            text.push_str("\"]");
        }
        if let Some(old) = old.filter(|_| back > 0) {
            if n > back {
                text.push(',');
            }
            let first = old.levels.len() - back;
            let from = old.starts[first];
            let at = text.len();
            text.push_str(&old.text[from..old.text.len() - 1]);
            starts.extend(old.starts[first..].iter().map(|&s| s - from + at));
        }
        text.push(']');
        self.levels = levels;
    }

    /// The text of level `i`'s price, if that is `price`.
    fn price_text(&self, i: usize, price: Price) -> Option<&str> {
        if self.levels.get(i)?.0 != price {
            return None;
        }
        // After the level's `["`, up to the quote that closes the price.
        let start = self.starts[i] + 2;
        let rest = &self.text.as_bytes()[start..];
        let len = match crate::words::quote_in_word(rest) {
            Some(len) => len,
            None => rest.iter().position(|&b| b == b'"')?,
        };
        Some(&self.text[start..start + len])
    }

    /// Where the text of level `i` ends: at the comma before the next level, or at the bracket.
    fn end(&self, i: usize) -> usize {
        self.starts
            .get(i + 1)
            .map_or(self.text.len() - 1, |&n| n - 1)
    }

    /// How many levels `levels` shares with these at the front, and then at the back (all of
    /// them at the front, and none at the back, when they are equal).
    pub(crate) fn shared(&self, levels: &Levels) -> (usize, usize) {
        let old = &self.levels;
        let front = levels.iter().zip(old).take_while(|(a, b)| a == b).count();
        let rest = levels.len().min(old.len()) - front;
        let back = (levels.iter().rev().zip(old.iter().rev()))
            .take(rest)
            .take_while(|(a, b)| a == b)
            .count();
        (front, back)
    }
}

/// `{"kind":"KIND","exchange":"` as one literal.
macro_rules! head {
    ($kind:literal) => {
        concat!("{\"kind\":\"", $kind, "\",\"exchange\":\"")
    };
}

/// `head` (a [`head!`]), then the exchange and symbol, escaped.
fn names_head(head: &str, name: &SymbolName) -> String {
    let mut out = String::with_capacity(head.len() + name.exchange.len() + name.symbol.len() + 48);
    out.push_str(head);
    push_escaped(&mut out, &name.exchange);
    out.push_str("\",\"symbol\":\"");
    push_escaped(&mut out, &name.symbol);
    out.push('"');
    out
}

/// The start of a book's records at `resolution`, the same in all of them: its kind, names and
/// resolution, up to the mark's `ts`. Each publishing stage makes a result's head once, with its
/// name, and starts every record with it (writing the names and resolution again for every
/// record was a twentieth of the work on the Flink file).
fn book_head(name: &SymbolName, resolution: u32) -> String {
    let mut out = names_head(head!("book"), name);
    out.push_str(",\"resolution\":");
    push_u64(&mut out, u64::from(resolution));
    out.push_str(",\"ts\":");
    out
}

/// The start of a ticker's records, up to the mark's `ts` (see [`book_head`]).
fn ticker_head(name: &SymbolName) -> String {
    let mut out = names_head(head!("ticker"), name);
    out.push_str(",\"ts\":");
    out
}

/// The start of the records of a candle series of `interval`, up to the candle's `open_time`
/// (see [`book_head`]).
fn candle_head(name: &SymbolName, interval: &str) -> String {
    let mut out = names_head(head!("candle"), name);
    out.push_str(key!("interval"));
    push_str(&mut out, interval);
    out.push_str(",\"open_time\":");
    out
}

/// Appends what follows a candle record's head ([`candle_head`]): its open time, and its close
/// time (`O,"close_time":C`). A series' candle keeps them from its first record to its last.
pub(crate) fn push_candle_times(out: &mut impl Out, open_time: u64, interval_ms: u64) {
    push_u64(out, open_time);
    out.push_str(",\"close_time\":");
    push_u64(out, open_time + interval_ms - 1);
}

/// Appends a candle's aggregate fields, `,"open":..` to `,"count":..`: what two candles of
/// equal aggregates share.
pub(crate) fn push_candle_body(out: &mut impl Out, a: &Agg) {
    push_dec(out, key!("open"), a.open.price);
    push_dec(out, key!("high"), a.high);
    push_dec(out, key!("low"), a.low);
    push_dec(out, key!("close"), a.last.price);
    push_dec(out, key!("volume"), a.volume);
    push_dec(out, key!("buy_volume"), a.buy_volume);
    push_dec(out, key!("quote_volume"), a.quote_volume);
    out.push_str(key!("count"));
    push_u64(out, a.count);
}

/// A record's fields, borrowed where they are stored: what is rendered. Each publishing stage
/// renders straight from its state through this, without copying its parts into a [`Record`].
// A view lives on the stack for one rendering: the ticker's inline stats cost nothing there.
#[allow(clippy::large_enum_variant)]
pub(crate) enum View<'a> {
    Book {
        /// [`book_head`].
        head: Cow<'a, str>,
        /// The mark, sequence number and status ([`push_book_stamp`]): the same at every
        /// resolution of a book and mark, so rendered once for all of them.
        stamp: Cow<'a, str>,
        bids: Cow<'a, str>,
        asks: Cow<'a, str>,
    },
    Ticker {
        /// [`ticker_head`].
        head: Cow<'a, str>,
        stats: Option<TickerStats>,
        bbo: Bbo,
    },
    Candle {
        /// [`candle_head`].
        head: Cow<'a, str>,
        interval_ms: u64,
        open_time: u64,
        candle: &'a Candle,
        /// The candle's open and close times already rendered ([`push_candle_times`]), if they
        /// are.
        times: Option<&'a str>,
        /// The candle's aggregate fields already rendered ([`push_candle_body`]), if they are.
        body: Option<&'a str>,
    },
}

/// Appends what follows a book record's head ([`book_head`]) up to its sides: the mark `ts`, the
/// sequence number and the status (`T,"seq":S,"status":"ok"`).
pub(crate) fn push_book_stamp(out: &mut impl Out, ts: u64, seq: Option<u64>, status: Status) {
    push_u64(out, ts);
    out.push_str(",\"seq\":");
    match seq {
        Some(s) => push_u64(out, s),
        None => out.push_str("null"),
    }
    out.push_str(",\"status\":\"");
    out.push_str(status.as_str());
    out.push('"');
}

/// Appends an unsigned integer.
fn push_u64(out: &mut impl Out, v: u64) {
    out.push_str(itoa::Buffer::new().format(v));
}

impl View<'_> {
    /// Appends the JSON object of CONTRACT section 3, published at mark `ts`, to `out`.
    fn write_json(&self, ts: u64, out: &mut impl Out) {
        match self {
            View::Book {
                head,
                stamp,
                bids,
                asks,
            } => {
                out.push_str(head);
                out.push_str(stamp);
                out.push_str(key!("bids"));
                out.push_str(bids);
                out.push_str(key!("asks"));
                out.push_str(asks);
            }
            View::Ticker { head, stats, bbo } => {
                out.push_str(head);
                push_u64(out, ts);
                match stats {
                    Some(s) => {
                        let a = &s.agg;
                        push_dec(out, key!("open"), a.open.price);
                        push_dec(out, key!("high"), a.high);
                        push_dec(out, key!("low"), a.low);
                        push_dec(out, key!("last"), a.last.price);
                        push_dec(out, key!("volume"), a.volume);
                        push_dec(out, key!("quote_volume"), a.quote_volume);
                        push_dec(out, key!("vwap"), s.vwap);
                        out.push_str(key!("count"));
                        push_u64(out, a.count);
                        push_dec(out, key!("change"), s.change);
                        push_opt_dec(out, key!("change_pct"), s.change_pct);
                        out.push_str(key!("open_ts"));
                        push_u64(out, a.open.ts);
                        out.push_str(key!("last_ts"));
                        push_u64(out, a.last.ts);
                        out.push_str(key!("first_id"));
                        push_id(out, &a.open.id);
                        out.push_str(key!("last_id"));
                        push_id(out, &a.last.id);
                    }
                    None => out.push_str(
                        ",\"open\":null,\"high\":null,\"low\":null,\"last\":null,\"volume\":null,\"quote_volume\":null,\"vwap\":null,\"count\":0,\"change\":null,\"change_pct\":null,\"open_ts\":null,\"last_ts\":null,\"first_id\":null,\"last_id\":null",
                    ),
                }
                for (key, p) in [(key!("bid"), bbo.bid), (key!("ask"), bbo.ask)] {
                    push_opt_dec(out, key, p);
                }
            }
            View::Candle {
                head,
                interval_ms,
                open_time,
                candle,
                times,
                body,
            } => {
                out.push_str(head);
                match times {
                    Some(times) => out.push_str(times),
                    None => push_candle_times(out, *open_time, *interval_ms),
                }
                match body {
                    Some(body) => out.push_str(body),
                    None => push_candle_body(out, &candle.agg),
                }
                out.push_str(if candle.closed {
                    ",\"closed\":true"
                } else {
                    ",\"closed\":false"
                });
            }
        }
        out.push('}');
    }
}

impl Record {
    /// The record's view at mark `ts` (which a book's stamp holds).
    fn view(&self, ts: u64) -> View<'_> {
        match self {
            Record::Book {
                name,
                resolution,
                seq,
                status,
                bids,
                asks,
            } => {
                let text =
                    |side, levels: &Levels| RenderedSide::new(side, levels.clone(), None).text;
                let mut stamp = String::new();
                push_book_stamp(&mut stamp, ts, *seq, *status);
                View::Book {
                    head: Cow::Owned(book_head(name, *resolution)),
                    stamp: Cow::Owned(stamp),
                    bids: Cow::Owned(text(Side::Bid, bids)),
                    asks: Cow::Owned(text(Side::Ask, asks)),
                }
            }
            Record::Ticker { name, stats, bbo } => View::Ticker {
                head: Cow::Owned(ticker_head(name)),
                stats: stats.clone(),
                bbo: bbo.clone(),
            },
            Record::Candle {
                name,
                interval,
                interval_ms,
                open_time,
                candle,
            } => View::Candle {
                head: Cow::Owned(candle_head(name, interval)),
                interval_ms: *interval_ms,
                open_time: *open_time,
                candle,
                times: None,
                body: None,
            },
        }
    }

    /// Appends the JSON object of CONTRACT section 3, published at mark `ts`, to `out`.
    pub fn write_json(&self, ts: u64, out: &mut String) {
        self.view(ts).write_json(ts, out);
    }

    /// The record as a JSON value (what [`Record::write_json`] writes, parsed back).
    pub fn to_json(&self, ts: u64) -> Value {
        let mut s = String::new();
        self.write_json(ts, &mut s);
        serde_json::from_str(&s).expect("records render as valid JSON")
    }

    /// The symbol's names.
    pub fn name(&self) -> &SymbolName {
        match self {
            Record::Book { name, .. }
            | Record::Ticker { name, .. }
            | Record::Candle { name, .. } => name,
        }
    }
}

/// What names a result, made once per result (a book at a resolution, a ticker, a candle series)
/// and shared by its changes, for the life of the process (`intern`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResultName {
    /// The first 16 bytes of the kind, the exchange, a zero byte and the symbol (the names'
    /// bytes each plus one), big-endian, zero-padded ([`prefix_of`]): changes whose prefixes
    /// differ are in this order, as by `order`, without comparing strings (half of gathering
    /// was string comparisons). First, so that the derived order stays that of `order`.
    prefix: u128,
    /// Order of changes: kind, exchange, symbol, resolution or interval length.
    order: (u8, Arc<str>, Arc<str>, u64),
    /// The prefix holds the kind and both names whole: two such names with equal prefixes
    /// have equal kinds and names, and only the resolution or interval orders them.
    whole: bool,
    /// The result's key without prefix (CONTRACT section 4): `book:EX:SYM:R`, `ticker:EX:SYM`,
    /// `candles:EX:SYM:INTERVAL`.
    key: String,
}

/// The one copy of `name` in this process: made on its first use and kept for good, so that
/// changes refer to it by a plain reference. An `Arc` cloned by the worker that renders a change
/// and dropped by the one that writes it moved its count's cache line between the cores at
/// every change (the samples right after that increment were two fifths of the book stage's
/// flush); without it the Flink file took 1-2% less time. Results are few and live as long as
/// their stages (a book at a resolution, a ticker, a candle series: about a dozen per symbol),
/// so what is kept is bounded by them; a name that arrives from another process is made once
/// here too ([`interned`]).
pub(crate) fn intern(name: ResultName) -> &'static ResultName {
    let mut names = names();
    match known(&names, &name.key, |n| *n == name) {
        Some(known) => known,
        None => keep(&mut names, name),
    }
}

/// Every name made in this process, by key. A key almost always has one name; two spellings of
/// a symbol can share one (`a:b` + `c` and `a` + `b:c`, see [`Names`]).
type Kept = FoldMap<&'static str, Vec<&'static ResultName>>;

/// The names made in this process, locked.
fn names() -> std::sync::MutexGuard<'static, Kept> {
    static NAMES: OnceLock<Mutex<Kept>> = OnceLock::new();
    (NAMES.get_or_init(Default::default).lock()).unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The name kept under `key` that is `same`, if one is.
fn known(
    names: &Kept,
    key: &str,
    same: impl Fn(&ResultName) -> bool,
) -> Option<&'static ResultName> {
    names.get(key)?.iter().copied().find(|&n| same(n))
}

/// Keeps `name` for good.
fn keep(names: &mut Kept, name: ResultName) -> &'static ResultName {
    let made: &'static ResultName = Box::leak(Box::new(name));
    names.entry(made.key.as_str()).or_default().push(made);
    made
}

/// Changes' names cross processes by value and are interned where they arrive. They are read
/// with their texts borrowed from the message (bincode reads from a slice), so a name already
/// kept costs one lookup by key and no allocation: reading names whole (two `Arc<str>` and a
/// `String`, hashed whole and dropped) was 6% of the samples of the process that writes, at
/// `-w 1 -n 2` on the live file.
mod interned {
    use std::borrow::Cow;
    use std::fmt;
    use std::sync::Arc;

    use serde::de::{Deserializer, Visitor};
    use serde::{Deserialize, Serialize, Serializer};

    use super::{keep, known, names, ResultName};

    pub(super) fn serialize<S: Serializer>(
        name: &&'static ResultName,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        name.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<&'static ResultName, D::Error> {
        Arriving::deserialize(d).map(Arriving::intern)
    }

    /// A [`ResultName`] as it arrives: the same fields, in the same order, texts borrowed where
    /// the reader allows (bincode always does; JSON not when a text has escapes).
    #[derive(Deserialize)]
    struct Arriving<'a> {
        prefix: u128,
        #[serde(borrow)]
        order: (u8, Text<'a>, Text<'a>, u64),
        whole: bool,
        #[serde(borrow)]
        key: Text<'a>,
    }

    impl Arriving<'_> {
        /// Whether `name` is this one.
        fn is(&self, name: &ResultName) -> bool {
            let (kind, exchange, symbol, size) = &self.order;
            (name.prefix, name.whole, name.order.0, name.order.3)
                == (self.prefix, self.whole, *kind, *size)
                && *name.order.1 == *exchange.0
                && *name.order.2 == *symbol.0
        }

        /// The name kept in this process for this one, kept now if it is new.
        fn intern(self) -> &'static ResultName {
            let mut names = names();
            if let Some(known) = known(&names, &self.key.0, |n| self.is(n)) {
                return known;
            }
            let (kind, exchange, symbol, size) = self.order;
            let name = ResultName {
                prefix: self.prefix,
                order: (kind, Arc::from(exchange.0), Arc::from(symbol.0), size),
                whole: self.whole,
                key: self.key.0.into_owned(),
            };
            keep(&mut names, name)
        }
    }

    /// A text borrowed from the message when the reader allows.
    struct Text<'a>(Cow<'a, str>);

    impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Borrowing;
            impl<'de> Visitor<'de> for Borrowing {
                type Value = Cow<'de, str>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                    Ok(Cow::Borrowed(v))
                }
                fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                    Ok(Cow::Owned(v.to_owned()))
                }
                fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                    Ok(Cow::Owned(v))
                }
            }
            d.deserialize_str(Borrowing).map(Text)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::config::Config;
        use crate::results::{named_result, ResultKey};
        use crate::types::{Sym, SymbolName};

        /// Between processes (bincode, from a slice) a name's texts are borrowed from the
        /// message, not copied: what makes a name already kept cost no allocation.
        #[test]
        fn arriving_names_borrow_their_texts() {
            let symbol = SymbolName {
                exchange: "ex".into(),
                symbol: "S".into(),
            };
            let key = ResultKey::Ticker(Sym::of("ex", "S"));
            let (name, _) = named_result(&key, &symbol, &Config::default());
            let bytes = bincode::serialize(name).expect("serialize");
            let arriving: Arriving = bincode::deserialize(&bytes).expect("deserialize");
            let borrowed = |t: &Text| matches!(t.0, Cow::Borrowed(_));
            assert!(
                borrowed(&arriving.key)
                    && borrowed(&arriving.order.1)
                    && borrowed(&arriving.order.2)
            );
            assert!(arriving.is(name));
            assert!(std::ptr::eq(arriving.intern(), name));
        }
    }
}

/// One changed result, rendered where its symbol lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The result's name (`intern`).
    #[serde(with = "interned")]
    pub name: &'static ResultName,
    /// Sorted-set score: the open time of a candle.
    pub score: Option<u64>,
    /// The record's JSON; `None` when the result no longer exists (a candle dropped by retention).
    pub json: Option<Json>,
}

/// A record's JSON text: a range of the text that the records one stage rendered at one mark
/// on one worker share (`Rendering`), so that a record costs no allocation of its own (made
/// where it was rendered and freed on the publishing worker; design note
/// 20261207_records_of_a_mark_in_one_text). Read as a `&str` (`Deref`, which checks that it is
/// UTF-8), or as bytes without reading them (the sinks); compared, printed and serialized as
/// its text; made from a `String` (a text of its own) where a record arrives from another
/// process or a test. Where one record may be kept for many marks (the Redis writer's changes
/// kept while catching up), it is [`Json::detached`]: kept as it is, it would keep its mark's
/// other records' text too, and the buffer that text lies in.
#[derive(Clone)]
pub struct Json {
    /// The shared text: its mark's piece of the bytes its stage renders into.
    text: Arc<Bytes>,
    /// Where the record lies in it.
    start: usize,
    /// Where it ends.
    end: usize,
}

impl Json {
    /// The record's bytes: read without looking at them (a `&str` checks that they are
    /// UTF-8, which reads the text: the sink of a replay never does otherwise).
    pub fn as_bytes(&self) -> &[u8] {
        &self.text[self.start..self.end]
    }

    /// The record's text. Records are written as text only (`Out`), so the check that they
    /// are UTF-8 never fails.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("records are written as text")
    }

    /// The record with a text of its own, for a record kept while the others of its mark go:
    /// kept as it is, it would keep their text too. Always a copy: a piece, even one that holds
    /// this record alone, keeps the whole buffer it was split from alive.
    pub fn detached(self) -> Json {
        let end = self.end - self.start;
        Json {
            text: Arc::new(Bytes::copy_from_slice(self.as_bytes())),
            start: 0,
            end,
        }
    }
}

impl std::ops::Deref for Json {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Json {
    fn from(text: &str) -> Json {
        Json::from(text.to_owned())
    }
}

impl From<String> for Json {
    fn from(text: String) -> Json {
        let end = text.len();
        Json {
            text: Arc::new(Bytes::from(text)),
            start: 0,
            end,
        }
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Json {}

impl std::fmt::Debug for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

impl Serialize for Json {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        String::deserialize(d).map(Json::from)
    }
}

/// The records a stage renders at one mark on one worker, written one after another into
/// shared texts ([`Json`]); [`Rendering::finish`] hands them out as changes.
///
/// They are written in place, once: into a buffer of [`PIECE`] bytes that the stage keeps
/// writing from mark to mark, of which each mark's records are split off as a piece of their
/// own (no copy; the buffer is freed once its pieces are), and a new buffer is taken when less
/// than [`ROOM`] is left, or less than the longest record so far; a new buffer holds four of
/// the longest (once that is over 64 KiB; the longest is kept, so a stage that rendered one
/// record of 1 MB takes buffers of 4 MB from then on). Rendered into a text kept in the caches and
/// copied into a shared text of its exact size at the end of each mark, the copy and its
/// allocation were 5-8% of the Flink file's samples; written in place into a new text for each
/// mark, grown by doubling, they were slower still. A mark's piece is an `Arc` of its own, so
/// each record's count is that piece's, not the buffer's: one shared count for all of a
/// buffer's records, raised where they are rendered and lowered where they are written, would
/// move between the cores at every record. An unusually large mark (a replay at a coarse mark,
/// a catch-up) lies in several pieces, one a buffer, so it needs no room twice over, nor leaves
/// that room kept.
#[derive(Default)]
pub(crate) struct Rendering {
    /// The text of the records pushed since the last piece was split off, in a buffer with room
    /// after it for the next ones.
    text: BytesMut,
    /// This mark's changes so far, in push order: those before `cut` with their records, the
    /// others with where each record lies in `text`, if it has one.
    changes: Vec<(Change, Option<Range<usize>>)>,
    /// How many of `changes` have their records.
    cut: usize,
    /// The longest record written so far: a buffer takes the next record only while that much
    /// room is left in it (and [`ROOM`] at least), and new buffers hold four such records (and
    /// [`PIECE`] bytes at least), so that records seldom grow a buffer as they are written
    /// (which copies what the buffer holds and doubles it).
    longest: usize,
}

impl Rendering {
    /// A change of the result `name` (its score, its new record rendered at mark `ts`, or
    /// `None` when the result no longer exists).
    pub(crate) fn push(
        &mut self,
        name: &'static ResultName,
        score: Option<u64>,
        view: Option<&View<'_>>,
        ts: u64,
    ) {
        let range = view.map(|view| {
            if self.text.capacity() - self.text.len() < self.longest.max(ROOM) {
                self.cut();
                self.text.reserve(self.buffer());
            }
            let start = self.text.len();
            view.write_json(ts, &mut self.text);
            self.longest = self.longest.max(self.text.len() - start);
            start..self.text.len()
        });
        let json = None;
        self.changes.push((Change { name, score, json }, range));
    }

    /// The size of a new buffer: four of the longest records, and `PIECE` at least.
    fn buffer(&self) -> usize {
        PIECE.max(4 * self.longest)
    }

    /// Splits the text written since the last piece off into a shared piece of its own, which
    /// the records in it take.
    fn cut(&mut self) {
        if !self.text.is_empty() {
            let text = Arc::new(self.text.split().freeze());
            for (change, range) in &mut self.changes[self.cut..] {
                change.json = range.take().map(|range| Json {
                    text: text.clone(),
                    start: range.start,
                    end: range.end,
                });
            }
        }
        self.cut = self.changes.len();
    }

    /// Hands out the changes pushed since the last call, in the order they were pushed.
    pub(crate) fn finish(&mut self, mut out: impl FnMut(Change)) {
        if self.changes.is_empty() {
            return;
        }
        let count = self.changes.len();
        self.cut();
        self.cut = 0;
        for (change, _) in self.changes.drain(..) {
            out(change);
        }
        if self.changes.capacity() > 2 * count.max(KEPT_CHANGES) {
            self.changes.shrink_to(count.max(KEPT_CHANGES));
        }
    }
}

/// The size of the buffers a [`Rendering`] writes its records into.
const PIECE: usize = 1 << 18;
/// The room left in a [`Rendering`]'s buffer under which the next record goes into a new one,
/// at least (a book record at depth 20 takes about 1 KiB).
const ROOM: usize = 16 << 10;
/// The room a [`Rendering`] keeps for a mark's changes, at least.
const KEPT_CHANGES: usize = 1 << 12;

/// The kinds of result, by their index in [`ResultName`]'s order: the first component of keys.
const KINDS: [&str; 3] = ["book", "ticker", "candles"];

impl Change {
    /// The result's key without prefix (CONTRACT section 4); names are interned for good.
    pub fn key(&self) -> &'static str {
        let name: &'static ResultName = self.name;
        &name.key
    }

    /// The kind of result: `book`, `ticker` or `candles` (the key's first component).
    pub fn kind(&self) -> &'static str {
        KINDS[usize::from(self.name.order.0)]
    }

    /// Order inside a batch: kind, exchange, symbol, resolution or interval, open time.
    pub(crate) fn order(&self, other: &Change) -> Ordering {
        if std::ptr::eq(self.name, other.name) {
            self.score.cmp(&other.score)
        } else {
            let (a, b) = (&self.name, &other.name);
            match a.prefix.cmp(&b.prefix) {
                Ordering::Equal if a.whole && b.whole => {
                    (a.order.3, self.score).cmp(&(b.order.3, other.score))
                }
                Ordering::Equal => (&a.order, self.score).cmp(&(&b.order, other.score)),
                unequal => unequal,
            }
        }
    }
}

/// The names of the symbols a stage publishes, by id: the first ones that arrive are kept. Every
/// publishing stage receives the same names stream in the same order, so all of them publish a
/// symbol under one spelling. (Two spellings share an id only by a hash collision: `Sym::of`
/// separates an exchange that holds `:` from its symbol by a byte no name holds, so `a:b` + `c`
/// and `a` + `b:c`, which share a Redis key, keep their own ids.)
#[derive(Default)]
pub(crate) struct Names(FoldMap<Sym, SymbolName>);

impl Names {
    /// Notes `name` for `sym` unless it already has one.
    pub(crate) fn note(&mut self, sym: Sym, name: SymbolName) {
        self.0.entry(sym).or_insert(name);
    }

    /// The names of `sym`, once they arrived.
    pub(crate) fn get(&self, sym: &Sym) -> Option<&SymbolName> {
        self.0.get(sym)
    }
}

/// What is published at one progress mark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The mark.
    pub time: u64,
    /// Results whose value changed (or that disappeared), sorted.
    pub changes: Vec<Change>,
}

/// [`ResultName::prefix`] and [`ResultName::whole`]: the first 16 bytes of `kind`, the
/// exchange's bytes each plus one, a zero byte and the symbol's bytes each plus one,
/// zero-padded; and whether they all fit. The names' bytes are never zero then (UTF-8 has no
/// byte above 0xF4), so a name that is a prefix of another orders before it, as in the tuple,
/// and zero-padded byte strings that differ order as the strings: unequal prefixes order as the
/// tuples, equal ones leave it to them. The zero byte is the only one in a text, so two texts
/// that both fit and have equal prefixes are equal.
fn prefix_of(kind: u8, exchange: &str, symbol: &str) -> (u128, bool) {
    let mut bytes = [0u8; 16];
    let plus_one = |b: u8| b.saturating_add(1);
    let text = std::iter::once(kind)
        .chain(exchange.bytes().map(plus_one))
        .chain(std::iter::once(0))
        .chain(symbol.bytes().map(plus_one));
    for (b, t) in bytes.iter_mut().zip(text) {
        *b = t;
    }
    let whole = 2 + exchange.len() + symbol.len() <= bytes.len();
    (u128::from_be_bytes(bytes), whole)
}

/// A result as the stage that publishes it keeps it, made once: its name, and the start of its
/// records ([`record_head`]).
pub(crate) type NamedResult = (&'static ResultName, String);

/// The result `key` stands for (open time aside), as its stage keeps it.
pub(crate) fn named_result(key: &ResultKey, name: &SymbolName, config: &Config) -> NamedResult {
    (
        intern(result_name(key, name, config)),
        record_head(key, name, config),
    )
}

/// The start of the records of the result `key` stands for.
fn record_head(key: &ResultKey, name: &SymbolName, config: &Config) -> String {
    match *key {
        ResultKey::Book(_, resolution) => book_head(name, resolution),
        ResultKey::Ticker(_) => ticker_head(name),
        ResultKey::Candle(_, ivl, _) => candle_head(name, &config.intervals[ivl as usize].name),
    }
}

/// The name of the result `key` stands for (open time aside).
fn result_name(key: &ResultKey, name: &SymbolName, config: &Config) -> ResultName {
    let (exchange, symbol) = (&name.exchange, &name.symbol);
    let (kind, sub) = match *key {
        ResultKey::Book(_, resolution) => (0, u64::from(resolution)),
        ResultKey::Ticker(_) => (1, 0),
        ResultKey::Candle(_, ivl, _) => (2, config.intervals[ivl as usize].ms),
    };
    let prefix = KINDS[usize::from(kind)];
    let mut text = String::with_capacity(prefix.len() + exchange.len() + symbol.len() + 13);
    text.push_str(prefix);
    text.push(':');
    text.push_str(exchange);
    text.push(':');
    text.push_str(symbol);
    match *key {
        ResultKey::Book(_, resolution) => {
            text.push(':');
            push_u64(&mut text, u64::from(resolution));
        }
        ResultKey::Ticker(_) => {}
        ResultKey::Candle(_, ivl, _) => {
            text.push(':');
            text.push_str(&config.intervals[ivl as usize].name);
        }
    }
    let (prefix, whole) = prefix_of(kind, exchange, symbol);
    ResultName {
        prefix,
        order: (kind, exchange.clone(), symbol.clone(), sub),
        whole,
        key: text,
    }
}

/// On worker 0: collects the rendered changes of every publishing stage on every worker into one
/// sorted batch per complete timestamp, and adds the final mark of a finite input.
pub fn gather<'s, const N: usize>(
    scope: Scope<'s, u64>,
    changes: [StreamVec<'s, u64, (Change, u64)>; N],
    ends: StreamVec<'s, u64, u64>,
) -> StreamVec<'s, u64, Published> {
    let changes = scope.concatenate(changes);
    let last_published = Rc::new(Cell::new(None::<u64>));
    let published_at = last_published.clone();
    let publisher = scope.index() == 0;
    sequence(
        changes,
        ends,
        crate::routing::to_worker_zero(),
        "Gather",
        |(_, t)| *t,
        move |time, changes, _timers, out: &mut Vec<Published>| {
            let mut changes: Vec<Change> = changes.into_iter().map(|(c, _)| c).collect();
            // Runs sorted by each stage on each worker: the stable sort merges them.
            changes.sort_by(|a, b| a.order(b));
            published_at.set(Some(time));
            out.push(Published { time, changes });
        },
        move |last_mark, out| {
            if let Some(last) = last_mark.filter(|&l| l > 0 && publisher) {
                if last_published.get().is_none_or(|p| p < last) {
                    out.push(Published {
                        time: last,
                        changes: Vec::new(),
                    });
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Qty;

    fn levels(spec: &[(&str, &str)]) -> Levels {
        spec.iter()
            .map(|(p, q)| (Price::parse(p).unwrap(), Qty::parse(q).unwrap()))
            .collect()
    }

    proptest::proptest! {
        /// Names whose prefixes differ order as their (kind, exchange, symbol) tuples, and names
        /// that both fit with equal prefixes are equal: names that share beginnings, hold zero
        /// bytes or run past 16 bytes included.
        #[test]
        fn prefixes_order_as_the_names(
            a in (0u8..3, "[a\\x00]{0,3}[a-c\\x00\\x7f\u{e9}]{0,10}", "[a-c\\x00]{0,9}"),
            b in (0u8..3, "[a\\x00]{0,3}[a-c\\x00\\x7f\u{e9}]{0,10}", "[a-c\\x00]{0,9}"),
        ) {
            let ((pa, wa), (pb, wb)) = (prefix_of(a.0, &a.1, &a.2), prefix_of(b.0, &b.1, &b.2));
            if pa != pb {
                proptest::prop_assert_eq!(pa.cmp(&pb), a.cmp(&b), "{:?} {:?}", a, b);
            } else if wa && wb {
                proptest::prop_assert_eq!(&a, &b);
            }
        }
    }

    /// A result's name is made once per value: naming a result again, or receiving a change
    /// from another process (serialized and read back), gives the same name, at the same
    /// address, that gathering's order takes for the same result.
    #[test]
    fn names_are_interned_once_per_value() {
        let config = Config::default();
        let name = |symbol: &str| SymbolName {
            exchange: "ex".into(),
            symbol: symbol.into(),
        };
        let key = ResultKey::Book(Sym::of("ex", "S"), 5);
        let (a, _) = named_result(&key, &name("S"), &config);
        let (b, _) = named_result(&key, &name("S"), &config);
        let (other, _) = named_result(&key, &name("T"), &config);
        assert!(std::ptr::eq(a, b));
        assert!(!std::ptr::eq(a, other));
        assert_eq!(
            (a.key.as_str(), other.key.as_str()),
            ("book:ex:S:5", "book:ex:T:5")
        );
        let change = Change {
            name: a,
            score: None,
            json: Some(Json::from("{}")),
        };
        let text = serde_json::to_string(&change).expect("serialize");
        let back: Change = serde_json::from_str(&text).expect("deserialize");
        assert!(std::ptr::eq(back.name, a));
        assert_eq!(back, change);
        // A name this process never made (resolution 6, key and order alike) is made anew.
        let moved = text
            .replace("book:ex:S:5", "book:ex:S:6")
            .replace(r#""S",5]"#, r#""S",6]"#);
        let elsewhere: Change = serde_json::from_str(&moved).expect("deserialize");
        assert_eq!(elsewhere.name.order.3, 6);
        assert_eq!(elsewhere.key(), "book:ex:S:6");
        assert!(!std::ptr::eq(elsewhere.name, a));
    }

    /// Two spellings that share a key (`a:b` + `c` and `a` + `b:c`) are two names, and each
    /// comes back to itself from another process, whether its texts are read borrowed or, with
    /// escapes in JSON, owned.
    #[test]
    fn names_that_share_a_key_stay_apart() {
        let config = Config::default();
        let named = |exchange: &str, symbol: &str| {
            let name = SymbolName {
                exchange: exchange.into(),
                symbol: symbol.into(),
            };
            let key = ResultKey::Ticker(Sym::of(exchange, symbol));
            named_result(&key, &name, &config).0
        };
        // Back through JSON, and through bincode as between processes (texts borrowed); both
        // must agree.
        let back = |name: &'static ResultName| {
            let change = Change {
                name,
                score: None,
                json: None,
            };
            let text = serde_json::to_string(&change).expect("serialize");
            let json = serde_json::from_str::<Change>(&text)
                .expect("deserialize")
                .name;
            let bytes = bincode::serialize(&change).expect("serialize");
            let binary = bincode::deserialize::<Change>(&bytes)
                .expect("deserialize")
                .name;
            assert!(std::ptr::eq(json, binary), "{name:?}");
            json
        };
        let (left, right) = (named("a:b", "c"), named("a", "b:c"));
        assert_eq!(
            (left.key.as_str(), right.key.as_str()),
            ("ticker:a:b:c", "ticker:a:b:c")
        );
        assert!(!std::ptr::eq(left, right));
        assert!(std::ptr::eq(back(left), left));
        assert!(std::ptr::eq(back(right), right));
        // Long names share their prefix too (not whole): only the texts tell these two apart.
        let (long_left, long_right) = (
            named("exchange-0123456789:x", "y"),
            named("exchange-0123456789", "x:y"),
        );
        assert_eq!(long_left.key, long_right.key);
        assert_eq!(
            (long_left.prefix, long_left.whole),
            (long_right.prefix, long_right.whole)
        );
        assert!(!long_left.whole);
        assert!(!std::ptr::eq(long_left, long_right));
        assert!(std::ptr::eq(back(long_left), long_left));
        assert!(std::ptr::eq(back(long_right), long_right));
        let escaped = named("x\\y", "q\"z");
        assert_eq!(escaped.key, "ticker:x\\y:q\"z");
        assert!(std::ptr::eq(back(escaped), escaped));
    }

    /// A prefix is whole when the kind, both names and the zero byte fit in its 16 bytes, and
    /// only then: names that differ in a 17th byte share a prefix that is not whole.
    #[test]
    fn prefixes_are_whole_only_when_the_names_fit() {
        let (full, whole) = prefix_of(0, "abcdefg", "abcdefg");
        assert!(whole);
        assert_ne!(full, prefix_of(0, "abcdefg", "abcdefh").0);
        let (a, b) = (
            prefix_of(2, "abcdefg", "abcdefgh"),
            prefix_of(2, "abcdefg", "abcdefgi"),
        );
        assert_eq!(a.0, b.0);
        assert!(!a.1 && !b.1);
    }

    /// The names of the symbol `ex:S`.
    fn ex_s() -> SymbolName {
        SymbolName {
            exchange: "ex".into(),
            symbol: "S".into(),
        }
    }

    /// The name of the result of `ex:S` that `key` stands for.
    fn named_ex_s(key: ResultKey) -> &'static ResultName {
        named_result(&key, &ex_s(), &Config::default()).0
    }

    /// `record` as written at mark `ts`.
    fn rendered(record: &Record, ts: u64) -> String {
        let mut text = String::new();
        record.write_json(ts, &mut text);
        text
    }

    /// The records of one mark come out of a rendering in the order they were pushed, each the
    /// text `Record::write_json` gives, all sharing one text, and removals without one; the next
    /// mark's records share another. A kept record detached from its mark has a text of its own,
    /// equal to it; records arrive from another process each with its own text.
    #[test]
    fn records_of_a_mark_share_one_text() {
        let name = ex_s();
        let records = [
            Record::Book {
                name: name.clone(),
                resolution: 1,
                seq: Some(7),
                status: Status::Ok,
                bids: levels(&[("100.5", "1"), ("100", "2.25")]),
                asks: levels(&[("101", "3")]),
            },
            Record::Ticker {
                name: name.clone(),
                stats: None,
                bbo: Bbo {
                    bid: Some(Price::parse("100.5").unwrap()),
                    ask: None,
                },
            },
        ];
        let names = [
            named_ex_s(ResultKey::Book(Sym::of("ex", "S"), 1)),
            named_ex_s(ResultKey::Ticker(Sym::of("ex", "S"))),
        ];
        let mut rendering = Rendering::default();
        let mut marks: Vec<Vec<Change>> = Vec::new();
        for ts in [1_000, 2_000] {
            rendering.push(names[0], None, Some(&records[0].view(ts)), ts);
            rendering.push(names[1], Some(5), None, ts);
            rendering.push(names[1], None, Some(&records[1].view(ts)), ts);
            let mut changes = Vec::new();
            rendering.finish(|c| changes.push(c));
            // Nothing more until the next mark's records.
            rendering.finish(|c| changes.push(c));
            assert_eq!(changes.len(), 3);
            for (change, (record, name)) in [
                (&changes[0], (&records[0], names[0])),
                (&changes[2], (&records[1], names[1])),
            ] {
                let expected = rendered(record, ts);
                let json = change.json.as_ref().expect("a record");
                assert_eq!(json.as_str(), expected);
                assert_eq!(json.as_bytes(), expected.as_bytes());
                assert!(std::ptr::eq(change.name, name));
                assert_eq!(change.score, None);
            }
            assert_eq!((changes[1].score, &changes[1].json), (Some(5), &None));
            let (first, last) = (
                changes[0].json.as_ref().unwrap(),
                changes[2].json.as_ref().unwrap(),
            );
            assert!(Arc::ptr_eq(&first.text, &last.text));
            assert_eq!(first.text.len(), first.len() + last.len());
            marks.push(changes);
        }
        let (one, two) = (&marks[0][0].json, &marks[1][0].json);
        let (one, two) = (one.as_ref().unwrap(), two.as_ref().unwrap());
        assert!(!Arc::ptr_eq(&one.text, &two.text));
        let kept = one.clone().detached();
        assert_eq!(kept, *one);
        assert_eq!(kept.text.len(), one.len());
        // Detaching copies every time: a text does not show what buffer it keeps alive.
        let again = kept.clone().detached();
        assert!(!Arc::ptr_eq(&again.text, &kept.text));
        assert_eq!(
            (again.as_str(), again.text.len()),
            (one.as_str(), one.len())
        );
        // Between processes: the text alone, and back with a text of its own.
        let bytes = bincode::serialize(&marks[0][2]).expect("serialize");
        let back: Change = bincode::deserialize(&bytes).expect("deserialize");
        assert_eq!(back, marks[0][2]);
        let json = back.json.expect("a record");
        assert_eq!(json.text.len(), json.len());
    }

    /// A mark far larger than the others is cut into pieces of about `PIECE` bytes, its
    /// records whole and in order; the room kept after it is under a piece, and the next mark
    /// gives back the room of the large one's list of changes.
    #[test]
    fn a_large_mark_is_cut_into_pieces() {
        let result = named_ex_s(ResultKey::Ticker(Sym::of("ex", "S")));
        let record = Record::Ticker {
            name: ex_s(),
            stats: None,
            bbo: Bbo::default(),
        };
        let expected = rendered(&record, 1_000);
        let mut rendering = Rendering::default();
        let mut render = |records: usize| {
            let mut changes = Vec::new();
            for i in 0..records {
                // A removal now and then: it has no record, in no piece.
                let view = (i % 1_000 != 999).then(|| record.view(1_000));
                rendering.push(result, None, view.as_ref(), 1_000);
            }
            rendering.finish(|c| changes.push(c));
            let kept = (rendering.text.capacity(), rendering.changes.capacity());
            (changes, kept)
        };
        let (changes, (left, _)) = render(40_000);
        assert_eq!(changes.len(), 40_000);
        // Pieces by their text: (the text, how many records it holds).
        let mut pieces: Vec<(Arc<Bytes>, usize)> = Vec::new();
        for (i, change) in changes.iter().enumerate() {
            if i % 1_000 == 999 {
                assert_eq!(change.json, None, "{i}");
                continue;
            }
            let json = change.json.as_ref().expect("a record");
            assert_eq!(json.as_str(), expected, "{i}");
            match pieces.last_mut() {
                Some((text, n)) if Arc::ptr_eq(text, &json.text) => {
                    // One after another in their piece.
                    assert_eq!(json.start, *n * expected.len(), "{i}");
                    *n += 1;
                }
                _ => pieces.push((json.text.clone(), 1)),
            }
        }
        // A buffer takes records while `ROOM` is left in it: that many records a piece, the
        // rest in the last.
        let per_piece = (PIECE - ROOM) / expected.len() + 1;
        assert_eq!(pieces.len(), 39_960usize.div_ceil(per_piece));
        for (text, n) in &pieces[..pieces.len() - 1] {
            assert_eq!((*n, text.len()), (per_piece, per_piece * expected.len()));
        }
        // The room left in the last buffer, not more.
        assert!(left < PIECE, "{left}");
        let (changes, (_, list)) = render(1);
        assert_eq!(changes.len(), 1);
        assert!(list <= KEPT_CHANGES, "{list}");
    }

    /// Records longer than `ROOM` never grow a buffer once one as long was written: a buffer
    /// takes a record while the longest one's room is left, and new buffers hold four of them.
    /// Followed by the room left after each mark (a buffer grown as a record was written
    /// would leave other room).
    #[test]
    fn long_records_fit_their_buffers() {
        let result = named_ex_s(ResultKey::Ticker(Sym::of("ex", "S")));
        let record = Record::Ticker {
            name: SymbolName {
                exchange: "ex".into(),
                symbol: "S".repeat(100_000).into(),
            },
            stats: None,
            bbo: Bbo::default(),
        };
        let long = rendered(&record, 1_000).len();
        // Longer than `ROOM`, and four of them longer than `PIECE`.
        assert!(long > ROOM && 4 * long > PIECE, "{long}");
        let mut rendering = Rendering::default();
        let mut kept = Vec::new();
        // The room left in the buffer as the rule above has it: none before the first record.
        let mut left = 0;
        for mark in 0..40 {
            let room = if mark == 0 { ROOM } else { long };
            if left < room {
                left = PIECE.max(4 * if mark == 0 { 0 } else { long });
            }
            left -= long;
            rendering.push(result, None, Some(&record.view(1_000)), 1_000);
            rendering.finish(|c| kept.push(c));
            assert_eq!(rendering.text.capacity(), left, "mark {mark}");
        }
        for change in &kept {
            assert_eq!(change.json.as_ref().expect("a record").len(), long);
        }
    }

    /// Names are JSON strings in records whatever they hold: quotes, backslashes and control
    /// characters escaped, other text as is.
    #[test]
    fn names_are_escaped_in_records() {
        for (exchange, symbol) in [("ex", "BTCUSDT"), ("e\"x", "a\\b\u{1}\u{fc}\u{1f600}")] {
            let record = Record::Ticker {
                name: SymbolName {
                    exchange: exchange.into(),
                    symbol: symbol.into(),
                },
                stats: None,
                bbo: Bbo::default(),
            };
            let json = record.to_json(5);
            assert_eq!(
                (json["exchange"].as_str(), json["symbol"].as_str()),
                (Some(exchange), Some(symbol))
            );
        }
    }

    /// Trade ids are JSON strings in tickers, numeric or not, escaped.
    #[test]
    fn trade_ids_are_strings_in_tickers() {
        let trade = |id: &str, ts: u64| {
            let trade = crate::event::Trade {
                id: TradeId::new(id),
                price: Price::parse("2").unwrap(),
                qty: Qty::parse("1").unwrap(),
                side: crate::types::TradeSide::Buy,
            };
            Agg::of(&crate::agg::TradeRec::new(ts, &trade))
        };
        for (first, last) in [("7", "12"), ("x\"1", "a\\b"), ("007", "0")] {
            let mut agg = trade(first, 1);
            agg.merge(&trade(last, 2));
            let record = Record::Ticker {
                name: SymbolName {
                    exchange: "ex".into(),
                    symbol: "S".into(),
                },
                stats: Some(TickerStats::new(agg)),
                bbo: Bbo::default(),
            };
            let json = record.to_json(5);
            assert_eq!(
                (json["first_id"].as_str(), json["last_id"].as_str()),
                (Some(first), Some(last))
            );
        }
    }

    /// Random sides of up to 8 levels on a grid of 12 prices, each rendered from the previous
    /// one: the text and the level offsets equal a fresh rendering's, on both sides.
    #[test]
    fn reused_rendering_equals_fresh_rendering_for_random_sides() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut below = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for side in [Side::Bid, Side::Ask] {
            let mut book: std::collections::BTreeMap<u32, u32> = Default::default();
            let mut previous: Option<RenderedSide> = None;
            for step in 0..3_000 {
                // A few levels set or removed, now and then many.
                for _ in 0..1 + below(if step % 50 == 0 { 12 } else { 3 }) {
                    let (price, size) = (below(12) as u32, below(4) as u32);
                    match size {
                        0 => book.remove(&price),
                        s => book.insert(price, s),
                    };
                }
                let mut side_levels: Levels = book
                    .iter()
                    .map(|(&p, &q)| {
                        let price =
                            Price::parse(&format!("{}.{}", 100 + p / 4, p % 4 * 25)).unwrap();
                        (price, Qty::parse(&format!("{q}.5")).unwrap())
                    })
                    .collect();
                if side == Side::Bid {
                    side_levels.reverse();
                }
                side_levels.truncate(8);
                let fresh = RenderedSide::new(side, side_levels.clone(), None);
                let reused = RenderedSide::new(side, side_levels, previous.as_ref());
                assert_eq!(reused.text, fresh.text, "step {step}");
                assert_eq!(reused.starts, fresh.starts, "step {step}");
                previous = Some(reused);
            }
        }
    }

    /// A side rendered from its previous rendering equals one rendered from scratch, and both
    /// are the JSON array of the levels, whatever moved: first, middle and last levels removed,
    /// inserted or resized; so does one rendered into the buffers of another rendering.
    #[test]
    fn reused_rendering_equals_fresh_rendering() {
        let old = levels(&[
            ("100.5", "1"),
            ("100.4", "2.25"),
            ("100", "3"),
            ("99.9", "0.1"),
        ]);
        let new_sides = [
            levels(&[
                ("100.6", "7"),
                ("100.5", "1"),
                ("100.4", "2.25"),
                ("100", "3"),
            ]),
            levels(&[("100.5", "1"), ("100", "3"), ("99.9", "0.1")]),
            levels(&[
                ("100.5", "1.5"),
                ("100.4", "2.25"),
                ("100", "3"),
                ("99.9", "0.2"),
            ]),
            levels(&[("100.4", "2.25"), ("99.9", "0.1"), ("99.8", "4")]),
            levels(&[]),
            old.clone(),
        ];
        let previous = RenderedSide::new(Side::Bid, old, None);
        // The buffers of an earlier rendering, as the book stage renders into them.
        let mut used = RenderedSide::new(Side::Bid, new_sides[0].clone(), None);
        for new in new_sides {
            let fresh = RenderedSide::new(Side::Bid, new.clone(), None);
            let reused = RenderedSide::new(Side::Bid, new.clone(), Some(&previous));
            assert_eq!(reused.text, fresh.text);
            assert_eq!(reused.starts, fresh.starts);
            used.take_levels();
            used.render(Side::Bid, new.clone(), Some(&previous));
            assert_eq!(used.text, fresh.text);
            assert_eq!(used.starts, fresh.starts);
            assert_eq!(used.levels, new);
            let expected: Vec<[String; 2]> = new
                .iter()
                .map(|(p, q)| [p.to_string(), q.to_string()])
                .collect();
            assert_eq!(fresh.text, serde_json::to_string(&expected).unwrap());
        }
    }
}
