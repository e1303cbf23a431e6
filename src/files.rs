//! The file source: NDJSON event files (plain or gzip) as line inputs.
//!
//! Input: the paths `replay` was given, each an input of its own (CONTRACT 2: a file behaves
//! like a partition). Output: for each, a [`LineInput`] of parsed batches, which a thread of its
//! own ([`open`]) opens, reads in chunks of whole lines and parses ahead of the worker, at a
//! lower priority (`lower_priority`) and a bounded depth ([`ahead_per_file`]).
//!
//! Invariants:
//! - every line is accounted for: an event, or one dead letter (not UTF-8, too long, a read
//!   error with the part read before it); blank lines (JSON whitespace only) are skipped, and a
//!   byte order mark at a file's start is dropped;
//! - a line longer than `MAX_LINE` (16 MiB) is one `line too long` dead letter keeping its
//!   first MiB, however it is read, and reading goes on after it;
//! - a file that cannot be opened or read once the job runs never stops it: it is a dead letter
//!   (one missing or a folder is refused before the job starts, exit 2);
//! - a gzip stream that breaks gives every line decoded before the break, then one dead letter
//!   (`GzFile`; README, "A gzip file whose stream breaks").

use std::fs::File;
use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;
use std::sync::mpsc::TryRecvError;

use tampines_dataflows::ahead::{self, Ahead, ParsedBatch, ReadAhead};
use tampines_dataflows::source::{LineInput, Unreadable};

/// Whether `path` is a regular file (not a pipe, a device or missing): its lines never wait on
/// a writer, and it can be read twice.
pub fn is_regular(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// Bytes a reader thread reads at once when its worker reads several files: a chunk of whole
/// lines, parsed into one batch.
const CHUNK: usize = 128 << 10;
/// Bytes a reader thread reads at once when it reads its worker's only file: 16 chunks in one.
/// The worker wakes its reader each time it takes a batch from a full queue; the kernel then
/// runs the reader on the worker's own core, and with 128 KiB batches the two took turns there
/// every few hundred microseconds (always "cache hot", so never moved), while at `-w 2` the
/// other worker, waiting for this one's events, idled on the other core: 12% of both cores'
/// time. With 2 MiB batches the reader runs in longer, rarer stretches, which the kernel
/// spreads (idle 296 -> 160 ms, context switches 1,546 -> 772; live file, `-w 2`: 3-7% faster in
/// each of 7 rounds of alternating runs). The design note `20261204_read_ahead_chunks.md` has the
/// rest.
const ONE_FILE_CHUNK: usize = 2 << 20;
/// Batches a worker's only file may be read ahead: 8 MiB of text.
const ONE_FILE_BATCHES: usize = 4;
/// Batches the reader threads of a worker's several files may be ahead of it, together: a file gets
/// its share ([`ahead_per_file`]), but never fewer than [`MIN_AHEAD_BATCHES`], so with more than 8
/// files per worker the total is 4 batches a file (100 files: 400 x 128 KiB, 50 MiB). A reader
/// thread gets a core only now and then when the workers keep both busy; a deeper queue lets them
/// go on meanwhile (the design note `20261204_read_ahead_depth_and_raw_resolution.md`). Shared, so
/// that many files do not hold many times the memory (a worker reads its files in turn, a streak of
/// lines from each, so each needs less ahead). Larger chunks for several files gained nothing (8
/// files, `-w 2`: 0.96 s either way) and cost memory (+36 MiB with 256 KiB).
const AHEAD_BATCHES: usize = 32;
/// Batches any file may be ahead, however many a worker reads.
const MIN_AHEAD_BATCHES: usize = 4;

/// How far a file is read ahead of its worker: batches of `chunk` bytes, `batches` of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AheadShare {
    /// Bytes read at once (a longer line makes a longer batch).
    pub chunk: usize,
    /// Batches parsed and waiting, at most.
    pub batches: usize,
}

/// How far each of a worker's `files` may be read ahead.
pub fn ahead_per_file(files: usize) -> AheadShare {
    if files <= 1 {
        return AheadShare {
            chunk: ONE_FILE_CHUNK,
            batches: ONE_FILE_BATCHES,
        };
    }
    AheadShare {
        chunk: CHUNK,
        batches: (AHEAD_BATCHES / files).max(MIN_AHEAD_BATCHES),
    }
}

/// Opens `path` as input number `id`, read and parsed ahead by a thread of its own (the worker
/// that owns the input then only stamps and routes its events: with one file, parsing was a
/// seventh of all the work and made its worker the slowest). A file that cannot be opened or
/// read becomes one dead letter with the error as its reason (and, read partly, the part of the
/// line read before it as its payload); it never stops the job. The thread reads chunks of
/// `ahead.chunk` bytes, up to `ahead.batches` of them ahead of the worker ([`ahead_per_file`]).
/// The thread opens the file too: opening a named pipe waits for its writer, and a worker
/// waiting there, on its first file, while the one producer of two pipes waited for the second
/// to be opened, never read either. Fails only where the system refuses a thread.
pub fn open(path: &Path, id: u32, ahead: AheadShare) -> std::io::Result<LineInput> {
    let name = path.display().to_string();
    let path = path.to_path_buf();
    let (batches, receiver) = std::sync::mpsc::sync_channel(ahead.batches);
    let thread = std::thread::Builder::new()
        .name(format!("read-{id}"))
        .spawn(move || {
            lower_priority();
            // A worker that has gone (the job stopped) ends the thread.
            let send = |batch: ParsedBatch| batches.send(batch).is_ok();
            match reader(&path, &name) {
                Ok((reader, fill)) => read_ahead(reader, &name, ahead.chunk, fill, send),
                Err(reason) => {
                    send(ReadAhead::unreadable(reason, Vec::new()));
                }
            }
        })?;
    let mut thread = Some(thread);
    let batches = std::iter::from_fn(move || match receiver.try_recv() {
        Ok(batch) => Some(Ahead::Batch(batch)),
        Err(TryRecvError::Empty) => Some(Ahead::NotYet),
        Err(TryRecvError::Disconnected) => {
            // The thread has ended: at the end of the file, or by a bug. A panic there must stop
            // the job as it would have on the worker, not pass for the end of the file.
            if thread.take().is_some_and(|t| t.join().is_err()) {
                panic!("the reader thread of input {id} panicked");
            }
            None
        }
    });
    Ok(LineInput::ahead(id, Box::new(batches)))
}

/// How much lower a file's reader thread runs than the thread that starts it: a nice value
/// added to theirs. With one file at `-w 2` the reader thread and the two workers share two
/// cores, and whenever the reader took a core the worker it displaced (mostly the one reading the
/// file, which the other waits for) fell behind, while cores stood idle 158-186 ms a run. Run
/// lower, the reader gets the cores the workers leave, and it is far enough ahead that it can
/// wait. Live file at `-w 2`: 1.12 -> 1.08 s (8 alternating rounds; by hand, +10 gained as much
/// as +5 and +19 less); 8 files at `-w 2`: 0.90 -> 0.86 s. `-w 1` (the reader has a core of its
/// own), the Flink, long-span and trade-heavy files (where the reader is a small share): the
/// same. A nice of +5 still gives the reader a quarter of a core against one busy thread of the
/// default priority, so a loaded host slows it without stopping it.
const READER_NICENESS: i32 = 5;

/// Lowers the calling thread's priority by [`READER_NICENESS`] (Linux, where a nice value is a
/// thread's and `setpriority(PRIO_PROCESS, 0)` sets the caller's; elsewhere nothing). A failure
/// changes nothing but the speed: it is logged and the thread goes on.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let lowered = getpriority_process(None)
            .and_then(|now| setpriority_process(None, now + READER_NICENESS));
        if let Err(e) = lowered {
            tracing::debug!(error = %e, "the reader thread keeps its priority");
        }
    }
}

/// Reads `reader` in chunks of whole lines (filled, or as they come: [`Chunks`]) and `send`s
/// each parsed, until the end, a read error (its dead letter last) or a refused send.
fn read_ahead(
    reader: impl Read,
    name: &str,
    chunk: usize,
    fill: bool,
    send: impl Fn(ParsedBatch) -> bool,
) {
    let mut ahead = ReadAhead::default();
    for chunk in Chunks::new(reader, name, chunk, fill) {
        let sent = match chunk {
            Ok(lines) => ahead.batches(lines, &send),
            Err((reason, payload)) => send(ReadAhead::unreadable(reason, payload)),
        };
        if !sent {
            return;
        }
    }
}

/// The lines of `path` as text (a file that cannot be opened: one unreadable line; a read error:
/// one unreadable line with the part of the line read before it, then nothing; a line that is
/// not UTF-8: `invalid utf-8` with its bytes; a line too long: its reason, then the lines after
/// it). A byte order mark at the start is dropped.
pub fn lines(path: &Path) -> Box<dyn Iterator<Item = Result<String, Unreadable>>> {
    let name = path.display().to_string();
    let (reader, fill) = match reader(path, &name) {
        Ok(opened) => opened,
        Err(reason) => return Box::new(std::iter::once(Err((reason, Vec::new())))),
    };
    Box::new(
        Chunks::new(reader, &name, CHUNK, fill).flat_map(move |chunk| match chunk {
            Ok(text) => (ahead::lines_of(&text))
                .map(|(start, end)| {
                    let line = &text[start..end];
                    String::from_utf8(line.to_vec())
                        .map_err(|e| ("invalid utf-8".to_string(), e.into_bytes()))
                })
                .collect::<Vec<_>>(),
            Err((reason, payload)) => vec![Err((reason, payload))],
        }),
    )
}

/// A reader's chunks of whole lines, about `size` bytes each (a longer line makes a longer one),
/// each ending with a line feed except the last of the input; after a read error, its reason and
/// the part of a line read before it, and nothing more. A line longer than [`MAX_LINE`] is not
/// kept: it is an unreadable line of its own (its first [`KEPT`] bytes the payload) and reading
/// goes on after it.
///
/// A regular file's chunks are filled (read until `size` bytes or the end). Anything else (a
/// pipe, a terminal, `/dev/stdin`) gives a chunk after every read that ends a line: its lines go
/// on as they come, where filling waited for `size` bytes or the writer's end (a replay of
/// `kcat ... |` published nothing until then).
struct Chunks<R> {
    reader: R,
    name: String,
    /// Bytes read at once.
    size: usize,
    /// Whether reads go on until the chunk is full.
    fill: bool,
    /// The chunk being read: whole lines are cut from its front, a line read in part stays.
    chunk: Vec<u8>,
    /// The bytes at the start of `chunk` already searched for a line feed, in vain.
    searched: usize,
    done: bool,
    /// No line has been handed out yet: a UTF-8 byte order mark before the first is dropped.
    first: bool,
    /// A line longer than this is skipped to its end ([`MAX_LINE`]; smaller in tests).
    max_line: usize,
    /// The line being skipped: its first bytes and its length so far.
    overlong: Option<(Vec<u8>, usize)>,
    /// What the last read gave, in order.
    ready: std::collections::VecDeque<Chunk>,
}

/// A chunk of whole lines, or a line that could not be read: its reason and payload.
type Chunk = Result<Vec<u8>, (String, Vec<u8>)>;

/// A line longer than this (16 MiB) is dead-lettered rather than kept: a
/// few MiB of gzip can unpack to a line of gigabytes, and each byte of a line is held twice
/// while it is read. The longest real events (snapshots of thousands of levels) are well under
/// 1 MiB; a Kafka message is at most 1 MiB by default.
const MAX_LINE: usize = 16 << 20;
/// The first bytes of a line too long to keep that its dead letter carries.
const KEPT: usize = 1 << 20;

impl<R: Read> Chunks<R> {
    fn new(reader: R, name: &str, size: usize, fill: bool) -> Chunks<R> {
        Chunks {
            reader,
            name: name.to_string(),
            size,
            fill,
            chunk: Vec::with_capacity(size),
            searched: 0,
            done: false,
            first: true,
            max_line: MAX_LINE,
            overlong: None,
            ready: Default::default(),
        }
    }

    /// Queues whole `lines`, each line longer than `max_line` as its dead letter, in order. A
    /// chunk longer than that may hold one: a line whose line feed came in the read that made
    /// it too long was kept, so whether a line of up to a read more than the bound was kept
    /// depended on the read sizes (and those on `-w`).
    fn queue_checked(&mut self, lines: Vec<u8>) {
        let (mut kept_from, mut at) = (0, 0);
        while at < lines.len() {
            let feed =
                (lines[at..].iter().position(|&b| b == b'\n')).map_or(lines.len(), |i| at + i);
            let length = feed - at;
            if length > self.max_line {
                if kept_from < at {
                    self.ready.push_back(Ok(lines[kept_from..at].to_vec()));
                }
                let kept = lines[at..at + KEPT.min(length)].to_vec();
                self.ready.push_back(too_long(kept, length, self.max_line));
                kept_from = feed + 1;
            }
            at = feed + 1;
        }
        if kept_from < lines.len() {
            self.ready.push_back(Ok(lines[kept_from..].to_vec()));
        }
    }

    /// Reads once more and queues what that gave: whole lines, a line too long to keep that
    /// ended, a read error.
    fn read_more(&mut self) {
        // A chunk of `size` bytes; a longer line grows it by as much at a time (by doubling
        // its room: a line of any length is read in time linear in it).
        let (chunk, size) = (&mut self.chunk, self.size);
        let want = size
            .checked_sub(chunk.len())
            .filter(|&n| n > 0)
            .unwrap_or(size);
        let read = if self.fill {
            chunk.reserve(want);
            (&mut self.reader).take(want as u64).read_to_end(chunk)
        } else {
            read_once(&mut self.reader, chunk, want.min(PIPE_READ))
        };
        let (end, error) = match read {
            Ok(n) => (n == 0, None),
            Err(e) => (true, Some(format!("read error: {}: {e}", self.name))),
        };
        self.done = end;
        if let Some((_, length)) = &mut self.overlong {
            // The rest of a line too long to keep, skipped to its line feed or the end.
            match chunk.iter().position(|&b| b == b'\n') {
                Some(feed) => {
                    *length += feed;
                    chunk.drain(..=feed);
                }
                None => {
                    *length += chunk.len();
                    chunk.clear();
                    if !end {
                        return;
                    }
                }
            }
            let (kept, length) = self.overlong.take().expect("a line being skipped");
            self.ready.push_back(too_long(kept, length, self.max_line));
            self.searched = 0;
        }
        // Whole lines go now; the rest (a line read in part) starts the next chunk. At the end
        // of the input the rest is its last line; after an error, the error's payload.
        let cut = match chunk[self.searched..].iter().rposition(|&b| b == b'\n') {
            _ if end && error.is_none() => chunk.len(),
            Some(feed) => self.searched + feed + 1,
            None => 0,
        };
        if cut == 0 && !end {
            if chunk.len() > self.max_line {
                // Skipped from here on, but for its first bytes. A mark at the start of the
                // file is dropped, as from a line kept; at the start of the next line it is text.
                unmark(&mut self.first, chunk);
                let kept = chunk[..KEPT.min(chunk.len())].to_vec();
                self.overlong = Some((kept, chunk.len()));
                chunk.clear();
                self.searched = 0;
            } else {
                // No line has ended yet: read on into the same chunk.
                self.searched = chunk.len();
            }
            return;
        }
        self.searched = 0;
        let mut rest = Vec::with_capacity(size.max(chunk.len() - cut));
        rest.extend_from_slice(&chunk[cut..]);
        chunk.truncate(cut);
        let mut lines = std::mem::replace(chunk, rest);
        unmark(&mut self.first, &mut lines);
        if lines.len() > self.max_line {
            self.queue_checked(lines);
        } else if !lines.is_empty() {
            self.ready.push_back(Ok(lines));
        }
        if let Some(reason) = error {
            // After the lines before it, the error, with the line read in part as its payload.
            let payload = std::mem::take(&mut self.chunk);
            self.ready.push_back(Err((reason, payload)));
        }
    }
}

/// The dead letter of a line of `length` bytes, longer than `max_line`: its first bytes `kept`.
fn too_long(kept: Vec<u8>, length: usize, max_line: usize) -> Chunk {
    Err((
        format!("line too long: {length} bytes (at most {max_line})"),
        kept,
    ))
}

/// Drops from `text` the byte order mark that Windows tools write at the start of a text file,
/// if it is the input's `first` (it would dead-letter the first line, often the snapshot that
/// every later update of its book needs).
fn unmark(first: &mut bool, text: &mut Vec<u8>) {
    if std::mem::take(first) && text.starts_with(b"\xef\xbb\xbf") {
        text.drain(..3);
    }
}

impl<R: Read> Iterator for Chunks<R> {
    type Item = Chunk;

    fn next(&mut self) -> Option<Chunk> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            self.read_more();
        }
    }
}

/// Bytes asked of a pipe at once: a pipe's buffer holds 64 KiB.
const PIPE_READ: usize = 64 << 10;

/// Appends what one read of up to `want` bytes gives (retried if interrupted).
fn read_once(reader: &mut impl Read, chunk: &mut Vec<u8>, want: usize) -> std::io::Result<usize> {
    let len = chunk.len();
    chunk.resize(len + want, 0);
    let read = loop {
        match reader.read(&mut chunk[len..]) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            read => break read,
        }
    };
    chunk.truncate(len + read.as_ref().map_or(0, |n| *n));
    read
}

/// A reader of the file, gunzipping a `.gz` one, and whether its chunks are to be filled (a
/// regular file's: [`Chunks`]).
fn reader(path: &Path, name: &str) -> Result<(Box<dyn Read + Send>, bool), String> {
    File::open(path)
        .map_err(|e| format!("read error: {name}: {e}"))
        .map(|f| {
            let fill = f.metadata().is_ok_and(|m| m.is_file());
            let gz = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
            let reader = match (gz, fill) {
                (true, true) => Box::new(GzFile::new(f)) as Box<dyn Read + Send>,
                (true, false) => Box::new(MultiGzDecoder::new(f)),
                (false, _) => Box::new(f),
            };
            (reader, fill)
        })
}

/// A gzip file read to where its stream breaks, every byte decoded before the break given.
///
/// flate2 drops what a read decoded before it met a broken block, and how much that is depends
/// on the buffer the read was given (2 MiB or 128 KiB here, by the worker's number of files):
/// thousands of intact lines vanished, neither read nor dead-lettered, and the results changed
/// with `-w`. So at the first error the file (the same open file, rewound: its path may name
/// another by then) is decoded again: at full speed up to a MiB of output before where the
/// error came (a read stops when its buffer is full, and the decoder runs at most a block's
/// worth past what it returns, so it cannot reach a break that far ahead), then one compressed
/// byte a read, so that the error comes right after the bytes before the break, less what the
/// compressed byte holding the break decodes to (a KiB at most). Past where the first error
/// came, by more than any read's buffer, it runs at full speed again (the file grew meanwhile).
/// A pipe cannot be read twice; a `.gz` one keeps flate2's behaviour.
struct GzFile {
    decoder: flate2::bufread::MultiGzDecoder<Paced>,
    /// The same open file, to decode again.
    spare: Option<File>,
    /// Bytes given so far.
    given: u64,
    /// Once decoded again: a compressed byte a read until this many bytes are given.
    slow_until: Option<u64>,
}

/// How far past where its first error came a file decoded again is read a byte at a time:
/// more than any read asks for (a chunk grows by its size while a line is longer than it, up
/// to [`MAX_LINE`] and a read more).
const SLOW_FOR: u64 = 2 * MAX_LINE as u64;

/// A file's bytes, at most `step` of them offered at a time.
struct Paced {
    file: std::io::BufReader<File>,
    step: usize,
}

impl std::io::BufRead for Paced {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        let step = self.step;
        let buf = self.file.fill_buf()?;
        Ok(&buf[..buf.len().min(step)])
    }

    fn consume(&mut self, n: usize) {
        self.file.consume(n)
    }
}

// `BufRead` needs it; flate2 reads through `BufRead` only.
impl Read for Paced {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = {
            let available = std::io::BufRead::fill_buf(self)?;
            let n = available.len().min(buf.len());
            buf[..n].copy_from_slice(&available[..n]);
            n
        };
        std::io::BufRead::consume(self, n);
        Ok(n)
    }
}

impl GzFile {
    fn new(file: File) -> GzFile {
        GzFile {
            spare: file.try_clone().ok(),
            decoder: GzFile::decoder(file),
            given: 0,
            slow_until: None,
        }
    }

    fn decoder(file: File) -> flate2::bufread::MultiGzDecoder<Paced> {
        flate2::bufread::MultiGzDecoder::new(Paced {
            file: std::io::BufReader::with_capacity(32 << 10, file),
            step: usize::MAX,
        })
    }

    /// Decodes the file again from its start up to where it was, the last MiB a compressed
    /// byte at a time. An error when it cannot (no spare handle, a file that changed).
    fn again(&mut self) -> std::io::Result<()> {
        use std::io::Seek;
        let mut file = self
            .spare
            .take()
            .ok_or_else(|| std::io::Error::other("no second handle"))?;
        file.rewind()?;
        self.decoder = GzFile::decoder(file);
        self.slow_until = Some(self.given + SLOW_FOR);
        let fast = self.given.saturating_sub(1 << 20);
        let skip = |decoder: &mut flate2::bufread::MultiGzDecoder<Paced>, n: u64| {
            let skipped = std::io::copy(&mut decoder.take(n), &mut std::io::sink())?;
            match skipped == n {
                true => Ok(()),
                false => Err(std::io::Error::other("the file changed while it was read")),
            }
        };
        skip(&mut self.decoder, fast)?;
        self.decoder.get_mut().step = 1;
        skip(&mut self.decoder, self.given - fast)
    }
}

impl Read for GzFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.decoder.read(buf) {
            Ok(n) => {
                self.given += n as u64;
                if self.slow_until.is_some_and(|until| self.given > until) {
                    self.decoder.get_mut().step = usize::MAX;
                }
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(e),
            Err(e) if self.slow_until.is_none() => match self.again() {
                Ok(()) => self.read(buf),
                // Where it was cannot be reached again: the first error stands.
                Err(_) => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread that lowers its priority runs `READER_NICENESS` lower than the thread that
    /// started it, which keeps its own: the nice value is the thread's, not the process's.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_reader_thread_lowers_its_own_priority_only() {
        use rustix::process::getpriority_process;
        let before = getpriority_process(None).expect("this thread's priority");
        let lowered = std::thread::spawn(|| {
            lower_priority();
            getpriority_process(None).expect("the thread's priority")
        })
        .join()
        .expect("the thread ends");
        assert_eq!(lowered, (before + READER_NICENESS).min(19));
        assert_eq!(
            getpriority_process(None).expect("this thread's priority"),
            before
        );
    }

    /// `.gz` in any case is gunzipped (`.GZ` was read as raw bytes, every line invalid UTF-8).
    #[test]
    fn gz_in_any_case_is_gunzipped() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("tampines_gz_case_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["a.ndjson.gz", "b.ndjson.GZ", "c.ndjson.Gz"] {
            let path = dir.join(name);
            let mut gz = flate2::write::GzEncoder::new(
                File::create(&path).unwrap(),
                flate2::Compression::fast(),
            );
            gz.write_all(b"line one\n").unwrap();
            gz.finish().unwrap();
            let mut text = String::new();
            reader(&path, name)
                .unwrap()
                .0
                .read_to_string(&mut text)
                .unwrap();
            assert_eq!(text, "line one\n", "{name}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A gzip file whose stream breaks gives every line decoded before the break, then the
    /// error, whatever the size of its chunks (by the worker's number of files). flate2 dropped
    /// what the read that met the break had decoded: here 351 lines at 2 MiB, 61 at 128 KiB.
    #[test]
    fn a_broken_gzip_gives_every_line_before_the_break() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("tampines_gz_broken_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("broken.ndjson.gz");
        let lines: Vec<u8> = (0..5000)
            .flat_map(|i| {
                format!("{{\"line\":{i},\"pad\":\"{}\"}}\n", "p".repeat(i % 90)).into_bytes()
            })
            .collect();
        let mut deflate =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        deflate.write_all(&lines).unwrap();
        deflate.flush().unwrap(); // to a byte's edge
        let mut bytes = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]; // a gzip header
        bytes.extend(deflate.get_ref());
        // A last block of the reserved type 3: broken.
        bytes.extend([0x07, 0, 0, 0, 0]);
        // Another gzip file, moved to the path once the broken one is open (a rotation): the
        // second decoding reads the file that was opened, not the one the path names.
        let other = dir.join("other.ndjson.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&b"{\"other\":1}\n".repeat(50_000)).unwrap();
        let other_bytes = gz.finish().unwrap();
        for size in [CHUNK, ONE_FILE_CHUNK] {
            std::fs::write(&path, &bytes).unwrap();
            let (reader, fill) = reader(&path, "broken").unwrap();
            assert!(fill);
            std::fs::write(&other, &other_bytes).unwrap();
            std::fs::rename(&other, &path).unwrap();
            let mut read = Vec::new();
            let mut errors = Vec::new();
            for chunk in Chunks::new(reader, "broken", size, fill) {
                match chunk {
                    Ok(text) => read.extend(text),
                    Err(error) => errors.push(error),
                }
            }
            assert!(
                read == lines,
                "{size}: {} of {} bytes",
                read.len(),
                lines.len()
            );
            assert_eq!(
                errors,
                [(
                    "read error: broken: corrupt deflate stream".to_string(),
                    vec![]
                )],
                "{size}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_share_a_workers_read_ahead() {
        let one = AheadShare {
            chunk: 2 << 20,
            batches: 4,
        };
        assert_eq!([0, 1].map(ahead_per_file), [one, one]);
        let several = [2, 4, 7, 8, 9, 100].map(ahead_per_file);
        assert!(several.iter().all(|a| a.chunk == 128 << 10));
        assert_eq!(several.map(|a| a.batches), [16, 8, 4, 4, 4, 4]);
    }

    /// A byte order mark at the start of a file whose first line is too long is dropped, as
    /// from a line kept: it counted in the line's length and began its payload.
    #[test]
    fn a_mark_before_a_line_too_long_is_dropped() {
        let text = format!("\u{feff}{}\nb\n", "x".repeat(1_000));
        for piece in [1, 7, 5_000] {
            let pieces = Pieces {
                data: text.clone().into_bytes(),
                at: 0,
                piece,
                fail_at: None,
            };
            let mut chunks = Chunks::new(pieces, "f", 64, true);
            chunks.max_line = 100;
            let got: Vec<Chunk> = chunks.collect();
            let Err((reason, payload)) = &got[0] else {
                panic!("{piece}: {got:?}");
            };
            assert_eq!(reason, "line too long: 1000 bytes (at most 100)", "{piece}");
            assert!(payload.iter().all(|&b| b == b'x'), "{piece}");
            assert_eq!(got[1..], [Ok(b"b\n".to_vec())], "{piece}");
        }
    }

    /// Reads of `piece` bytes, into chunks filled or not.
    const READS: [(usize, bool); 5] = [
        (1, false),
        (7, true),
        (64, false),
        (333, true),
        (5_000, true),
    ];

    /// The lines of `text` (failing at `fail_at`) read in chunks of `size`, `piece` bytes a
    /// read, with lines of at most 100 bytes: each line's text, or a dead letter's reason and
    /// payload length.
    fn bounded_lines(
        text: &str,
        fail_at: Option<usize>,
        size: usize,
        piece: usize,
        fill: bool,
    ) -> Vec<Result<String, (String, usize)>> {
        let pieces = Pieces {
            data: text.as_bytes().to_vec(),
            at: 0,
            piece,
            fail_at,
        };
        let mut chunks = Chunks::new(pieces, "f", size, fill);
        chunks.max_line = 100;
        let mut got = Vec::new();
        for chunk in chunks {
            match chunk {
                Ok(lines) => got.extend(
                    ahead::lines_of(&lines)
                        .map(|(s, e)| Ok(String::from_utf8_lossy(&lines[s..e]).into_owned())),
                ),
                Err((reason, payload)) => got.push(Err((reason, payload.len()))),
            }
        }
        got
    }

    /// The bound is exact however the input is read: a line one byte over it is too long, one
    /// at it is kept (a line whose line feed came in the read that took it past the bound was
    /// kept).
    #[test]
    fn a_line_one_byte_over_the_bound_is_too_long_however_it_is_read() {
        let text = format!("a\n{}\nb\n{}\n", "y".repeat(101), "z".repeat(100));
        for size in [64, 128, 4_096] {
            for (piece, fill) in READS {
                let got = bounded_lines(&text, None, size, piece, fill);
                let too_long = Err(("line too long: 101 bytes (at most 100)".to_string(), 101));
                let expected = [
                    Ok("a".to_string()),
                    too_long,
                    Ok("b".into()),
                    Ok("z".repeat(100)),
                ];
                assert_eq!(got, expected, "size {size} piece {piece} fill {fill}");
            }
        }
    }

    /// A line longer than `max_line` is one unreadable line, its first bytes the payload, and
    /// the lines after it are read as usual: read in pieces of any size, filled or not, at the
    /// start, in the middle, or at the end of the input (with or without its line feed), and
    /// cut by a read error.
    #[test]
    fn a_line_too_long_is_skipped_to_its_end() {
        let long = "x".repeat(1_000);
        for (text, fail_at) in [
            (format!("a\n{long}\nb\nc\n"), None),
            (format!("{long}\nb\n"), None),
            (format!("a\n{long}"), None),
            (format!("a\n{long}\n"), None),
            (format!("a\n{long}\nb\n"), Some(900)),
        ] {
            for (piece, fill) in READS {
                let got = bounded_lines(&text, fail_at, 64, piece, fill);
                // The payload keeps up to `KEPT` bytes of what was read before the line was
                // given up on: more than `max_line`, less than a chunk more.
                let too_long = |got: &Result<String, (String, usize)>| match got {
                    Err((reason, kept)) => {
                        (101..=100 + 64 + piece).contains(kept)
                            && reason.as_str()
                                == if fail_at.is_some() {
                                    "line too long: 898 bytes (at most 100)"
                                } else {
                                    "line too long: 1000 bytes (at most 100)"
                                }
                    }
                    Ok(_) => false,
                };
                let case = format!("{text:.8}.. piece {piece} fill {fill}");
                let ok = |s: &str| Ok(s.to_string());
                let lines: Vec<&str> = text.lines().collect();
                match (lines[0] == "a", fail_at) {
                    (_, Some(_)) => {
                        assert_eq!(got.len(), 3, "{case}: {got:?}");
                        assert_eq!(got[0], ok("a"), "{case}");
                        assert!(too_long(&got[1]), "{case}: {got:?}");
                        assert_eq!(
                            got[2],
                            Err(("read error: f: disk gone".into(), 0)),
                            "{case}"
                        );
                    }
                    (true, None) => {
                        assert_eq!(got[0], ok("a"), "{case}");
                        assert!(too_long(&got[1]), "{case}: {got:?}");
                        let rest: Vec<_> = lines[2..].iter().map(|l| ok(l)).collect();
                        assert_eq!(got[2..], rest, "{case}");
                    }
                    (false, None) => {
                        assert!(too_long(&got[0]), "{case}: {got:?}");
                        assert_eq!(got[1..], [ok("b")], "{case}");
                    }
                }
            }
        }
    }

    /// A reader that hands out `data` at most `piece` bytes per read, and fails at `fail_at`.
    struct Pieces {
        data: Vec<u8>,
        at: usize,
        piece: usize,
        fail_at: Option<usize>,
    }

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let end = self.fail_at.unwrap_or(self.data.len());
            if self.at == end && self.fail_at.is_some() {
                return Err(std::io::Error::other("disk gone"));
            }
            let n = self.piece.min(buf.len()).min(end - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    /// Every line of `pieces`, as read ahead in chunks of `size`: its text and dead-letter
    /// reason.
    fn read_all(pieces: Pieces, size: usize, fill: bool) -> Vec<(String, Option<String>)> {
        let got = std::cell::RefCell::new(Vec::new());
        read_ahead(pieces, "f", size, fill, |batch| {
            let lines = batch.lines().map(|(text, reason)| {
                let text = String::from_utf8_lossy(text).into_owned();
                (text, reason.map(str::to_string))
            });
            got.borrow_mut().extend(lines);
            true
        });
        got.into_inner()
    }

    /// The text of a file of event lines ending in `\n`, `\r\n` or nothing (the last), a blank
    /// line, and a bad line longer than two chunks; and its lines, split independently.
    fn file() -> (Vec<u8>, Vec<String>) {
        let event = |i: usize| {
            format!(
                r#"{{"type":"trade","exchange":"x","symbol":"S{}","ts":{},"id":"{i}","price":"1.5","qty":"2","side":"buy"}}"#,
                i % 7,
                1_700_000_000_000u64 + i as u64
            )
        };
        let mut text = String::new();
        for i in 0..5_000 {
            text.push_str(&event(i));
            text.push_str(if i % 3 == 0 { "\r\n" } else { "\n" });
            if i == 2_500 {
                text.push_str(&format!("{{\"{}\n\n", "x".repeat(2 * CHUNK + 17)));
            }
        }
        text.push_str(&event(5_000));
        let lines = text
            .split('\n')
            .map(|l| l.trim_end_matches('\r').to_string())
            .collect();
        (text.into_bytes(), lines)
    }

    #[test]
    fn chunks_split_into_the_lines_of_the_file_whatever_the_reads() {
        let (data, lines) = file();
        // The size is a parameter of the same code: a small one makes many chunk boundaries and
        // a line longer than two chunks; the one-file size reads this file in one chunk.
        let sizes = [1_000, CHUNK, ONE_FILE_CHUNK];
        for (piece, size, fill) in [1, 7, 4_096, CHUNK + 1, 1 << 22]
            .into_iter()
            .flat_map(|p| sizes.map(|s| (p, s)))
            .flat_map(|(p, s)| [(p, s, true), (p, s, false)])
        {
            let pieces = Pieces {
                data: data.clone(),
                at: 0,
                piece,
                fail_at: None,
            };
            let got = read_all(pieces, size, fill);
            let texts: Vec<&String> = got.iter().map(|(t, _)| t).collect();
            assert_eq!(
                texts,
                lines.iter().collect::<Vec<_>>(),
                "reads of {piece}, chunks of {size}, filled {fill}"
            );
            let bad: Vec<(usize, &str)> = (got.iter().enumerate())
                .filter_map(|(i, (_, r))| r.as_deref().map(|r| (i, r)))
                .collect();
            let expected = tampines_dataflows::event::parse(&lines[2_501]).unwrap_err();
            assert_eq!(bad, vec![(2_501, expected.to_string().as_str())]);
        }
    }

    #[test]
    fn lines_that_meet_a_chunk_boundary_are_read_whole() {
        for size in [1_000, CHUNK] {
            lines_that_meet_a_boundary_of(size);
        }
    }

    /// `lines_that_meet_a_chunk_boundary_are_read_whole` for chunks of `size` bytes.
    fn lines_that_meet_a_boundary_of(size: usize) {
        let line = |len: usize| "y".repeat(len);
        let files = [
            String::new(),
            // Ends exactly at the end of the first chunk, with and without a line feed.
            format!("{}\n", line(size - 1)),
            line(size),
            // A carriage return ends the first chunk, its line feed starts the second.
            format!("a\n{}\r\nb", line(size - 3)),
            // A line feed ends the first chunk, then one more line.
            format!("{}\n{}\n", line(size - 1), line(5)),
        ];
        for file in files {
            let pieces = Pieces {
                data: file.clone().into_bytes(),
                at: 0,
                piece: usize::MAX,
                fail_at: None,
            };
            let got: Vec<String> = (read_all(pieces, size, true).into_iter())
                .map(|(t, _)| t)
                .collect();
            let mut expected: Vec<String> = file
                .split('\n')
                .map(|l| l.trim_end_matches('\r').to_string())
                .collect();
            if file.is_empty() || file.ends_with('\n') {
                expected.pop();
            }
            let lens = |v: &[String]| v.iter().map(String::len).collect::<Vec<_>>();
            assert_eq!(lens(&got), lens(&expected), "chunks of {size}");
            assert_eq!(got, expected, "chunks of {size}");
            if size != CHUNK {
                continue;
            }
            // The lines `produce` sends come from the same chunks.
            let path = std::env::temp_dir().join(format!("tampines-lines-{}", std::process::id()));
            std::fs::write(&path, &file).unwrap();
            let sent: Vec<String> = lines(&path).map(Result::unwrap).collect();
            std::fs::remove_file(&path).unwrap();
            assert_eq!(lens(&sent), lens(&expected));
            assert_eq!(sent, expected);
        }
    }

    #[test]
    fn a_read_error_ends_the_input_with_the_line_read_in_part_as_its_payload() {
        let (data, lines) = file();
        // In the middle of line 4,000 (after the long line and the blank one).
        let line_start: usize = lines[..4_000].iter().map(|l| l.len()).sum::<usize>()
            + lines[..4_000].len()
            + (0..4_000).filter(|i| *i < 2_501 && i % 3 == 0).count()
            + (2_503..4_000).filter(|i| (i - 2) % 3 == 0).count();
        assert!(data[line_start..].starts_with(lines[4_000].as_bytes()));
        let pieces = Pieces {
            data,
            at: 0,
            piece: 1_000,
            fail_at: Some(line_start + 10),
        };
        let got = read_all(pieces, CHUNK, false);
        assert_eq!(got.len(), 4_001);
        let texts: Vec<&String> = got[..4_000].iter().map(|(t, _)| t).collect();
        assert_eq!(texts, lines[..4_000].iter().collect::<Vec<_>>());
        let error = "read error: f: disk gone".to_string();
        assert_eq!(got[4_000], (lines[4_000][..10].to_string(), Some(error)));
    }

    /// A pipe's lines go on as they come: a read that ends a line gives a chunk, with no further
    /// read (which would wait for the writer). A filled chunk reads on.
    #[test]
    fn a_pipes_lines_go_as_they_come() {
        /// Gives its pieces one per read and counts the reads; past them, a read would wait.
        struct Writer(Vec<&'static str>, std::rc::Rc<std::cell::Cell<usize>>);
        impl Read for Writer {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.1.set(self.1.get() + 1);
                if self.0.is_empty() {
                    return Err(std::io::Error::other("it would wait for the writer"));
                }
                let piece = self.0.remove(0).as_bytes();
                buf[..piece.len()].copy_from_slice(piece);
                Ok(piece.len())
            }
        }
        let reads = std::rc::Rc::new(std::cell::Cell::new(0));
        let writer = Writer(vec!["one\n", "tw", "o\nthr"], reads.clone());
        let mut chunks = Chunks::new(writer, "p", CHUNK, false);
        assert_eq!(chunks.next().unwrap().unwrap(), b"one\n");
        assert_eq!(reads.get(), 1);
        assert_eq!(chunks.next().unwrap().unwrap(), b"two\n");
        assert_eq!(reads.get(), 3);
        let writer = Writer(vec!["one\n"], reads.clone());
        let _ = Chunks::new(writer, "f", CHUNK, true).next();
        assert_eq!(
            reads.get(),
            5,
            "a filled chunk reads on until it is full or the end"
        );
    }
}
