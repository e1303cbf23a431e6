//! Sinks on worker 0: the `ResultsSink` operator ([`results_operator`]: NDJSON results, and the
//! hand-over of each mark to Redis's writer, `redis_sink`), and the writers of the NDJSON results
//! and the dead-letter file.
//!
//! Input: the published batches of a step ([`write_batches`]: each mark's changed records, then
//! its progress line, CONTRACT 4) and dead letters ([`write_dead`]: one JSON line
//! `{"reason":..,"payload":..}` each). Output: `-` (stdout) or a file, created empty, or, for a
//! run resuming from committed offsets, appended to, its last line first cut back to whole if a
//! run killed mid-write left it short.
//!
//! Invariant: every line written is one whole JSON object ending with a line feed. To a file the
//! records are handed over as they are (`write_vectored`), not copied; stdout is buffered
//! ([`results_writer`]).

use std::fs::File;
use std::io::{BufWriter, IoSlice, Write};
use std::path::Path;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use tampines_dataflows::results::Published;
use tampines_dataflows::source::DeadLetter;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Capability, InputCapability};
use timely::dataflow::StreamVec;

use crate::metrics::metrics;
use crate::redis_sink::RedisSink;

/// What the writing operators emit: the text of a failure to write, at the time of what was not
/// written.
pub(crate) type Notices = CapacityContainerBuilder<Vec<String>>;

/// Keeps in `earliest` a capability for the earliest of the times it is given (`cap`'s and
/// those before).
pub(crate) fn keep_earliest(earliest: &mut Option<Capability<u64>>, cap: &InputCapability<u64>) {
    if earliest.as_ref().is_none_or(|e| cap.time() < e.time()) {
        *earliest = Some(cap.retain(0));
    }
}

/// The `ResultsSink` operator (worker 0): writes each published batch to `out` (NDJSON, flushed
/// after each activation, so live readers see each mark as it is published) and hands it to
/// Redis's writer, holding a capability at the earliest mark that writer has not taken into its
/// queue (`job`'s module doc: the results' frontier then stays below it in every process). It
/// emits the text of a failure to write at the time of what was not written, for every worker to
/// learn: the sinks that could not be opened (`unopened`) at the first time, and what `failed`
/// makes of a write error (None: stop writing quietly, a replay's closed pipe).
pub fn results_operator<'s>(
    published: StreamVec<'s, u64, Published>,
    mut out: Option<Box<dyn Write>>,
    redis: Option<Rc<RefCell<RedisSink>>>,
    unopened: Vec<String>,
    results_failed: impl Fn(std::io::Error) -> Option<String> + 'static,
) -> StreamVec<'s, u64, String> {
    let scope = published.scope();
    published.unary_frontier::<Notices, _, _, _>(Pipeline, "ResultsSink", move |initial, info| {
        let activator = scope.activator_for(info.address);
        let mut unopened = (!unopened.is_empty()).then_some((initial, unopened));
        // The earliest mark the Redis writer's queue has not taken, held so that the
        // results' frontier stays below it in every process (module doc).
        let mut waiting: Option<Capability<u64>> = None;
        move |(input, frontier), output| {
            if let Some((at, texts)) = unopened.take() {
                output.session(&at).give_iterator(texts.into_iter());
            }
            let mut first = None;
            input.for_each(|cap, data| {
                let batches = std::mem::take(data);
                for batch in &batches {
                    metrics().count_published(batch);
                    tracing::debug!(
                        mark = batch.time,
                        changes = batch.changes.len(),
                        behind_ms = crate::metrics::now_ms().saturating_sub(batch.time),
                        "published"
                    );
                    if let Some(r) = redis.as_ref() {
                        r.borrow_mut().push(batch.clone());
                        keep_earliest(&mut waiting, &cap);
                    }
                }
                if let Some(w) = out.as_mut() {
                    if let Err(e) = write_batches(w.as_mut(), &batches) {
                        if let Some(f) = results_failed(e) {
                            output.session(&cap).give(f);
                        }
                        out = None;
                    }
                }
                keep_earliest(&mut first, &cap);
            });
            // Flush what this activation wrote: live readers see each mark as it is
            // published.
            if first.is_some() || frontier.is_empty() {
                if let Some(Err(e)) = out.as_mut().map(|w| w.flush()) {
                    // At the end (no time is left to tell it at) this process's
                    // only, as nothing is left to write.
                    if let (Some(f), Some(cap)) = (results_failed(e), first.as_ref()) {
                        output.session(cap).give(f);
                    }
                    out = None;
                }
            }
            if let Some(r) = redis.as_ref() {
                let mut r = r.borrow_mut();
                r.drain();
                match r.oldest_held() {
                    None => waiting = None,
                    Some(t) => {
                        if let Some(w) = waiting.as_mut().filter(|w| *w.time() < t) {
                            w.downgrade(&t);
                        }
                        activator.activate_after(Duration::from_millis(1));
                    }
                }
            }
        }
    })
}

/// Opens `-` (stdout) or a file for the results, for [`write_batches`]: a file unbuffered, as
/// the records' own texts go to it with `writev` (a buffer would copy every record once more:
/// 2.4 GB on the Flink file, most of the publishing worker's writing); stdout buffered.
/// `append`: added to the file's end rather than emptying it (`Settings::append`).
pub fn results_writer(target: &str, append: bool) -> Result<Box<dyn Write>> {
    if target == "-" {
        return writer(Path::new(target), append);
    }
    Ok(Box::new(file(Path::new(target), append)?))
}

/// Creates, or with `append` opens for appending, the file `target`. Appending, a regular
/// file's last line cut short (a run killed mid-write) is dropped first: the next record would
/// have joined it into one line that is no JSON.
fn file(target: &Path, append: bool) -> Result<File> {
    let mut options = std::fs::OpenOptions::new();
    match append {
        true => options.read(true).append(true).create(true),
        false => options.write(true).create(true).truncate(true),
    };
    let shown = target.display();
    let f = options
        .open(target)
        .with_context(|| format!("cannot create {shown}"))?;
    if append && f.metadata().is_ok_and(|m| m.is_file() && m.len() > 0) {
        let whole = after_last_line(&f).with_context(|| format!("reading {shown}"))?;
        f.set_len(whole)
            .with_context(|| format!("cutting {shown}'s last line, cut short"))?;
    }
    Ok(f)
}

/// The length of `f` up to and with its last line feed (0 if none).
fn after_last_line(f: &File) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut end = f.metadata()?.len();
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let piece = &mut buf[..(end - start) as usize];
        f.read_exact_at(piece, start)?;
        if let Some(at) = piece.iter().rposition(|&b| b == b'\n') {
            return Ok(start + at as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Opens `-` (stdout) or a file for writing, buffered.
fn writer(target: &Path, append: bool) -> Result<Box<dyn Write>> {
    Ok(if target.as_os_str() == "-" {
        Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout()))
    } else {
        Box::new(BufWriter::with_capacity(1 << 20, file(target, append)?))
    })
}

/// Slices handed to one `write_vectored`: Linux takes at most 1024 (`IOV_MAX`).
const SLICES: usize = 1024;

/// Writes published batches, in order: each one's changed records, then its progress line. The
/// records are handed to `out` as they are (`write_vectored`, `SLICES` at a time), not copied.
pub fn write_batches(out: &mut dyn Write, batches: &[Published]) -> std::io::Result<()> {
    let marks: Vec<String> = (batches.iter())
        .map(|b| format!("{{\"kind\":\"progress\",\"ts\":{}}}\n", b.time))
        .collect();
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(SLICES);
    for (batch, mark) in batches.iter().zip(&marks) {
        for json in batch.changes.iter().filter_map(|c| c.json.as_ref()) {
            if slices.len() + 2 > SLICES {
                write_all_vectored(out, &mut slices)?;
            }
            slices.push(IoSlice::new(json.as_bytes()));
            slices.push(IoSlice::new(b"\n"));
        }
        if slices.len() == SLICES {
            write_all_vectored(out, &mut slices)?;
        }
        slices.push(IoSlice::new(mark.as_bytes()));
    }
    write_all_vectored(out, &mut slices)
}

/// Writes all of `slices` (however much each `write_vectored` takes), then empties it.
fn write_all_vectored(out: &mut dyn Write, slices: &mut Vec<IoSlice<'_>>) -> std::io::Result<()> {
    let mut rest = &mut slices[..];
    // Advancing by nothing drops empty slices at the front: slices that are all empty end the
    // loop instead of writing zero bytes.
    IoSlice::advance_slices(&mut rest, 0);
    while !rest.is_empty() {
        match out.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    slices.clear();
    Ok(())
}

/// Writes one dead letter as `{"reason":..,"payload":..}`: JSON text holds no other bytes, so a
/// payload that is not UTF-8 is written as its lossy text (U+FFFD for each bad sequence).
pub fn write_dead(out: &mut dyn Write, dead: &DeadLetter) -> std::io::Result<()> {
    let payload = String::from_utf8_lossy(&dead.payload);
    serde_json::to_writer(
        &mut *out,
        &json!({"reason": dead.reason, "payload": payload}),
    )?;
    out.write_all(b"\n")
}

/// Creates (or with `append` appends to) the dead-letter file, by its path as given (a name that
/// is not UTF-8, written as text, was another file: one a check of the real path let through,
/// an input emptied).
pub fn dlq_writer(path: &Path, append: bool) -> Result<Box<dyn Write>> {
    writer(path, append)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tampines_dataflows::results::Change;

    /// A writer that takes at most `most` bytes of the first slice per call, as a pipe may,
    /// and refuses more slices a call than the kernel takes.
    struct Trickle {
        written: Vec<u8>,
        most: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.most);
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
            assert!(bufs.len() <= SLICES, "{} slices in one call", bufs.len());
            let first = bufs.iter().find(|b| !b.is_empty());
            self.write(first.map_or(&[][..], |b| &**b))
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn change(json: Option<String>) -> Change {
        serde_json::from_value(json!({
            "name": {"prefix": 0, "order": [1, "ex", "sym", 0], "whole": false, "key": "ticker:ex:sym"},
            "score": null,
            "json": json,
        }))
        .expect("a change")
    }

    /// Batches of more records than one `writev` takes (and a removal, which writes nothing),
    /// through writers that take a little or everything at a time: every record on its own line
    /// in order, each batch's progress line after its records.
    /// Appending cuts a file back to its last line feed, and only there: a last line cut short
    /// (a run killed mid-write) goes, whole lines stay, also where the last line feed lies in
    /// an earlier read of 64 KiB than the file's end (a mutation that cut the line feed too
    /// joined the next record to the last whole line, and only a Kafka test would have seen it).
    #[test]
    fn appending_cuts_back_to_the_last_whole_line() {
        let dir = std::env::temp_dir().join(format!("tampines_sink_append_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let long_tail = "x".repeat(70_000);
        let cases: [(&str, String, &str); 5] = [
            (
                "whole",
                "{\"a\":1}\n{\"b\":2}\n".into(),
                "{\"a\":1}\n{\"b\":2}\n",
            ),
            ("cut", "{\"a\":1}\n{\"b\"".into(), "{\"a\":1}\n"),
            ("no line feed", "{\"a\"".into(), ""),
            ("empty", String::new(), ""),
            (
                "long tail",
                format!("{{\"a\":1}}\n{long_tail}"),
                "{\"a\":1}\n",
            ),
        ];
        for (name, before, after) in cases {
            let path = dir.join(name.replace(' ', "_"));
            std::fs::write(&path, &before).unwrap();
            drop(file(&path, true).unwrap());
            assert_eq!(std::fs::read_to_string(&path).unwrap(), after, "{name}");
        }
        // What is appended then starts a line of its own.
        let path = dir.join("cut");
        let mut f = file(&path, true).unwrap();
        f.write_all(b"{\"c\":3}\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"c\":3}\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn batches_are_written_whole_and_in_order() {
        let sizes = [0, 1, SLICES / 2 - 1, SLICES / 2, SLICES + 3, 2];
        let mut expected = String::new();
        let mut n = 0;
        let batches: Vec<Published> = (sizes.iter().enumerate())
            .map(|(i, &size)| {
                let mut changes = vec![change(None)];
                for _ in 0..size {
                    let json = format!("{{\"n\":{n}}}");
                    expected.push_str(&json);
                    expected.push('\n');
                    changes.push(change(Some(json)));
                    n += 1;
                }
                let time = 1_000 * (i as u64 + 1);
                expected.push_str(&format!("{{\"kind\":\"progress\",\"ts\":{time}}}\n"));
                Published { time, changes }
            })
            .collect();
        for most in [1, 7, 4096, usize::MAX] {
            let mut out = Trickle {
                written: Vec::new(),
                most,
            };
            write_batches(&mut out, &batches).unwrap();
            assert_eq!(String::from_utf8(out.written).unwrap(), expected, "{most}");
        }
        // A writer that takes every slice at once.
        let mut all: Vec<u8> = Vec::new();
        write_batches(&mut all, &batches).unwrap();
        assert_eq!(String::from_utf8(all).unwrap(), expected);
    }
}
