//! Replay benchmarks (CONTRACT workloads of issue 2), run with `cargo bench --bench replay`.
//!
//! Generates the inputs with `shared/tools/gen_events.py` (the README's figures are of its files;
//! `tampines gen` would make other ones, without the trade-heavy mix), runs the
//! release binary as a whole process per configuration (without the environment's `TAMPINES_`
//! settings, which would change what is measured), and prints events/s and peak memory (RSS,
//! from GNU time; for a job of several processes on this machine, their sum). `BENCH_SCALE=0.1`
//! shrinks every input for a quick look.
//!
//! The VM's speed drifts by up to 20% within minutes, so one run per row says little, least of
//! all the ratio of two rows. Every row is run `BENCH_ROUNDS` times (default 3), a round being
//! one run of each row in turn, and the table gives each row's median time (and its largest peak
//! RSS). The live file's `-w 1` and `-w 2` runs are neighbours in every round, taking turns going
//! first: their ratio is printed per round and as the median of the rounds.
//!
//! `BENCH_OUTPUT=1` adds a second table: the Flink file with fewer results asked for (fewer
//! resolutions, a smaller depth, fewer candle intervals), each row with the lines and bytes
//! its output holds (counted in a run of its own, not timed), and a least-squares fit of the
//! seconds over lines and bytes, to show what the output costs.

mod common;

use common::bare;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

struct Input {
    name: &'static str,
    path: PathBuf,
    events: u64,
}

fn data_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).expect("bench data dir");
    dir
}

/// Generates input `name` unless its file exists; the file of a scaled-down input
/// (`BENCH_SCALE`) is named after its scale too.
fn generate(
    name: &'static str,
    scale: f64,
    symbols: u32,
    events: u64,
    hours: f64,
    seed: u32,
    extra: &[&str],
) -> Input {
    let path = if scale == 1.0 {
        data_dir().join(format!("{name}.ndjson"))
    } else {
        data_dir().join(format!("{name}_x{scale}.ndjson"))
    };
    if !path.exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/gen_events.py");
        let args = [
            "--symbols".to_string(),
            symbols.to_string(),
            "--events".to_string(),
            events.to_string(),
            "--hours".to_string(),
            hours.to_string(),
            "--seed".to_string(),
            seed.to_string(),
        ];
        assert!(
            script.exists(),
            "{} is missing: the benches' inputs are its files (../shared beside the checkout)",
            script.display()
        );
        let out = std::fs::File::create(&path).expect("create input");
        let status = Command::new("python3")
            .arg(&script)
            .args(&args)
            .args(extra)
            .stdout(out)
            .status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            let _ = std::fs::remove_file(&path); // not left behind as if generated
            panic!("generator failed: {status:?}");
        }
    }
    Input {
        name,
        path,
        events: events + u64::from(symbols),
    }
}

/// Runs one replay job of `processes` processes on this machine (`-n`, `-p`, `-h` with a hostfile
/// of free local ports when more than one); returns (seconds until every process has exited,
/// the sum of their peak RSS in MiB). Process 0 writes the results; all read the same options.
fn replay(input: &Input, args: &[&str], processes: usize) -> (f64, f64) {
    let mut cluster: Vec<String> = Vec::new();
    if processes > 1 {
        let hostfile = data_dir().join("hosts.txt");
        let listeners: Vec<_> = (0..processes)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("free port"))
            .collect();
        let hosts: Vec<String> = (listeners.iter())
            .map(|l| format!("{}\n", l.local_addr().expect("local address")))
            .collect();
        std::fs::write(&hostfile, hosts.concat()).expect("write hostfile");
        cluster = vec![
            "-n".into(),
            processes.to_string(),
            "-h".into(),
            hostfile.display().to_string(),
        ];
    }
    let start = Instant::now();
    let children: Vec<_> = (0..processes)
        .map(|p| {
            let mut cmd = bare("/usr/bin/time");
            cmd.args(["-f", "%M"])
                .arg(env!("CARGO_BIN_EXE_tampines"))
                .arg("replay")
                .arg(&input.path)
                .args(args)
                .args(&cluster)
                .args(["--out", "/dev/null"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            if processes > 1 {
                cmd.args(["-p", &p.to_string()]);
            }
            cmd.spawn().expect("run /usr/bin/time tampines replay")
        })
        .collect();
    let mut kb = 0.0;
    for child in children {
        let out = child.wait_with_output().expect("wait for replay");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "replay failed: {stderr}");
        kb += stderr
            .lines()
            .last()
            .and_then(|l| l.trim().parse::<f64>().ok())
            .unwrap_or(f64::NAN);
    }
    (start.elapsed().as_secs_f64(), kb / 1024.0)
}

fn main() {
    // `cargo test --all-targets` builds and runs bench targets too; only `cargo bench` passes --bench.
    // There it checks the arithmetic its tables rest on, and stops.
    if !std::env::args().any(|a| a == "--bench") {
        check_arithmetic();
        println!("replay benchmark: arithmetic checked; run it with `cargo bench --bench replay`");
        return;
    }
    let scale: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let n = |x: f64| (x * scale) as u64;
    let live = generate(
        "live_50sym_1m",
        scale,
        50,
        n(1_000_000.0),
        0.03 * scale,
        7,
        &[],
    );
    let long = generate("long_400k_30h", scale, 50, n(400_000.0), 30.0, 7, &[]);
    let trades = generate(
        "trades_400k_30h",
        scale,
        50,
        n(400_000.0),
        30.0,
        7,
        &["--trade-ratio", "0.9"],
    );
    let flink = generate(
        "flink_50sym_1m_30h",
        scale,
        50,
        n(1_000_000.0),
        30.0,
        7,
        &[],
    );
    let runs: Vec<(&Input, &str, Vec<&str>)> = vec![
        (&live, "live density, all defaults", vec!["-w", "1"]),
        (&live, "live density, all defaults", vec!["-w", "2"]),
        (
            &live,
            "live density, all defaults",
            vec!["-w", "1", "-n", "2"],
        ),
        (&long, "long span, 100 ms granularity", vec!["-w", "2"]),
        (
            &trades,
            "trade-heavy, 1 h window",
            vec!["-w", "2", "--window-ms", "3600000"],
        ),
        (&trades, "trade-heavy, 24 h window", vec!["-w", "2"]),
        (
            &flink,
            "Flink comparison, 1 s granularity",
            vec!["-w", "2", "--granularity-ms", "1000"],
        ),
    ];
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3);
    // Each row's seconds and peak RSS, per round.
    let mut measured: Vec<Vec<(f64, f64)>> = vec![Vec::new(); runs.len()];
    // Rows 0 and 1 are the live file at `-w 1` and `-w 2`, whose ratio is printed below.
    assert!(
        std::ptr::eq(runs[0].0, runs[1].0) && runs[0].2 == ["-w", "1"] && runs[1].2 == ["-w", "2"],
        "the first two rows are the ratio's"
    );
    for round in 0..rounds {
        // The ratio's two rows take turns going first, so that an order effect (a warmer page
        // cache, the VM's drift) does not lean the same way in every round.
        let mut order: Vec<usize> = (0..runs.len()).collect();
        if round % 2 == 1 {
            order.swap(0, 1);
        }
        for i in order {
            let (input, _, args) = &runs[i];
            // `-n N` is a job of N processes on this machine, each with the other options.
            let mut args = args.clone();
            let processes = match args.iter().position(|&a| a == "-n") {
                Some(i) => {
                    let n = args[i + 1].parse().expect("a number of processes");
                    args.drain(i..i + 2);
                    n
                }
                None => 1,
            };
            measured[i].push(replay(input, &args, processes));
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }
    println!("| input | workload | options | seconds (median of {rounds}) | events/s | peak RSS MiB | every run, s |");
    println!("|---|---|---|---|---|---|---|");
    for ((input, what, args), row) in runs.iter().zip(&measured) {
        let secs = median(row.iter().map(|r| r.0));
        let mib = peak(row);
        let all: Vec<String> = row.iter().map(|r| format!("{:.2}", r.0)).collect();
        println!(
            "| {} | {what} | `{}` | {secs:.2} | {:.0} | {mib:.0} | {} |",
            input.name,
            args.join(" "),
            input.events as f64 / secs,
            all.join(" / "),
        );
    }
    // Rows 0 and 1: the live file at `-w 1` and `-w 2`, run one after the other in each round.
    let ratios: Vec<f64> = (measured[0].iter().zip(&measured[1]))
        .map(|(one, two)| one.0 / two.0)
        .collect();
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "\nlive file, `-w 1` / `-w 2` seconds: {:.2}x (median of the rounds; per round {})",
        median(ratios.iter().copied()),
        shown.join(" / ")
    );
    if std::env::var("BENCH_OUTPUT").is_ok_and(|v| !v.is_empty() && v != "0") {
        output_options(&flink, rounds);
    }
}

/// The Flink file at `-w 2 --granularity-ms 1000` with fewer results asked for: seconds, and
/// the lines (records and progress marks) and bytes of each row's output.
fn output_options(flink: &Input, rounds: usize) {
    let base = ["-w", "2", "--granularity-ms", "1000"];
    let options: [&[&str]; 9] = [
        &[],
        &["--depth", "10"],
        &["--depth", "5"],
        &["--resolutions", "1,5"],
        &["--resolutions", "1,100"],
        &["--resolutions", "1"],
        &["--intervals", "1m,1h,1d"],
        &["--intervals", "1m"],
        &["--resolutions", "1", "--depth", "5", "--intervals", "1m"],
    ];
    let args: Vec<Vec<&str>> = (options.iter())
        .map(|o| base.iter().chain(o.iter()).copied().collect())
        .collect();
    let mut measured: Vec<Vec<(f64, f64)>> = vec![Vec::new(); args.len()];
    for round in 0..rounds {
        for (row, args) in measured.iter_mut().zip(&args) {
            row.push(replay(flink, args, 1));
        }
        eprintln!("output options: round {} of {rounds} done", round + 1);
    }
    println!("\n| options (Flink file) | seconds (median of {rounds}) | events/s | output lines | output MB | peak RSS MiB |");
    println!("|---|---|---|---|---|---|");
    // Per row: million lines, GB, seconds.
    let mut rows: Vec<[f64; 3]> = Vec::new();
    for (args, row) in args.iter().zip(&measured) {
        let secs = median(row.iter().map(|r| r.0));
        let mib = peak(row);
        let (lines, bytes) = output_size(flink, args);
        println!(
            "| `{}` | {secs:.2} | {:.0} | {lines} | {:.0} | {mib:.0} |",
            args.join(" "),
            flink.events as f64 / secs,
            bytes as f64 / 1e6,
        );
        rows.push([lines as f64 / 1e6, bytes as f64 / 1e9, secs]);
    }
    let [a, b, c] = fit(&rows);
    let off = rows.iter().map(|r| r[2] - (a + b * r[0] + c * r[1]));
    let (low, high) = off.fold((0f64, 0f64), |(l, h), d| (l.min(d), h.max(d)));
    println!(
        "\nleast squares: seconds = {a:.2} + {b:.2} per million lines + {c:.2} per GB \
         (measured minus fitted {low:+.2} to {high:+.2} s); at the defaults, {:.0}% of the \
         time grows with the output",
        100.0 * (1.0 - a / rows[0][2]),
    );
}

/// The least-squares `[a, b, c]` of `seconds = a + b x lines + c x bytes` over `rows` of
/// `[lines, bytes, seconds]`: the normal equations, solved by elimination.
fn fit(rows: &[[f64; 3]]) -> [f64; 3] {
    let x = |r: &[f64; 3]| [1.0, r[0], r[1]];
    let mut m = [[0.0; 4]; 3];
    for r in rows {
        let xr = x(r);
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] += xr[i] * xr[j];
            }
            m[i][3] += xr[i] * r[2];
        }
    }
    for i in 0..3 {
        let pivot = (i..3)
            .max_by(|&p, &q| m[p][i].abs().total_cmp(&m[q][i].abs()))
            .unwrap_or(i);
        m.swap(i, pivot);
        for k in 0..3 {
            if k != i {
                let f = m[k][i] / m[i][i];
                let row_i = m[i];
                for (e, ei) in m[k].iter_mut().zip(row_i) {
                    *e -= f * ei;
                }
            }
        }
    }
    [0, 1, 2].map(|i| m[i][3] / m[i][i])
}

/// The lines and bytes `replay FILE ARGS` writes, progress lines included.
fn output_size(input: &Input, args: &[&str]) -> (u64, u64) {
    use std::io::Read;
    let mut child = bare(env!("CARGO_BIN_EXE_tampines"))
        .arg("replay")
        .arg(&input.path)
        .args(args)
        .args(["--out", "-"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tampines replay");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    // stderr is read beside stdout, so a replay that logs more than a pipe holds cannot block.
    let (lines, bytes, log) = std::thread::scope(|s| {
        let log = s.spawn(move || {
            let mut log = Vec::new();
            stderr.read_to_end(&mut log).map(|_| log)
        });
        let mut buf = vec![0u8; 1 << 20];
        let (mut lines, mut bytes) = (0u64, 0u64);
        loop {
            let n = match stdout.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("read replay output: {e}"),
            };
            bytes += n as u64;
            lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        }
        let log = log
            .join()
            .expect("stderr reader")
            .expect("read replay stderr");
        (lines, bytes, log)
    });
    let status = child.wait().expect("wait for replay");
    assert!(
        status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&log)
    );
    (lines, bytes)
}

/// The largest peak RSS of a row's runs; NaN if one could not be read (not a smaller figure).
fn peak(row: &[(f64, f64)]) -> f64 {
    (row.iter().map(|r| r.1)).fold(0.0, |m: f64, r| {
        if m.is_nan() || r.is_nan() {
            f64::NAN
        } else {
            m.max(r)
        }
    })
}

/// The median of `values` (the mean of the middle two of an even count).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Checks `fit`, `median` and `peak` against figures worked out by hand; run by `cargo test
/// --all-targets`, which runs a bench target without `--bench`.
fn check_arithmetic() {
    // Rows on the plane 1.25 + 0.5 x lines - 0.75 x bytes, not on a line (lines and bytes vary
    // apart), are fitted exactly.
    let plane = |l: f64, b: f64| [l, b, 1.25 + 0.5 * l - 0.75 * b];
    let rows = [
        plane(1.0, 2.0),
        plane(3.0, 1.0),
        plane(2.0, 5.0),
        plane(4.0, 4.0),
    ];
    let [a, b, c] = fit(&rows);
    for (got, want) in [(a, 1.25), (b, 0.5), (c, -0.75)] {
        assert!(
            (got - want).abs() < 1e-9,
            "fit {:?}: {got} not {want}",
            [a, b, c]
        );
    }
    // Off the plane: three distinct points (1, 1), (2, 3) and (3, 2) fix the plane, so the fit
    // passes through the mean of the seconds at each (1, 3 and 5 at (1, 1) give 3).
    let [a, b, c] = fit(&[
        [1.0, 1.0, 1.0],
        [1.0, 1.0, 3.0],
        [1.0, 1.0, 5.0],
        [2.0, 3.0, 10.0],
        [3.0, 2.0, 4.0],
    ]);
    let fitted = |l: f64, by: f64| a + b * l + c * by;
    assert!((fitted(1.0, 1.0) - 3.0).abs() < 1e-9, "fit {:?}", [a, b, c]);
    assert!(
        (fitted(2.0, 3.0) - 10.0).abs() < 1e-9,
        "fit {:?}",
        [a, b, c]
    );
    assert!((fitted(3.0, 2.0) - 4.0).abs() < 1e-9, "fit {:?}", [a, b, c]);
    assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
    assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
    assert_eq!(peak(&[(1.0, 200.0), (1.0, 250.0)]), 250.0);
    assert!(peak(&[(1.0, 200.0), (1.0, f64::NAN)]).is_nan());
}
