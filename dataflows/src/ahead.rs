//! Reading ahead: an input's lines parsed off the worker that owns it.
//!
//! The binary reads each file on a thread of its own, which parses its lines with a [`ReadAhead`]
//! into [`ParsedBatch`]es and hands them over a bounded channel; the source of the worker that
//! owns the file takes them as [`Ahead`] batches ([`crate::source::LineInput::ahead`]) and only
//! stamps and routes their events. With one file, parsing was a seventh of all the work and made
//! the reading worker the slowest.
//!
//! Invariant: what the source makes of a line parsed ahead is exactly what it makes of the same
//! line as text (a Kafka message, a test case's line): the same events, dead letters (the line as
//! payload) and counts, and the same names (a line's names go with it whenever they are not the
//! last ones sent for its symbol id, so the worker always holds the line's own spelling). A blank
//! line is not counted; a line that is not UTF-8 is dead-lettered with its lossy text.

use std::rc::Rc;

use crate::event::{parse, Event, Parsed};
use crate::types::{FoldMap, Sym, SymbolName};

/// Parses an input's lines, in order, into batches.
#[derive(Default)]
pub struct ReadAhead {
    /// The names that went out last with a line of this input, per symbol id.
    named: FoldMap<Sym, SymbolName>,
    batch: ParsedBatch,
}

/// What an input read ahead offers.
pub enum Ahead {
    /// The next batch.
    Batch(ParsedBatch),
    /// The next batch is not ready yet.
    NotYet,
}

/// Consecutive lines of one input, parsed.
#[derive(Default)]
pub struct ParsedBatch {
    /// The lines' text, one after another.
    text: String,
    /// Where each line's text ends in `text`, and what parsing it gave.
    lines: Vec<(usize, Parse)>,
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
    text: Rc<String>,
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
    /// The line as read.
    pub(crate) fn owned(&self) -> String {
        self.text[self.start..self.end].to_string()
    }
}

/// An input's batches, handed out line by line.
pub(crate) struct AheadLines {
    batches: Box<dyn Iterator<Item = Ahead>>,
    /// The batch being read.
    reading: Option<Reading>,
}

/// A batch being read: its text, where the next line starts, its lines.
type Reading = (Rc<String>, usize, std::vec::IntoIter<(usize, Parse)>);

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
            if let Some((text, start, lines)) = self.reading.as_mut() {
                if let Some((end, parse)) = lines.next() {
                    let text = TextRange {
                        text: text.clone(),
                        start: std::mem::replace(start, end),
                        end,
                    };
                    return Some(Some(AheadLine { text, parse }));
                }
            }
            let Ahead::Batch(batch) = self.batches.next()? else {
                return Some(None);
            };
            self.reading = Some((Rc::new(batch.text), 0, batch.lines.into_iter()));
        }
    }
}

/// Parses a line of text (without its line end): a blank line gives nothing, a bad one its
/// dead-letter reason, an event the names `name` picks for it. The source reads lines as text
/// through it too, so both ways parse alike.
pub(crate) fn parse_line(
    line: &str,
    name: impl FnOnce(&Parsed<'_>) -> Option<SymbolName>,
) -> Parse {
    if line.trim().is_empty() {
        return Parse::Blank;
    }
    match parse(line.trim_end()) {
        Err(err) => Parse::Bad(err.to_string()),
        Ok(parsed) => {
            let name = name(&parsed);
            Parse::Event(parsed.event, name)
        }
    }
}

impl ReadAhead {
    /// Parses the next line of the input, as read (without its line end).
    pub fn push_line(&mut self, bytes: &[u8]) {
        let Ok(line) = std::str::from_utf8(bytes) else {
            let text = String::from_utf8_lossy(bytes);
            return self.push_unreadable("invalid utf-8".to_string(), &text);
        };
        // Names go out whenever they are not the last ones sent for the id: the worker then
        // always holds the line's own spelling, also when two names share an id (`a:b` + `c`
        // and `a` + `b:c`).
        let parse = parse_line(line, |parsed| {
            let sent = self
                .named
                .get(&parsed.event.sym)
                .is_some_and(|n| *n.exchange == *parsed.exchange && *n.symbol == *parsed.symbol);
            let name = (!sent).then(|| parsed.name())?;
            self.named.insert(parsed.event.sym, name.clone());
            Some(name)
        });
        self.batch.text.push_str(line);
        self.batch.lines.push((self.batch.text.len(), parse));
    }

    /// A line that could not be read: a dead letter with `reason` and `payload`.
    pub fn push_unreadable(&mut self, reason: String, payload: &str) {
        self.batch.text.push_str(payload);
        self.batch
            .lines
            .push((self.batch.text.len(), Parse::Bad(reason)));
    }

    /// Lines and bytes of text in the batch being filled.
    pub fn pending(&self) -> (usize, usize) {
        (self.batch.lines.len(), self.batch.text.len())
    }

    /// The batch filled so far; the next one starts empty, with as much room.
    pub fn take(&mut self) -> ParsedBatch {
        let room = ParsedBatch {
            text: String::with_capacity(self.batch.text.capacity()),
            lines: Vec::with_capacity(self.batch.lines.capacity()),
        };
        std::mem::replace(&mut self.batch, room)
    }
}
