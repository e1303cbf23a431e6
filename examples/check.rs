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

use std::io::Read;
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

/// The lines of `path`, gunzipped when its name ends in `.gz`.
fn lines(path: &PathBuf) -> std::io::Result<Vec<String>> {
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    let gz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    if gz {
        flate2::read::MultiGzDecoder::new(file).read_to_string(&mut text)?;
    } else {
        std::io::BufReader::new(file).read_to_string(&mut text)?;
    }
    Ok(text.lines().map(str::to_string).collect())
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
                eprintln!("check: {}: {e}", path.display());
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
                println!(
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
                println!("{difference}");
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}
