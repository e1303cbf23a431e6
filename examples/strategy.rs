//! A downstream strategy reading Tampines' results from Redis (the Rust twin of `strategy.py`).
//!
//! It follows `{prefix}:updates` (one stream entry per write step of the job: a published
//! progress mark, or several merged) and, for each read that returns new entries, reads ONE
//! consistent snapshot: the frontier, the symbol's resolution-1 book, its ticker and its newest
//! 1-minute candles inside MULTI/EXEC. The job writes each mark atomically, so the four values
//! always belong to the same progress mark. It prints one line per snapshot that differs from
//! the last one printed (a snapshot is the current state, so one read may already show the marks
//! the next read returns):
//!
//! ```text
//! frontier=T symbol=EX:SYM bid=.. ask=.. status=.. spread=.. change_24h=.. change_pct=.. last_closed_1m=OPEN_TIME:O/H/L/C/V
//! ```
//!
//! `status` is the book's: trade on `ok` only (`stale`: a sequence gap or no snapshot yet, until
//! the next snapshot; `crossed`: bid >= ask). At its start it shows the state as it is, if a job
//! has written one. It follows through Redis restarts (a Redis still loading its data included)
//! and connections that stop answering (10 s without a reply), reconnecting and reading again
//! from the last entry whose snapshot it read (a failure at its start is not retried), and on
//! its end (`--count`, Ctrl-C or SIGTERM, or an error) says on stderr the stream id to resume
//! after (`--from ID`).
//!
//! Run it beside a job writing to Redis (`tampines demo` prints the URL):
//!
//! ```sh
//! cargo run --example strategy -- --redis redis://127.0.0.1:6379 --symbol demo:S000USDT
//! ```
//!
//! Options: `--redis URL`, `--prefix P` (default `tampines`), `--symbol EXCHANGE:SYMBOL`,
//! `--from ID` (stream id to start after: `$` = new updates only (default), `0` = from the
//! oldest kept), `--count N` (stop after N lines printed).

use std::process::ExitCode;
use std::time::Duration;

use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::Commands;
use rust_decimal::Decimal;
use serde_json::Value;

struct Options {
    redis: String,
    prefix: String,
    symbol: String,
    from: String,
    count: Option<usize>,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        redis: "redis://127.0.0.1:6379".into(),
        prefix: "tampines".into(),
        symbol: "demo:S000USDT".into(),
        from: "$".into(),
        count: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--redis" => o.redis = value,
            "--prefix" => o.prefix = value,
            "--symbol" => o.symbol = value,
            "--from" => o.from = value,
            "--count" => o.count = Some(value.parse().map_err(|e| format!("--count: {e}"))?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

/// The frontier and the symbol's results, as of one progress mark.
struct Snapshot {
    frontier: Option<String>,
    book: Option<Value>,
    ticker: Option<Value>,
    candles: Vec<Value>,
}

/// Reads frontier, book, ticker and the two newest 1m candles in one MULTI/EXEC.
fn snapshot(c: &mut redis::Connection, o: &Options) -> redis::RedisResult<Snapshot> {
    let p = &o.prefix;
    let s = &o.symbol;
    let (frontier, book, ticker, candles): (
        Option<String>,
        Option<String>,
        Option<String>,
        Vec<String>,
    ) = redis::pipe()
        .atomic()
        .get(format!("{p}:frontier"))
        .get(format!("{p}:book:{s}:1"))
        .get(format!("{p}:ticker:{s}"))
        .zrange(format!("{p}:candles:{s}:1m"), -2, -1)
        .query(c)?;
    let json = |t: Option<String>| t.and_then(|t| serde_json::from_str(&t).ok());
    Ok(Snapshot {
        frontier,
        book: json(book),
        ticker: json(ticker),
        candles: candles
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect(),
    })
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The best price of a side (`bids` or `asks`), if any.
fn best(book: &Value, side: &str) -> Option<String> {
    book[side][0][0].as_str().map(str::to_string)
}

/// One line per update (see the module doc).
fn render(o: &Options, s: &Snapshot) -> String {
    let book = s.book.as_ref();
    let bid = book.and_then(|b| best(b, "bids"));
    let ask = book.and_then(|b| best(b, "asks"));
    let spread = match (&bid, &ask) {
        (Some(b), Some(a)) => match (b.parse::<Decimal>(), a.parse::<Decimal>()) {
            (Ok(b), Ok(a)) => (a - b).normalize().to_string(),
            _ => "-".into(),
        },
        _ => "-".into(),
    };
    let (change, pct) = match &s.ticker {
        Some(t) => (text(&t["change"]), text(&t["change_pct"])),
        None => ("-".into(), "-".into()),
    };
    let closed = s
        .candles
        .iter()
        .rev()
        .find(|c| c["closed"] == Value::Bool(true))
        .map(|c| {
            format!(
                "{}:{}/{}/{}/{}/{}",
                c["open_time"],
                text(&c["open"]),
                text(&c["high"]),
                text(&c["low"]),
                text(&c["close"]),
                text(&c["volume"])
            )
        })
        .unwrap_or_else(|| "-".into());
    let status = book
        .map(|b| text(&b["status"]))
        .unwrap_or_else(|| "-".into());
    format!(
        "frontier={} symbol={} bid={} ask={} status={status} spread={spread} change_24h={change} change_pct={pct} last_closed_1m={closed}",
        s.frontier.as_deref().unwrap_or("-"),
        o.symbol,
        bid.as_deref().unwrap_or("-"),
        ask.as_deref().unwrap_or("-"),
    )
}

/// The lines printed: how many, and the last one (a snapshot equal to it is not printed again).
#[derive(Default)]
struct Printed {
    lines: usize,
    last: String,
}

impl Printed {
    fn show(&mut self, line: String) {
        if line != self.last {
            println!("{line}");
            self.lines += 1;
            self.last = line;
        }
    }
}

/// A reply later than this is a connection that stopped answering (a host gone, a NAT entry
/// expired): without a bound, a read on it waited for ever. Well above the 1 s a read blocks.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection whose replies are bounded by [`REPLY_TIMEOUT`].
fn connect(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let c = client.get_connection_with_timeout(Duration::from_secs(5))?;
    c.set_read_timeout(Some(REPLY_TIMEOUT))?;
    c.set_write_timeout(Some(REPLY_TIMEOUT))?;
    Ok(c)
}

/// Follows the stream from `last` (updated to the last entry whose snapshot was read), printing
/// snapshots, until `--count` of them. Failures that pass (Redis restarting or loading its data,
/// a connection that stopped answering) are retried with backoff, from the last entry read.
fn follow(o: &Options, last: &mut String) -> redis::RedisResult<()> {
    // Ctrl-C (or SIGTERM) ends the loop within a read's block, so that it says where to resume;
    // a second one exits at once (130), should a read hang.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let registered =
            signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())
                .and_then(|_| signal_hook::flag::register(signal, stop.clone()));
        registered.map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::IoError, "signal handler", e.to_string()))
        })?;
    }
    let client = redis::Client::open(o.redis.as_str())?;
    let stream = format!("{}:updates", o.prefix);
    let mut printed = Printed::default();
    let mut c = connect(&client)?;
    if last == "$" {
        // The state as it is now, if a job has written one (a quiet or finished job shows it
        // too). The stream id first: an update after the snapshot is then read below.
        let newest: redis::streams::StreamRangeReply = c.xrevrange_count(&stream, "+", "-", 1)?;
        let now = snapshot(&mut c, o)?;
        if now.frontier.is_some() {
            printed.show(render(o, &now));
        }
        *last = newest.ids.first().map_or("0".into(), |e| e.id.clone());
    }
    let mut backoff = Duration::from_millis(100);
    while o.count.is_none_or(|n| printed.lines < n)
        && !stop.load(std::sync::atomic::Ordering::Relaxed)
    {
        let step = (|| -> redis::RedisResult<()> {
            let reply: StreamReadReply = c.xread_options(
                &[&stream],
                &[&*last],
                &StreamReadOptions::default().block(1_000).count(100),
            )?;
            if let Some(entry) = reply.keys.iter().flat_map(|k| k.ids.iter()).last() {
                printed.show(render(o, &snapshot(&mut c, o)?));
                // Only once its snapshot is read: a failure before goes on from the entry
                // before, whose update would have been lost.
                *last = entry.id.clone();
            }
            Ok(())
        })();
        match step {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e)
                if e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.kind() == redis::ErrorKind::BusyLoadingError =>
            {
                eprintln!("strategy: redis: {e}; retrying in {backoff:?}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                if let Ok(fresh) = connect(&client) {
                    c = fresh;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let o = match options() {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!(
                "usage: strategy [--redis URL] [--prefix P] [--symbol EXCHANGE:SYMBOL] [--from ID] \
                 [--count N]"
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("strategy: {e}");
            return ExitCode::from(2);
        }
    };
    let mut last = o.from.clone();
    let result = follow(&o, &mut last);
    eprintln!("strategy: resume with --from {last}");
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strategy: {e}");
            ExitCode::from(1)
        }
    }
}
