//! The line source: inputs of NDJSON lines become timestamped events.
//!
//! Input: this worker's share of the inputs, each an iterator of lines (a file, a Kafka partition
//! adapter, an in-memory test case). The caller decides which worker reads which input; each input
//! is read by exactly one worker, in order.
//!
//! Output: one stream of [`SourceRecord`]s:
//! - `Event`: a parsed event at the timestamp its input's [`Stamper`] chose, tagged with its read
//!   position `(input, offset)`, which orders book events of a symbol inside a timestamp;
//! - `Name`: the names of a symbol, the first time an input sees it;
//! - `Dead`: a dead letter (bad line, read error, `too_late` trade), with its reason and payload;
//! - `End`: when this worker's inputs are exhausted, its last mark, one copy addressed to every worker.
//!
//! Invariants: the capability is held in an `Option`, only moves forward (to the minimum of the
//! inputs' earliest open timestamps) and is dropped only after every input is exhausted and the
//! `End` records are sent. Bad input never stops the source.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use timely::dataflow::operators::generic::operator::source as timely_source;
use timely::dataflow::{Scope, StreamVec};

use crate::config::Config;
use crate::event::{parse, Event};
use crate::stats::Stats;
use crate::time::{Stamp, Stamper};
use crate::types::{Sym, SymbolName};

/// Where a record was read: input number and position (line or offset) in it.
pub type Position = (u32, u64);

/// An event with its read position. Ordered by position first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamped {
    /// Read position.
    pub pos: Position,
    /// The event.
    pub event: Event,
}

/// A dead letter: the original payload and why it was rejected.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Short lowercase reason.
    pub reason: String,
    /// The input as read.
    pub payload: String,
    /// Where it was read.
    pub pos: Position,
}

/// What the source emits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SourceRecord {
    /// A timestamped event.
    Event(Stamped),
    /// A symbol's names.
    Name(Sym, SymbolName),
    /// A rejected message.
    Dead(DeadLetter),
    /// A worker's inputs are exhausted; `last` is their last mark, `to` the addressed worker.
    End {
        /// Last mark of the sending worker's inputs (0 if they held no event).
        last: u64,
        /// Receiving worker.
        to: u64,
    },
}

impl SourceRecord {
    /// The worker a record goes to: events and names by symbol, dead letters to worker 0 (the
    /// publisher), ends to their addressee.
    pub fn route(&self) -> u64 {
        match self {
            SourceRecord::Event(s) => s.event.sym.0,
            SourceRecord::Name(sym, _) => sym.0,
            SourceRecord::Dead(_) => 0,
            SourceRecord::End { to, .. } => *to,
        }
    }
}

/// One input: an id (its number among all inputs) and its lines. A line that could not be read
/// is an `Err` carrying the dead letter's reason and whatever payload could be recovered.
pub struct LineInput {
    /// Input number, unique across all workers and processes.
    pub id: u32,
    /// The lines, in order.
    pub lines: Box<dyn Iterator<Item = Result<String, (String, String)>>>,
}

struct Reader {
    input: LineInput,
    stamper: Stamper,
    seen: HashSet<Sym>,
    offset: u64,
    done: bool,
}

/// Reads `inputs` into a stream of [`SourceRecord`]s (see the module doc).
pub fn lines<'s>(
    scope: Scope<'s, u64>,
    inputs: Vec<LineInput>,
    config: Arc<Config>,
    stats: Arc<Stats>,
) -> StreamVec<'s, u64, (SourceRecord, u64)> {
    let peers = scope.peers() as u64;
    timely_source(scope, "LineSource", move |capability, info| {
        let activator = scope.activator_for(info.address);
        let mut cap = Some(capability);
        let mut readers: Vec<Reader> = inputs
            .into_iter()
            .map(|input| Reader {
                input,
                stamper: Stamper::new(&config),
                seen: HashSet::new(),
                offset: 0,
                done: false,
            })
            .collect();
        let mut batch: BTreeMap<u64, Vec<SourceRecord>> = BTreeMap::new();
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            let floor = *c.time();
            for reader in readers.iter_mut().filter(|r| !r.done) {
                for _ in 0..config.source_batch {
                    let Some(line) = reader.input.lines.next() else {
                        reader.done = true;
                        break;
                    };
                    let pos = (reader.input.id, reader.offset);
                    reader.offset += 1;
                    read_line(reader, line, pos, &stats, floor, &mut batch);
                }
            }
            for (time, records) in std::mem::take(&mut batch) {
                output
                    .session(&c.delayed(&time))
                    .give_iterator(records.into_iter().map(|r| (r, time)));
            }
            if readers.iter().all(|r| r.done) {
                let last = readers
                    .iter()
                    .filter_map(|r| r.stamper.last_mark())
                    .max()
                    .unwrap_or(0);
                let now = *c.time();
                output
                    .session(c)
                    .give_iterator((0..peers).map(|to| (SourceRecord::End { last, to }, now)));
                cap = None;
            } else {
                let open = readers
                    .iter()
                    .filter(|r| !r.done)
                    .map(|r| r.stamper.open())
                    .min()
                    .unwrap_or(floor);
                c.downgrade(&open.max(floor));
                activator.activate();
            }
        }
    })
}

/// Parses and stamps one line into `batch` (keyed by timestamp, never below `floor`).
fn read_line(
    reader: &mut Reader,
    line: Result<String, (String, String)>,
    pos: Position,
    stats: &Stats,
    floor: u64,
    batch: &mut BTreeMap<u64, Vec<SourceRecord>>,
) {
    let open = reader.stamper.open().max(floor);
    let mut dead = |reason: String, payload: String| {
        Stats::add(&stats.dead_lettered, 1);
        let record = SourceRecord::Dead(DeadLetter {
            reason,
            payload,
            pos,
        });
        batch.entry(open).or_default().push(record);
    };
    let line = match line {
        Ok(line) if line.trim().is_empty() => return,
        Ok(line) => line,
        Err((reason, payload)) => {
            Stats::add(&stats.read, 1);
            return dead(reason, payload);
        }
    };
    Stats::add(&stats.read, 1);
    let parsed = match parse(line.trim_end()) {
        Ok(parsed) => parsed,
        Err(err) => return dead(err.to_string(), line),
    };
    let event = parsed.event;
    match reader.stamper.stamp(event.sym, event.ts, event.is_book()) {
        Stamp::TooLate => dead("too_late".to_string(), line),
        Stamp::At { time, late } => {
            if late {
                Stats::add(&stats.late, 1);
            }
            // Names travel at the floor, which no later event of this input can precede.
            if reader.seen.insert(event.sym) {
                batch
                    .entry(floor)
                    .or_default()
                    .push(SourceRecord::Name(event.sym, parsed.name));
            }
            batch
                .entry(time.max(floor))
                .or_default()
                .push(SourceRecord::Event(Stamped { pos, event }));
        }
    }
}
