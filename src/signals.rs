//! Stopping a live job on signals: the first ends its inputs (the last marks close, sinks flush,
//! offsets of what was written are committed); a second (at least [`SAME_STOP`] after the
//! first), or one before the job reads, exits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

/// Set once a worker of this process has opened its inputs: from then on a stop signal ends the
/// inputs (see [`stop_on_signals`]); before, there is nothing to close.
static READING: AtomicBool = AtomicBool::new(false);

/// A signal this soon after the first is part of the same stop, not a second one: GNU `timeout`
/// sends its signal to the job, then to its own process group, which holds the job, so the job
/// gets it twice within microseconds. Taken as a second, it exited 130 without its last marks
/// (2 of 4 runs of an audit's; the other two the system merged into one).
pub const SAME_STOP: Duration = Duration::from_secs(1);

/// A live job's stop: a flag set by the first of `signals`, which also calls `stopping`. A
/// second signal while stopping (the last write waiting for a Redis that went away) exits 130
/// at once ([`crate::exit`], after its hooks), unless it comes within [`SAME_STOP`] of the
/// first. With the flag passed to the inputs, their end
/// closes the last marks, every sink is flushed and the offsets of what was written are
/// committed.
///
/// Before the job reads (connecting its processes, which waits for the others however long;
/// opening Kafka), a signal exits at once with 128 + the signal's number, as dying by it would:
/// the flag would only be seen once reading begins.
pub fn stop_on_signals(
    signals: &[std::ffi::c_int],
    stopping: impl Fn() + Send + 'static,
) -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut caught = signal_hook::iterator::Signals::new(signals)?;
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut first: Option<Instant> = None;
            for signal in caught.forever() {
                if !READING.load(Ordering::Relaxed) {
                    crate::exit(128 + signal);
                }
                if first.is_some_and(|at| at.elapsed() < SAME_STOP) {
                    continue;
                }
                if flag.swap(true, Ordering::Relaxed) {
                    crate::exit(130);
                }
                first = Some(Instant::now());
                stopping();
            }
        })?;
    Ok(stop)
}

/// Notes that a worker of this process opened its inputs: a stop signal now ends them.
pub fn reading() {
    READING.store(true, Ordering::Relaxed);
}
