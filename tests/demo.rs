//! `tampines demo` with no Redis anywhere (an empty PATH, nothing at the probed address): results
//! stream to stdout within 30 s, `/metrics` answers with the job's series, SIGINT ends it with
//! exit 0, and the final state is consistent across the dataflows: each symbol's ticker (the
//! window stage and its hierarchical aggregation) equals the sum of its 1-minute candles (the
//! candle stage), and every book is sorted and within depth.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::broker::KillOnDrop;
use common::{dec, final_state, get, key, request, sample, scratch, signalled};
use rust_decimal::Decimal;
use serde_json::Value;

/// An address where nothing listens: port 1, which no test's server or job is given (a port
/// picked free could be taken by one meanwhile, and the demo would then write to its Redis).
const NOTHING: &str = "127.0.0.1:1";

/// `tampines demo` of `symbols` at `rate` events/s over 2 partitions, one worker, probing for a
/// Redis at `probe`; 200 ms marks, 400 ms of lateness, partitions idle after 1 s; stdout and
/// stderr piped.
fn demo(symbols: &str, rate: &str, probe: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tampines"));
    command
        .args(["demo", "--symbols", symbols, "--rate", rate])
        .args(["--partitions", "2", "--idle-ms", "1000", "-w", "1"])
        .args(["--probe-redis", probe])
        .args(["--granularity-ms", "200", "--lateness-ms", "400"])
        .env_remove("TAMPINES_REDIS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// The demo's exit status, once it ends by itself, within 60 s (polled).
fn ended_within_60s(child: &mut KillOnDrop) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.0.try_wait().expect("demo's status") {
            return status;
        }
        assert!(Instant::now() < deadline, "demo still running after 60 s");
        std::thread::sleep(Duration::from_millis(50)); // poll interval, bounded by the deadline
    }
}

/// The lines of a child's pipe as they come, read on a thread (waited for with a deadline).
fn lines_of(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (30 s at most) for a progress line among the NDJSON lines on `child`'s stdout.
fn progress_on_stdout_within_30s(child: &mut KillOnDrop) {
    let rx = lines_of(child.0.stdout.take().expect("stdout piped"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("a progress line on stdout within 30 s");
        let v: Value = serde_json::from_str(&line).expect("stdout is NDJSON");
        if v["kind"] == "progress" {
            return;
        }
    }
}

/// `--stdout` wins over a Redis named by the environment (or a config file): the demo wrote to
/// the Redis of TAMPINES_REDIS, saying it was "named by --redis" (here a port where nothing
/// listens: it gave up after 30 s, exit 1).
#[test]
fn stdout_wins_over_a_redis_the_environment_names() {
    let nowhere = format!("redis://{NOTHING}");
    let child = demo("2", "500", NOTHING)
        .arg("--stdout")
        .env("TAMPINES_REDIS", &nowhere)
        .spawn()
        .expect("start demo");
    progress_on_stdout_within_30s(&mut KillOnDrop(child));
}

/// Something at the probed address that takes the connection and never answers (a tunnel whose
/// far end is down, a Redis stuck in a long script) is no Redis: the demo streams its results to
/// stdout within 30 s (the probe's connection gives up after 300 ms; without that bound the demo
/// would wait for the answer to its PING for ever, saying nothing).
#[test]
fn a_probed_address_that_never_answers_is_no_redis() {
    let empty = scratch("demo_silent_probe");
    // Bound and listening, never accepting: the kernel completes the connection, nothing reads.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    let probe = silent.local_addr().unwrap().to_string();
    let child = demo("2", "500", &probe)
        .env("PATH", &empty)
        .spawn()
        .expect("start demo");
    progress_on_stdout_within_30s(&mut KillOnDrop(child));
    drop(silent);
}

/// With `--stdout` and `--out FILE` the results go to the file, and the demo says so: it said
/// "results go to stdout" and wrote nothing there.
#[test]
fn the_demo_names_the_file_its_results_go_to() {
    let dir = scratch("demo_out_file");
    let out = dir.join("demo.ndjson");
    let child = demo("2", "500", NOTHING)
        .arg("--stdout")
        .args(["--out", out.to_str().unwrap()])
        .spawn()
        .expect("start demo");
    let mut child = KillOnDrop(child);
    let rx = lines_of(child.0.stderr.take().unwrap());
    let said = format!(
        "results go to {} (--out) as NDJSON (--stdout)",
        out.display()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the demo says where results go");
        assert!(!line.contains("results go to stdout"), "{line}");
        if line.contains(&said) {
            break;
        }
    }
}

/// With no Redis the results go to stdout, so `--dlq -` would mix the dead letters into them:
/// the demo stops at once and says so (it failed on `--out -`, an option never given).
#[test]
fn a_demo_without_redis_refuses_dead_letters_on_stdout() {
    let empty = scratch("demo_dlq_stdout_path");
    let child = demo("2", "500", NOTHING)
        .args(["--dlq", "-"])
        .env("PATH", &empty)
        .spawn()
        .expect("start demo");
    let mut child = KillOnDrop(child);
    let status = ended_within_60s(&mut child);
    let (mut stdout, mut stderr) = (String::new(), String::new());
    (child.0.stdout.take().unwrap())
        .read_to_string(&mut stdout)
        .unwrap();
    (child.0.stderr.take().unwrap())
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "no Redis, so the results go to stdout, where --dlq sends the dead letters too"
        ),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
}

/// A demo that cannot write its results (stdout on a full device) stops with exit 1 and says
/// why, within 60 s: a live job has no end at which to report a failure.
#[test]
fn a_demo_that_cannot_write_its_results_exits_1() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("open /dev/full");
    let stderr = failed(demo("2", "500", NOTHING).arg("--stdout").stdout(full));
    assert!(
        stderr.contains("writing results to stdout: No space left on device"),
        "{stderr}"
    );
}

/// A demo found a Redis whose prefix holds another job's results (an exchange other than the
/// demo's): it stops before writing, and leaves them, since its market would be mixed into them.
/// A key name that is no UTF-8 is no demo's either (it made the listing fail, and the demo went
/// on).
#[test]
fn a_demo_leaves_another_job_s_results_alone() {
    let server = common::redis_server::RedisServer::start();
    let mut c = server.connection().unwrap();
    let book = "tampines:book:binance:BTCUSDT:1";
    redis::pipe()
        .set("tampines:frontier", 60_000)
        .set(book, "{}")
        .set(b"tampines:\xff\xfe".as_slice(), "x")
        .query::<()>(&mut c)
        .unwrap();
    let url = server.url.clone();
    let stderr = failed(demo("2", "500", NOTHING).args(["--redis", &url]));
    assert!(
        stderr.contains(&format!("that a demo does not write ({book}, 2 in all)")),
        "{stderr}"
    );
    let kept: (Option<u64>, Option<String>) = redis::pipe()
        .get("tampines:frontier")
        .get(book)
        .query(&mut c)
        .unwrap();
    assert_eq!(kept, (Some(60_000), Some("{}".to_string())));
}

/// A second demo on the Redis of one that runs leaves the running one's results alone: they are
/// no earlier demo's. It removed them, and the running demo stopped (`Redis lost results`).
#[test]
fn a_demo_leaves_a_running_demo_s_results_alone() {
    let server = common::redis_server::RedisServer::start();
    let mut c = server.connection().unwrap();
    let url = server.url.clone();
    let mut first = demo("2", "1000", NOTHING);
    let mut first = KillOnDrop(first.args(["--redis", &url]).spawn().unwrap());
    frontier_moves(&mut c);
    let stderr = failed(demo("2", "500", NOTHING).args(["--redis", &url]));
    assert!(stderr.contains("that are being written now"), "{stderr}");
    // The first goes on writing, and stops cleanly.
    frontier_moves(&mut c);
    let status = signalled(&mut first.0, "INT").expect("the demo stops within 60 s of SIGINT");
    assert_eq!(status.code(), Some(0));
}

/// Polls (within 30 s) until `tampines:frontier` holds a value other than the one it held first.
fn frontier_moves(c: &mut redis::Connection) {
    let frontier = |c: &mut redis::Connection| -> Option<u64> {
        redis::cmd("GET").arg("tampines:frontier").query(c).unwrap()
    };
    let (at, deadline) = (frontier(c), Instant::now() + Duration::from_secs(30));
    while frontier(c).is_none_or(|now| Some(now) == at) {
        assert!(
            Instant::now() < deadline,
            "the frontier did not move in 30 s"
        );
        std::thread::sleep(Duration::from_millis(50)); // polled, bounded by the deadline
    }
}

/// The stderr of `demo`, which must end by itself within 60 s with exit 1.
fn failed(demo: &mut Command) -> String {
    let mut child = KillOnDrop(demo.spawn().expect("start demo"));
    let status = ended_within_60s(&mut child);
    let mut stderr = String::new();
    (child.0.stderr.take().unwrap())
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    stderr
}

/// A demo whose job fails at once (its results cannot be written) stops the redis-server it
/// started: the job exits from a worker (`std::process::exit`, which runs no destructor), and
/// the server stayed behind.
#[test]
fn a_demo_that_fails_stops_the_redis_server_it_started() {
    let dir = scratch("demo_fails_redis");
    let nowhere = dir.join("missing").join("out.ndjson");
    // Nothing at the probed address: it starts the redis-server on PATH.
    common::redis_server::RedisServer::ensure_installed();
    let stderr = failed(demo("2", "500", NOTHING).args(["--out", nowhere.to_str().unwrap()]));
    assert!(stderr.contains("cannot create"), "{stderr}");
    let addr = (stderr.lines())
        .find_map(|l| {
            l.strip_prefix("demo: started redis-server; results are published to redis://")
        })
        .map(|addr| addr.trim_end().to_string())
        .unwrap_or_else(|| panic!("no redis-server started: {stderr}"));
    // Gone within 10 s (polled): nothing answers at its port.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "redis-server at {addr} still runs"
        );
        std::thread::sleep(Duration::from_millis(20)); // poll, bounded by the deadline
    }
}

#[test]
fn demo_streams_results_serves_metrics_and_stops_on_sigint() {
    let empty = scratch("demo_path");
    // Nothing listens at the probe's address. Metrics are on a port the system chooses, which
    // the log names (at warn, whatever RUST_LOG is).
    let child = demo("4", "1500", NOTHING)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .env("PATH", &empty)
        .spawn()
        .expect("start demo");
    let mut child = KillOnDrop(child);
    let rx = lines_of(child.0.stdout.take().unwrap());
    let log = common::StderrLog::follow(&mut child.0);
    let named = log.metrics_addr_within(Instant::now() + Duration::from_secs(30));
    let metrics = named.unwrap_or_else(|| panic!("no metrics address: {}", log.text()));

    // Results and progress marks within 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    while ["book", "ticker", "candle", "progress"]
        .iter()
        .any(|k| kinds.get(*k).copied().unwrap_or(0) < 3)
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!("no book, ticker, candle and progress lines within 30 s: {kinds:?}")
        });
        let v: Value = serde_json::from_str(&line).expect("stdout is NDJSON");
        *kinds
            .entry(v["kind"].as_str().unwrap().to_string())
            .or_default() += 1;
        lines.push(v);
    }

    // Metrics: the job's series, with the values it has reached.
    let text = get(&metrics, "/metrics");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for series in [
        "tampines_events_read_total ",
        "tampines_input_read_total{topic=\"market.book\",partition=",
        "tampines_input_watermark_ms{topic=\"market.trade\"",
        "tampines_input_watermark_lag_ms{",
        "tampines_output_frontier_ms ",
        "tampines_output_frontier_lag_ms ",
        "tampines_results_published_total{kind=\"book\"} ",
        "tampines_results_published_total{kind=\"candles\"} ",
        "tampines_marks_published_total ",
        "tampines_state_records{dataflow=\"orderbook\"} ",
        "tampines_state_records{dataflow=\"ticker\"} ",
        "tampines_duplicates_total 0",
        "tampines_redis_write_failures_total 0",
    ] {
        assert!(text.contains(series), "/metrics lacks {series}:\n{text}");
    }
    // Counted as published before written: at least what was read before the scrape.
    let count = |kind: &str| lines.iter().filter(|v| v["kind"] == kind).count() as f64;
    assert!(sample(&text, "tampines_marks_published_total ") >= count("progress"));
    for (record, kind) in [("book", "book"), ("candle", "candles")] {
        let series = format!("tampines_results_published_total{{kind=\"{kind}\"}} ");
        assert!(count(record) > 0.0, "no {record} records read");
        assert!(sample(&text, &series) >= count(record), "{series}: {text}");
    }
    assert!(sample(&text, "tampines_events_read_total ") > 0.0);
    // The symbols are dealt to the partitions: each holds two of the four (hashed, all four
    // keys went to partition 1, and partition 0 held progress back for --idle-ms).
    for partition in [0, 1] {
        let series = format!(
            "tampines_input_read_total{{topic=\"market.book\",partition=\"{partition}\"}} "
        );
        assert!(sample(&text, &series) > 0.0, "{series}: {text}");
    }
    assert!(get(&metrics, "/nothing").starts_with("HTTP/1.1 404"));
    // HEAD: a GET's headers and no body (it had the whole body); other methods are refused.
    let head = request(&metrics, "HEAD", "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.ends_with("Connection: close\r\n\r\n"), "{head}");
    assert!(request(&metrics, "POST", "/metrics").starts_with("HTTP/1.1 405"));

    // SIGINT: the demo stops its feed and inputs, publishes its last marks and exits 0.
    let status = signalled(&mut child.0, "INT").expect("the demo stops within 60 s of SIGINT");
    let stderr = log.all();
    assert_eq!(
        status.code(),
        Some(0),
        "demo exit status; stderr:\n{stderr}"
    );
    assert!(stderr.contains("results go to stdout"), "{stderr}");
    // -w 1 is one worker (the demo made it 2; its default is 2).
    assert!(
        stderr.contains("events/s (event time = wall clock); 1 worker; Ctrl-C stops"),
        "{stderr}"
    );
    lines.extend(
        rx.iter()
            .map(|l| serde_json::from_str::<Value>(&l).expect("NDJSON")),
    );

    // The final state: tickers equal the sum of their 1m candles; books sorted and within depth.
    assert_eq!(
        lines.last().unwrap()["kind"],
        "progress",
        "ends with a mark"
    );
    let mut marks = Vec::new();
    let mut pending = Vec::new();
    for v in lines {
        if v["kind"] == "progress" {
            marks.push((v["ts"].as_u64().unwrap(), std::mem::take(&mut pending)));
        } else {
            pending.push(v);
        }
    }
    let state = final_state(&marks);
    let mut sums: BTreeMap<String, (Decimal, u64)> = BTreeMap::new();
    for (k, c) in state
        .iter()
        .filter(|(_, v)| v["kind"] == "candle" && v["interval"] == "1m")
    {
        assert!(k.starts_with("candles:demo:"), "{k}");
        let s = sums
            .entry(format!(
                "{}:{}",
                c["exchange"].as_str().unwrap(),
                c["symbol"].as_str().unwrap()
            ))
            .or_default();
        s.0 += dec(&c["volume"]);
        s.1 += c["count"].as_u64().unwrap();
    }
    let tickers: Vec<&Value> = state.values().filter(|v| v["kind"] == "ticker").collect();
    assert_eq!(tickers.len(), 4, "one ticker per symbol");
    for t in tickers {
        let (volume, count) = sums[&format!(
            "{}:{}",
            t["exchange"].as_str().unwrap(),
            t["symbol"].as_str().unwrap()
        )];
        assert_eq!(
            dec(&t["volume"]),
            volume,
            "{}: ticker volume = sum of 1m candles",
            key(t)
        );
        assert_eq!(
            t["count"].as_u64().unwrap(),
            count,
            "{}: ticker count",
            key(t)
        );
    }
    for b in state.values().filter(|v| v["kind"] == "book") {
        let prices = |side: &str| -> Vec<Decimal> {
            b[side]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| dec(&l[0]))
                .collect()
        };
        let (bids, asks) = (prices("bids"), prices("asks"));
        assert!(bids.len() <= 20 && asks.len() <= 20, "{}: depth", key(b));
        assert!(
            bids.windows(2).all(|w| w[0] > w[1]),
            "{}: bids descending",
            key(b)
        );
        assert!(
            asks.windows(2).all(|w| w[0] < w[1]),
            "{}: asks ascending",
            key(b)
        );
    }
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("read "))
        .expect("counters line");
    let n: Vec<u64> = summary.split(' ').filter_map(|w| w.parse().ok()).collect();
    assert_eq!(
        n[0],
        n[1] + n[2] + n[3],
        "read = processed + dead-lettered + duplicates: {summary}"
    );
}

/// `demo` with a Redis answering at the probed address publishes there and not to stdout
/// (CONTRACT section 5): the frontier advances, SIGINT exits 0, and the state Redis holds at
/// its last frontier is consistent: each ticker's volume and count equal the sums of its
/// 1-minute candles, and the stream's last entry is that frontier.
///
/// Redis holds an earlier demo's results there, another market: a ticker of a symbol this demo
/// does not make, an open 1m candle of the same symbol as this one's, its frontier and stream.
/// They are removed before the demo writes (the stream stays): they were written among the new
/// market's (the old ticker stayed, and the old candle made the 1m candles' sums below wrong).
#[test]
fn demo_publishes_to_a_redis_it_finds() {
    let server = common::redis_server::RedisServer::start();
    let probe = server
        .url
        .trim_start_matches("redis://")
        .trim_end_matches("/0")
        .to_string();
    let mut c = server.connection().unwrap();
    let old_candle = r#"{"kind":"candle","exchange":"demo","symbol":"S000USDT","interval":"1m","open_time":60000,"close_time":119999,"open":"5","high":"5","low":"5","close":"5","volume":"1","buy_volume":"1","quote_volume":"5","count":1,"closed":false}"#;
    redis::pipe()
        .set("tampines:frontier", 60_000)
        .set("tampines:ticker:demo:S009USDT", "{}")
        .zadd("tampines:candles:demo:S000USDT:1m", old_candle, 60_000)
        .query::<()>(&mut c)
        .unwrap();
    let old_entry: String = redis::cmd("XADD")
        .arg("tampines:updates")
        .arg("*")
        .arg(&["ts", "60000", "keys", "2"])
        .query(&mut c)
        .unwrap();
    let child = demo("2", "1000", &probe).spawn().expect("start demo");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stdout).read_to_string(&mut text);
        text
    });
    let stderr = child.0.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    // The frontier moves past its first value, with tickers and candles of both symbols there.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut first = None;
    loop {
        let frontier: Option<u64> = redis::cmd("GET")
            .arg("tampines:frontier")
            .query(&mut c)
            .unwrap();
        let tickers: Vec<String> = redis::cmd("KEYS")
            .arg("tampines:ticker:*")
            .query(&mut c)
            .unwrap();
        if let Some(f) = frontier {
            if first.is_some_and(|first| f > first) && tickers.len() == 2 {
                break;
            }
            first.get_or_insert(f);
        }
        assert!(
            Instant::now() < deadline,
            "no moving frontier and two tickers in Redis within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50)); // poll interval, bounded by the deadline
    }
    let status = signalled(&mut child.0, "INT").expect("the demo stops within 60 s of SIGINT");
    let stderr = stderr.join().unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "found Redis; results are published to redis://{probe}\n"
        )),
        "{stderr}"
    );
    assert_eq!(stdout.join().unwrap(), "", "records went to stdout");
    let removed = "removed an earlier demo's results under tampines (3 keys)";
    assert!(stderr.contains(removed), "{stderr}");
    let first: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("tampines:updates")
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query(&mut c)
        .unwrap();
    assert_eq!(first.ids[0].id, old_entry, "the stream was not kept");

    // The state at the last frontier, read in one script.
    let (frontier, values): (u64, Vec<(String, Vec<String>)>) = redis::Script::new(
        r#"local out = {}
        for _, k in ipairs(redis.call('KEYS', 'tampines:*')) do
          local t = redis.call('TYPE', k)['ok']
          if t == 'string' then table.insert(out, {k, {redis.call('GET', k)}})
          elseif t == 'zset' then table.insert(out, {k, redis.call('ZRANGE', k, 0, -1)}) end
        end
        return {redis.call('GET', 'tampines:frontier'), out}"#,
    )
    .invoke(&mut c)
    .unwrap();
    let json = |s: &String| serde_json::from_str::<Value>(s).unwrap();
    let mut sums: BTreeMap<String, (Decimal, u64)> = BTreeMap::new();
    for (k, members) in values.iter().filter(|(k, _)| k.ends_with(":1m")) {
        let series = k
            .trim_start_matches("tampines:candles:")
            .trim_end_matches(":1m");
        let s = sums.entry(series.to_string()).or_default();
        for c in members.iter().map(json) {
            s.0 += dec(&c["volume"]);
            s.1 += c["count"].as_u64().unwrap();
        }
    }
    let tickers: Vec<Value> = values
        .iter()
        .filter(|(k, _)| k.starts_with("tampines:ticker:demo:"))
        .map(|(_, v)| json(&v[0]))
        .collect();
    assert_eq!(tickers.len(), 2, "one ticker per symbol");
    for t in tickers {
        let series = format!("demo:{}", t["symbol"].as_str().unwrap());
        assert_eq!(
            (dec(&t["volume"]), t["count"].as_u64().unwrap()),
            sums[&series],
            "{series}: ticker = sums of its 1m candles"
        );
        assert!(t["ts"].as_u64().unwrap() <= frontier);
    }
    let last: Vec<(String, BTreeMap<String, String>)> = redis::cmd("XREVRANGE")
        .arg("tampines:updates")
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(&mut c)
        .unwrap();
    assert_eq!(last[0].1["ts"], frontier.to_string());
}
