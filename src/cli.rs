//! Command line: raw flags (clap), then one validated [`Settings`].
//!
//! Input: the arguments, `TAMPINES_*` environment variables, and a `--config` TOML file
//! ([`parse_from`]). Output: the command with its [`Settings`], or a one-line reason (exit 2).
//!
//! Invariants:
//! - precedence is the command line, then the environment, then the file; a file's keys are the
//!   options' long names (`-` or `_`), checked against the command it configures;
//! - after `--` every argument is a file name, never an option or `--config`;
//! - every option is checked before anything starts (a broker, a file, a thread): bounds that
//!   would overflow, sinks that name each other (stdout by any name), hostfiles, worker counts.
//!   What needs the files themselves (that each input is readable, that no sink is an input,
//!   that a pipe is read by this process) is checked in `main.rs`, still before the job starts.

use std::path::PathBuf;

use std::ffi::OsString;

use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use tampines_dataflows::config::{parse_tick_sizes, Config, Interval};
use tampines_dataflows::types::Sym;

/// Tampines: incremental orderbooks, 24 h ticker and candles from market data.
#[derive(Debug, Parser)]
#[command(name = "tampines", version, disable_help_flag = true)]
pub struct Cli {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help, global = true)]
    help: Option<bool>,
    /// Options from a TOML file (`key = value`, keys as the long options); the command line wins.
    #[arg(long, global = true, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Log format on stderr (filter with RUST_LOG, e.g. `RUST_LOG=info,tampines=debug`).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The commands of CONTRACT section 5.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the job on Kafka topics.
    Run(RunArgs),
    /// Runs the dataflow over NDJSON event files (`.gz` too).
    Replay(ReplayArgs),
    /// Writes NDJSON events to Kafka, keyed by exchange:symbol.
    Produce(ProduceArgs),
    /// An embedded development Kafka broker on 127.0.0.1 (librdkafka's mock cluster).
    Broker(BrokerArgs),
    /// Writes synthetic events as NDJSON.
    Gen(GenArgs),
    /// The whole pipeline with nothing installed: embedded broker, live generated market data,
    /// results to Redis (`--redis`, else one that answers, else a redis-server started from
    /// PATH), else to stdout. Ctrl-C stops it.
    Demo(DemoArgs),
}

/// `demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Symbols in the generated market.
    #[arg(long, default_value_t = 20)]
    pub symbols: usize,
    /// Events per second fed to the broker.
    #[arg(long, default_value_t = 3000)]
    pub rate: u64,
    /// Partitions per topic of the embedded broker.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Results to stdout, even when a Redis is given (`--redis`, TAMPINES_REDIS) or reachable.
    #[arg(long)]
    pub stdout: bool,
    /// Where to look for a running Redis.
    #[arg(long, default_value = "127.0.0.1:6379", hide = true)]
    pub probe_redis: String,
    /// The options every job shares.
    #[command(flatten)]
    pub job: JobArgs,
}

/// Options shared by every job.
#[derive(Debug, Args, Clone)]
pub struct JobArgs {
    /// Timestamp width in ms.
    #[arg(long, env = "TAMPINES_GRANULARITY_MS", default_value_t = 100)]
    pub granularity_ms: u64,
    /// Allowed disorder in ms: watermark = highest ts - lateness.
    #[arg(long, env = "TAMPINES_LATENESS_MS", default_value_t = 1000)]
    pub lateness_ms: u64,
    /// A partition silent this long (wall time) does not hold progress back (live `run` and
    /// `demo`; files and `run --until-end` are read to their end).
    #[arg(long, env = "TAMPINES_IDLE_MS", default_value_t = 5000)]
    pub idle_ms: u64,
    /// Ticker window in ms.
    #[arg(long, env = "TAMPINES_WINDOW_MS", default_value_t = 86_400_000)]
    pub window_ms: u64,
    /// Dead-letter events whose ts is more than this many ms after the wall clock when read
    /// (`ts ahead of the clock`), instead of letting one bad clock move its input's watermark
    /// there (every later event of the input late). Off unless given.
    #[arg(long, env = "TAMPINES_MAX_AHEAD_MS")]
    pub max_ahead_ms: Option<u64>,
    /// Levels per book side.
    #[arg(long, default_value_t = 20)]
    pub depth: usize,
    /// Book resolutions, in ticks.
    #[arg(long, value_delimiter = ',', default_value = "1,5,10,100")]
    pub resolutions: Vec<u32>,
    /// Candle intervals.
    #[arg(long, value_delimiter = ',', default_value = "1m,5m,15m,30m,1h,4h,1d")]
    pub intervals: Vec<String>,
    /// Tick size of a symbol, EXCHANGE:SYMBOL=STEP (repeatable, or a comma-separated list).
    #[arg(long)]
    pub tick_size: Vec<String>,
    /// Candles kept per symbol and interval.
    #[arg(long, default_value_t = 1000)]
    pub candle_retention: usize,
    /// Dead-letter file (one JSON line per rejected input).
    #[arg(long)]
    pub dlq: Option<PathBuf>,
    /// NDJSON output file, `-` for stdout.
    #[arg(long)]
    pub out: Option<String>,
    /// Redis to publish to: `redis://[user:password@]host:port/db` (rediss:// for TLS).
    #[arg(long, env = "TAMPINES_REDIS", hide_env_values = true)]
    pub redis: Option<String>,
    /// Redis key prefix.
    #[arg(long, default_value = "tampines")]
    pub prefix: String,
    /// A bounded job (replay, run --until-end) stops (exit 1) once one mark's write to Redis has
    /// failed for this many seconds; a live one retries for ever.
    #[arg(long, default_value_t = 300)]
    pub redis_patience_s: u64,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (process p listens on PORT + p).
    #[arg(long, env = "TAMPINES_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Lines a source reads before yielding.
    #[arg(long, default_value_t = 8192, hide = true)]
    pub source_batch: usize,
    /// Worker threads per process (timely -w) [default: 1; demo: 2].
    #[arg(short = 'w', long = "workers")]
    pub workers: Option<usize>,
    /// Number of processes (timely -n).
    #[arg(short = 'n', long = "processes", default_value_t = 1)]
    pub processes: usize,
    /// This process's index (timely -p).
    #[arg(short = 'p', long = "process", default_value_t = 0)]
    pub process: usize,
    /// Hostfile, one host:port per line (timely -h).
    #[arg(short = 'h', long = "hostfile")]
    pub hostfile: Option<PathBuf>,
}

/// `replay FILE...`
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Event files, each read in order by one worker.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The options every job shares.
    #[command(flatten)]
    pub job: JobArgs,
}

/// Kafka connection options.
#[derive(Debug, Args, Clone)]
pub struct KafkaArgs {
    /// Bootstrap servers.
    #[arg(long, env = "TAMPINES_BROKERS")]
    pub brokers: String,
    /// Any librdkafka property, key=value (repeatable; security settings too).
    #[arg(short = 'X', value_parser = parse_property)]
    pub property: Vec<(String, String)>,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        // Not quoted: it may be a secret written `key:value`.
        .ok_or_else(|| "bad property: want key=value (what was given is not shown)".to_string())
}

/// `run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Brokers and librdkafka properties.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Topics to read.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "market.book,market.trade"
    )]
    pub topics: Vec<String>,
    /// Consumer group (for offset commits).
    #[arg(long, default_value = "tampines")]
    pub group: String,
    /// Where to start reading (default: committed offsets; with --redis: earliest, since the
    /// state is rebuilt by replay and marks Redis already holds are not written again).
    #[arg(long, value_enum)]
    pub start: Option<crate::kafka::Start>,
    /// Read each partition up to its end offset as of start, close all timestamps, exit.
    #[arg(long)]
    pub until_end: bool,
    /// The options every job shares.
    #[command(flatten)]
    pub job: JobArgs,
}

/// `produce FILE...`
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Event files (NDJSON, .gz too).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Brokers and librdkafka properties.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Topic for every line; without it trades (by their JSON's `type`) go to market.trade and
    /// everything else to market.book.
    #[arg(long)]
    pub topic: Option<String>,
}

/// `broker`
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Partitions per topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Topics to create (with their .dlq topics).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "market.book,market.trade"
    )]
    pub topics: Vec<String>,
}

impl KafkaArgs {
    /// The connection settings.
    pub fn connection(&self) -> crate::kafka::Connection {
        crate::kafka::Connection {
            brokers: self.brokers.clone(),
            properties: self.property.clone(),
        }
    }
}

/// `gen`
#[derive(Debug, Args)]
pub struct GenArgs {
    /// Number of symbols.
    #[arg(long, default_value_t = 20)]
    pub symbols: usize,
    /// Number of events after the snapshots.
    #[arg(long, default_value_t = 200_000)]
    pub events: usize,
    /// Market time spanned, in hours.
    #[arg(long, default_value_t = 30.0)]
    pub hours: f64,
    /// Random seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Share of trades among events.
    #[arg(long, default_value_t = 0.25)]
    pub trade_ratio: f64,
    /// Snapshot depth per side.
    #[arg(long, default_value_t = 60)]
    pub depth: usize,
    /// Largest ts jitter across symbols, in ms.
    #[arg(long, default_value_t = 150)]
    pub disorder_ms: u64,
    /// Exchange id.
    #[arg(long, default_value = "synth")]
    pub exchange: String,
    /// First event time, ms since the epoch.
    #[arg(long, default_value_t = 1_700_000_000_000)]
    pub start_ms: u64,
    /// Output file (default stdout; a name ending in .gz is written gzipped).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl RunArgs {
    /// Checks `run`'s own options (the `-X` properties are librdkafka's to check, but for those
    /// that would undo what the job's own options say).
    pub fn check(&self) -> Result<()> {
        check_topics(&self.topics)?;
        for (key, _) in &self.kafka.property {
            if let Some(why) = owned_property(key) {
                bail!("-X {key}: {why}");
            }
        }
        Ok(())
    }
}

/// Why the job sets librdkafka's property `key` itself, if it does: set by `-X` on top, it
/// bypassed the option (and the check that every process of a job gives the same one), or undid
/// the rule that offsets are committed only once their results are written.
fn owned_property(key: &str) -> Option<&'static str> {
    match key {
        "group.id" => Some("use --group (every process of a job must give the same)"),
        "auto.offset.reset" => Some("use --start"),
        "enable.auto.commit" | "enable.auto.offset.store" => Some(
            "the job commits offsets itself, once their results are written (exactly-once in Redis)",
        ),
        _ => None,
    }
}

/// `--topics`: at least one, each a name Kafka accepts, none twice.
pub(crate) fn check_topics(topics: &[String]) -> Result<()> {
    if topics.is_empty() {
        bail!("--topics must name at least one topic");
    }
    for t in topics {
        check_topic("--topics", t)?;
    }
    if let Some(t) =
        (topics.iter().enumerate()).find_map(|(i, t)| topics[..i].contains(t).then_some(t))
    {
        // Its partitions were read once, under the first name: a bounded run never ended.
        bail!("--topics names {t} twice");
    }
    Ok(())
}

/// A topic name as Kafka takes it: 1 to 249 of `a-z A-Z 0-9 . _ -`, not `.` or `..` (an empty
/// one reached the broker and failed at run time).
pub(crate) fn check_topic(option: &str, topic: &str) -> Result<()> {
    let valid = (1..=249).contains(&topic.len())
        && topic != "."
        && topic != ".."
        && (topic.bytes()).all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !valid {
        bail!("{option}: {topic:?} is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -)");
    }
    Ok(())
}

/// `--partitions` of `broker` and `demo`, 1 to 10,000: librdkafka aborts on a negative count,
/// and a demo of 2^31 - 1 partitions aborted allocating them.
fn check_partitions(partitions: i32) -> Result<()> {
    if !(1..=10_000).contains(&partitions) {
        bail!("--partitions must be between 1 and 10000");
    }
    Ok(())
}

/// `--symbols` of `gen` and `demo`, 1 to 10^6: more failed to allocate (2^64 - 1 panicked).
fn check_symbols(symbols: usize) -> Result<()> {
    if !(1..=1_000_000).contains(&symbols) {
        bail!("--symbols must be between 1 and 1000000");
    }
    Ok(())
}

impl BrokerArgs {
    /// Checks the partitions and topics; each topic gets a `.dlq` topic, which may not be listed
    /// too (it was created twice: a runtime failure, exit 1).
    pub fn check(&self) -> Result<()> {
        check_partitions(self.partitions)?;
        check_topics(&self.topics)?;
        if let Some(t) = (self.topics.iter()).find(|t| self.topics.contains(&format!("{t}.dlq"))) {
            bail!("--topics names {t} and {t}.dlq: the broker makes {t}.dlq, {t}'s dead-letter topic, itself");
        }
        Ok(())
    }
}

impl ProduceArgs {
    /// Checks `--topic`.
    pub fn check(&self) -> Result<()> {
        match &self.topic {
            Some(t) => check_topic("--topic", t),
            None => Ok(()),
        }
    }
}

impl DemoArgs {
    /// Checks the demo's own options: a demo of nothing is a mistake, not a demo; a demo is one
    /// process (each process of `-n 2` started its own broker and market, and the job read half
    /// of each: a mix of two markets).
    pub fn check(&self) -> Result<()> {
        if self.job.processes != 1 || self.job.process != 0 || self.job.hostfile.is_some() {
            bail!("demo runs in one process, with its own broker and market: -n, -p and -h are for run and replay");
        }
        check_symbols(self.symbols)?;
        if self.rate == 0 {
            bail!("--rate must be positive");
        }
        check_partitions(self.partitions)?;
        let dlq = self.job.dlq.as_ref().map(|d| d.to_string_lossy());
        if self.stdout && self.job.out.is_none() && dlq.is_some_and(|d| names_stdout(&d)) {
            bail!("--stdout with --dlq on stdout: the dead letters would mix with the results (give --out FILE, or --dlq FILE)");
        }
        Ok(())
    }
}

impl GenArgs {
    /// Checks the options, so that every event generated is valid (mid prices start at 2,000
    /// ticks; times stay positive and far from overflowing): the message names the option.
    pub fn check(&self) -> Result<()> {
        let span = tampines_dataflows::config::MAX_SPAN_MS;
        check_symbols(self.symbols)?;
        if !(1..=1_000).contains(&self.depth) {
            bail!("--depth must be between 1 and 1000");
        }
        if !(0.0..=1.0).contains(&self.trade_ratio) {
            bail!("--trade-ratio must be between 0 and 1");
        }
        if !(self.hours >= 0.0 && self.hours * 3_600_000.0 <= span as f64) {
            bail!("--hours must be between 0 and {}", span / 3_600_000);
        }
        if !(1..=span).contains(&self.start_ms) {
            bail!("--start-ms must be between 1 and {span}");
        }
        if self.disorder_ms > span {
            bail!("--disorder-ms must be at most {span}");
        }
        Ok(())
    }
}

/// Validated settings of a job.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The dataflow's configuration.
    pub config: Config,
    /// timely's own arguments.
    pub timely: Vec<String>,
    /// This process's index.
    pub process: usize,
    /// Dead-letter file.
    pub dlq: Option<PathBuf>,
    /// NDJSON output.
    pub out: Option<String>,
    /// Redis sink.
    pub redis: Option<crate::redis_sink::RedisOptions>,
    /// Where to serve metrics.
    pub metrics_addr: Option<String>,
    /// `--out` and `--dlq` files are appended to, not emptied: a `run` that resumes after its
    /// group's committed offsets (or from the latest) does not read again what its earlier runs
    /// wrote, and emptying the files lost those results for good.
    pub append: bool,
}

impl JobArgs {
    /// Worker threads per process: `-w`, or 1.
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or(1)
    }

    /// Checks every option and builds the settings; errors name the option.
    pub fn settings(&self) -> Result<Settings> {
        let intervals = self
            .intervals
            .iter()
            .map(|s| s.parse::<Interval>().map_err(anyhow::Error::msg))
            .collect::<Result<Vec<_>>>()
            .context("--intervals")?;
        let mut tick_sizes = std::collections::HashMap::new();
        let given = (self.tick_size.iter())
            .map(|t| parse_tick_sizes(t).map_err(anyhow::Error::msg))
            .collect::<Result<Vec<_>>>()?;
        for (exchange, symbol, step) in given.into_iter().flatten() {
            if tick_sizes
                .insert(Sym::of(&exchange, &symbol), step)
                .is_some()
            {
                // The last one won, without a word.
                bail!("--tick-size names {exchange}:{symbol} twice");
            }
        }
        let config = Config {
            granularity_ms: self.granularity_ms,
            lateness_ms: self.lateness_ms,
            window_ms: self.window_ms,
            depth: self.depth,
            resolutions: self.resolutions.clone(),
            intervals,
            tick_sizes,
            candle_retention: self.candle_retention,
            source_batch: self.source_batch,
            max_ahead_ms: self.max_ahead_ms,
        };
        config.validate().map_err(anyhow::Error::msg)?;
        let workers = self.workers();
        if workers == 0 || self.processes == 0 {
            bail!("-w and -n must be positive");
        }
        if workers > MAX_WORKERS {
            bail!("-w {workers}: at most {MAX_WORKERS} workers per process");
        }
        if let (Some(out), Some(dlq)) = (&self.out, &self.dlq) {
            if names_stdout(out) && names_stdout(&dlq.to_string_lossy()) {
                bail!(
                    "--out and --dlq both name stdout: the dead letters would mix with the results"
                );
            }
            if out != "-" && same_file(std::path::Path::new(out), dlq) {
                bail!(
                    "--out and --dlq name one file: the results would overwrite the dead letters"
                );
            }
        }
        if self.prefix.is_empty() {
            // Keys are `{prefix}:...`: an empty one made `:book:...` and `:frontier`, which no
            // one asking for keys without a prefix (`book:...`) expects. Refused here, with or
            // without --redis: `demo` finds its Redis later.
            bail!("--prefix is empty: every key would start with ':' (give one; the default is tampines)");
        }
        if self.process >= self.processes {
            bail!("-p {} must be below -n {}", self.process, self.processes);
        }
        let mut timely = vec!["-w".to_string(), workers.to_string()];
        if self.processes > 1 {
            let hostfile = self.hostfile.as_ref().context("-n > 1 needs -h HOSTFILE")?;
            check_hostfile(hostfile, self.processes)?;
            timely.extend([
                "-n".to_string(),
                self.processes.to_string(),
                "-p".to_string(),
                self.process.to_string(),
                "-h".to_string(),
                hostfile.display().to_string(),
            ]);
        }
        if let Some(addr) = &self.metrics_addr {
            let parsed = std::net::ToSocketAddrs::to_socket_addrs(addr.as_str())
                .ok()
                .and_then(|mut a| a.next())
                .with_context(|| format!("--metrics-addr {addr:?}: want HOST:PORT"))?;
            if parsed.port() != 0
                && usize::from(parsed.port()) + self.process > usize::from(u16::MAX)
            {
                bail!("--metrics-addr {addr}: port + process index above 65535");
            }
        }
        let redis = self
            .redis
            .as_ref()
            .map(|url| crate::redis_sink::RedisOptions {
                url: url.clone(),
                prefix: self.prefix.clone(),
                retention: self.candle_retention,
                patience: Some(std::time::Duration::from_secs(self.redis_patience_s)),
                whole_history: true,
                // `run` says so (`RedisOptions::rewrite_at_stored`).
                rewrite_at_stored: false,
            });
        if let Some(r) = &redis {
            r.validate()?;
        }
        Ok(Settings {
            config,
            timely,
            process: self.process,
            dlq: self.dlq.clone(),
            out: self.out.clone(),
            redis,
            metrics_addr: self.metrics_addr.clone(),
            append: false,
        })
    }
}

/// Parses a command line; with `--config FILE.toml`, the file's keys (long option names, `_` or
/// `-`) supply the options of the command that neither the command line nor the environment
/// (`TAMPINES_*`) gives. Lists are TOML
/// arrays (`resolutions = [1, 5]`, `tick_size = ["binance:BTCUSDT=0.01"]`, `property =
/// ["security.protocol=ssl"]` for `-X`); flags are booleans.
pub fn parse_from(args: Vec<OsString>) -> Result<Cli, ConfigError> {
    let Some(path) = config_path(&args) else {
        return Cli::try_parse_from(args).map_err(ConfigError::Usage);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError::File(format!("--config {}: {e}", path.display())))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| ConfigError::File(format!("--config {}: {e}", path.display())))?;
    let command = Cli::command();
    let given: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // The subcommand: the first argument naming one, but the file's own name (`--config gen
    // replay`); other option values never do in practice.
    let Some((at, sub)) = given.iter().enumerate().skip(1).find_map(|(i, a)| {
        command
            .get_subcommands()
            .find(|c| c.get_name() == a && given[i - 1] != "--config")
            .map(|c| (i, c))
    }) else {
        return Cli::try_parse_from(args).map_err(ConfigError::Usage);
    };
    let before = &given[..at];
    if (1..at).any(|i| before[i] == "help" && before[i - 1] != "--config") {
        // `tampines --config FILE help CMD`: help takes no options (they were refused).
        return Cli::try_parse_from(args).map_err(ConfigError::Usage);
    }
    let mut extra: Vec<String> = Vec::new();
    for (key, value) in &table {
        let id = key.replace('-', "_");
        // The command's own options, and the global ones (`log_format`).
        let arg = sub
            .get_arguments()
            .chain(command.get_arguments().filter(|a| a.is_global_set()))
            .find(|a| {
                a.get_id().as_str() == id
                    && !a.is_positional()
                    && !["config", "help", "version"].contains(&id.as_str())
            })
            .ok_or_else(|| {
                ConfigError::File(format!(
                    "--config {}: `{}` has no option {key:?}",
                    path.display(),
                    sub.get_name()
                ))
            })?;
        let long = arg.get_long().map(|l| format!("--{l}"));
        let short = arg.get_short().map(|c| format!("-{c}"));
        // A global option (`--log-format`) may come before the subcommand too. After `--`
        // every argument is a file (`-- -w4.ndjson` gives no `-w`).
        let searched = if arg.is_global_set() {
            &given[1..]
        } else {
            &given[at + 1..]
        };
        let searched = match searched.iter().position(|a| a == "--") {
            Some(end) => &searched[..end],
            None => searched,
        };
        let on_command_line = searched.iter().any(|a| {
            long.as_ref()
                .is_some_and(|l| a == l || a.starts_with(&format!("{l}=")))
                || short
                    .as_ref()
                    .is_some_and(|s| a.starts_with(s.as_str()) && !a.starts_with("--"))
        });
        // Precedence: command line, then environment (`TAMPINES_*`), then the file.
        let in_environment = arg
            .get_env()
            .is_some_and(|var| std::env::var_os(var).is_some());
        if on_command_line || in_environment {
            continue;
        }
        let with_value = |v: String| match (&long, &short) {
            // Joined, so that a value starting with `-` (`prefix = "-dev"`) is not taken
            // for an option.
            (Some(l), _) => format!("{l}={v}"),
            (None, Some(s)) => format!("{s}{v}"),
            (None, None) => unreachable!("options have a name"),
        };
        let flag = long.clone().or(short.clone()).expect("options have a name");
        let items = match value {
            toml::Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        let wrong = |want: &str| {
            ConfigError::File(format!(
                "--config {}: {key} = {value}: want {want}",
                path.display()
            ))
        };
        if items.is_empty() {
            return Err(wrong("at least one value"));
        }
        // A flag takes a boolean; any other option a value (a boolean there was dropped, or
        // taken as the option's value the next argument).
        let is_flag = !arg.get_action().takes_values();
        for item in items {
            match (item, is_flag) {
                (toml::Value::Boolean(true), true) => extra.push(flag.clone()),
                (toml::Value::Boolean(false), true) => {}
                (_, true) => return Err(wrong("true or false")),
                (toml::Value::String(v), false) => extra.push(with_value(v)),
                (toml::Value::Integer(v), false) => extra.push(with_value(v.to_string())),
                (toml::Value::Float(v), false) => extra.push(with_value(v.to_string())),
                (_, false) => return Err(wrong("a string, a number, or an array of them")),
            }
        }
    }
    if given[at + 1..].iter().any(|a| a == "--help") {
        // `CMD --help` shows the help whatever the file says.
        return Cli::try_parse_from(args).map_err(ConfigError::Usage);
    }
    let mut merged = args;
    let tail = merged.split_off(at + 1);
    merged.extend(extra.iter().map(OsString::from));
    merged.extend(tail);
    Cli::try_parse_from(merged).map_err(|e| {
        // A value the file gave (the option the error names is one of the file's, passed as
        // `--long=value`): the message names the file.
        use clap::error::{ContextKind, ContextValue};
        let from_file = match e.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(arg)) => {
                let flag = arg.split([' ', '=']).next().unwrap_or_default();
                !flag.is_empty() && extra.iter().any(|x| x.starts_with(flag))
            }
            _ => false,
        };
        if from_file {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            let first = first.trim_start_matches("error: ");
            ConfigError::File(format!("--config {}: {first}", path.display()))
        } else {
            ConfigError::Usage(e)
        }
    })
}

/// Why a command line was not accepted.
#[derive(Debug)]
pub enum ConfigError {
    /// clap's own error (also `--help` and `--version`).
    Usage(clap::Error),
    /// The `--config` file could not be read or does not fit the command.
    File(String),
}

/// The value of `--config`, wherever it appears before `--` (after it, every argument is a
/// file: `replay -- --config` reads a file named `--config`).
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = (args.iter().map(|a| a.to_string_lossy())).take_while(|a| a != "--");
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().map(|p| PathBuf::from(p.as_ref()));
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    None
}

/// `text` with every secret of a URL in it replaced by `***`: a password (`redis://user:***@host`,
/// and `redis://***@host` where the user part is all there is, which may be a token) and a
/// `pass` or `password` query parameter (`redis+unix:///r.sock?pass=***`). Where a URL ends in a
/// text cannot be known (a password may hold quotes, spaces or backslashes, as a TOML error
/// quotes its line), so its user part runs to the last `@` before the line's end or the next
/// URL: more may be hidden than the password, never less. What is said of a `--redis` URL, or
/// of a configuration file that holds one, never shows it.
pub fn hide_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme) = rest.find("://") {
        let (head, tail) = rest.split_at(scheme + 3);
        out.push_str(head);
        let line = tail.find('\n').unwrap_or(tail.len());
        let reach = tail[..line].find("://").map_or(line, |next| {
            // The next URL starts at its scheme: back from `://` over letters, digits, `+.-`
            // (to the end of the character before, which may be more than a byte).
            (tail[..next].char_indices().rev())
                .find(|&(_, c)| !(c.is_ascii_alphanumeric() || "+.-".contains(c)))
                .map_or(0, |(i, c)| i + c.len_utf8())
        });
        match tail[..reach].rfind('@') {
            Some(at) => {
                match tail[..at].split_once(':') {
                    Some((user, _)) => out.push_str(&format!("{user}:***")),
                    None => out.push_str("***"),
                }
                rest = &tail[at..];
            }
            None => rest = tail,
        }
        // The rest of this URL: its query's passwords.
        let end = rest
            .find(|c: char| c == '"' || c == '\'' || c.is_whitespace())
            .unwrap_or(rest.len());
        out.push_str(&hide_query_passwords(&rest[..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `text` (a usage or configuration error) with its URLs' secrets hidden ([`hide_passwords`])
/// and the value clap quotes of a refused `-X` property (`invalid value 'sasl.password:x' for
/// '-X <PROPERTY>'`, a secret written `key:value`).
pub fn hide_secrets(text: &str) -> String {
    let mut text = hide_passwords(text);
    let opening = "invalid value '";
    // To the last `' for '-X`: the value may hold that text too.
    if let Some(start) = text.find(opening).map(|i| i + opening.len()) {
        if let Some(end) = text.rfind("' for '-X").filter(|&end| end >= start) {
            text.replace_range(start..end, "***");
        }
    }
    text
}

/// One URL, whole, with its secrets replaced by `***` as [`hide_passwords`] does, its user part
/// running to its last `@` (a password may hold quotes and spaces too).
pub fn hide_url_password(url: &str) -> String {
    let Some(scheme) = url.find("://") else {
        return hide_query_passwords(url);
    };
    let (head, tail) = url.split_at(scheme + 3);
    match tail.rfind('@') {
        Some(at) => {
            let user = tail[..at].split_once(':').map(|(user, _)| user);
            let shown = user.map_or("***".to_string(), |user| format!("{user}:***"));
            format!("{head}{shown}{}", hide_query_passwords(&tail[at..]))
        }
        None => format!("{head}{}", hide_query_passwords(tail)),
    }
}

/// `url` with the values of its `pass` and `password` query parameters replaced by `***`.
fn hide_query_passwords(url: &str) -> String {
    let Some((path, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let hidden: Vec<String> = (query.split('&'))
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if ["pass", "password"].contains(&k.to_ascii_lowercase().as_str()) => {
                format!("{k}=***")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", hidden.join("&"))
}

/// True for `-` and for a path that is what standard output is (`/dev/stdout`, `/dev//stdout`,
/// `/proc/thread-self/fd/1`, the file stdout was redirected to...), as `--out` and `--dlq` take
/// them:
/// - a path that leads, link by link, to file descriptor 1 is stdout, whatever stdout is;
/// - when stdout is not a terminal, a path to the same file is stdout too (found by the file's
///   identity). On a terminal stdout shares its file with stderr, and `--dlq /dev/stderr` names
///   stderr, so there only the links count.
///
/// `/dev/null` is never stdout here: it may take both.
pub fn names_stdout(target: &str) -> bool {
    use std::io::IsTerminal;
    use std::os::unix::fs::MetadataExt;
    if target == "-" || leads_to_fd_1(std::path::Path::new(target)) {
        return true;
    }
    if std::io::stdout().is_terminal() {
        return false;
    }
    let same =
        |a: &std::fs::Metadata, b: &std::fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
    match (
        std::fs::metadata(target),
        std::fs::metadata("/proc/self/fd/1"),
    ) {
        (Ok(t), Ok(out)) => {
            let null = std::fs::metadata("/dev/null").is_ok_and(|n| same(&t, &n));
            !null && same(&t, &out)
        }
        _ => false,
    }
}

/// Whether `path`, or a link it leads to (up to 8 links), spelt plainly (`/dev//stdout` as
/// `/dev/stdout`), is one of the names of file descriptor 1.
fn leads_to_fd_1(path: &std::path::Path) -> bool {
    const NAMES: [&str; 4] = [
        "/dev/stdout",
        "/dev/fd/1",
        "/proc/self/fd/1",
        "/proc/thread-self/fd/1",
    ];
    let mut path = path.to_path_buf();
    for _ in 0..8 {
        let plain: std::path::PathBuf = path.components().collect();
        if NAMES.iter().any(|name| plain == std::path::Path::new(name)) {
            return true;
        }
        match std::fs::read_link(&plain) {
            Ok(next) if next.is_absolute() => path = next,
            Ok(next) => {
                path = plain
                    .parent()
                    .unwrap_or(std::path::Path::new("/"))
                    .join(next)
            }
            Err(_) => return false,
        }
    }
    false
}

/// Workers per process (`-w`): timely starts a thread and channels for each, and more than
/// this exhausts memory long before it could help.
const MAX_WORKERS: usize = 1024;

/// True when `a` and `b` name one regular file, however spelled (a link, `./`, `dir/..`), or
/// one file yet to be made (the same name in the same folder). Devices such as `/dev/null` may
/// be named twice.
pub fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // A file yet to be made: its folder, resolved, and its name.
    let to_be = |p: &std::path::Path| {
        let folder = p.parent().filter(|f| !f.as_os_str().is_empty());
        let folder = folder
            .unwrap_or(std::path::Path::new("."))
            .canonicalize()
            .ok()?;
        Some(folder.join(p.file_name()?))
    };
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.is_file() && x.dev() == y.dev() && x.ino() == y.ino(),
        (Err(_), Err(_)) => to_be(a).is_some_and(|p| Some(p) == to_be(b)),
        _ => false,
    }
}

/// Checks the first `processes` lines of a hostfile (what timely reads): each holds one or more
/// `HOST:PORT` separated by spaces, with a port number. Names are not resolved here: a
/// cluster's may appear after its processes start ([`crate::cluster`] retries them).
fn check_hostfile(path: &std::path::Path, processes: usize) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("-h {}: cannot read it", path.display()))?;
    let lines: Vec<&str> = text.lines().take(processes).collect();
    if lines.len() < processes {
        bail!(
            "-h {}: -n {processes} needs a line per process, it has {}",
            path.display(),
            lines.len()
        );
    }
    let good = |a: &str| {
        a.rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    };
    let mut seen: std::collections::HashMap<&str, usize> = Default::default();
    for (i, line) in lines.iter().enumerate() {
        if line.split_whitespace().next().is_none() || !line.split_whitespace().all(good) {
            bail!(
                "-h {}: line {} {line:?}: want HOST:PORT (several separated by spaces)",
                path.display(),
                i + 1
            );
        }
        // Two processes cannot listen at one address: the second failed to bind, and the
        // first waited for it for ever.
        for address in line.split_whitespace() {
            if let Some(first) = seen.insert(address, i + 1).filter(|&first| first != i + 1) {
                bail!(
                    "-h {}: lines {first} and {} both name {address}",
                    path.display(),
                    i + 1
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines of one or more `HOST:PORT`, names and bracketed IPv6 included, pass; lines after
    /// the `-n` first are not read.
    #[test]
    fn good_hostfile_lines_pass() {
        let dir = std::env::temp_dir().join(format!("tampines-hostfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hosts");
        let text = "host-a:2101 127.0.0.1:2101\n[::1]:2102\n10.0.0.3:2103\nnot a line\n";
        std::fs::write(&path, text).unwrap();
        check_hostfile(&path, 3).unwrap();
        assert!(
            check_hostfile(&path, 4).is_err(),
            "the fourth line is read at -n 4"
        );
        std::fs::write(&path, "127.0.0.1:2101\nhost-b:2102 127.0.0.1:2101\n").unwrap();
        let e = check_hostfile(&path, 2).unwrap_err().to_string();
        assert!(e.ends_with("lines 1 and 2 both name 127.0.0.1:2101"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn parse(args: &[&str]) -> Cli {
        match parse_from(args.iter().map(OsString::from).collect()) {
            Ok(cli) => cli,
            Err(ConfigError::Usage(e)) => panic!("{e}"),
            Err(ConfigError::File(e)) => panic!("{e}"),
        }
    }

    /// The contract's defaults (sections 2, 3 and 5), where no option, file or environment
    /// variable gives one.
    #[test]
    fn defaults_are_the_contracts() {
        use clap::{CommandFactory, FromArgMatches};
        // Parsed with the `TAMPINES_*` variables unread, so that the test means the same
        // wherever it runs (it returned early, passing, when one was set).
        let mut command =
            Cli::command().mut_subcommand("run", |run| run.mut_args(|a| a.env(None::<&str>)));
        let matches = command
            .try_get_matches_from_mut(["tampines", "run", "--brokers", "b:9092"])
            .expect("parses");
        let cli = Cli::from_arg_matches(&matches).expect("parses");
        let Command::Run(run) = cli.command else {
            panic!("run");
        };
        assert_eq!(run.topics, ["market.book", "market.trade"]);
        let job = &run.job;
        assert_eq!(
            (
                job.granularity_ms,
                job.lateness_ms,
                job.idle_ms,
                job.window_ms
            ),
            (100, 1000, 5000, 86_400_000)
        );
        assert_eq!(job.depth, 20);
        assert_eq!(job.resolutions, [1, 5, 10, 100]);
        assert_eq!(job.intervals, ["1m", "5m", "15m", "30m", "1h", "4h", "1d"]);
        assert_eq!(job.candle_retention, 1000);
        assert_eq!(job.prefix, "tampines");
        assert_eq!((job.redis.as_deref(), job.out.as_deref()), (None, None));
    }

    /// `run`'s own options from a file: `-X` properties (by the name `property`, repeated as an
    /// array), a boolean flag, a choice and a list.
    #[test]
    fn run_options_read_from_a_file() {
        let dir = std::env::temp_dir().join(format!("tampines-run-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.toml");
        std::fs::write(
            &path,
            "brokers = \"k:9092\"\nproperty = [\"fetch.wait.max.ms=10\", \"client.id=t\"]\n\
             until_end = true\nstart = \"earliest\"\ntopics = [\"a\", \"b\"]\n",
        )
        .unwrap();
        let Command::Run(run) =
            parse(&["tampines", "run", "--config", path.to_str().unwrap()]).command
        else {
            panic!("run");
        };
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(run.kafka.brokers, "k:9092");
        assert_eq!(
            run.kafka.property,
            [
                ("fetch.wait.max.ms".to_string(), "10".to_string()),
                ("client.id".to_string(), "t".to_string())
            ]
        );
        assert!(run.until_end);
        assert_eq!(run.start, Some(crate::kafka::Start::Earliest));
        assert_eq!(run.topics, ["a", "b"]);
    }

    /// After `--` every argument is a file, even one named like an option: `-- -w4.ndjson` left
    /// the file's `workers` out without a word, `-- --config a.ndjson` read the input as the
    /// configuration. (A file named like a command: `replay_cli`'s
    /// `a_config_file_may_be_named_like_a_command`.)
    #[test]
    fn after_two_dashes_and_as_the_files_name_nothing_is_an_option_or_a_command() {
        let dir =
            std::env::temp_dir().join(format!("tampines-config-dashes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("gen");
        std::fs::write(&file, "workers = 3\ndepth = 7\n").unwrap();
        let file = file.to_str().unwrap();
        let replay = |args: &[&str]| match parse(args).command {
            Command::Replay(r) => r,
            _ => panic!("replay"),
        };
        let r = replay(&["tampines", "replay", "--config", file, "--", "-w4.ndjson"]);
        assert_eq!((r.job.workers, r.job.depth), (Some(3), 7));
        assert_eq!(r.files, [PathBuf::from("-w4.ndjson")]);
        let r = replay(&["tampines", "replay", "--", "--config", file]);
        assert_eq!(
            (r.job.workers, r.job.depth),
            (None, 20),
            "no configuration read"
        );
        assert_eq!(r.files, [PathBuf::from("--config"), PathBuf::from(file)]);
        let r = replay(&[
            "tampines", "--config", file, "replay", "x.ndjson", "-w", "2",
        ]);
        assert_eq!((r.job.workers, r.job.depth), (Some(2), 7));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Stdout's names, by their links, whatever stdout is (a terminal too, where its file is
    /// stderr's as well): `/dev//stdout` passed on a terminal.
    #[test]
    fn the_names_of_stdout_are_known_by_their_links() {
        for name in [
            "/dev/stdout",
            "/dev//stdout",
            "/dev/./stdout",
            "/proc/thread-self/fd/1",
        ] {
            assert!(leads_to_fd_1(std::path::Path::new(name)), "{name}");
        }
        for name in ["/dev/stderr", "/dev/null", "/tmp", "/no/such/file"] {
            assert!(!leads_to_fd_1(std::path::Path::new(name)), "{name}");
        }
        // A `-X` value holding clap's own words is hidden whole.
        assert_eq!(
            hide_secrets("invalid value 'a:b' for '-X s' for '-X <PROPERTY>': bad"),
            "invalid value '***' for '-X <PROPERTY>': bad"
        );
    }

    #[test]
    fn passwords_are_not_printed() {
        let cases = [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://u:secret@h:1/0", "redis://u:***@h:1/0"),
            ("rediss://secret@h:1", "rediss://***@h:1"),
            (
                r#"bad --redis URL "redis://default:pw@127.0.0.1:1/zz": Invalid database number"#,
                r#"bad --redis URL "redis://default:***@127.0.0.1:1/zz": Invalid database number"#,
            ),
            (
                "redis://u:p@ss@h a redis://v:q@h",
                "redis://u:***@h a redis://v:***@h",
            ),
            ("no url here", "no url here"),
            // A password with `/` (base64) or `@`; a socket's query parameter; a quote.
            (
                "redis://default:ab/cd+ef=@127.0.0.1:1/0",
                "redis://default:***@127.0.0.1:1/0",
            ),
            (
                "redis+unix:///tmp/r.sock?db=zz&pass=sekret x",
                "redis+unix:///tmp/r.sock?db=zz&pass=*** x",
            ),
            // Characters of more than a byte before the next URL's scheme, and in the parts.
            (
                "redis://u:p@h éredis://v:q@h",
                "redis://u:***@h éredis://v:***@h",
            ),
            ("redis://é:é@é/0 é", "redis://é:***@é/0 é"),
            // A TOML error quotes the line: quotes, spaces, backslashes in the password.
            (
                r#"1 | redis = "redis://default:Tr0ub\4d o"r@127.0.0.1:1/0" invalid escape"#,
                r#"1 | redis = "redis://default:***@127.0.0.1:1/0" invalid escape"#,
            ),
        ];
        for (text, shown) in cases {
            assert_eq!(hide_passwords(text), shown);
        }
        // One URL, whole: its user part runs to its last `@`, whatever it holds.
        for (url, shown) in [
            (r#"redis://u:pa"s s@h:1/zz"#, "redis://u:***@h:1/zz"),
            ("redis://t0ken@h", "redis://***@h"),
            ("unix:///r.sock?password=x", "unix:///r.sock?password=***"),
            ("redis://h:1/0", "redis://h:1/0"),
        ] {
            assert_eq!(hide_url_password(url), shown);
        }
    }

    /// The shipped example file is a valid configuration of `run`, and flags win over it.
    #[test]
    fn example_config_is_valid_for_run() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tampines.example.toml");
        let Command::Run(run) = parse(&["tampines", "run", "--config", path]).command else {
            panic!("run");
        };
        assert_eq!(run.kafka.brokers, "kafka-1:9092,kafka-2:9092");
        assert_eq!(run.job.workers, Some(4));
        assert_eq!(run.job.redis.as_deref(), Some("redis://redis:6379/0"));
        assert_eq!(run.job.metrics_addr.as_deref(), Some("0.0.0.0:9187"));
        assert_eq!(run.job.resolutions, vec![1, 5, 10, 100]);
        let Command::Run(run) = parse(&["tampines", "--config", path, "run", "-w", "2"]).command
        else {
            panic!("run");
        };
        assert_eq!(run.job.workers, Some(2), "the command line wins");
    }
}
