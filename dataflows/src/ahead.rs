//! Reading ahead: an input's lines parsed off the worker that owns it.
//!
//! The binary reads each file on a thread of its own, in chunks of whole lines, which a
//! [`ReadAhead`] parses into [`ParsedBatch`]es that keep the chunk as their text (a line is not
//! copied: read into the chunk, it is parsed there and a dead letter's payload is cut from it;
//! only a chunk of more than `MOST_LINES` lines is cut into batches, each but the last copying
//! its part of the text once);
//! the batches go over a bounded channel to the source of the worker that owns the file, which
//! takes them as [`Ahead`] batches ([`crate::source::LineInput::ahead`]) and only stamps and
//! routes their events. With one file, parsing was a seventh of all the work and made the reading
//! worker the slowest.
//!
//! Invariant: what the source makes of a line parsed ahead is exactly what it makes of the same
//! line as text (a Kafka message, a test case's line): the same events, dead letters (the line as
//! payload) and counts, and the same names (a line's names go with it whenever they are not the
//! last ones sent for its symbol id, so the worker always holds the line's own spelling). Lines
//! end at a line feed, without the carriage returns before it; a blank line is not counted; a
//! line that is not UTF-8 is dead-lettered with its bytes as read (a `--dlq` file shows their
//! lossy text).

use std::rc::Rc;

use crate::event::{parse, Event, Parsed};
use crate::types::{FoldMap, Sym, SymbolName};

/// Parses an input's chunks of lines, in order, into batches.
#[derive(Default)]
pub struct ReadAhead {
    /// The names that went out last with a line of this input, per symbol id.
    named: FoldMap<Sym, SymbolName>,
}

/// What an input read ahead offers.
pub enum Ahead {
    /// The next batch.
    Batch(ParsedBatch),
    /// The next batch is not ready yet.
    NotYet,
}

/// Consecutive lines of one input, parsed.
pub struct ParsedBatch {
    /// The lines' text as read.
    text: Vec<u8>,
    /// Where each line's text starts and ends in `text`, and what parsing it gave.
    lines: Vec<(usize, usize, Parse)>,
}

impl ParsedBatch {
    /// Each line's text as read and, for a dead letter, its reason.
    pub fn lines(&self) -> impl Iterator<Item = (&[u8], Option<&str>)> + '_ {
        self.lines.iter().map(|(start, end, parse)| {
            let reason = match parse {
                Parse::Bad(reason) => Some(reason.as_str()),
                _ => None,
            };
            (&self.text[*start..*end], reason)
        })
    }
}

/// What a line gave.
#[derive(Debug)]
pub(crate) enum Parse {
    /// An event, with its symbol's names when they are to go with it (parsed ahead: when they
    /// are not the last ones sent for its id).
    Event(Event, Option<SymbolName>),
    /// Nothing to read (blank line).
    Blank,
    /// A dead letter's reason (the payload is the line's text).
    Bad(String),
}

/// A part of a batch's text.
#[derive(Debug)]
pub(crate) struct TextRange {
    text: Rc<Vec<u8>>,
    start: usize,
    end: usize,
}

/// A line parsed ahead, as the source receives it.
#[derive(Debug)]
pub struct AheadLine {
    text: TextRange,
    parse: Parse,
}

impl AheadLine {
    /// The line as read, and what parsing it gave.
    pub(crate) fn into_parts(self) -> (TextRange, Parse) {
        (self.text, self.parse)
    }
}

impl TextRange {
    /// The line as read, byte for byte.
    pub(crate) fn owned(&self) -> Vec<u8> {
        self.text[self.start..self.end].to_vec()
    }
}

/// An input's batches, handed out line by line.
pub(crate) struct AheadLines {
    batches: Box<dyn Iterator<Item = Ahead>>,
    /// The batch being read.
    reading: Option<Reading>,
}

/// A batch being read: its text and its lines.
type Reading = (Rc<Vec<u8>>, std::vec::IntoIter<(usize, usize, Parse)>);

impl AheadLines {
    pub(crate) fn new(batches: Box<dyn Iterator<Item = Ahead>>) -> AheadLines {
        AheadLines {
            batches,
            reading: None,
        }
    }

    /// The next line, `Some(None)` when it is not there yet, or `None` at the end of the input.
    pub(crate) fn next_line(&mut self) -> Option<Option<AheadLine>> {
        loop {
            if let Some((text, lines)) = self.reading.as_mut() {
                if let Some((start, end, parse)) = lines.next() {
                    let text = TextRange {
                        text: text.clone(),
                        start,
                        end,
                    };
                    return Some(Some(AheadLine { text, parse }));
                }
            }
            let Ahead::Batch(batch) = self.batches.next()? else {
                return Some(None);
            };
            self.reading = Some((Rc::new(batch.text), batch.lines.into_iter()));
        }
    }
}

/// Where each line of `text` starts and ends: lines end at a line feed, without the carriage
/// returns before it; the last one may have no line feed (an empty text has no line).
pub fn lines_of(text: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= text.len() {
            return None;
        }
        let feed = memchr::memchr(b'\n', &text[start..]).map(|i| start + i);
        let mut end = feed.unwrap_or(text.len());
        let line = start;
        start = feed.map_or(end, |f| f + 1);
        while end > line && text[end - 1] == b'\r' {
            end -= 1;
        }
        Some((line, end))
    })
}

/// JSON's whitespace: space, tab, carriage return, line feed.
const JSON_SPACE: [char; 4] = [' ', '\t', '\r', '\n'];

/// True for a line of JSON whitespace only: spacing between lines, neither an input nor counted.
/// Other whitespace (a no-break space, a form feed) is text, and such a line is dead-lettered.
pub fn is_blank(line: &str) -> bool {
    line.trim_start_matches(JSON_SPACE).is_empty()
}

/// Parses a line of text (without its line end): a blank line gives nothing, a bad one its
/// dead-letter reason, an event the names `name` picks for it. The source reads lines as text
/// through it too, so both ways parse alike.
pub(crate) fn parse_line(
    line: &str,
    name: impl FnOnce(&Parsed<'_>) -> Option<SymbolName>,
) -> Parse {
    if is_blank(line) {
        return Parse::Blank;
    }
    match parse(line.trim_end_matches(JSON_SPACE)) {
        Err(err) => Parse::Bad(err.to_string()),
        Ok(parsed) => {
            let name = name(&parsed);
            Parse::Event(parsed.event, name)
        }
    }
}

/// Lines a batch holds at most. A parsed line takes some 200 bytes however short its text, so
/// a chunk of 2 MiB of 2-byte bad lines (a million) parsed whole took 200 MB, and with the
/// batches read ahead a file of such lines held about 100 times its size (16M lines of `x`:
/// 961 MB). Lines of real events are 100 bytes and more: a chunk of them is one batch.
pub const MOST_LINES: usize = 32_768;

impl ReadAhead {
    /// Parses the lines of `text`, the input's next chunk: lines that each end with a line feed,
    /// except the input's last, which may not. The batch keeps `text`.
    pub fn batch(&mut self, text: Vec<u8>) -> ParsedBatch {
        let mut batch = None;
        self.batches_of(text, usize::MAX, |b| batch.replace(b).is_none());
        batch.expect("one batch")
    }

    /// [`ReadAhead::batch`] in batches of at most [`MOST_LINES`] lines, each `send` in order.
    /// False when a send was refused.
    pub fn batches(&mut self, text: Vec<u8>, send: impl FnMut(ParsedBatch) -> bool) -> bool {
        self.batches_of(text, MOST_LINES, send)
    }

    /// Batches of at most `most` lines of `text`: each but the last with a copy of its own
    /// text (each byte copied once; only chunks of lines under 64 bytes on average have them),
    /// the last keeping `text`. Each batch's lines are parsed after the one before is sent.
    fn batches_of(
        &mut self,
        text: Vec<u8>,
        most: usize,
        mut send: impl FnMut(ParsedBatch) -> bool,
    ) -> bool {
        let mut lines = Vec::with_capacity((text.len() / 128 + 1).min(most));
        // Nearly always the whole chunk is UTF-8, and then so is every line in it (lines end
        // at ASCII bytes): one check of the chunk costs a third of one per line.
        let whole = std::str::from_utf8(&text).ok();
        let mut from = 0;
        for (start, end) in lines_of(&text) {
            if lines.len() == most {
                let part = ParsedBatch {
                    text: text[from..start].to_vec(),
                    lines: (lines.drain(..))
                        .map(|(s, e, parse)| (s - from, e - from, parse))
                        .collect(),
                };
                if !send(part) {
                    return false;
                }
                from = start;
            }
            let parse = match whole {
                Some(whole) => self.parse_text(&whole[start..end]),
                None => self.parse(&text[start..end]),
            };
            lines.push((start, end, parse));
        }
        send(ParsedBatch { text, lines })
    }

    /// A line that could not be read (a read error with the part of a line read before it, or a
    /// line too long with its first bytes): a dead letter with `reason` and `payload` (bytes as
    /// read).
    pub fn unreadable(reason: String, payload: Vec<u8>) -> ParsedBatch {
        ParsedBatch {
            lines: vec![(0, payload.len(), Parse::Bad(reason))],
            text: payload,
        }
    }

    /// Parses a line, as read (without its line end).
    fn parse(&mut self, bytes: &[u8]) -> Parse {
        match std::str::from_utf8(bytes) {
            Ok(line) => self.parse_text(line),
            Err(_) => Parse::Bad("invalid utf-8".to_string()),
        }
    }

    /// Parses a line of text (without its line end).
    fn parse_text(&mut self, line: &str) -> Parse {
        // Names go out whenever they are not the last ones sent for the id: the worker then
        // always holds the line's own spelling, also should two names ever share an id (a hash
        // collision; `a:b` + `c` and `a` + `b:c` did until `Sym::of` told them apart).
        parse_line(line, |parsed| {
            let sent = self
                .named
                .get(&parsed.event.sym)
                .is_some_and(|n| *n.exchange == *parsed.exchange && *n.symbol == *parsed.symbol);
            let name = (!sent).then(|| parsed.name())?;
            self.named.insert(parsed.event.sym, name.clone());
            Some(name)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk of many short lines is parsed in batches of at most [`MOST_LINES`], each ending
    /// at a line's end, together every line in order; a chunk of fewer is one batch.
    #[test]
    fn many_short_lines_are_parsed_in_batches_of_bounded_lines() {
        let count = 2 * MOST_LINES + 100;
        let mut text: Vec<u8> = (0..count)
            .flat_map(|i| format!("x{i}{}", if i % 2 == 0 { "\n" } else { "\r\n" }).into_bytes())
            .collect();
        text.extend_from_slice(b"last, without a line feed");
        let mut ahead = ReadAhead::default();
        let mut sizes = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        assert!(ahead.batches(text, |batch| {
            sizes.push(batch.lines.len());
            for (line, reason) in batch.lines() {
                assert!(reason.is_some(), "a bad line");
                seen.push(String::from_utf8(line.to_vec()).unwrap());
            }
            true
        }));
        assert_eq!(sizes, [MOST_LINES, MOST_LINES, 101]);
        let expected: Vec<String> = (0..count)
            .map(|i| format!("x{i}"))
            .chain(["last, without a line feed".to_string()])
            .collect();
        assert_eq!(seen, expected);

        let mut batches = 0;
        assert!(ahead.batches(b"a\nb\n".to_vec(), |_| {
            batches += 1;
            true
        }));
        assert_eq!(batches, 1);
        // A refused send stops the rest.
        let mut offered = 0;
        let long: Vec<u8> = b"x\n".repeat(MOST_LINES + 1);
        assert!(!ahead.batches(long, |_| {
            offered += 1;
            false
        }));
        assert_eq!(offered, 1);
    }
}
