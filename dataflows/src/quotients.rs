//! The quotients of CONTRACT 3, rounded half away from zero as the exact quotient rounds: the
//! ticker's `vwap` to 8 places ([`div_round`]) and `change_pct` to 4 ([`change_pct`], which also
//! gives `change`). Used by the ticker's aggregate ([`crate::agg`]) and its record
//! ([`crate::results`]).
//!
//! Invariants:
//! - A result is the exact rational value rounded once, never a rounded value rounded again: a
//!   `Decimal` division keeps 28 digits, rounded to nearest, so rounding its quotient can round
//!   twice. Where that could happen (a quotient on a midpoint of its places, or too long for
//!   them) the value is computed exactly in big integers.
//! - `None` when the rounded value is beyond a `Decimal` (or the divisor is zero). Only
//!   `change_pct` can be (prices have no lower bound; the README's "`change_pct` beyond a
//!   decimal", under "Where the contract is silent"); a vwap,
//!   a mean of prices below the value limit, never is.
//! - Results are normalised (no trailing zeros).
//!
//! Property-tested against big-integer arithmetic, also a hair from every midpoint.

use rust_decimal::Decimal;

use crate::types::{from_magnitude, held_exactly};

/// Rounds half away from zero to `dp` decimal places, normalised.
fn round_dp(d: Decimal, dp: u32) -> Decimal {
    d.round_dp_with_strategy(dp, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
        .normalize()
}

/// `a / b` rounded half away from zero to `dp` decimal places, normalised, as the exact
/// quotient rounds; `None` when that value is beyond a decimal (or `b` is zero).
///
/// Rounding the decimal quotient would round twice: the division keeps 28 digits, rounded to
/// nearest, so an exact quotient a hair below a midpoint of `dp` places can become the
/// midpoint and then round away from zero: `0.00005 / 1.000000000000000000000000001` to 4
/// places is 0, where the decimal quotient, `0.0000500000000000000000000000`, gives 0.0001.
/// The decimal quotient is used when it has more than `dp` places and is not on a midpoint:
/// the midpoints of `dp` places then lie on its finer grid, and it rounds as the exact one
/// does. Otherwise (a midpoint, or a quotient too large for `dp + 1` places) the quotient is
/// computed exactly, in big integers.
pub fn div_round(a: Decimal, b: Decimal, dp: u32) -> Option<Decimal> {
    debug_assert!(dp <= 9, "exact_div_round's bound");
    let q = a.checked_div(b)?;
    let scale = q.scale();
    if scale > dp {
        let step = 10u128.pow(scale - dp);
        if q.mantissa().unsigned_abs() % step != step / 2 {
            return Some(round_dp(q, dp));
        }
    } else if exact_product(q, b) == Some(a) {
        // A quotient that is exact with `dp` places or fewer (0 when nothing changed; a whole
        // one), checked without big integers.
        return Some(q.normalize());
    }
    exact_div_round(a, b, dp)
}

/// `q x b` when it is exact in 96 bits (decimal multiplication rounds a longer product).
fn exact_product(q: Decimal, b: Decimal) -> Option<Decimal> {
    let magnitude = q
        .mantissa()
        .unsigned_abs()
        .checked_mul(b.mantissa().unsigned_abs())?;
    let scale = q.scale() + b.scale();
    let negative = q.is_sign_negative() != b.is_sign_negative();
    (magnitude < 1 << 96 && scale <= 28).then(|| from_magnitude(magnitude, negative, scale))
}

/// `a / b` rounded half away from zero to `dp` places in big integers; `None` when it is
/// beyond a decimal or `b` is zero.
fn exact_div_round(a: Decimal, b: Decimal, dp: u32) -> Option<Decimal> {
    use num_bigint::BigUint;
    let magnitude = |d: Decimal| BigUint::from(d.mantissa().unsigned_abs());
    let ten = |e: u32| BigUint::from(10u32).pow(e);
    // a / b x 10^dp = (ma x 10^(sb + dp)) / (mb x 10^sa); half away from zero on magnitudes.
    let n = magnitude(a) * ten(b.scale() + dp);
    let d = magnitude(b) * ten(a.scale());
    let negative = a.is_sign_negative() != b.is_sign_negative();
    ratio_round(n, d, negative, dp)
}

/// `n / d x 10^-dp`, negated if `negative`, rounded half away from zero to a whole number of
/// 10^-dp, as a decimal; `None` when it is beyond a decimal or `d` is zero.
fn ratio_round(
    n: num_bigint::BigUint,
    d: num_bigint::BigUint,
    negative: bool,
    dp: u32,
) -> Option<Decimal> {
    if d == num_bigint::BigUint::ZERO {
        return None;
    }
    // Past 2^128 no value fits 96 bits, even with `dp` (at most 9) trailing zeros taken off.
    let mut rounded: u128 = ((n * 2u32 + &d) / (d * 2u32)).try_into().ok()?;
    let mut scale = dp;
    while scale > 0 && rounded.is_multiple_of(10) {
        rounded /= 10;
        scale -= 1;
    }
    let negative = negative && rounded != 0;
    (rounded < 1 << 96).then(|| from_magnitude(rounded, negative, scale))
}

/// `(last - open) / open x 100` rounded half away from zero to 4 places, as the exact value
/// rounds, with `last - open`, the ticker's `change`; `None` when it is beyond a decimal (prices
/// are positive). `change` and `change x 100` are exact unless their digits need more than 96
/// bits (a price of 28 significant digits beside one of 15 integer digits); then the
/// percentage is computed from the prices in big integers, not from the rounded `change`.
pub fn change_pct(last: Decimal, open: Decimal) -> (Decimal, Option<Decimal>) {
    let difference = last - open;
    let change = difference.normalize();
    let exact = held_exactly(difference, last, open);
    let hundredfold = (exact.then(|| change.checked_mul(Decimal::ONE_HUNDRED)))
        .flatten()
        .filter(|h| h.scale() == change.scale());
    let pct = match hundredfold {
        Some(h) => div_round(h, open, 4),
        None => {
            use num_bigint::BigInt;
            // (ml 10^so - mo 10^sl) x 100 x 10^4 / (mo x 10^sl).
            let ten = |e: u32| BigInt::from(10u32).pow(e);
            let (ml, mo) = (BigInt::from(last.mantissa()), BigInt::from(open.mantissa()));
            let n = (&ml * ten(open.scale()) - &mo * ten(last.scale())) * ten(6);
            let d = mo * ten(last.scale());
            let negative = n.sign() == num_bigint::Sign::Minus;
            let magnitude = |b: BigInt| b.magnitude().clone();
            ratio_round(magnitude(n), magnitude(d), negative, 4)
        }
    };
    (change, pct)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Quotients whose decimal form (28 digits, rounded) lands on a midpoint: values worked out by
    /// hand from the exact fractions.
    #[test]
    fn quotients_round_as_the_exact_quotient() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let cases = [
            // 0.00005 / (1 + 10^-27) = 0.0000499...: below the midpoint.
            ("0.00005", "1.000000000000000000000000001", 4, Some("0")),
            ("-0.00005", "1.000000000000000000000000001", 4, Some("0")),
            // 2.000000010000000000000000001 / 2.000000000000000000000000001 = 1.00000000499...
            (
                "2.000000010000000000000000001",
                "2.000000000000000000000000001",
                8,
                Some("1"),
            ),
            // On a midpoint exactly: away from zero.
            ("1", "8", 2, Some("0.13")),
            ("-1", "8", 2, Some("-0.13")),
            ("1", "-8", 2, Some("-0.13")),
            ("0.00005", "1", 4, Some("0.0001")),
            // Just above a midpoint.
            (
                "0.00005",
                "0.999999999999999999999999999",
                4,
                Some("0.0001"),
            ),
            // Few places left: exact integers, and the value beyond a decimal.
            (
                "79228162514264337593543950335",
                "1",
                4,
                Some("79228162514264337593543950335"),
            ),
            (
                "10000000000000000000000000",
                "3",
                4,
                Some("3333333333333333333333333.3333"),
            ),
            ("100000000000000000000000000", "3", 4, None),
            ("1", "0", 4, None),
        ];
        for (a, b, dp, want) in cases {
            assert_eq!(div_round(d(a), d(b), dp), want.map(d), "{a} / {b} to {dp}");
        }
    }

    /// An audit's case: `last - open` needs 30 digits, so `change` rounds, and a percentage of
    /// the rounded `change` was 0.0001 short (...298.5925). Python's decimal gives ...298.5926,
    /// and ...690.8313 for the second case (found by a search in Python).
    #[test]
    fn change_pct_is_not_taken_from_a_rounded_change() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let (change, pct) = change_pct(d("999999999999999"), d("0.0000000212345678901234567891"));
        assert_eq!(change, d("999999999999998.9999999787654"));
        assert_eq!(pct, Some(d("4709302328045560462576298.5926")));
        // A rounded `change` whose hundredfold fits: only its rounding tells.
        let (change, pct) = change_pct(d("456297011740772.25"), d("0.000000291389000972707207343"));
        assert_eq!(change, d("456297011740772.249999708611"));
        assert_eq!(pct, Some(d("156593766483145690869690.8313")));
    }

    proptest! {
        /// `div_round`'s decimal path gives the exact quotient's rounding, also for quotients a
        /// hair from a midpoint (`a` made as a midpoint times `b`, rounded by the product).
        #[test]
        fn div_round_is_the_exact_rounding(mb in 1i128..(1 << 95), sb in 0u32..28, k in -99_999i64..99_999, dp in 0u32..9, near in any::<bool>(), ma in any::<i64>(), sa in 0u32..28) {
            let b = Decimal::from_i128_with_scale(mb, sb);
            let a = if near {
                let midpoint = Decimal::new(k * 10 + 5, dp + 1);
                match midpoint.checked_mul(b) { Some(a) => a, None => return Ok(()) }
            } else {
                Decimal::new(ma, sa)
            };
            prop_assert_eq!(div_round(a, b, dp), exact_div_round(a, b, dp), "{} / {} to {}", a, b, dp);
        }

        /// `change_pct` is the exact `(last - open) / open x 100` rounded half away from zero
        /// to 4 places (computed on both prices brought to 10^-56 in big integers), also where
        /// `last - open` needs more than a decimal's 96 bits; `change` is `last - open`.
        #[test]
        fn change_pct_is_the_exact_percentage_rounded(ml in 1u64.., sl in 0u32..29, mo in 1u64.., so in 0u32..29, wide in 0u32..33) {
            use num_bigint::BigInt;
            let last = Decimal::from_i128_with_scale(i128::from(ml) << wide, sl);
            let open = Decimal::from_i128_with_scale(i128::from(mo), so);
            let scaled = |d: Decimal| BigInt::from(d.mantissa()) * BigInt::from(10).pow(56 - d.scale());
            let (n, d): (BigInt, BigInt) = ((scaled(last) - scaled(open)) * 1_000_000u32, scaled(open));
            let rounded = (n.magnitude() * 2u32 + d.magnitude()) / (d.magnitude() * 2u32);
            let (change, pct) = change_pct(last, open);
            prop_assert_eq!(change, (last - open).normalize());
            match pct {
                Some(pct) => {
                    let got = scaled(pct.abs()) / BigInt::from(10).pow(52);
                    prop_assert_eq!(got.magnitude(), &rounded, "{} from {}", last, open);
                    prop_assert_eq!(pct.is_sign_negative(), last < open && rounded != 0u32.into());
                }
                // Beyond a decimal: from 2^96 of 10^-4 (fewer places only when they are zeros).
                None => prop_assert!(rounded.bits() > 96, "{} from {}", last, open),
            }
        }
    }
}
