//! The line source: inputs of NDJSON lines become timestamped events.
//!
//! Input: this worker's share of the inputs, behind the [`Inputs`] trait (files and test cases as
//! [`LineInputs`]; Kafka partitions in the binary). The caller decides which worker reads which
//! input; each input is read by exactly one worker, in order. A line comes as text, which the
//! source parses, or already parsed ([`crate::ahead`]: the binary reads and parses each file on a
//! thread of its own); both give the same records.
//!
//! Output: one stream of [`SourceRecord`]s, each with its timestamp (an activation's records
//! travel together at the capability, in timestamp order, one container per worker they go to,
//! which [`crate::routing::to_workers`] hands on whole):
//! - `Event`: a parsed event at the timestamp its input's [`Stamper`] chose, tagged with its read
//!   position `(input, offset)`, which orders book events of a symbol inside a timestamp;
//! - `Name`: the names of a symbol, the first time an input sees it;
//! - `Dead`: a dead letter (bad line, read error, line too long, `too_late` trade, an event
//!   ahead of the clock under `--max-ahead-ms`), with its reason and payload;
//! - `End`: when this worker's inputs are exhausted, its last mark, one copy addressed to every
//!   worker.
//!
//! Invariants: the capability is held in an `Option`, only moves forward (to the minimum of the
//! earliest open timestamps of the inputs that are not idle; when all of this worker's are idle, to
//! where the job's other inputs are, [`crate::idle`]) and is dropped only after every input is
//! exhausted and the `End` records are sent. An event is never stamped below the capability: an
//! input that wakes up after progress moved on has its events applied at the capability, counted as
//! late. Bad input never stops the source, nor holds progress: an input is idle after `idle_ms`
//! without an event, whatever else it sends.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use timely::dataflow::operators::generic::operator::source as timely_source;
use timely::dataflow::{Scope, StreamVec};

use crate::ahead::{parse_line, Ahead, AheadLine, AheadLines, Parse};
use crate::config::Config;
use crate::event::{Event, Parsed};
use crate::idle::{Idle, Note};
use crate::stats::Stats;
use crate::time::{Stamp, Stamper};
use crate::types::{FoldMap, Sym, SymbolName};

/// Distinct timestamps one source activation emits at most (see [`source`]).
const MAX_TIMES_PER_ACTIVATION: usize = 256;

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
    /// The input as read, byte for byte (a Kafka dead letter carries it unchanged up to 900,000
    /// bytes, beyond that its start, with a `truncated` header; a `--dlq` file's JSON line shows
    /// its lossy text; a line too long keeps its first MiB).
    pub payload: Vec<u8>,
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

    /// The worker among `peers` that the record goes to: its route modulo the number of
    /// workers, as timely's exchange picks one (the source's batches and
    /// [`crate::routing::to_workers`] both follow this).
    #[inline]
    pub fn worker(&self, peers: u64) -> usize {
        let route = self.route();
        // The same as `route % peers`, as timely's own exchange computes it: with a power of two
        // (the usual count of workers) a mask, not a division, which at two per record (the
        // source's batches, then the check in routing) was 2% of the reading worker's time.
        if peers.is_power_of_two() {
            (route & (peers - 1)) as usize
        } else {
            (route % peers) as usize
        }
    }
}

/// A line that could not be read: the dead letter's reason and whatever payload was recovered.
pub type Unreadable = (String, Vec<u8>);

/// What a worker's inputs offer next.
#[derive(Debug)]
pub enum Next {
    /// A line of input `input` at position `offset`.
    Line {
        /// Input number, unique across all workers and processes.
        input: u32,
        /// Position in the input (line number, Kafka offset).
        offset: u64,
        /// The line.
        line: Line,
    },
    /// Input `input` has ended (end of file, end offset of a bounded run).
    Finished(u32),
    /// Nothing to read right now; ask again soon.
    Pending,
    /// Every input of this worker has ended.
    Done,
}

/// The inputs one worker reads: files, Kafka partitions, in-memory test cases.
pub trait Inputs {
    /// The next line of any input, or why there is none.
    fn next(&mut self) -> Next;
    /// Inputs this worker owns that have produced nothing yet still count for progress.
    fn known(&self) -> Vec<u32>;
    /// The source stamped `lines` consecutive lines of `input` with `time`, the last at `offset`
    /// (for offset commits and flow control). It tells of a run of lines at once: once per line,
    /// through two dynamic calls, was a tenth of the source's work on the worker that reads a
    /// file. A run is told before a later run, before an input's end is handled and before the
    /// activation ends (the line after a run is read before the run is told).
    fn stamped(&mut self, _input: u32, _offset: u64, _time: u64, _lines: usize) {}
    /// Reading is paused on purpose (backpressure): silence now is not idleness.
    fn paused(&self) -> bool {
        false
    }
    /// The source's capability moved to `frontier`: every record stamped below it can now
    /// complete without more input (for flow control).
    fn progressed(&mut self, _frontier: u64) {}
}

impl Inputs for Box<dyn Inputs> {
    fn next(&mut self) -> Next {
        (**self).next()
    }
    fn known(&self) -> Vec<u32> {
        (**self).known()
    }
    fn stamped(&mut self, input: u32, offset: u64, time: u64, lines: usize) {
        (**self).stamped(input, offset, time, lines)
    }
    fn paused(&self) -> bool {
        (**self).paused()
    }
    fn progressed(&mut self, frontier: u64) {
        (**self).progressed(frontier)
    }
}

/// In-order line inputs read round-robin (files, test cases): ended when all are; pending only
/// while an input read ahead has no batch ready.
pub struct LineInputs {
    inputs: Vec<LineInput>,
    offsets: Vec<u64>,
    next: usize,
    streak: usize,
}

/// One input: an id (its number among all inputs) and its lines.
pub struct LineInput {
    /// Input number, unique across all workers and processes.
    pub id: u32,
    /// The lines, in order.
    lines: InputLines,
}

enum InputLines {
    /// Lines as text, parsed by the source.
    Text(Box<dyn Iterator<Item = Result<String, Unreadable>>>),
    /// Lines parsed ahead.
    Ahead(AheadLines),
}

impl LineInput {
    /// Input `id` whose lines the source parses.
    pub fn text(id: u32, lines: Box<dyn Iterator<Item = Result<String, Unreadable>>>) -> LineInput {
        LineInput {
            id,
            lines: InputLines::Text(lines),
        }
    }

    /// Input `id` whose lines were parsed ahead into `batches` (by a [`ReadAhead`](crate::ahead::ReadAhead), usually on a
    /// thread of its own); the batches are read as they come.
    pub fn ahead(id: u32, batches: Box<dyn Iterator<Item = Ahead>>) -> LineInput {
        LineInput {
            id,
            lines: InputLines::Ahead(AheadLines::new(batches)),
        }
    }

    /// The next line, `Some(None)` when it is not there yet, or `None` at the end of the input.
    fn next_line(&mut self) -> Option<Option<Line>> {
        match &mut self.lines {
            InputLines::Text(lines) => lines.next().map(|l| Some(Line::Text(l))),
            InputLines::Ahead(lines) => lines.next_line().map(|l| l.map(Line::Ahead)),
        }
    }
}

/// A line as an input offers it.
#[derive(Debug)]
pub enum Line {
    /// Its text, or why it could not be read: the source parses it.
    Text(Result<String, Unreadable>),
    /// Read and parsed ahead (see [`crate::ahead`]).
    Ahead(AheadLine),
}

impl LineInputs {
    /// Reads `inputs` round-robin, a streak of lines from each in turn; an input with nothing
    /// yet hands over to the next.
    pub fn new(inputs: Vec<LineInput>) -> LineInputs {
        let offsets = vec![0; inputs.len()];
        LineInputs {
            inputs,
            offsets,
            next: 0,
            streak: 0,
        }
    }
}

impl Inputs for LineInputs {
    fn next(&mut self) -> Next {
        const STREAK: usize = 1024;
        if self.inputs.is_empty() {
            return Next::Done;
        }
        if self.streak == STREAK {
            self.streak = 0;
            self.next = (self.next + 1) % self.inputs.len();
        }
        // An input with nothing yet hands over to the next: waiting on it while another's
        // read-ahead stays full could wait for ever (the one producer of two pipes, blocked
        // writing the full one, never writes the empty one). Pending once every input has
        // nothing.
        for _ in 0..self.inputs.len() {
            // `next % len`, with the division only when an input has gone since (not once a
            // line).
            let i = if self.next < self.inputs.len() {
                self.next
            } else {
                self.next % self.inputs.len()
            };
            let input = &mut self.inputs[i];
            match input.next_line() {
                Some(None) => {
                    self.streak = 0;
                    self.next = (i + 1) % self.inputs.len();
                }
                Some(Some(line)) => {
                    self.streak += 1;
                    let offset = self.offsets[i];
                    self.offsets[i] += 1;
                    return Next::Line {
                        input: input.id,
                        offset,
                        line,
                    };
                }
                None => {
                    let id = input.id;
                    self.inputs.remove(i);
                    self.offsets.remove(i);
                    self.streak = 0;
                    return Next::Finished(id);
                }
            }
        }
        Next::Pending
    }

    fn known(&self) -> Vec<u32> {
        self.inputs.iter().map(|i| i.id).collect()
    }
}

struct Reader {
    stamper: Stamper,
    /// Symbols whose names went out.
    seen: HashSet<Sym, foldhash::fast::RandomState>,
    /// The names that came last with a line parsed ahead, per symbol id: the names of the line
    /// being read.
    names: FoldMap<Sym, SymbolName>,
    last_seen: Instant,
    /// An event was read in the current activation (`last_seen` is set once, after it). A line
    /// that is no event that applies (a dead letter, `too_late` trades included; a blank) is not:
    /// an input that sends only those is silent (it has no time to hold progress at, or one
    /// below the progress made), and goes idle as a silent one does. It held every symbol's
    /// results back for as long as the bad lines kept coming.
    read: bool,
    idle: bool,
    /// Lines read since the last report to [`Stats::inputs`], as `read` counts them: blank
    /// lines are not (a file's `input_read_total` counted them, `events_read_total` did not).
    unreported: u64,
}

/// The worker that reads input `input` (a file, a Kafka partition) among `peers` workers:
/// inputs are dealt out from the last worker down, because worker 0 also gathers and writes every
/// result; with one input and two workers, one reads (a file: stamps what the file's thread
/// parsed; a partition: parses too) while the other publishes.
pub fn reader(input: usize, peers: usize) -> usize {
    peers - 1 - input % peers
}

/// Reads a worker's inputs into a stream of [`SourceRecord`]s (see the module doc).
///
/// `idle`: an input silent for `idle.after` (wall time) does not hold progress back; when every
/// input of the job is idle, progress advances to the highest of their watermarks (shared with
/// the other workers, [`crate::idle`]). `None` (files, tests): never.
pub fn source<'s, I: Inputs + 'static>(
    scope: Scope<'s, u64>,
    mut inputs: I,
    mut idle: Option<Idle>,
    config: Arc<Config>,
    stats: Arc<Stats>,
) -> StreamVec<'s, u64, (SourceRecord, u64)> {
    let peers = scope.peers() as u64;
    let worker = scope.index();
    timely_source(scope, "Source", move |capability, info| {
        let activator = scope.activator_for(info.address);
        let mut cap = Some(capability);
        let mut started = Instant::now();
        // The previous activation: the time since it was spent paused if the inputs are paused.
        let mut stepped = started;
        let mut readers: FoldMap<u32, Reader> = FoldMap::default();
        let mut finished: HashMap<u32, Option<u64>> = HashMap::new();
        let mut batch = Batch::new(peers as usize);
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            let floor = *c.time();
            let mut done = false;
            let mut pending = false;
            let mut counts = Counts::default();
            let mut run = StampedRun::default();
            let ceiling = ceiling(config.max_ahead_ms);
            for _ in 0..config.source_batch {
                // Sparse inputs, whose batches span many timestamps, yield early: every stage
                // downstream then completes a bounded number of timestamps at once (4,096 took
                // 5.5% more estimated cycles on the Flink file than 256; 64 took 1.9% less there
                // on 2026-12-04 and 3.6% more on the long-span file; on 2026-12-05 64, 32 and 16
                // took the same time as 256 on the Flink file).
                if batch.times.len() >= MAX_TIMES_PER_ACTIVATION {
                    break;
                }
                match inputs.next() {
                    Next::Line {
                        input,
                        offset,
                        line,
                    } => {
                        let reader = reader_of(&mut readers, input, &config, started);
                        let pos = (input, offset);
                        let (counts, batch) = (&mut counts, &mut batch);
                        let time = match line {
                            Line::Text(line) => {
                                read_line(reader, line, pos, counts, ceiling, floor, batch)
                            }
                            Line::Ahead(line) => {
                                read_parsed(reader, line, pos, counts, ceiling, floor, batch)
                            }
                        };
                        if reader.read && reader.idle {
                            reader.idle = false;
                            tracing::info!(worker, input, "input active again");
                        }
                        run.note(input, offset, time, &mut inputs);
                    }
                    Next::Finished(input) => {
                        run.tell(&mut inputs);
                        report_inputs(&mut readers, &stats);
                        let last = readers.remove(&input).and_then(|r| r.stamper.last_mark());
                        tracing::debug!(worker, input, last_mark = last, "input finished");
                        finished.insert(input, last);
                    }
                    Next::Pending => {
                        pending = true;
                        break;
                    }
                    Next::Done => {
                        done = true;
                        break;
                    }
                }
            }
            run.tell(&mut inputs);
            counts.add_to(&stats, worker);
            report_inputs(&mut readers, &stats);
            // One session at the floor: every record carries its timestamp (a session per
            // timestamp made a message per timestamp on every edge downstream), and each
            // worker's records are one container.
            if !batch.times.is_empty() {
                let mut session = output.session(c);
                batch.drain(|records| session.give_container(records));
            }
            if done {
                let marks = readers.values().filter_map(|r| r.stamper.last_mark());
                let last = marks
                    .chain(finished.values().flatten().copied())
                    .max()
                    .unwrap_or(0);
                let now = *c.time();
                let mut session = output.session(c);
                for to in 0..peers {
                    session.give_container(&mut vec![(SourceRecord::End { last, to }, now)]);
                }
                drop(session);
                cap = None;
                if let Some(idle) = idle.as_mut() {
                    // It holds nothing back now, and says so: a worker that never heard from
                    // it would keep to its own inputs for good (one whose inputs failed to
                    // open finishes before its first note).
                    idle.peers.tell(Note::default());
                    idle.peers.close();
                }
                return;
            }
            // Progress: the earliest open timestamp of the inputs that are not idle.
            let now = Instant::now();
            for reader in readers.values_mut().filter(|r| r.read) {
                reader.read = false;
                reader.last_seen = now;
            }
            let after = idle.as_ref().map(|i| i.after);
            // Silence counts only while the source watches its inputs: time spent paused by
            // backpressure, and a stall of the worker itself, do not make an input idle, and
            // silences are moved on by them. (Set to now, they began again at every pause, and a
            // partition that never sent anything held progress back for `--idle-ms` after each
            // one: with Redis behind in a burst, marks came seconds late.)
            let unwatched = after.map_or(Duration::ZERO, |after| {
                unwatched(now.duration_since(stepped), inputs.paused(), after)
            });
            if !unwatched.is_zero() {
                started = not_counting(started, unwatched, now);
                (readers.values_mut())
                    .for_each(|r| r.last_seen = not_counting(r.last_seen, unwatched, now));
            }
            stepped = now;
            let is_idle = |since: Instant| after.is_some_and(|d| now.duration_since(since) >= d);
            for (input, reader) in readers.iter_mut() {
                if !reader.idle && is_idle(reader.last_seen) {
                    reader.idle = true;
                    tracing::info!(
                        worker,
                        input,
                        watermark = reader.stamper.watermark(),
                        "input idle: not holding progress back"
                    );
                }
            }
            let silent_known = inputs
                .known()
                .into_iter()
                .filter(|i| !readers.contains_key(i) && !finished.contains_key(i));
            let waiting_for_first = silent_known.clone().count() > 0 && !is_idle(started);
            let busy = if waiting_for_first {
                Some(floor)
            } else {
                readers
                    .values()
                    .filter(|r| !is_idle(r.last_seen))
                    .map(|r| r.stamper.open())
                    .min()
            };
            // Only wanted when no input of this worker is busy, or when it is live.
            let highest = || readers.values().map(|r| r.stamper.open()).max();
            // With no busy input of its own, a worker follows the job's (see `crate::idle`).
            let open = busy.or_else(|| match idle.as_ref() {
                Some(idle) => idle.peers.follow(highest()),
                None => highest(),
            });
            if let Some(open) = open.filter(|&o| o > floor) {
                c.downgrade(&open);
                inputs.progressed(open);
                tracing::trace!(worker, frontier = open, "source progress");
            }
            if let Some(idle) = idle.as_mut() {
                let at = *c.time();
                idle.peers.tell(Note {
                    busy: busy.map(|b| b.max(at)),
                    highest: highest().map(|h| h.max(at)),
                });
            }
            if pending {
                activator.activate_after(Duration::from_millis(1));
            } else {
                activator.activate();
            }
        }
    })
}

/// The reader of `input`, which has just offered a line.
///
/// A new reader's silence counts from the source's start, as an input's that has sent nothing
/// does (`waiting_for_first`): a first line that is no event then holds progress no longer than
/// silence would. (Counted from that line, a partition silent for an hour held the job for
/// `idle_ms` when its first message was bad.)
fn reader_of<'a>(
    readers: &'a mut FoldMap<u32, Reader>,
    input: u32,
    config: &Config,
    started: Instant,
) -> &'a mut Reader {
    let reader = readers.entry(input).or_insert_with(|| Reader {
        stamper: Stamper::new(config),
        seen: HashSet::default(),
        names: FoldMap::default(),
        last_seen: started,
        read: false,
        idle: false,
        unreported: 0,
    });
    reader
}

/// Adds what the readers read since the last report to [`Stats::inputs`], with their watermarks:
/// one lock per activation, not per line.
fn report_inputs(readers: &mut FoldMap<u32, Reader>, stats: &Stats) {
    if readers.values().all(|r| r.unreported == 0) {
        return;
    }
    let Ok(mut inputs) = stats.inputs.lock() else {
        return;
    };
    for (&id, reader) in readers.iter_mut().filter(|(_, r)| r.unreported > 0) {
        let progress = inputs.entry(id).or_default();
        progress.read += std::mem::take(&mut reader.unreported);
        progress.watermark = reader.stamper.watermark();
    }
}

/// Reads in-order line inputs (files, test cases): [`source`] over [`LineInputs`], never idle.
pub fn lines<'s>(
    scope: Scope<'s, u64>,
    inputs: Vec<LineInput>,
    config: Arc<Config>,
    stats: Arc<Stats>,
) -> StreamVec<'s, u64, (SourceRecord, u64)> {
    source(scope, LineInputs::new(inputs), None, config, stats)
}

/// The run of lines of one input stamped at one time, not yet told to the inputs
/// ([`Inputs::stamped`]): input, last offset, time, lines.
#[derive(Default)]
struct StampedRun(Option<(u32, u64, u64, usize)>);

impl StampedRun {
    /// Notes that `input`'s line at `offset` was stamped with `time`: it extends the run, or
    /// the run so far is told and this line starts the next.
    fn note(&mut self, input: u32, offset: u64, time: u64, inputs: &mut impl Inputs) {
        match &mut self.0 {
            Some((i, last, t, lines)) if *i == input && *t == time => {
                *last = offset;
                *lines += 1;
            }
            _ => {
                self.tell(inputs);
                self.0 = Some((input, offset, time, 1));
            }
        }
    }

    /// Tells the inputs of the run so far, if any, and ends it.
    fn tell(&mut self, inputs: &mut impl Inputs) {
        if let Some((input, last, time, lines)) = self.0.take() {
            inputs.stamped(input, last, time, lines);
        }
    }
}

/// What one source activation read, by timestamp. The vectors are kept for the next activations
/// (a few of them: a sparse input's activation spans up to [`MAX_TIMES_PER_ACTIVATION`]
/// timestamps): grown afresh in every activation, they copied their records at every doubling.
/// At the end of the activation the records leave in timestamp order, each worker's as one
/// container ([`Batch::drain`]), sized from what that worker got the activation before.
struct Batch {
    times: BTreeMap<u64, Vec<SourceRecord>>,
    spare: Vec<Vec<SourceRecord>>,
    /// How many records each worker got in the last activation that sent it any.
    last: Vec<usize>,
}

impl Batch {
    /// Emptied vectors kept at most.
    const SPARE: usize = 4;

    fn new(peers: usize) -> Batch {
        Batch {
            times: BTreeMap::new(),
            spare: Vec::new(),
            last: vec![0; peers],
        }
    }

    fn push(&mut self, time: u64, record: SourceRecord) {
        // Lines come in runs of one timestamp, mostly the latest: look there first.
        if let Some(mut last) = self.times.last_entry().filter(|e| *e.key() == time) {
            last.get_mut().push(record);
            return;
        }
        let spare = &mut self.spare;
        let records = self
            .times
            .entry(time)
            .or_insert_with(|| spare.pop().unwrap_or_default());
        records.push(record);
    }

    /// Hands each worker's records ([`SourceRecord::worker`]), with their timestamps and in
    /// timestamp order, to `give` as one container, and empties the batch.
    fn drain(&mut self, mut give: impl FnMut(&mut Vec<(SourceRecord, u64)>)) {
        let peers = self.last.len() as u64;
        let total: usize = self.times.values().map(Vec::len).sum();
        let mut to: Vec<Vec<(SourceRecord, u64)>> = (self.last.iter())
            .map(|&n| Vec::with_capacity(n.min(total)))
            .collect();
        while let Some((time, mut records)) = self.times.pop_first() {
            for record in records.drain(..) {
                to[record.worker(peers)].push((record, time));
            }
            if self.spare.len() < Batch::SPARE {
                self.spare.push(records);
            }
        }
        for (records, last) in to.iter_mut().zip(&mut self.last) {
            if !records.is_empty() {
                *last = records.len();
                give(records);
            }
        }
    }
}

/// What one source activation read, added to the shared [`Stats`] once at its end (each add is
/// an atomic, in this worker's slot).
#[derive(Default)]
struct Counts {
    read: u64,
    dead_lettered: u64,
    late: u64,
}

impl Counts {
    fn add_to(&self, stats: &Stats, worker: usize) {
        Stats::add(&stats.read, worker, self.read);
        Stats::add(&stats.dead_lettered, worker, self.dead_lettered);
        Stats::add(&stats.late, worker, self.late);
    }
}

/// Parses and stamps one line into `batch` (keyed by timestamp, never below `floor`); returns
/// the timestamp it went to.
fn read_line(
    reader: &mut Reader,
    line: Result<String, Unreadable>,
    pos: Position,
    counts: &mut Counts,
    ceiling: u64,
    floor: u64,
    batch: &mut Batch,
) -> u64 {
    let (parse, payload) = match line {
        Ok(line) => {
            let unseen = |p: &Parsed<'_>| (!reader.seen.contains(&p.event.sym)).then(|| p.name());
            (parse_line(&line, unseen), line.into_bytes())
        }
        Err((reason, payload)) => (Parse::Bad(reason), payload),
    };
    stamp(
        reader,
        parse,
        || payload,
        pos,
        counts,
        ceiling,
        floor,
        batch,
    )
}

/// [`read_line`] for a line parsed ahead: the names it carries are the input's latest for its
/// symbol id, kept until a line brings others.
fn read_parsed(
    reader: &mut Reader,
    line: AheadLine,
    pos: Position,
    counts: &mut Counts,
    ceiling: u64,
    floor: u64,
    batch: &mut Batch,
) -> u64 {
    let (text, mut parse) = line.into_parts();
    if let Parse::Event(event, name) = &mut parse {
        if let Some(sent) = name.take() {
            reader.names.insert(event.sym, sent);
        }
        if !reader.seen.contains(&event.sym) {
            *name = reader.names.get(&event.sym).cloned();
        }
    }
    stamp(
        reader,
        parse,
        || text.owned(),
        pos,
        counts,
        ceiling,
        floor,
        batch,
    )
}

/// A dead letter at the input's earliest open timestamp.
fn dead(
    reader: &Reader,
    reason: String,
    payload: Vec<u8>,
    pos: Position,
    counts: &mut Counts,
    floor: u64,
    batch: &mut Batch,
) -> u64 {
    let open = reader.stamper.open().max(floor);
    counts.dead_lettered += 1;
    let record = SourceRecord::Dead(DeadLetter {
        reason,
        payload,
        pos,
    });
    batch.push(open, record);
    open
}

/// Stamps what a line gave into `batch`: an event with its symbol's `name` when the input has
/// not sent it yet, or a dead letter; `payload` is the line, for a dead letter. A blank line is
/// neither counted nor stamped. An event whose `ts` is above `ceiling` (`--max-ahead-ms` after
/// the wall clock; `u64::MAX` without it) is a dead letter, and does not move the watermark.
#[allow(clippy::too_many_arguments)]
fn stamp(
    reader: &mut Reader,
    parse: Parse,
    payload: impl FnOnce() -> Vec<u8>,
    pos: Position,
    counts: &mut Counts,
    ceiling: u64,
    floor: u64,
    batch: &mut Batch,
) -> u64 {
    let (event, name) = match parse {
        Parse::Blank => return reader.stamper.open().max(floor),
        Parse::Bad(reason) => {
            counts.read += 1;
            reader.unreported += 1;
            return dead(reader, reason, payload(), pos, counts, floor, batch);
        }
        Parse::Event(event, name) => (event, name),
    };
    counts.read += 1;
    reader.unreported += 1;
    if event.ts > ceiling {
        return dead(reader, AHEAD.into(), payload(), pos, counts, floor, batch);
    }
    match reader
        .stamper
        .stamp(event.sym, event.ts, event.is_book(), floor)
    {
        Stamp::TooLate => dead(
            reader,
            "too_late".to_string(),
            payload(),
            pos,
            counts,
            floor,
            batch,
        ),
        Stamp::At { time, late } => {
            // Only an event that applies is activity: a `too_late` trade is a dead letter too.
            reader.read = true;
            if late {
                counts.late += 1;
            }
            // Names travel at the floor, which no later event of this input can precede.
            if let Some(name) = name {
                reader.seen.insert(event.sym);
                batch.push(floor, SourceRecord::Name(event.sym, name));
            }
            batch.push(time, SourceRecord::Event(Stamped { pos, event }));
            time
        }
    }
}

/// The dead-letter reason of an event too far ahead of the clock.
const AHEAD: &str = "ts ahead of the clock (--max-ahead-ms)";

/// The highest `ts` read now: `max_ahead_ms` after the wall clock (read once per activation),
/// or any without it.
fn ceiling(max_ahead_ms: Option<u64>) -> u64 {
    max_ahead_ms.map_or(u64::MAX, |ahead| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        now.saturating_add(ahead)
    })
}

/// How much of the `gap` since the source's previous activation it did not watch its inputs:
/// all of it while reading is paused on purpose; otherwise what is beyond a quarter of
/// `--idle-ms`. Activations come every millisecond while inputs are silent, so a longer gap is the
/// worker not running: the process stopped (SIGSTOP, a paused VM or container), swapped out, or
/// a step that long. Messages kept arriving meanwhile, and at the first activation after it the
/// consumer may not have fetched them yet: counted, the gap made every input idle at once and
/// moved progress to the highest watermark, and a slower partition's events became late.
fn unwatched(gap: Duration, paused: bool, idle_after: Duration) -> Duration {
    if paused {
        gap
    } else {
        gap.saturating_sub(idle_after / 4)
    }
}

/// When a silence that began `since` began, not counting `paused` of it (time the source did not
/// watch its inputs, [`unwatched`], up to `now`): moved on by that much, never past `now`.
fn not_counting(since: Instant, paused: Duration, now: Instant) -> Instant {
    (since + paused).min(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new input's silence counts from the source's start, whatever its first line: a first
    /// line that is no event (or a `too_late` trade) does not mark it read, so an input silent
    /// since long before is idle at once, not `idle_ms` after that line. Only an event that
    /// applies marks it read.
    #[test]
    fn only_an_applied_event_is_activity_and_silence_counts_from_the_start() {
        let config = Config {
            candle_retention: 1,
            intervals: vec!["1s".parse().unwrap()],
            lateness_ms: 0,
            ..Config::default()
        };
        let started = Instant::now() - Duration::from_secs(3600);
        let mut readers = FoldMap::default();
        let (mut counts, mut batch) = (Counts::default(), Batch::new(1));
        let mut read = |line: &str| {
            let reader = reader_of(&mut readers, 7, &config, started);
            let line = Ok(line.to_string());
            read_line(reader, line, (7, 0), &mut counts, u64::MAX, 0, &mut batch);
            let reader = &readers[&7];
            (reader.last_seen == started, reader.read)
        };
        assert_eq!(read("not json"), (true, false));
        // A blank line is neither activity nor read.
        assert_eq!(read("  "), (true, false));
        let trade = |ts: u64, id: u32| {
            format!(
                r#"{{"type":"trade","exchange":"x","symbol":"S","ts":{ts},"id":"{id}","price":"1","qty":"1","side":"buy"}}"#
            )
        };
        assert_eq!(read(&trade(5000, 1)), (true, true));
        readers.get_mut(&7).unwrap().read = false;
        // 1000 ms below the highest ts with a 1 s retention span, and late: too late.
        let mut read = |line: &str| {
            let reader = reader_of(&mut readers, 7, &config, started);
            read_line(
                reader,
                Ok(line.to_string()),
                (7, 1),
                &mut counts,
                u64::MAX,
                0,
                &mut batch,
            );
            readers[&7].read
        };
        assert!(!read(&trade(4000, 2)));
        assert!(read(&trade(4500, 3)));
        assert_eq!(counts.dead_lettered, 2);
        // Lines read as the input's metric counts them: not the blank one.
        assert_eq!((counts.read, readers[&7].unreported), (4, 4));
    }

    /// Time paused by backpressure is left out of a silence, and time before and after it
    /// counts: 3 s silent, 2 s paused, 2 s silent again is 5 s of silence, idle at `--idle-ms`
    /// 5000. Reset at the pause, it was 2 s, and a partition that never sent anything held
    /// progress back for 5 s after every pause.
    #[test]
    fn a_pause_is_left_out_of_a_silence() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut since = t0;
        // Activations every 100 ms while paused, from 3 s to 5 s.
        for step in 1..=20 {
            let now = t0 + s(3) + Duration::from_millis(100 * step);
            since = not_counting(since, Duration::from_millis(100), now);
        }
        assert_eq!(since, t0 + s(2));
        let now = t0 + s(7);
        assert_eq!(now.duration_since(since), s(5));
        // A silence that began during the pause does not begin in the future.
        assert_eq!(not_counting(now, s(2), now), now);
    }

    /// A gap between activations counts as silence up to a quarter of `--idle-ms` (a stalled
    /// process finds no input idle when it resumes), all of it while reading is paused, and
    /// in full up to that quarter (a busy worker's long steps still let a silent input idle).
    #[test]
    fn a_stall_counts_as_a_quarter_of_the_idle_time_at_most() {
        let ms = Duration::from_millis;
        let idle = ms(2_000);
        assert_eq!(unwatched(ms(1), false, idle), Duration::ZERO);
        assert_eq!(unwatched(ms(500), false, idle), Duration::ZERO);
        assert_eq!(unwatched(ms(501), false, idle), ms(1));
        assert_eq!(unwatched(ms(7_000), false, idle), ms(6_500));
        assert_eq!(unwatched(ms(1), true, idle), ms(1));
        assert_eq!(unwatched(ms(7_000), true, idle), ms(7_000));
    }

    /// A record's worker is its route modulo the number of workers, for every count (the mask
    /// taken for powers of two included), as timely's exchange picks it.
    #[test]
    fn a_record_goes_to_its_route_modulo_the_workers() {
        let mut route: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..1000 {
            route = route
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let record = SourceRecord::End { last: 0, to: route };
            for peers in 1..=9 {
                assert_eq!(
                    record.worker(peers),
                    (route % peers) as usize,
                    "{route} {peers}"
                );
            }
        }
    }

    /// Inputs that only record what they are told of stamped lines.
    #[derive(Default)]
    struct Told(Vec<(u32, u64, u64, usize)>);

    impl Inputs for Told {
        fn next(&mut self) -> Next {
            Next::Pending
        }
        fn known(&self) -> Vec<u32> {
            Vec::new()
        }
        fn stamped(&mut self, input: u32, offset: u64, time: u64, lines: usize) {
            self.0.push((input, offset, time, lines));
        }
    }

    /// Lines are told in runs of one input and one time, each with its last offset and its
    /// count, in order; the last run when told to.
    #[test]
    fn stamped_lines_are_told_in_runs() {
        // (input, offset, time) per line, as the source stamps them.
        let lines = [
            (0, 0, 100),
            (0, 1, 100),
            (0, 2, 200),
            (1, 0, 200),
            (1, 1, 200),
            (0, 3, 200),
            (0, 4, 100),
        ];
        let (mut run, mut told) = (StampedRun::default(), Told::default());
        for (input, offset, time) in lines {
            run.note(input, offset, time, &mut told);
        }
        assert_eq!(told.0.len(), 4, "the last run is not told yet");
        run.tell(&mut told);
        run.tell(&mut told);
        let expected = [
            (0, 1, 100, 2),
            (0, 2, 200, 1),
            (1, 1, 200, 2),
            (0, 3, 200, 1),
            (0, 4, 100, 1),
        ];
        assert_eq!(told.0, expected);
    }
}
