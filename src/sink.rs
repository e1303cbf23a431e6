//! Sinks on worker 0: NDJSON results and the dead-letter file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;
use tampines_dataflows::results::Published;
use tampines_dataflows::source::DeadLetter;

/// Opens `-` (stdout) or a file for writing.
pub fn writer(target: &str) -> Result<Box<dyn Write>> {
    Ok(if target == "-" {
        Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout()))
    } else {
        let f = File::create(target).with_context(|| format!("cannot create {target}"))?;
        Box::new(BufWriter::with_capacity(1 << 20, f))
    })
}

/// Writes one published batch: its changed records, then its progress line.
pub fn write_batch(out: &mut dyn Write, batch: &Published) -> std::io::Result<()> {
    for json in batch.changes.iter().filter_map(|c| c.json.as_deref()) {
        out.write_all(json.as_bytes())?;
        out.write_all(b"\n")?;
    }
    writeln!(out, "{{\"kind\":\"progress\",\"ts\":{}}}", batch.time)
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
