//! The `tampines` binary's library: command line, file source, sinks, generator, job wiring.
//! The dataflow logic lives in `tampines-dataflows`.
//!
//! A job's data flow, source to sink, is wired in one place, [`job::run`]: the inputs ([`files`]
//! or [`kafka`]) under flow control ([`flow`]), the dataflow of `tampines_dataflows::build`,
//! then the dead letters ([`dead_letters`]) and the results ([`sink`]: NDJSON, and the hand-over
//! to [`redis_sink`]). [`cli`] builds the job's settings; [`cluster`] connects its processes;
//! [`signals`] stops it; [`metrics`] serves its counters; [`demo`] and [`gen`] are commands of
//! their own.

#![warn(missing_docs)]

/// `eprintln!` that does not panic where stderr is gone (its reader closed: a supervisor's log
/// pipe, `2>&1 | head`, a closed terminal): the line is lost, the job's work and exit status
/// are not. tracing's writer is set not to complain there either (`main`).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// What must happen however the process ends, registered with [`before_exit`].
static BEFORE_EXIT: std::sync::Mutex<Vec<Box<dyn Fn() + Send>>> = std::sync::Mutex::new(Vec::new());

/// Registers `f` to run before the process exits through [`exit`]: `demo` stops the
/// `redis-server` it started (at its normal end, the server's drop does).
pub fn before_exit(f: impl Fn() + Send + 'static) {
    if let Ok(mut hooks) = BEFORE_EXIT.lock() {
        hooks.push(Box::new(f));
    }
}

/// Exits the process at once with `code` (a live job's fatal failure, a second signal), after
/// the [`before_exit`] hooks: `std::process::exit` runs no destructor, and a `redis-server`
/// that `demo` started stayed behind.
pub fn exit(code: i32) -> ! {
    if let Ok(hooks) = BEFORE_EXIT.lock() {
        hooks.iter().for_each(|hook| hook());
    }
    std::process::exit(code)
}

pub mod cli;
pub mod cluster;
pub mod dead_letters;
pub mod demo;
pub mod files;
pub mod flow;
pub mod gen;
pub mod job;
pub mod kafka;
pub mod metrics;
pub mod redis_sink;
pub mod signals;
pub mod sink;
