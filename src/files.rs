//! The file source: NDJSON event files (plain or gzip) as line inputs.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use tampines_dataflows::source::LineInput;

/// Opens `path` as input number `id`. A file that cannot be opened or read becomes one dead
/// letter with the error as its reason; it never stops the job.
pub fn open(path: &Path, id: u32) -> LineInput {
    let name = path.display().to_string();
    let reader: Result<Box<dyn BufRead>, String> = File::open(path)
        .map_err(|e| format!("read error: {name}: {e}"))
        .map(|f| {
            let gz = path.extension().is_some_and(|e| e == "gz");
            let inner: Box<dyn Read> = if gz {
                Box::new(MultiGzDecoder::new(f))
            } else {
                Box::new(f)
            };
            Box::new(BufReader::with_capacity(1 << 20, inner)) as Box<dyn BufRead>
        });
    let lines: Box<dyn Iterator<Item = Result<String, (String, String)>>> = match reader {
        Ok(reader) => Box::new(Lines {
            reader,
            name,
            failed: false,
            buf: Vec::with_capacity(1 << 12),
        }),
        Err(reason) => Box::new(std::iter::once(Err((reason, String::new())))),
    };
    LineInput { id, lines }
}

struct Lines {
    reader: Box<dyn BufRead>,
    name: String,
    failed: bool,
    /// Reused for every line: each line is then copied once into a string of its own size
    /// (reading into a fresh vector grew it five or six times per line).
    buf: Vec<u8>,
}

impl Iterator for Lines {
    type Item = Result<String, (String, String)>;

    fn next(&mut self) -> Option<Self::Item> {
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
                Some(String::from_utf8(buf.to_vec()).map_err(|e| {
                    (
                        "invalid utf-8".to_string(),
                        String::from_utf8_lossy(e.as_bytes()).into_owned(),
                    )
                }))
            }
            Err(e) => {
                // A broken stream (truncated gzip, I/O error) ends this input after one dead letter.
                self.failed = true;
                Some(Err((
                    format!("read error: {}: {e}", self.name),
                    String::new(),
                )))
            }
        }
    }
}
