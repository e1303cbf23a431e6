//! `tampines`: a thin entry point. Exit status: 0 success, 2 bad usage or configuration, 1 runtime error.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use tampines::cli::{Cli, Command};
use tampines::gen::{generate, Market};
use tampines::replay;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Replay(args) => {
            let settings = match args.job.settings() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("tampines: {e:#}");
                    return ExitCode::from(2);
                }
            };
            match replay::run(args.files, settings) {
                Ok(t) => {
                    eprintln!(
                        "read {} processed {} dead-lettered {} duplicates {} late {}",
                        t.read, t.processed, t.dead_lettered, t.duplicates, t.late
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tampines: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Gen(a) => {
            let market = Market {
                symbols: a.symbols.max(1),
                events: a.events,
                hours: a.hours,
                seed: a.seed,
                trade_ratio: a.trade_ratio,
                depth: a.depth.max(1),
                disorder_ms: a.disorder_ms,
                exchange: a.exchange,
                start_ms: a.start_ms,
            };
            let result = match &a.out {
                Some(path) => std::fs::File::create(path)
                    .and_then(|f| generate(&market, &mut std::io::BufWriter::new(f))),
                None => generate(
                    &market,
                    &mut std::io::BufWriter::new(std::io::stdout().lock()),
                ),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    let _ = writeln!(std::io::stderr(), "tampines: gen: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
