//! Text read a word (eight bytes) at a time: runs of ASCII digits, and the end of a string.
//!
//! Input: the text at the start of a price, a quantity, an integer or a string's contents.
//! Output: where the digits stop and their value, or where the string's closing quote is, found
//! with a few word operations and no branch per byte. Read a byte at a time, each run ended in a
//! loop exit at a different byte for every value (a price has two runs, its integer's and its
//! fraction's); read a word at a time, the reader thread took 11% fewer samples on the live file.
//!
//! Invariant: every function here gives what reading the same text a byte at a time gives, or
//! says it cannot tell within a word or two (`None`), and the caller reads it a byte at a time.
//! Property tests compare both ways on texts of digits, points, quotes and other bytes, short
//! and long.

/// A byte in every lane of an 8-byte word.
const fn splat(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}

/// Subtracted (as xor) from every byte: digits become their values 0-9, no lane borrows.
const ZERO: u64 = splat(b'0');

/// `10^n`.
const POW10: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// The 8 bytes of `b` from `at` as a little-endian word (the first byte lowest), xor [`ZERO`];
/// `None` when `b` ends before. (A short text, such as the last value of a line, is read a
/// byte at a time: copied into a padded word, it cost a call and a stalled load.)
#[inline(always)]
fn window(b: &[u8], at: usize) -> Option<u64> {
    let w = b.get(at..)?.first_chunk::<8>()?;
    Some(u64::from_le_bytes(*w) ^ ZERO)
}

/// The high bit of each lane of `t` (a window) whose byte was not a digit.
#[inline(always)]
fn non_digits(t: u64) -> u64 {
    // A lane <= 9 stays below 0x80 when 0x76 is added to its low seven bits; any other lane
    // reaches it, or has its high bit set already. The sum never carries out of a lane.
    (((t & splat(0x7f)) + splat(0x76)) | t) & splat(0x80)
}

/// The index of the first lane flagged in `mask` (8 when none is).
#[inline(always)]
fn first(mask: u64) -> u32 {
    mask.trailing_zeros() / 8
}

/// A mask of the lowest `n` lanes (1 <= `n` <= 8).
#[inline(always)]
fn lanes(n: u32) -> u64 {
    u64::MAX >> (64 - 8 * n)
}

/// The value of the first `n` lanes of `digits` (1..=8 digit values, the first lowest).
#[inline(always)]
fn value(digits: u64, n: u32) -> u64 {
    // Moved to the top lanes, the lanes below read as leading zeros. Then pairs, quadruples and
    // all eight: each step multiplies the more significant half of every group by 10, 100 or
    // 10,000 and adds the other half, in one multiplication.
    let v = (digits & lanes(n)) << (8 * (8 - n));
    let v = (v & 0x0f0f_0f0f_0f0f_0f0f).wrapping_mul(10 << 8 | 1) >> 8;
    let v = (v & 0x00ff_00ff_00ff_00ff).wrapping_mul(100 << 16 | 1) >> 16;
    (v & 0x0000_ffff_0000_ffff).wrapping_mul(10_000 << 32 | 1) >> 32
}

/// The unsigned integer at the start of `b`: its value and its number of digits (0 when `b`
/// does not start with one); `None` when its digits do not end within 16 bytes, or `b` ends
/// before they could be read a word at a time.
#[inline(always)]
pub(crate) fn uint_prefix(b: &[u8]) -> Option<(u64, usize)> {
    let t = window(b, 0)?;
    let n = first(non_digits(t));
    match n {
        0 => Some((0, 0)),
        1..=7 => Some((value(t, n), n as usize)),
        _ => {
            // A time in ms has 13 digits: the next word holds the rest.
            let u = window(b, 8)?;
            let more = first(non_digits(u));
            match more {
                0 => Some((value(t, 8), 8)),
                1..=7 => {
                    let v = value(t, 8) * POW10[more as usize] + value(u, more);
                    Some((v, 8 + more as usize))
                }
                _ => None,
            }
        }
    }
}

/// The text of a price or quantity at the start of `b`, as [`crate::types`]' `plain_prefix`
/// reads it a byte at a time: digits, then a point and digits or not, up to the first other
/// byte. `Some(found)` gives what that reading gives (`found` is the mantissa of its digits, how
/// many of them are fractional and the text's length, or `None` when the text is not of that
/// form); `None` when the text does not end within 8 bytes, or `b` is shorter than that.
#[inline(always)]
pub(crate) fn plain_prefix(b: &[u8]) -> Option<Option<(u64, usize, usize)>> {
    let t = window(b, 0)?;
    let flagged = non_digits(t);
    let int = first(flagged);
    if int == 8 {
        return None;
    }
    if int == 0 {
        return Some(None);
    }
    if (t >> (8 * int)) as u8 != b'.' ^ b'0' {
        return Some(Some((value(t, int), 0, int as usize)));
    }
    // The fraction's digits, up to the first other byte after the point.
    let end = first(flagged & !lanes(int + 1));
    if end == 8 {
        return None;
    }
    if end == int + 1 {
        return Some(None);
    }
    // The fraction's lanes moved down over the point: one run of `end - 1` digits.
    let digits = (t & lanes(int)) | ((t >> 8) & !lanes(int));
    let frac = (end - int - 1) as usize;
    Some(Some((value(digits, end - 1), frac, end as usize)))
}

/// The high bit of the lowest lane of `w` that holds `b`, and perhaps of lanes above it (a
/// borrow can flag those falsely, never one below).
#[inline(always)]
fn lanes_of(w: u64, b: u8) -> u64 {
    let x = w ^ splat(b);
    x.wrapping_sub(splat(0x01)) & !x & splat(0x80)
}

/// Where the contents of a JSON string that start `b` end: the index of the first quote,
/// backslash or control character (below 0x20), when one is within the first 16 bytes; `None`
/// when none is, or `b` ends before a word can be read there.
#[inline(always)]
pub(crate) fn string_stop(b: &[u8]) -> Option<usize> {
    let stops = |w: u64| {
        // Control characters: a lane below 0x20 borrows when 0x20 is subtracted (only the
        // lowest flag need be true, as above); a lane of 0x80 or more is not one.
        let control = w.wrapping_sub(splat(0x20)) & !w & splat(0x80);
        lanes_of(w, b'"') | lanes_of(w, b'\\') | control
    };
    let first = stops(u64::from_le_bytes(*b.first_chunk::<8>()?));
    if first != 0 {
        return Some((first.trailing_zeros() / 8) as usize);
    }
    let second = stops(u64::from_le_bytes(*b.get(8..)?.first_chunk::<8>()?));
    (second != 0).then(|| 8 + (second.trailing_zeros() / 8) as usize)
}

/// The index of the first quote in `b`, when it is within the first 8 bytes (the text of a
/// decimal, written in a record, ends at one); `None` when it is not, or `b` is shorter.
#[inline(always)]
pub(crate) fn quote_in_word(b: &[u8]) -> Option<usize> {
    let found = lanes_of(u64::from_le_bytes(*b.first_chunk::<8>()?), b'"');
    (found != 0).then(|| (found.trailing_zeros() / 8) as usize)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// `uint_prefix` read a byte at a time.
    fn uint_bytewise(b: &[u8]) -> Option<(u64, usize)> {
        let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
        if b.len() < 8 || (n >= 8 && b.len() < 16) || n >= 16 {
            return None;
        }
        let v = b[..n].iter().fold(0, |v, c| v * 10 + u64::from(c - b'0'));
        Some((v, n))
    }

    /// `plain_prefix` read a byte at a time.
    fn plain_bytewise(b: &[u8]) -> Option<Option<(u64, usize, usize)>> {
        if b.len() < 8 {
            return None;
        }
        let int = b.iter().take_while(|c| c.is_ascii_digit()).count();
        if int >= 8 {
            return None;
        }
        if int == 0 {
            return Some(None);
        }
        let (len, frac) = match b.get(int) {
            Some(b'.') => {
                let frac = b[int + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .count();
                if int + 1 + frac >= 8 {
                    return None;
                }
                if frac == 0 {
                    return Some(None);
                }
                (int + 1 + frac, frac)
            }
            _ => (int, 0),
        };
        let m = b[..len]
            .iter()
            .filter(|c| c.is_ascii_digit())
            .fold(0, |v, c| v * 10 + u64::from(c - b'0'));
        Some(Some((m, frac, len)))
    }

    /// Texts of digits, points, the bytes around values in a line, and any byte, of any length
    /// up to 24 (so that some are shorter than 16 bytes and some runs pass them).
    fn texts() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            12 => b'0'..=b'9',
            2 => Just(b'.'),
            1 => prop::sample::select(vec![b'"', b',', b']', b'}', b'/', b':', b'-', 0]),
            1 => any::<u8>(),
        ];
        prop::collection::vec(byte, 0..24)
    }

    /// `string_stop` read a byte at a time.
    fn string_stop_bytewise(b: &[u8]) -> Option<usize> {
        let at = b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
        match at {
            Some(at) if at < 8 && b.len() >= 8 => Some(at),
            Some(at) if at < 16 && b.len() >= 16 => Some(at),
            _ => None,
        }
    }

    /// `quote_in_word` read a byte at a time.
    fn quote_bytewise(b: &[u8]) -> Option<usize> {
        let at = b.iter().position(|&c| c == b'"')?;
        (at < 8 && b.len() >= 8).then_some(at)
    }

    /// Texts of string contents: letters, digits, the stops, bytes around them, and any byte.
    fn strings() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            12 => prop::sample::select(b"SUSDT0159synth".to_vec()),
            1 => prop::sample::select(vec![b'"', b'\\', 0, 0x1f, 0x20, 0x21, b'!', b']', 0x7f, 0x80, 0xff]),
            1 => any::<u8>(),
        ];
        prop::collection::vec(byte, 0..24)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn string_stops_as_a_byte_at_a_time(b in strings()) {
            prop_assert_eq!(string_stop(&b), string_stop_bytewise(&b), "{:?}", b);
        }

        #[test]
        fn quotes_as_a_byte_at_a_time(b in prop_oneof![strings(), texts()]) {
            prop_assert_eq!(quote_in_word(&b), quote_bytewise(&b), "{:?}", b);
        }

        #[test]
        fn integers_read_as_a_byte_at_a_time(b in texts()) {
            prop_assert_eq!(uint_prefix(&b), uint_bytewise(&b), "{:?}", String::from_utf8_lossy(&b));
        }

        #[test]
        fn values_read_as_a_byte_at_a_time(b in texts()) {
            prop_assert_eq!(plain_prefix(&b), plain_bytewise(&b), "{:?}", String::from_utf8_lossy(&b));
        }
    }

    #[test]
    fn every_digit_in_every_lane() {
        // Each digit in each place of runs of every length that a word or two hold, and of
        // values with a point wherever a word holds one.
        for d in b'0'..=b'9' {
            for len in 1..16 {
                for at in 0..len {
                    let mut text = vec![b'1'; len];
                    text[at] = d;
                    text.extend_from_slice(b"\",\"5.108\"]");
                    assert_eq!(uint_prefix(&text), uint_bytewise(&text));
                    assert_eq!(plain_prefix(&text), plain_bytewise(&text));
                    if len < 7 {
                        for point in 1..len {
                            let mut pointed = text.clone();
                            pointed.insert(point, b'.');
                            assert_eq!(plain_prefix(&pointed), plain_bytewise(&pointed));
                            assert!(plain_prefix(&pointed).is_some_and(|v| v.is_some()));
                        }
                    }
                }
            }
        }
        assert_eq!(
            uint_prefix(b"1700000000123,\"s"),
            Some((1_700_000_000_123, 13))
        );
        assert_eq!(
            plain_prefix(b"47893.9\",\"5.1"),
            Some(Some((478_939, 1, 7)))
        );
        assert_eq!(plain_prefix(b"4.1\"]]}"), None, "shorter than a word");
    }
}
