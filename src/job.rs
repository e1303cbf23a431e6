//! Running a job: the dataflow over some inputs, results to NDJSON and/or Redis (both written by
//! the `ResultsSink` operator on worker 0, [`crate::sink::results_operator`]), dead letters to a
//! file and/or Kafka (the `DeadLetterSink` operator, also on worker 0,
//! [`crate::dead_letters::sink_operator`]). This module opens them and wires them in. [`replay`]
//! opens files and never idles; the live `run` and `demo` (both through [`crate::kafka::run_job`],
//! then [`run`]) open Kafka partitions, idle, commit offsets after each step, stop on signals
//! ([`crate::signals`]) and stop at once when the results cannot be written (a dead letter that
//! cannot be written is logged and the job goes on: [`crate::dead_letters`]).
//!
//! Every process gets the same options; global worker 0 (on process 0) publishes and writes dead
//! letters; other processes never write to the sinks (with Redis they read its frontier, to
//! commit their offsets).
//!
//! **What every worker knows of the writing.** Each worker's probe follows the two writing
//! operators, so its frontier passes a time only once the results and dead letters at that time
//! are written (handed to the file, or to Redis's writer), whichever process wrote them:
//! - A failure to write at time `T` (an output that could not be opened: at time 0) is
//!   broadcast, so every worker, in every process, records it before its probe passes `T`; a
//!   worker commits no offsets after a failure ([`AfterStep`]). (A live process 0 exits at once:
//!   the others' probes cannot pass `T` while its notice is in flight, and they exit when its
//!   connection breaks, if the notice did not arrive first.)
//! - The `ResultsSink` keeps a capability at the earliest mark Redis's writer has not taken into
//!   its queue, so the probe stays below it in every process: each worker's flow control
//!   ([`crate::flow::Throttled`]) then pauses its reading once its closed input in flight reaches
//!   its bound, and the marks waiting for Redis stay bounded. Process 0's workers also stop at once
//!   while the queue is full.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, Result};
use tampines_dataflows::idle::Idle;
use tampines_dataflows::source::Inputs;
use tampines_dataflows::stats::{Stats, Totals};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Concat, Inspect, Probe};
use timely::dataflow::ProbeHandle;
use timely::CommunicationConfig;

use crate::cli::Settings;
use crate::dead_letters::{DeadLetterLog, DeadLetterSink, FileDeadLetters};
use crate::flow::Throttled;
use crate::metrics::{metrics, serve, InputLabels};
use crate::redis_sink::{stored_frontier, RedisSink, SinkState};
use crate::signals;
use crate::sink;

/// What of the results is written for good: NDJSON results once the probe passed their time;
/// with Redis, once Redis also holds a mark at or past it.
pub struct Written<'a> {
    probe: &'a ProbeHandle<u64>,
    durable: Option<&'a SinkState>,
}

impl Written<'_> {
    /// Every result at `time` or before is written (and durable in Redis, if publishing there).
    pub fn covers(&self, time: u64) -> bool {
        !self.probe.less_equal(&time)
            && self
                .durable
                .is_none_or(|s| s.durable.load(Ordering::Relaxed) >= time)
    }
    /// The job has finished and every result is written.
    pub fn all(&self) -> bool {
        self.probe.done()
    }
}

/// Called after every step of a worker with what is written (offset commits), and at the end
/// until it returns true (nothing left to do) or `FINAL_COMMIT_PATIENCE` has passed.
pub type AfterStep = Box<dyn FnMut(&Written) -> bool>;

/// How long a finished worker waits for its last results to become durable in Redis before it
/// gives up committing their offsets (they are read again after a restart: no loss).
const FINAL_COMMIT_PATIENCE: Duration = Duration::from_secs(60);

/// A worker's inputs and what to do as results complete.
pub struct WorkerInputs {
    /// What this worker reads.
    pub inputs: Box<dyn Inputs>,
    /// Hook run after each step.
    pub after_step: Option<AfterStep>,
    /// Whose progress closes the input that flow control counts ([`Throttled`]).
    pub closed_by: ClosedBy,
}

/// Whose progress closes the records a worker's flow control counts in flight: only closed
/// records can complete, so only they may pause reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClosedBy {
    /// This worker's source (Kafka; a worker's regular files): while another worker's input
    /// holds the job's progress back, this worker pauses after
    /// [`crate::flow::IN_FLIGHT_TIMES`] timestamps of its own; its partitions' messages wait in
    /// the broker, its files on disk.
    ThisWorker,
    /// Every worker's source (a worker that reads a pipe): it does not pause for input another
    /// worker has not read yet. Its pipe could be waiting on that input's writer: one producer
    /// writing two pipes in event order, blocked on this worker's full one, never wrote the
    /// other's, and the job waited for ever. Input read ahead of the others' waits in memory
    /// instead, as it always did among one worker's files.
    AllWorkers,
}

/// Runs a job to completion and returns this process's counters.
///
/// `make_inputs(worker index, peers)` opens a worker's inputs; `make_dead(...)` opens worker 0's
/// extra dead-letter sink (Kafka); `idle` is the idleness of inputs (None: never idle); `commits`:
/// whether the inputs commit what was read (Kafka offsets); `inputs`
/// is a fingerprint of the inputs' options every process must share (with `idle` and the
/// dataflow's options it is checked when processes connect); `labels` names inputs in metrics.
pub fn run<F, D>(
    settings: Settings,
    idle: Option<Duration>,
    commits: bool,
    inputs: u64,
    labels: InputLabels,
    make_inputs: F,
    make_dead: D,
) -> Result<Totals>
where
    F: Fn(usize, usize) -> Result<WorkerInputs> + Send + Sync + 'static,
    D: Fn() -> Result<Option<Box<dyn DeadLetterSink>>> + Send + Sync + 'static,
{
    if settings.process == 0 && settings.out.is_none() && settings.redis.is_none() {
        // Only the counts were said, and a user who left the sink out took it for the job
        // finding no results (an audit of the README, 2026-12-07).
        tracing::warn!("neither --out nor --redis: results are computed but not written (--out - writes them to stdout)");
    }
    let stats = Arc::new(Stats::default());
    let operator_logging = crate::metrics::OperatorLogging {
        // A diagnostic, deliberately not an option: which operator stalls the live path.
        slow: std::env::var("TAMPINES_SLOW_OPERATOR_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis),
    };
    if let Some(addr) = &settings.metrics_addr {
        metrics().attach(stats.clone(), labels.clone());
        serve(addr, settings.process)?;
    }
    let config = Arc::new(settings.config.clone());
    let timely_config =
        timely::Config::from_args(settings.timely.clone().into_iter()).map_err(|e| anyhow!(e))?;
    let worker_stats = stats.clone();
    let out_target = settings.out.clone();
    let append = settings.append;
    let dlq_target = settings.dlq.clone();
    let failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let worker_failure = failure.clone();
    remember_panics();
    // Set by a worker that panics (a bug), as it unwinds: its peers stop, where they waited for
    // its progress for ever (a panic in the tracing writer, when stderr's reader had gone, left
    // the job hanging, silent).
    let worker_panicked = Arc::new(AtomicBool::new(false));
    let sink_state = Arc::new(SinkState::default());
    let worker_sink_state = sink_state.clone();
    let redis = settings.redis.clone();
    // Marks Redis already holds are not written by themselves (the sink catches up at the next).
    let stored = match (&redis, settings.process) {
        // 30 s, or a bounded job's --redis-patience-s where shorter.
        (Some(r), 0) => {
            let patience = Duration::from_secs(30);
            stored_frontier(r, r.patience.map_or(patience, |p| p.min(patience)))?
        }
        _ => None,
    };
    if let (Some(r), true) = (&redis, settings.process > 0) {
        // Only process 0 writes to Redis; the others learn what is durable from Redis itself.
        crate::redis_sink::follow_frontier(r.clone(), &sink_state);
    }
    if let Some(f) = stored {
        tracing::info!(
            frontier = f,
            "redis holds results up to this mark; rebuilding state by replay"
        );
        sink_state.durable.store(f, Ordering::Relaxed);
        metrics().redis_frontier.set(f as i64);
        if redis.as_ref().is_some_and(|r| !r.whole_history) {
            tracing::error!(
                frontier = f,
                "not every partition is known to be read from its first message (see the warning above): the state rebuilt below the stored frontier may lack some, so the results Redis holds up to it are left as they are, late events up to it included; results after it that need missing messages (a ticker's window, open candles, a book until its next snapshot) are made without them"
            );
        }
    }
    // Processes must agree on the results' options, their inputs', the Redis prefix (the others
    // follow the frontier process 0 writes there, to commit their offsets: with another, or
    // none, they never did) and (`execute` adds) their worker and process counts.
    let prefix = settings.redis.as_ref().map(|r| r.prefix.as_str());
    let fingerprint = crate::cluster::digest(&(config.fingerprint(), inputs, idle, prefix));
    if settings.process > 0 {
        for (option, given) in [
            ("--out", settings.out.is_some()),
            ("--dlq", settings.dlq.is_some()),
        ] {
            if given {
                tracing::warn!(
                    process = settings.process,
                    "{option} is written by process 0 only: given here, it is not used"
                );
            }
        }
    }
    // A stop signal ends the inputs only once every worker here has opened its own.
    signals::opening(match &timely_config.communication {
        CommunicationConfig::Thread => 1,
        CommunicationConfig::Process(n) | CommunicationConfig::ProcessBinary(n) => *n,
        CommunicationConfig::Cluster { threads, .. } => *threads,
    });
    let guards = crate::cluster::execute(timely_config, fingerprint, move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let _told = TellsPeersOfPanic(worker_panicked.clone());
        let fail = |e: anyhow::Error| {
            worker_failure
                .lock()
                .expect("lock")
                .get_or_insert(format!("{e:#}"));
        };
        let WorkerInputs {
            inputs,
            mut after_step,
            closed_by,
        } = match make_inputs(index, peers) {
            Ok(w) => {
                signals::reading();
                w
            }
            Err(e) => {
                fail(e);
                // Take part in the dataflow with no input, so the other workers can finish.
                WorkerInputs {
                    inputs: Box::new(tampines_dataflows::source::LineInputs::new(Vec::new())),
                    after_step: None,
                    closed_by: ClosedBy::ThisWorker,
                }
            }
        };
        let probe = ProbeHandle::new();
        // Every worker's sources' frontier (a probe's frontier is the job's, not one worker's).
        // Built by every worker, so that all build one dataflow (workers of other processes,
        // given other kinds of files, may not consult it).
        let sources = ProbeHandle::new();
        // The source takes the wrapper as is: a box around it was a second dynamic call, and a
        // second copy of what it returns, for every line.
        let inputs = Throttled::new(
            inputs,
            worker_sink_state.clone(),
            probe.clone(),
            (closed_by == ClosedBy::AllWorkers).then(|| sources.clone()),
        );
        let publishing = index == 0;
        // Sinks that could not be opened: a failure of the job, told to every worker at time 0
        // (by the `ResultsSink`), so that no process commits offsets whose output is not written.
        let mut unopened: Vec<String> = Vec::new();
        let redis_sink = match (&redis, publishing) {
            (Some(r), true) => match RedisSink::start(r.clone(), worker_sink_state.clone(), stored)
            {
                Ok(s) => Some(std::rc::Rc::new(std::cell::RefCell::new(s))),
                Err(e) => {
                    unopened.push(format!("{e:#}"));
                    None
                }
            },
            _ => None,
        };
        let sink_in_dataflow = redis_sink.clone();
        let mut out = None;
        let mut dead_sinks: Vec<Box<dyn DeadLetterSink>> = Vec::new();
        if publishing {
            if let Some(t) = &out_target {
                match sink::results_writer(t, append) {
                    Ok(w) => out = Some(w),
                    Err(e) => unopened.push(format!("{e:#}")),
                }
            }
            if let Some(p) = &dlq_target {
                match sink::dlq_writer(p, append) {
                    Ok(w) => dead_sinks.push(Box::new(FileDeadLetters {
                        out: w,
                        path: p.display().to_string(),
                    })),
                    Err(e) => unopened.push(format!("{e:#}")),
                }
            }
            match make_dead() {
                Ok(Some(s)) => dead_sinks.push(s),
                Ok(None) => {}
                Err(e) => unopened.push(format!("{e:#}")),
            }
        }
        for f in &unopened {
            worker_failure
                .lock()
                .expect("lock")
                .get_or_insert(f.clone());
        }
        let config = config.clone();
        let stats = worker_stats.clone();
        let failure = worker_failure.clone();
        // With Redis, inputs count as done once Redis holds their results.
        let durable = redis.as_ref().map(|_| worker_sink_state.clone());
        crate::metrics::log_operators(worker, operator_logging);
        // Silent inputs are judged over the whole job: workers share what theirs say.
        let live = idle.is_some();
        let idle = idle.map(|after| Idle {
            after,
            peers: tampines_dataflows::idle::share(worker),
        });
        worker.dataflow::<u64, _, _>(|scope| {
            let source = tampines_dataflows::source::source(
                scope,
                inputs,
                idle,
                config.clone(),
                stats.clone(),
            );
            let source = source.probe_with(&sources);
            let outputs = tampines_dataflows::build(source, config, stats);
            let failure_dead = failure.clone();
            // A dead letter that cannot be written is a failure of a bounded run (reported at
            // its end): its text is returned, to be told to every worker. A live run goes on,
            // logging each one: stopping would read the same message again at the restart and
            // stop again; the dead letter is still counted and logged above (or told in the
            // number of those not logged one by one).
            let dead_failed = move |e: anyhow::Error| {
                if live {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "writing a dead letter failed; going on"
                    );
                    return None;
                }
                let f = format!("writing dead letters: {e:#}");
                failure_dead.lock().expect("lock").get_or_insert(f.clone());
                Some(f)
            };
            let dead_log = DeadLetterLog::new(labels.clone());
            let dead_failures =
                crate::dead_letters::sink_operator(outputs.dead, dead_sinks, dead_log, dead_failed);
            let results_failure = failure.clone();
            // The file the results go to, as a failure names it.
            let results_to = match out_target.as_deref() {
                Some("-") | None => "stdout".to_string(),
                Some(file) => file.to_string(),
            };
            let results_failed = move |e: std::io::Error| {
                // A closed pipe (`| head`) means the reader is done: a replay stops writing
                // quietly (and computes on to its end); a live job stops, and so does a bounded
                // one that commits what it read (`run --until-end`: it committed the offsets of
                // results no one had, and exited 0).
                if !live && !commits && e.kind() == std::io::ErrorKind::BrokenPipe {
                    return None;
                }
                let f = format!("writing results to {results_to}: {e}");
                results_failure
                    .lock()
                    .expect("lock")
                    .get_or_insert(f.clone());
                Some(f)
            };
            let result_failures = sink::results_operator(
                outputs.published,
                out,
                sink_in_dataflow,
                unopened,
                results_failed,
            );
            // Every worker learns of a failure to write at `T` before its probe passes `T`: no
            // process commits offsets past what was lost.
            let failure_told = failure.clone();
            dead_failures
                .concat(result_failures)
                .broadcast()
                .inspect(move |f: &String| {
                    failure_told
                        .lock()
                        .expect("lock")
                        .get_or_insert_with(|| f.clone());
                })
                .probe_with(&probe);
        });
        // Tests only (debug builds): a worker that panics, as a bug would, after its first step
        // (`INDEX`) or once a file exists (`INDEX:PATH`).
        #[cfg(debug_assertions)]
        let panics: Option<Option<std::path::PathBuf>> =
            std::env::var("TAMPINES_TEST_PANIC_WORKER")
                .ok()
                .and_then(|v| {
                    let (worker, path) = v
                        .split_once(':')
                        .map_or((v.as_str(), None), |(w, p)| (w, Some(p)));
                    (worker == index.to_string()).then(|| path.map(Into::into))
                });
        while !probe.done() {
            // Park (up to 1 ms) when no operator has work: a live job waiting for input must not
            // spin, it would take the cores from librdkafka, the broker and Redis.
            worker.step_or_park(Some(Duration::from_millis(1)));
            #[cfg(debug_assertions)]
            if panics
                .as_ref()
                .is_some_and(|p| p.as_ref().is_none_or(|p| p.exists()))
            {
                panic!("worker {index} panicked as TAMPINES_TEST_PANIC_WORKER asks");
            }
            if worker_panicked.load(Ordering::Relaxed) {
                break; // joining the workers reports it
            }
            if let Some(r) = redis_sink.as_ref() {
                if let Some(e) = r.borrow().failed() {
                    // Nothing later can be written either. Exiting at once is the one way out of
                    // a live job (the other processes see the connection break and exit 1 too);
                    // offsets were committed only up to what Redis holds.
                    crate::say!("tampines: {e}");
                    crate::exit(1);
                }
            }
            let failed = worker_failure.lock().map_or(true, |f| f.is_some());
            if live && failed {
                // A live job never finishes to report a failure (a worker's inputs that could not
                // be opened, results that cannot be written): it stops at once, as a bounded one
                // reports at its end; before the offsets of what was not written are committed.
                let f = worker_failure.lock().ok().and_then(|f| f.clone());
                let f = f.unwrap_or_else(|| "a worker panicked".into());
                crate::say!("tampines: {f}");
                crate::exit(1);
            }
            // After a recorded failure (a bounded run's dead letter that was not delivered, say)
            // nothing more is committed: a run again reads from before it.
            if let (Some(hook), false) = (after_step.as_mut(), failed) {
                hook(&Written {
                    probe: &probe,
                    durable: durable.as_deref(),
                });
            }
        }
        let panicked = worker_panicked.load(Ordering::Relaxed);
        if panicked {
            // timely steps a worker's dataflows to their end once this closure returns: they
            // would never end. Nor is the Redis writer waited for: a live job's retries for
            // ever while Redis is down (what it has not written, a restart catches up on).
            for dataflow in worker.installed_dataflows() {
                worker.drop_dataflow(dataflow);
            }
            return;
        }
        if let Some(r) = redis_sink.as_ref() {
            if let Err(e) = r.borrow_mut().finish() {
                fail(e);
            }
        }
        let failed = worker_failure.lock().map_or(true, |f| f.is_some());
        if let (Some(hook), false) = (after_step.as_mut(), failed) {
            // The last commits wait for Redis to hold the last marks: worker 0 of process 0 has
            // written them by now; its peers and other processes learn it through the shared
            // sink state (or from Redis), so they poll, with a deadline.
            let deadline = std::time::Instant::now() + FINAL_COMMIT_PATIENCE;
            while !hook(&Written {
                probe: &probe,
                durable: durable.as_deref(),
            }) {
                if std::time::Instant::now() > deadline {
                    tracing::warn!(
                        worker = index,
                        "results not durable in time: last offsets not committed"
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(50)); // poll interval, bounded by the deadline
            }
        }
    })
    .map_err(|e| {
        // timely says a worker thread the system refused as the error's debug form alone
        // (`Os { code: 11, kind: WouldBlock, .. }`), which named neither the thread nor why.
        if e.contains("WouldBlock") || e.contains("code: 11,") {
            anyhow!("starting the workers' threads: {e} (the system refused a thread: too many for this user, `ulimit -u`, or too little memory)")
        } else {
            anyhow!(e)
        }
    })?;
    // Timely's communication threads panic when a connection to another process breaks, and
    // joining them panics in turn: a fatal runtime error (exit 1), not a crash (101).
    let recorded = || failure.lock().ok().and_then(|mut f| f.take());
    // timely says a panic as `Any { .. }`: the hook kept its message.
    let a_worker_panicked = || {
        let said = FIRST_PANIC.get().map_or("", |(_, said)| said.as_str());
        anyhow!("a worker panicked (a bug): {said}")
    };
    let joined = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guards.join())) {
        Ok(joined) => joined,
        // Its peers in other processes saw the connection break; it was here.
        Err(_) if FIRST_PANIC.get().is_some_and(|(ours, _)| *ours) => {
            return Err(a_worker_panicked())
        }
        Err(_) => {
            if let Some(f) = recorded() {
                return Err(anyhow!(f));
            }
            // A peer process's worker that panicked ends here too (the connection to it
            // broke): that process says so.
            return Err(anyhow!(
                "the connection between the job's processes broke (has one stopped? see above)"
            ));
        }
    };
    if joined.iter().any(Result::is_err) {
        return Err(a_worker_panicked());
    }
    if let Some(f) = recorded() {
        return Err(anyhow!(f));
    }
    Ok(stats.totals())
}

/// Sets its flag if dropped while its thread panics: a worker's peers learn that it is gone.
struct TellsPeersOfPanic(Arc<AtomicBool>);

impl Drop for TellsPeersOfPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// The first panic's message and place, for the job's closing line, and whether it was a bug
/// of the job's (a worker's or a reader's), not one of timely's communication threads, which
/// panic when a connection to another process breaks (the workers panic after them then).
static FIRST_PANIC: OnceLock<(bool, String)> = OnceLock::new();

/// Keeps the first panic's message in [`FIRST_PANIC`], then panics as before (Rust's own hook
/// says it on stderr, if stderr is still there). Installed once per process.
fn remember_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let said = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = (info.payload().downcast_ref::<&str>().copied())
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            let at = info
                .location()
                .map(|l| format!(" at {l}"))
                .unwrap_or_default();
            let name = std::thread::current().name().map(str::to_string);
            let ours =
                !name.is_some_and(|n| n.starts_with("timely:send") || n.starts_with("timely:recv"));
            let _ = FIRST_PANIC.set((ours, format!("{message}{at}")));
            said(info);
        }));
    });
}

/// `replay FILE...`: file `i` is input `i`, read by global worker [`reader`]`(i, workers)`.
///
/// [`reader`]: tampines_dataflows::source::reader
pub fn replay(files: Vec<std::path::PathBuf>, settings: Settings) -> Result<Totals> {
    let files = Arc::new(files);
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    // The files' number and lengths, not their paths: a file's reader follows its place in the
    // list, and each host may name its copy its own way. (A pipe's length is not known: 0.)
    let lengths: Vec<u64> = (files.iter())
        .map(|f| std::fs::metadata(f).map_or(0, |m| if m.is_file() { m.len() } else { 0 }))
        .collect();
    let inputs = crate::cluster::digest(&("files", lengths));
    run(
        settings,
        None,
        false,
        inputs,
        Arc::new(move |id| file_labels(&names, id)),
        move |index, peers| {
            let mine: Vec<_> = files
                .iter()
                .enumerate()
                .filter(|(i, _)| tampines_dataflows::source::reader(*i, peers) == index)
                .collect();
            // Regular files always have their next line: pausing cannot keep another worker's
            // input from coming. A pipe's writer may be waiting on this worker ([`ClosedBy`]).
            let regular = mine.iter().all(|(_, f)| crate::files::is_regular(f));
            let closed_by = if regular {
                ClosedBy::ThisWorker
            } else {
                ClosedBy::AllWorkers
            };
            let ahead = crate::files::ahead_per_file(mine.len());
            let mine = (mine.into_iter())
                .map(|(i, path)| {
                    // The system may refuse a thread (RLIMIT_NPROC): a failure, not a bug.
                    crate::files::open(path, i as u32, ahead).map_err(|e| {
                        anyhow!("starting the thread that reads {}: {e}", path.display())
                    })
                })
                .collect::<Result<_>>()?;
            Ok(WorkerInputs {
                inputs: Box::new(tampines_dataflows::source::LineInputs::new(mine)),
                after_step: None,
                closed_by,
            })
        },
        || Ok(None),
    )
}

/// A file's labels: its place among the inputs and its name. The name alone is not enough: label
/// values keep a few characters and 128 of them (`label_value`), so two names could give one
/// series twice, which Prometheus refuses.
fn file_labels(names: &[String], id: u32) -> crate::metrics::Labels {
    let file = names.get(id as usize).map(String::as_str).unwrap_or("");
    vec![
        ("input", id.to_string()),
        ("file", crate::metrics::label_value(file)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_whose_names_read_alike_have_labels_of_their_own() {
        let long = "d/".repeat(64);
        let names: Vec<String> = [
            "f a.ndjson",
            "f_a.ndjson",
            &(long.clone() + "x"),
            &(long + "y"),
        ]
        .map(String::from)
        .into();
        let labels: Vec<_> = (0..4).map(|id| file_labels(&names, id)).collect();
        assert_eq!(labels[0][1], labels[1][1]); // the names alone collide
        assert_eq!(labels[2][1], labels[3][1]);
        for (i, a) in labels.iter().enumerate() {
            for b in &labels[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(
            labels[1],
            vec![("input", "1".into()), ("file", "f_a.ndjson".into())]
        );
    }
}
