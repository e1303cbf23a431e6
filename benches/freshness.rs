//! End-to-end freshness, run with `cargo bench --bench freshness -- [RATE] [SECONDS]`:
//! `tampines broker` and a `redis-server` on free ports, `tampines run --redis -w 2` live, and a
//! producer (this process) sending book updates and trades for 20 symbols at RATE events/s
//! (default 20,000) with event time = wall clock. For every entry of `{prefix}:updates` (one per
//! published mark T) the freshness is `wall clock when the entry is visible - T`: how long after
//! the newest events of a mark it becomes readable; and, per event, `wall clock when the first
//! mark at or past the event's timestamp is visible - the event's send time` (the issue's
//! "arrival to visible", which adds the wait for the event's timestamp to end: up to one
//! granularity). The default lateness is 1,000 ms, so about 1,000 ms of either is the watermark's
//! wait by design. Arguments after RATE and SECONDS go to `tampines run` (e.g. `--granularity-ms
//! 10`; `-w N` replaces the default `-w 2`). Prints p50/p99/max and the keys written;
//! `FRESHNESS_MARKS=FILE` also writes one line per visible mark (ms since start, mark, freshness,
//! keys) to see when the slow ones happened.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Jiffies of all CPUs from /proc/stat: (total, steal). Steal is time the hypervisor ran someone
/// else while this machine had work: on a shared VM it decides the tail more than the job does.
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    (fields.iter().sum(), fields.get(7).copied().unwrap_or(0))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "freshness benchmark: run it with `cargo bench --bench freshness -- [RATE] [SECONDS]`"
        );
        return;
    }
    let rate: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let extra: Vec<String> = args.iter().skip(2).cloned().collect();
    // The run options the measure needs to know, with the job's defaults.
    let option = |name: &str, default: u64| -> u64 {
        extra
            .iter()
            .position(|a| a == name)
            .and_then(|i| extra.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let lateness = option("--lateness-ms", 1_000);
    let granularity = option("--granularity-ms", 100);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _redis = Kill(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)"),
    );
    let url = format!("redis://127.0.0.1:{port}/0");
    let mut broker = Kill(
        Command::new(env!("CARGO_BIN_EXE_tampines"))
            .args(["broker"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(broker.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let bootstrap = line.trim().trim_start_matches("bootstrap=").to_string();
    // Two workers unless the arguments say otherwise.
    let workers: &[&str] = if extra
        .iter()
        .any(|a| a == "-w" || a.starts_with("--workers"))
    {
        &[]
    } else {
        &["-w", "2"]
    };
    let _job = Kill(
        common::bare(env!("CARGO_BIN_EXE_tampines"))
            .args([
                "run",
                "--brokers",
                &bootstrap,
                "--redis",
                &url,
                "--idle-ms",
                "500",
                "--start",
                "latest",
            ])
            .args(&extra)
            .args(workers)
            .env(
                "RUST_LOG",
                std::env::var("FRESHNESS_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stderr(
                std::fs::File::create("/tmp/freshness-job.log")
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .spawn()
            .unwrap(),
    );
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        // Batches of 5 ms: tiny batches made the mock broker (librdkafka's, 2 cores) the bottleneck.
        .set(
            "linger.ms",
            std::env::var("FRESHNESS_LINGER_MS").unwrap_or_else(|_| "5".into()),
        )
        .create()
        .unwrap();
    let mut redis = loop {
        if let Ok(c) = redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) {
            break c;
        }
    };
    // Produce at a steady rate; read the stream as we go.
    let symbols = 20u64;
    let start = Instant::now();
    let mut seq = vec![1u64; symbols as usize];
    let mut last_id = "$".to_string();
    let mut freshness: Vec<u64> = Vec::new();
    // Send times of events whose mark is not visible yet, and per-event freshness.
    let mut waiting: std::collections::VecDeque<u64> = Default::default();
    let mut per_event: Vec<u64> = Vec::new();
    // Every send time, in order (one producer thread, event time = its wall clock).
    let mut all_sent: Vec<u64> = Vec::new();
    let mut per_event_steady: Vec<u64> = Vec::new();
    let mut keys = 0u64;
    for s in 0..symbols {
        let snap = format!(
            r#"{{"type":"snapshot","exchange":"x","symbol":"S{s}","ts":{},"seq":1,"bids":[["100.0","1"]],"asks":[["101.0","1"]]}}"#,
            now_ms()
        );
        producer
            .send(
                BaseRecord::to("market.book")
                    .key(&format!("x:S{s}"))
                    .payload(&snap),
            )
            .unwrap();
    }
    // The producer runs on a thread of its own: a reader blocking on Redis (whose timeouts have
    // 100 ms resolution) must not pause it, or the pauses hold the watermark back.
    let sent_times = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let producing = {
        let sent_times = sent_times.clone();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            let mut pauses: Vec<u64> = Vec::new();
            let mut last_ts: Option<u64> = None;
            while start.elapsed() < Duration::from_secs(seconds) {
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                while sent < due && start.elapsed() < Duration::from_secs(seconds) {
                    let s = sent % symbols;
                    let ts = now_ms();
                    let key = format!("x:S{s}");
                    let payload = if sent.is_multiple_of(4) {
                        format!(
                            r#"{{"type":"trade","exchange":"x","symbol":"S{s}","ts":{ts},"id":"{sent}","price":"100.5","qty":"0.1","side":"buy"}}"#
                        )
                    } else {
                        seq[s as usize] += 1;
                        let p = 99 + sent % 7;
                        format!(
                            r#"{{"type":"book","exchange":"x","symbol":"S{s}","ts":{ts},"seq":{},"bids":[["{p}.5","{}"]],"asks":[]}}"#,
                            seq[s as usize],
                            sent % 5
                        )
                    };
                    let topic = if sent.is_multiple_of(4) {
                        "market.trade"
                    } else {
                        "market.book"
                    };
                    if producer
                        .send(BaseRecord::to(topic).key(&key).payload(&payload))
                        .is_err()
                    {
                        producer.poll(Duration::from_millis(1));
                        continue;
                    }
                    sent += 1;
                    // Pauses of the producer (descheduled on a busy machine) hold the watermark
                    // back: marks close only when newer events arrive.
                    if let Some(prev) = last_ts.filter(|&p| ts.saturating_sub(p) >= 20) {
                        pauses.push(ts - prev);
                    }
                    last_ts = Some(ts);
                    sent_times.lock().unwrap().push(ts);
                }
                producer.poll(Duration::ZERO);
                std::thread::sleep(Duration::from_micros(500)); // the pace between bursts
            }
            let _ = producer.flush(Duration::from_secs(5));
            (sent, pauses)
        })
    };
    let mut trace: Vec<(u128, u64, u64, u64)> = Vec::new();
    let jiffies_start = cpu_jiffies();
    while start.elapsed() < Duration::from_secs(seconds + 3) {
        {
            let mut sent = sent_times.lock().unwrap();
            all_sent.extend(sent.iter().copied());
            waiting.extend(sent.drain(..));
        }
        // Newly visible marks: their freshness.
        let reply: redis::RedisResult<redis::Value> = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(100)
            .arg("STREAMS")
            .arg("tampines:updates")
            .arg(&last_id)
            .query(&mut redis);
        if let Ok(redis::Value::Array(streams)) = reply {
            let seen = now_ms();
            for stream in streams {
                let redis::Value::Array(parts) = stream else {
                    continue;
                };
                let Some(redis::Value::Array(entries)) = parts.get(1) else {
                    continue;
                };
                for entry in entries {
                    let redis::Value::Array(e) = entry else {
                        continue;
                    };
                    let (Some(redis::Value::BulkString(id)), Some(redis::Value::Array(fields))) =
                        (e.first(), e.get(1))
                    else {
                        continue;
                    };
                    last_id = String::from_utf8_lossy(id).into_owned();
                    let text: Vec<String> = fields
                        .iter()
                        .map(|f| match f {
                            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                            _ => String::new(),
                        })
                        .collect();
                    let get = |k: &str| {
                        text.iter()
                            .position(|t| t == k)
                            .and_then(|i| text.get(i + 1))
                            .and_then(|v| v.parse::<u64>().ok())
                    };
                    if let (Some(t), Some(n)) = (get("ts"), get("keys")) {
                        // Skip the first seconds (startup, idle partitions).
                        let measured = start.elapsed() > Duration::from_secs(3);
                        if measured {
                            freshness.push(seen.saturating_sub(t));
                            trace.push((start.elapsed().as_millis(), t, seen.saturating_sub(t), n));
                        }
                        // Mark t can close once an event at t + lateness or later has been sent;
                        // when the producer stalled, that send came late, and so did the mark,
                        // through no fault of the job: the stall is taken out of the steady measure.
                        let closing = t + lateness;
                        let at = all_sent.partition_point(|&s| s < closing);
                        let stall = all_sent.get(at).map_or(0, |&s| s - closing);
                        while let Some(&ts) = waiting.front() {
                            if ts.div_ceil(granularity) * granularity > t {
                                break;
                            }
                            waiting.pop_front();
                            if measured {
                                per_event.push(seen.saturating_sub(ts));
                                per_event_steady
                                    .push(seen.saturating_sub(ts).saturating_sub(stall));
                            }
                        }
                        keys += n;
                    }
                }
            }
        }
    }
    let jiffies_end = cpu_jiffies();
    let (sent, mut pauses) = producing.join().expect("producer");
    // FRESHNESS_MARKS=FILE: one line per visible mark (ms since start, mark, freshness, keys).
    if let Ok(path) = std::env::var("FRESHNESS_MARKS") {
        let lines: Vec<String> = trace
            .iter()
            .map(|(at, t, f, n)| format!("{at} {t} {f} {n}"))
            .collect();
        let _ = std::fs::write(path, lines.join("\n"));
    }
    freshness.sort_unstable();
    per_event.sort_unstable();
    per_event_steady.sort_unstable();
    let pct = |v: &[u64], p: f64| {
        v.get(((v.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "rate {rate} events/s for {seconds} s {extra:?}: sent {sent}, {} marks visible, {keys} keys written ({:.0} keys/s)",
        freshness.len(),
        keys as f64 / seconds as f64,
    );
    println!(
        "  mark T to visible, ms: p50 {} p99 {} max {}",
        pct(&freshness, 0.5),
        pct(&freshness, 0.99),
        freshness.last().copied().unwrap_or(0)
    );
    pauses.sort_unstable();
    let (total, steal) = (
        jiffies_end.0.saturating_sub(jiffies_start.0).max(1),
        jiffies_end.1.saturating_sub(jiffies_start.1),
    );
    println!(
        "  CPU time stolen by the hypervisor during the run: {:.1}%",
        steal as f64 * 100.0 / total as f64
    );
    println!(
        "  producer pauses of 20 ms or more: {} (longest {} ms, total {} ms)",
        pauses.len(),
        pauses.last().copied().unwrap_or(0),
        pauses.iter().sum::<u64>()
    );
    println!(
        "  event sent to visible ({} events), ms: p50 {} p99 {} max {}",
        per_event.len(),
        pct(&per_event, 0.5),
        pct(&per_event, 0.99),
        per_event.last().copied().unwrap_or(0)
    );
    println!(
        "  the same without the producer's stalls, ms: p50 {} p99 {} max {}",
        pct(&per_event_steady, 0.5),
        pct(&per_event_steady, 0.99),
        per_event_steady.last().copied().unwrap_or(0)
    );
}
