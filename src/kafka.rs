//! Kafka: the partition source of `run`, the dead-letter topic, `produce`, and the embedded
//! development broker (librdkafka's mock cluster).
//!
//! Partition assignment is deterministic and needs no consumer group protocol: partition `p` of
//! topic number `t` (in `--topics` order) is input `t * 65536 + p`, read by global worker
//! `workers - 1 - (t + p) % workers` ([`reader`]: worker 0 also publishes). Each worker's
//! consumer `assign`s exactly its partitions (librdkafka's `subscribe` can hang on close against
//! the mock cluster, and a group rebalance would move partitions between workers behind the
//! dataflow's back). The group id is used for offset commits only, which follow the results: an
//! offset is committed once the results' frontier has passed the timestamp of every message up to
//! it.
//!
//! Invariants:
//! - a worker's consumer is assigned exactly its partitions, from the committed offset, the
//!   first message or the end (`--start`); a partition whose earliest messages are gone is read
//!   from its first message held, logged at error, and the messages lost past a committed offset
//!   counted (`tampines_messages_lost_total`);
//! - a message becomes one event or one dead letter (to `<topic>.dlq`, with its payload and its
//!   reason in a header); an error of the broker never stops the source nor drops its
//!   capability: it is logged and the source asks again at its next activation;
//! - offsets are committed only for messages whose results are written (and, with Redis,
//!   durable): a restart reads again what was not;
//! - with `--until-end`, each partition is read up to its end offset as of start, and then its
//!   input closes;
//! - live, the partitions assigned at start with messages left are counted behind
//!   ([`crate::signals::behind`]) until read to their end offset as of start: a stop meanwhile
//!   exits at once rather than close marks over a backlog read in part.
//!
//! [`reader`]: tampines_dataflows::source::reader

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use tampines_dataflows::ahead::is_blank;
use tampines_dataflows::event::{parse, Body};
use tampines_dataflows::source::{DeadLetter, Inputs, Line, Next};

use crate::dead_letters::DeadLetterSink;
use crate::job::{AfterStep, WorkerInputs, Written};

/// How long a metadata or watermark request may take.
const META_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a consumer starts when the group has no committed offset, or always.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Start {
    /// From the beginning of each partition.
    Earliest,
    /// From the end: only new messages.
    Latest,
    /// From the group's committed offsets, else the beginning.
    Committed,
}

/// Connection settings shared by consumers and producers.
#[derive(Clone, Debug)]
pub struct Connection {
    /// Bootstrap servers.
    pub brokers: String,
    /// `-X key=value` properties, passed through as given (security settings included).
    pub properties: Vec<(String, String)>,
}

impl Connection {
    /// A client configuration with our defaults, then the user's properties on top.
    pub fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// Checks the `-X` properties as librdkafka reads them (unknown names, bad values, values
    /// that clash) without connecting: a producer is made and dropped, and where the command
    /// `consumes` (`run`, which also produces its dead letters) a consumer too. They are checked
    /// together, since some hold only with others (`security.protocol=sasl_ssl` asks for the
    /// default SASL mechanism, GSSAPI, unless `sasl.mechanisms` names another). A property of
    /// the other role only is ignored by each (librdkafka logs it); a clash that only a
    /// consumer checks (`fetch.max.bytes` below `message.max.bytes`) passed when either client
    /// could be made, and `run` then exited 1 making its consumer (an audit, 2026-12-07). A
    /// refusal names the property librdkafka names.
    pub fn check(&self, consumes: bool) -> Result<()> {
        if self.brokers.trim().is_empty() {
            bail!("--brokers must name at least one broker (HOST:PORT)");
        }
        let accepted = |properties: &[(String, String)]| {
            let mut c = ClientConfig::new();
            c.set("bootstrap.servers", &self.brokers);
            for (k, v) in properties {
                c.set(k, v);
            }
            // Logged by librdkafka as an error, not a warning, when it names the other role.
            c.set_log_level(rdkafka::config::RDKafkaLogLevel::Emerg);
            c.create::<BaseProducer>().map(drop)?;
            if consumes {
                c.create::<BaseConsumer>().map(drop)?;
            }
            Ok(())
        };
        match &accepted(&self.properties) {
            Ok(()) => Ok(()),
            Err(e @ KafkaError::ClientConfig(_, said, k, v)) => {
                // A value that may be a secret is not shown, nor that of a key librdkafka does
                // not know (a misspelt `sasl.password`): only librdkafka's description, which
                // names the key, not the value.
                let unknown = said.contains("No such configuration property");
                if secret_property(k) || unknown {
                    bail!("-X {k}=***: {said}")
                }
                bail!("-X {k}={v}: {e}")
            }
            Err(e) => bail!("-X: {e}"),
        }
    }

    /// A consumer of `group` with Tampines' settings (offsets committed by the job, never
    /// automatically), then the user's `-X` properties.
    pub fn consumer(&self, group: &str) -> Result<BaseConsumer> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            // Offsets are committed by us, after the results of their messages are written.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("group.id", group)
            // Every partition is assigned an explicit start (its beginning, its end, or an offset
            // it holds), so this applies only when retention deletes messages before they are
            // read: librdkafka's `earliest` then moved on past them without a word (an audit lost
            // 156,000 of 300,000 messages so); `error` tells the source, which says what was lost
            // (`KafkaInputs::skip_lost`).
            .set("auto.offset.reset", "error")
            // Short fetch waits: the mock cluster and live feeds alike deliver in small batches;
            // measured 2.16M msgs/s against 273k/s with the defaults on the mock cluster.
            .set("fetch.wait.max.ms", "10")
            .set("fetch.error.backoff.ms", "10")
            .set("fetch.queue.backoff.ms", "10")
            // We never call subscribe: no partition EOF events needed, end offsets come from watermarks.
            .set("enable.partition.eof", "false");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c.create().context("creating the Kafka consumer")
    }

    /// A producer with [`Connection::producer_with`]'s settings and no delivery context.
    pub fn producer(&self) -> Result<BaseProducer> {
        self.producer_with(rdkafka::producer::DefaultProducerContext)
    }

    /// A producer whose delivery reports go to `context`.
    pub fn producer_with<C: ProducerContext>(&self, context: C) -> Result<BaseProducer<C>> {
        let mut c = self.client();
        // Batch for throughput; a few ms of delay is nothing against a 100 ms timestamp.
        c.set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c.create_with_context(context)
            .context("creating the Kafka producer")
    }
}

/// Counts the messages the broker did not take (delivery reports), keeping the first reason.
/// `send` and `flush` returning Ok say only that a message was queued: a message that times out
/// or is refused is reported here, and was lost without a word.
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
    reason: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut reason = self.reason.lock().expect("lock");
            reason.get_or_insert_with(|| e.to_string());
        }
    }
}

impl Deliveries {
    /// The messages not delivered since `seen` (which it updates), as an error.
    fn check(&self, seen: &mut u64, what: &str) -> Result<()> {
        let failed = self.failed.load(Ordering::Relaxed);
        if failed == *seen {
            return Ok(());
        }
        let new = failed - std::mem::replace(seen, failed);
        let reason = self
            .reason
            .lock()
            .expect("lock")
            .clone()
            .unwrap_or_default();
        bail!("{new} {what} not delivered: {reason}")
    }
}

/// Partitions per topic that input numbers tell apart ([`input_id`]).
const MAX_PARTITIONS: i32 = 65_536;

/// The input number of a topic's partition (below `MAX_PARTITIONS`, which `partitions` checks).
pub(crate) fn input_id(topic_index: usize, partition: i32) -> u32 {
    (topic_index as u32) * MAX_PARTITIONS as u32 + partition as u32
}

/// Metric labels of a partition.
pub(crate) fn partition_labels(topic: &str, partition: i32) -> crate::metrics::Labels {
    vec![
        ("topic", topic.to_string()),
        ("partition", partition.to_string()),
    ]
}

/// Metric labels of an input id, given the topics in order.
pub fn input_labels(topics: Vec<String>) -> crate::metrics::InputLabels {
    Arc::new(move |id| {
        let per_topic = MAX_PARTITIONS as u32;
        let topic = topics
            .get((id / per_topic) as usize)
            .map(String::as_str)
            .unwrap_or("?");
        partition_labels(topic, (id % per_topic) as i32)
    })
}

/// The worker that reads a partition.
pub fn owner(topic_index: usize, partition: i32, peers: usize) -> usize {
    tampines_dataflows::source::reader(topic_index + partition as usize, peers)
}

/// Read positions and their timestamps, for commits that follow the results.
#[derive(Default)]
struct Offsets {
    /// Per input: (offset, highest timestamp of any message up to it), increasing.
    pending: HashMap<u32, VecDeque<(u64, u64)>>,
    committed: HashMap<u32, u64>,
}

/// Notes in a partition's pending queue that the messages up to `offset` were stamped, the last
/// of them (and those since the queue's last entry) with `time`: the last entry's offset moves
/// up while the highest timestamp does not grow, and a higher timestamp starts an entry. The
/// source tells of a run of messages of one timestamp once, with the run's last offset: the
/// queue ends as it would after one call per message.
fn note_stamped(queue: &mut VecDeque<(u64, u64)>, offset: u64, time: u64) {
    match queue.back_mut() {
        Some((last, max)) if *max >= time => *last = offset,
        Some((_, max)) => {
            let max = *max;
            queue.push_back((offset, max.max(time)));
        }
        None => queue.push_back((offset, time)),
    }
}

/// The partitions one worker reads.
pub struct KafkaInputs {
    consumer: Rc<BaseConsumer>,
    topics: Vec<String>,
    /// Input ids of the partitions this worker reads.
    owned: HashSet<u32>,
    /// `--until-end`: the end offset (exclusive) of each partition as of start.
    ends: Option<HashMap<u32, u64>>,
    /// A live run: the end offset (exclusive) as of start of each partition assigned at start
    /// and not read that far yet. While any is left, a stop exits at once
    /// ([`crate::signals::behind`]).
    catching_up: HashMap<u32, u64>,
    finished: HashSet<u32>,
    to_announce: Vec<u32>,
    offsets: Rc<RefCell<Offsets>>,
    stop: Option<Arc<AtomicBool>>,
    peers: usize,
    index: usize,
    last_refresh: Instant,
    /// Topics said to have no partitions (worker 0 says it once per topic).
    absent: HashSet<String>,
    /// The offset each partition was assigned to start at (its position until a message is read).
    starts: HashMap<u32, i64>,
    /// The poll errors said so far.
    poll_errors: Repeats,
}

/// One warning for a run of the same error: the first at once, then one every [`Repeats::EVERY`]
/// with how many came meanwhile. librdkafka returns an error at every poll for a message it
/// cannot read (a compression it was built without): 45,000 warnings in two minutes.
#[derive(Default)]
struct Repeats {
    /// The error said last, and when.
    said: Option<(Instant, String)>,
    /// Errors since, not said.
    unsaid: u64,
}

impl Repeats {
    const EVERY: Duration = Duration::from_secs(10);

    /// Whether to say `error` at `now`: with the number of errors not said since the last one
    /// that was, or None to count it only.
    fn say(&mut self, error: &str, now: Instant) -> Option<u64> {
        let due = match &self.said {
            Some((at, said)) => said != error || now.duration_since(*at) >= Self::EVERY,
            None => true,
        };
        if !due {
            self.unsaid += 1;
            return None;
        }
        self.said = Some((now, error.to_string()));
        Some(std::mem::take(&mut self.unsaid))
    }
}

/// Options of `run`'s source.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// Connection.
    pub connection: Connection,
    /// Topics, in order.
    pub topics: Vec<String>,
    /// Consumer group (offset commits).
    pub group: String,
    /// Start position.
    pub start: Start,
    /// Bounded run: stop at each partition's end offset as of start.
    pub until_end: bool,
    /// Set to end reading (SIGINT or SIGTERM of a live `run` or `demo`): every input ends where
    /// it is and the job finishes.
    pub stop: Option<Arc<AtomicBool>>,
}

impl SourceOptions {
    /// What every process of a job must share of these options, hashed for the processes'
    /// handshake: the topics in order (a partition's reader follows its topic's index), the
    /// group, where reading starts and whether it ends. Brokers and `-X` may differ by host.
    pub fn shared(&self) -> u64 {
        let Self {
            topics,
            group,
            start,
            until_end,
            ..
        } = self;
        crate::cluster::digest(&("kafka", topics, group, start, until_end))
    }
}

/// The job over Kafka (`run`, `demo`), the twin of [`crate::job::replay`]: each worker reads
/// its partitions of `opts` ([`open`]), process 0 writes dead letters to each topic's `.dlq`
/// ([`KafkaDeadLetters`]) besides `--dlq`, and the consumer lag is watched. `idle`: how long a
/// silent partition holds progress back (None: a bounded run, which never idles).
pub fn run_job(
    settings: crate::cli::Settings,
    idle: Option<Duration>,
    opts: SourceOptions,
    workers: usize,
    processes: usize,
) -> Result<tampines_dataflows::stats::Totals> {
    if let Err(e) = watch_lag(&opts, settings.process, workers, workers * processes) {
        tracing::warn!(error = %e, "consumer lag will not be reported");
    }
    let dlq = (opts.connection.clone(), opts.topics.clone());
    crate::job::run(
        settings,
        idle,
        true,
        opts.shared(),
        input_labels(opts.topics.clone()),
        move |index, peers| open(&opts, index, peers),
        move || {
            Ok(Some(
                Box::new(KafkaDeadLetters::new(&dlq.0, dlq.1.clone())?) as Box<dyn DeadLetterSink>,
            ))
        },
    )
}

/// Opens worker `index`'s partitions.
pub fn open(opts: &SourceOptions, index: usize, peers: usize) -> Result<WorkerInputs> {
    let consumer = Rc::new(opts.connection.consumer(&opts.group)?);
    let offsets = Rc::new(RefCell::new(Offsets::default()));
    let mut inputs = KafkaInputs {
        consumer: consumer.clone(),
        topics: opts.topics.clone(),
        owned: HashSet::new(),
        ends: opts.until_end.then(HashMap::new),
        catching_up: HashMap::new(),
        finished: HashSet::new(),
        to_announce: Vec::new(),
        offsets: offsets.clone(),
        stop: opts.stop.clone(),
        peers,
        index,
        last_refresh: Instant::now(),
        absent: HashSet::new(),
        starts: HashMap::new(),
        poll_errors: Repeats::default(),
    };
    inputs.assign_new(Some(opts.start))?;
    crate::signals::behind(inputs.catching_up.len());
    if inputs.owned.is_empty() && !opts.until_end {
        // It stays, following the others' progress (`tampines_dataflows::idle`), and reads the
        // partitions that fall to it once they exist.
        tracing::info!(worker = index, "this worker owns no partition yet");
    }
    let group = opts.group.clone();
    let topics = opts.topics.clone();
    let after_step: AfterStep = Box::new(move |written: &Written| {
        commit_done(&consumer, &topics, &offsets, written, &group)
    });
    Ok(WorkerInputs {
        inputs: Box::new(inputs),
        after_step: Some(after_step),
        closed_by: crate::job::ClosedBy::ThisWorker,
    })
}

impl KafkaInputs {
    /// Assigns this worker's partitions that are not assigned yet: all of them at the start
    /// (`Some`, where `--start` says), new ones when a topic grows or is made (`None`: from their
    /// first message). Only the partitions of the start are caught up with: ones found later (by
    /// a worker that had none too) hold new messages.
    fn assign_new(&mut self, at_start: Option<Start>) -> Result<()> {
        let start = at_start.unwrap_or(Start::Earliest);
        let mut added = Vec::new();
        for (t, topic) in self.topics.iter().enumerate() {
            let found = partitions(&self.consumer, topic)?;
            if found.is_empty() {
                // A typo would otherwise pass as a topic with nothing to read.
                if self.index == 0 && self.absent.insert(topic.clone()) {
                    // At error, which the default log shows: it is most likely a mistake.
                    tracing::error!(topic = %topic, "the topic has no partitions (does it exist?): nothing is read from it until it has");
                }
                continue;
            }
            for p in found {
                if owner(t, p, self.peers) == self.index && !self.owned.contains(&input_id(t, p)) {
                    added.push((t, topic.clone(), p));
                }
            }
        }
        if added.is_empty() {
            return Ok(());
        }
        // Only the added partitions: `assign` with the whole list would restart every partition
        // already read at the offset it was first assigned with (librdkafka clears and re-adds).
        let mut assignment = TopicPartitionList::new();
        let mut committed = TopicPartitionList::new();
        for (_, topic, p) in &added {
            committed.add_partition(topic, *p);
        }
        let committed = if start == Start::Committed {
            self.consumer
                .committed_offsets(committed, META_TIMEOUT)
                .unwrap_or_default()
        } else {
            TopicPartitionList::new()
        };
        // Every watermark first, and this worker's state changed only once librdkafka has the
        // assignment: a failure leaves the partitions unowned, for the next look to try again.
        // (Those before a failing watermark were owned but never assigned: never read.) At the
        // start a failure fails the worker; later, a partition whose watermarks fail (no leader)
        // waits for the next look, and the others are read meanwhile.
        let mut found = Vec::with_capacity(added.len());
        for (t, topic, p) in added {
            match self.consumer.fetch_watermarks(&topic, p, META_TIMEOUT) {
                Ok((low, high)) => found.push((t, topic, p, low, high)),
                Err(e) if at_start.is_none() => {
                    tracing::warn!(topic = %topic, partition = p, error = %e, "a partition found while running is not read yet: its offsets could not be asked (has it a leader?); trying again at the next look, in 10 s");
                }
                Err(e) => return Err(e).with_context(|| format!("watermarks of {topic}/{p}")),
            }
        }
        if found.is_empty() {
            return Ok(());
        }
        let mut taken = Vec::with_capacity(found.len());
        for (t, topic, p, low, high) in found {
            let id = input_id(t, p);
            let from = start_at(
                start,
                committed.find_partition(&topic, p).map(|e| e.offset()),
            );
            let mut first = first_offset(from, low, high);
            if first > high {
                // A committed offset past the end: the topic was recreated or truncated.
                tracing::error!(topic = %topic, partition = p, committed = first, low, high, "the committed offset is past the partition's end (was the topic recreated or truncated?): reading it from its first message");
                first = low;
            }
            tracing::info!(worker = self.index, topic = %topic, partition = p, input = id, low, high, start = first, "assigned");
            // Reading from an offset that retention has passed skips messages without a word from
            // librdkafka (`--start committed` without a commit reads from the beginning too).
            let wanted = match from {
                Offset::Beginning => Some(0),
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            if let (Offset::Offset(o), true) = (from, start == Start::Committed) {
                if o > low {
                    tracing::warn!(topic = %topic, partition = p, committed = o, "resuming at the committed offset: the state of the messages before it (books, window, candles) is not rebuilt; --start earliest rebuilds it");
                }
            }
            if start == Start::Latest && high > low {
                tracing::warn!(topic = %topic, partition = p, skipped = high - low, "starting at the end: the state of the messages before it (books, window, candles) is not built; --start earliest builds it");
            }
            let mut lost = 0;
            if let Some(wanted) = wanted.filter(|&o| o < low) {
                tracing::error!(topic = %topic, partition = p, wanted, low, "messages before this offset are gone (retention): they are not read, and state rebuilt from here may be incomplete");
                // Past the committed offset they were never read: lost. (Before it, read by an
                // earlier run, they are only missing from the state rebuilt.)
                if matches!(from, Offset::Offset(_)) {
                    lost = low - wanted;
                }
            }
            // An offset retention has passed is not held: the first one held is assigned.
            let from = match from {
                Offset::Offset(_) => Offset::Offset(first),
                other => other,
            };
            assignment
                .add_partition_offset(&topic, p, from)
                .context("assignment")?;
            taken.push((id, topic, p, first, high, lost));
        }
        self.consumer
            .incremental_assign(&assignment)
            .context("assigning partitions")?;
        for (id, topic, p, first, high, lost) in taken {
            // Every partition assigned has its series, from 0: one that appeared only at the
            // first loss, already holding it, showed Prometheus no increase, and the alert on
            // lost messages never fired for it.
            count_lost(&topic, p, lost);
            if let Some(ends) = self.ends.as_mut() {
                ends.insert(id, high.max(0) as u64);
                if first >= high {
                    self.finished.insert(id);
                    self.to_announce.push(id);
                }
            } else if at_start.is_some() && first < high {
                self.catching_up.insert(id, high as u64);
            }
            self.starts.insert(id, first);
            self.owned.insert(id);
        }
        Ok(())
    }

    /// librdkafka stopped fetching a partition whose position it does not hold
    /// (`auto.offset.reset` is `error`), without naming the partition. Every owned partition is
    /// looked at:
    /// - its position (or start, before a first message) below the partition's first offset:
    ///   retention deleted messages before they were read. They are said at error with the
    ///   offsets, counted in `tampines_messages_lost_total` (those before a bounded run's end only), and
    ///   the partition is read on from its first message (a bounded run whose end they passed
    ///   finishes it instead). The results miss them: they are not read, dead-lettered or
    ///   counted as read;
    /// - its position past the partition's end (the topic recreated or truncated): said at
    ///   error and read again from its first message, as librdkafka's `earliest` did.
    fn skip_lost(&mut self) {
        let positions = match self.consumer.position() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(worker = self.index, error = %e, "reading positions after librdkafka stopped a partition: it is read no further");
                return;
            }
        };
        for e in positions.elements() {
            let Some(t) = self.topics.iter().position(|t| t == e.topic()) else {
                continue;
            };
            let id = input_id(t, e.partition());
            if !self.owned.contains(&id) || self.finished.contains(&id) {
                continue;
            }
            let (topic, p) = (e.topic(), e.partition());
            let (low, high) = match self.consumer.fetch_watermarks(topic, p, META_TIMEOUT) {
                Ok(w) => w,
                Err(err) => {
                    tracing::error!(topic = %topic, partition = p, error = %err, "reading a partition's offsets after librdkafka stopped a partition: it may be read no further");
                    continue;
                }
            };
            let at = match e.offset() {
                Offset::Offset(o) => o,
                _ => self.starts.get(&id).copied().unwrap_or(low),
            };
            let end = self
                .ends
                .as_ref()
                .and_then(|e| e.get(&id))
                .map(|&e| e as i64);
            if at < low {
                let to = end.map_or(low, |end| low.min(end));
                tracing::error!(topic = %topic, partition = p, from = at, to, lost = to - at, "messages deleted (retention) before they were read: they are lost, and results miss them; reading on from the first message held");
                count_lost(topic, p, to - at);
                if end.is_some_and(|end| low >= end) {
                    // A bounded run's end passed: nothing of the partition is left to read.
                    self.finished.insert(id);
                    self.to_announce.push(id);
                    self.unassign(topic, p);
                    continue;
                }
            } else if at > high {
                tracing::error!(topic = %topic, partition = p, position = at, low, high, "the position is past the partition's end (was the topic recreated or truncated?): reading it again from its first message");
            } else {
                continue;
            }
            self.starts.insert(id, low);
            // Assigned again at its first message: librdkafka refuses to seek a partition in
            // this error state.
            let mut again = TopicPartitionList::new();
            let placed = again.add_partition_offset(topic, p, Offset::Offset(low));
            let assigned = placed
                .and_then(|()| self.consumer.incremental_unassign(&again))
                .and_then(|()| self.consumer.incremental_assign(&again));
            if let Err(err) = assigned {
                tracing::error!(topic = %topic, partition = p, error = %err, "assigning a partition again at its first message: it is read no further");
            }
        }
    }

    /// Stops reading a partition.
    fn unassign(&self, topic: &str, partition: i32) {
        let mut list = TopicPartitionList::new();
        list.add_partition(topic, partition);
        if let Err(err) = self.consumer.incremental_unassign(&list) {
            tracing::warn!(topic = %topic, partition, error = %err, "unassigning a finished partition");
        }
    }

    /// A bounded run: finishes the partitions whose consumer position reached their end. The
    /// last records of a partition may never be delivered: a transaction's commit marker, an
    /// aborted transaction's records. librdkafka moves the position past them when they are
    /// polled, so waiting for a delivered message at `end - 1` would wait for ever.
    fn finish_by_position(&mut self) {
        let Some(ends) = self.ends.as_ref() else {
            return;
        };
        if self.finished.len() == self.owned.len() {
            return;
        }
        for id in self.reached(ends) {
            if self.finished.insert(id) {
                self.to_announce.push(id);
            }
        }
    }

    /// The partitions of `ends` whose consumer position is at or past their end offset there.
    fn reached(&self, ends: &HashMap<u32, u64>) -> Vec<u32> {
        let Ok(positions) = self.consumer.position() else {
            return Vec::new();
        };
        let mut reached = Vec::new();
        for e in positions.elements() {
            let Some(t) = self.topics.iter().position(|t| t == e.topic()) else {
                continue;
            };
            let id = input_id(t, e.partition());
            if let (Offset::Offset(at), Some(&end)) = (e.offset(), ends.get(&id)) {
                if at >= 0 && at as u64 >= end {
                    reached.push(id);
                }
            }
        }
        reached
    }

    /// A live run: notes `input` of `catching_up` read to where it ended at the start.
    fn caught_up(catching_up: &mut HashMap<u32, u64>, input: u32) {
        if catching_up.remove(&input).is_some() {
            crate::signals::caught_up();
        }
    }
}

impl Inputs for KafkaInputs {
    fn next(&mut self) -> Next {
        if let Some(id) = self.to_announce.pop() {
            return Next::Finished(id);
        }
        // Done when a bounded run has read every partition (at once if this worker owns none),
        // and when told to stop. A live worker that owns none stays: partitions added later may
        // fall to it.
        if self.ends.is_some() && self.finished.len() == self.owned.len()
            || self
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            return Next::Done;
        }
        loop {
            let message = match self.consumer.poll(Duration::ZERO) {
                None if self.ends.is_some() => {
                    self.finish_by_position();
                    return match self.to_announce.pop() {
                        Some(id) => Next::Finished(id),
                        None => Next::Pending,
                    };
                }
                None => {
                    // As for a bounded run's end: the last records may never be delivered.
                    if !self.catching_up.is_empty() {
                        for id in self.reached(&self.catching_up) {
                            Self::caught_up(&mut self.catching_up, id);
                        }
                    }
                    // Partitions added to a topic while running are picked up (live runs only;
                    // when nothing is waiting, so the metadata request never delays a message).
                    if self.ends.is_none() && self.last_refresh.elapsed() > Duration::from_secs(10)
                    {
                        self.last_refresh = Instant::now();
                        if let Err(e) = self.assign_new(None) {
                            // With its cause (`%e` showed only "metadata of market.book").
                            tracing::warn!(error = format!("{e:#}"), "refreshing partitions");
                        }
                    }
                    return Next::Pending;
                }
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                    self.skip_lost();
                    return Next::Pending;
                }
                Some(Err(e)) => {
                    let error = e.to_string();
                    if let Some(unsaid) = self.poll_errors.say(&error, Instant::now()) {
                        // librdkafka does not say which partition: its own log line does.
                        tracing::warn!(worker = self.index, error, repeated = unsaid, topics = self.topics.join(","), "kafka poll (while it repeats, said every 10 s with the count of those not said)");
                    }
                    return Next::Pending;
                }
                Some(Ok(m)) => m,
            };
            // The input id follows from the topic's position: nothing to allocate per message.
            let Some(t) = self.topics.iter().position(|t| t == message.topic()) else {
                continue;
            };
            let input = input_id(t, message.partition());
            if !self.owned.contains(&input) {
                continue;
            }
            if self.finished.contains(&input) {
                continue; // produced after a bounded run started
            }
            let offset = message.offset().max(0) as u64;
            if let Some(end) = self.ends.as_ref().and_then(|e| e.get(&input)) {
                if offset + 1 >= *end {
                    self.finished.insert(input);
                    self.to_announce.push(input);
                }
            }
            // Once caught up, the map is empty and no message looks it up.
            if !self.catching_up.is_empty()
                && (self.catching_up.get(&input)).is_some_and(|&end| offset + 1 >= end)
            {
                Self::caught_up(&mut self.catching_up, input);
            }
            let line = match message.payload() {
                None => Err(("empty message".to_string(), Vec::new())),
                Some(bytes) => match String::from_utf8(bytes.to_vec()) {
                    // A message is an input of its own: a blank one is dead-lettered, where a
                    // file's blank line is only spacing and skipped.
                    Ok(text) if is_blank(&text) => {
                        Err(("empty message".to_string(), text.into_bytes()))
                    }
                    Ok(text) => Ok(text),
                    // Its dead letter carries the bytes as they came.
                    Err(e) => Err(("invalid utf-8".to_string(), e.into_bytes())),
                },
            };
            return Next::Line {
                input,
                offset,
                line: Line::Text(line),
            };
        }
    }

    fn known(&self) -> Vec<u32> {
        self.owned
            .iter()
            .filter(|i| !self.finished.contains(i))
            .copied()
            .collect()
    }

    fn stamped(&mut self, input: u32, offset: u64, time: u64, _lines: usize) {
        let mut offsets = self.offsets.borrow_mut();
        note_stamped(offsets.pending.entry(input).or_default(), offset, time);
    }
}

/// Every 10 s, on a thread of its own (never delaying a worker), the consumer group's lag per
/// partition that this process reads: the partition's end offset minus the group's committed
/// offset (what `kafka-consumer-groups` shows; commits follow the results, so this includes the
/// work in progress). Logged at info and exported as `tampines_consumer_lag_messages`.
pub fn watch_lag(opts: &SourceOptions, process: usize, workers: usize, peers: usize) -> Result<()> {
    let consumer = opts.connection.consumer(&opts.group)?;
    let topics = opts.topics.clone();
    let mine = move |t: usize, p: i32| (owner(t, p, peers) / workers) == process;
    std::thread::Builder::new()
        .name("kafka-lag".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(10)); // the reporting interval
            let mut list = TopicPartitionList::new();
            for (t, topic) in topics.iter().enumerate() {
                for p in (partitions(&consumer, topic).unwrap_or_default().into_iter())
                    .filter(|&p| mine(t, p))
                {
                    list.add_partition(topic, p);
                }
            }
            let committed = consumer
                .committed_offsets(list.clone(), META_TIMEOUT)
                .unwrap_or(list);
            for e in committed.elements() {
                let Ok((low, high)) =
                    consumer.fetch_watermarks(e.topic(), e.partition(), META_TIMEOUT)
                else {
                    continue;
                };
                let from = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => low,
                };
                let lag = (high - from).max(0);
                tracing::info!(
                    topic = e.topic(),
                    partition = e.partition(),
                    lag,
                    "consumer lag"
                );
                crate::metrics::metrics()
                    .consumer_lag
                    .get_or_create(&partition_labels(e.topic(), e.partition()))
                    .set(lag);
            }
        })?;
    Ok(())
}

/// The partition ids of `topic` (none when it does not exist or has none yet).
fn partitions(consumer: &BaseConsumer, topic: &str) -> Result<Vec<i32>> {
    let meta = consumer
        .fetch_metadata(Some(topic), META_TIMEOUT)
        .with_context(|| format!("metadata of {topic}"))?;
    let found = meta.topics().iter().find(|m| m.name() == topic);
    readable(
        topic,
        found.map_or(Vec::new(), |m| {
            m.partitions().iter().map(|p| p.id()).collect()
        }),
    )
}

/// The partitions `ids` of `topic`, refused when one is beyond [`MAX_PARTITIONS`]: its input
/// number would be another topic's partition's, mixing their watermarks and counts.
fn readable(topic: &str, ids: Vec<i32>) -> Result<Vec<i32>> {
    if let Some(p) = ids.iter().find(|p| !(0..MAX_PARTITIONS).contains(*p)) {
        bail!("{topic} has partition {p}: at most {MAX_PARTITIONS} partitions per topic are read");
    }
    Ok(ids)
}

/// Counts `n` messages of `topic`/`partition` deleted before they were read.
fn count_lost(topic: &str, partition: i32, n: i64) {
    let labels = vec![
        ("topic", crate::metrics::label_value(topic)),
        ("partition", partition.to_string()),
    ];
    let lost = &crate::metrics::metrics().lost;
    lost.get_or_create(&labels).inc_by(n.max(0) as u64);
}

/// Where a partition is read from, by `--start` and the group's committed offset there.
fn start_at(start: Start, committed: Option<Offset>) -> Offset {
    match (start, committed) {
        (Start::Earliest, _) => Offset::Beginning,
        (Start::Latest, _) => Offset::End,
        (Start::Committed, Some(Offset::Offset(o))) => Offset::Offset(o),
        (Start::Committed, _) => Offset::Beginning,
    }
}

/// The first offset read from a partition holding `low..high`, starting at `from`.
fn first_offset(from: Offset, low: i64, high: i64) -> i64 {
    match from {
        Offset::Offset(o) => o.max(low),
        Offset::End => high,
        _ => low,
    }
}

/// Whether this job reads every partition from its first message, by what [`read_from_later`]
/// found, saying why not at warn. A broker that does not answer counts as no: results Redis
/// holds are then kept as they are rather than brought to a state rebuilt from part of the input.
pub fn whole_history(later: &Result<Vec<String>>) -> bool {
    match later {
        Ok(later) if later.is_empty() => true,
        Ok(later) => {
            tracing::warn!(partitions = ?later, "not read from their first message");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot tell whether every partition is read from its first message; taking it that some are not");
            false
        }
    }
}

/// The partitions that this job will not read from their first message (offset 0): retention
/// dropped their start, or `--start` begins later. Each as `topic/partition from offset N`. State
/// rebuilt by replay below a stored frontier is whole only when this is empty, and a run's files
/// are written again from the start (else appended to, `Settings::append`).
pub fn read_from_later(opts: &SourceOptions) -> Result<Vec<String>> {
    let consumer = opts.connection.consumer(&opts.group)?;
    let mut list = TopicPartitionList::new();
    for topic in &opts.topics {
        for p in partitions(&consumer, topic)? {
            list.add_partition(topic, p);
        }
    }
    let committed = if opts.start == Start::Committed {
        consumer.committed_offsets(list.clone(), META_TIMEOUT)?
    } else {
        list
    };
    let mut later = Vec::new();
    for e in committed.elements() {
        let (low, high) = consumer
            .fetch_watermarks(e.topic(), e.partition(), META_TIMEOUT)
            .with_context(|| format!("watermarks of {}/{}", e.topic(), e.partition()))?;
        let first = first_offset(start_at(opts.start, Some(e.offset())), low, high);
        if first > 0 {
            later.push(format!(
                "{}/{} from offset {first}",
                e.topic(),
                e.partition()
            ));
        }
    }
    Ok(later)
}

/// Commits, per partition, the offset after the last message whose results are all written;
/// true when no message is left waiting.
fn commit_done(
    consumer: &BaseConsumer,
    topics: &[String],
    offsets: &RefCell<Offsets>,
    written: &Written,
    group: &str,
) -> bool {
    let mut offsets = offsets.borrow_mut();
    let Offsets { pending, committed } = &mut *offsets;
    let mut list = TopicPartitionList::new();
    for (&input, queue) in pending.iter_mut() {
        let mut done = None;
        while let Some(&(offset, max)) = queue.front() {
            if !written.covers(max) {
                break;
            }
            done = Some(offset);
            queue.pop_front();
        }
        if let Some(offset) = done {
            if committed.get(&input).is_none_or(|&c| c < offset + 1) {
                committed.insert(input, offset + 1);
                let topic = &topics[(input / 65_536) as usize];
                let _ = list.add_partition_offset(
                    topic,
                    (input % 65_536) as i32,
                    Offset::Offset(offset as i64 + 1),
                );
            }
        }
    }
    if list.count() > 0 {
        // Async: a failed commit only delays lag reporting; the next one covers it.
        if let Err(e) = consumer.commit(
            &list,
            if written.all() {
                CommitMode::Sync
            } else {
                CommitMode::Async
            },
        ) {
            tracing::warn!(group, error = %e, "offset commit");
        }
    }
    pending.values().all(|q| q.is_empty())
}

/// Dead letters to `<topic>.dlq`: the original payload, the reason in header `reason`, where it
/// was read in headers `partition` and `offset`.
pub struct KafkaDeadLetters {
    producer: BaseProducer<Deliveries>,
    topics: Vec<String>,
    /// Failed deliveries already reported.
    failed: u64,
}

impl KafkaDeadLetters {
    /// A producer for the dead-letter topics of `topics`.
    pub fn new(connection: &Connection, topics: Vec<String>) -> Result<KafkaDeadLetters> {
        Ok(KafkaDeadLetters {
            producer: connection.producer_with(Deliveries::default())?,
            topics,
            failed: 0,
        })
    }
}

/// Dead-letter payloads longer than this many bytes are cut (at a character boundary), and the
/// message gets a `truncated` header with the payload's whole length: the broker takes messages
/// up to its own `message.max.bytes` (1,048,588 by default), the producer sends up to 1,000,000
/// by default, and a dead letter carries headers too. Uncut, such a message's dead letter could
/// not be produced, and that stopped the job.
const DEAD_PAYLOAD_MAX: usize = 900_000;

/// Whether a librdkafka property may hold a secret (`sasl.password`, `ssl.key.password`,
/// `sasl.oauthbearer.client.secret`, `ssl.key.pem`, `sasl.jaas.config`...): its value is never
/// printed.
fn secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "pass",
        "secret",
        "key",
        "token",
        "cred",
        "jaas",
        "oauthbearer.config",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// Where to cut `payload` (longer than `max`): at `max`, or up to 3 bytes before it at the start
/// of a character, so that a text payload stays text. Bytes that are no text (more than 3
/// continuation bytes in a row) are cut at `max`; walking back over them left nothing.
fn cut(payload: &[u8], max: usize) -> usize {
    let continues = |at: usize| (payload[at] as i8) < -64; // 0b10xx_xxxx
    max - (0..4).find(|b| !continues(max - b)).unwrap_or(0)
}

impl DeadLetterSink for KafkaDeadLetters {
    fn write(&mut self, dead: &DeadLetter) -> Result<()> {
        let topic = format!(
            "{}.dlq",
            self.topics
                .get((dead.pos.0 / 65_536) as usize)
                .map(String::as_str)
                .unwrap_or("unknown")
        );
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "reason",
                value: Some(dead.reason.as_str()),
            })
            .insert(Header {
                key: "offset",
                value: Some(&dead.pos.1.to_string()),
            })
            // Offsets of different partitions are told apart by it.
            .insert(Header {
                key: "partition",
                value: Some(&(dead.pos.0 % 65_536).to_string()),
            });
        let mut payload = dead.payload.as_slice();
        if payload.len() > DEAD_PAYLOAD_MAX {
            payload = &payload[..cut(payload, DEAD_PAYLOAD_MAX)];
            headers = headers.insert(Header {
                key: "truncated",
                value: Some(&dead.payload.len().to_string()),
            });
        }
        send(
            &self.producer,
            BaseRecord::<(), [u8]>::to(&topic)
                .payload(payload)
                .headers(headers),
        )
    }

    fn flush(&mut self) -> Result<()> {
        self.producer
            .flush(Duration::from_secs(30))
            .context("flushing dead letters")?;
        (self.producer.context()).check(&mut self.failed, "dead letters were")
    }

    /// Waits for the batch's delivery reports: a dead letter the broker did not take is a
    /// failure before the offsets past it are committed (it was lost, offsets committed).
    fn written(&mut self) -> Result<()> {
        self.flush()
    }
}

/// Sends, waiting while the local queue is full.
fn send<K, P, C>(producer: &BaseProducer<C>, mut record: BaseRecord<'_, K, P>) -> Result<()>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
    C: ProducerContext<DeliveryOpaque = ()>,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                producer.poll(Duration::from_millis(50));
                record = r;
            }
            Err((e, _)) => return Err(e).context("producing"),
        }
    }
}

/// What `produce` did: messages sent (and delivered), and what was not, each a line.
pub struct Produced {
    /// Messages sent and delivered.
    pub sent: u64,
    /// Lines not sent (the broker refused them, say too large; or over 16 MiB, too long to
    /// read), and read errors that ended a file.
    pub problems: u64,
    /// The first of them, with where it was.
    pub first_problem: Option<String>,
}

/// `produce FILE...`: every line of the files but blank ones, as is, even one that is not an
/// event (the job dead-letters it, as replay would), keyed by `exchange:symbol`. Without
/// `--topic`, trades go to `market.trade` and everything else to `market.book`. A line that does
/// not parse is keyed and routed by what its JSON says of them, if anything.
///
/// A line the broker refuses, or one too long to read (over 16 MiB), is counted among the problems
/// and the rest go on; a read error ends its file. Everything sent is flushed and its delivery
/// checked before returning.
pub fn produce(
    files: &[PathBuf],
    connection: &Connection,
    topic: Option<&str>,
) -> Result<Produced> {
    let producer = connection.producer_with(Deliveries::default())?;
    let progress = std::io::stderr().is_terminal();
    let mut sent = 0u64;
    let (mut problems, mut first_problem) = (0, None);
    let mut problem = |what: String| {
        problems += 1;
        first_problem.get_or_insert(what);
    };
    for path in files {
        for (number, line) in crate::files::lines(path).enumerate() {
            let line = match line {
                Ok(l) if is_blank(&l) => continue,
                Ok(l) => l.into_bytes(),
                // Not UTF-8: sent as it is, for the job to dead-letter.
                Err((reason, bytes)) if reason == "invalid utf-8" => bytes,
                // A read error (or a file that cannot be opened) ends the file.
                Err((reason, _)) if reason.starts_with("read error") => {
                    problem(format!("{}: {reason}", path.display()));
                    break;
                }
                // A line too long to keep: the lines after it are read.
                Err((reason, _)) => {
                    problem(format!("{} line {}: {reason}", path.display(), number + 1));
                    continue;
                }
            };
            let (key, trade) = route(&line);
            let target = match topic {
                Some(t) => t,
                None if trade => "market.trade",
                None => "market.book",
            };
            let mut record = BaseRecord::<str, [u8]>::to(target).payload(&line);
            if let Some(k) = key.as_deref() {
                record = record.key(k);
            }
            if let Err(e) = send(&producer, record) {
                let at = format!("{} line {}", path.display(), number + 1);
                problem(format!("{at}: {e:#}"));
                continue;
            }
            sent += 1;
            if sent.is_multiple_of(65_536) {
                producer.poll(Duration::ZERO);
                if progress {
                    // Not eprint!: it panics where the terminal has gone (EIO), and the
                    // messages queued would not be sent.
                    let _ = write!(std::io::stderr(), "\rproduced {sent}");
                }
            }
        }
    }
    // Bounded: librdkafka's own limit (`message.timeout.ms`) is 5 minutes. Said with the
    // brokers and how many of the messages were left (it said `flushing: Flush error:
    // OperationTimedOut`, after a page of librdkafka's connection errors).
    if let Err(e) = producer.flush(Duration::from_secs(60)) {
        let left = producer.in_flight_count();
        bail!(
            "{left} of {sent} messages still undelivered to {} after 60 s ({e}): they may not reach it",
            connection.brokers
        );
    }
    if progress {
        let _ = write!(std::io::stderr(), "\r");
    }
    producer.context().check(&mut 0, "messages were")?;
    Ok(Produced {
        sent,
        problems,
        first_problem,
    })
}

/// A line's key (`exchange:symbol`) and whether it is a trade: from the event, or, for a line
/// that is no valid event, from what its JSON says (a trade with a bad price still goes to the
/// trades, under its symbol's key, to be dead-lettered into `market.trade.dlq`).
fn route(line: &[u8]) -> (Option<String>, bool) {
    if let Some(p) = std::str::from_utf8(line).ok().and_then(|l| parse(l).ok()) {
        let trade = matches!(p.event.body, Body::Trade(_));
        return (Some(format!("{}:{}", p.exchange, p.symbol)), trade);
    }
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(line) else {
        return (None, false);
    };
    let text = |k: &str| fields.get(k).and_then(serde_json::Value::as_str);
    let key = text("exchange")
        .zip(text("symbol"))
        .map(|(e, s)| format!("{e}:{s}"));
    (key, text("type") == Some("trade"))
}

/// A mock cluster on 127.0.0.1 with `topics` (and their `.dlq` topics) created.
pub fn mock_cluster(
    partitions: i32,
    topics: &[String],
) -> Result<MockCluster<'static, rdkafka::producer::DefaultProducerContext>> {
    let cluster = MockCluster::new(1).context("starting the mock cluster")?;
    for t in topics {
        cluster
            .create_topic(t, partitions, 1)
            .with_context(|| format!("creating {t}"))?;
        cluster
            .create_topic(&format!("{t}.dlq"), 1, 1)
            .with_context(|| format!("creating {t}.dlq"))?;
    }
    Ok(cluster)
}

/// `broker`: a [`mock_cluster`]; prints `bootstrap=HOST:PORT`, serves until SIGINT or SIGTERM.
///
/// The signals are caught before the address is printed: a script that stops the broker as soon
/// as it has read the address killed it by the signal (exit 143) about one time in three.
pub fn broker(partitions: i32, topics: &[String]) -> Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    let cluster = mock_cluster(partitions, topics)?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "bootstrap={}", cluster.bootstrap_servers())?;
    stdout.flush()?;
    let _ = signals.forever().next();
    drop(cluster);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same error is said once, then once every 10 s with the count of errors not said
    /// meanwhile; another error is said at once.
    #[test]
    fn the_same_poll_error_is_said_every_10_s() {
        let mut r = Repeats::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(r.say("a", at(0)), Some(0));
        assert_eq!(r.say("a", at(1)), None);
        assert_eq!(r.say("a", at(9_999)), None);
        assert_eq!(r.say("a", at(10_000)), Some(2));
        assert_eq!(r.say("a", at(10_001)), None);
        assert_eq!(r.say("b", at(10_002)), Some(1));
        assert_eq!(r.say("b", at(10_003)), None);
        assert_eq!(r.say("a", at(10_004)), Some(1));
    }

    /// Partitions 0 to 65,535 of a topic have input numbers of their own; a topic with more is
    /// refused by name (partition 65,536 of the first topic was partition 0 of the second).
    #[test]
    fn partitions_beyond_the_input_numbers_are_refused() {
        assert_eq!(readable("a", vec![0, 65_535]).unwrap(), vec![0, 65_535]);
        assert_ne!(input_id(0, 65_535), input_id(1, 0));
        let refused = readable("a", vec![3, 65_536]).unwrap_err().to_string();
        assert_eq!(
            refused,
            "a has partition 65536: at most 65536 partitions per topic are read"
        );
        assert!(readable("a", vec![-1]).is_err());
    }

    /// The pending queue after one call per run of messages of one timestamp (the run's last
    /// offset) equals the queue after one call per message, and both hold, per entry, the last
    /// offset before the highest timestamp grows and that timestamp.
    #[test]
    fn runs_of_stamped_messages_leave_the_queue_one_call_per_message_leaves() {
        let times = [10, 10, 20, 20, 15, 30, 30, 5, 30, 40];
        let mut per_message = VecDeque::new();
        for (offset, &time) in times.iter().enumerate() {
            note_stamped(&mut per_message, offset as u64, time);
        }
        let mut per_run = VecDeque::new();
        let mut offset = 0;
        for run in times.chunk_by(|a, b| a == b) {
            offset += run.len() as u64;
            note_stamped(&mut per_run, offset - 1, run[0]);
        }
        assert_eq!(per_run, per_message);
        assert_eq!(Vec::from(per_message), [(1, 10), (4, 20), (8, 30), (9, 40)]);
    }

    /// A payload is cut at a character's start, or where it is when it is no text.
    #[test]
    fn dead_letter_payloads_are_cut_at_a_character() {
        let text = "aé€😀".as_bytes(); // 1, 2, 3 and 4 bytes: starts at 0, 1, 3, 6
        let cuts: Vec<usize> = (1..text.len()).map(|max| cut(text, max)).collect();
        assert_eq!(cuts, [1, 1, 3, 3, 3, 6, 6, 6, 6]);
        assert_eq!(
            cut(&[0x80; 100], 50),
            50,
            "no text: cut where it is, not emptied"
        );
    }

    /// Security settings are accepted as a whole: TLS (librdkafka is built with OpenSSL) and
    /// SASL over it, whose mechanism is named by another property than the protocol (each
    /// checked alone, `security.protocol=sasl_ssl` asked for GSSAPI, which is not built; and
    /// without OpenSSL, `ssl` was refused). A consumer's property beside a producer's passes; a
    /// bad value is named; a clash of a consumer's properties fails a command that consumes.
    #[test]
    fn kafka_properties_are_checked_together() {
        let connection = |properties: &[(&str, &str)]| Connection {
            brokers: "127.0.0.1:9092".into(),
            properties: (properties.iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        for properties in [
            &[("security.protocol", "ssl")][..],
            &[
                ("security.protocol", "sasl_ssl"),
                ("sasl.mechanisms", "SCRAM-SHA-512"),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ],
            &[
                ("sasl.mechanisms", "PLAIN"),
                ("security.protocol", "sasl_plaintext"),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ],
            &[("session.timeout.ms", "10000"), ("linger.ms", "20")],
        ] {
            for consumes in [false, true] {
                let checked = connection(properties).check(consumes);
                assert!(checked.is_ok(), "{properties:?}, {consumes}: {checked:?}");
            }
        }
        let refused = connection(&[("security.protocol", "ssl"), ("linger.ms", "x")]).check(true);
        let message = refused.expect_err("a bad value").to_string();
        assert!(message.starts_with("-X linger.ms=x: "), "{message}");
        // A clash that only a consumer checks: refused where the command consumes.
        let clash = [("fetch.max.bytes", "2000")];
        assert!(connection(&clash).check(false).is_ok());
        let message = (connection(&clash).check(true))
            .expect_err("a consumer's clash")
            .to_string();
        assert!(
            message.contains("`fetch.max.bytes` must be >="),
            "{message}"
        );
    }
}
