//! The one frontier-driven operator shape that every stateful stage uses.
//!
//! [`sequence`] buffers its input by timestamp and hands each timestamp's records to the stage's
//! logic once the timestamp is complete (the input frontier has passed it), in increasing time
//! order. The logic may also ask to be woken at a later timestamp (a window expiry, a candle
//! close) through [`Timers`]; it is woken once that timestamp is complete, with no records if none
//! arrived for it.
//!
//! Invariants:
//! - one capability is held, at the earliest buffered or scheduled timestamp (and no later than
//!   the input frontiers), and only ever moves forward; updates for a future time are released
//!   when that time completes, never earlier, so no later stage holds pending future updates
//!   (pending future times are what made differential arrangements slow, when the stages were
//!   built on them);
//! - every output record carries its own timestamp, and the records of all the timestamps that
//!   complete in one activation go out together, at the held capability (a source activation often
//!   completes many sparse timestamps: one session and container per timestamp per stage cost
//!   more than the stages' work there);
//! - the second input carries the last mark of each finished source (CONTRACT section 2: results
//!   are not advanced past the data). Once both inputs are finished, timers up to the largest last
//!   mark still fire and later ones are dropped, so a finite input ends at its last mark.

use std::collections::{BTreeMap, BTreeSet};

use timely::dataflow::channels::pact::{ParallelizationContract, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use timely::dataflow::StreamVec;

/// Wake-up requests of a stage.
#[derive(Debug, Default)]
pub struct Timers {
    pending: BTreeSet<u64>,
}

impl Timers {
    /// Wakes the stage at `time` (which must be later than the current time).
    pub fn schedule(&mut self, time: u64) {
        self.pending.insert(time);
    }
}

/// Runs `logic(time, records, timers, output)` for each complete timestamp, in time order, and
/// `finish(last_mark, output)` once when both inputs are exhausted. `time_of` gives a record's
/// timestamp (never earlier than the timely time it travels at); the logic's output records must
/// carry theirs too, as they travel at the held capability, which may be earlier.
/// `records` are in arrival order; the logic sorts them if it needs a deterministic order.
pub fn sequence<'s, D, O, P, L, F>(
    data: StreamVec<'s, u64, D>,
    ends: StreamVec<'s, u64, u64>,
    pact: P,
    name: &str,
    time_of: fn(&D) -> u64,
    mut logic: L,
    mut finish: F,
) -> StreamVec<'s, u64, O>
where
    D: Clone + 'static,
    O: Clone + 'static,
    P: ParallelizationContract<u64, Vec<D>>,
    L: FnMut(u64, Vec<D>, &mut Timers, &mut Vec<O>) + 'static,
    F: FnMut(Option<u64>, &mut Vec<O>) + 'static,
{
    data.binary_frontier(ends, pact, Pipeline, name, move |initial, _info| {
        // Per timestamp, its records in the batches they came in.
        let mut stash: BTreeMap<u64, Vec<Vec<D>>> = BTreeMap::new();
        let mut timers = Timers::default();
        let mut cap: Option<Capability<u64>> = Some(initial);
        let mut last_mark: Option<u64> = None;
        let mut out: Vec<O> = Vec::new();
        // Runs of one time cut from a batch of several, back first.
        let mut cut: Vec<(u64, Vec<D>)> = Vec::new();
        move |(input, frontier), (ends, ends_frontier), output| {
            input.for_each(|_time, data| {
                // A batch is usually all of one timestamp: it is stashed whole, not record by
                // record (records can be large: events with their levels, rendered changes), and
                // not appended to the timestamp's earlier batches either (a vector grown batch
                // by batch copied its records again at every doubling).
                let single = data
                    .first()
                    .map(time_of)
                    .filter(|&first| data.iter().all(|r| time_of(r) == first));
                match single {
                    Some(time) => stash.entry(time).or_default().push(std::mem::take(data)),
                    None => {
                        // A run of one time (usual: a batch spans a few timestamps in order)
                        // goes into its entry with one lookup. Runs are cut off the back, each
                        // copied once into a vector of its size, the first one keeping the
                        // batch's (records pushed one by one into growing vectors were most of
                        // the gathering worker's stashing on the Flink file), and stashed front
                        // first, so that a timestamp's records stay in arrival order.
                        let mut batch = std::mem::take(data);
                        let mut end = batch.len();
                        while end > 0 {
                            let time = time_of(&batch[end - 1]);
                            let start = batch[..end]
                                .iter()
                                .rposition(|r| time_of(r) != time)
                                .map_or(0, |i| i + 1);
                            let run = if start == 0 {
                                std::mem::take(&mut batch)
                            } else {
                                batch.split_off(start)
                            };
                            cut.push((time, run));
                            end = start;
                        }
                        for (time, run) in cut.drain(..).rev() {
                            stash.entry(time).or_default().push(run);
                        }
                    }
                }
            });
            ends.for_each(|_time, data| {
                for mark in data.drain(..) {
                    last_mark = Some(last_mark.map_or(mark, |m| m.max(mark)));
                }
            });
            let Some(c) = cap.as_mut() else { return };
            let finished = frontier.is_empty() && ends_frontier.is_empty();
            let complete = |t: u64| {
                if finished {
                    last_mark.is_some_and(|last| t <= last)
                } else {
                    !frontier.less_equal(&t) && !ends_frontier.less_equal(&t)
                }
            };
            loop {
                let next_data = stash.keys().next().copied();
                let next_timer = timers.pending.iter().next().copied();
                let Some(next) = next_data.into_iter().chain(next_timer).min() else {
                    break;
                };
                // Buffered records are never dropped: every data time is at most the last mark.
                if !(complete(next) || (finished && next_data == Some(next))) {
                    break;
                }
                timers.pending.remove(&next);
                let records = concat(stash.remove(&next).unwrap_or_default());
                logic(next, records, &mut timers, &mut out);
            }
            if !out.is_empty() {
                // At the held capability: no later than any time just completed. Handed on as
                // one container, moved: copied record by record into timely's buffers of 8 KiB,
                // the copies took 2-3% of the workers' samples. The next activation's vector is
                // made as large as this one's.
                let len = out.len();
                output.session(c).give_container(&mut out);
                out.clear();
                out.reserve(len);
            }
            if finished {
                finish(last_mark, &mut out);
                if !out.is_empty() {
                    let at = last_mark.unwrap_or(0).max(*c.time());
                    output.session(&c.delayed(&at)).give_iterator(out.drain(..));
                }
                cap = None;
                return;
            }
            let held = [
                stash.keys().next().copied(),
                timers.pending.iter().next().copied(),
                frontier.frontier().iter().next().copied(),
                ends_frontier.frontier().iter().next().copied(),
            ];
            if let Some(t) = held.into_iter().flatten().min() {
                c.downgrade(&t.max(*c.time()));
            }
        }
    })
}

/// The records of `batches`, in order, moved once.
fn concat<D>(mut batches: Vec<Vec<D>>) -> Vec<D> {
    if batches.len() == 1 {
        return batches.pop().unwrap_or_default();
    }
    let mut all = Vec::with_capacity(batches.iter().map(Vec::len).sum());
    batches.into_iter().for_each(|b| all.extend(b));
    all
}

/// A `finish` for stages with nothing to add at the end.
pub fn no_finish<O>(_last: Option<u64>, _out: &mut Vec<O>) {}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use timely::dataflow::operators::ToStream;

    use super::*;

    /// Records of several times in one batch, interleaved, reach the logic per time, in
    /// increasing time, each time's records in arrival order.
    #[test]
    fn each_time_gets_its_records_in_arrival_order() {
        let times = [5, 6, 5, 7, 7, 6, 5, 9, 9];
        let records: Vec<(u64, usize)> = times.iter().copied().zip(0..).collect();
        let got = timely::execute_directly(move |worker| {
            let got = Rc::new(RefCell::new(Vec::new()));
            let seen = got.clone();
            worker.dataflow::<u64, _, _>(|scope| {
                let data = records.clone().to_stream(scope);
                let ends = Vec::<u64>::new().to_stream(scope);
                sequence(
                    data,
                    ends,
                    Pipeline,
                    "Test",
                    |r: &(u64, usize)| r.0,
                    move |time, records, _timers, _out: &mut Vec<()>| {
                        let order: Vec<usize> = records.iter().map(|r| r.1).collect();
                        seen.borrow_mut().push((time, order));
                    },
                    no_finish,
                );
            });
            while worker.step() {}
            got.take()
        });
        let expected = vec![
            (5, vec![0, 2, 6]),
            (6, vec![1, 5]),
            (7, vec![3, 4]),
            (9, vec![7, 8]),
        ];
        assert_eq!(got, expected);
    }
}
