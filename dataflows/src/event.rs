//! Input events (CONTRACT section 1) and their checked parsing.
//!
//! Input: one JSON object as text. Output: `Ok(Parsed)` with the event and its symbol names, or
//! `Err(ParseError)` whose `Display` is the dead-letter reason. Parsing never panics on input.
//!
//! Invariants of a parsed [`Event`]: `0 < ts < 2^63` (an `i64`, which `config`'s bounds rely
//! on); every price > 0; every quantity >= 0; a trade's
//! quantity > 0; prices and quantities are exact, in the one representation per value of
//! [`crate::types`] (at scale 10 when that is exact, else normalised).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::types::{
    is_common, Price, Qty, Sym, SymbolName, TradeId, TradeSide, ValueError, TRADE_VALUE_LIMIT,
};

/// One price level of a book message: price and ABSOLUTE size (`0` removes the level).
pub type Level = (Price, Qty);

/// A parsed input event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Event {
    /// The symbol's id.
    pub sym: Sym,
    /// Exchange event time, ms since the epoch.
    pub ts: u64,
    /// What happened.
    pub body: Body,
}

/// The three kinds of events.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Body {
    /// Replaces the whole book.
    Snapshot {
        /// Bid levels.
        bids: Vec<Level>,
        /// Ask levels.
        asks: Vec<Level>,
        /// Sequence number, if the feed has one.
        seq: Option<u64>,
    },
    /// Level updates, applied in order.
    Book {
        /// Bid levels.
        bids: Vec<Level>,
        /// Ask levels.
        asks: Vec<Level>,
        /// Sequence number of this update.
        seq: Option<u64>,
        /// Sequence number this update follows.
        prev_seq: Option<u64>,
    },
    /// One trade.
    Trade(Trade),
}

/// A trade.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Trade {
    /// Exchange trade id.
    pub id: TradeId,
    /// Price.
    pub price: Price,
    /// Quantity, > 0.
    pub qty: Qty,
    /// Taker side.
    pub side: TradeSide,
}

/// A parsed line: the event and the names of its symbol (borrowed from the line when it can be:
/// the names are only needed the first time a symbol is seen).
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed<'a> {
    /// The event.
    pub event: Event,
    /// Exchange as written.
    pub exchange: Cow<'a, str>,
    /// Symbol as written.
    pub symbol: Cow<'a, str>,
}

impl Parsed<'_> {
    /// The symbol's names, owned.
    pub fn name(&self) -> SymbolName {
        SymbolName {
            exchange: self.exchange.as_ref().into(),
            symbol: self.symbol.as_ref().into(),
        }
    }
}

impl Event {
    /// True for snapshots and book updates.
    pub fn is_book(&self) -> bool {
        !matches!(self.body, Body::Trade(_))
    }
}

/// Why an input line was dead-lettered. `Display` is the reason written with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a JSON object.
    #[error("not json: {0}")]
    NotJson(String),
    /// `type` is not snapshot, book or trade: the type, as [`crate::types::quoted`] shows it.
    #[error("unknown type {0}")]
    UnknownType(String),
    /// A required field is absent.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// A field has the wrong JSON type.
    #[error("ill-typed field {0}")]
    IllTyped(&'static str),
    /// A price or quantity is malformed or out of range.
    #[error("bad {field}: {err}")]
    BadValue {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        err: ValueError,
    },
    /// `ts` must be > 0 (and, here, fit an `i64`: later times overflow the arithmetic on them).
    #[error("ts must be an integer from 1 to 9223372036854775807")]
    BadTs,
    /// A trade's quantity must be > 0.
    #[error("trade quantity must be positive")]
    ZeroTradeQty,
    /// A trade's price x quantity must be below [`TRADE_VALUE_LIMIT`].
    #[error("trade value too large: price x qty must be below 10^20")]
    TradeTooLarge,
    /// `side` must be buy or sell: the side, as [`crate::types::quoted`] shows it.
    #[error("bad side {0}")]
    BadSide(String),
}

/// The fields of a line as JSON gives them, before any check of their values.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    exchange: Option<Cow<'a, str>>,
    #[serde(borrow)]
    symbol: Option<Cow<'a, str>>,
    ts: Option<i64>,
    #[serde(borrow)]
    bids: Option<Vec<(Cow<'a, str>, Cow<'a, str>)>>,
    #[serde(borrow)]
    asks: Option<Vec<(Cow<'a, str>, Cow<'a, str>)>>,
    /// Bid levels already read as values (by the fast path): used instead of `bids`.
    #[serde(skip)]
    bid_levels: Option<Vec<Level>>,
    /// Ask levels already read as values (by the fast path): used instead of `asks`.
    #[serde(skip)]
    ask_levels: Option<Vec<Level>>,
    seq: Option<u64>,
    prev_seq: Option<u64>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    price: Option<Cow<'a, str>>,
    #[serde(borrow)]
    qty: Option<Cow<'a, str>>,
    #[serde(borrow)]
    side: Option<Cow<'a, str>>,
}

/// Checks that a JSON value has the type a field needs.
type TypeCheck = fn(&serde_json::Value) -> bool;

/// Fields whose JSON type is checked on the slow path, with the type each must have.
const TYPED_FIELDS: &[(&str, TypeCheck)] = &[
    ("type", serde_json::Value::is_string),
    ("exchange", serde_json::Value::is_string),
    ("symbol", serde_json::Value::is_string),
    ("ts", serde_json::Value::is_i64),
    ("bids", is_level_array),
    ("asks", is_level_array),
    ("seq", serde_json::Value::is_u64),
    ("prev_seq", serde_json::Value::is_u64),
    ("id", serde_json::Value::is_string),
    ("price", serde_json::Value::is_string),
    ("qty", serde_json::Value::is_string),
    ("side", serde_json::Value::is_string),
];

fn is_level_array(v: &serde_json::Value) -> bool {
    v.as_array().is_some_and(|levels| {
        levels.iter().all(|l| {
            l.as_array()
                .is_some_and(|pq| pq.len() == 2 && pq.iter().all(serde_json::Value::is_string))
        })
    })
}

/// Explains why the typed parse failed: not JSON at all, or which field is ill-typed.
fn diagnose(line: &str, err: serde_json::Error) -> ParseError {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(map)) => {
            // A number, but no `i64`: 2^63 and above, `-0`, `1.5` (they read as ill-typed).
            if map
                .get("ts")
                .is_some_and(|ts| ts.is_number() && !ts.is_i64())
            {
                return ParseError::BadTs;
            }
            for (name, ok) in TYPED_FIELDS {
                if let Some(v) = map.get(*name) {
                    if !v.is_null() && !ok(v) {
                        return ParseError::IllTyped(name);
                    }
                }
            }
            ParseError::NotJson(err.to_string())
        }
        Ok(_) => ParseError::NotJson("not an object".to_string()),
        Err(e) => ParseError::NotJson(e.to_string()),
    }
}

fn levels(
    raw: Option<Vec<(Cow<'_, str>, Cow<'_, str>)>>,
    parsed: Option<Vec<Level>>,
    field: &'static str,
) -> Result<Vec<Level>, ParseError> {
    if let Some(parsed) = parsed {
        return Ok(parsed);
    }
    let raw = required(raw, field)?;
    raw.iter()
        .map(|(p, q)| {
            let price = Price::parse(p).map_err(|err| ParseError::BadValue { field, err })?;
            let qty = Qty::parse(q).map_err(|err| ParseError::BadValue { field, err })?;
            Ok((price, qty))
        })
        .collect()
}

/// The value of a required field, or the reason that it is missing (made only then: an error
/// made and dropped for every field of every line was a percent of reading one).
fn required<T>(value: Option<T>, field: &'static str) -> Result<T, ParseError> {
    match value {
        Some(value) => Ok(value),
        None => Err(ParseError::Missing(field)),
    }
}

/// `price x qty <` [`TRADE_VALUE_LIMIT`]: a trade's quote volume, so that no sum of them
/// overflows. Prices and quantities of the common form (below about `1.8 x 10^9`) always are.
fn trade_value_below_limit(price: Price, qty: Qty) -> bool {
    if is_common(price.value()) && is_common(qty.value()) {
        return true;
    }
    price
        .value()
        .checked_mul(qty.value())
        .is_some_and(|v| v < TRADE_VALUE_LIMIT)
}

/// Parses one input line (CONTRACT section 1).
pub fn parse(line: &str) -> Result<Parsed<'_>, ParseError> {
    // The usual line gives its event straight; any other line's fields are filled into a `Raw`
    // in place and checked by reference (a `Raw` is some 300 bytes, and moving it out of the
    // scanner and into the check was a tenth of the reader thread's time).
    if let Some(parsed) = fast::read_usual(line) {
        return Ok(parsed);
    }
    let mut raw = Raw::default();
    if fast::read(line, &mut raw).is_none() {
        raw = serde_json::from_str(line).map_err(|e| diagnose(line, e))?;
    }
    checked(&mut raw)
}

/// Checks the fields of a line and builds its event (taking them out of `raw`).
fn checked<'a>(raw: &mut Raw<'a>) -> Result<Parsed<'a>, ParseError> {
    let kind = required(raw.kind.take(), "type")?;
    if !matches!(&*kind, "snapshot" | "book" | "trade") {
        return Err(ParseError::UnknownType(crate::types::quoted(&kind)));
    }
    let exchange = required(raw.exchange.take(), "exchange")?;
    let symbol = required(raw.symbol.take(), "symbol")?;
    let ts = required(raw.ts, "ts")?;
    let ts = u64::try_from(ts)
        .ok()
        .filter(|&t| t > 0)
        .ok_or(ParseError::BadTs)?;
    let body = match &*kind {
        "snapshot" => Body::Snapshot {
            bids: levels(raw.bids.take(), raw.bid_levels.take(), "bids")?,
            asks: levels(raw.asks.take(), raw.ask_levels.take(), "asks")?,
            seq: raw.seq,
        },
        "book" => Body::Book {
            bids: levels(raw.bids.take(), raw.bid_levels.take(), "bids")?,
            asks: levels(raw.asks.take(), raw.ask_levels.take(), "asks")?,
            seq: raw.seq,
            prev_seq: raw.prev_seq,
        },
        _ => {
            let id = required(raw.id.take(), "id")?;
            let price = required(raw.price.take(), "price")?;
            let qty = required(raw.qty.take(), "qty")?;
            let side = required(raw.side.take(), "side")?;
            let price = Price::parse(&price).map_err(|err| ParseError::BadValue {
                field: "price",
                err,
            })?;
            let qty = Qty::parse(&qty).map_err(|err| ParseError::BadValue { field: "qty", err })?;
            if qty.is_zero_qty() {
                return Err(ParseError::ZeroTradeQty);
            }
            if !trade_value_below_limit(price, qty) {
                return Err(ParseError::TradeTooLarge);
            }
            let side = match &*side {
                "buy" => TradeSide::Buy,
                "sell" => TradeSide::Sell,
                other => return Err(ParseError::BadSide(crate::types::quoted(other))),
            };
            Body::Trade(Trade {
                id: TradeId::new(&id),
                price,
                qty,
                side,
            })
        }
    };
    Ok(Parsed {
        event: Event {
            sym: Sym::of(&exchange, &symbol),
            ts,
            body,
        },
        exchange,
        symbol,
    })
}

/// A scanner for the shape nearly every line has: one object of the contract's fields, strings
/// without escapes, integers, level arrays of string pairs holding valid prices and quantities
/// (read as values as they are scanned). It returns `None` for anything else (escapes, `null`,
/// floats, unknown or repeated keys, a bad price or quantity, malformed JSON), and the caller
/// falls back to `serde_json`, which also gives the reason of a bad line; when it returns a
/// [`Raw`], checking it gives what checking `serde_json`'s gives (a property test checks this). It
/// exists for speed: the generic deserializer was about 10% of the job. Before it, `read_usual`
/// tries the usual line (the contract's keys in its order, no whitespace) as a row of expected
/// texts and values, without looking keys up; it gives the event that checking the scanner's
/// `Raw` gives (a second property test), and gives way to the scanner for any other line.
mod fast {
    use std::borrow::Cow;

    use rust_decimal::Decimal;

    use super::{trade_value_below_limit, Body, Event, Level, Parsed, Raw, Trade};
    use crate::types::{plain_prefix, Price, Qty, Sym, TradeId, TradeSide};
    use crate::words::{string_stop, uint_prefix};

    struct Scan<'a> {
        text: &'a str,
        at: usize,
    }

    /// How many levels of a side [`Scan::usual_levels`] gathers before it makes their vector.
    const FEW: usize = 8;

    impl<'a> Scan<'a> {
        fn peek(&self) -> Option<u8> {
            self.text.as_bytes().get(self.at).copied()
        }

        // The loops below work on a local index over the bytes (not `self.at` through `&mut
        // self`), which the compiler keeps in a register: this scanner is most of the cost of
        // reading a line.

        fn ws(&mut self) {
            let bytes = self.text.as_bytes();
            let mut at = self.at;
            while at < bytes.len() && matches!(bytes[at], b' ' | b'\t' | b'\n' | b'\r') {
                at += 1;
            }
            self.at = at;
        }

        /// Skips whitespace, then consumes `b`.
        fn eat(&mut self, b: u8) -> Option<()> {
            // Nearly always there is no whitespace: test the byte first.
            if self.peek() != Some(b) {
                self.ws();
            }
            (self.peek()? == b).then(|| self.at += 1)
        }

        /// Consumes `lit` when the text goes on with it (compared as one array: a few words).
        #[inline]
        fn lit<const N: usize>(&mut self, lit: &[u8; N]) -> Option<()> {
            let next = self.text.as_bytes().get(self.at..)?.first_chunk::<N>()?;
            (next == lit).then(|| self.at += N)
        }

        /// Consumes `lit` if the text goes on with it; whether it did.
        #[inline]
        fn lit_if<const N: usize>(&mut self, lit: &[u8; N]) -> bool {
            self.lit(lit).is_some()
        }

        /// A string without escapes or control characters.
        fn str(&mut self) -> Option<&'a str> {
            self.eat(b'"')?;
            self.str_rest()
        }

        /// The rest of a string whose opening quote is read: its text (without escapes or
        /// control characters), and its closing quote consumed.
        #[inline(always)]
        fn str_rest(&mut self) -> Option<&'a str> {
            let bytes = self.text.as_bytes();
            let start = self.at;
            // A word at a time up to the first quote, backslash or control character when it is
            // within two words (names, ids and kinds nearly always), else one table lookup per
            // byte.
            let rest = &bytes[start..];
            let len = match string_stop(rest) {
                Some(len) => len,
                None => rest.iter().position(|&c| STOPS[usize::from(c)])?,
            };
            let at = start + len;
            if bytes[at] != b'"' {
                return None;
            }
            self.at = at + 1;
            self.text.get(start..at)
        }

        /// The key of one of the contract's fields, with its quotes; `None` for any other key
        /// (or one with escapes). The key's text and closing quote (at most 9 bytes) are
        /// compared as one word with each key's: scanning the key as a string and matching it
        /// as text cost a tenth of reading a line.
        fn key(&mut self) -> Option<Key> {
            self.eat(b'"')?;
            let rest = &self.text.as_bytes()[self.at..];
            let word = match rest.first_chunk::<8>() {
                Some(first) => u64::from_le_bytes(*first),
                None => {
                    let mut padded = [0u8; 8];
                    padded[..rest.len()].copy_from_slice(rest);
                    u64::from_le_bytes(padded)
                }
            };
            // The keys that start with the key's first byte.
            let candidates = match word as u8 {
                b't' => &KEYS[0..2],
                b'e' => &KEYS[2..3],
                b's' => &KEYS[3..6],
                b'b' => &KEYS[6..7],
                b'a' => &KEYS[7..8],
                b'p' => &KEYS[8..10],
                b'i' => &KEYS[10..11],
                b'q' => &KEYS[11..12],
                _ => return None,
            };
            let &(key, len, _, _) = candidates.iter().find(|&&(_, len, pattern, mask)| {
                word & mask == pattern && (len <= 8 || rest.get(8) == Some(&b'"'))
            })?;
            self.at += len;
            Some(key)
        }

        /// An integer as JSON writes it (no leading zeros), not followed by a fraction or exponent.
        fn int(&mut self) -> Option<(bool, u64)> {
            self.ws();
            let negative = self.peek() == Some(b'-');
            if negative {
                self.at += 1;
            }
            let bytes = self.text.as_bytes();
            let start = self.at;
            let mut at = start;
            let mut n: u64 = 0;
            while let Some(&d @ b'0'..=b'9') = bytes.get(at) {
                n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
                at += 1;
            }
            self.at = at;
            let digits = at - start;
            if digits == 0 || (digits > 1 && self.text.as_bytes()[start] == b'0') {
                return None;
            }
            // A fraction or exponent makes a float, and so does `-0`, for serde_json.
            if matches!(self.peek(), Some(b'.' | b'e' | b'E')) || (negative && n == 0) {
                return None;
            }
            Some((negative, n))
        }

        /// An integer of at most 18 digits, without sign or leading zeros (so that it fits an
        /// `i64` without checks); `None` for any other text, which [`Scan::int`] then reads.
        fn small_uint(&mut self) -> Option<u64> {
            let bytes = self.text.as_bytes();
            let start = self.at;
            // A word or two at a time when the digits end within 16 bytes (a time in ms has 13).
            if let Some((n, digits)) = bytes.get(start..).and_then(uint_prefix) {
                if digits == 0 || (digits > 1 && bytes[start] == b'0') {
                    return None;
                }
                self.at = start + digits;
                return Some(n);
            }
            let mut at = start;
            let mut n: u64 = 0;
            while let Some(&d @ b'0'..=b'9') = bytes.get(at) {
                n = n.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                at += 1;
            }
            let digits = at - start;
            if digits == 0 || digits > 18 || (digits > 1 && bytes[start] == b'0') {
                return None;
            }
            self.at = at;
            Some(n)
        }

        /// The text of a price or quantity of the usual form ([`plain_prefix`]) and the quote
        /// that closes it, as a value that `checked` accepts; `None` for anything else.
        ///
        /// Always inlined: called, it returned its value through memory, which the caller read
        /// back in one piece before its halves were stored (a stall per value).
        #[inline(always)]
        fn plain<T, R>(&mut self, checked: fn(Decimal) -> Result<T, R>) -> Option<T> {
            let rest = self.text.as_bytes().get(self.at..)?;
            let (d, len) = plain_prefix(rest)?;
            if rest.get(len) != Some(&b'"') {
                return None;
            }
            self.at += len + 1;
            checked(d).ok()
        }

        /// A level array as the usual line writes it (`[["p","q"],...]`, no whitespace, every
        /// value plain and valid); `None` for any other text.
        fn usual_levels(&mut self) -> Option<Vec<Level>> {
            self.lit(b"[")?;
            if self.lit_if(b"]") {
                return Some(Vec::new());
            }
            // The first levels are gathered here and moved into a vector of their number: most
            // sides hold 1 to 3, and a vector grown by pushes had room for 4 (128 bytes, which
            // the reader wrote and a worker read, mostly from memory not in the caches).
            let mut few = [Level::default(); FEW];
            let mut n = 0;
            let mut more = Vec::new();
            loop {
                self.lit(b"[\"")?;
                let price = self.plain(Price::checked)?;
                self.lit(b",\"")?;
                let qty = self.plain(Qty::checked)?;
                self.lit(b"]")?;
                if n < FEW {
                    few[n] = (price, qty);
                    n += 1;
                } else {
                    if more.is_empty() {
                        more.reserve(2 * FEW);
                        more.extend_from_slice(&few);
                    }
                    more.push((price, qty));
                }
                if !self.lit_if(b",") {
                    self.lit(b"]")?;
                    return Some(if more.is_empty() {
                        few[..n].to_vec()
                    } else {
                        more
                    });
                }
            }
        }

        /// A string holding a valid price or quantity, read as a value: in one pass when its
        /// text is of the usual form ([`plain_prefix`]), else as text, then `parse`d.
        fn value<T, E, R>(
            &mut self,
            checked: fn(Decimal) -> Result<T, R>,
            parse: fn(&str) -> Result<T, E>,
        ) -> Option<T> {
            self.eat(b'"')?;
            let rest = &self.text.as_bytes()[self.at..];
            if let Some((d, len)) = plain_prefix(rest) {
                if rest.get(len) == Some(&b'"') {
                    self.at += len + 1;
                    return checked(d).ok();
                }
            }
            self.at -= 1;
            parse(self.str()?).ok()
        }

        /// A level array whose every price and quantity is valid, read as values (a bad value
        /// gives `None`: the slow path then reports it).
        fn levels(&mut self) -> Option<Vec<Level>> {
            self.eat(b'[')?;
            let mut out = Vec::new();
            self.ws();
            if self.peek() == Some(b']') {
                self.at += 1;
                return Some(out);
            }
            loop {
                self.eat(b'[')?;
                let price = self.value(Price::checked, Price::parse)?;
                self.eat(b',')?;
                let qty = self.value(Qty::checked, Qty::parse)?;
                self.eat(b']')?;
                out.push((price, qty));
                self.ws();
                match self.peek()? {
                    b',' => self.at += 1,
                    b']' => {
                        self.at += 1;
                        return Some(out);
                    }
                    _ => return None,
                }
            }
        }
    }

    /// The fields of the contract.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Key {
        Type,
        Exchange,
        Symbol,
        Ts,
        Seq,
        PrevSeq,
        Bids,
        Asks,
        Id,
        Price,
        Qty,
        Side,
    }

    /// Each key, the length of its text and closing quote, and the first 8 bytes of those as a
    /// little-endian word with the mask of its bytes (a 9-byte one's last byte, its quote, is
    /// checked apart). Grouped by first byte ([`Scan::key`] picks a group), the most frequent
    /// first in each.
    const KEYS: [(Key, usize, u64, u64); 12] = [
        key(Key::Type, b"type\""),
        key(Key::Ts, b"ts\""),
        key(Key::Exchange, b"exchange\""),
        key(Key::Symbol, b"symbol\""),
        key(Key::Seq, b"seq\""),
        key(Key::Side, b"side\""),
        key(Key::Bids, b"bids\""),
        key(Key::Asks, b"asks\""),
        key(Key::Price, b"price\""),
        key(Key::PrevSeq, b"prev_seq\""),
        key(Key::Id, b"id\""),
        key(Key::Qty, b"qty\""),
    ];

    const fn key(key: Key, text: &[u8]) -> (Key, usize, u64, u64) {
        let (mut pattern, mut mask, mut i) = (0u64, 0u64, 0);
        while i < text.len() && i < 8 {
            pattern |= (text[i] as u64) << (8 * i);
            mask |= 0xff << (8 * i);
            i += 1;
        }
        (key, text.len(), pattern, mask)
    }

    /// The bytes that end the text of a string the fast path reads: a quote, a backslash or a
    /// control character.
    const STOPS: [bool; 256] = {
        let mut stops = [false; 256];
        let mut c = 0;
        while c < 0x20 {
            stops[c] = true;
            c += 1;
        }
        stops[b'"' as usize] = true;
        stops[b'\\' as usize] = true;
        stops
    };

    fn set<T>(slot: &mut Option<T>, value: T) -> Option<()> {
        match slot {
            Some(_) => None,
            None => {
                *slot = Some(value);
                Some(())
            }
        }
    }

    /// See the module doc. Fills `raw`, which must be empty; on `None` it may hold some fields.
    pub(super) fn read<'a>(line: &'a str, raw: &mut Raw<'a>) -> Option<()> {
        let mut scan = Scan { text: line, at: 0 };
        scan.eat(b'{')?;
        scan.ws();
        if scan.peek() != Some(b'}') {
            loop {
                let key = scan.key()?;
                scan.eat(b':')?;
                match key {
                    Key::Type => set(&mut raw.kind, Cow::Borrowed(scan.str()?))?,
                    Key::Exchange => set(&mut raw.exchange, Cow::Borrowed(scan.str()?))?,
                    Key::Symbol => set(&mut raw.symbol, Cow::Borrowed(scan.str()?))?,
                    Key::Id => set(&mut raw.id, Cow::Borrowed(scan.str()?))?,
                    Key::Price => set(&mut raw.price, Cow::Borrowed(scan.str()?))?,
                    Key::Qty => set(&mut raw.qty, Cow::Borrowed(scan.str()?))?,
                    Key::Side => set(&mut raw.side, Cow::Borrowed(scan.str()?))?,
                    Key::Ts => {
                        let (negative, n) = scan.int()?;
                        let n = i64::try_from(n).ok()?;
                        set(&mut raw.ts, if negative { -n } else { n })?
                    }
                    Key::Seq | Key::PrevSeq => {
                        let (negative, n) = scan.int()?;
                        if negative {
                            return None;
                        }
                        let slot = if key == Key::Seq {
                            &mut raw.seq
                        } else {
                            &mut raw.prev_seq
                        };
                        set(slot, n)?
                    }
                    Key::Bids => set(&mut raw.bid_levels, scan.levels()?)?,
                    Key::Asks => set(&mut raw.ask_levels, scan.levels()?)?,
                }
                scan.ws();
                match scan.peek()? {
                    b',' => scan.at += 1,
                    b'}' => break,
                    _ => return None,
                }
                scan.ws();
            }
        }
        scan.at += 1;
        scan.ws();
        (scan.at == line.len()).then_some(())
    }

    /// The usual line, read without a search for keys: the contract's fields in its order
    /// (`type`, `exchange`, `symbol`, `ts`, then `seq`, `prev_seq` (each optional), `bids` and
    /// `asks`, or `id`, `price`, `qty` and `side`), no whitespace, integers of at most 18 digits
    /// and plain values (what the generators, the converted captures and most feeds write), and
    /// every field valid. It gives the event straight, with no [`Raw`] between (filling one,
    /// checking it and dropping it cost a fifth of reading a line), and exactly what checking
    /// [`read`]'s `Raw` gives (a property test); `None` for any other line, and for one that
    /// checking would refuse: [`read`] then takes it, and the check gives the reason.
    pub(super) fn read_usual(line: &str) -> Option<Parsed<'_>> {
        let mut scan = Scan { text: line, at: 0 };
        scan.lit(b"{\"type\":\"")?;
        let kind = scan.str_rest()?;
        scan.lit(b",\"exchange\":\"")?;
        let exchange = scan.str_rest()?;
        scan.lit(b",\"symbol\":\"")?;
        let symbol = scan.str_rest()?;
        scan.lit(b",\"ts\":")?;
        // At most 18 digits: an `i64`, as the check needs, and it must be positive.
        let ts = scan.small_uint().filter(|&ts| ts > 0)?;
        let body = match kind {
            "book" | "snapshot" => {
                let mut seq = None;
                if scan.lit_if(b",\"seq\":") {
                    seq = Some(scan.small_uint()?);
                }
                // A snapshot's `prev_seq` is read and, as the check does, left out.
                let mut prev_seq = None;
                if scan.lit_if(b",\"prev_seq\":") {
                    prev_seq = Some(scan.small_uint()?);
                }
                scan.lit(b",\"bids\":")?;
                let bids = scan.usual_levels()?;
                scan.lit(b",\"asks\":")?;
                let asks = scan.usual_levels()?;
                if kind == "book" {
                    Body::Book {
                        bids,
                        asks,
                        seq,
                        prev_seq,
                    }
                } else {
                    Body::Snapshot { bids, asks, seq }
                }
            }
            "trade" => {
                scan.lit(b",\"id\":\"")?;
                let id = scan.str_rest()?;
                scan.lit(b",\"price\":\"")?;
                let price = scan.plain(Price::checked)?;
                scan.lit(b",\"qty\":\"")?;
                let qty = scan.plain(Qty::checked)?;
                if qty.is_zero_qty() || !trade_value_below_limit(price, qty) {
                    return None;
                }
                scan.lit(b",\"side\":\"")?;
                let side = if scan.lit_if(b"buy\"") {
                    TradeSide::Buy
                } else {
                    scan.lit(b"sell\"")?;
                    TradeSide::Sell
                };
                Body::Trade(Trade {
                    id: TradeId::new(id),
                    price,
                    qty,
                    side,
                })
            }
            _ => return None,
        };
        scan.lit(b"}")?;
        (scan.at == line.len()).then(|| Parsed {
            event: Event {
                sym: Sym::of(exchange, symbol),
                ts,
                body,
            },
            exchange: Cow::Borrowed(exchange),
            symbol: Cow::Borrowed(symbol),
        })
    }

    /// [`read`] into a new `Raw`.
    #[cfg(test)]
    pub(super) fn raw(line: &str) -> Option<Raw<'_>> {
        let mut raw = Raw::default();
        read(line, &mut raw)?;
        Some(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reason quotes at most 64 bytes of a bad value, with its length: a 600 KB `type`, side
    /// or price made a reason as long, and a Kafka dead letter of twice the message, more than
    /// the broker takes (it could not be written, and a bounded run failed every time).
    #[test]
    fn reasons_quote_a_long_value_in_part() {
        let long = "é".repeat(40) + &"x".repeat(600_000);
        let line = |kind: &str, price: &str, side: &str| {
            format!(
                r#"{{"type":"{kind}","exchange":"e","symbol":"s","ts":1,"id":"1","price":"{price}","qty":"1","side":"{side}"}}"#
            )
        };
        let start = format!("{:?}", &long[..64]); // 32 two-byte characters
        let cases = [
            (
                line(&long, "1", "buy"),
                format!("unknown type {start}... (600080 bytes)"),
            ),
            (
                line("trade", "1", &long),
                format!("bad side {start}... (600080 bytes)"),
            ),
            (
                line("trade", &("1".repeat(600_000)), "buy"),
                format!(
                    "bad price: bad decimal {:?}... (600000 bytes)",
                    "1".repeat(64)
                ),
            ),
            (line("trade", "1", "hold"), r#"bad side "hold""#.to_string()),
        ];
        for (line, reason) in cases {
            assert_eq!(parse(&line).map(|_| ()).unwrap_err().to_string(), reason);
        }
        // Cut at a character boundary: 63 bytes of `aé...` end before a two-byte character.
        let odd = "a".to_string() + &"é".repeat(40);
        assert_eq!(
            crate::types::quoted(&odd),
            format!("{:?}... (81 bytes)", &odd[..63])
        );
    }

    #[test]
    fn parses_the_contract_example() {
        let p = parse(r#"{"type":"book","exchange":"binance","symbol":"BTCUSDT","ts":1700000000123,"seq":1001,"bids":[["37000.10","1.25"]],"asks":[["37001.00","0"]]}"#).unwrap();
        assert_eq!(p.symbol, "BTCUSDT");
        assert_eq!(p.event.ts, 1_700_000_000_123);
        match p.event.body {
            Body::Book {
                bids,
                asks,
                seq,
                prev_seq,
            } => {
                assert_eq!(
                    bids,
                    vec![(
                        Price::parse("37000.1").unwrap(),
                        Qty::parse("1.25").unwrap()
                    )]
                );
                assert_eq!(asks, vec![(Price::parse("37001").unwrap(), Qty::ZERO)]);
                assert_eq!((seq, prev_seq), (Some(1001), None));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    use proptest::prelude::*;

    /// JSON texts of field values that are neither what the contract asks for nor plain: what the
    /// fast path must hand over to `serde_json` (or read exactly as it does).
    fn odd_value() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            r#""a\"b""#,
            "\"caf\u{e9}\"",
            r#""""#,
            "null",
            "true",
            "1.5",
            "1e3",
            "007",
            "-0",
            "-12",
            "18446744073709551615",
            "18446744073709551616",
            "9223372036854775808",
            "[]",
            r#"[[ "3" , "0" ]]"#,
            r#"[["1",2]]"#,
            r#"[["1"]]"#,
            "{}",
        ])
        .prop_map(str::to_string)
    }

    /// Decimal text: mostly valid (zero included), sometimes not.
    fn decimal() -> impl Strategy<Value = String> {
        prop_oneof![4 => "[0-9]{1,3}(\\.[0-9]{1,3})?", 1 => "[0-9.-]{1,5}"]
    }

    /// A level array of up to three levels, now and then of 7 to 18 (around the number the usual
    /// reader gathers before making their vector), their prices and quantities as `decimal`
    /// writes them.
    fn level_array<S: Strategy<Value = String> + 'static>(
        decimal: impl Fn() -> S,
    ) -> BoxedStrategy<String> {
        prop_oneof![
            8 => prop::collection::vec((decimal(), decimal()), 0..4),
            1 => prop::collection::vec((decimal(), decimal()), 7..19),
        ]
        .prop_map(|levels| {
            let levels: Vec<String> = levels
                .iter()
                .map(|(p, q)| format!("[\"{p}\",\"{q}\"]"))
                .collect();
            format!("[{}]", levels.join(","))
        })
        .boxed()
    }

    /// A value of the type the key needs (mostly), or an odd one.
    fn value(key: &'static str, typed_weight: u32) -> BoxedStrategy<String> {
        let typed = match key {
            "ts" => prop_oneof![1 => any::<i64>(), 2 => 1..i64::MAX]
                .prop_map(|n| n.to_string())
                .boxed(),
            "seq" | "prev_seq" => any::<u64>().prop_map(|n| n.to_string()).boxed(),
            "bids" | "asks" => level_array(decimal),
            "type" => prop::sample::select(vec!["snapshot", "book", "trade", "quote"])
                .prop_map(|s| format!("\"{s}\""))
                .boxed(),
            "side" => prop::sample::select(vec!["buy", "sell", "up"])
                .prop_map(|s| format!("\"{s}\""))
                .boxed(),
            "price" | "qty" => decimal().prop_map(|s| format!("\"{s}\"")).boxed(),
            _ => "[a-zA-Z0-9.]{0,6}".prop_map(|s| format!("\"{s}\"")).boxed(),
        };
        prop_oneof![typed_weight => typed, 1 => odd_value()].boxed()
    }

    /// Object members: known keys in any order, sometimes repeated or unknown; or the fields of
    /// an event (valid or nearly so), in any order.
    fn members() -> impl Strategy<Value = Vec<(&'static str, String)>> {
        let keys = vec![
            "type", "exchange", "symbol", "ts", "bids", "asks", "seq", "prev_seq", "id", "price",
            "qty", "side",
        ];
        // Repeated keys, and unknown ones that a prefix of a known key starts or ends.
        let extra = prop::sample::select(vec![
            "ts",
            "symbol",
            "bids",
            "other",
            "t",
            "tsx",
            "typ",
            "types",
            "exchangeX",
            "prev_se",
            "prev_seqq",
            r"ty\u0070e",
        ]);
        let any = (
            prop::sample::subsequence(keys, 0..=12).prop_shuffle(),
            prop::option::weighted(0.1, extra),
        )
            .prop_map(|(mut keys, extra)| {
                keys.extend(extra);
                (keys, 4)
            });
        let event = prop::sample::select(vec![
            vec!["type", "exchange", "symbol", "ts", "bids", "asks", "seq"],
            vec![
                "type", "exchange", "symbol", "ts", "bids", "asks", "seq", "prev_seq",
            ],
            vec![
                "type", "exchange", "symbol", "ts", "id", "price", "qty", "side",
            ],
        ])
        .prop_shuffle()
        .prop_map(|keys| (keys, 30));
        prop_oneof![any, event].prop_flat_map(|(keys, typed_weight)| {
            keys.into_iter()
                .map(|k| (Just(k), value(k, typed_weight)))
                .collect::<Vec<_>>()
        })
    }

    /// `raw` with its level texts read as values where they all are valid (as the fast path
    /// reads them).
    fn values(mut raw: Raw<'_>) -> Raw<'_> {
        let read = |text: &mut Option<Vec<(Cow<'_, str>, Cow<'_, str>)>>,
                    values: &mut Option<Vec<Level>>| {
            let parsed: Option<Vec<Level>> = text.as_ref().and_then(|levels| {
                levels
                    .iter()
                    .map(|(p, q)| Some((Price::parse(p).ok()?, Qty::parse(q).ok()?)))
                    .collect()
            });
            if let Some(parsed) = parsed {
                *text = None;
                *values = Some(parsed);
            }
        };
        read(&mut raw.bids, &mut raw.bid_levels);
        read(&mut raw.asks, &mut raw.ask_levels);
        raw
    }

    /// Whenever the fast path reads a line, the fields `serde_json` reads from it check out the
    /// same (the same event, or the same reason); and enough generated lines take the fast path
    /// for that to mean something.
    #[test]
    fn the_fast_path_agrees_with_serde() {
        use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
        let cases = 2_000;
        // Seeded: how many lines take the fast path is asserted below, and a random draw fell
        // short of it now and then (39 valid events of 2,000 against 40, in a CI run).
        let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
        let mut runner = TestRunner::new_with_rng(Config::with_cases(cases), rng);
        let read = std::cell::Cell::new(0u32);
        let valid = std::cell::Cell::new(0u32);
        let lines = (
            members(),
            prop::sample::select(vec!["", " ", "\t", " \r\n "]),
            prop::sample::select(vec!["", "", "", " ", "x", ",", "}"]),
        );
        runner
            .run(&lines, |(fields, space, tail)| {
                let body: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{space}\"{k}\"{space}:{space}{v}{space}"))
                    .collect();
                let line = format!("{space}{{{}}}{tail}", body.join(","));
                if let Some(fast) = fast::raw(&line) {
                    read.set(read.get() + 1);
                    let slow: Raw<'_> = serde_json::from_str(&line)
                        .map_err(|e| TestCaseError::fail(format!("{line}: serde: {e}")))?;
                    prop_assert_eq!(values(fast.clone()), values(slow.clone()), "{}", line);
                    let (fast, slow) = (checked(&mut fast.clone()), checked(&mut slow.clone()));
                    if fast.is_ok() {
                        valid.set(valid.get() + 1);
                    }
                    prop_assert_eq!(fast, slow, "{}", line);
                }
                Ok(())
            })
            .unwrap();
        assert!(
            read.get() >= cases / 10 && valid.get() >= cases / 50,
            "only {} of {cases} generated lines took the fast path, {} of them valid events",
            read.get(),
            valid.get()
        );
    }

    /// Lines of the usual form: the contract's keys in its order (`seq` and `prev_seq` each
    /// sometimes left out), each value mostly of the type its key needs, sometimes odd.
    fn usual_members() -> impl Strategy<Value = Vec<(&'static str, String)>> {
        let book = (any::<bool>(), any::<bool>()).prop_map(|(seq, prev_seq)| {
            let mut keys = vec!["type", "exchange", "symbol", "ts"];
            keys.extend(seq.then_some("seq"));
            keys.extend(prev_seq.then_some("prev_seq"));
            keys.extend(["bids", "asks"]);
            keys
        });
        let trade = Just(vec![
            "type", "exchange", "symbol", "ts", "id", "price", "qty", "side",
        ]);
        prop_oneof![book, trade].prop_flat_map(|keys| {
            // The type that goes with the keys, mostly.
            let types = if keys.contains(&"bids") {
                vec!["book", "book", "snapshot", "trade", "quote"]
            } else {
                vec!["trade", "trade", "trade", "book", "quote"]
            };
            let kind = prop::sample::select(types).prop_map(|t| format!("\"{t}\""));
            let kind = prop_oneof![40 => kind, 1 => odd_value()];
            (
                kind,
                keys[1..]
                    .iter()
                    .map(|&k| (Just(k), usual_value(k)))
                    .collect::<Vec<_>>(),
            )
                .prop_map(|(kind, mut rest)| {
                    rest.insert(0, ("type", kind));
                    rest
                })
        })
    }

    /// A value for key `k` of a usual line: integers mostly short (and some at the usual
    /// reader's bound of 18 digits, or past it), decimals mostly valid, now and then an odd
    /// value.
    fn usual_value(k: &'static str) -> BoxedStrategy<String> {
        let long = prop::sample::select(vec![
            "999999999999999999",
            "1000000000000000000",
            "9223372036854775807",
            "0",
            "01",
        ])
        .prop_map(str::to_string);
        let typed = match k {
            "ts" => prop_oneof![
                8 => (1i64..10_000_000_000_000).prop_map(|n| n.to_string()),
                1 => any::<i64>().prop_map(|n| n.to_string()),
                1 => long,
            ]
            .boxed(),
            "seq" | "prev_seq" => prop_oneof![
                8 => (0u64..1_000_000_000_000_000).prop_map(|n| n.to_string()),
                1 => any::<u64>().prop_map(|n| n.to_string()),
                1 => long,
            ]
            .boxed(),
            "bids" | "asks" => {
                level_array(|| prop_oneof![30 => "[0-9]{1,3}(\\.[0-9]{1,3})?", 1 => "[0-9.-]{1,5}"])
            }
            _ => return value(k, 40),
        };
        prop_oneof![40 => typed, 1 => odd_value()].boxed()
    }

    /// Whenever the reader of the usual form reads a line, checking the fields the general
    /// scanner reads from it gives the same event; and many generated lines of that form (those
    /// with every field valid) take it. (With the test above, the scanner's fields check out as
    /// `serde_json`'s do.)
    #[test]
    fn the_usual_form_is_read_as_the_scanner_reads_it() {
        use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
        let cases = 2_000;
        // Seeded, as in the test above: how many lines take the usual path is asserted below.
        let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
        let mut runner = TestRunner::new_with_rng(Config::with_cases(cases), rng);
        let read = std::cell::Cell::new(0u32);
        let valid = std::cell::Cell::new(0u32);
        // Some lines lose a field, or are cut short at any byte.
        let lines = (
            usual_members(),
            prop::sample::select(vec!["", "", "", "", " ", "x", ",", "}"]),
            prop::option::weighted(0.1, any::<prop::sample::Index>()),
            prop::option::weighted(0.1, any::<prop::sample::Index>()),
        );
        runner
            .run(&lines, |(mut fields, tail, dropped, cut)| {
                if let Some(field) = dropped {
                    fields.remove(field.index(fields.len()));
                }
                let body: Vec<String> =
                    fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                let mut line = format!("{{{}}}{tail}", body.join(","));
                if let Some(at) = cut {
                    let mut at = at.index(line.len());
                    while !line.is_char_boundary(at) {
                        at -= 1;
                    }
                    line.truncate(at);
                }
                let general = fast::raw(&line).map(|mut raw| checked(&mut raw));
                if general.as_ref().is_some_and(Result::is_ok) {
                    valid.set(valid.get() + 1);
                }
                if let Some(usual) = fast::read_usual(&line) {
                    read.set(read.get() + 1);
                    prop_assert_eq!(Some(Ok(usual)), general, "{}", line);
                }
                Ok(())
            })
            .unwrap();
        // Of the lines that check out (some 14%), about two thirds take the usual reader; the
        // others carry, for instance, whitespace after the object or an integer past 18 digits.
        assert!(
            read.get() >= cases / 20 && 2 * read.get() >= valid.get(),
            "only {} of {cases} generated lines, {} of them valid, took the usual form's reader",
            read.get(),
            valid.get()
        );
    }

    /// Strings with escapes are never read raw: a line whose names or ids carry escaped quotes,
    /// backslashes or control characters parses as `serde_json` reads it.
    #[test]
    fn escaped_strings_parse_as_serde_reads_them() {
        for (exchange, id) in [
            (r#"a\\"#, "1"),
            (r#"a\\b"#, r#"x\\"#),
            (r#"q\"q"#, r#"\u0041"#),
            (r#"tab\t"#, r#"n\n"#),
            ("plain", r#"é\\é"#),
        ] {
            let line = format!(
                r#"{{"type":"trade","exchange":"{exchange}","symbol":"S","ts":1,"id":"{id}","price":"1.5","qty":"2","side":"buy"}}"#
            );
            let slow = checked(&mut serde_json::from_str::<Raw<'_>>(&line).unwrap());
            assert_eq!(parse(&line), slow, "{line}");
            assert!(slow.is_ok(), "{line}");
        }
    }

    /// The fast path reads the contract's keys, wherever a line ends, and no other key: not a
    /// prefix of one, one with a known key as its prefix, nor one written with an escape.
    #[test]
    fn the_fast_path_matches_keys_exactly() {
        let known = [
            ("type", r#""trade""#),
            ("exchange", r#""x""#),
            ("symbol", r#""y""#),
            ("ts", "1"),
            ("seq", "1"),
            ("prev_seq", "1"),
            ("bids", "[]"),
            ("asks", "[]"),
            ("id", r#""1""#),
            ("price", r#""1""#),
            ("qty", r#""1""#),
            ("side", r#""buy""#),
        ];
        for (key, value) in known {
            for line in [
                format!(r#"{{"{key}":{value}}}"#),
                format!(r#"{{"{key}" : {value} }}"#),
            ] {
                assert!(fast::raw(&line).is_some(), "{line}");
            }
            let mut misses = vec![
                format!("{key}x"),
                format!(r#"{key}\""#),
                format!("x{key}"),
                key[..key.len() - 1].to_string(),
                format!(
                    r"{}\u{:04x}",
                    &key[..key.len() - 1],
                    key.as_bytes()[key.len() - 1]
                ),
            ];
            if key.len() > 2 {
                misses.push(key[1..].to_string());
            }
            for miss in misses {
                let line = format!(r#"{{"{miss}":{value}}}"#);
                assert!(fast::raw(&line).is_none(), "{line}");
            }
        }
    }

    #[test]
    fn the_fast_path_reads_the_usual_lines() {
        for line in [
            r#"{"type":"book","exchange":"binance","symbol":"BTCUSDT","ts":1700000000123,"seq":1001,"prev_seq":1000,"bids":[["37000.10","1.25"]],"asks":[]}"#,
            r#"{"type":"book","exchange":"x","symbol":"y","ts":1,"seq":7,"bids":[],"asks":[["2","0"]]}"#,
            r#"{"type":"book","exchange":"x","symbol":"y","ts":1,"prev_seq":6,"bids":[],"asks":[]}"#,
            r#"{"type":"book","exchange":"x","symbol":"y","ts":999999999999999999,"bids":[["1","2"]],"asks":[]}"#,
            r#"{"type":"snapshot","exchange":"synth","symbol":"S000USDT","ts":1,"seq":1,"bids":[["1","2"],["3","4"]],"asks":[["5","6"]]}"#,
            r#"{"type":"trade","exchange":"x","symbol":"y","ts":1,"id":"17","price":"1.5","qty":"2","side":"sell"}"#,
        ] {
            let fast = fast::raw(line).expect(line);
            let usual = fast::read_usual(line).expect(line);
            let slow = serde_json::from_str::<Raw<'_>>(line).unwrap();
            assert_eq!(checked(&mut { fast }).unwrap(), usual, "{line}");
            assert_eq!(checked(&mut { slow }).unwrap(), usual, "{line}");
        }
    }

    #[test]
    fn every_invalid_input_has_a_reason() {
        let cases = [
            ("not json", "not json"),
            ("[1,2]", "not json: not an object"),
            (
                r#"{"type":"quote","exchange":"x","symbol":"y","ts":1}"#,
                "unknown type \"quote\"",
            ),
            (
                r#"{"type":"trade","symbol":"y","ts":1}"#,
                "missing field exchange",
            ),
            (
                r#"{"type":"trade","exchange":"x","symbol":"y","ts":"1"}"#,
                "ill-typed field ts",
            ),
            (
                r#"{"type":"trade","exchange":"x","symbol":"y","ts":0,"id":"1","price":"1","qty":"1","side":"buy"}"#,
                "ts must be an integer from 1 to 9223372036854775807",
            ),
            (
                r#"{"type":"trade","exchange":"x","symbol":"y","ts":-5,"id":"1","price":"1","qty":"1","side":"buy"}"#,
                "ts must be an integer from 1 to 9223372036854775807",
            ),
            // Numbers beyond an i64, or not integers, read as ill-typed.
            (
                r#"{"type":"trade","exchange":"x","symbol":"y","ts":9223372036854775808,"id":"1","price":"1","qty":"1","side":"buy"}"#,
                "ts must be an integer from 1 to 9223372036854775807",
            ),
            (
                r#"{"type":"trade","exchange":"x","symbol":"y","ts":-0,"id":"1","price":"1","qty":"1","side":"buy"}"#,
                "ts must be an integer from 1 to 9223372036854775807",
            ),
            (
                r#"{"type":"trade","exchange":"x","symbol":"y","ts":1.5,"id":"1","price":"1","qty":"1","side":"buy"}"#,
                "ts must be an integer from 1 to 9223372036854775807",
            ),
            (
                r#"{"type":"trade","exchange":"x","symbol":"y","ts":1,"id":"1","price":"0","qty":"1","side":"buy"}"#,
                "bad price: price must be positive: 0",
            ),
            (
                r#"{"type":"trade","exchange":"x","symbol":"y","ts":1,"id":"1","price":"1","qty":"0","side":"buy"}"#,
                "trade quantity must be positive",
            ),
            (
                r#"{"type":"trade","exchange":"x","symbol":"y","ts":1,"id":"1","price":"1","qty":"1","side":"up"}"#,
                "bad side \"up\"",
            ),
            (
                r#"{"type":"trade","exchange":"x","symbol":"y","ts":1,"id":7,"price":"1","qty":"1","side":"buy"}"#,
                "ill-typed field id",
            ),
            (
                r#"{"type":"book","exchange":"x","symbol":"y","ts":1,"bids":[["1","-2"]],"asks":[]}"#,
                "bad bids: negative quantity: -2",
            ),
            (
                r#"{"type":"book","exchange":"x","symbol":"y","ts":1,"bids":[["1e3","2"]],"asks":[]}"#,
                "bad bids: bad decimal \"1e3\"",
            ),
            (
                r#"{"type":"book","exchange":"x","symbol":"y","ts":1,"bids":[]}"#,
                "missing field asks",
            ),
            (
                r#"{"type":"snapshot","exchange":"x","symbol":"y","ts":1,"bids":[[1,2]],"asks":[]}"#,
                "ill-typed field bids",
            ),
            // Prices must be positive and quantities not negative on either side and in trades;
            // every field of a type is required.
            (
                r#"{"type":"book","exchange":"x","symbol":"y","ts":1,"bids":[["-1","1"]],"asks":[]}"#,
                "bad bids: price must be positive: -1",
            ),
            (
                r#"{"type":"snapshot","exchange":"x","symbol":"y","ts":1,"bids":[],"asks":[["0","1"]]}"#,
                "bad asks: price must be positive: 0",
            ),
            (
                r#"{"type":"trade","exchange":"x","symbol":"y","ts":1,"id":"1","price":"-5","qty":"1","side":"buy"}"#,
                "bad price: price must be positive: -5",
            ),
            (
                r#"{"type":"trade","exchange":"x","symbol":"y","ts":1,"id":"1","price":"5","qty":"-1","side":"buy"}"#,
                "bad qty: negative quantity: -1",
            ),
            (
                r#"{"type":"trade","exchange":"x","symbol":"y","ts":1,"id":"1","price":"5","qty":"1"}"#,
                "missing field side",
            ),
            (
                r#"{"type":"trade","exchange":"x","symbol":"y","ts":1,"price":"5","qty":"1","side":"buy"}"#,
                "missing field id",
            ),
            (
                r#"{"type":"trade","exchange":"x","symbol":"y","ts":1,"id":"1","qty":"1","side":"buy"}"#,
                "missing field price",
            ),
            (
                r#"{"type":"trade","exchange":"x","symbol":"y","ts":1,"id":"1","price":"5","side":"buy"}"#,
                "missing field qty",
            ),
            (
                r#"{"type":"snapshot","exchange":"x","symbol":"y","bids":[],"asks":[]}"#,
                "missing field ts",
            ),
            (
                r#"{"type":"trade","exchange":"x","ts":1,"id":"1","price":"5","qty":"1","side":"buy"}"#,
                "missing field symbol",
            ),
        ];
        for (line, reason) in cases {
            let err = parse(line).expect_err(line).to_string();
            assert!(
                err.starts_with(reason),
                "{line}: got {err:?}, want {reason:?}"
            );
        }
    }

    /// `seq` and `prev_seq` (README, sequence rules): null reads as absent, any `u64` is taken,
    /// a negative value or one past `u64` is ill-typed; in the usual form and any other.
    #[test]
    fn sequence_numbers_read_as_the_readme_says() {
        let book = |fields: &str| {
            format!(
                r#"{{"type":"book","exchange":"x","symbol":"y","ts":1,{fields}"bids":[],"asks":[]}}"#
            )
        };
        let seqs = |line: &str| match parse(line).expect(line).event.body {
            Body::Book { seq, prev_seq, .. } => (seq, prev_seq),
            Body::Snapshot { seq, .. } => (seq, None),
            Body::Trade(_) => panic!("{line}"),
        };
        for (fields, want) in [
            (r#""seq":null,"prev_seq":null,"#, (None, None)),
            (r#""prev_seq":null,"seq":7,"#, (Some(7), None)),
            (
                r#""seq":18446744073709551615,"prev_seq":0,"#,
                (Some(u64::MAX), Some(0)),
            ),
            (r#""seq":5,"prev_seq":4,"#, (Some(5), Some(4))),
            (r#""seq" : 5 , "#, (Some(5), None)),
        ] {
            assert_eq!(seqs(&book(fields)), want, "{fields}");
        }
        let snapshot = r#"{"type":"snapshot","exchange":"x","symbol":"y","ts":1,"seq":null,"bids":[],"asks":[]}"#;
        assert_eq!(seqs(snapshot), (None, None));
        for (fields, reason) in [
            (r#""seq":-1,"#, "ill-typed field seq"),
            (r#""seq":18446744073709551616,"#, "ill-typed field seq"),
            (r#""seq":1.5,"#, "ill-typed field seq"),
            (r#""seq":"5","#, "ill-typed field seq"),
            (r#""seq":5,"prev_seq":-1,"#, "ill-typed field prev_seq"),
        ] {
            let line = book(fields);
            let err = parse(&line).expect_err(&line).to_string();
            assert!(err.starts_with(reason), "{line}: got {err:?}");
        }
    }
}
