//! Stopping a live job on signals: the first ends its inputs (the last marks close, sinks flush,
//! offsets of what was written are committed); a second (at least [`SAME_STOP`] after the
//! first), one before the job reads, or one while this process still catches up ([`behind`])
//! exits at once.
//!
//! Why a stop while catching up exits at once: ending the inputs closes every mark up to the
//! highest time read. While a partition is still read from its backlog, those marks would hold
//! its symbols' results as of where its reading stopped, published above the stored frontier
//! (a restart into Redis moved keys up to 39 minutes back that way). Exiting writes nothing
//! more and commits nothing more, as a kill would: a restart reads it all again.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

/// Workers of this process that have not opened their inputs yet ([`opening`], [`reading`]);
/// `usize::MAX` before the job says how many it runs. Once none is left a stop signal ends the
/// inputs (see [`stop_on_signals`]); before, there is nothing to close, or a worker still
/// opening would count none of its partitions [`behind`] and read none of them.
static TO_OPEN: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Partitions of this process not yet read to where they ended when the job started
/// ([`behind`], [`caught_up`]).
static BEHIND: AtomicUsize = AtomicUsize::new(0);

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
/// the flag would only be seen once reading begins. So does one while a partition of this
/// process is still read from its backlog ([`behind`]), saying so.
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
                if TO_OPEN.load(Ordering::Acquire) != 0 {
                    crate::exit(128 + signal);
                }
                let behind = BEHIND.load(Ordering::Acquire);
                if behind > 0 {
                    crate::say!("tampines: stopping while catching up ({behind} of this process's partitions not yet read to where they ended at the start: the last marks would publish their symbols' results as of where reading stopped): exiting at once, with nothing more written or committed; a restart reads it all again");
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

/// Notes how many workers this process runs, before any opens its inputs.
pub fn opening(workers: usize) {
    TO_OPEN.store(workers, Ordering::Relaxed);
}

/// Notes that a worker of this process opened its inputs (its partitions [`behind`] noted):
/// once every one has, a stop signal ends them.
pub fn reading() {
    // Release: a signal that sees every worker opened sees the partitions each counted behind.
    let _ = TO_OPEN.fetch_update(Ordering::Release, Ordering::Relaxed, |n| n.checked_sub(1));
}

/// Notes `partitions` more of this process's partitions that have messages left to read from
/// before the job started: until each is [`caught_up`], a stop signal exits at once.
pub fn behind(partitions: usize) {
    BEHIND.fetch_add(partitions, Ordering::Release);
}

/// Notes that one partition noted [`behind`] has been read to where it ended at the start.
pub fn caught_up() {
    BEHIND.fetch_sub(1, Ordering::Relaxed);
}
