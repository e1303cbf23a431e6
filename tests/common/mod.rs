//! Helpers shared by the end-to-end tests: run the real binary, read its NDJSON output.

#![allow(dead_code)]

pub mod broker;
pub mod redis_server;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use rust_decimal::Decimal;
use serde_json::Value;

/// Sends `signal` (a name, as `kill -NAME`) to `child`; whether `kill` succeeded.
pub fn signal(child: &std::process::Child, signal: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{signal}"), child.id().to_string().as_str()])
        .status()
        .is_ok_and(|s| s.success())
}

/// Sends `signal` (`INT`, `TERM`) to `child` and waits for it to end: its exit status, or None if
/// it still runs after 60 s (polled, bounded by that deadline).
pub fn signalled(child: &mut std::process::Child, name: &str) -> Option<std::process::ExitStatus> {
    assert!(signal(child, name), "kill -{name} {}", child.id());
    ends_within_60s(child)
}

/// The exit status of `child`, or None if it still runs after 60 s (polled, bounded by that
/// deadline).
pub fn ends_within_60s(child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20)); // poll, bounded by the deadline
    }
}

/// `../shared` beside the checkout.
pub fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// Makes sure a Debian package the tests use is installed: `present()` says whether it is; if
/// not, `apt-get install` (CI runs as root), then asks again. The tests of one binary run at once
/// and several may need the same package on a fresh machine: one installs at a time (the others
/// then find it there), apt waits for dpkg's lock where another process holds it, and the
/// package lists are fetched when an install fails without them (`apt-get update`).
pub fn ensure_package(package: &str, present: impl Fn() -> bool) {
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if present() {
        return;
    }
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if present() {
        return;
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=300", "-y", "-qq"])
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    let installed = apt(&["install", package]) || (apt(&["update"]) && apt(&["install", package]));
    assert!(
        installed && present(),
        "{package} is needed (apt-get install {package})"
    );
}

/// Makes a named pipe at `path` (`mkfifo`).
pub fn mkfifo(path: &Path) {
    let made = Command::new("mkfifo").arg(path).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo {}", path.display());
}

/// Writes `tampines gen` events to `path` (`symbols` symbols, `events` events over `hours` of
/// market time, seeded, with `extra` options) and returns the path as text.
pub fn gen_events(
    path: &Path,
    symbols: u32,
    events: u32,
    hours: &str,
    seed: u32,
    extra: &[&str],
) -> String {
    let (symbols, events, seed) = (symbols.to_string(), events.to_string(), seed.to_string());
    let path = path.to_str().expect("a text path");
    let mut args = vec![
        "gen",
        "--symbols",
        &symbols,
        "--events",
        &events,
        "--hours",
        hours,
        "--seed",
        &seed,
        "--out",
        path,
    ];
    args.extend(extra);
    tampines(&args);
    path.to_string()
}

/// A local TCP port nothing listens on (now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A child's stderr, read line by line as it comes, on a thread of its own: a test can wait for
/// a line while the child runs, and show all of it once the child has ended.
pub struct StderrLog {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StderrLog {
    /// Follows `child`'s stderr (piped).
    pub fn follow(child: &mut std::process::Child) -> StderrLog {
        let pipe = child.stderr.take().expect("stderr piped");
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let kept = text.clone();
        // Read to the end whatever it holds (lossy where it is not UTF-8): a pipe left unread
        // would stop the child once full.
        let thread = std::thread::spawn(move || {
            let mut pipe = std::io::BufReader::new(pipe);
            let mut line = Vec::new();
            while std::io::BufRead::read_until(&mut pipe, b'\n', &mut line).is_ok_and(|n| n > 0) {
                kept.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
        });
        StderrLog {
            text,
            thread: Some(thread),
        }
    }

    /// What the child wrote so far.
    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// The first line holding `pattern`, waited for (polled) until `deadline`.
    pub fn line_within(&self, pattern: &str, deadline: std::time::Instant) -> Option<String> {
        loop {
            let found = (self.text.lock().unwrap().lines())
                .find(|l| l.contains(pattern))
                .map(str::to_string);
            if found.is_some() || std::time::Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(std::time::Duration::from_millis(20)); // poll interval, bounded by the deadline
        }
    }

    /// The address of `/metrics` that a child given `--metrics-addr HOST:0` names (the system
    /// chose its port: no other process can have taken it between a test's pick and the
    /// child's bind), waited for until `deadline`.
    pub fn metrics_addr_within(&self, deadline: std::time::Instant) -> Option<String> {
        let line = self.line_within(METRICS_BOUND, deadline)?;
        metrics_addr_in(&line)
    }

    /// Everything the child wrote, once its stderr has closed (it ended).
    pub fn all(mut self) -> String {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.text()
    }
}

/// What a job given `--metrics-addr HOST:0` logs, with the address it bound.
const METRICS_BOUND: &str = "on a port the system chose";

/// The address of `/metrics` named in a job's log `text` (given `--metrics-addr HOST:0`), once
/// it is there.
pub fn metrics_addr_in(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.contains(METRICS_BOUND))?;
    let addr = line.split("bound=").nth(1)?.split_whitespace().next()?;
    Some(addr.to_string())
}

/// The address of `/metrics` that a job given `--metrics-addr HOST:0` names in its log file
/// `log`, waited for (polled) within 60 s.
pub fn metrics_addr_logged(log: &Path) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = metrics_addr_in(&text) {
            return addr;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no metrics address in {} within 60 s: {text}",
            log.display()
        );
        // Poll interval, bounded by the deadline.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A child started from `command` with `--metrics-addr 127.0.0.1:0`, its stderr followed: the
/// system chooses the port, so no other process can take it between a test's pick and the
/// child's bind. Returns the child (killed when dropped), its log, and the address of its
/// `/metrics` as its log names it within 60 s (the test fails with the log if it does not).
pub fn spawn_with_metrics(command: &mut Command) -> (broker::KillOnDrop, StderrLog, String) {
    // The line that names the port is a warning: a `RUST_LOG` of the test's own could hide it.
    let mut child = command
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let log = StderrLog::follow(&mut child);
    let child = broker::KillOnDrop(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    match log.metrics_addr_within(deadline) {
        Some(addr) => (child, log, addr),
        None => {
            drop(child);
            panic!("no metrics address named: {}", log.all());
        }
    }
}

/// A hostfile in `dir` for a job of two processes on this host, each on a free port: two
/// different ports (picked one after the other, the second could be the first again).
pub fn two_hosts(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("hosts");
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    let (a, b) = (bind(), bind());
    let port = |l: &std::net::TcpListener| l.local_addr().expect("free port").port();
    let hosts = format!("127.0.0.1:{}\n127.0.0.1:{}\n", port(&a), port(&b));
    std::fs::write(&path, hosts).expect("write the hostfile");
    path
}

/// Waits for every process of one job (spawned with piped stderr) and asserts that each
/// succeeded, showing all their stderr under `label` if not; returns their outputs, in order.
pub fn wait_job(label: &str, processes: Vec<std::process::Child>) -> Vec<std::process::Output> {
    let outputs = outputs_within_300s(label, processes);
    assert!(
        outputs.iter().all(|o| o.status.success()),
        "{label}: {}",
        outputs
            .iter()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect::<Vec<_>>()
            .join(" / ")
    );
    outputs
}

/// `command`'s output, as `Command::output` gives it (stdout and stderr read, stdin closed), but
/// within 300 s, or it is killed and the test fails with what it wrote to stderr: a run that
/// never ends (a bounded run that misses its end) fails its test, rather than holding the
/// whole suite until CI's limit.
pub fn output_within_300s(label: &str, command: &mut Command) -> std::process::Output {
    use std::process::Stdio;
    let child = (command.stdin(Stdio::null()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{label}: cannot start: {e}"));
    outputs_within_300s(label, vec![child]).remove(0)
}

/// The outputs of `processes` (spawned with piped stdout and stderr, or not: then empty), in
/// order, once every one has ended: within 300 s, or they are killed and the test fails, showing
/// their stderr under `label` (a process of two whose peer could not start, its port taken,
/// dials it for ever).
pub fn outputs_within_300s(
    label: &str,
    processes: Vec<std::process::Child>,
) -> Vec<std::process::Output> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let mut running: Vec<_> = processes
        .into_iter()
        .map(|mut p| {
            let out = read(p.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
            let err = read(p.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
            (p, out, err, None)
        })
        .collect();
    while running.iter().any(|(_, _, _, status)| status.is_none()) {
        for (p, _, _, status) in running.iter_mut().filter(|r| r.3.is_none()) {
            *status = p.try_wait().expect("wait for process");
        }
        if std::time::Instant::now() > deadline {
            for (p, ..) in running.iter_mut() {
                let _ = p.kill();
            }
            let stderr: Vec<String> = (running.into_iter())
                .map(|(_, _, err, _)| String::from_utf8_lossy(&err.join().unwrap()).into_owned())
                .collect();
            panic!("{label}: still running after 300 s: {}", stderr.join(" / "));
        }
        std::thread::sleep(std::time::Duration::from_millis(20)); // poll, bounded by the deadline
    }
    (running.into_iter())
        .map(|(_, out, err, status)| std::process::Output {
            status: status.expect("ended"),
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        })
        .collect()
}

/// The response to `GET path` from an HTTP server at `addr` (the job's metrics), whole.
pub fn get(addr: &str, path: &str) -> String {
    request(addr, "GET", path)
}

/// The first whole response to `GET path` from `addr` before `deadline`: a connection refused
/// (not listening yet), closed unanswered or cut is tried again every 20 ms.
pub fn get_within(addr: &str, path: &str, deadline: std::time::Instant) -> String {
    loop {
        let answer = TcpStream::connect(addr).ok().and_then(|mut s| {
            // Never past the deadline by much: a connection taken but never answered.
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .ok()?;
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
            let mut body = String::new();
            s.read_to_string(&mut body).ok()?;
            Some(body).filter(|b| !b.is_empty())
        });
        if let Some(body) = answer {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no answer from {addr}{path} in time"
        );
        std::thread::sleep(std::time::Duration::from_millis(20)); // poll, bounded by the deadline
    }
}

/// The sample of `/metrics` at `addr` that starts with `prefix` (the server asked until
/// `deadline`), or 0 where there is none: an input's rows appear with its first message.
pub fn metric_within(addr: &str, prefix: &str, deadline: std::time::Instant) -> f64 {
    let text = get_within(addr, "/metrics", deadline);
    match text.lines().any(|l| l.starts_with(prefix)) {
        true => sample(&text, prefix),
        false => 0.0,
    }
}

/// The row prefix of `tampines_input_read_total` for one Kafka partition.
pub fn input_read(topic: &str, partition: u32) -> String {
    format!(r#"tampines_input_read_total{{topic="{topic}",partition="{partition}"}} "#)
}

/// The response to `METHOD path` from an HTTP server at `addr`, whole.
pub fn request(addr: &str, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to metrics");
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read metrics");
    body
}

/// The value of an unlabelled sample, or of the first sample starting with `prefix`.
pub fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix} in:\n{text}"))
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Runs `tampines ARGS` (within 300 s: [`output_within_300s`]), asserts success, returns stderr.
pub fn tampines(args: &[&str]) -> String {
    let label = format!("tampines {args:?}");
    let out = output_within_300s(
        &label,
        Command::new(env!("CARGO_BIN_EXE_tampines")).args(args),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "tampines {args:?} failed: {stderr}");
    stderr
}

/// The records of an NDJSON output grouped by progress mark (records before each progress line).
pub fn marks(path: &Path) -> Vec<(u64, Vec<Value>)> {
    let text = std::fs::read_to_string(path).expect("read output");
    let mut out = Vec::new();
    let mut pending = Vec::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).expect("output is JSON");
        if v["kind"] == "progress" {
            out.push((v["ts"].as_u64().expect("ts"), std::mem::take(&mut pending)));
        } else {
            pending.push(v);
        }
    }
    assert!(pending.is_empty(), "records after the last progress mark");
    out
}

/// The latest value of every result key after all marks.
pub fn final_state(marks: &[(u64, Vec<Value>)]) -> BTreeMap<String, Value> {
    let mut state = BTreeMap::new();
    for (_, records) in marks {
        for r in records {
            state.insert(key(r), r.clone());
        }
    }
    state
}

/// The key a record is stored under (its Redis key without prefix).
pub fn key(r: &Value) -> String {
    let s = |k: &str| {
        r[k].as_str()
            .map(str::to_string)
            .unwrap_or_else(|| r[k].to_string())
    };
    match r["kind"].as_str() {
        Some("book") => format!("book:{}:{}:{}", s("exchange"), s("symbol"), r["resolution"]),
        Some("ticker") => format!("ticker:{}:{}", s("exchange"), s("symbol")),
        Some("candle") => format!(
            "candles:{}:{}:{}:{}",
            s("exchange"),
            s("symbol"),
            s("interval"),
            r["open_time"]
        ),
        _ => panic!("unknown record {r}"),
    }
}

/// A decimal field (string) as an exact decimal.
pub fn dec(v: &Value) -> Decimal {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a decimal string: {v}"))
}
