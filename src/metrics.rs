//! Metrics: Prometheus text (OpenMetrics) at `http://--metrics-addr/metrics`.
//!
//! One process-wide [`Metrics`] ([`metrics()`]); every part of the job updates its own series:
//! - the source (through [`Stats`]): events read and watermark per input, processed, duplicates,
//!   late events, and the state its stages hold (book levels, trades in the window, candles);
//! - the publishing worker: results published by kind, marks, the output frontier, dead letters by
//!   reason;
//! - a Kafka lag thread: the group's lag per partition (refreshed every 10 s);
//! - the Redis writer: write latency, failures, the durable frontier, backpressure.
//!
//! Counters that the dataflow already keeps in [`Stats`] are read at scrape time by a collector
//! rather than copied on the hot path. Lags behind the wall clock (watermark, frontier) are
//! computed at scrape time too, so a stalled job shows a growing lag.
//!
//! The HTTP side is deliberately minimal: a listening thread, a short-lived thread per request
//! (timeouts, 16 KiB request limit), `GET /metrics` (and HEAD; another path is 404, another
//! method 405).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tampines_dataflows::stats::Stats;

/// Label sets: `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

/// Names an input for its labels (`topic`/`partition`, or `file`).
pub type InputLabels = Arc<dyn Fn(u32) -> Labels + Send + Sync>;

/// The running job, as the scrape-time collector sees it.
#[derive(Default)]
struct JobView {
    stats: Option<Arc<Stats>>,
    labels: Option<InputLabels>,
}

/// Every series of the process (see the module doc).
pub struct Metrics {
    registry: Registry,
    job: Arc<Mutex<JobView>>,
    frontier: Arc<AtomicU64>,
    /// Results published, by kind (`book`, `ticker`, `candles`).
    pub published: Family<Labels, Counter>,
    /// `published`'s counter of each kind seen, by the kind's static name.
    published_by_kind: Mutex<Vec<(&'static str, Counter)>>,
    /// Progress marks published.
    pub marks: Counter,
    /// Dead letters, by reason.
    pub dead: Family<Labels, Counter>,
    /// Consumer lag per partition (the group's committed offset to the end).
    pub consumer_lag: Family<Labels, Gauge>,
    /// Kafka messages the broker deleted before they were read, per partition.
    pub lost: Family<Labels, Counter>,
    /// Seconds per atomic Redis step.
    pub redis_latency: Histogram,
    /// Failed Redis attempts.
    pub redis_failures: Counter,
    /// The last mark Redis holds.
    pub redis_frontier: Gauge,
    /// 1 while the sources are paused because the Redis writer is behind.
    pub redis_backpressure: Gauge,
    /// Workers of this process whose reading is paused by flow control.
    pub workers_paused: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Wall clock, ms since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tampines");
        let job = Arc::new(Mutex::new(JobView::default()));
        let frontier = Arc::new(AtomicU64::new(0));
        let m = Metrics {
            registry: Registry::default(),
            job: job.clone(),
            frontier: frontier.clone(),
            published: Family::default(),
            published_by_kind: Mutex::default(),
            marks: Counter::default(),
            dead: Family::default(),
            consumer_lag: Family::default(),
            lost: Family::default(),
            redis_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            redis_failures: Counter::default(),
            redis_frontier: Gauge::default(),
            redis_backpressure: Gauge::default(),
            workers_paused: Gauge::default(),
        };
        registry.register(
            "results_published",
            "Changed results published, by kind",
            m.published.clone(),
        );
        registry.register(
            "marks_published",
            "Progress marks published",
            m.marks.clone(),
        );
        registry.register(
            "dead_lettered",
            "Input messages dead-lettered, by reason",
            m.dead.clone(),
        );
        registry.register(
            "messages_lost",
            "Kafka messages deleted by the broker (retention) before they were read, by topic and partition",
            m.lost.clone(),
        );
        registry.register(
            "consumer_lag_messages",
            "Messages between the group's committed offset and the partition's end",
            m.consumer_lag.clone(),
        );
        registry.register(
            "redis_write_seconds",
            "Duration of one atomic Redis step (one or more merged marks)",
            m.redis_latency.clone(),
        );
        registry.register(
            "redis_write_failures",
            "Failed Redis write attempts (retried)",
            m.redis_failures.clone(),
        );
        registry.register(
            "redis_frontier_ms",
            "The last progress mark Redis holds",
            m.redis_frontier.clone(),
        );
        registry.register(
            "redis_backpressure",
            "1 while input is paused because the Redis writer is behind",
            m.redis_backpressure.clone(),
        );
        registry.register(
            "workers_paused",
            "Workers of this process whose reading is paused: results in flight wait to be written, or Redis is behind",
            m.workers_paused.clone(),
        );
        registry.register_collector(Box::new(JobCollector { job, frontier }));
        Metrics { registry, ..m }
    }

    /// Attaches a running job's counters (and how to label its inputs) for scrapes.
    pub fn attach(&self, stats: Arc<Stats>, labels: InputLabels) {
        if let Ok(mut job) = self.job.lock() {
            job.stats = Some(stats);
            job.labels = Some(labels);
        }
    }

    /// Records the output frontier (the last mark published).
    pub fn set_frontier(&self, mark: u64) {
        self.frontier.store(mark, Ordering::Relaxed);
    }

    /// The output frontier (0 before the first mark).
    pub fn frontier(&self) -> u64 {
        self.frontier.load(Ordering::Relaxed)
    }

    /// The attached job's counters.
    pub fn totals(&self) -> Option<tampines_dataflows::stats::Totals> {
        let job = self.job.lock().ok()?;
        job.stats.as_ref().map(|s| s.totals())
    }

    /// Counts one published batch's changes by kind (the key's first component). A batch is
    /// sorted by kind first, so the kinds come in runs, each found by a binary search (reading
    /// every change's kind, on worker 0, was half a percent of the Flink file's samples).
    pub fn count_published(&self, batch: &tampines_dataflows::results::Published) {
        let mut counters = self
            .published_by_kind
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut rest = &batch.changes[..];
        while let Some(first) = rest.first() {
            // Compared by value: a name's address may differ from one use of it to another.
            let kind = first.kind();
            let n = rest.partition_point(|c| c.kind() == kind);
            debug_assert!(
                rest[n..].iter().all(|c| c.kind() != kind),
                "a batch is sorted by kind first (a kind's changes in one run)"
            );
            rest = &rest[n..];
            // The family's counter of each kind, looked up once (a lookup made a label vector).
            match counters.iter().find(|(k, _)| *k == kind) {
                Some((_, counter)) => {
                    counter.inc_by(n as u64);
                }
                None => {
                    let labels = vec![("kind", kind.to_string())];
                    let counter = self.published.get_or_create(&labels).clone();
                    counter.inc_by(n as u64);
                    counters.push((kind, counter));
                }
            }
        }
        self.marks.inc();
        self.set_frontier(batch.time);
    }

    /// The whole exposition, as served at `/metrics`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Reads [`Stats`] and the frontier at scrape time.
struct JobCollector {
    job: Arc<Mutex<JobView>>,
    frontier: Arc<AtomicU64>,
}

impl std::fmt::Debug for JobCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobCollector")
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let metric = ConstCounter::new(value);
    let e = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(e)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> std::fmt::Result {
    let metric = ConstGauge::new(value);
    let e = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(e)
}

/// One gauge family: `(labels, value)` rows under one descriptor.
fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: &[(Labels, i64)],
) -> std::fmt::Result {
    let mut e = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in rows {
        let family = e.encode_family(labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*value as u64).encode(family)?,
            _ => ConstGauge::new(*value).encode(family)?,
        }
    }
    Ok(())
}

impl Collector for JobCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let now = now_ms() as i64;
        let frontier = self.frontier.load(Ordering::Relaxed) as i64;
        gauge(
            &mut encoder,
            "output_frontier_ms",
            "The last progress mark published (event time, ms)",
            frontier,
        )?;
        if frontier > 0 {
            gauge(
                &mut encoder,
                "output_frontier_lag_ms",
                "Wall clock minus the output frontier",
                now - frontier,
            )?;
        }
        let Ok(job) = self.job.lock() else {
            return Ok(());
        };
        let Some(stats) = job.stats.as_ref() else {
            return Ok(());
        };
        let t = stats.totals();
        counter(&mut encoder, "events_read", "Input messages read", t.read)?;
        counter(
            &mut encoder,
            "events_processed",
            "Events applied",
            t.processed,
        )?;
        counter(
            &mut encoder,
            "duplicates",
            "Book events with an old sequence number, and repeated trades",
            t.duplicates,
        )?;
        counter(
            &mut encoder,
            "late_events",
            "Events whose own timestamp was already closed when read",
            t.late,
        )?;
        let label = |id: u32| match job.labels.as_ref() {
            Some(f) => f(id),
            None => vec![("input", id.to_string())],
        };
        let inputs = stats.inputs();
        // A row per input with a value (an input with no watermark yet has no watermark rows:
        // 0 made its lag 57 years, which the runbook reads as a partition holding progress back).
        let rows = |f: &dyn Fn(&tampines_dataflows::stats::InputProgress) -> Option<i64>| {
            (inputs.iter())
                .filter_map(|(&id, p)| f(p).map(|v| (label(id), v)))
                .collect::<Vec<_>>()
        };
        gauges(
            &mut encoder,
            "input_read",
            "Input messages read, per input",
            MetricType::Counter,
            &rows(&|p| Some(p.read as i64)),
        )?;
        gauges(
            &mut encoder,
            "input_watermark_ms",
            "Highest event time read minus the lateness, per input",
            MetricType::Gauge,
            &rows(&|p| p.watermark.map(|w| w as i64)),
        )?;
        gauges(
            &mut encoder,
            "input_watermark_lag_ms",
            "Wall clock minus the input's watermark",
            MetricType::Gauge,
            &rows(&|p| p.watermark.map(|w| now - w as i64)),
        )?;
        let state = stats.state.counts();
        gauges(
            &mut encoder,
            "state_records",
            "Records held by the dataflow's own stages, by dataflow",
            MetricType::Gauge,
            &[
                (vec![("dataflow", "orderbook".into())], state.book_levels),
                (vec![("dataflow", "ticker".into())], state.window_trades),
                (vec![("dataflow", "candles".into())], state.candles),
            ],
        )
    }
}

/// A label value from free text: only `[A-Za-z0-9_./-]`, the rest as `_`, at most 128 characters
/// (prometheus-client writes label values unescaped; a quote would break the exposition).
pub fn label_value(text: &str) -> String {
    text.chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_./-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The bounded class of a dead letter's reason, for its label: the reason up to the first `:`
/// or quote (`not json: expected ...` -> `not_json`, `unknown type "quote"` -> `unknown_type`,
/// `missing field price` stays whole: field names are few).
pub fn reason_label(reason: &str) -> String {
    let class = reason.split([':', '"']).next().unwrap_or("").trim();
    label_value(class)
}

/// What [`log_operators`] watches.
#[derive(Clone, Copy, Debug, Default)]
pub struct OperatorLogging {
    /// Log (warn) every operator activation that runs longer than this: what stalls the live
    /// path (`TAMPINES_SLOW_OPERATOR_MS`).
    pub slow: Option<Duration>,
}

/// Installs timely's logger for `what` (call before building the dataflow, on every worker;
/// logging costs a little, so only when asked: a slow-operator threshold set).
pub fn log_operators(worker: &mut timely::worker::Worker, what: OperatorLogging) {
    use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};
    if what.slow.is_none() {
        return;
    }
    let worker_index = worker.index().to_string();
    let Some(mut registry) = worker.log_register() else {
        return;
    };
    // Operator id -> name; one "timely" logger (a second one would replace the first).
    let mut names: HashMap<usize, String> = HashMap::new();
    let mut started: HashMap<usize, Duration> = HashMap::new();
    let mut roots: std::collections::HashSet<usize> = Default::default();
    registry.insert::<TimelyEventBuilder, _>("timely", move |_, data| {
        for (at, event) in data.iter().flatten() {
            match event {
                // A dataflow is itself an operator (address of length 1) whose activations
                // span all of its operators': not a culprit, so not watched.
                TimelyEvent::Operates(op) if op.addr.len() == 1 => {
                    roots.insert(op.id);
                }
                TimelyEvent::Operates(op) => {
                    names.insert(op.id, op.name.clone());
                }
                TimelyEvent::Schedule(s) => {
                    let Some(slow) = what.slow.filter(|_| !roots.contains(&s.id)) else {
                        continue;
                    };
                    match s.start_stop {
                        StartStop::Start => {
                            started.insert(s.id, *at);
                        }
                        StartStop::Stop => {
                            let took = started
                                .remove(&s.id)
                                .map_or(Duration::ZERO, |b| at.saturating_sub(b));
                            if took > slow {
                                let operator = names.get(&s.id).map_or("?", String::as_str);
                                tracing::warn!(
                                    worker = %worker_index,
                                    operator,
                                    ms = took.as_millis() as u64,
                                    "slow operator activation"
                                );
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    });
}

/// Serves `/metrics` from a thread of its own; returns the bound address. Process `p` of a job
/// listens on `addr`'s port + `p`, so that processes on one host given the same options do not
/// collide (port 0 picks a free port).
pub fn serve(addr: &str, process: usize) -> Result<SocketAddr> {
    let mut target = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .with_context(|| format!("--metrics-addr {addr}: not HOST:PORT"))?
        .next()
        .with_context(|| format!("--metrics-addr {addr}: no address"))?;
    if target.port() != 0 {
        let port = u16::try_from(usize::from(target.port()) + process)
            .context("--metrics-addr: port + process index above 65535")?;
        target.set_port(port);
    }
    let listener = TcpListener::bind(target)
        .with_context(|| format!("--metrics-addr {target}: cannot listen"))?;
    let bound = listener.local_addr()?;
    if target.port() == 0 {
        // Port 0: the system chose one, which only this line names (at the default level).
        tracing::warn!(%bound, "serving metrics at /metrics, on a port the system chose");
    } else {
        tracing::info!(%bound, "serving metrics at /metrics");
    }
    let open = Arc::new(Mutex::new(Open::default()));
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let stream = match stream {
                    Ok(stream) => stream,
                    Err(e) => {
                        // Out of file descriptors, the connection stays queued and accepting
                        // again at once failed again: the thread spun a core. A pause instead.
                        tracing::debug!(error = %e, "metrics: accepting a connection");
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                let Some(slot) = Slot::take(&open, &stream) else {
                    tracing::debug!("metrics: too many connections open; closing one more");
                    continue;
                };
                // One short-lived thread per request: a slow client holds only its own. The
                // slot is given back when the thread ends, or at once if it cannot start.
                let spawned = std::thread::Builder::new()
                    .name("metrics-request".into())
                    .spawn(move || {
                        let _slot = slot;
                        if let Err(e) = answer(stream) {
                            tracing::debug!(error = %e, "metrics request");
                        }
                    });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "metrics request");
                }
            }
        })?;
    Ok(bound)
}

/// The metrics connections open: in all, and by the client's address.
#[derive(Default)]
struct Open {
    all: usize,
    by_client: HashMap<std::net::IpAddr, usize>,
}

/// One connection's place among those open, given back when dropped.
struct Slot {
    open: Arc<Mutex<Open>>,
    client: std::net::IpAddr,
}

impl Slot {
    /// A place for `stream`, unless [`CONNECTIONS`] are open, or [`PER_CLIENT`] of its client's.
    fn take(open: &Arc<Mutex<Open>>, stream: &TcpStream) -> Option<Slot> {
        let client = stream.peer_addr().ok()?.ip();
        let mut o = open.lock().unwrap_or_else(|e| e.into_inner());
        let mine = o.by_client.get(&client).copied().unwrap_or(0);
        if o.all >= CONNECTIONS || mine >= PER_CLIENT {
            return None;
        }
        o.all += 1;
        o.by_client.insert(client, mine + 1);
        Some(Slot {
            open: Arc::clone(open),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut o = self.open.lock().unwrap_or_else(|e| e.into_inner());
        o.all -= 1;
        if let std::collections::hash_map::Entry::Occupied(mut e) = o.by_client.entry(self.client) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// Connections of one client (address) answered at once, at most: so that one client holding
/// connections open cannot keep every scraper out.
const PER_CLIENT: usize = 8;

/// Connections answered at once, at most: each holds a file descriptor and a thread for up to
/// [`REQUEST_WITHIN`], and clients that opened hundreds and sent nothing took the descriptors
/// the job needs (its Redis writes failed, `Too many open files`, for as long as they went on).
/// A scraper needs one; one client gets at most [`PER_CLIENT`].
const CONNECTIONS: usize = 32;

/// How long a request may take to arrive, whole: a client sending a byte now and then held its
/// thread for as long as it went on.
const REQUEST_WITHIN: Duration = Duration::from_secs(5);

/// A connection read until a deadline: each read waits at most until then.
struct Until {
    stream: TcpStream,
    deadline: std::time::Instant,
}

impl std::io::Read for Until {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

fn answer(stream: TcpStream) -> std::io::Result<()> {
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let deadline = std::time::Instant::now() + REQUEST_WITHIN;
    // A request is a line and a few headers: 16 KiB at most.
    let until = Until { stream, deadline };
    let mut reader = BufReader::new(std::io::Read::take(until, 16 * 1024));
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Skip the headers.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let mut stream = reader.into_inner().into_inner().stream;
    let mut words = request.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, kind, body) = if !matches!(method, "GET" | "HEAD") {
        (
            "405 Method Not Allowed\r\nAllow: GET, HEAD",
            "text/plain",
            "GET /metrics\n".to_string(),
        )
    } else if path == "/metrics" || path.starts_with("/metrics?") {
        (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics().render(),
        )
    } else {
        ("404 Not Found", "text/plain", "try /metrics\n".to_string())
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    // A HEAD request gets the headers of a GET, without the body.
    if method != "HEAD" {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published changes are counted by kind, exactly, batch after batch (a batch holds each
    /// kind's changes together, in the kinds' order).
    #[test]
    fn published_changes_are_counted_by_kind() {
        let change = |kind: u8| -> tampines_dataflows::results::Change {
            let key = ["book:ex:s:1", "ticker:ex:s", "candles:ex:s:1m"][usize::from(kind)];
            serde_json::from_value(serde_json::json!({
                "name": {"prefix": 0, "order": [kind, "ex", "s", 0], "whole": false, "key": key},
                "score": null,
                "json": "{}",
            }))
            .expect("a change")
        };
        let batch = |kinds: &[u8]| tampines_dataflows::results::Published {
            time: 1_000,
            changes: kinds.iter().map(|&k| change(k)).collect(),
        };
        let m = Metrics::new();
        m.count_published(&batch(&[0, 0, 1, 2, 2, 2]));
        m.count_published(&batch(&[2]));
        m.count_published(&batch(&[0, 1]));
        let text = m.render();
        for (kind, n) in [("book", 3), ("ticker", 2), ("candles", 4)] {
            let series = format!("tampines_results_published_total{{kind=\"{kind}\"}} {n}\n");
            assert!(text.contains(&series), "{series}{text}");
        }
        assert!(
            text.contains("tampines_marks_published_total 3\n"),
            "{text}"
        );
    }

    /// Dead-letter reasons become a few safe label values (no quotes, no input text).
    #[test]
    fn reason_labels_are_bounded_and_safe() {
        assert_eq!(
            reason_label("not json: expected ident at line 1 column 2"),
            "not_json"
        );
        assert_eq!(reason_label("unknown type \"quote\""), "unknown_type");
        assert_eq!(reason_label("missing field price"), "missing_field_price");
        assert_eq!(reason_label("too_late"), "too_late");
        assert_eq!(label_value("/data/a \"b\".ndjson"), "/data/a__b_.ndjson");
    }

    /// The job's counters and state gauges are exposed under their own names and labels, by
    /// value (the end-to-end tests check the counters; each gauge of the stages' state was
    /// checked only for being there).
    #[test]
    fn a_job_s_counters_and_state_are_exposed_by_value() {
        let m = Metrics::new();
        let stats = Arc::new(Stats::default());
        // Two workers' parts, summed.
        stats.read.add(0, 5);
        stats.read.add(1, 6);
        stats.processed.add(0, 7);
        stats.dead_lettered.add(3, 3);
        stats.duplicates.add(17, 1);
        stats.state.book_levels.add(0, 50);
        stats.state.book_levels.add(1, -10);
        stats.state.window_trades.add(0, 25);
        stats.state.candles.add(1, 9);
        m.attach(stats, Arc::new(|i| vec![("input", i.to_string())]));
        let text = m.render();
        for line in [
            "tampines_events_read_total 11",
            "tampines_events_processed_total 7",
            "tampines_duplicates_total 1",
            "tampines_state_records{dataflow=\"orderbook\"} 40",
            "tampines_state_records{dataflow=\"ticker\"} 25",
            "tampines_state_records{dataflow=\"candles\"} 9",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }

    /// An input that read only dead letters has no watermark, and no watermark rows: a 0 made its
    /// lag 57 years. One with a watermark has both.
    #[test]
    fn an_input_without_a_watermark_has_no_watermark_rows() {
        let m = Metrics::new();
        let stats = Arc::new(Stats::default());
        {
            let mut inputs = stats.inputs.lock().unwrap();
            let progress =
                |read, watermark| tampines_dataflows::stats::InputProgress { read, watermark };
            inputs.insert(0, progress(5, Some(2000)));
            inputs.insert(1, progress(3, None));
        }
        m.attach(stats, Arc::new(|i| vec![("input", i.to_string())]));
        let text = m.render();
        let rows = |name: &str| -> Vec<&str> {
            (text.lines())
                .filter(|l| l.starts_with(&format!("tampines_{name}{{")))
                .collect()
        };
        assert_eq!(
            rows("input_watermark_ms"),
            ["tampines_input_watermark_ms{input=\"0\"} 2000"]
        );
        assert_eq!(rows("input_watermark_lag_ms").len(), 1, "{text}");
        assert!(rows("input_watermark_lag_ms")[0]
            .starts_with("tampines_input_watermark_lag_ms{input=\"0\"} "));
        assert_eq!(rows("input_read_total").len(), 2, "{text}");
    }

    /// A dead letter with a quote in its reason leaves the exposition parseable.
    #[test]
    fn a_quoted_reason_leaves_the_exposition_parseable() {
        metrics()
            .dead
            .get_or_create(&vec![("reason", reason_label("unknown type \"x\""))])
            .inc();
        let text = metrics().render();
        assert!(
            text.contains("tampines_dead_lettered_total{reason=\"unknown_type\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
