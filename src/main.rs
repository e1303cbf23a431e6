//! `tampines`: a thin entry point. Exit status: 0 success, 2 bad usage or configuration, 1 runtime
//! error; a live job stopped by a second signal (a second or more after the first) exits 130,
//! whichever the signal; one signalled before it reads or while it catches up exits 128 + the
//! signal's number, as dying by it would (`signals::stop_on_signals`).

use std::io::Write;
use std::process::ExitCode;

use tampines::cli::{parse_from, Command, ConfigError, LogFormat};
use tampines::gen::{generate, Market};
use tampines::{job, kafka};

/// jemalloc rather than glibc's allocator: the dataflow allocates and frees many small buffers per
/// timestamp, and glibc's malloc/free were about a sixth of the live replay's samples. Live replay
/// took 15-20% less time with the same peak memory (mimalloc: as fast, 30-50% more memory).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = match parse_from(std::env::args_os().collect()) {
        Ok(cli) => cli,
        // Help and version go to stdout whole; an error is one line.
        Err(ConfigError::Usage(e)) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        // No command: one line, as for any bad usage (CONTRACT 5), that names the commands (the
        // whole help, 18 lines, until 2026-12-07; before that, one line that said only what
        // Tampines is).
        Err(ConfigError::Usage(e))
            if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            return usage(anyhow::anyhow!(
                "a command is needed: run, replay, produce, broker, gen or demo \
                 (`tampines --help` says what each does)"
            ));
        }
        // clap quotes a refused value, and a line of the file may hold a `--redis` URL or a
        // librdkafka property: neither shows a secret.
        Err(ConfigError::Usage(e)) => {
            return usage(anyhow::anyhow!(tampines::cli::hide_secrets(
                &e.render().to_string()
            )))
        }
        Err(ConfigError::File(e)) => {
            return usage(anyhow::anyhow!(tampines::cli::hide_secrets(&e)))
        }
    };
    // RUST_LOG filters (default: Tampines' warnings, among them dead letters (up to 10 a second,
    // the rest as a number) and failed Redis writes, and other crates' errors; `demo` says what it
    // does at info). Colours only on a terminal.
    let default = match cli.command {
        Command::Demo(_) => "error,tampines=info",
        _ => "error,tampines=warn",
    };
    // A `RUST_LOG` that does not parse is said, not dropped without a word.
    // An empty one is as none (it logged nothing, dead letters and failed writes included).
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|e| {
                tampines::say!(
                    "tampines: RUST_LOG is not a filter ({e}); logging as by default ({default})"
                );
                tracing_subscriber::EnvFilter::new(default)
            }),
        _ => tracing_subscriber::EnvFilter::new(default),
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Not a line of its own on stderr when writing there fails: it was an `eprintln!`,
        // which panicked where stderr's reader had gone (the worker logging died).
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match cli.command {
        Command::Replay(args) => {
            let settings = match args.job.settings() {
                Ok(s) => s,
                Err(e) => return usage(e),
            };
            if let Err(e) = readable(&args.files).and_then(|()| read_here(&args)) {
                return usage(e);
            }
            for file in &args.files {
                // Opening a sink truncates its file before the input is read.
                let sinks = [
                    (
                        "--out",
                        settings
                            .out
                            .as_deref()
                            .filter(|o| *o != "-")
                            .map(std::path::Path::new),
                    ),
                    ("--dlq", settings.dlq.as_deref()),
                ];
                for (option, sink) in sinks {
                    if sink.is_some_and(|s| tampines::cli::same_file(file, s)) {
                        return usage(anyhow::anyhow!(
                            "{} is also {option}: it would be emptied before it is read",
                            file.display()
                        ));
                    }
                }
            }
            report(job::replay(args.files, settings))
        }
        Command::Run(args) => {
            let mut settings = match args.job.settings() {
                Ok(s) => s,
                Err(e) => return usage(e),
            };
            if !args.until_end {
                // A live job waits for Redis to come back, however long.
                settings.redis.iter_mut().for_each(|r| r.patience = None);
            }
            if let Err(e) = args
                .check()
                .and_then(|()| args.kafka.connection().check(true))
            {
                return usage(e);
            }
            let start = args.start.unwrap_or(if args.job.redis.is_some() {
                kafka::Start::Earliest
            } else {
                kafka::Start::Committed
            });
            let opts = kafka::SourceOptions {
                connection: args.kafka.connection(),
                topics: args.topics.clone(),
                group: args.group.clone(),
                start,
                until_end: args.until_end,
                stop: None,
            };
            // A live job stops cleanly on SIGINT or SIGTERM: its inputs end where they are, the
            // last marks close, and what was written is committed. (A bounded run ends anyway.)
            let opts = if args.until_end {
                opts
            } else {
                use signal_hook::consts::{SIGINT, SIGTERM};
                let stopping = || {
                    let line = "tampines: stopping: closing the last marks, then committing their offsets (again, a second or more from now, to quit at once)";
                    tampines::say!("{line}");
                };
                match tampines::signals::stop_on_signals(&[SIGINT, SIGTERM], stopping) {
                    Ok(stop) => kafka::SourceOptions {
                        stop: Some(stop),
                        ..opts
                    },
                    Err(e) => return report(Err(e.context("signal handler"))),
                }
            };
            // A bounded run knows every partition's end offset: a partition with data left to read
            // is slow, not silent, so idleness (a live notion) does not apply.
            let idle =
                (!args.until_end).then(|| std::time::Duration::from_millis(args.job.idle_ms));
            // Which partitions are not read from their first message: asked of the broker once,
            // on process 0 (where the outputs are written), and only where needed.
            let later = std::cell::OnceCell::new();
            let ask = || later.get_or_init(|| kafka::read_from_later(&opts));
            // Only a run that reads every partition from its first message writes its files
            // again from the start: one at committed offsets (or one whose earliest messages
            // are gone) appends, or the earlier runs' results were lost for good.
            if args.job.process == 0
                && (settings.out.as_deref().is_some_and(|o| o != "-") || settings.dlq.is_some())
            {
                settings.append = !ask().as_ref().is_ok_and(|later| later.is_empty());
            }
            if let Some(r) = settings.redis.as_mut() {
                // A bounded run of topics into a prefix ends only once it has read every
                // partition to its end as of its start: all that the run which wrote the
                // stored frontier read, and more (`RedisOptions::rewrite_at_stored`).
                r.rewrite_at_stored = args.until_end;
            }
            if let (Some(r), 0) = (settings.redis.as_mut(), args.job.process) {
                // A restart rebuilds by replay: whole only from every partition's first message.
                // Asked only when Redis holds results to rebuild (or cannot say yet).
                let stored = tampines::redis_sink::stored_frontier(r, std::time::Duration::ZERO);
                if !matches!(stored, Ok(None)) {
                    r.whole_history = kafka::whole_history(ask());
                }
            }
            let (w, n) = (args.job.workers(), args.job.processes);
            if !args.until_end {
                // A live job says once what it reads and where its results go: at the default
                // level it is otherwise silent until something goes wrong.
                tampines::say!(
                    "tampines: running: {}",
                    running_line(&args, &settings, w, n)
                );
            }
            report(kafka::run_job(settings, idle, opts, w, n))
        }
        Command::Produce(args) => {
            if let Err(e) = (args.check()).and_then(|()| args.kafka.connection().check(false)) {
                return usage(e);
            }
            if let Err(e) = readable(&args.files) {
                return usage(e);
            }
            match kafka::produce(&args.files, &args.kafka.connection(), args.topic.as_deref()) {
                Ok(produced) => {
                    tampines::say!("produced {} messages", produced.sent);
                    match produced.first_problem {
                        None => ExitCode::SUCCESS,
                        Some(first) => {
                            let n = produced.problems;
                            tampines::say!("tampines: {n} not produced; the first: {first}");
                            ExitCode::from(1)
                        }
                    }
                }
                Err(e) => {
                    tampines::say!("tampines: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Broker(args) => {
            if let Err(e) = args.check() {
                return usage(e);
            }
            match kafka::broker(args.partitions, &args.topics) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tampines::say!("tampines: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Demo(args) => match args.check().and_then(|()| args.job.settings()) {
            Err(e) => usage(e),
            Ok(_) => match tampines::demo::demo(args) {
                Ok((totals, _)) => report(Ok(totals)),
                Err(e) => {
                    tampines::say!("tampines: demo: {e:#}");
                    ExitCode::from(1)
                }
            },
        },
        Command::Gen(a) => {
            if let Err(e) = a.check() {
                return usage(e);
            }
            let market = Market {
                symbols: a.symbols,
                events: a.events,
                hours: a.hours,
                seed: a.seed,
                trade_ratio: a.trade_ratio,
                depth: a.depth,
                disorder_ms: a.disorder_ms,
                exchange: a.exchange,
                start_ms: a.start_ms,
            };
            // `--out -` is stdout, as for the jobs. A `.gz` name (in any case, as the inputs')
            // is written gzipped: plain text under that name was read back as one bad line.
            let result = match a.out.as_ref().filter(|p| p.as_os_str() != "-") {
                Some(path) => std::fs::File::create(path)
                    .and_then(|f| {
                        let f = std::io::BufWriter::new(f);
                        let gz = path
                            .extension()
                            .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
                        if gz {
                            let level = flate2::Compression::fast();
                            let mut out = flate2::write::GzEncoder::new(f, level);
                            generate(&market, &mut out)?;
                            out.finish()?.flush()
                        } else {
                            generate(&market, &mut { f })
                        }
                    })
                    .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
                None => generate(
                    &market,
                    &mut std::io::BufWriter::new(std::io::stdout().lock()),
                ),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    tampines::say!("tampines: gen: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// A file named that cannot be read at all is bad usage, not bad input (a typo must not pass as a
/// run that read nothing); read errors inside a file are dead letters. Only a regular file is
/// opened to check: opening a named pipe waits for its writer, and closing it again loses what
/// was written or ends the writer; a pipe or device is asked whether it may be read.
fn readable(files: &[std::path::PathBuf]) -> anyhow::Result<()> {
    for file in files {
        let checked = std::fs::metadata(file).and_then(|m| {
            if m.is_file() {
                std::fs::File::open(file)?;
            } else if !m.is_dir() {
                may_read(file)?;
            }
            Ok(m)
        });
        match checked {
            Ok(m) if m.is_dir() => anyhow::bail!("{} is a directory", file.display()),
            Ok(_) => {}
            Err(e) => anyhow::bail!("cannot read {}: {e}", file.display()),
        }
    }
    Ok(())
}

/// Across processes, a file is read on one process only, by its worker
/// ([`tampines_dataflows::source::reader`]); the others hold a copy at its place in the list
/// (the handshake compares the lists' lengths). A pipe cannot be compared, and one given to a
/// process that does not read it would go unread: each process given "its own" stream had half
/// of the input read, silently. Such a pipe is refused.
fn read_here(args: &tampines::cli::ReplayArgs) -> anyhow::Result<()> {
    let (workers, processes, me) = (args.job.workers(), args.job.processes, args.job.process);
    for (i, file) in args.files.iter().enumerate() {
        let reader = tampines_dataflows::source::reader(i, workers * processes) / workers;
        let regular = tampines::files::is_regular(file);
        if reader != me && !regular {
            anyhow::bail!(
                "{} is not a regular file (a pipe?), and process {reader} reads input {i}, not this one ({me}): it would go unread; give it to process {reader}, and a regular file (an empty one will do) at its place here",
                file.display()
            );
        }
    }
    Ok(())
}

/// Whether this process may read `path` (its permissions: Linux's `access`), without opening
/// it.
fn may_read(path: &std::path::Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    rustix::fs::access(path, rustix::fs::Access::READ_OK)?;
    #[cfg(not(target_os = "linux"))]
    let _ = path;
    Ok(())
}

/// Bad usage or configuration: exit 2 with a one-line reason (clap's and the TOML parser's
/// messages span lines: a usage summary, a pointer under the bad spot; their lines are joined,
/// without clap's `error:` prefix and its closing hints).
fn usage(e: anyhow::Error) -> ExitCode {
    let text = format!("{e:#}");
    let lines: Vec<&str> = (text.lines())
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty() && !l.chars().all(|c| "|^ ".contains(c)))
        .collect();
    tampines::say!(
        "tampines: {}",
        lines.join(" ").trim_start_matches("error: ")
    );
    ExitCode::from(2)
}

fn report(result: anyhow::Result<tampines_dataflows::stats::Totals>) -> ExitCode {
    match result {
        Ok(t) => {
            tampines::say!(
                "read {} processed {} dead-lettered {} duplicates {} late {}",
                t.read,
                t.processed,
                t.dead_lettered,
                t.duplicates,
                t.late
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            tampines::say!("tampines: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// What a live job's start-up line says: who it is among the processes, what it reads and where
/// its results go (a Redis URL without its password).
fn running_line(
    args: &tampines::cli::RunArgs,
    settings: &tampines::cli::Settings,
    workers: usize,
    processes: usize,
) -> String {
    let results = if settings.process > 0 {
        "results published by process 0".to_string()
    } else {
        let mut to: Vec<String> = Vec::new();
        if let Some(r) = &settings.redis {
            to.push(format!(
                "Redis {} (prefix {})",
                tampines::cli::hide_url_password(&r.url),
                r.prefix
            ));
        }
        match settings.out.as_deref() {
            Some("-") => to.push("stdout".into()),
            Some(file) => to.push(file.into()),
            None => {}
        }
        if to.is_empty() {
            "results not written (no --out or --redis)".into()
        } else {
            format!("results to {}", to.join(" and "))
        }
    };
    format!(
        "process {} of {processes}, {workers} worker{}; topics {} at {}, group {}; {results}; SIGINT or SIGTERM stops",
        settings.process,
        if workers == 1 { "" } else { "s" },
        args.topics.join(","),
        tampines::cli::hide_secrets(&args.kafka.brokers),
        args.group,
    )
}
