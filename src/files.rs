//! The file source: NDJSON event files (plain or gzip) as line inputs.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use std::sync::mpsc::TryRecvError;

use tampines_dataflows::ahead::{Ahead, ReadAhead};
use tampines_dataflows::source::LineInput;

/// Lines per batch a reader thread hands over, and bytes of text.
const AHEAD_LINES: usize = 1024;
const AHEAD_BYTES: usize = 256 << 10;
/// Batches a reader thread may be ahead of the worker.
const AHEAD_BATCHES: usize = 8;

/// Opens `path` as input number `id`, read and parsed ahead by a thread of its own (the worker
/// that owns the input then only stamps and routes its events: with one file, parsing was a
/// seventh of all the work and made its worker the slowest). A file that cannot be opened or
/// read becomes one dead letter with the error as its reason; it never stops the job.
pub fn open(path: &Path, id: u32) -> LineInput {
    let name = path.display().to_string();
    let reader = reader(path, &name);
    let (batches, receiver) = std::sync::mpsc::sync_channel(AHEAD_BATCHES);
    let thread = std::thread::Builder::new()
        .name(format!("read-{id}"))
        .spawn(move || {
            let mut ahead = ReadAhead::default();
            let send = |ahead: &mut ReadAhead| batches.send(ahead.take()).is_ok();
            let mut lines = match reader {
                Ok(reader) => Lines {
                    reader,
                    name,
                    failed: false,
                    buf: Vec::with_capacity(1 << 12),
                },
                Err(reason) => {
                    ahead.push_unreadable(reason, "");
                    send(&mut ahead);
                    return;
                }
            };
            while let Some(line) = lines.next_bytes() {
                match line {
                    Ok(bytes) => ahead.push_line(bytes),
                    Err(reason) => ahead.push_unreadable(reason, ""),
                }
                let (n, bytes) = ahead.pending();
                // A worker that has gone (the job stopped) ends the thread.
                if (n >= AHEAD_LINES || bytes >= AHEAD_BYTES) && !send(&mut ahead) {
                    return;
                }
            }
            if ahead.pending().0 > 0 {
                send(&mut ahead);
            }
        })
        .expect("the system starts a reader thread");
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
    LineInput::ahead(id, Box::new(batches))
}

/// The lines of `path` as text (a file that cannot be opened: one unreadable line).
pub fn lines(path: &Path) -> Box<dyn Iterator<Item = Result<String, (String, String)>>> {
    let name = path.display().to_string();
    match reader(path, &name) {
        Ok(reader) => Box::new(Lines {
            reader,
            name,
            failed: false,
            buf: Vec::with_capacity(1 << 12),
        }),
        Err(reason) => Box::new(std::iter::once(Err((reason, String::new())))),
    }
}

/// A buffered reader of the file, gunzipping a `.gz` one.
fn reader(path: &Path, name: &str) -> Result<Box<dyn BufRead + Send>, String> {
    File::open(path)
        .map_err(|e| format!("read error: {name}: {e}"))
        .map(|f| {
            let gz = path.extension().is_some_and(|e| e == "gz");
            let inner: Box<dyn Read + Send> = if gz {
                Box::new(MultiGzDecoder::new(f))
            } else {
                Box::new(f)
            };
            Box::new(BufReader::with_capacity(1 << 20, inner)) as Box<dyn BufRead + Send>
        })
}

struct Lines {
    reader: Box<dyn BufRead + Send>,
    name: String,
    failed: bool,
    /// Reused for every line.
    buf: Vec<u8>,
}

impl Lines {
    /// The next line's bytes without its line end, or why it could not be read.
    fn next_bytes(&mut self) -> Option<Result<&[u8], String>> {
        if self.failed {
            return None;
        }
        let buf = &mut self.buf;
        buf.clear();
        match self.reader.read_until(b'\n', buf) {
            Ok(0) => None,
            Ok(_) => {
                while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    buf.pop();
                }
                Some(Ok(buf))
            }
            Err(e) => {
                // A broken stream (truncated gzip, I/O error) ends this input after one dead letter.
                self.failed = true;
                Some(Err(format!("read error: {}: {e}", self.name)))
            }
        }
    }
}

impl Iterator for Lines {
    type Item = Result<String, (String, String)>;

    fn next(&mut self) -> Option<Self::Item> {
        // Each line is copied once into a string of its own size (reading into a fresh vector
        // grew it five or six times per line).
        Some(match self.next_bytes()? {
            Ok(bytes) => String::from_utf8(bytes.to_vec()).map_err(|e| {
                (
                    "invalid utf-8".to_string(),
                    String::from_utf8_lossy(e.as_bytes()).into_owned(),
                )
            }),
            Err(reason) => Err((reason, String::new())),
        })
    }
}
