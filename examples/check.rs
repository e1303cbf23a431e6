//! Checks Tampines on your own event files: replays them in-process at 1, 2 and 4 workers and
//! compares every progress mark, the counts and the dead letters with the harness's reference
//! model, recomputed from scratch (`harness/`). The options are `replay`'s (granularity,
//! lateness, window, depth, resolutions, intervals, tick sizes, retention; sinks are ignored).
//!
//! ```text
//! cargo run --release --example check -- FILE... [--granularity-ms 100] [--window-ms ...] ...
//! ```
//!
//! Prints one line per worker count (`-w 2: 123 marks, 4567 records equal the model`) and exits
//! 0, or prints the first difference and exits 1 (2 on bad usage). The model recomputes every
//! result at every mark: it suits files of thousands of events, not millions.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tampines::cli::JobArgs;
use tampines_harness::run::Reading;

/// The files and `replay`'s options.
#[derive(Parser)]
#[command(name = "check", disable_help_flag = true)]
struct Args {
    /// Print help (`-h` is timely's hostfile, among the options shared with `replay`).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// NDJSON event files (`.gz` too), each an input, as `replay` reads them.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    job: JobArgs,
}

/// The lines of `path` as `replay` reads them (`files::lines`: `.gz` gunzipped, a byte order
/// mark dropped), or the first line that is not text: the model takes lines of text only.
fn lines(path: &std::path::Path) -> Result<Vec<String>, String> {
    (tampines::files::lines(path).enumerate())
        .map(|(n, line)| {
            line.map_err(|(reason, _)| format!("{} line {}: {reason}", path.display(), n + 1))
        })
        .collect()
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match args.job.settings() {
        Ok(settings) => settings.config,
        Err(e) => {
            eprintln!("check: {e:#}");
            return ExitCode::from(2);
        }
    };
    let mut inputs = Vec::new();
    for path in &args.files {
        match lines(path) {
            Ok(l) => inputs.push(l),
            Err(e) => {
                eprintln!("check: {e}");
                return ExitCode::from(2);
            }
        }
    }
    // The model once, for the three runs: it is the slow side.
    let expected = tampines_harness::model::expected(&inputs, &config);
    for workers in [1, 2, 4] {
        // Read as the job reads files: parsed ahead, in batches.
        let reading = Reading::Ahead(4096);
        let checked =
            tampines_harness::check_against(&expected, "check", &inputs, &config, workers, reading);
        match checked {
            Ok(()) => {
                let records: usize = expected.marks.iter().map(|m| m.changed.len()).sum();
                let t = expected.totals;
                let _ = writeln!(
                    std::io::stdout(),
                    "-w {workers}: {} marks, {records} records equal the model (read {} processed {} dead-lettered {} duplicates {} late {})",
                    expected.marks.len(),
                    t.read,
                    t.processed,
                    t.dead_lettered,
                    t.duplicates,
                    t.late
                );
            }
            Err(difference) => {
                let _ = writeln!(std::io::stdout(), "{difference}");
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}
