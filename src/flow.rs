//! Flow control: a worker's reading pauses while the Redis writer is far behind, and while too
//! much of what it read is closed but not yet written.
//!
//! Invariant: records stamped at or above the source's capability (for a worker that reads a
//! pipe, the capability of every worker's sources) are never counted, so a pause always ends
//! once the results' frontier (the probe) passes what was counted.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tampines_dataflows::source::Inputs;
use timely::dataflow::ProbeHandle;

use crate::metrics::metrics;
use crate::redis_sink::SinkState;

/// Flow control around a worker's inputs: reading pauses while the Redis sink is far behind, and
/// while too much closed input is still in flight.
///
/// timely has no backpressure of its own: a worker that reads faster than the dataflow (or than
/// the workers its records are routed to) completes them would queue them without bound, and
/// each distinct timestamp in flight holds state in every stage. So the records this worker
/// stamped below its source's capability (they can complete without more input) are counted
/// until the results' frontier (the probe) passes them, and reading pauses while more than
/// [`IN_FLIGHT_RECORDS`] of them, or [`IN_FLIGHT_TIMES`] distinct timestamps, are in flight.
/// Records at or above the capability are never counted, so a pause always ends. For a worker
/// that reads a pipe, only what every worker's sources closed counts ([`crate::job::ClosedBy`]).
pub struct Throttled {
    inputs: Box<dyn Inputs>,
    sink: Arc<SinkState>,
    probe: ProbeHandle<u64>,
    /// Every worker's sources' frontier, where only what they all closed counts
    /// ([`crate::job::ClosedBy::AllWorkers`]).
    sources: Option<ProbeHandle<u64>>,
    /// Records stamped per timestamp, not yet passed by the probe.
    in_flight: std::collections::BTreeMap<u64, usize>,
    /// The source's capability.
    frontier: u64,
    /// The last congestion check's answer, and calls of `next` since it.
    congested: bool,
    calls: u32,
    /// The last call of `next` paused (counted in [`Metrics::workers_paused`]).
    ///
    /// [`Metrics::workers_paused`]: crate::metrics::Metrics::workers_paused
    pausing: bool,
}

/// Closed records in flight per worker before reading pauses.
pub const IN_FLIGHT_RECORDS: usize = 200_000;
/// Distinct closed timestamps in flight per worker before reading pauses.
pub const IN_FLIGHT_TIMES: usize = 2_048;

impl Throttled {
    /// `inputs` under flow control: `sink` says whether Redis's writer is behind, `probe`
    /// follows the written results, `sources` (if given) every worker's sources.
    pub fn new(
        inputs: Box<dyn Inputs>,
        sink: Arc<SinkState>,
        probe: ProbeHandle<u64>,
        sources: Option<ProbeHandle<u64>>,
    ) -> Throttled {
        Throttled {
            inputs,
            sink,
            probe,
            sources,
            in_flight: Default::default(),
            frontier: 0,
            congested: false,
            calls: 0,
            pausing: false,
        }
    }

    /// True while too much closed input waits for the results' frontier; checked at most every
    /// 256 lines while reading (each check walks the in-flight timestamps), at every call while
    /// paused.
    fn congested(&mut self) -> bool {
        self.calls += 1;
        if self.congested || self.calls >= 256 {
            self.calls = 0;
            self.congested = self.check();
        }
        self.congested
    }

    fn check(&mut self) -> bool {
        let done = self.probe.with_frontier(|f| f.first().copied());
        match done {
            None => self.in_flight.clear(),
            Some(done) => {
                let pending = self.in_flight.split_off(&done);
                self.in_flight = pending;
            }
        }
        // Below every worker's sources' frontier, where asked (none: all have ended).
        let joint = (self.sources.as_ref()).and_then(|s| s.with_frontier(|f| f.first().copied()));
        let closed = self
            .in_flight
            .range(..joint.map_or(self.frontier, |j| j.min(self.frontier)));
        let (times, records) = closed.fold((0, 0), |(t, r), (_, n)| (t + 1, r + n));
        times > IN_FLIGHT_TIMES || records > IN_FLIGHT_RECORDS
    }
}

impl Drop for Throttled {
    fn drop(&mut self) {
        if self.pausing {
            metrics().workers_paused.dec();
        }
    }
}

impl Inputs for Throttled {
    fn next(&mut self) -> tampines_dataflows::source::Next {
        let pause = self.sink.backpressure.load(Ordering::Relaxed) || self.congested();
        if pause != self.pausing {
            self.pausing = pause;
            metrics().workers_paused.inc_by(if pause { 1 } else { -1 });
        }
        if pause {
            return tampines_dataflows::source::Next::Pending;
        }
        self.inputs.next()
    }
    fn known(&self) -> Vec<u32> {
        self.inputs.known()
    }
    fn stamped(&mut self, input: u32, offset: u64, time: u64, lines: usize) {
        *self.in_flight.entry(time).or_default() += lines;
        self.inputs.stamped(input, offset, time, lines)
    }
    fn paused(&self) -> bool {
        self.sink.backpressure.load(Ordering::Relaxed) || self.congested || self.inputs.paused()
    }
    fn progressed(&mut self, frontier: u64) {
        self.frontier = frontier;
        self.inputs.progressed(frontier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tampines_dataflows::source::Next;
    use timely::container::CapacityContainerBuilder;
    use timely::dataflow::operators::Probe;
    use timely::dataflow::InputHandle;

    /// Inputs that never answer `Pending`: a `Pending` from `Throttled` around them is its own
    /// pause.
    struct Ready;

    impl Inputs for Ready {
        fn next(&mut self) -> Next {
            Next::Finished(0)
        }
        fn known(&self) -> Vec<u32> {
            vec![0]
        }
    }

    /// Reading pauses while more than `IN_FLIGHT_TIMES` distinct closed timestamps, or more than
    /// `IN_FLIGHT_RECORDS` closed records, are in flight, and resumes as the results' frontier
    /// passes them; records at or above the source's capability are never counted.
    #[test]
    fn flow_control_counts_closed_records_until_the_results_pass_them() {
        let _turn = PAUSING.lock().unwrap_or_else(|e| e.into_inner());
        timely::execute_directly(|worker| {
            let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<()>>>::new();
            let probe = ProbeHandle::new();
            worker.dataflow(|scope| {
                input.to_stream(scope).probe_with(&probe);
            });
            let mut throttled = Throttled::new(
                Box::new(Ready),
                Arc::new(SinkState::default()),
                probe.clone(),
                None,
            );
            let reads = |t: &mut Throttled| !matches!(t.next(), Next::Pending);
            // One line at each of IN_FLIGHT_TIMES + 1 timestamps, all closed (below 10,000).
            for time in 0..=IN_FLIGHT_TIMES as u64 {
                throttled.stamped(0, time, time, 1);
            }
            throttled.progressed(10_000);
            assert!(throttled.check(), "2,049 closed timestamps in flight");
            // The results pass the first one: IN_FLIGHT_TIMES are left, which is not too many.
            input.advance_to(1);
            while probe.less_than(&1) {
                worker.step();
            }
            assert!(!throttled.check(), "2,048 closed timestamps in flight");
            assert_eq!(throttled.in_flight.len(), IN_FLIGHT_TIMES);

            // Records at one timestamp: IN_FLIGHT_RECORDS do not pause reading, one more does,
            // but only once the capability is past them (while it is at them they may grow).
            input.advance_to(20_000);
            while probe.less_than(&20_000) {
                worker.step();
            }
            assert!(!throttled.check(), "everything passed");
            assert!(throttled.in_flight.is_empty());
            throttled.stamped(0, 0, 30_000, IN_FLIGHT_RECORDS);
            throttled.progressed(30_001);
            assert!(!throttled.check(), "200,000 closed records in flight");
            throttled.progressed(30_000);
            throttled.stamped(0, 0, 30_000, 1);
            assert!(!throttled.check(), "open records are not counted");
            throttled.progressed(30_001);
            assert!(throttled.check(), "200,001 closed records in flight");
            // Reading checks every 256 calls: it pauses within as many.
            let calls = (1..=256).find(|_| !reads(&mut throttled));
            assert!(calls.is_some(), "reading goes on past 256 calls");
            assert!(!reads(&mut throttled));
            // Time paused is no silence of the inputs (`source::unwatched`): it does not make
            // them idle.
            assert!(throttled.paused(), "paused by flow control");
            // While paused, every call checks again: the one right after the results pass the
            // records reads (below).
            input.advance_to(30_001);
            while probe.less_than(&30_001) {
                worker.step();
            }
            // The first call after the results passed them reads again.
            assert!(reads(&mut throttled));
            assert!(!throttled.paused());
            assert!(throttled.in_flight.is_empty());
        });
    }

    /// The paused workers' gauge counts a worker once while it pauses (for Redis, here), and no
    /// longer once it reads again or is dropped while paused. The gauge is the process's: the
    /// tests that pause take turns ([`PAUSING`]).
    #[test]
    fn the_paused_workers_gauge_follows_the_pauses() {
        let _turn = PAUSING.lock().unwrap_or_else(|e| e.into_inner());
        let gauge = || metrics().workers_paused.get();
        let before = gauge();
        let sink = Arc::new(SinkState::default());
        let mut throttled = Throttled::new(Box::new(Ready), sink.clone(), ProbeHandle::new(), None);
        let behind = |yes: bool| sink.backpressure.store(yes, Ordering::Relaxed);
        behind(true);
        assert!(matches!(throttled.next(), Next::Pending));
        assert!(matches!(throttled.next(), Next::Pending));
        assert_eq!(gauge(), before + 1, "one worker paused");
        behind(false);
        assert!(matches!(throttled.next(), Next::Finished(0)));
        assert_eq!(gauge(), before, "reading again");
        behind(true);
        assert!(matches!(throttled.next(), Next::Pending));
        drop(throttled);
        assert_eq!(gauge(), before, "dropped while paused");
    }

    /// Held by the tests that pause a [`Throttled`], which counts in the process's gauge.
    static PAUSING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// With every worker's sources' frontier (a worker that reads a pipe), only what they all
    /// closed counts: this worker's closed timestamps at or above another source's capability
    /// never pause it.
    #[test]
    fn with_files_only_what_every_source_closed_counts() {
        timely::execute_directly(|worker| {
            let mut results = InputHandle::<u64, CapacityContainerBuilder<Vec<()>>>::new();
            let mut other = InputHandle::<u64, CapacityContainerBuilder<Vec<()>>>::new();
            let (probe, sources) = (ProbeHandle::new(), ProbeHandle::new());
            worker.dataflow(|scope| {
                results.to_stream(scope).probe_with(&probe);
                other.to_stream(scope).probe_with(&sources);
            });
            let mut throttled = Throttled::new(
                Box::new(Ready),
                Arc::new(SinkState::default()),
                probe.clone(),
                Some(sources.clone()),
            );
            for time in 0..=IN_FLIGHT_TIMES as u64 {
                throttled.stamped(0, time, time, 1);
            }
            throttled.progressed(10_000);
            assert!(
                !throttled.check(),
                "another source is at 0: none closed by all"
            );
            let mut other_at = |time: u64| {
                other.advance_to(time);
                while sources.less_than(&time) {
                    worker.step();
                }
            };
            other_at(IN_FLIGHT_TIMES as u64);
            assert!(!throttled.check(), "2,048 closed by all");
            other_at(IN_FLIGHT_TIMES as u64 + 1);
            assert!(throttled.check(), "2,049 closed by all");
        });
    }
}
