//! The `tampines` binary's library: command line, file source, sinks, generator, job wiring.
//! The dataflow logic lives in `tampines-dataflows`.

#![warn(missing_docs)]

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
