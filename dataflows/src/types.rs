//! Domain values: exact prices and quantities, sides, symbols, trade ids.
//!
//! Also here, as they work on those values' representation: decimal text in and out
//! ([`push_decimal`], [`quoted`]), the maps keyed by internal values ([`FoldMap`]), and the
//! book's price and level types ([`Bbo`], [`Levels`], [`BookPrice`]). The quotients of the
//! ticker, rounded, are in [`crate::quotients`].
//!
//! Invariants:
//! - [`Price`] and [`Qty`] wrap `rust_decimal::Decimal`, never `f64`. Input is parsed through
//!   checked constructors ([`Price::parse`], [`Qty::parse`]) that accept plain decimal notation;
//!   computed values come through the unchecked `from_decimal`. Either way a value is stored in one
//!   representation (at scale 10 when that is exact, else normalised), so equal values are equal
//!   however they were written (`1.50` == `1.5`).
//! - `Display` prints the normalised value; `parse(display(x)) == x` (property-tested).
//! - Across processes both serialise as the 16 bytes of `Decimal::serialize`, which is exact and
//!   what bincode accepts, read as one little-endian `u128`: bincode writes the same 16 bytes as
//!   for the array, in one call rather than sixteen. The form is for bincode: a `serde_json::Value`
//!   holds no integer above 64 bits.
//! - Sums of [`Qty`] are exact where a `Decimal` can hold them: `Qty::add_exact` says when
//!   one may have been rounded (the orderbook's group sums then re-sum from their levels).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a decimal string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// Not `-?digits(.digits)?`, or more digits than a 96-bit decimal holds: the text, as
    /// [`quoted`] shows it.
    #[error("bad decimal {0}")]
    Syntax(String),
}

/// Input text as a reason quotes it: in quotes, escaped, and cut to its first [`QUOTED_MAX`]
/// bytes (at a character boundary) with its whole length after it. A reason goes into logs, a
/// `--dlq` line and a Kafka header, and quoting a value whole made a 600 KB bad `type` a 1.2 MB
/// dead letter, more than the broker takes.
pub fn quoted(text: &str) -> String {
    if text.len() <= QUOTED_MAX {
        return format!("{text:?}");
    }
    let end = (0..=QUOTED_MAX)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    format!("{:?}... ({} bytes)", &text[..end], text.len())
}

/// Bytes of input text a reason quotes, at most.
pub const QUOTED_MAX: usize = 64;

/// Parses a plain-notation decimal string (`-?\d+(\.\d+)?`), exactly, and normalises its scale.
pub(crate) fn parse_decimal(s: &str) -> Result<Decimal, DecimalError> {
    let body = s.strip_prefix('-').unwrap_or(s);
    let mut parts = body.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    let digits_ok = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits_ok(int) || !frac.is_none_or(digits_ok) {
        return Err(DecimalError::Syntax(quoted(s)));
    }
    Decimal::from_str_exact(s)
        .or_else(|e| match frac {
            // More than 28 fractional digits, some of them trailing zeros, which change no value.
            Some(f) if f.ends_with('0') => {
                let int = &s[..s.len() - f.len() - 1];
                let f = f.trim_end_matches('0');
                Decimal::from_str_exact(&if f.is_empty() {
                    int.to_string()
                } else {
                    format!("{int}.{f}")
                })
            }
            _ => Err(e),
        })
        .map(|d| d.normalize())
        .map_err(|_| DecimalError::Syntax(quoted(s)))
}

/// `d`'s absolute mantissa and scale with the trailing fractional zeros removed (the normalised
/// value, without building a `Decimal`), in u64 arithmetic when the mantissa fits: u128 division
/// is slow, and values kept at [`SCALE`] usually carry several such zeros.
fn without_trailing_zeros(d: Decimal) -> (u128, u32) {
    let stored = Stored::of(d);
    let (u, mut scale) = (stored.magnitude, stored.scale());
    match u64::try_from(u) {
        Ok(v) => {
            let (v, places) = without_trailing_digits(v, scale);
            (u128::from(v), places as u32)
        }
        Err(_) => {
            let mut v = u;
            while scale > 0 && v.is_multiple_of(10) {
                v /= 10;
                scale -= 1;
            }
            (v, scale)
        }
    }
}

/// Room for any `Decimal` in plain notation: 29 digits, a point, a sign, leading zeros.
const DECIMAL_BUF: usize = 64;

/// `10^i` for every exponent a `u64` holds.
const POW10_U64: [u64; 20] = {
    let mut p = [1u64; 20];
    let mut i = 1;
    while i < p.len() {
        p[i] = p[i - 1] * 10;
        i += 1;
    }
    p
};

/// Appends `d` to `out` in plain notation without trailing zeros (what `Decimal`'s `Display`
/// writes of the normalised value, several times faster): the hot path of every record.
pub fn push_decimal(out: &mut impl fmt::Write, d: Decimal) {
    // Writing to a `String` or to bytes cannot fail.
    let _ = write_plain(out, d);
}

/// Writes `d` as [`push_decimal`] does, to any text sink (a record being rendered, a
/// formatter). Mantissas that fit 64 bits (nearly all) lose their trailing fractional zeros
/// ([`without_trailing_digits`]) and are written by one `itoa` as text, the point put in as it
/// is copied: nothing is checked for UTF-8 afterwards (checking every rendered number and book
/// side was 3% of the work on the Flink file). Others are written digit by digit.
fn write_plain<W: fmt::Write>(out: &mut W, d: Decimal) -> fmt::Result {
    // A zero with the sign bit set is written `0`.
    let stored = Stored::of(d);
    let scale = stored.scale();
    if stored.negative() && stored.magnitude != 0 {
        out.write_char('-')?;
    }
    match u64::try_from(stored.magnitude) {
        Ok(v) => {
            let (n, width) = without_trailing_digits(v, scale);
            let mut digits = itoa::Buffer::new();
            let digits = digits.format(n);
            match digits.len().checked_sub(width) {
                Some(int) if int > 0 => {
                    out.write_str(&digits[..int])?;
                    if width > 0 {
                        out.write_char('.')?;
                        out.write_str(&digits[int..])?;
                    }
                    Ok(())
                }
                // No integer digits: `0.`, then zeros where the digits are fewer than the places.
                _ => {
                    out.write_str("0.")?;
                    (digits.len()..width).try_for_each(|_| out.write_char('0'))?;
                    out.write_str(digits)
                }
            }
        }
        _ => {
            let (mut v, scale) = without_trailing_zeros(d);
            let mut buf = [0u8; DECIMAL_BUF];
            let (mut i, mut n) = (DECIMAL_BUF, 0u32);
            // Digits from the right; the point after `scale` of them; leading zeros as needed.
            loop {
                i -= 1;
                buf[i] = b'0' + (v % 10) as u8;
                v /= 10;
                n += 1;
                if n == scale {
                    i -= 1;
                    buf[i] = b'.';
                }
                if v == 0 && n > scale {
                    break;
                }
            }
            out.write_str(std::str::from_utf8(&buf[i..]).unwrap_or("?"))
        }
    }
}

/// `v x 10^-scale` as a mantissa and a number of places without trailing fractional zeros: `v`
/// divided by the largest power of ten, up to `10^scale`, that divides it. At most five
/// divisions, by constants (multiplications): the count of zeros in binary, and a `u64` has at
/// most 19 <= 16 + 8 + 4 + 2 + 1.
fn without_trailing_digits(v: u64, scale: u32) -> (u64, usize) {
    let (mut n, mut width) = (v, scale as usize);
    if n == 0 {
        return (0, 0);
    }
    for (p, k) in [
        (10u64.pow(16), 16),
        (10u64.pow(8), 8),
        (10_000, 4),
        (100, 2),
        (10, 1),
    ] {
        if width >= k && n.is_multiple_of(p) {
            n /= p;
            width -= k;
        }
    }
    (n, width)
}

/// `d`'s 16 bytes as one number: an array of 16 bytes is serialised byte by byte, which was 6% of
/// the process that reads the file at `-w 1 -n 2`.
fn serialize_decimal<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    u128::from_le_bytes(d.serialize()).serialize(s)
}

fn deserialize_decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    u128::deserialize(d).map(|n| Decimal::deserialize(n.to_le_bytes()))
}

/// A hash map with a fast, per-map seeded hasher (foldhash) for the dataflow's internal keys
/// (symbols, book sides, result keys), which SipHash made a visible share of the profile. Seeded
/// per map, it also keys the ticker's window by trade ids, values an input chooses freely: an
/// input cannot know the seed to make its ids collide.
pub type FoldMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The scale prices and quantities are kept at when their value allows it exactly (at most this
/// many fractional digits): comparisons and sums of values at one scale skip `Decimal`'s
/// rescaling, which was the largest single cost of the dataflow (book maps, groups and aggregates
/// compare prices and add quantities all the time). Values with more fractional digits
/// keep their exact, normalised scale; every operation stays exact either way.
pub const SCALE: u32 = 10;

/// `d` at [`SCALE`] when that is exact (and fits), else normalised: one representation per value.
pub fn canonical(d: Decimal) -> Decimal {
    if d.scale() == SCALE {
        return d;
    }
    let mut n = d.normalize();
    if n.scale() < SCALE {
        // Raising the scale multiplies the mantissa: exact (it stops short on overflow).
        n.rescale(SCALE);
    }
    n
}

/// `canonical(parse_decimal(s))`, with a fast path for the usual text of prices and quantities:
/// unsigned, at most 19 digits, at most [`SCALE`] of them fractional. That text is read straight
/// into a mantissa at `SCALE`, skipping the general parser and two normalisations (dividing a
/// 96-bit mantissa once per trailing zero), which were most of the cost of reading a book event.
fn parse_canonical(s: &str) -> Result<Decimal, DecimalError> {
    match plain_at_scale(s.as_bytes()) {
        Some(d) => Ok(d),
        None => parse_decimal(s).map(canonical),
    }
}

/// The fast path of [`parse_canonical`]: [`plain_prefix`] of the whole text.
fn plain_at_scale(b: &[u8]) -> Option<Decimal> {
    plain_prefix(b).and_then(|(d, len)| (len == b.len()).then_some(d))
}

/// The usual text of a price or quantity at the start of `b`, read up to the first byte that is
/// neither a digit nor a point (in one pass, the mantissa scaled to [`SCALE`] by a table): its
/// value, as [`parse_canonical`] gives it, and the length of its text. `None` when that text is
/// not of the fast form: signed, empty, more than 19 digits, more than [`SCALE`] fractional, a
/// point first, last or twice. The event scanner reads the values of level arrays with it, so
/// that their text is scanned once.
#[inline(always)]
pub(crate) fn plain_prefix(b: &[u8]) -> Option<(Decimal, usize)> {
    // A word at a time when the text ends within 8 bytes (the generators' values; not a real
    // capture's 8-decimal texts), else a byte at a time; both give the same digits.
    let (m, frac, len) = match crate::words::plain_prefix(b) {
        Some(found) => found?,
        None => plain_digits_bytewise(b)?,
    };
    if frac > SCALE as usize {
        return None;
    }
    Some((at_scale(m, frac)?, len))
}

/// A mantissa of `frac` (at most [`SCALE`]) fractional digits as a decimal at [`SCALE`], when
/// it fits 96 bits.
#[inline]
fn at_scale(m: u64, frac: usize) -> Option<Decimal> {
    // Below 2^64 x 10^10: no overflow.
    let v = i128::from(m) * i128::from(POW10_U64[SCALE as usize - frac]);
    Decimal::try_from_i128_with_scale(v, SCALE).ok()
}

/// [`plain_prefix`]'s digits read a byte at a time: their mantissa, how many are fractional and
/// the text's length; `None` for text not of the fast form or of more than 19 digits.
fn plain_digits_bytewise(b: &[u8]) -> Option<(u64, usize, usize)> {
    // Two runs of digits, the integer's and (after a point) the fraction's, into one mantissa.
    // Runs of more than 19 digits are refused below, before any use of the (then wrapped)
    // mantissa.
    let mut m: u64 = 0;
    let mut run = |from: usize| {
        let mut at = from;
        while let Some(d) = b.get(at).map(|c| c.wrapping_sub(b'0')).filter(|&d| d <= 9) {
            m = m.wrapping_mul(10).wrapping_add(u64::from(d));
            at += 1;
        }
        at
    };
    let int = run(0);
    if int == 0 {
        return None;
    }
    let (len, frac) = match b.get(int) {
        Some(b'.') => {
            let end = run(int + 1);
            if end == int + 1 {
                return None;
            }
            (end, end - int - 1)
        }
        _ => (int, 0),
    };
    if int + frac > 19 {
        return None;
    }
    Some((m, frac, len))
}

/// A decimal as stored: its flags word (sign in bit 31, scale in bits 16-23, the other bits
/// always zero) and its 96-bit magnitude. The hot decimal operations (order, equality, sums,
/// grouping, writing) work on these: `mantissa()` negates a 128-bit value by its sign, which was
/// 5% of all instructions when they used it.
#[derive(Clone, Copy)]
struct Stored {
    flags: u32,
    magnitude: u128,
}

impl Stored {
    const SIGN: u32 = 1 << 31;

    /// `d`'s parts (`serialize` gives the flags, then the magnitude's words, little-endian).
    #[inline]
    fn of(d: Decimal) -> Stored {
        let raw = u128::from_le_bytes(d.serialize());
        Stored {
            flags: raw as u32,
            magnitude: raw >> 32,
        }
    }

    #[inline]
    fn negative(self) -> bool {
        self.flags & Stored::SIGN != 0
    }

    #[inline]
    fn scale(self) -> u32 {
        (self.flags >> 16) & 0xff
    }

    /// The magnitude of a positive value at [`SCALE`] that fits 64 bits: nearly every price and
    /// quantity (below about `1.8 x 10^9`).
    #[inline]
    fn common(self) -> Option<u64> {
        if self.flags == SCALE << 16 {
            u64::try_from(self.magnitude).ok()
        } else {
            None
        }
    }
}

/// The decimal of magnitude `m` (below `2^96`), sign and scale (`from_parts` makes a zero +0).
pub(crate) const fn from_magnitude(m: u128, negative: bool, scale: u32) -> Decimal {
    Decimal::from_parts(
        m as u32,
        (m >> 32) as u32,
        (m >> 64) as u32,
        negative,
        scale,
    )
}

/// Whether `d` is a positive value at [`SCALE`] whose magnitude fits 64 bits (see
/// `Stored::common`).
pub fn is_common(d: Decimal) -> bool {
    Stored::of(d).common().is_some()
}

/// The magnitudes of `a` and `b` when both have the same scale and sign, so that those alone
/// order them (reversed when negative); `None` otherwise.
#[inline]
fn same_form(a: &Decimal, b: &Decimal) -> Option<(u128, u128)> {
    let (a, b) = (Stored::of(*a), Stored::of(*b));
    (a.flags == b.flags).then_some((a.magnitude, b.magnitude))
}

macro_rules! decimal_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Default)]
        pub struct $name(Decimal);

        // Hash of the canonical form: equal values hash alike (as `Eq` needs) without
        // `Decimal`'s normalising hash, which divides the 96-bit mantissa once per trailing zero.
        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                let c = canonical(self.0);
                c.mantissa().hash(state);
                c.scale().hash(state);
            }
        }

        impl $name {
            /// The exact value.
            pub fn value(self) -> Decimal {
                self.0
            }
        }

        // Equality and order by value, with a fast path for the common case of one scale and
        // sign: the stored 96-bit magnitudes decide ([`same_form`]).
        impl PartialEq for $name {
            #[inline]
            fn eq(&self, other: &Self) -> bool {
                match same_form(&self.0, &other.0) {
                    Some((a, b)) => a == b,
                    None => self.0 == other.0,
                }
            }
        }

        impl Eq for $name {}

        impl PartialOrd for $name {
            #[inline]
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            #[inline]
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                match same_form(&self.0, &other.0) {
                    Some((a, b)) if self.0.is_sign_negative() => b.cmp(&a),
                    Some((a, b)) => a.cmp(&b),
                    None => self.0.cmp(&other.0),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_plain(f, self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl From<$name> for Decimal {
            fn from(v: $name) -> Decimal {
                v.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serialize_decimal(&self.0, s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                deserialize_decimal(d).map(|d| $name(canonical(d)))
            }
        }
    };
}

decimal_newtype!(
    /// A price, exact: strictly positive as read; a bid grouped down (floor) below its first
    /// group step is 0.
    Price
);
decimal_newtype!(
    /// A quantity: exact; non-negative when parsed, signed when it is a difference.
    Qty
);

/// Why a price or quantity was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The string is not a plain decimal.
    #[error(transparent)]
    Decimal(#[from] DecimalError),
    /// Prices must be > 0.
    #[error("price must be positive: {0}")]
    NonPositivePrice(String),
    /// Quantities must be >= 0.
    #[error("negative quantity: {0}")]
    NegativeQty(String),
    /// Prices and quantities must be below [`VALUE_LIMIT`].
    #[error("too large: {0} (prices and quantities must be below 10^15)")]
    TooLarge(String),
}

/// Prices and quantities are below `10^15` (and a trade's price x quantity below `10^20`, see
/// `event`): with 96-bit decimals, no sum of sizes, volumes or quote volumes can then overflow,
/// which would stop the job. The contract names no bound; these are far above any market's.
pub const VALUE_LIMIT: Decimal = from_magnitude(10u128.pow(15), false, 0);

/// A trade's price x quantity is below this (its quote volume; see [`VALUE_LIMIT`]).
pub const TRADE_VALUE_LIMIT: Decimal = from_magnitude(10u128.pow(20), false, 0);

/// `|d| < VALUE_LIMIT`, on the stored magnitude at `SCALE` or by value otherwise.
#[inline]
fn below_limit(d: Decimal) -> bool {
    let stored = Stored::of(d);
    if stored.scale() == SCALE {
        stored.magnitude < 10u128.pow(15 + SCALE)
    } else {
        d.abs() < VALUE_LIMIT
    }
}

impl Price {
    /// Parses a price; it must be > 0.
    pub fn parse(s: &str) -> Result<Price, ValueError> {
        Price::checked(parse_canonical(s)?).map_err(|reason| reason(s.to_string()))
    }

    /// A parsed value as a price: it must be > 0 and below [`VALUE_LIMIT`] (else the reason,
    /// which takes the text).
    pub(crate) fn checked(d: Decimal) -> Result<Price, fn(String) -> ValueError> {
        // `d <= 0` (without comparing across scales).
        if d.is_sign_negative() || d.is_zero() {
            return Err(ValueError::NonPositivePrice);
        }
        if !below_limit(d) {
            return Err(ValueError::TooLarge);
        }
        Ok(Price(d))
    }

    /// Builds a price from an exact decimal known not to be negative (grouped prices: a bid
    /// below one group step floors to 0).
    pub fn from_decimal(d: Decimal) -> Price {
        Price(canonical(d))
    }

    /// Fractional digits of the normalised value (`61737.63000000` has 2).
    pub fn fraction_digits(self) -> u32 {
        without_trailing_zeros(self.0).1
    }

    /// Groups a bid down (floor) or an ask up (ceil) to a multiple of `step`, exactly.
    pub fn group(self, step: Price, side: Side) -> Price {
        // Both at `SCALE`, with magnitudes in 64 bits (every price of this world): the bounds
        // are integer arithmetic on the stored magnitudes, with one 64-bit division.
        if let (Some(m), Some(s)) = (Stored::of(self.0).common(), Stored::of(step.0).common()) {
            let rem = m % s;
            let grouped = match side {
                _ if rem == 0 => Some(m),
                Side::Bid => Some(m - rem),
                Side::Ask => (m - rem).checked_add(s),
            };
            if let Some(g) = grouped {
                return Price(from_magnitude(u128::from(g), false, SCALE));
            }
        }
        let rem = self.0 % step.0;
        if rem.is_zero() {
            return self;
        }
        let down = self.0 - rem;
        match side {
            Side::Bid => Price::from_decimal(down),
            Side::Ask => Price::from_decimal(down + step.0),
        }
    }
}

impl FromStr for Price {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Price::parse(s)
    }
}

impl Qty {
    /// Zero.
    pub const ZERO: Qty = Qty(Decimal::from_parts(0, 0, 0, false, SCALE));

    /// Parses a quantity; it must be >= 0.
    pub fn parse(s: &str) -> Result<Qty, ValueError> {
        Qty::checked(parse_canonical(s)?).map_err(|reason| reason(s.to_string()))
    }

    /// A parsed value as a quantity: it must be >= 0 and below [`VALUE_LIMIT`] (else the
    /// reason, which takes the text).
    pub(crate) fn checked(d: Decimal) -> Result<Qty, fn(String) -> ValueError> {
        if d.is_sign_negative() && !d.is_zero() {
            return Err(ValueError::NegativeQty);
        }
        if !below_limit(d) {
            return Err(ValueError::TooLarge);
        }
        Ok(Qty(d))
    }

    /// `self + other` in canonical form. Two values at [`SCALE`] with 64-bit magnitudes (nearly
    /// every sum of a candle or ticker) add as integers; any other pair as
    /// [`Qty::plus_equals`], then [`Qty::from_decimal`].
    ///
    /// Always inlined, the other case apart: called, it returned its value through memory, which
    /// the caller read back in one piece before its two halves were stored (a stall per sum).
    #[inline(always)]
    pub(crate) fn sum(self, other: Qty) -> Qty {
        let both = (Stored::of(self.0).common(), Stored::of(other.0).common());
        if let (Some(a), Some(b)) = both {
            if let Some(s) = a.checked_add(b) {
                return Qty(from_magnitude(u128::from(s), false, SCALE));
            }
        }
        self.sum_uncommon(other)
    }

    /// [`Qty::sum`] of any other pair.
    #[cold]
    #[inline(never)]
    fn sum_uncommon(mut self, other: Qty) -> Qty {
        self.plus_equals(&other);
        Qty::from_decimal(self.0)
    }

    /// `price x qty`, exact, in canonical form (a trade's quote volume). With both at `SCALE`
    /// and 64-bit magnitudes (nearly always), each magnitude loses its trailing zeros in 64 bits
    /// and the product is brought to `SCALE` when it has at most that many fractional digits
    /// (and fits): [`canonical`]'s form, without `Decimal`'s 96-bit divisions by ten of
    /// normalising both operands and the product. Otherwise `Decimal`'s product of the
    /// normalised values.
    pub fn product(price: Price, qty: Qty) -> Qty {
        let strip = |mut v: u64| {
            let mut zeros = 0;
            while zeros < SCALE && v != 0 && v.is_multiple_of(10) {
                v /= 10;
                zeros += 1;
            }
            (v, zeros)
        };
        if let (Some(p), Some(q)) = (Stored::of(price.0).common(), Stored::of(qty.0).common()) {
            let ((p, zp), (q, zq)) = (strip(p), strip(q));
            // Fractional digits of the exact product: at most `SCALE` is the usual case.
            let digits = 2 * SCALE - zp - zq;
            if digits <= SCALE {
                let m = (u128::from(p) * u128::from(q))
                    .checked_mul(10u128.pow(SCALE - digits))
                    .filter(|m| m >> 96 == 0);
                if let Some(m) = m {
                    return Qty(from_magnitude(m, false, SCALE));
                }
            }
        }
        Qty::from_decimal(price.0.normalize() * qty.0.normalize())
    }

    /// Adds `rhs` as [`Qty::plus_equals`] does; true if the sum is surely exact, false
    /// if it may have been rounded ([`held_exactly`]): a `Decimal` holds 96 bits of magnitude,
    /// so a sum whose exact digits need more (sizes of tens of billions beside 18-decimal ones)
    /// is rounded.
    pub(crate) fn add_exact(&mut self, rhs: Qty) -> bool {
        let lhs = self.0;
        self.plus_equals(&rhs);
        held_exactly(self.0, lhs, rhs.0)
    }

    /// The sum of `sizes` (each >= 0), and whether it is exact: summed exactly, in big integers
    /// of 10^-28, and rounded once, half up, to a decimal's 96 bits when it needs more. (Adding
    /// them one by one rounded at every step: sizes of `5 x 10^-18` beside one of
    /// `80000000000` were each rounded away, though the sum fits a decimal.)
    pub(crate) fn sum_exactly(sizes: impl Iterator<Item = Qty>) -> (Qty, bool) {
        use num_bigint::BigUint;
        let ten = |e: u32| BigUint::from(10u32).pow(e);
        let mut total = BigUint::ZERO;
        for size in sizes {
            let d = size.0;
            total += BigUint::from(d.mantissa().unsigned_abs()) * ten(28 - d.scale());
        }
        // The fewest digits to drop, at the finest scale that holds the sum.
        let mut drop = 0;
        let fits = |digits: u32| {
            let unit = ten(digits);
            let rounded = (&total + &unit / 2u32) / &unit;
            (rounded.bits() <= 96).then_some((rounded, unit))
        };
        let (mut magnitude, exact) = loop {
            match fits(drop) {
                Some((rounded, unit)) => break (rounded.clone(), rounded * unit == total),
                None if drop < 28 => drop += 1,
                // Beyond 7.9 x 10^28: the limits on sizes keep every book far below it.
                None => break (BigUint::from(u128::MAX >> 32), false),
            }
        };
        let mut scale = 28 - drop;
        while scale > 0 && (&magnitude % 10u32) == BigUint::ZERO {
            magnitude /= 10u32;
            scale -= 1;
        }
        let m = u128::try_from(magnitude).expect("at most 96 bits");
        (Qty::from_decimal(from_magnitude(m, false, scale)), exact)
    }

    /// Builds a quantity from an exact decimal (sums and differences).
    pub fn from_decimal(d: Decimal) -> Qty {
        Qty(canonical(d))
    }

    /// True for zero.
    pub fn is_zero_qty(self) -> bool {
        self.0.is_zero()
    }
}

impl FromStr for Qty {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Qty::parse(s)
    }
}

impl Qty {
    /// Adds `rhs` in place. At one scale the sum is a sum (or, for opposite signs, a
    /// difference) of the stored magnitudes, several times cheaper than `Decimal`'s addition
    /// (and the same value); otherwise `Decimal`'s addition.
    #[inline]
    pub(crate) fn plus_equals(&mut self, rhs: &Self) {
        let (a, b) = (Stored::of(self.0), Stored::of(rhs.0));
        if a.scale() == b.scale() {
            let (negative, m) = match (a.negative() == b.negative(), a.magnitude >= b.magnitude) {
                (true, _) => (a.negative(), a.magnitude + b.magnitude),
                (false, true) => (a.negative(), a.magnitude - b.magnitude),
                (false, false) => (b.negative(), b.magnitude - a.magnitude),
            };
            if m >> 96 == 0 {
                self.0 = from_magnitude(m, negative, a.scale());
                return;
            }
        }
        self.0 += rhs.0;
    }

    /// `-self`, in place: a size's change is the new size minus the old one.
    pub(crate) fn negate(&mut self) {
        self.0 = -self.0;
    }
}

/// A side of the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Side {
    /// Buy orders, best = highest.
    Bid,
    /// Sell orders, best = lowest.
    Ask,
}

/// The taker side of a trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TradeSide {
    /// The taker bought.
    Buy,
    /// The taker sold.
    Sell,
}

/// A symbol of an exchange, as a stable 64-bit hash of its names.
///
/// Every worker and process computes the same id from the same names, so the id is what the
/// dataflow exchanges and keys on; the names travel once per input, routed by the id to the
/// worker that owns the symbol, whose books and candles stages put them into the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sym(pub u64);

impl Sym {
    /// The id of the names (FNV-1a, 64 bit) of `exchange:symbol`, or, when the exchange
    /// contains `:`, of the names joined by the byte 0xFF. `exchange:symbol` alone is the same
    /// text for exchange `a:b` with symbol `c` and exchange `a` with symbol `b:c`, which made
    /// them one symbol: one book, ticker and candles. The text splits at its first `:` when the
    /// exchange has none, and no UTF-8 text holds 0xFF, so different names give different texts
    /// (and ids, but for a hash collision). Names without `:` in the exchange keep their ids.
    pub fn of(exchange: &str, symbol: &str) -> Sym {
        let separator = if exchange.contains(':') { 0xFF } else { b':' };
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in exchange
            .bytes()
            .chain(std::iter::once(separator))
            .chain(symbol.bytes())
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Sym(h)
    }
}

/// The names behind a [`Sym`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SymbolName {
    /// Exchange id, e.g. `binance`.
    pub exchange: Arc<str>,
    /// Symbol, e.g. `BTCUSDT`.
    pub symbol: Arc<str>,
}

/// A trade id, ordered as the contract says: as an integer when it is one, else as text
/// (integers sort before text).
///
/// `Num` and `Big` hold only canonical integers (no sign, no leading zeros), so the original
/// string is always the value's digits and two different strings never share an id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TradeId {
    /// A canonical unsigned integer id that fits a `u64`.
    Num(u64),
    /// A canonical unsigned integer id above `u64::MAX`.
    Big(BigId),
    /// Any other id.
    Text(String),
}

/// The digits of a canonical integer above `u64::MAX`, ordered as integers: by length, then
/// digit by digit (with no leading zeros, the longer is the larger).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BigId(pub(crate) String);

impl Ord for BigId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0.len(), &self.0).cmp(&(other.0.len(), &other.0))
    }
}

impl PartialOrd for BigId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl TradeId {
    /// Classifies an id string.
    pub fn new(s: &str) -> TradeId {
        let canonical = !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'));
        if !canonical {
            return TradeId::Text(s.to_string());
        }
        match s.parse::<u64>() {
            Ok(n) => TradeId::Num(n),
            Err(_) => TradeId::Big(BigId(s.to_string())),
        }
    }
}

impl fmt::Display for TradeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TradeId::Num(n) => write!(f, "{n}"),
            TradeId::Big(BigId(s)) | TradeId::Text(s) => f.write_str(s),
        }
    }
}

/// Whether `result`, `Decimal`'s sum or difference of `a` and `b`, is surely exact: it is when
/// its scale holds both operands' digits, at their stored scales (every sum but the rare), else
/// at their scales without trailing zeros. A result that needed more than 96 bits was rounded
/// to fewer fractional digits. (False too for a result exact only because digits cancel.)
#[inline]
pub(crate) fn held_exactly(result: Decimal, a: Decimal, b: Decimal) -> bool {
    let scale = Stored::of(result).scale();
    scale >= Stored::of(a).scale().max(Stored::of(b).scale())
        || scale >= a.normalize().scale().max(b.normalize().scale())
}

/// Raw best bid and ask prices.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Bbo {
    /// Highest bid, if any.
    pub bid: Option<Price>,
    /// Lowest ask, if any.
    pub ask: Option<Price>,
}

/// The best groups of one side, best first.
pub type Levels = Vec<(Price, Qty)>;

/// A price in book order: on both sides the best comes first (bids descending, asks ascending).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BookPrice {
    /// The side, which decides the order.
    pub side: Side,
    /// The group price.
    pub price: Price,
}

impl Ord for BookPrice {
    fn cmp(&self, other: &Self) -> Ordering {
        self.side.cmp(&other.side).then_with(|| match self.side {
            Side::Bid => other.price.cmp(&self.price),
            Side::Ask => self.price.cmp(&other.price),
        })
    }
}

impl PartialOrd for BookPrice {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A mantissa becomes a decimal at [`SCALE`] while it stays below 2^96
    /// (79,228,162,514,264,337,593,543,950,336), and not past it.
    #[test]
    fn at_scale_stops_at_96_bits() {
        let below = 7_922_816_251_426_433_759u64; // x 10^10 is just below 2^96
        assert_eq!(
            at_scale(below, 0),
            Some(Decimal::from_i128_with_scale(
                i128::from(below) * 10_000_000_000,
                SCALE
            ))
        );
        assert_eq!(at_scale(below + 1, 0), None);
        assert_eq!(
            at_scale(123_456, 3),
            Decimal::from_str_exact("123.456").ok()
        );
        assert_eq!(
            at_scale(u64::MAX, SCALE as usize).map(|d| d.scale()),
            Some(SCALE)
        );
    }

    #[test]
    fn parses_plain_decimals_only() {
        assert_eq!(
            Price::parse("61737.63000000").unwrap().to_string(),
            "61737.63"
        );
        assert_eq!(Price::parse("61737.63000000").unwrap().fraction_digits(), 2);
        assert_eq!(Qty::parse("0.000").unwrap(), Qty::ZERO);
        for bad in [
            "1e5", "", "-", ".5", "5.", "1.2.3", "+1", " 1", "abc", "0x10",
        ] {
            assert!(Price::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(matches!(
            Price::parse("0"),
            Err(ValueError::NonPositivePrice(_))
        ));
        assert!(matches!(Qty::parse("-1"), Err(ValueError::NegativeQty(_))));
        assert_eq!(Qty::parse("-0").unwrap(), Qty::ZERO);
    }

    /// Trailing zeros past the 28 fractional digits a 96-bit decimal holds change no value:
    /// such a text is its value (it was dead-lettered as a bad decimal). Digits that matter
    /// there are still refused.
    #[test]
    fn zeros_past_28_fractional_digits_are_only_zeros() {
        let zeros = "0".repeat(29);
        assert_eq!(
            Price::parse(&format!("1.{zeros}")).unwrap().to_string(),
            "1"
        );
        assert_eq!(
            Price::parse(&format!("0.{}5{zeros}", "0".repeat(27)))
                .unwrap()
                .to_string(),
            "0.0000000000000000000000000005"
        );
        assert_eq!(Qty::parse(&format!("0.{zeros}")).unwrap(), Qty::ZERO);
        assert!(Price::parse(&format!("0.{}1", "0".repeat(28))).is_err());
        assert!(Price::parse(&format!("1.{}10", "0".repeat(28))).is_err());
    }

    #[test]
    fn groups_bids_down_and_asks_up() {
        let p = Price::parse("100.37").unwrap();
        let step = Price::parse("0.05").unwrap();
        assert_eq!(p.group(step, Side::Bid).to_string(), "100.35");
        assert_eq!(p.group(step, Side::Ask).to_string(), "100.4");
        let exact = Price::parse("100.35").unwrap();
        assert_eq!(exact.group(step, Side::Ask), exact);
    }

    #[test]
    fn trade_ids_order_as_integers_then_text() {
        assert!(TradeId::new("9") < TradeId::new("10"));
        assert!(TradeId::new("10") < TradeId::new("a"));
        assert_eq!(TradeId::new("007"), TradeId::Text("007".into()));
        assert_eq!(TradeId::new("0"), TradeId::Num(0));
        // Integers above u64::MAX are integers too: 9 < 2^64 < 10^20 < any text.
        let ids = [
            "9",
            "18446744073709551615",
            "18446744073709551616",
            "100000000000000000000",
        ];
        let ids: Vec<TradeId> = ids.into_iter().map(TradeId::new).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert!(matches!(ids[2], TradeId::Big(_)), "{ids:?}");
        assert!(ids[3] < TradeId::new("0a"));
        assert_eq!(ids[3].to_string(), "100000000000000000000");
        assert_eq!(
            TradeId::new("0018446744073709551616"),
            TradeId::Text("0018446744073709551616".into())
        );
    }

    proptest! {
        /// The fast path of decimal parsing gives the very representation (mantissa and scale)
        /// of the general parse followed by `canonical`, or the same error.
        #[test]
        fn parse_canonical_is_parse_then_canonical(
            s in prop_oneof![
                "[0-9]{1,12}(\\.[0-9]{1,12})?",
                "[0-9]{15,21}(\\.[0-9]{0,3})?",
                "-?[0-9.]{0,8}",
                "0*[0-9]{1,3}\\.0{0,12}",
            ]
        ) {
            let fast = parse_canonical(&s);
            let slow = parse_decimal(&s).map(canonical);
            match (&fast, &slow) {
                (Ok(f), Ok(g)) => {
                    prop_assert_eq!((f.mantissa(), f.scale(), f.is_sign_negative()), (g.mantissa(), g.scale(), g.is_sign_negative()), "{}", s);
                }
                _ => prop_assert_eq!(fast, slow, "{}", s),
            }
        }

        /// A price's fractional digits are those of its normalised value, on the fast path
        /// (at `SCALE`, 64 bits) and off it.
        #[test]
        fn fraction_digits_are_the_normalised_scale(a in 1i64..1_000_000, zeros in 0u32..13, scale in 0u32..20) {
            // Mantissas with any number of trailing zeros, at any scale.
            let d = Decimal::new(a * 10i64.pow(zeros), scale);
            prop_assert_eq!(Price::from_decimal(d).fraction_digits(), d.normalize().scale(), "{}", d);
        }

        /// The one-scale fast path of `Qty`'s order and equality agrees with `Decimal`'s, for
        /// values at `SCALE`, with more digits, and raw (any scale, sums and differences).
        #[test]
        fn order_and_equality_are_by_value(a in any::<i64>(), sa in 0u32..16, b in any::<i64>(), sb in 0u32..16, raw in any::<bool>()) {
            let (da, db) = (Decimal::new(a, sa), Decimal::new(b, sb));
            let (qa, qb) = if raw { (Qty(da), Qty(db)) } else { (Qty::from_decimal(da), Qty::from_decimal(db)) };
            prop_assert_eq!(qa.cmp(&qb), da.cmp(&db));
            prop_assert_eq!(qa == qb, da == db);
            let hash = |q: &Qty| {
                use std::hash::{BuildHasher, BuildHasherDefault};
                BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(q)
            };
            if qa == qb {
                prop_assert_eq!(hash(&qa), hash(&qb));
            }
            prop_assert_eq!(hash(&Qty(da)), hash(&Qty::from_decimal(da)));
            let mut sum = qa;
            sum.plus_equals(&qb);
            prop_assert_eq!(sum.value(), da + db);
            prop_assert_eq!(Qty::from_decimal(da).value(), da);
            // One representation per value: a differently scaled copy canonicalises alike.
            let mut wide = da;
            wide.rescale(da.scale() + 3);
            let (c, w) = (canonical(da), canonical(wide));
            prop_assert_eq!((c.mantissa(), c.scale()), (w.mantissa(), w.scale()));
        }

        /// The same on any stored form: all 96 bits of magnitude, either sign, equal scales
        /// half of the time, and zeros with the sign bit set.
        #[test]
        fn order_and_equality_are_by_value_for_any_parts(a in any::<(u32, u32, u32, bool)>(), b in any::<(u32, u32, u32, bool)>(), sa in 0u32..12, sb in 0u32..12, same in any::<bool>(), zero in 0u8..8) {
            let sb = if same { sa } else { sb };
            let mut da = Decimal::from_parts(a.0, a.1, a.2, a.3, sa);
            let db = Decimal::from_parts(b.0, b.1, b.2, b.3, sb);
            if zero == 0 {
                // -0 (negation keeps the sign bit of a zero).
                da = -Decimal::new(0, sa);
            }
            for (x, y) in [(da, db), (db, da), (da, da)] {
                prop_assert_eq!(Qty(x).cmp(&Qty(y)), x.cmp(&y), "{:?} {:?}", x, y);
                prop_assert_eq!(Qty(x) == Qty(y), x == y);
                prop_assert_eq!(Price(x).cmp(&Price(y)), x.cmp(&y));
                // Sums (where `Decimal` has one): its value, and at one scale the form of the
                // signed mantissas' sum (+0 for zero).
                if let Some(expected) = x.checked_add(y) {
                    let mut sum = Qty(x);
                    sum.plus_equals(&Qty(y));
                    prop_assert_eq!(sum.0, expected, "{:?} + {:?}", x, y);
                    if x.scale() == y.scale() {
                        if let Ok(m) = Decimal::try_from_i128_with_scale(x.mantissa() + y.mantissa(), x.scale()) {
                            prop_assert_eq!(sum.0.serialize(), m.serialize(), "{:?} + {:?}", x, y);
                        }
                    }
                }
            }
        }

        #[test]
        fn price_display_round_trips(mantissa in 1i64..1_000_000_000_000_000, scale in 0u32..18) {
            let p = Price::from_decimal(Decimal::new(mantissa, scale));
            prop_assert_eq!(Price::parse(&p.to_string()).unwrap(), p);
        }

        #[test]
        fn fast_formatting_equals_decimal_display(m in any::<i64>(), hi in any::<u32>(), scale in 0u32..28) {
            let d = Decimal::from_i128_with_scale(i128::from(m) * i128::from(hi), scale);
            let mut out = String::from("x");
            push_decimal(&mut out, d);
            prop_assert_eq!(&out[1..], d.normalize().to_string());
        }

        /// The same on the 64-bit path: mantissas with trailing zeros (fractions that lose
        /// them, whole numbers), fewer digits than the scale (leading zeros), either sign, both as
        /// given and in the canonical form at `SCALE` that prices and quantities are kept in.
        #[test]
        fn fast_formatting_of_64_bit_mantissas_equals_decimal_display(a in 0i64..1_000_000_000_000, zeros in 0u32..7, scale in 0u32..20, negative in any::<bool>()) {
            let m = i128::from(a) * 10i128.pow(zeros) * if negative { -1 } else { 1 };
            let d = Decimal::from_i128_with_scale(m, scale);
            for d in [d, canonical(d)] {
                let mut out = String::new();
                push_decimal(&mut out, d);
                prop_assert_eq!(out, d.normalize().to_string(), "{:?}", d);
            }
        }

        /// The same for any 64-bit mantissa with up to 19 trailing zeros, at any scale: the
        /// zeros are stripped by every step of `without_trailing_digits` (16, 8, 4, 2, 1), and
        /// mantissas of 20 digits take the 64-bit path too.
        #[test]
        fn fast_formatting_of_wide_mantissas_equals_decimal_display(v in any::<u64>(), zeros in 0u32..20, scale in 0u32..29) {
            let p = 10u64.pow(zeros);
            let d = Decimal::from_i128_with_scale(i128::from(v / p * p), scale);
            let mut out = String::new();
            push_decimal(&mut out, d);
            prop_assert_eq!(out, d.normalize().to_string(), "{:?}", d);
        }

        /// Zero with the sign bit set (negation keeps it) is written `0`, at any scale.
        #[test]
        fn negative_zero_is_written_as_zero(scale in 0u32..28) {
            let zero = -Decimal::new(0, scale);
            let mut out = String::new();
            push_decimal(&mut out, zero);
            prop_assert_eq!(out, "0");
        }

        #[test]
        fn quantities_add_like_decimals(a in any::<i64>(), sa in 0u32..16, b in any::<i64>(), sb in 0u32..16, wide in any::<bool>()) {
            // Canonical values at one scale take the mantissa path; wide ones (beyond 64 bits
            // after rescaling) and mixed scales the general one.
            let widen = |m: i64| if wide { i128::from(m) << 30 } else { i128::from(m) };
            let (da, db) = (Decimal::from_i128_with_scale(widen(a), sa), Decimal::from_i128_with_scale(widen(b), sb));
            let mut q = Qty::from_decimal(da);
            q.plus_equals(&Qty::from_decimal(db));
            prop_assert_eq!(q.value(), da + db);
        }

        /// `sum_exactly` gives the exact sum whenever a decimal holds it (its trailing zeros
        /// dropped), says so exactly then, and otherwise the sum rounded at the finest scale
        /// that holds it, within half a unit of that scale.
        #[test]
        fn sums_of_many_sizes_are_exact_or_rounded_once(sizes in proptest::collection::vec((any::<u64>(), 0u32..29, 0u32..33), 0..12)) {
            use num_bigint::BigUint;
            let sizes: Vec<Qty> = sizes.iter()
                .map(|&(m, scale, wide)| Qty::from_decimal(Decimal::from_i128_with_scale(i128::from(m >> (wide % 64).min(63)) << wide, scale)))
                .collect();
            let scaled = |d: Decimal| BigUint::from(d.mantissa().unsigned_abs()) * BigUint::from(10u32).pow(28 - d.scale());
            let exact: BigUint = sizes.iter().map(|q| scaled(q.value())).sum();
            let (sum, said) = Qty::sum_exactly(sizes.iter().copied());
            let got = scaled(sum.value());
            // The exact sum at the finest scale, without its trailing zeros: held when it fits.
            let (mut m, mut scale) = (exact.clone(), 28u32);
            while scale > 0 && (&m % 10u32) == BigUint::ZERO {
                m /= 10u32;
                scale -= 1;
            }
            let held = m.bits() <= 96;
            prop_assert_eq!(said, held);
            if held {
                prop_assert_eq!(got, exact);
            } else {
                // Rounded half up at the finest scale whose rounding fits 96 bits.
                let ten = |e: u32| BigUint::from(10u32).pow(e);
                let rounded = (0..=28u32)
                    .rev()
                    .map(|scale| {
                        let unit = ten(28 - scale);
                        (((&exact + &unit / 2u32) / &unit), unit)
                    })
                    .find(|(r, _)| r.bits() <= 96)
                    .map(|(r, unit)| r * unit);
                prop_assert_eq!(Some(got), rounded);
            }
        }

        /// `add_exact` says true only when the sum it leaves is the exact one (computed with big
        /// integers), and false only when that sum needs more than a decimal's 96 bits at the
        /// operands' scales, at any scale and width (sizes of tens of billions beside
        /// 18-decimal ones).
        #[test]
        fn sums_are_said_exact_only_when_they_are(a in any::<u64>(), sa in 0u32..29, b in any::<i64>(), sb in 0u32..29, wide in 0u32..33) {
            use num_bigint::BigInt;
            let da = Decimal::from_i128_with_scale(i128::from(a) << wide, sa);
            let db = Decimal::from_i128_with_scale(i128::from(b), sb);
            let scaled = |d: Decimal| BigInt::from(d.mantissa()) * BigInt::from(10).pow(56 - d.scale());
            let mut q = Qty::from_decimal(da);
            let said = q.add_exact(Qty::from_decimal(db));
            let sum = scaled(da) + scaled(db);
            prop_assert!(!said || scaled(q.value()) == sum, "said exact: {} + {} = {}", da, db, q.value());
            // Said inexact only when the sum cannot be held at the operands' scales (their
            // trailing zeros dropped).
            let scale = da.normalize().scale().max(db.normalize().scale());
            let held = (sum / BigInt::from(10).pow(56 - scale)).magnitude().bits() <= 96;
            prop_assert!(said || !held, "said inexact: {} + {} = {}", da, db, q.value());
        }

        /// Across processes a price or a quantity is its decimal's 16 bytes (as when they went
        /// as an array), and comes back with the same bytes, at any sign, scale and width.
        #[test]
        fn values_cross_processes_as_their_decimals_bytes(m in any::<i64>(), hi in any::<u32>(), scale in 0u32..29) {
            let d = Decimal::from_i128_with_scale(i128::from(m) * i128::from(hi), scale);
            let (p, q) = (Price::from_decimal(d), Qty::from_decimal(d));
            let bytes = bincode::serialize(&(p, q)).expect("serialize");
            prop_assert_eq!(&bytes[..16], &p.value().serialize()[..]);
            prop_assert_eq!(&bytes[16..], &q.value().serialize()[..]);
            let (back_p, back_q): (Price, Qty) = bincode::deserialize(&bytes).expect("deserialize");
            prop_assert_eq!(back_p.value().serialize(), p.value().serialize());
            prop_assert_eq!(back_q.value().serialize(), q.value().serialize());
        }

        #[test]
        fn qty_display_round_trips(mantissa in 0i64..1_000_000_000_000_000, scale in 0u32..18) {
            let q = Qty::from_decimal(Decimal::new(mantissa, scale));
            prop_assert_eq!(Qty::parse(&q.to_string()).unwrap(), q);
        }

        /// The product of a price and a quantity (both below the limit, their product below the
        /// trade limit) has the value and the stored form of `Decimal`'s product of the normalised values, made canonical.
        #[test]
        fn products_equal_decimal_products(p in 1u64..1_000_000_000_000_000, sp in 0u32..14, q in 0u64..1_000_000_000_000_000, sq in 0u32..14, zeros in 0u32..8) {
            let p = (p / 10u64.pow(zeros)).max(1) * 10u64.pow(zeros);
            let price = Price::from_decimal(Decimal::from_i128_with_scale(i128::from(p), sp));
            let qty = Qty::from_decimal(Decimal::from_i128_with_scale(i128::from(q), sq));
            // Trades are refused from 10^20 up (`event`).
            let exact = price.value().normalize().checked_mul(qty.value().normalize());
            if let Some(exact) = exact.filter(|e| *e < TRADE_VALUE_LIMIT) {
                let product = Qty::product(price, qty);
                let expected = Qty::from_decimal(exact);
                prop_assert_eq!(product.value().serialize(), expected.value().serialize(), "{} x {}", price, qty);
            }
        }

        /// Values from the limit up are refused, values below it kept, at any scale.
        #[test]
        fn values_from_the_limit_up_are_refused(m in 1u64..1_000_000, scale in 0u32..12, above in any::<bool>()) {
            let limit = VALUE_LIMIT;
            let d = if above {
                limit + Decimal::from_i128_with_scale(i128::from(m), scale)
            } else {
                limit - Decimal::from_i128_with_scale(i128::from(m), scale)
            };
            let text = d.to_string();
            prop_assert_eq!(Price::parse(&text).is_ok(), !above, "{}", text);
            prop_assert_eq!(Qty::parse(&text).is_ok(), !above, "{}", text);
            prop_assert!(Price::parse(&limit.to_string()).is_err());
        }

        #[test]
        fn grouping_is_a_bound_on_the_right_side(m in 1i64..10_000_000, s in 0u32..6, step in 1i64..1000) {
            let p = Price::from_decimal(Decimal::new(m, s));
            let g = Price::from_decimal(Decimal::new(step, s));
            let down = p.group(g, Side::Bid).value();
            let up = p.group(g, Side::Ask).value();
            prop_assert!(down <= p.value() && p.value() <= up);
            prop_assert!((down % g.value()).is_zero() && (up % g.value()).is_zero());
            prop_assert!(up - down < g.value() + g.value());
        }
    }
}
