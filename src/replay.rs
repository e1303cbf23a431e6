//! `replay`: the dataflow over event files, results to NDJSON, dead letters to a file.
//!
//! File `i` of the command line is input `i`, read by global worker `i % workers`. Every process
//! gets the same options; process 0's worker 0 publishes and writes the dead letters.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Result};
use tampines_dataflows::stats::{Stats, Totals};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Probe;

use crate::cli::Settings;
use crate::{files, sink};

/// Runs a replay to completion and returns the process's counters.
pub fn run(files_in: Vec<PathBuf>, settings: Settings) -> Result<Totals> {
    let stats = Arc::new(Stats::default());
    let config = Arc::new(settings.config.clone());
    let timely_config =
        timely::Config::from_args(settings.timely.clone().into_iter()).map_err(|e| anyhow!(e))?;
    let files_in = Arc::new(files_in);
    let worker_stats = stats.clone();
    let out_target = settings.out.clone();
    let dlq_target = settings.dlq.clone();
    let failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let worker_failure = failure.clone();
    let guards = timely::execute(timely_config, move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let inputs = files_in
            .iter()
            .enumerate()
            .filter(|(i, _)| i % peers == index)
            .map(|(i, path)| files::open(path, i as u32))
            .collect::<Vec<_>>();
        let publishing = index == 0;
        let mut out = match (publishing, &out_target) {
            (true, Some(t)) => match sink::writer(t) {
                Ok(w) => Some(w),
                Err(e) => {
                    *worker_failure.lock().expect("lock") = Some(format!("{e:#}"));
                    None
                }
            },
            _ => None,
        };
        let mut dlq = match (publishing, &dlq_target) {
            (true, Some(p)) => match sink::dlq_writer(p) {
                Ok(w) => Some(w),
                Err(e) => {
                    *worker_failure.lock().expect("lock") = Some(format!("{e:#}"));
                    None
                }
            },
            _ => None,
        };
        let config = config.clone();
        let stats = worker_stats.clone();
        let failure = worker_failure.clone();
        let probe = worker.dataflow::<u64, _, _>(|scope| {
            let source = tampines_dataflows::source::lines(scope, inputs, config.clone(), stats.clone());
            let outputs = tampines_dataflows::build(source, config, stats);
            let failure_dead = failure.clone();
            outputs.dead.sink(Pipeline, "DeadLetterSink", move |(input, frontier)| {
                input.for_each(|_, data| {
                    for dead in data.drain(..) {
                        tracing::warn!(reason = %dead.reason, input = dead.pos.0, line = dead.pos.1, "dead letter");
                        if let Some(w) = dlq.as_mut() {
                            if let Err(e) = sink::write_dead(w.as_mut(), &dead) {
                                *failure_dead.lock().expect("lock") = Some(format!("writing dead letters: {e}"));
                            }
                        }
                    }
                });
                if frontier.is_empty() {
                    if let Some(w) = dlq.as_mut() {
                        let _ = w.flush();
                    }
                }
            });
            let (probe, published) = outputs.published.probe();
            published.sink(Pipeline, "NdjsonSink", move |(input, frontier)| {
                input.for_each(|_, data| {
                    for batch in data.drain(..) {
                        if let Some(w) = out.as_mut() {
                            if let Err(e) = sink::write_batch(w.as_mut(), &batch) {
                                // A closed pipe (`| head`) means the reader is done: stop writing quietly.
                                if e.kind() != std::io::ErrorKind::BrokenPipe {
                                    *failure.lock().expect("lock") = Some(format!("writing results: {e}"));
                                }
                                out = None;
                                break;
                            }
                        }
                    }
                });
                if frontier.is_empty() {
                    if let Some(w) = out.as_mut() {
                        if let Err(e) = w.flush().filter_broken_pipe() {
                            *failure.lock().expect("lock") = Some(format!("writing results: {e}"));
                        }
                    }
                }
            });
            probe
        });
        while !probe.done() {
            worker.step();
        }
    })
    .map_err(|e| anyhow!(e))?;
    let results = guards.join();
    for r in results {
        r.map_err(|e| anyhow!("worker failed: {e}"))?;
    }
    if let Some(f) = failure.lock().expect("lock").take() {
        return Err(anyhow!(f));
    }
    Ok(stats.totals())
}

/// Treats a closed pipe as success: the reader has what it wanted.
trait FilterBrokenPipe {
    fn filter_broken_pipe(self) -> std::io::Result<()>;
}

impl FilterBrokenPipe for std::io::Result<()> {
    fn filter_broken_pipe(self) -> std::io::Result<()> {
        match self {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }
}
