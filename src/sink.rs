//! Sinks on worker 0: NDJSON results and the dead-letter file.

use std::fs::File;
use std::io::{BufWriter, IoSlice, Write};
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;
use tampines_dataflows::results::Published;
use tampines_dataflows::source::DeadLetter;

/// Opens `-` (stdout) or a file for writing, buffered (dead letters).
pub fn writer(target: &str) -> Result<Box<dyn Write>> {
    Ok(if target == "-" {
        Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout()))
    } else {
        let f = File::create(target).with_context(|| format!("cannot create {target}"))?;
        Box::new(BufWriter::with_capacity(1 << 20, f))
    })
}

/// Pieces of text one write hands the system at most (`IOV_MAX` on Linux).
const MAX_PIECES: usize = 1024;

/// The NDJSON results sink: per published batch, its changed records, then its progress line.
/// Records are written as their pieces ([`pieces`]), gathered by the system, never copied
/// into a buffer first: a book's record is mostly its sides' texts, shared with the book stage.
/// Batches are held until [`Results::flush`] or until they hold enough pieces for a few writes.
///
/// [`pieces`]: tampines_dataflows::results::Json::pieces
pub struct Results {
    out: File,
    /// Batches not written yet, each with its progress line.
    pending: Vec<(Published, String)>,
    /// Pieces in `pending`, about.
    pieces: usize,
}

impl Results {
    /// Opens `-` (stdout) or a file.
    pub fn open(target: &str) -> Result<Results> {
        let out = if target == "-" {
            let fd = std::io::stdout().as_fd().try_clone_to_owned();
            File::from(fd.context("cannot write to stdout")?)
        } else {
            File::create(target).with_context(|| format!("cannot create {target}"))?
        };
        Ok(Results {
            out,
            pending: Vec::new(),
            pieces: 0,
        })
    }

    /// Writes `batch` (perhaps later: see [`Results::flush`]).
    pub fn write(&mut self, batch: Published) -> std::io::Result<()> {
        self.pieces += 2 * batch.changes.len() + 1;
        let progress = format!("{{\"kind\":\"progress\",\"ts\":{}}}\n", batch.time);
        self.pending.push((batch, progress));
        if self.pieces >= 4 * MAX_PIECES {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes every batch held.
    pub fn flush(&mut self) -> std::io::Result<()> {
        let mut slices = Vec::with_capacity(self.pieces * 2);
        for (batch, progress) in &self.pending {
            for json in batch.changes.iter().filter_map(|c| c.json.as_ref()) {
                let pieces = json.pieces().into_iter().filter(|p| !p.is_empty());
                slices.extend(pieces.map(|p| IoSlice::new(p.as_bytes())));
                slices.push(IoSlice::new(b"\n"));
            }
            slices.push(IoSlice::new(progress.as_bytes()));
        }
        let written = write_all_vectored(&mut self.out, &mut slices);
        drop(slices);
        self.pending.clear();
        self.pieces = 0;
        written
    }
}

/// Writes all of `slices`, at most [`MAX_PIECES`] per call.
fn write_all_vectored(out: &mut impl Write, mut slices: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    while !slices.is_empty() {
        let end = slices.len().min(MAX_PIECES);
        match out.write_vectored(&slices[..end]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes one dead letter as `{"reason":..,"payload":..}`.
pub fn write_dead(out: &mut dyn Write, dead: &DeadLetter) -> std::io::Result<()> {
    serde_json::to_writer(
        &mut *out,
        &json!({"reason": dead.reason, "payload": dead.payload}),
    )?;
    out.write_all(b"\n")
}

/// Creates the dead-letter file.
pub fn dlq_writer(path: &Path) -> Result<Box<dyn Write>> {
    writer(&path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `most` bytes per write from at most [`MAX_PIECES`] pieces; counts writes.
    struct Short {
        written: Vec<u8>,
        most: usize,
        writes: usize,
    }

    impl Write for Short {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
            assert!(bufs.len() <= MAX_PIECES);
            self.writes += 1;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.most - n);
                self.written.extend_from_slice(&b[..take]);
                n += take;
            }
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn pieces_are_written_whole_and_in_order_whatever_each_write_takes() {
        let pieces: Vec<String> = (0..3_000)
            .map(|i| "x".repeat(i % 13) + &i.to_string())
            .collect();
        for most in [1, 10, 4_096, usize::MAX] {
            let mut slices: Vec<IoSlice<'_>> =
                pieces.iter().map(|p| IoSlice::new(p.as_bytes())).collect();
            let mut out = Short {
                written: Vec::new(),
                most,
                writes: 0,
            };
            write_all_vectored(&mut out, &mut slices).unwrap();
            assert_eq!(String::from_utf8(out.written).unwrap(), pieces.concat());
            if most == usize::MAX {
                assert_eq!(out.writes, 3_000usize.div_ceil(MAX_PIECES));
            }
        }
    }
}
