//! Runs the real dataflow in-process over in-memory inputs and collects what it publishes.

use std::sync::{Arc, Mutex};

use tampines_dataflows::config::Config;
use tampines_dataflows::results::Published;
use tampines_dataflows::source::{lines, DeadLetter, LineInput};
use tampines_dataflows::stats::{Stats, Totals};
use timely::dataflow::operators::{Inspect, Probe};

/// What one run produced.
#[derive(Debug)]
pub struct Run {
    /// Published batches, in order.
    pub published: Vec<Published>,
    /// Dead letters, sorted by position.
    pub dead: Vec<DeadLetter>,
    /// Counters.
    pub totals: Totals,
}

/// Runs `inputs` through the dataflow with `workers` threads; input `i` is read by worker
/// [`reader`]`(i, workers)`, as in the job.
///
/// [`reader`]: tampines_dataflows::source::reader
pub fn run(inputs: &[Vec<String>], config: &Config, workers: usize) -> Run {
    let inputs = Arc::new(inputs.to_vec());
    let config = Arc::new(config.clone());
    let stats = Arc::new(Stats::default());
    let published = Arc::new(Mutex::new(Vec::new()));
    let dead = Arc::new(Mutex::new(Vec::new()));
    let (p, d, s) = (published.clone(), dead.clone(), stats.clone());
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let mine: Vec<LineInput> = inputs
            .iter()
            .enumerate()
            .filter(|(i, _)| tampines_dataflows::source::reader(*i, peers) == index)
            .map(|(i, lines)| {
                let lines = lines.clone().into_iter().map(Ok);
                LineInput {
                    id: i as u32,
                    lines: Box::new(lines),
                }
            })
            .collect();
        let (config, stats, p, d) = (config.clone(), s.clone(), p.clone(), d.clone());
        let probe = worker.dataflow::<u64, _, _>(move |scope| {
            let source = lines(scope, mine, config.clone(), stats.clone());
            let out = tampines_dataflows::build(source, config, stats);
            out.dead
                .inspect(move |x| d.lock().expect("lock").push(x.clone()));
            out.published
                .inspect(move |x| p.lock().expect("lock").push(x.clone()))
                .probe()
                .0
        });
        while !probe.done() {
            worker.step();
        }
    })
    .expect("timely starts")
    .join()
    .into_iter()
    .for_each(|r| r.expect("worker finished"));
    let published = std::mem::take(&mut *published.lock().expect("lock"));
    let mut dead = std::mem::take(&mut *dead.lock().expect("lock"));
    dead.sort_by_key(|d| d.pos);
    Run {
        published,
        dead,
        totals: stats.totals(),
    }
}
