//! Dead letters besides the dataflow's own stream: the `DeadLetterSink` operator on worker 0
//! ([`sink_operator`]), where they are written (a `--dlq` file here, a Kafka topic in `kafka`),
//! and how they are logged (at most a few a second, the rest counted).
//!
//! Invariants: every dead letter is counted and handed to each sink that has not failed;
//! logging may only summarise. A sink that fails to write one fails a bounded run (`replay`,
//! `run --until-end`: exit 1, and no offsets committed; the failed sink is dropped, as every
//! later letter would fail there too), while a live run logs it at error, keeps the sink and
//! goes on ([`write_each`]): stopping would meet the same message again at the restart.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use tampines_dataflows::source::DeadLetter;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use crate::metrics::{metrics, InputLabels};
use crate::sink::{self, keep_earliest, Notices};

/// Where dead letters go besides the log.
pub trait DeadLetterSink {
    /// Writes one dead letter.
    fn write(&mut self, dead: &DeadLetter) -> Result<()>;
    /// Flushes what was written (at the end of the run).
    fn flush(&mut self) -> Result<()>;
    /// Called after each activation that wrote dead letters: what a reader must see now
    /// (a file's buffer; a Kafka producer sends on its own).
    fn written(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Does `what` with every sink. In a bounded run a sink that fails is dropped (the run has
/// failed, and every later letter would fail again) and its failure returned, to be told to
/// every worker; in a live run `failed` logs it and returns None, and the sink is kept (a broker
/// may take the next one).
pub fn write_each(
    sinks: &mut Vec<Box<dyn DeadLetterSink>>,
    mut what: impl FnMut(&mut dyn DeadLetterSink) -> Result<()>,
    failed: &impl Fn(anyhow::Error) -> Option<String>,
) -> Option<String> {
    let mut told = None;
    sinks.retain_mut(|s| match what(s.as_mut()).err().and_then(failed) {
        Some(f) => {
            told.get_or_insert(f);
            false
        }
        None => true,
    });
    told
}

/// The `DeadLetterSink` operator (worker 0): counts each dead letter by reason, logs it
/// ([`DeadLetterLog`]) and hands it to every sink, whose buffers it flushes after each activation
/// (live readers see each dead letter as it is found) and at the end. It emits the text of a
/// failure to write, at the time of the letter that was not written, for every worker to learn
/// (`job`'s module doc); `failed` turns a failure into that text, or logs it and returns None (a
/// live run).
pub fn sink_operator<'s>(
    dead: StreamVec<'s, u64, DeadLetter>,
    mut sinks: Vec<Box<dyn DeadLetterSink>>,
    mut log: DeadLetterLog,
    failed: impl Fn(anyhow::Error) -> Option<String> + 'static,
) -> StreamVec<'s, u64, String> {
    let scope = dead.scope();
    dead.unary_frontier::<Notices, _, _, _>(Pipeline, "DeadLetterSink", move |_, info| {
        // Woken when a second's count of dead letters not logged one by one is
        // due, whether or not more come (it waited for the next one, or the end).
        let activator = scope.activator_for(info.address);
        move |(input, frontier), output| {
            // The earliest time written in this activation: a failure to deliver
            // what it wrote is told at it.
            let mut first = None;
            input.for_each(|cap, data| {
                for dead in data.drain(..) {
                    metrics()
                        .dead
                        .get_or_create(&vec![(
                            "reason",
                            crate::metrics::reason_label(&dead.reason),
                        )])
                        .inc();
                    log.log(&dead);
                    let write = |s: &mut dyn DeadLetterSink| s.write(&dead);
                    if let Some(f) = write_each(&mut sinks, write, &failed) {
                        output.session(&cap).give(f);
                    }
                }
                keep_earliest(&mut first, &cap);
            });
            // Live readers see each dead letter as it is found, not when a buffer
            // fills.
            if let Some(cap) = first {
                let written = |s: &mut dyn DeadLetterSink| s.written();
                if let Some(f) = write_each(&mut sinks, written, &failed) {
                    output.session(&cap).give(f);
                }
            }
            log.tell_unlogged();
            if let Some(due) = log.unlogged_due() {
                activator.activate_after(due);
            }
            if frontier.is_empty() {
                log.tell_unlogged_now();
                // No time is left to tell a failure at; nothing is left to write
                // either (each activation's letters were delivered above), so it is
                // this process's only.
                write_each(&mut sinks, |s| s.flush(), &failed);
            }
        }
    })
}

/// A `--dlq` file.
pub struct FileDeadLetters {
    /// The file, opened.
    pub out: Box<dyn Write>,
    /// Its path, as a failure to write it names it.
    pub path: String,
}

impl DeadLetterSink for FileDeadLetters {
    fn write(&mut self, dead: &DeadLetter) -> Result<()> {
        sink::write_dead(self.out.as_mut(), dead).with_context(|| format!("--dlq {}", self.path))
    }
    fn flush(&mut self) -> Result<()> {
        (self.out.flush()).with_context(|| format!("--dlq {}", self.path))
    }
    fn written(&mut self) -> Result<()> {
        self.flush()
    }
}

/// Logs dead letters one by one, [`DEAD_LOGGED_PER_SECOND`] a second at most; the others are
/// told as a number once a second (and at the end). A file of bad lines logged each one, which
/// took longer than the replay (500,000 bad lines, release build: 1.05 s logging each, 0.31 s so,
/// as with logs off). Every dead letter is still counted and written to the dead-letter output.
pub struct DeadLetterLog {
    /// When the current second began, and how many were logged and left unlogged in it.
    since: Option<std::time::Instant>,
    logged: u32,
    unlogged: u64,
    /// Names an input (its metrics labels: topic and partition, or file).
    names: InputLabels,
}

/// An input as the log names it, from its metrics labels: `topic/partition`, or the file.
fn input_name(labels: &crate::metrics::Labels) -> String {
    let label = |name: &str| {
        labels
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    };
    match (label("topic"), label("partition"), label("file")) {
        (Some(topic), Some(partition), _) => format!("{topic}/{partition}"),
        (_, _, Some(file)) => file.to_string(),
        _ => "?".to_string(),
    }
}

/// Dead letters logged one by one per second.
pub const DEAD_LOGGED_PER_SECOND: u32 = 10;

impl DeadLetterLog {
    /// A log naming inputs by `names`.
    pub fn new(names: InputLabels) -> DeadLetterLog {
        DeadLetterLog {
            since: None,
            logged: 0,
            unlogged: 0,
            names,
        }
    }

    /// Logs `dead`, or counts it once this second's are logged.
    pub fn log(&mut self, dead: &DeadLetter) {
        self.tell_unlogged();
        self.since.get_or_insert_with(std::time::Instant::now);
        if self.logged < DEAD_LOGGED_PER_SECOND {
            self.logged += 1;
            let input = input_name(&(self.names)(dead.pos.0));
            tracing::warn!(reason = %dead.reason, input = %input, offset = dead.pos.1, "dead letter");
        } else {
            self.unlogged += 1;
        }
    }

    /// Once the second is over: how many were not logged in it, and a new second begins.
    pub fn tell_unlogged(&mut self) {
        if self
            .since
            .is_some_and(|s| s.elapsed() >= Duration::from_secs(1))
        {
            self.tell_unlogged_now();
        }
    }

    /// How long until this second's count of dead letters not logged one by one is due, if
    /// there is one to tell.
    pub fn unlogged_due(&self) -> Option<Duration> {
        let since = self.since.filter(|_| self.unlogged > 0)?;
        Some(Duration::from_secs(1).saturating_sub(since.elapsed()))
    }

    /// How many were not logged so far, at once (the end of the job).
    pub fn tell_unlogged_now(&mut self) {
        if self.unlogged > 0 {
            tracing::warn!(
                count = self.unlogged,
                "more dead letters, not logged one by one (counted; each handed to the dead-letter output)"
            );
        }
        (self.since, self.logged, self.unlogged) = (None, 0, 0);
    }
}
