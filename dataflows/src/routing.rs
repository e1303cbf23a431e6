//! Routing: the source's records to the workers that own them, a container at a time.
//!
//! Input: the source's containers of [`SourceRecord`]s, each holding the records of one
//! destination worker ([`SourceRecord::route`]: events and names by symbol, dead letters to worker
//! 0, ends to their addressee), as the source builds them. Output: the same containers, each on
//! its worker, at the same times. A container that holds records of several workers (not one the
//! source made) is split record by record, as timely's exchange would.
//!
//! timely's `exchange` moves every record into a buffer per worker (68 source records of 120
//! bytes each) and sends the full ones: on the worker that reads the file, which at `-w 2` the
//! other worker waits for, that is a move and a push per record besides the source's own. The
//! source already keeps its records per worker ([`crate::source`]), so [`to_workers`] sends each
//! container whole to the worker of its records, after checking that they share it (a pass that
//! reads each record's route and moves nothing). A message then holds all of a worker's records
//! of one source activation (up to `source_batch` lines); between processes, the serialization
//! buffers grow to the largest message.
//!
//! The rendered records of every stage go to worker 0, which publishes them, the same way:
//! [`to_worker_zero`] sends their containers whole.
//!
//! Invariant: a record goes to the worker timely's exchange would send it to
//! ([`SourceRecord::worker`]; worker 0 for [`to_worker_zero`]), in the order it came.

use timely::communication::Push;
use timely::dataflow::channels::pact::DistributorPact;
use timely::dataflow::channels::pushers::exchange::Distributor;
use timely::dataflow::channels::Message;
use timely::dataflow::operators::Operator;
use timely::dataflow::StreamVec;

use crate::source::SourceRecord;

/// A source record with its timestamp.
type Timed = (SourceRecord, u64);

/// Sends each of the source's containers, whole, to the worker its records go to (see the
/// module doc).
pub fn to_workers<'s>(source: StreamVec<'s, u64, Timed>) -> StreamVec<'s, u64, Timed> {
    let pact = DistributorPact(|_peers| Whole);
    source.unary(pact, "ToWorkers", |_, _| {
        |input, output| {
            input.for_each_time(|time, data| output.session(&time).give_containers(data));
        }
    })
}

/// Distributes containers whole, by the route of their first record.
struct Whole;

impl Distributor<Vec<Timed>> for Whole {
    fn partition<T: Clone, P: Push<Message<T, Vec<Timed>>>>(
        &mut self,
        container: &mut Vec<Timed>,
        time: &T,
        pushers: &mut [P],
    ) {
        let peers = pushers.len() as u64;
        let worker_of = |(record, _): &Timed| record.worker(peers);
        let Some(worker) = container.first().map(worker_of) else {
            return;
        };
        if container.iter().all(|r| worker_of(r) == worker) {
            Message::push_at(container, time.clone(), &mut pushers[worker]);
            return;
        }
        let mut parts: Vec<Vec<Timed>> = pushers.iter().map(|_| Vec::new()).collect();
        for record in container.drain(..) {
            parts[worker_of(&record)].push(record);
        }
        for (part, pusher) in parts.iter_mut().zip(pushers.iter_mut()) {
            if !part.is_empty() {
                Message::push_at(part, time.clone(), pusher);
            }
        }
    }

    // Nothing is held back: every container went on as it came.
    fn flush<T: Clone, P: Push<Message<T, Vec<Timed>>>>(&mut self, _time: &T, _pushers: &mut [P]) {}
}

/// A pact that sends every container, whole, to worker 0 (the publisher), as an exchange by a
/// key of 0 would, without moving each record into a buffer: on the Flink file that was a move
/// and a push for each of 5.1M rendered records, on both workers.
pub fn to_worker_zero() -> DistributorPact<fn(usize) -> ToWorkerZero> {
    DistributorPact(|_peers| ToWorkerZero)
}

/// Distributes every container, whole, to worker 0.
pub struct ToWorkerZero;

impl<D> Distributor<Vec<D>> for ToWorkerZero {
    fn partition<T: Clone, P: Push<Message<T, Vec<D>>>>(
        &mut self,
        container: &mut Vec<D>,
        time: &T,
        pushers: &mut [P],
    ) {
        Message::push_at(container, time.clone(), &mut pushers[0]);
    }

    // Nothing is held back: every container went on as it came.
    fn flush<T: Clone, P: Push<Message<T, Vec<D>>>>(&mut self, _time: &T, _pushers: &mut [P]) {}
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use timely::dataflow::operators::vec::Delay;
    use timely::dataflow::operators::{Inspect, Probe, ToStream};
    use timely::dataflow::Scope;

    use super::*;
    use crate::config::Config;
    use crate::source::{lines, LineInput};
    use crate::stats::Stats;

    /// Every worker of three sends records at several times through [`to_worker_zero`]: each
    /// one arrives on worker 0, once, at its time, and a worker's records stay in their order.
    #[test]
    fn every_container_reaches_worker_zero_whole() {
        let received = Arc::new(Mutex::new(Vec::new()));
        let seen = received.clone();
        let workers = timely::execute(timely::Config::process(3), move |worker| {
            let index = worker.index() as u64;
            let seen = seen.clone();
            let probe = worker.dataflow::<u64, _, _>(|scope| {
                let sent = (0..100u64).map(move |i| (index, i)).to_stream(scope);
                // Records at ten times, so that the messages cover several.
                let timed = sent.delay(|&(_, i), _| i / 10);
                timed
                    .unary(to_worker_zero(), "ToZero", |_, _| {
                        |input, output| {
                            input.for_each_time(|t, data| {
                                output.session(&t).give_containers(data);
                            })
                        }
                    })
                    .inspect_time(move |time, &(from, i)| {
                        seen.lock().expect("lock").push((index, from, i, *time));
                    })
                    .probe()
                    .0
            });
            while !probe.done() {
                worker.step();
            }
        });
        workers
            .expect("timely starts")
            .join()
            .into_iter()
            .for_each(|r| r.expect("a worker ends"));
        let mut received = received.lock().expect("lock").clone();
        assert_eq!(received.len(), 300);
        assert!(
            received
                .iter()
                .all(|&(at, _, i, time)| at == 0 && time == i / 10),
            "{received:?}"
        );
        for from in 0..3 {
            let order: Vec<u64> = received
                .iter()
                .filter(|r| r.1 == from)
                .map(|r| r.2)
                .collect();
            assert_eq!(
                order,
                (0..100).collect::<Vec<_>>(),
                "records of worker {from}"
            );
        }
        received.sort();
        received.dedup();
        assert_eq!(received.len(), 300, "no record twice");
    }

    /// Each record that [`to_workers`] delivers on three workers, with the worker and its time,
    /// when `input` (given a worker's index and the number of workers) makes its input stream.
    fn routed_on_three_workers<F>(input: F) -> Vec<(usize, SourceRecord, u64)>
    where
        F: for<'s> Fn(Scope<'s, u64>, usize, usize) -> StreamVec<'s, u64, Timed>
            + Send
            + Sync
            + 'static,
    {
        let received = Arc::new(Mutex::new(Vec::new()));
        let seen = received.clone();
        let workers = timely::execute(timely::Config::process(3), move |worker| {
            let (index, peers) = (worker.index(), worker.peers());
            let seen = seen.clone();
            let probe = worker.dataflow::<u64, _, _>(|scope| {
                to_workers(input(scope, index, peers))
                    .inspect(move |(record, time): &Timed| {
                        let delivered = (index, record.clone(), *time);
                        seen.lock().expect("lock").push(delivered);
                    })
                    .probe()
                    .0
            });
            while !probe.done() {
                worker.step();
            }
        });
        let results = workers.expect("timely starts").join();
        results.into_iter().for_each(|r| r.expect("a worker ends"));
        let received = received.lock().expect("lock");
        received.clone()
    }

    /// Two inputs read by two of three workers: every record (events and names by symbol, dead
    /// letters, ends) reaches exactly the worker of its route, with the timestamp it was
    /// stamped at (an event's by the contract: `ts` rounded up to the granularity), and none is
    /// lost or sent twice.
    #[test]
    fn every_record_reaches_the_worker_of_its_route() {
        let input = |n: u64| -> Vec<String> {
            let mut lines: Vec<String> = (0..200u64)
                .map(|i| {
                    format!(
                        r#"{{"type":"trade","exchange":"ex{n}","symbol":"S{}","ts":{},"id":"{i}","price":"1","qty":"1","side":"buy"}}"#,
                        i % 13,
                        1_000 + i * 37
                    )
                })
                .collect();
            lines.insert(50, "not json".to_string());
            lines
        };
        let inputs = [input(0), input(1)];
        let received = routed_on_three_workers(move |scope, index, peers| {
            let mine: Vec<LineInput> = (0..2)
                .filter(|&i| crate::source::reader(i, peers) == index)
                .map(|i| LineInput::text(i as u32, Box::new(inputs[i].clone().into_iter().map(Ok))))
                .collect();
            lines(
                scope,
                mine,
                Arc::new(Config::default()),
                Arc::new(Stats::default()),
            )
        });
        let (mut events, mut names, mut dead, mut ends) = (0, 0, 0, 0);
        for (worker, record, time) in &received {
            assert_eq!(
                record.route() % 3,
                *worker as u64,
                "{record:?} on worker {worker}"
            );
            match record {
                SourceRecord::Event(s) => {
                    events += 1;
                    assert_eq!(*time, s.event.ts.div_ceil(100) * 100, "{record:?}");
                }
                SourceRecord::Name(..) => names += 1,
                SourceRecord::Dead(_) => dead += 1,
                SourceRecord::End { .. } => ends += 1,
            }
        }
        // Every worker's source, with an input or without, sends every worker an end; names go
        // once per input and symbol.
        assert_eq!((events, names, dead, ends), (400, 26, 2, 9));
    }

    /// Containers that mix workers' records (not as the source makes them) are split record by
    /// record: each record still reaches the worker of its route, in the order sent.
    #[test]
    fn mixed_containers_are_split_by_record() {
        let received = routed_on_three_workers(|scope, index, _peers| {
            let records: Vec<Timed> = (0..30u64)
                .filter(|_| index == 0)
                .map(|i| (SourceRecord::End { last: i, to: i * 7 }, 5))
                .collect();
            records.to_stream(scope)
        });
        let mut lasts: Vec<Vec<u64>> = vec![Vec::new(); 3];
        for (worker, record, time) in &received {
            let SourceRecord::End { last, to } = record else {
                panic!("{record:?}");
            };
            assert_eq!((to % 3, *time), (*worker as u64, 5), "{record:?}");
            lasts[*worker].push(*last);
        }
        let expected: Vec<Vec<u64>> = (0..3u64)
            .map(|w| (0..30).filter(|i| i * 7 % 3 == w).collect())
            .collect();
        assert_eq!(lasts, expected);
    }
}
