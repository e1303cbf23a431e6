//! Runs the real dataflow in-process over in-memory inputs and collects what it publishes.
//!
//! Input: lists of lines, one list an input (as a file or a Kafka partition is), read as text
//! or parsed ahead in batches ([`Reading`]), by the worker the job would give each input.
//! Output: a [`Run`]: every published batch in order, the dead letters, the counters and the
//! stages' state gauges at the end, for [`crate::check`] to compare with the model. It is the
//! job's dataflow ([`tampines_dataflows::build`]) without its I/O: no files, Kafka or sinks.

use std::sync::{Arc, Mutex};

use tampines_dataflows::ahead::{Ahead, ReadAhead};
use tampines_dataflows::config::Config;
use tampines_dataflows::results::Published;
use tampines_dataflows::source::{lines, DeadLetter, LineInput};
use tampines_dataflows::stats::{StateCounts, Stats, Totals};
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
    /// The stages' state gauges once the run ended.
    pub state: StateCounts,
}

/// How the inputs reach the source.
#[derive(Clone, Copy, Debug)]
pub enum Reading {
    /// As lines of text, parsed by the source (Kafka partitions, the job's own tests).
    Lines,
    /// Parsed ahead (as files are) into batches of this many lines, each batch once not ready
    /// at first (the source then finds its input pending).
    Ahead(usize),
}

/// Runs `inputs` through the dataflow with `workers` threads; input `i` is read by worker
/// [`reader`]`(i, workers)`, as in the job.
///
/// [`reader`]: tampines_dataflows::source::reader
pub fn run(inputs: &[Vec<String>], config: &Config, workers: usize, reading: Reading) -> Run {
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
            .map(|(i, lines)| match reading {
                Reading::Lines => {
                    let lines = lines.clone().into_iter().map(Ok);
                    LineInput::text(i as u32, Box::new(lines))
                }
                Reading::Ahead(n) => {
                    // Chunks of `n` lines, as a file's reader thread reads them: lines end
                    // with a line feed (in every other chunk with a carriage return before
                    // it), except the input's last.
                    let (mut batches, mut ahead) = (Vec::new(), ReadAhead::default());
                    for (c, chunk) in lines.chunks(n.max(1)).enumerate() {
                        let end = if c % 2 == 0 { "\n" } else { "\r\n" };
                        let mut text = chunk.join(end);
                        if (c + 1) * n.max(1) < lines.len() {
                            text.push_str(end);
                        }
                        let batch = ahead.batch(text.into_bytes());
                        batches.extend([Ahead::NotYet, Ahead::Batch(batch)]);
                    }
                    LineInput::ahead(i as u32, Box::new(batches.into_iter()))
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
        state: stats.state.counts(),
    }
}
