//! `demo`: the whole pipeline in one process, with nothing installed.
//!
//! 1. An embedded Kafka broker (librdkafka's mock cluster: a real Kafka-protocol broker on a local
//!    port, which kcat and any client can use).
//! 2. A producer thread feeding it a generated market at a live pace: event time is the wall
//!    clock, `--symbols` symbols, `--rate` events per second.
//! 3. The job itself (`run`, live, 2 workers unless `-w` says otherwise) reading the broker.
//! 4. Results to Redis when one answers at `--probe-redis` (127.0.0.1:6379) or `--redis` names
//!    one, else to a `redis-server` started from PATH on a free port, else as NDJSON to stdout.
//!    In a Redis it did not start, an earlier demo's results under the prefix are removed first
//!    (they are another market); keys under the prefix that no demo writes, or another demo
//!    still writing there, stop it with exit 1 before it writes anything (`clear_earlier_demo`).
//!
//! Metrics are served (on a free local port unless `--metrics-addr` says where) and the demo
//! prints their URL.
//!
//! Ctrl-C (or SIGTERM, or SIGHUP when the terminal closes) stops the producer and the inputs; the
//! job closes its last marks, everything is flushed, a `redis-server` it started is stopped, and
//! the demo exits 0. Another Ctrl-C a second or more after the first exits at once (130), for when
//! the last write waits for a Redis that went away (one within the second is the same stop
//! repeated, and ignored); a Ctrl-C while the job still catches up with the broker's backlog
//! exits at once too (`signals::stop_on_signals`).

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tampines_dataflows::stats::Totals;

use crate::cli::{DemoArgs, Settings};
use crate::gen::{Generator, Market};
use crate::kafka;
use crate::metrics::now_ms;

/// Where the demo publishes.
enum Target {
    /// A Redis that was already there (or named with `--redis`).
    Redis(String),
    /// A `redis-server` the demo started, stopped when it ends (when the server is dropped).
    Started(String, #[allow(dead_code)] RedisServer),
    /// NDJSON on stdout.
    Stdout,
}

/// A `redis-server` child, killed on drop.
pub struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn say(line: &str) {
    // Not eprintln!: it panics when stderr is gone (the terminal closed, SIGHUP), and the demo
    // must still stop cleanly then.
    crate::say!("demo: {line}");
}

/// True when something at `addr` answers a Redis PING.
fn redis_answers(addr: &str) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://{addr}")) else {
        return false;
    };
    client
        .get_connection_with_timeout(Duration::from_millis(300))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}

/// Starts `redis-server` from PATH on a free port, if there is one; waits until it answers.
fn start_redis() -> Option<(String, RedisServer)> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .ok()?
        .port();
    // Its own process group: Ctrl-C reaches the demo, which stops the server after its last write.
    let child = Command::new("redis-server")
        .process_group(0)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = RedisServer(child);
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if redis_answers(&addr) {
            return Some((format!("redis://{addr}"), server));
        }
        std::thread::sleep(Duration::from_millis(50)); // poll until it answers, bounded
    }
    None
}

/// The key name, after `{prefix}:`, of every result a demo writes: its exchange is `demo`.
const DEMO_KEYS: [&str; 3] = ["book:demo:", "ticker:demo:", "candles:demo:"];

/// Removes an earlier demo's results from the prefix of a Redis the demo did not start: they are
/// another market (a new demo starts a new broker and a new generated market), and the new one's
/// results were written among them (a ticker of the old market beside a book of the new until
/// the symbol's first trade, an old 1m candle left open for good, coarser candles that no longer
/// sum their 1m ones). One `DEL` takes them and the frontier, so a reader sees the old market or
/// none of it; the `updates` stream stays. A key of the prefix that no demo writes (another job's
/// results), or a demo that still writes there, stops the demo instead.
fn clear_earlier_demo(url: &str, prefix: &str) -> Result<()> {
    let listed = connect(url).and_then(|mut c| Ok((demo_keys(&mut c, prefix)?, c)));
    let (found, mut c) = match listed {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "looking for an earlier demo's results in Redis (they would be mixed with this one's)");
            return Ok(());
        }
    };
    let ours = |k: &[u8]| {
        let rest = &k[prefix.len() + 1..];
        matches!(rest, b"frontier" | b"frontier:probe")
            || DEMO_KEYS.iter().any(|d| rest.starts_with(d.as_bytes()))
    };
    let (ours, other): (Vec<Vec<u8>>, Vec<Vec<u8>>) = found.into_iter().partition(|k| ours(k));
    if let Some(key) = other.first() {
        anyhow::bail!(
            "Redis at {} holds keys under the prefix {prefix:?} that a demo does not write ({}, {} in all): a demo's new market would be mixed into them; give the demo another --prefix, or --stdout",
            crate::cli::hide_url_password(url),
            String::from_utf8_lossy(key),
            other.len()
        );
    }
    if ours.is_empty() {
        return Ok(());
    }
    // A demo that runs now writes a step every mark or so: its results are not an earlier one's.
    let last = |c: &mut redis::Connection| -> Result<(Option<String>, Option<String>)> {
        let entry: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(format!("{prefix}:updates"))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query(c)?;
        let frontier: Option<String> = redis::cmd("GET")
            .arg(format!("{prefix}:frontier"))
            .query(c)?;
        Ok((entry.ids.into_iter().next().map(|e| e.id), frontier))
    };
    let before = last(&mut c)?;
    let until = Instant::now() + LIVE_WRITER;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100)); // polled, for LIVE_WRITER at most
        if last(&mut c)? != before {
            anyhow::bail!(
                "Redis at {} holds a demo's results under the prefix {prefix:?} that are being written now (its frontier moved within {} s): another demo runs there; stop it, or give this one another --prefix",
                crate::cli::hide_url_password(url),
                LIVE_WRITER.as_secs()
            );
        }
    }
    redis::cmd("DEL")
        .arg(&ours)
        .query::<u64>(&mut c)
        .context("removing an earlier demo's results")?;
    say(&format!(
        "removed an earlier demo's results under {prefix} ({} keys): a new demo is a new market",
        ours.len()
    ));
    Ok(())
}

/// How long a demo watches an earlier demo's results for a step of a demo that still runs.
const LIVE_WRITER: Duration = Duration::from_secs(2);

/// The keys of `prefix` in the Redis of `c`, but its `updates` stream, as bytes (a name that
/// is no UTF-8 is no demo's, and must not end the listing).
fn demo_keys(c: &mut redis::Connection, prefix: &str) -> Result<Vec<Vec<u8>>> {
    // SCAN's pattern is a glob: the prefix's own glob characters are escaped.
    let mut pattern = String::new();
    for ch in prefix.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(ch);
    }
    pattern.push_str(":*");
    let updates = format!("{prefix}:updates").into_bytes();
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(c)?;
        keys.extend(batch.into_iter().filter(|k| *k != updates));
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// A connection to the Redis at `url`, within 5 s.
fn connect(url: &str) -> Result<redis::Connection> {
    Ok(redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(5))?)
}

fn choose_target(args: &DemoArgs) -> Target {
    // `--stdout` first: `--redis` may come from TAMPINES_REDIS or a config file, and a
    // deployment that sets one could not run the demo to stdout.
    if args.stdout {
        return Target::Stdout;
    }
    if let Some(url) = &args.job.redis {
        return Target::Redis(url.clone());
    }
    if redis_answers(&args.probe_redis) {
        return Target::Redis(format!("redis://{}", args.probe_redis));
    }
    match start_redis() {
        Some((url, server)) => Target::Started(url, server),
        None => Target::Stdout,
    }
}

/// Feeds the broker at `rate` events/s with event time = wall clock until `stop`. Symbols are
/// dealt to the `partitions` in turn, so that each holds some (hashing their keys left one of
/// four empty, and an empty partition holds progress back for `--idle-ms`).
fn feed(
    producer: BaseProducer,
    (symbols, partitions): (usize, i32),
    rate: u64,
    stop: Arc<AtomicBool>,
) -> Result<u64> {
    let start = now_ms();
    let market = Market {
        symbols,
        events: 0,
        hours: 0.0,
        seed: start,
        trade_ratio: 0.3,
        depth: 40,
        disorder_ms: 50,
        exchange: "demo".into(),
        start_ms: start,
    };
    let mut generator = Generator::new(&market);
    let mut sent = 0u64;
    let mut placed: std::collections::HashMap<String, i32> = Default::default();
    let mut send = |line: String, producer: &BaseProducer| -> Result<()> {
        let parsed = tampines_dataflows::event::parse(&line).ok();
        let (topic, key) = match parsed {
            Some(p) => (
                if p.event.is_book() {
                    "market.book"
                } else {
                    "market.trade"
                },
                format!("{}:{}", p.exchange, p.symbol),
            ),
            None => ("market.book", String::new()),
        };
        let dealt = placed.len() as i32 % partitions;
        let partition = *placed.entry(key.clone()).or_insert(dealt);
        loop {
            let record = BaseRecord::to(topic).key(&key).partition(partition);
            match producer.send(record.payload(&line)) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(10)); // local queue full: let it drain
                }
                Err((e, _)) => return Err(e).context("producing demo events"),
            }
        }
        sent += 1;
        Ok(())
    };
    for line in generator.snapshots(start) {
        send(line, &producer)?;
    }
    let began = Instant::now();
    let mut produced = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Catch up to the pace: events due by now, each stamped with the wall clock; after a
        // stall (a suspended laptop) at most a second's worth, not the whole backlog.
        let due = (began.elapsed().as_millis() * u128::from(rate) / 1000).min(u128::from(u64::MAX))
            as u64;
        produced = produced.max(due.saturating_sub(rate));
        while produced < due && !stop.load(Ordering::Relaxed) {
            let line = generator.event(now_ms());
            send(line, &producer)?;
            produced += 1;
        }
        // The pace of a live feed, spent handling delivery reports: `poll` handles every event
        // that comes within the 5 ms. (`poll(0)` and a sleep handled one event a round, fewer
        // than came: they piled up in librdkafka's memory, about 0.9 MB/s at 2,000 events/s.)
        producer.poll(Duration::from_millis(5));
    }
    producer.flush(Duration::from_secs(5)).ok();
    Ok(sent)
}

/// Runs the demo until Ctrl-C; returns the job's counters.
pub fn demo(args: DemoArgs) -> Result<(Totals, Settings)> {
    let topics = vec!["market.book".to_string(), "market.trade".to_string()];
    let cluster = kafka::mock_cluster(args.partitions, &topics)?;
    let bootstrap = cluster.bootstrap_servers();
    say(&format!(
        "embedded Kafka broker at {bootstrap} (topics market.book, market.trade, {} partitions; try: kcat -b {bootstrap} -C -t market.trade -c 5)",
        args.partitions
    ));
    let target = choose_target(&args);
    let mut job_args = args.job.clone();
    // Two workers unless `-w` says otherwise: the job as it runs across cores.
    job_args.workers.get_or_insert(2);
    if job_args.metrics_addr.is_none() {
        // Metrics on by default, on a free port (said below).
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9187);
        job_args.metrics_addr = Some(format!("127.0.0.1:{port}"));
    }
    if let Target::Redis(url) = &target {
        clear_earlier_demo(url, &job_args.prefix)?;
    }
    match &target {
        Target::Redis(url) | Target::Started(url, _) => {
            job_args.redis = Some(url.clone());
            let how = match target {
                Target::Started(..) => "started redis-server",
                _ if args.job.redis.is_some() => "using the Redis named by --redis",
                _ => "found Redis",
            };
            let cli = redis_cli(url);
            let p = &job_args.prefix;
            // The URL last on its line: a colon after it was copied with it, and redis-py
            // refused the port (`45153:`).
            say(&format!(
                "{how}; results are published to {}",
                crate::cli::hide_url_password(url)
            ));
            say("look with:");
            say(&format!("  {cli} GET {p}:frontier"));
            say(&format!("  {cli} GET {p}:book:demo:S000USDT:1"));
            say(&format!("  {cli} GET {p}:ticker:demo:S000USDT"));
            say(&format!(
                "  {cli} ZRANGE {p}:candles:demo:S000USDT:1m -1 -1"
            ));
            say(&format!("  {cli} XREAD BLOCK 0 STREAMS {p}:updates $"));
        }
        Target::Stdout => {
            job_args.redis = None;
            let dlq = job_args.dlq.as_ref().map(|d| d.to_string_lossy());
            if job_args.out.is_none() && dlq.is_some_and(|d| crate::cli::names_stdout(&d)) {
                anyhow::bail!("no Redis, so the results go to stdout, where --dlq sends the dead letters too: give --out FILE, or --dlq FILE");
            }
            let out = job_args.out.get_or_insert_with(|| "-".into());
            // `--out FILE` takes them, with or without `--stdout`.
            let to = match out.as_str() {
                "-" => "stdout".to_string(),
                file => format!("{file} (--out)"),
            };
            if args.stdout {
                say(&format!("results go to {to} as NDJSON (--stdout)"));
            } else {
                say(&format!(
                    "no Redis at {} and no redis-server on PATH: results go to {to} as NDJSON",
                    args.probe_redis
                ));
            }
        }
    }
    let mut settings = job_args.settings().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    // Live: it waits for Redis to come back, however long.
    settings.redis.iter_mut().for_each(|r| r.patience = None);
    if let Some(addr) = &settings.metrics_addr {
        let port_0 = addr
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse() == Ok(0u16));
        if port_0 {
            say("metrics: at /metrics, on a port the system chooses (the line `serving metrics` below names it)");
        } else {
            say(&format!("metrics: curl http://{addr}/metrics"));
        }
    }
    say(&format!(
        "feeding {} symbols at {} events/s (event time = wall clock); {} worker{}; Ctrl-C stops",
        args.symbols,
        args.rate,
        job_args.workers(),
        if job_args.workers() == 1 { "" } else { "s" }
    ));
    // The first Ctrl-C (or SIGTERM) stops cleanly; a second one while stopping (say Redis went
    // away and the last write waits for it) exits at once, with 130. A redis-server the demo
    // started is stopped then too, and when the job exits at once for a failure (`crate::exit`:
    // no destructor runs there).
    if let Target::Started(_, server) = &target {
        let pid = server.0.id();
        crate::before_exit(move || {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        });
    }
    // SIGHUP: the terminal closed. (SIGKILL cannot be caught: a redis-server the demo started
    // then stays, and is stopped by hand.)
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let stop = crate::signals::stop_on_signals(&[SIGINT, SIGTERM, SIGHUP], || {
        say("stopping: closing the last marks (Ctrl-C again, a second or more from now, to quit at once)")
    })
    .context("signal handler")?;
    let connection = kafka::Connection {
        brokers: bootstrap.clone(),
        properties: Vec::new(),
    };
    let producer = connection.producer()?;
    let feeder = {
        let stop = stop.clone();
        let (symbols, rate) = ((args.symbols, args.partitions), args.rate);
        std::thread::Builder::new()
            .name("demo-feed".into())
            .spawn(move || feed(producer, symbols, rate, stop))?
    };
    let status = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("demo-status".into())
            .spawn(move || report_status(&stop))?
    };
    let opts = kafka::SourceOptions {
        connection: connection.clone(),
        topics: topics.clone(),
        group: "tampines-demo".into(),
        start: kafka::Start::Earliest,
        until_end: false,
        stop: Some(stop.clone()),
    };
    let idle = Some(Duration::from_millis(args.job.idle_ms));
    let result = kafka::run_job(settings.clone(), idle, opts, job_args.workers(), 1);
    stop.store(true, Ordering::Relaxed);
    let _ = status.join();
    let fed = feeder
        .join()
        .map_err(|_| anyhow::anyhow!("the feeder panicked"))??;
    let _ = std::io::stdout().flush();
    say(&format!("stopped after feeding {fed} events"));
    drop(target);
    drop(cluster);
    Ok((result?, settings))
}

/// Every 5 s until `stop`: events read, marks published, and how far the last mark is behind the
/// wall clock (lateness plus processing).
fn report_status(stop: &AtomicBool) {
    let m = crate::metrics::metrics();
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100)); // checks the stop flag often
        if last.elapsed() < Duration::from_secs(5) {
            continue;
        }
        last = Instant::now();
        let read = m.totals().map(|t| t.read).unwrap_or(0);
        let frontier = m.frontier();
        let last = match frontier {
            0 => "no mark yet".to_string(),
            f => format!(
                "last mark {f} ({} ms behind the wall clock)",
                now_ms().saturating_sub(f)
            ),
        };
        say(&format!(
            "{read} events read, {} marks published, {last}",
            m.marks.get()
        ));
    }
}

/// The redis-cli invocation for a Redis URL (`-u` takes the URL as it is).
fn redis_cli(url: &str) -> String {
    format!("redis-cli -u {}", crate::cli::hide_url_password(url))
}
