//! The `tampines` binary's library: command line, file source, sinks, generator, job wiring.
//! The dataflow logic lives in `tampines-dataflows`.

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
