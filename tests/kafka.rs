//! Kafka end to end, through the real Kafka protocol: `tampines broker` (librdkafka's mock
//! cluster) in its own process, events produced with `tampines produce` or kcat, the job run with
//! `tampines run`. Output is compared with `replay` of the same events (itself checked against the
//! reference model by the harness).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{gen_events, get, marks, sample, scratch, tampines, wait_job};

use common::broker::Broker;

fn gen(dir: &Path, name: &str, seed: u32) -> String {
    gen_events(
        &dir.join(name),
        5,
        4000,
        "0.02",
        seed,
        &["--exchange", name],
    )
}

#[test]
fn run_until_end_equals_replay_and_broker_stops_on_sigterm() {
    let dir = scratch("kafka_e2e");
    let files = [gen(&dir, "a", 1), gen(&dir, "b", 2)];
    let broker = Broker::start(4, "market.book,market.trade");
    let stderr = tampines(&[
        "produce",
        &files[0],
        &files[1],
        "--brokers",
        &broker.bootstrap,
    ]);
    assert!(stderr.contains("produced 8010 messages"), "{stderr}");
    let out = dir.join("run.ndjson");
    let stderr = tampines(&[
        "run",
        "--brokers",
        &broker.bootstrap,
        "--until-end",
        "-w",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("read 8010 processed 8010 dead-lettered 0 duplicates 0"),
        "{stderr}"
    );
    let replayed = dir.join("replay.ndjson");
    tampines(&[
        "replay",
        &files[0],
        &files[1],
        "--out",
        replayed.to_str().unwrap(),
    ]);
    let (run, replay) = (marks(&out), marks(&replayed));
    assert!(run.len() > 100);
    assert_eq!(
        run, replay,
        "run over Kafka must publish what replay publishes"
    );
    // Offsets were committed after the results: a second bounded run of the group reads nothing new.
    let again = dir.join("again.ndjson");
    let stderr = tampines(&[
        "run",
        "--brokers",
        &broker.bootstrap,
        "--until-end",
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(stderr.contains("read 0 processed 0"), "{stderr}");
    assert_eq!(broker.stop().code(), Some(0));
}

/// Messages compressed with each of Kafka's codecs are read as they were produced: zstd's were
/// never read (librdkafka was built without it), and a bounded run waited for ever on them,
/// logging an error at every poll.
#[test]
fn messages_compressed_with_every_codec_are_read() {
    let dir = scratch("kafka_codecs");
    let file = gen(&dir, "a", 3);
    let replayed = dir.join("replay.ndjson");
    tampines(&["replay", &file, "--out", replayed.to_str().unwrap()]);
    let replay = marks(&replayed);
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let broker = Broker::start(4, "market.book,market.trade");
        let property = format!("compression.codec={codec}");
        tampines(&[
            "produce",
            &file,
            "--brokers",
            &broker.bootstrap,
            "-X",
            &property,
        ]);
        let out = dir.join(format!("{codec}.ndjson"));
        let stderr = until_end(&broker, "market.book,market.trade", out.to_str().unwrap());
        assert!(
            stderr.contains("read 4005 processed 4005 dead-lettered 0"),
            "{codec}: {stderr}"
        );
        assert_eq!(marks(&out), replay, "{codec}");
    }
}

fn kcat() -> &'static str {
    common::ensure_package("kcat", || Command::new("kcat").arg("-V").output().is_ok());
    "kcat"
}

#[test]
fn kcat_produces_and_reads_back_the_dead_letters() {
    let broker = Broker::start(2, "market.trade");
    let messages = [
        r#"ex:A|{"type":"trade","exchange":"ex","symbol":"A","ts":1000,"id":"1","price":"10","qty":"2","side":"buy"}"#,
        r#"ex:A|{"type":"trade","exchange":"ex","symbol":"A","ts":1100,"id":"2","price":"12","qty":"1","side":"sell"}"#,
        r#"ex:A|{"type":"trade","exchange":"ex","symbol":"A","ts":1150,"id":"3","price":"1","qty":"0","side":"sell"}"#,
        // Keyed to land in partition 1 (librdkafka's CRC32 of the key, as `ex:A` lands in 0).
        "bad|not json",
        // Blank, not empty: a message is an input of its own, dead-lettered, not skipped like a
        // file's blank line (it vanished: neither read nor dead-lettered).
        "ex:A|  ",
    ];
    // Not UTF-8: its dead letter carries these bytes, not their lossy text.
    let not_text = b"ex:A|\xff\xfe bad\n";
    let input = [(messages.join("\n") + "\n").as_bytes(), not_text].concat();
    kcat_produce(
        &broker.bootstrap,
        &["-t", "market.trade", "-K|", "-Z"],
        &input,
    );
    let dir = scratch("kafka_kcat");
    let out = dir.join("out.ndjson");
    let stderr = until_end(&broker, "market.trade", out.to_str().unwrap());
    assert!(
        stderr.contains("read 6 processed 2 dead-lettered 4"),
        "{stderr}"
    );
    let state = common::final_state(&marks(&out));
    let ticker = &state["ticker:ex:A"];
    assert_eq!(
        (
            ticker["count"].as_u64(),
            ticker["volume"].as_str(),
            ticker["last"].as_str()
        ),
        (Some(2), Some("3"), Some("12"))
    );
    let dlq = Command::new(kcat())
        .args([
            "-b",
            &broker.bootstrap,
            "-C",
            "-t",
            "market.trade.dlq",
            "-e",
            "-q",
            "-f",
            "%h|%s\n",
        ])
        .output()
        .expect("kcat -C");
    let text = String::from_utf8_lossy(&dlq.stdout);
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].starts_with("reason=empty message") && lines[0].ends_with("|  "),
        "{text}"
    );
    assert!(
        lines[1].starts_with("reason=invalid utf-8,offset="),
        "{text}"
    );
    assert!(
        lines[2].starts_with("reason=not json") && lines[2].ends_with("|not json"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("reason=trade quantity must be positive,offset=")
            && lines[3].contains(r#""id":"3""#),
        "{text}"
    );
    let raw = b"|\xff\xfe bad\n";
    assert!(
        dlq.stdout.windows(raw.len()).any(|w| w == raw),
        "{:?}",
        dlq.stdout
    );
    // Each text dead letter's partition and offset headers are its message's, as kcat reads
    // them from the topic.
    let source = consume(&broker, "market.trade", "offset=%o,partition=%p|%s\n");
    let source = String::from_utf8_lossy(&source);
    for line in &lines {
        let (headers, payload) = line.split_once('|').unwrap();
        if payload.contains('\u{fffd}') {
            continue; // the bytes that are not UTF-8, checked above
        }
        let place = headers.split_once(",offset=").unwrap().1;
        let message = format!("offset={place}|{payload}");
        assert!(
            source.lines().any(|l| l == message),
            "{message} not in\n{source}"
        );
    }
}

/// A bad message larger than the producer sends by default (1,000,000 bytes; the broker took it)
/// is dead-lettered cut to 900,000 bytes, with its whole length in a `truncated` header. Its dead
/// letter could not be produced before, and the run ended with exit 1.
#[test]
fn an_oversized_bad_message_is_dead_lettered_cut_to_size() {
    let broker = Broker::start(1, "market.trade");
    produce_bad(&broker, 1_020_000, &["-X", "message.max.bytes=1048576"]);
    let stderr = until_end(&broker, "market.trade", "/dev/null");
    assert!(
        stderr.contains("read 1 processed 0 dead-lettered 1"),
        "{stderr}"
    );
    assert_eq!(
        dead_letters(&broker, "%h|%S\n"),
        "reason=not json: expected value at line 1 column 1,offset=0,partition=0,truncated=1020000|900000\n"
    );
}

/// The same across processes: process 1 reads the bad message, and process 0, which writes
/// every dead letter, cannot. Both exit 1 saying why, and neither commits past the message.
/// Process 1 used to commit its offsets as soon as the results passed them, exit 0, and the
/// message was never read again.
#[test]
fn a_dead_letter_that_another_process_could_not_write_is_read_again() {
    let dir = scratch("kafka_dead_letter_processes");
    let broker = Broker::start(1, "market.trade");
    produce_bad(&broker, 5_000, &[]);
    let again = both_fail_then_again(
        &broker,
        &dir,
        &["--out", "/dev/null", "-X", "message.max.bytes=2000"],
        &["tampines: writing dead letters: ", "MessageSizeTooLarge"],
    );
    assert!(
        again.contains("read 1 processed 0 dead-lettered 1"),
        "{again}"
    );
    assert_eq!(dead_letters(&broker, "%S\n"), "5000\n");
}

/// An output process 0 cannot open is a failure of every process of a bounded run: process 1,
/// which reads the only partition, exits 1 saying why and commits nothing, so a run again reads
/// every message. Process 1 used to commit its offsets and exit 0: their results were never
/// written anywhere, and never read again.
#[test]
fn an_output_process_0_cannot_open_fails_every_process() {
    let dir = scratch("kafka_unopened_output");
    let broker = Broker::start(1, "market.trade");
    let trades: Vec<String> = (1..=3).map(|i| trade(i * 100, i, "10")).collect();
    kcat_to(&broker, "market.trade", 0, &trades);
    let nowhere = dir.join("missing").join("out.ndjson");
    let again = both_fail_then_again(
        &broker,
        &dir,
        &["--out", nowhere.to_str().unwrap()],
        &["tampines: ", "missing/out.ndjson"],
    );
    assert!(again.contains("read 3 processed 3"), "{again}");
}

/// A bounded run of `market.trade` (group `g`, from committed offsets) by two processes of one
/// worker, with `extra` options: its one partition is input 0, read by worker 1, process 1's.
/// Asserts that both processes exit 1, their last line starting with `last[0]` and holding
/// `last[1]`; then runs one process again (to `/dev/null`) and returns its stderr, once it
/// succeeded.
fn both_fail_then_again(broker: &Broker, dir: &Path, extra: &[&str], last: &[&str; 2]) -> String {
    let hostfile = common::two_hosts(dir);
    let run = |extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tampines"));
        c.args(["run", "--brokers", &broker.bootstrap])
            .args(["--topics", "market.trade", "--until-end"])
            .args(["--group", "g", "--start", "committed"])
            .args(extra);
        c
    };
    let spawn = |p: &str| {
        run(&["-n", "2", "-p", p, "-h", hostfile.to_str().unwrap()])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .expect("run")
    };
    let processes = [spawn("0"), spawn("1")];
    for (p, process) in processes.into_iter().enumerate() {
        let out = process.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "process {p}: {stderr}");
        let line = stderr.lines().last().unwrap_or_default();
        assert!(
            line.starts_with(last[0]) && line.contains(last[1]),
            "process {p}: {stderr}"
        );
    }
    let again = run(&["--out", "/dev/null"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr).into_owned();
    assert!(again.status.success(), "{stderr}");
    stderr
}

/// A message of `size` bytes that is not JSON, produced to `market.trade` (kcat `args` too).
fn produce_bad(broker: &Broker, size: usize, args: &[&str]) {
    let mut message = vec![b'z'; size];
    message.push(b'\n');
    kcat_produce(
        &broker.bootstrap,
        &[&["-t", "market.trade"], args].concat(),
        &message,
    );
}

/// The dead letters of `market.trade`, as kcat prints them in `format`.
fn dead_letters(broker: &Broker, format: &str) -> String {
    String::from_utf8_lossy(&consume(broker, "market.trade.dlq", format)).into_owned()
}

/// Every message of `topic` as kcat prints it with `format`.
fn consume(broker: &Broker, topic: &str, format: &str) -> Vec<u8> {
    let out = Command::new(kcat())
        .args(["-b", &broker.bootstrap, "-C", "-t", topic])
        .args(["-e", "-q", "-f", format])
        .output()
        .expect("kcat -C");
    out.stdout
}

/// `produce` sends every line it can and says what it could not: a line that is not UTF-8 goes as
/// it is (the job dead-letters it), a trade with a bad price goes to the trades under its
/// symbol's key, and a line the producer refuses (over 1,000,000 bytes) or one too long to read
/// (over 16 MiB) is counted and the rest go on; exit 1. It used to stop at the first of these, exit 1 without flushing: part of what it
/// had sent before was lost, and the bad trade went unkeyed to `market.book`.
#[test]
fn produce_sends_what_it_can_and_names_what_it_could_not() {
    let dir = scratch("kafka_produce");
    let broker = Broker::start(1, "market.book,market.trade");
    let file = dir.join("events.ndjson");
    let bad_price = trade(1100, 2, "abc");
    let mut bytes = Vec::new();
    for line in [
        trade(1000, 1, "10").as_bytes(),
        b"\xff bad",
        bad_price.as_bytes(),
    ] {
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
    }
    bytes.extend(vec![b'z'; 1_020_000]);
    bytes.push(b'\n');
    // Too long to read (over 16 MiB): counted, and the lines after it still go.
    bytes.extend(vec![b'y'; 17 << 20]);
    bytes.push(b'\n');
    let after: Vec<String> = (3..=1000).map(|i| trade(1000 + i, i, "11")).collect();
    bytes.extend_from_slice((after.join("\n") + "\n").as_bytes());
    std::fs::write(&file, bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tampines"))
        .args([
            "produce",
            file.to_str().unwrap(),
            "--brokers",
            &broker.bootstrap,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines[0], "produced 1001 messages", "{stderr}");
    assert!(
        lines[1].starts_with(&format!(
            "tampines: 2 not produced; the first: {} line 4: producing: Message production error: MessageSizeTooLarge",
            file.display()
        )),
        "{stderr}"
    );
    let read = |topic: &str| consume(&broker, topic, "%k|%s\n");
    let book = read("market.book");
    assert_eq!(book, b"|\xff bad\n", "{}", String::from_utf8_lossy(&book));
    let trades = String::from_utf8(read("market.trade")).unwrap();
    let trades: Vec<&str> = trades.lines().collect();
    assert_eq!(trades.len(), 1000);
    assert_eq!(trades[1], format!("ex:A|{bad_price}"));
    assert_eq!(trades[999], format!("ex:A|{}", after[997]));
}

/// `produce --topic T` sends every event, book or trade, to T, keyed by `exchange:symbol`, in
/// the file's order; the default topics get none.
#[test]
fn produce_to_a_named_topic() {
    let broker = Broker::start(1, "custom,market.book,market.trade");
    let file = scratch("kafka_produce_topic").join("events.ndjson");
    let lines = [
        r#"{"type":"snapshot","exchange":"ex","symbol":"A","ts":1000,"seq":1,"bids":[["10","1"]],"asks":[["11","1"]]}"#,
        r#"{"type":"trade","exchange":"ex","symbol":"B","ts":1000,"id":"1","price":"10.5","qty":"1","side":"buy"}"#,
    ];
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let stderr = tampines(&[
        "produce",
        file.to_str().unwrap(),
        "--brokers",
        &broker.bootstrap,
        "--topic",
        "custom",
    ]);
    assert!(stderr.contains("produced 2 messages"), "{stderr}");
    let read = |topic: &str| String::from_utf8(consume(&broker, topic, "%k|%s\n")).unwrap();
    assert_eq!(
        read("custom"),
        format!("ex:A|{}\nex:B|{}\n", lines[0], lines[1])
    );
    assert_eq!(read("market.book") + &read("market.trade"), "");
}

/// A topic that does not exist is said to have no partitions (a typo passed as a topic with
/// nothing to read, without a word).
#[test]
fn a_topic_that_does_not_exist_is_named() {
    let broker = Broker::start(1, "market.trade");
    let stderr = until_end(&broker, "market.trade,no.such.topic", "/dev/null");
    assert!(
        stderr.contains("the topic has no partitions (does it exist?)")
            && stderr.contains("no.such.topic"),
        "{stderr}"
    );
}

/// A bounded run whose dead letter the broker refuses (here: larger than the producer may send)
/// ends with exit 1 and commits nothing past it, so a run again reads the message again and
/// dead-letters it. The offsets were committed: the message was never read again, and its dead
/// letter was lost.
#[test]
fn a_dead_letter_that_was_not_written_is_read_again() {
    let broker = Broker::start(1, "market.trade");
    produce_bad(&broker, 5_000, &[]);
    let run = |extra: &[&str]| {
        common::output_within_300s(
            "run --until-end",
            Command::new(env!("CARGO_BIN_EXE_tampines"))
                .args(["run", "--brokers", &broker.bootstrap])
                .args(["--topics", "market.trade", "--until-end"])
                .args(["--group", "g", "--start", "committed"])
                .args(["--out", "/dev/null"])
                .args(extra),
        )
    };
    let refused = run(&["-X", "message.max.bytes=2000"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("MessageSizeTooLarge"), "{stderr}");
    let again = run(&[]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(
        stderr.contains("read 1 processed 0 dead-lettered 1"),
        "{stderr}"
    );
    assert_eq!(dead_letters(&broker, "%S\n"), "5000\n");
}

fn book(ts: u64, seq: u64, price: &str) -> String {
    book_of("A", ts, seq, price)
}

/// Book events 1..=`n` of `symbol`: at i x 100 ms, seq i, one bid at 100 + i.
fn rising_books(symbol: &str, n: u64) -> Vec<String> {
    (1..=n)
        .map(|i| book_of(symbol, i * 100, i, &format!("{}", 100 + i)))
        .collect()
}

fn book_of(symbol: &str, ts: u64, seq: u64, price: &str) -> String {
    format!(
        r#"{{"type":"book","exchange":"ex","symbol":"{symbol}","ts":{ts},"seq":{seq},"bids":[["{price}","1"]],"asks":[]}}"#
    )
}

fn trade(ts: u64, id: u64, price: &str) -> String {
    format!(
        r#"{{"type":"trade","exchange":"ex","symbol":"A","ts":{ts},"id":"{id}","price":"{price}","qty":"1","side":"buy"}}"#
    )
}

/// The text of a file being written (empty while it does not exist).
fn text_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Polls `done` until it holds (true) or 60 s have passed (false).
fn within_60s(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20)); // poll interval, bounded by the deadline
    }
}

/// Produces `lines` with `tampines produce` (to `market.book` and `market.trade` by type).
fn produce(dir: &Path, broker: &Broker, lines: &[String]) {
    let events = dir.join("produce.ndjson");
    std::fs::write(&events, lines.join("\n")).unwrap();
    tampines(&[
        "produce",
        events.to_str().unwrap(),
        "--brokers",
        &broker.bootstrap,
    ]);
}

/// Produces `lines` with kcat to one partition of `topic` (created if it does not exist).
fn kcat_to(broker: &Broker, topic: &str, partition: u32, lines: &[String]) {
    kcat_to_at(&broker.bootstrap, topic, partition, lines);
}

/// [`kcat_to`] a broker at `bootstrap`.
fn kcat_to_at(bootstrap: &str, topic: &str, partition: u32, lines: &[String]) {
    let partition = partition.to_string();
    let lines = lines.join("\n") + "\n";
    kcat_produce(
        bootstrap,
        &["-t", topic, "-Z", "-p", &partition],
        lines.as_bytes(),
    );
}

/// Produces `input` (one message a line) with `kcat -P` and `args`, to the broker at `bootstrap`.
fn kcat_produce(bootstrap: &str, args: &[&str], input: &[u8]) {
    let mut child = Command::new(kcat())
        .args(["-b", bootstrap, "-P"])
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat -P");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

/// Dead letters go to the dead-letter topic of their message's topic: a bad message in each of
/// the default topics lands in that topic's `.dlq` alone.
#[test]
fn each_topic_s_dead_letters_go_to_its_own_dead_letter_topic() {
    let broker = Broker::start(1, "market.book,market.trade");
    kcat_produce(
        &broker.bootstrap,
        &["-t", "market.book", "-K|"],
        b"ex:A|bad book\n",
    );
    kcat_produce(
        &broker.bootstrap,
        &["-t", "market.trade", "-K|"],
        b"ex:A|bad trade\n",
    );
    let dir = scratch("kafka_dlq_topics");
    let out = dir.join("out.ndjson");
    let stderr = until_end(&broker, "market.book,market.trade", out.to_str().unwrap());
    assert!(
        stderr.contains("read 2 processed 0 dead-lettered 2"),
        "{stderr}"
    );
    for (topic, payload) in [("market.book", "bad book"), ("market.trade", "bad trade")] {
        let letters = consume(&broker, &format!("{topic}.dlq"), "%s\n");
        assert_eq!(String::from_utf8_lossy(&letters), format!("{payload}\n"));
    }
}

/// A `run` that resumes after its group's committed offsets (the default without `--redis`)
/// appends to its `--out` and `--dlq` files: emptying them lost the earlier runs' results and
/// dead letters for good, since their messages are not read again.
#[test]
fn a_run_from_committed_offsets_appends_to_its_output() {
    let dir = scratch("kafka_append_out");
    let broker = Broker::start(1, "market.trade");
    let out = dir.join("out.ndjson");
    let out_arg = out.to_str().unwrap();
    let dlq = dir.join("dlq.ndjson");
    let until_end = |broker: &Broker, topic: &str, out: &str| {
        let files = ["--out", out, "--dlq", dlq.to_str().unwrap()];
        let run = [
            "run",
            "--brokers",
            &broker.bootstrap,
            "--topics",
            topic,
            "--until-end",
        ];
        tampines(&[&run[..], &files].concat())
    };
    let trades = [
        trade(1000, 1, "10"),
        trade(2000, 2, "11"),
        "first bad".into(),
    ];
    kcat_to(&broker, "market.trade", 0, &trades);
    until_end(&broker, "market.trade", out_arg);
    let first = text_of(&out);
    assert!(first.contains(r#""last_id":"2""#), "{first}");
    // A last line cut short (a run killed mid-write) is dropped, not joined to the next.
    let mut torn = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
    torn.write_all(br#"{"kind":"tick"#).unwrap();
    kcat_to(
        &broker,
        "market.trade",
        0,
        &[trade(3000, 3, "12"), "second bad".into()],
    );
    until_end(&broker, "market.trade", out_arg);
    let payloads = |text: String| -> Vec<String> {
        let letter = |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap();
        text.lines()
            .map(|l| letter(l)["payload"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(payloads(text_of(&dlq)), ["first bad", "second bad"]);
    let both = text_of(&out);
    let second = both
        .strip_prefix(first.as_str())
        .expect("the first run's results kept");
    // The second run read trade 3 only: its state starts afresh.
    let ticker = r#""count":1,"change":"0","change_pct":"0","open_ts":3000,"last_ts":3000,"first_id":"3","last_id":"3""#;
    assert!(second.starts_with(r#"{"kind":"ticker""#), "{second}");
    assert!(second.contains(ticker), "{second}");
    // A new group reads every partition from its first message: the file is written again.
    tampines(&[
        "run",
        "--brokers",
        &broker.bootstrap,
        "--topics",
        "market.trade",
        "--until-end",
        "--group",
        "another",
        "--out",
        out_arg,
    ]);
    let again = text_of(&out);
    let first_line = &first[..first.find('\n').unwrap()];
    assert!(again.starts_with(first_line), "{again}");
    assert!(!again.contains(ticker), "{again}");
    assert!(again.contains(r#""count":3,"#), "{again}");
}

/// The edge of the rule above: a group that committed offset 1 (one message read) resumes
/// there, which is not the partition's first message, so the run appends too. (Taken as read
/// from the first message, it wrote the file again: the first run's results were lost.)
#[test]
fn a_run_resumed_at_offset_1_appends_too() {
    let dir = scratch("kafka_append_at_1");
    let broker = Broker::start(1, "market.trade");
    let out = dir.join("out.ndjson");
    kcat_to(&broker, "market.trade", 0, &[trade(1000, 1, "10")]);
    until_end(&broker, "market.trade", out.to_str().unwrap());
    let first = text_of(&out);
    assert!(first.contains(r#""first_id":"1","last_id":"1""#), "{first}");
    kcat_to(&broker, "market.trade", 0, &[trade(2000, 2, "11")]);
    let said = until_end(&broker, "market.trade", out.to_str().unwrap());
    assert!(said.contains("read 1 processed 1 "), "{said}");
    assert!(said.contains("committed=1"), "{said}");
    let both = text_of(&out);
    let second = (both.strip_prefix(first.as_str())).expect("the first run's results kept");
    assert!(
        second.contains(r#""count":1,"change":"0","change_pct":"0","open_ts":2000,"last_ts":2000,"first_id":"2","last_id":"2""#),
        "{second}"
    );
}

/// `run --until-end` of `topic`, results to `out`; its stderr.
fn until_end(broker: &Broker, topic: &str, out: &str) -> String {
    tampines(&[
        "run",
        "--brokers",
        &broker.bootstrap,
        "--topics",
        topic,
        "--until-end",
        "--out",
        out,
    ])
}

/// The highest progress mark of an NDJSON output being written (0 before the first).
fn last_mark(path: &Path) -> u64 {
    text_of(path)
        .lines()
        .filter_map(|l| l.strip_prefix(r#"{"kind":"progress","ts":"#))
        .filter_map(|l| l.trim_end_matches('}').parse().ok())
        .max()
        .unwrap_or(0)
}

/// A scratch folder `name` and a broker whose `market.book` has two partitions, the first holding
/// 20 book events of symbol A at ts 100..2000, the second nothing.
fn a_in_partition_0_of_2(name: &str) -> (std::path::PathBuf, Broker) {
    let broker = Broker::start(2, "market.book");
    let a: Vec<String> = (1..=20)
        .map(|i| book_of("A", i * 100, i, &format!("{}", 100 + i)))
        .collect();
    kcat_to(&broker, "market.book", 0, &a);
    (scratch(name), broker)
}

/// The same across processes (two of one worker each): the silent partition is process 0's, the
/// written one process 1's, and the notes on idleness cross between them.
#[test]
fn an_idle_partition_of_another_process_does_not_hold_progress_back() {
    // Partition 0 goes to worker 1, which is process 1's.
    let (dir, broker) = a_in_partition_0_of_2("kafka_idle_processes");
    let hostfile = common::two_hosts(&dir);
    let out = dir.join("live.ndjson");
    let spawn = |p: &str| {
        common::broker::KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_tampines"))
                .args(["run", "--brokers", &broker.bootstrap])
                .args(["--topics", "market.book", "--group", "g"])
                .args(["--idle-ms", "300", "--lateness-ms", "0"])
                .args(["-n", "2", "-p", p, "-h", hostfile.to_str().unwrap()])
                .args(["--out", out.to_str().unwrap()])
                .stderr(Stdio::null())
                .spawn()
                .expect("run"),
        )
    };
    let processes = [spawn("0"), spawn("1")];
    let reached = within_60s(|| last_mark(&out) >= 1900);
    drop(processes);
    assert!(reached, "progress never reached 1900: {}", text_of(&out));
    let state = common::final_state(&marks(&out));
    let book = &state["book:ex:A:1"];
    assert_eq!(book["ts"], 1900, "{book}");
    assert_eq!(book["bids"][0], serde_json::json!(["119", "1"]), "{book}");
    assert_eq!(book["bids"].as_array().map(Vec::len), Some(19), "{book}");
}

/// A live job (`--idle-ms 300 --lateness-ms 0`, group `g`) of `workers` reading `topics`, with
/// results in `out`, once it has published mark 1900.
fn live_past_1900(broker: &Broker, workers: u32, topics: &str, out: &Path) -> Live {
    let live = live(broker, workers, topics, "300", out);
    let reached = within_60s(|| last_mark(out) >= 1900);
    assert!(reached, "progress never reached 1900: {}", text_of(out));
    live
}

/// A partition that sends only dead letters is silent: it has no time to hold progress at. Bad
/// messages keep coming into partition 1 (one per `kcat` call, well within `--idle-ms` 1000 of
/// each other) while progress must reach 1900 on partition 0's books. Every line counted as
/// activity, so the partition never went idle and held every symbol's results at 0 for as long
/// as they came.
#[test]
fn a_partition_sending_only_bad_messages_goes_idle() {
    holds_nothing_back("kafka_idle_bad_only", &[], |_| "not json".into(), &[]);
}

/// The same with `too_late` trades, dead letters too: after a trade at 1500 (watermark 1500 at
/// lateness 0), trades at 100 with a retention span of 1 s. They counted as activity, and held
/// progress at 1500.
#[test]
fn a_partition_sending_only_too_late_trades_goes_idle() {
    let trade = |ts: u32, id: u32| {
        format!(
            r#"{{"type":"trade","exchange":"ex","symbol":"B","ts":{ts},"id":"{id}","price":"1","qty":"1","side":"buy"}}"#
        )
    };
    let retention = ["--intervals", "1s", "--candle-retention", "1"];
    holds_nothing_back(
        "kafka_idle_too_late_only",
        &[trade(1500, 0)],
        |i| trade(100, i),
        &retention,
    );
}

/// Partition 0 holds A's books at 100..2000; partition 1 gets `first`, then `repeated(i)` again
/// and again while progress must reach 1900 (`--idle-ms` 1000, lateness 0).
fn holds_nothing_back(
    name: &str,
    first: &[String],
    repeated: impl Fn(u32) -> String,
    extra: &[&str],
) {
    let (dir, broker) = a_in_partition_0_of_2(name);
    if !first.is_empty() {
        kcat_to(&broker, "market.book", 1, first);
    }
    let out = dir.join("live.ndjson");
    let job = live_with(&broker, 1, "market.book", "1000", &out, extra);
    let metrics = job.metrics.clone();
    // Partition 0's 20 books, `first`, and the repeated messages (read, then dead-lettered).
    let read = || sample(&get(&metrics, "/metrics"), "tampines_events_read_total ");
    let mut sent = 0;
    let reached = within_60s(|| {
        kcat_to(&broker, "market.book", 1, &[repeated(sent + 1)]);
        sent += 1;
        last_mark(&out) >= 1900
    });
    let read_some = within_60s(|| read() >= (20 + first.len() + 2) as f64);
    drop(job);
    assert!(
        reached,
        "progress never reached 1900 with {sent} messages sent: {}",
        text_of(&out)
    );
    assert!(read_some && sent >= 2, "{sent} sent");
}

/// A live job and the address of its `/metrics` (a port the system chose,
/// [`common::spawn_with_metrics`]); its log is shown if the test fails.
struct Live {
    job: common::broker::KillOnDrop,
    metrics: String,
    log: common::StderrLog,
}

impl Drop for Live {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the live job's log:\n{}", self.log.text());
        }
    }
}

/// A live job (`--lateness-ms 0`, group `g`) of `workers` reading `topics`, silent inputs idle
/// after `idle_ms`, with results in `out`.
fn live(broker: &Broker, workers: u32, topics: &str, idle_ms: &str, out: &Path) -> Live {
    live_with(broker, workers, topics, idle_ms, out, &[])
}

/// [`live`] with `extra` options.
fn live_with(
    broker: &Broker,
    workers: u32,
    topics: &str,
    idle_ms: &str,
    out: &Path,
    extra: &[&str],
) -> Live {
    let (job, log, metrics) = common::spawn_with_metrics(
        Command::new(env!("CARGO_BIN_EXE_tampines"))
            .args(["run", "--brokers", &broker.bootstrap])
            .args(["-w", &workers.to_string(), "--topics", topics])
            .args(["--group", "g", "--idle-ms", idle_ms, "--lateness-ms", "0"])
            .args(["--out", out.to_str().unwrap()])
            .args(extra),
    );
    Live { job, metrics, log }
}

/// A live job of two workers, each reading one of two partitions (contract section 2 is about
/// the job's inputs, not one worker's):
/// - a partition never written to does not hold back the other worker's, and when every
///   partition is idle progress goes to the highest watermark among them;
/// - events that arrive after that in the silent partition are late: they apply at the earliest
///   open timestamp, and are published once the other partition's data moves progress past it.
///
/// Each worker used to apply the rule to its own partitions only: the worker of the silent one
/// had no watermark to advance to, and held the job's progress at 0 for good.
#[test]
fn idle_partitions_of_other_workers_do_not_hold_progress_back() {
    // Partition 0 goes to worker 1, partition 1 to worker 0 (`source::reader`).
    let (dir, broker) = a_in_partition_0_of_2("kafka_idle_workers");
    let out = dir.join("live.ndjson");
    // W = 2000, the highest watermark: every timestamp below it closes.
    let live = live_past_1900(&broker, 2, "market.book", &out);
    let metrics = live.metrics.clone();

    // Ten events of B at 100..1000 in the silent partition, all late now (they apply at 2000),
    // and one of A at 2500.
    let b: Vec<String> = (1..=10)
        .map(|i| book_of("B", i * 100, i, &format!("{}", 200 + i)))
        .collect();
    kcat_to(&broker, "market.book", 1, &b);
    // B is read first: were A's 2500 first, B's worker could follow it there before reading B.
    let read = || sample(&get(&metrics, "/metrics"), "tampines_events_read_total ");
    assert!(within_60s(|| read() >= 30.0), "B's events were never read");
    kcat_to(&broker, "market.book", 0, &[book_of("A", 2500, 21, "130")]);
    // Mark 2000 closes once B's partition is idle again: its worker follows A's to 2500.
    let reached = within_60s(|| last_mark(&out) >= 2000);
    let text = get(&metrics, "/metrics");
    drop(live);
    assert!(reached, "progress never reached 2000: {}", text_of(&out));
    assert_eq!(sample(&text, "tampines_events_read_total "), 31.0, "{text}");
    assert_eq!(sample(&text, "tampines_late_events_total "), 10.0, "{text}");
    let marks = marks(&out);
    let (at, records) = marks
        .iter()
        .find(|(_, records)| records.iter().any(|r| r["symbol"] == "B"))
        .expect("B's book published");
    assert!((2000..2500).contains(at), "B's late events at mark {at}");
    let book = records
        .iter()
        .find(|r| r["symbol"] == "B" && r["resolution"] == 1)
        .expect("B's book at resolution 1");
    assert_eq!(book["bids"][0], serde_json::json!(["210", "1"]), "{book}");
    assert_eq!(book["bids"].as_array().map(Vec::len), Some(10), "{book}");
}

/// A live job that cannot write its results (here `/dev/full`) stops with exit 1 and the reason:
/// it never finishes to report the failure at its end, as a bounded run does, and went on
/// reading with nothing written, silently, until it was killed.
#[test]
fn a_live_job_that_cannot_write_its_results_exits_1() {
    let broker = Broker::start(1, "market.book");
    kcat_to(
        &broker,
        "market.book",
        0,
        &[book(100, 1, "101"), book(200, 2, "102")],
    );
    let out = Command::new("timeout")
        .args(["30", env!("CARGO_BIN_EXE_tampines"), "run"])
        .args(["--brokers", &broker.bootstrap, "--topics", "market.book"])
        .args([
            "--idle-ms",
            "300",
            "--lateness-ms",
            "0",
            "--out",
            "/dev/full",
        ])
        .output()
        .expect("run");
    exited_1_saying(
        &out,
        "tampines: writing results to /dev/full: No space left on device (os error 28)",
    );

    // A closed pipe (`run --out - | head -1`): the results' reader is gone. A live job wrote on
    // into nothing for ever (and committed the offsets of what it never wrote).
    let mut job = Command::new("timeout")
        .args(["30", env!("CARGO_BIN_EXE_tampines"), "run"])
        .args(["--brokers", &broker.bootstrap, "--topics", "market.book"])
        .args(["--idle-ms", "300", "--lateness-ms", "0", "--out", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(job.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.contains(r#""kind":"book""#), "{first}");
    // The pipe is closed; one more event makes sure there is more to write.
    kcat_to(&broker, "market.book", 0, &[book(300, 3, "103")]);
    let out = job.wait_with_output().unwrap();
    exited_1_saying(
        &out,
        "tampines: writing results to stdout: Broken pipe (os error 32)",
    );
}

/// A bounded run whose results' reader has gone (`run --until-end --out - | head`) exits 1 and
/// commits nothing: it wrote quietly into nothing, as a replay does, exited 0 and committed the
/// offsets of results no one had, so a run again read none of them.
#[test]
fn a_bounded_run_whose_results_reader_has_gone_exits_1_and_commits_nothing() {
    let dir = scratch("kafka_until_end_pipe");
    let broker = Broker::start(1, "market.book");
    kcat_to(
        &broker,
        "market.book",
        0,
        &[book(100, 1, "101"), book(200, 2, "102")],
    );
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new("timeout")
        .args(["60", env!("CARGO_BIN_EXE_tampines"), "run"])
        .args(["--brokers", &broker.bootstrap, "--topics", "market.book"])
        .args(["--until-end", "--out", "-"])
        .stdout(writer)
        .output()
        .expect("run");
    exited_1_saying(
        &out,
        "tampines: writing results to stdout: Broken pipe (os error 32)",
    );
    let again = dir.join("again.ndjson");
    let said = until_end(&broker, "market.book", again.to_str().unwrap());
    assert!(said.contains("read 2 processed 2 "), "{said}");
    let both =
        r#""resolution":1,"ts":200,"seq":2,"status":"stale","bids":[["102","1"],["101","1"]]"#;
    assert!(text_of(&again).contains(both), "{}", text_of(&again));
}

/// A broker stopped as soon as it has said its address exits 0: the signals were caught only
/// after the address was printed, and a script's quick SIGTERM killed it (143) about one time in
/// three. The signal is sent from here, at once (a `kill` process took long enough to hide
/// it); thirty tries (the old order failed one run of two at ten).
#[test]
fn a_broker_stopped_right_after_its_address_exits_0() {
    for _ in 0..30 {
        let mut broker = Broker::start(1, "quick");
        let pid = rustix::process::Pid::from_raw(broker.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let status = broker.child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{status}");
    }
}

/// SIGTERM stops a live job cleanly: its inputs end where they are, the last marks close (up to
/// 2000; lateness held 1000 and above open), the offsets of what was written are committed, and it exits 0.
/// It used to die by the signal, its last marks unpublished and the last offsets uncommitted.
#[test]
fn sigterm_stops_a_live_job_after_its_last_marks() {
    stops_a_live_job_after_its_last_marks("kafka_sigterm", &[]);
}

/// A signal right after the first is the same stop, not a second one that exits 130 at once:
/// GNU `timeout` sends its signal to the job and then to its process group, and the job exited
/// 130 without its last marks. Here SIGINT follows SIGTERM at once (two signals the system
/// cannot merge into one, as it may two SIGTERMs).
#[test]
fn a_signal_right_after_the_first_is_the_same_stop() {
    stops_a_live_job_after_its_last_marks("kafka_sigterm_twice", &[rustix::process::Signal::INT]);
}

/// A live job caught up once it has read each partition to where it ended at the start; a
/// partition empty at the start has nothing to read, so it holds nothing back: a stop then
/// closes the last marks. Counted as behind, an empty partition never delivers the message that
/// would catch it up, and a stop exited at once (143) without them, for as long as the job ran.
#[test]
fn a_partition_empty_at_the_start_is_caught_up_with_at_once() {
    let (dir, broker) = a_in_partition_0_of_2("kafka_empty_caught_up");
    let out = dir.join("out.ndjson");
    let mut job = to_stop(&broker, "1", "g", ["300", "0"], &out);
    assert!(within_60s(|| last_mark(&out) >= 1900), "{}", text_of(&out));
    stopped_cleanly(&mut job, &[]);
    assert_eq!(last_mark(&out), 2000, "{}", text_of(&out));
}

/// A live job of `workers` reading `market.book` in `group`, its inputs idle after `idle_ms` of
/// silence, with `lateness_ms` and results in `out`; its stderr piped, for [`stopped_cleanly`].
fn to_stop(
    broker: &Broker,
    workers: &str,
    group: &str,
    [idle_ms, lateness_ms]: [&str; 2],
    out: &Path,
) -> common::broker::KillOnDrop {
    common::broker::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_tampines"))
            .args(["run", "--brokers", &broker.bootstrap, "-w", workers])
            .args(["--topics", "market.book", "--group", group])
            .args(["--idle-ms", idle_ms, "--lateness-ms", lateness_ms])
            .args(["--out", out.to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .expect("run"),
    )
}

/// Stops `job` (spawned with piped stderr) with SIGTERM, `then` the signals given at once after
/// it, and checks that it closed its last marks and exited 0 within 60 s; its stderr.
fn stopped_cleanly(
    job: &mut common::broker::KillOnDrop,
    then: &[rustix::process::Signal],
) -> String {
    let status = if then.is_empty() {
        common::signalled(&mut job.0, "TERM")
    } else {
        let pid = rustix::process::Pid::from_raw(job.0.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        for &signal in then {
            rustix::process::kill_process(pid, signal).unwrap();
        }
        common::ends_within_60s(&mut job.0)
    }
    .expect("it ends within 60 s");
    let mut stderr = String::new();
    std::io::Read::read_to_string(job.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("tampines: stopping: closing the last marks"),
        "{stderr}"
    );
    stderr
}

/// Stops a live job with SIGTERM, `then` the signals given at once after it (sent from here, not
/// by a `kill` process, which takes milliseconds), and checks that it stopped cleanly.
fn stops_a_live_job_after_its_last_marks(name: &str, then: &[rustix::process::Signal]) {
    let dir = scratch(name);
    let broker = Broker::start(2, "market.book");
    for (partition, symbol) in [(0, "A"), (1, "B")] {
        let lines = rising_books(symbol, 20);
        kcat_to(&broker, "market.book", partition, &lines);
    }
    let out = dir.join("out.ndjson");
    let mut job = to_stop(&broker, "2", "stopped", ["600000", "1000"], &out);
    assert!(within_60s(|| last_mark(&out) >= 900), "{}", text_of(&out));
    assert_eq!(last_mark(&out), 900, "the watermark, 1000, is still open");
    let stderr = stopped_cleanly(&mut job, then);
    // What it reads and where its results go, said once at start.
    let running = format!(
        "tampines: running: process 0 of 1, 2 workers; topics market.book at {}, group stopped; results to {}; SIGINT or SIGTERM stops",
        broker.bootstrap,
        out.display()
    );
    assert_eq!(stderr.lines().next(), Some(running.as_str()), "{stderr}");
    assert!(stderr.contains("read 40 processed 40"), "{stderr}");
    let state = common::final_state(&marks(&out));
    assert_eq!(last_mark(&out), 2000);
    for symbol in ["A", "B"] {
        let book = &state[&format!("book:ex:{symbol}:1")];
        assert_eq!(book["bids"][0][0], "120", "{book}");
    }
    let again = tampines(&[
        "run",
        "--brokers",
        &broker.bootstrap,
        "--topics",
        "market.book",
        "--group",
        "stopped",
        "--until-end",
    ]);
    assert!(again.contains("read 0 processed 0"), "{again}");
}

/// A signal before the job reads (here process 1 waits for a process 0 that never comes) ends it
/// at once, as the signal would (128 + 15): the first one only set the stop flag, which nothing
/// read yet, and the job waited on.
#[test]
fn a_signal_before_the_job_reads_ends_it_at_once() {
    let dir = scratch("kafka_signal_early");
    let hosts = common::two_hosts(&dir);
    let mut job = common::broker::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_tampines"))
            .args(["run", "--brokers", "127.0.0.1:1", "--topics", "market.book"])
            .args(["-n", "2", "-p", "1", "-h", hosts.to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .expect("run"),
    );
    let pid = job.0.id().to_string();
    // Once SIGTERM is caught (bit 15 of the mask of caught signals), not before: sent earlier,
    // it would end the process by itself.
    let caught = within_60s(|| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        (status.lines())
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << 14) != 0)
    });
    assert!(caught, "SIGTERM never caught");
    let status = common::signalled(&mut job.0, "TERM").expect("it ends within 60 s");
    assert_eq!(status.code(), Some(143));
}

/// Signals to a job whose output nobody reads (a FIFO whose reader never reads: its writes
/// block, as a last write to a Redis that went away does): a live `run` stops on the first and
/// exits 130 on a second while stopping, not before a second has passed since the first; a
/// `--until-end` run dies by the first, the signal's default.
#[test]
fn signals_to_a_job_that_cannot_write() {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = scratch("kafka_signals_blocked");
    let broker = Broker::start(1, "market.book");
    let lines: Vec<String> = (1..=3000)
        .map(|i| book(i * 10, i, &format!("{}", 100 + i)))
        .collect();
    kcat_to(&broker, "market.book", 0, &lines);
    for (bounded, group) in [(false, "live"), (true, "bounded")] {
        let fifo = dir.join(format!("{group}.fifo"));
        common::mkfifo(&fifo);
        // The read end, opened without waiting for a writer and read only to see output start.
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(0o4000) // O_NONBLOCK
            .open(&fifo)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_tampines"));
        command
            .args([
                "run",
                "--brokers",
                &broker.bootstrap,
                "--topics",
                "market.book",
            ])
            .args(["--group", group, "--idle-ms", "600000"])
            .args(["--out", fifo.to_str().unwrap()])
            .stderr(Stdio::piped());
        if bounded {
            command.arg("--until-end");
        }
        let mut job = common::broker::KillOnDrop(command.spawn().expect("run"));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let stderr = job.0.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        // Some output: the job reads. It writes megabytes, so it blocks in a write soon after.
        let mut first = [0u8; 1024];
        assert!(
            within_60s(|| reader.read(&mut first).is_ok_and(|n| n > 0)),
            "{group}: no output"
        );
        let status = if bounded {
            common::signalled(&mut job.0, "TERM").expect("it ends within 60 s")
        } else {
            let pid = job.0.id().to_string();
            let first = Instant::now();
            assert!(Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success());
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let line = rx
                    .recv_timeout(left)
                    .expect("no 'stopping' line within 60 s");
                if line.starts_with("tampines: stopping: closing the last marks") {
                    break;
                }
            }
            // A signal within a second of the first is the same stop: SIGTERM again every
            // 50 ms until the job ends, which must be a second or more after the first.
            let status = loop {
                assert!(
                    Instant::now() < deadline,
                    "{group}: still running after 60 s"
                );
                if let Some(status) = job.0.try_wait().unwrap() {
                    break status;
                }
                common::signal(&job.0, "TERM");
                std::thread::sleep(Duration::from_millis(50)); // polling a child, with a deadline
            };
            assert!(
                first.elapsed() >= Duration::from_secs(1),
                "{group}: {status:?}"
            );
            status
        };
        if bounded {
            // The signal's default: it dies by it (a shell shows 143).
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(15), "{group}: {status:?}");
        } else {
            assert_eq!(status.code(), Some(130), "{group}");
        }
        drop(reader);
    }
}

/// `--start`: `latest` reads nothing of what is there and says per partition what it skipped;
/// the default resumes at the group's committed offsets (none: the beginning), and `earliest`
/// reads everything again whatever the group committed.
#[test]
fn where_reading_starts() {
    let broker = Broker::start(2, "market.book");
    for (partition, count) in [(0, 30), (1, 20)] {
        let lines: Vec<String> = (1..=count)
            .map(|i| book_of(&format!("A{partition}"), i * 100, i, "1"))
            .collect();
        kcat_to(&broker, "market.book", partition, &lines);
    }
    let run = |group: &str, start: &[&str]| {
        let base = [
            "run",
            "--brokers",
            &broker.bootstrap,
            "--topics",
            "market.book",
        ];
        let rest = ["--group", group, "--until-end", "--out", "/dev/null"];
        tampines(&[&base[..], &rest, start].concat())
    };
    let latest = run("from_latest", &["--start", "latest"]);
    assert!(latest.contains("read 0 processed 0"), "{latest}");
    for (partition, skipped) in [(0, 30), (1, 20)] {
        let warning = format!("topic=market.book partition={partition} skipped={skipped}");
        assert!(
            latest
                .lines()
                .any(|l| l.contains("starting at the end") && l.ends_with(&warning)),
            "{latest}"
        );
    }
    assert!(run("g", &[]).contains("read 50 processed 50"));
    assert!(
        run("g", &[]).contains("read 0 processed 0"),
        "resumed at the end"
    );
    assert!(run("g", &["--start", "earliest"]).contains("read 50 processed 50"));
    assert!(run("g", &["--start", "committed"]).contains("read 0 processed 0"));
}

/// A live job's accounting in `/metrics`: read = processed + dead-lettered (by reason) +
/// duplicates + what waits at open timestamps (here the last book event, at 2000, which a
/// live job holds open); and the exposition is OpenMetrics whatever the scraper's `Accept`
/// asks for.
#[test]
fn metrics_account_for_every_message() {
    let dir = scratch("kafka_metrics_accounting");
    let broker = Broker::start(1, "market.book");
    let mut lines = rising_books("A", 20);
    lines.insert(5, "not json".into());
    lines.insert(9, book(500, 5, "105")); // seq 5 again: a duplicate
    lines.insert(
        12,
        r#"{"type":"quote","exchange":"ex","symbol":"A","ts":900}"#.into(),
    );
    // Sequence checks start with a snapshot that has a seq.
    lines.insert(
        0,
        r#"{"type":"snapshot","exchange":"ex","symbol":"A","ts":50,"seq":0,"bids":[],"asks":[]}"#
            .into(),
    );
    kcat_to(&broker, "market.book", 0, &lines);
    let out = dir.join("out.ndjson");
    let live = live_past_1900(&broker, 1, "market.book", &out);
    let metrics = live.metrics.clone();
    let now_ms = || {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        since.unwrap().as_millis() as f64
    };
    let before = now_ms();
    let text = get(&metrics, "/metrics");
    let after = now_ms();
    // Lags are the wall clock at the scrape minus the output frontier and the watermark (the
    // last event's ts, 2000, less lateness 0).
    for (series, at) in [
        ("tampines_output_frontier_ms ", 1900.0),
        ("tampines_input_watermark_ms{", 2000.0),
    ] {
        assert_eq!(sample(&text, series), at, "{text}");
        let lag = sample(&text, &series.replace("_ms", "_lag_ms"));
        assert!((before - at..=after - at).contains(&lag), "{series}: {lag}");
    }
    assert_eq!(sample(&text, "tampines_events_read_total "), 24.0, "{text}");
    // The snapshot and 19 book events; the 20th waits at 2000.
    assert_eq!(
        sample(&text, "tampines_events_processed_total "),
        20.0,
        "{text}"
    );
    assert_eq!(sample(&text, "tampines_duplicates_total "), 1.0, "{text}");
    for reason in ["not_json", "unknown_type"] {
        let series = format!(r#"tampines_dead_lettered_total{{reason="{reason}"}} "#);
        assert_eq!(sample(&text, &series), 1.0, "{text}");
    }
    let mut scrape = std::net::TcpStream::connect(&metrics).unwrap();
    write!(
        scrape,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain;version=0.0.4\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut scrape, &mut response).unwrap();
    drop(live);
    assert!(
        response.lines().any(|l| l.eq_ignore_ascii_case(
            "content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"
        )),
        "{response}"
    );
    assert!(response.ends_with("# EOF\n"), "{response}");
}

/// Asserts that a job exited 1 with `line` among its stderr's lines.
fn exited_1_saying(out: &std::process::Output, line: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.lines().any(|l| l == line), "{stderr}");
}

/// A live job's dead letters reach the `--dlq` file as they are found (they waited in a 1 MiB
/// buffer until the run's end); and a dead letter that cannot be written (`/dev/full`) is logged
/// and the job goes on (stopping would meet the same message again at the restart).
#[test]
fn a_live_job_writes_dead_letters_at_once_and_goes_on_when_it_cannot() {
    let dir = scratch("kafka_live_dlq");
    let broker = Broker::start(1, "market.book");
    let mut lines = vec!["not json".to_string()];
    lines.extend(rising_books("A", 20));
    kcat_to(&broker, "market.book", 0, &lines);
    // Each job in a group of its own (named after its dead-letter target), from the beginning.
    let live = |dlq: &str, out: &Path, stderr: &Path| {
        common::broker::KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_tampines"))
                .args(["run", "--brokers", &broker.bootstrap])
                .args(["--topics", "market.book", "--group", dlq])
                .args(["--idle-ms", "300", "--lateness-ms", "0", "--dlq", dlq])
                .args(["--out", out.to_str().unwrap()])
                .stderr(std::fs::File::create(stderr).unwrap())
                .spawn()
                .expect("run"),
        )
    };
    let dlq = dir.join("dlq.ndjson");
    let (out, stderr) = (dir.join("out.ndjson"), dir.join("stderr.txt"));
    let job = live(dlq.to_str().unwrap(), &out, &stderr);
    let written = within_60s(|| text_of(&dlq).ends_with('\n'));
    drop(job);
    assert!(written, "the dead letter never reached the file");
    let letter: serde_json::Value = serde_json::from_str(text_of(&dlq).trim()).unwrap();
    assert_eq!(letter["payload"], "not json", "{letter}");

    let (out, stderr) = (dir.join("full_out.ndjson"), dir.join("full_stderr.txt"));
    let job = live("/dev/full", &out, &stderr);
    let reached = within_60s(|| last_mark(&out) >= 1900);
    drop(job);
    assert!(reached, "progress never reached 1900: {}", text_of(&stderr));
    // Naming the file that failed.
    assert!(
        text_of(&stderr).contains("writing a dead letter failed; going on")
            && text_of(&stderr).contains("--dlq /dev/full: No space left on device"),
        "{}",
        text_of(&stderr)
    );
}

/// A topic that appears while a live job runs is read from its start, and the partitions the job
/// was reading go on where they were: none of their messages is read twice. (A worker assigned
/// its whole list again, the old partitions with it: librdkafka restarted those at the offsets
/// they were first assigned with, here the beginning, and 20 book events came back as
/// duplicates.)
#[test]
fn a_topic_created_while_running_is_read_and_the_others_are_not_read_again() {
    a_topic_created_while_running("kafka_new_topic", 1);
}

/// The same with two workers and one partition at start: worker 0 owns none, stays in the job
/// holding nothing back, and reads the new topic's partition that falls to it. (It used to
/// finish at once, and a topic created while running went unread in its share of partitions.)
#[test]
fn a_worker_that_owned_no_partition_reads_one_created_later() {
    a_topic_created_while_running("kafka_no_partition", 2);
}

/// A live job of `workers` reads 20 book events of `market.book/0`; `market.trade` is then
/// created with a trade in its partition 0, which goes to worker 0; one more book event closes
/// the trade's timestamp. Every event is read once, and the trade's ticker is published.
fn a_topic_created_while_running(name: &str, workers: u32) {
    let dir = scratch(name);
    let broker = Broker::start(1, "market.book");
    produce(&dir, &broker, &rising_books("A", 20));
    let out = dir.join("live.ndjson");
    // With two workers, `market.book/0` goes to worker 1: worker 0 must not hold progress back.
    let topics = "market.book,market.trade";
    let live = live_past_1900(&broker, workers, topics, &out);
    let metrics = live.metrics.clone();

    // `market.trade` does not exist yet: producing to it creates it. The job finds it within 10 s.
    kcat_to(&broker, "market.trade", 0, &[trade(2500, 1, "110")]);
    let read = || sample(&get(&metrics, "/metrics"), "tampines_events_read_total ");
    let traded = within_60s(|| read() >= 21.0);
    // One more book event, which closes the trade's timestamp (its ticker is published), and
    // before which a partition read again from its start would have been read again whole.
    produce(&dir, &broker, &[book(3000, 21, "130")]);
    let closed = within_60s(|| last_mark(&out) >= 2500);
    let text = get(&metrics, "/metrics");
    drop(live);
    assert!(traded, "the new topic's trade was never read: {text}");
    assert!(closed, "mark 2500 never closed: {}", text_of(&out));
    assert_eq!(sample(&text, "tampines_events_read_total "), 22.0, "{text}");
    assert_eq!(sample(&text, "tampines_duplicates_total "), 0.0, "{text}");
    let input =
        |topic: &str| format!(r#"tampines_input_read_total{{topic="{topic}",partition="0"}} "#);
    assert_eq!(sample(&text, &input("market.book")), 21.0, "{text}");
    assert_eq!(sample(&text, &input("market.trade")), 1.0, "{text}");
    let state = common::final_state(&marks(&out));
    let ticker = &state["ticker:ex:A"];
    assert_eq!(
        (ticker["count"].as_u64(), ticker["last"].as_str()),
        (Some(1), Some("110")),
        "{ticker}"
    );
}

/// A live job (`--lateness-ms 0`, results in `out`, stderr in `log`) of topic `later.trade`,
/// which does not exist yet, over a broker in this process (so that a test can make the topic,
/// slow the broker, take a partition's leader away), once the job has looked for the topic.
struct LaterTopic {
    cluster: rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    bootstrap: String,
    out: std::path::PathBuf,
    log: std::path::PathBuf,
    metrics: String,
    job: common::broker::KillOnDrop,
}

impl LaterTopic {
    fn run(dir: &Path, extra: &[&str]) -> LaterTopic {
        let cluster = tampines::kafka::mock_cluster(1, &["market.book".to_string()]).unwrap();
        let bootstrap = cluster.bootstrap_servers();
        let (out, log) = (dir.join("live.ndjson"), dir.join("live.stderr"));
        let job = common::broker::KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_tampines"))
                .args(["run", "--brokers", &bootstrap, "--topics", "later.trade"])
                // A port the system chooses, named in the log (at warn, whatever RUST_LOG is).
                .args(["--metrics-addr", "127.0.0.1:0", "--lateness-ms", "0"])
                .env_remove("RUST_LOG")
                .args(extra)
                .arg("--out")
                .arg(&out)
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        // The topic is made only once the job has looked for it at its start.
        let absent = || text_of(&log).contains("the topic has no partitions");
        assert!(within_60s(absent), "{}", text_of(&log));
        let metrics = common::metrics_addr_logged(&log);
        LaterTopic {
            cluster,
            bootstrap,
            out,
            log,
            metrics,
            job,
        }
    }
}

/// Partitions found while running hold new messages, not the backlog of the job's start: a
/// stop while one is read closes the last marks and exits 0. A worker that owned no partition at
/// its start counted the first ones it found as catching up, and such a stop exited 130 saying
/// `stopping while catching up`.
///
/// The broker is in this process, so that it can answer slowly: the 40 trades of a topic made
/// while the job runs are read one per answer (one message per batch,
/// `fetch.message.max.bytes=1`), each 250 ms late.
#[test]
fn a_stop_while_reading_a_partition_found_later_closes_the_last_marks() {
    let dir = scratch("kafka_stop_found_later");
    // One batch per partition and answer.
    let slow = [
        "--resolutions",
        "1",
        "--intervals",
        "1m",
        "-X",
        "fetch.message.max.bytes=1",
    ];
    let mut later = LaterTopic::run(&dir, &slow);
    let (cluster, bootstrap, out, log) = (&later.cluster, &later.bootstrap, &later.out, &later.log);
    let deadline = Instant::now() + Duration::from_secs(60);
    let read = || common::metric_within(&later.metrics, "tampines_events_read_total ", deadline);
    let trades = dir.join("trades.ndjson");
    let lines: Vec<String> = (1..=40).map(|i| trade(i * 1000, i, "10")).collect();
    std::fs::write(&trades, lines.join("\n")).unwrap();
    let one_per_batch = ["-X", "batch.num.messages=1", "-X", "linger.ms=0"];
    let file = trades.to_str().unwrap();
    let to = [
        "produce",
        file,
        "--topic",
        "later.trade",
        "--brokers",
        bootstrap,
    ];
    tampines(&[&to[..], &one_per_batch].concat());
    cluster
        .broker_round_trip_time(1, Duration::from_millis(250))
        .unwrap();
    // Found within 10 s (the job looks for new partitions every 10 s).
    assert!(within_60s(|| read() >= 1.0), "no trade read within 60 s");
    let status = common::signalled(&mut later.job.0, "INT").expect("a stop within 60 s");
    let said = std::fs::read_to_string(log).unwrap();
    assert!(status.success(), "{said}");
    // The stop closed every mark up to the last trade read: trade i is at i s.
    let n: u64 = (said.lines())
        .find_map(|l| l.strip_prefix("read "))
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count read: {said}"));
    assert!(n < 40, "every trade read before the stop: {said}");
    assert_eq!(last_mark(out), n * 1000, "{said}");
    let ticker = &common::final_state(&marks(out))["ticker:ex:A"];
    assert_eq!(ticker["count"], n, "{ticker}");
}

/// A partition found while running whose offsets cannot be read yet (it has no leader) waits
/// for the next look, and the others are read meanwhile. The partitions looked at before it were
/// taken as this worker's but never assigned, so that run never read them.
#[test]
fn a_partition_found_while_running_without_a_leader_holds_back_no_other() {
    let dir = scratch("kafka_found_without_leader");
    let mut later = LaterTopic::run(&dir, &[]);
    let (cluster, bootstrap, out, log) = (&later.cluster, &later.bootstrap, &later.out, &later.log);
    cluster.create_topic("later.trade", 2, 1).unwrap();
    cluster.partition_leader("later.trade", 1, None).unwrap();
    kcat_to_at(bootstrap, "later.trade", 0, &[trade(1000, 1, "10")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let read = |partition: u32| {
        common::metric_within(
            &later.metrics,
            &common::input_read("later.trade", partition),
            deadline,
        )
    };
    let first = within_60s(|| read(0) == 1.0);
    assert!(first, "partition 0 unread: {}", text_of(log));
    assert!(text_of(log).contains("is not read yet: its offsets"));
    cluster.partition_leader("later.trade", 1, Some(1)).unwrap();
    let b = trade(2000, 2, "20").replace(r#""symbol":"A""#, r#""symbol":"B""#);
    kcat_to_at(bootstrap, "later.trade", 1, &[b]);
    assert!(within_60s(|| read(1) == 1.0), "{}", text_of(log));
    let status = common::signalled(&mut later.job.0, "INT").expect("a stop within 60 s");
    assert!(status.success(), "{}", text_of(log));
    let state = common::final_state(&marks(out));
    let last = |symbol: &str| state[&format!("ticker:ex:{symbol}")]["last"].clone();
    assert_eq!((last("A"), last("B")), ("10".into(), "20".into()));
}

#[test]
fn an_idle_partition_does_not_stall_progress_and_late_events_apply() {
    let dir = scratch("kafka_idle");
    let broker = Broker::start(2, "market.book");
    // Symbol A lives in one partition; the other partition never receives anything.
    let mut lines = rising_books("A", 20);
    produce(&dir, &broker, &lines);
    let out = dir.join("live.ndjson");
    let live = common::broker::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_tampines"))
            .args([
                "run",
                "--brokers",
                &broker.bootstrap,
                "--topics",
                "market.book",
                "--group",
                "live",
                "--idle-ms",
                "300",
                "--lateness-ms",
                "0",
            ])
            .args(["--out", out.to_str().unwrap()])
            .spawn()
            .expect("run"),
    );
    // W = 2000: every timestamp below it closes although one partition is silent.
    let reached = within_60s(|| text_of(&out).contains(r#"{"kind":"progress","ts":1900}"#));
    drop(live);
    assert!(reached, "progress never reached 1900: {}", text_of(&out));

    // A late event (its timestamp closed) applies at the earliest open timestamp and is counted.
    lines.push(book(550, 21, "150"));
    produce(&dir, &broker, &lines[20..]);
    let bounded = dir.join("bounded.ndjson");
    let stderr = tampines(&[
        "run",
        "--brokers",
        &broker.bootstrap,
        "--topics",
        "market.book",
        "--group",
        "bounded",
        "--until-end",
        "--lateness-ms",
        "0",
        "--out",
        bounded.to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("read 21 processed 21 dead-lettered 0 duplicates 0 late 1"),
        "{stderr}"
    );
    let last = marks(&bounded).last().cloned().unwrap();
    assert_eq!(last.0, 2000);
    let book = last
        .1
        .iter()
        .find(|r| r["resolution"] == 1)
        .expect("book at 2000");
    // The late level (ts 550) is in the book at the last mark, best of all.
    assert_eq!(book["bids"][0], serde_json::json!(["150", "1"]), "{book}");
    assert_eq!(book["bids"][1], serde_json::json!(["120", "1"]), "{book}");
}

#[test]
fn two_processes_of_two_workers_equal_one_process() {
    let dir = scratch("kafka_processes");
    let files = [gen(&dir, "a", 5), gen(&dir, "b", 6), gen(&dir, "c", 7)];
    let hostfile = common::two_hosts(&dir);
    let broker = Broker::start(4, "market.book,market.trade");
    tampines(&[
        "produce",
        &files[0],
        &files[1],
        &files[2],
        "--brokers",
        &broker.bootstrap,
    ]);
    let one = dir.join("one.ndjson");
    tampines(&[
        "replay",
        &files[0],
        &files[1],
        &files[2],
        "--out",
        one.to_str().unwrap(),
    ]);
    for (command, out) in [
        ("replay", dir.join("replay2.ndjson")),
        ("run", dir.join("run2.ndjson")),
    ] {
        let spawn = |p: &str| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_tampines"));
            c.arg(command);
            if command == "replay" {
                c.args(&files);
            } else {
                c.args([
                    "--brokers",
                    &broker.bootstrap,
                    "--until-end",
                    "--group",
                    "two",
                ]);
            }
            c.args([
                "-w",
                "2",
                "-n",
                "2",
                "-p",
                p,
                "-h",
                hostfile.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ]);
            c.stderr(Stdio::piped()).spawn().expect("spawn process")
        };
        wait_job(command, vec![spawn("0"), spawn("1")]);
        assert_eq!(
            marks(&out),
            marks(&one),
            "{command} on 2 processes x 2 workers"
        );
    }
}

/// Time the job did not run (stopped with SIGSTOP for longer than `--idle-ms`) is not counted as
/// silence: it could not watch its partitions then. Partition 0 holds symbol A, 100 s of event
/// time ahead of symbol B in partition 1; A gets ten more events while the job is stopped, B ten
/// more once it runs again. The stop was counted: B was idle at the first activation after it,
/// progress jumped to A's watermark, and B's ten new events were late, applied at A's time. (A
/// stop while both partitions keep receiving did the same whenever the consumer had not fetched
/// yet at that activation.)
#[test]
fn a_stopped_job_finds_no_input_idle_when_it_resumes() {
    let dir = scratch("kafka_stopped_job");
    let broker = Broker::start(2, "market.book");
    let events = |symbol: &str, from: u64, range: std::ops::Range<u64>| -> Vec<String> {
        range
            .map(|i| book_of(symbol, from + i * 100, i + 1, &format!("{}", 100 + i)))
            .collect()
    };
    let out = dir.join("out.ndjson");
    // B's events after the stop must reach the job well within --idle-ms of its resuming (a
    // kcat started then): 5 s leaves room on a loaded machine (2 s left about 1.5 s).
    let mut job = live(&broker, 1, "market.book", "5000", &out);
    let metrics = job.metrics.clone();
    let read = || {
        std::net::TcpStream::connect(&metrics)
            .is_ok()
            .then(|| sample(&get(&metrics, "/metrics"), "tampines_events_read_total "))
    };
    assert!(within_60s(|| read().is_some()), "no metrics");
    kcat_to(&broker, "market.book", 0, &events("A", 100_000, 0..10));
    kcat_to(&broker, "market.book", 1, &events("B", 1_000, 0..10));
    // Stopped right after reading: far less than --idle-ms of silence before the stop.
    assert!(within_60s(|| read() == Some(20.0)), "never read 20 events");
    assert!(common::signal(&job.job.0, "STOP"));
    kcat_to(&broker, "market.book", 0, &events("A", 100_000, 10..20));
    std::thread::sleep(Duration::from_secs(6)); // the stall under test: longer than --idle-ms
    assert!(common::signal(&job.job.0, "CONT"));
    kcat_to(&broker, "market.book", 1, &events("B", 1_000, 10..20));
    // Once everything is silent for --idle-ms, progress goes to A's last open timestamp.
    assert!(
        within_60s(|| last_mark(&out) >= 101_800),
        "progress never reached 101800: {}",
        text_of(&out)
    );
    let text = get(&metrics, "/metrics");
    assert!(common::signalled(&mut job.job.0, "KILL").is_some());
    assert_eq!(sample(&text, "tampines_late_events_total "), 0.0, "{text}");
    let state = common::final_state(&marks(&out));
    let b = &state["book:ex:B:1"];
    assert_eq!(b["ts"], 2_900, "{b}");
    assert_eq!(b["bids"].as_array().map(Vec::len), Some(20), "{b}");
}

/// Messages the broker deletes (retention) before a live job reads them are said to be lost and
/// counted by partition, and reading goes on from the first message held: every message is read
/// or counted as lost. librdkafka's `earliest` reset moved on past them without a word (an audit
/// lost 156,000 of 300,000 messages so, its job paused by flow control).
#[test]
fn messages_deleted_before_they_are_read_are_counted_as_lost() {
    let dir = scratch("kafka_lost");
    let broker = Broker::start(1, "market.trade");
    let out = dir.join("out.ndjson");
    let job = live(&broker, 1, "market.trade", "60000", &out);
    let metrics = job.metrics.clone();
    let accounted = || read_and_lost(&metrics);
    let first: Vec<String> = (1..=10).map(|i| trade(i * 100, i, "10")).collect();
    kcat_to(&broker, "market.trade", 0, &first);
    // The partition's series is there from its assignment, at 0: one that appeared only at the
    // first loss, holding it, showed Prometheus no increase, and the alert never fired.
    assert!(
        within_60s(|| accounted() == Some((10.0, Some(0.0)))),
        "{:?}",
        accounted()
    );
    // While the job is stopped, more than the mock cluster keeps of a partition (5 MiB): the
    // broker deletes the oldest, which the job has not read.
    assert!(common::signal(&job.job.0, "STOP"));
    let many: Vec<String> = (11..=70_010).map(|i| trade(i * 100, i, "10")).collect();
    kcat_to(&broker, "market.trade", 0, &many);
    assert!(common::signal(&job.job.0, "CONT"));
    assert!(
        within_60s(|| all_told(&metrics, 70_010.0)),
        "{:?}",
        accounted()
    );
}

/// Messages deleted while the job was down, past the offset its group committed, were never read:
/// a restart at the committed offset counts them as lost (it only logged them), and everything
/// after them is read.
#[test]
fn messages_deleted_while_the_job_was_down_are_counted_as_lost() {
    let dir = scratch("kafka_lost_down");
    let broker = Broker::start(1, "market.trade");
    let first: Vec<String> = (1..=10).map(|i| trade(i * 100, i, "10")).collect();
    kcat_to(&broker, "market.trade", 0, &first);
    let out = dir.join("out.ndjson");
    let bounded = [
        "run",
        "--brokers",
        &broker.bootstrap,
        "--topics",
        "market.trade",
    ];
    let stderr = tampines(&[&bounded[..], &["--group", "g", "--until-end"]].concat());
    assert!(stderr.contains("read 10 processed 10"), "{stderr}");
    // More than the mock cluster keeps of a partition (5 MiB): the oldest unread are deleted.
    let many: Vec<String> = (11..=70_010).map(|i| trade(i * 100, i, "10")).collect();
    kcat_to(&broker, "market.trade", 0, &many);
    let job = live(&broker, 1, "market.trade", "60000", &out);
    let metrics = job.metrics.clone();
    assert!(
        within_60s(|| all_told(&metrics, 70_000.0)),
        "{:?}",
        read_and_lost(&metrics)
    );
}

/// A job's messages read and lost (None while the partition has no series) on `market.trade`/0,
/// from its metrics at `metrics` (None while they do not answer).
fn read_and_lost(metrics: &str) -> Option<(f64, Option<f64>)> {
    let lost = r#"tampines_messages_lost_total{topic="market.trade",partition="0"} "#;
    let text = std::net::TcpStream::connect(metrics)
        .is_ok()
        .then(|| get(metrics, "/metrics"))?;
    let read = sample(&text, "tampines_events_read_total ");
    Some((read, text.contains(lost).then(|| sample(&text, lost))))
}

/// Some messages were lost, and every one of `produced` was read or counted as lost.
fn all_told(metrics: &str, produced: f64) -> bool {
    read_and_lost(metrics)
        .is_some_and(|(read, lost)| lost.is_some_and(|lost| lost > 0.0 && read + lost == produced))
}

/// The consumer lag a job reports every 10 s is each partition's end offset minus the group's
/// committed offset, and the whole partition while the group has committed nothing there.
/// Partition 0 holds A's 20 events at 100..2000 (the first 19 closed, their offsets committed);
/// partition 1 two of B's far ahead, never closed (`--idle-ms` 60 s keeps both partitions busy).
#[test]
fn consumer_lag_is_the_end_minus_what_the_group_committed() {
    let dir = scratch("kafka_consumer_lag");
    let broker = Broker::start(2, "market.book");
    kcat_to(&broker, "market.book", 0, &rising_books("A", 20));
    let far: Vec<String> = (1..=2)
        .map(|i| book_of("B", 1_000_000 + i * 100, i, "100"))
        .collect();
    kcat_to(&broker, "market.book", 1, &far);
    let out = dir.join("out.ndjson");
    let live = live(&broker, 1, "market.book", "60000", &out);
    let metrics = live.metrics.clone();
    let lag = |text: &str, partition: u32| {
        let series = format!(
            r#"tampines_consumer_lag_messages{{topic="market.book",partition="{partition}"}} "#
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map(|v| v.parse::<f64>().unwrap())
    };
    let mut text = String::new();
    let reported = within_60s(|| {
        if std::net::TcpStream::connect(&metrics).is_err() {
            return false;
        }
        text = get(&metrics, "/metrics");
        // The first report after the commits of the 19 closed events, both partitions in it
        // (a report sets one partition's gauge after the other: a scrape between them sees
        // only the first).
        last_mark(&out) >= 1900 && lag(&text, 0) == Some(1.0) && lag(&text, 1).is_some()
    });
    assert!(reported, "{text}");
    assert_eq!(lag(&text, 1), Some(2.0), "{text}");
}

/// `--until-end` reads each partition up to its end offset as of start: messages produced while
/// it reads are left for the next run. The job writes into a FIFO read only once, so it is
/// still reading (blocked in a write: megabytes of results) when 5 more book events arrive.
#[test]
fn a_bounded_run_stops_at_the_end_offsets_of_its_start() {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = scratch("kafka_until_end_ends");
    let broker = Broker::start(1, "market.book");
    // Books of 20 bids at marks of their own: about 1.6 KB of results each, 5 MB in all.
    let first: Vec<String> = (1..=3000)
        .map(|i| {
            let bids: Vec<String> = (0..20)
                .map(|k| format!(r#"["{}.{k}","1"]"#, 100 + i))
                .collect();
            format!(
                r#"{{"type":"book","exchange":"ex","symbol":"A","ts":{},"seq":{i},"bids":[{}],"asks":[]}}"#,
                i * 100,
                bids.join(",")
            )
        })
        .collect();
    kcat_to(&broker, "market.book", 0, &first);
    let fifo = dir.join("out.fifo");
    common::mkfifo(&fifo);
    let mut peek = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(0o4000) // O_NONBLOCK: opened before the job opens its end
        .open(&fifo)
        .unwrap();
    let job = Command::new(env!("CARGO_BIN_EXE_tampines"))
        .args([
            "run",
            "--brokers",
            &broker.bootstrap,
            "--topics",
            "market.book",
        ])
        .args(["--until-end", "--out", fifo.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let mut job = common::broker::KillOnDrop(job);
    let mut some = [0u8; 1024];
    assert!(
        within_60s(|| peek.read(&mut some).is_ok_and(|n| n > 0)),
        "no output"
    );
    // Output has started, so the partition's end was taken; the job now waits on the FIFO.
    let later: Vec<String> = (1..=5)
        .map(|i| book_of("LATER", 300_000 + i * 100, i, "1"))
        .collect();
    kcat_to(&broker, "market.book", 0, &later);
    // The rest, read on a thread: a job that never ends fails the test after 120 s (and is
    // killed), where reading here waited for ever.
    let (send, read) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let mut rest = String::new();
        let done = std::fs::File::open(&path).and_then(|mut f| f.read_to_string(&mut rest));
        let _ = send.send(done.map(|_| rest));
    });
    let rest = (read.recv_timeout(Duration::from_secs(120)))
        .expect("the job ended within 120 s")
        .unwrap();
    let status = job.0.wait().unwrap();
    let mut stderr = String::new();
    (job.0.stderr.take().unwrap())
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("read 3000 processed 3000"), "{stderr}");
    assert!(!rest.contains("LATER"), "a later message was read");
    assert!(rest.len() > 4 << 20, "{} bytes of output", rest.len());
    // The next run reads them (from the group's committed offsets, the default).
    let next = until_end(&broker, "market.book", "/dev/null");
    assert!(next.contains("read 5 processed 5 "), "{next}");
}

/// `--idle-ms` is wall time (contract section 2): inputs silent from the job's start hold its
/// progress for `--idle-ms`, then no more. With 4 s, the mark before the last event's comes no
/// sooner than 4 s after the start, and (leaving 8 s for a slow machine) sooner than 12 s.
#[test]
fn inputs_fall_idle_after_idle_ms() {
    let dir = scratch("kafka_idle_ms");
    let broker = Broker::start(1, "market.book,market.trade");
    kcat_to(&broker, "market.book", 0, &rising_books("A", 20));
    let out = dir.join("out.ndjson");
    let started = Instant::now();
    let topics = "market.book,market.trade";
    let _live = live(&broker, 1, topics, "4000", &out);
    assert!(within_60s(|| last_mark(&out) >= 1900), "{}", text_of(&out));
    let took = started.elapsed();
    assert!(
        (Duration::from_secs(4)..Duration::from_secs(12)).contains(&took),
        "{took:?}"
    );
}
