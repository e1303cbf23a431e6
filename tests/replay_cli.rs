//! `tampines replay` end to end: bad lines are dead-lettered with reasons and counted, the
//! accounting adds up, and the NDJSON output is identical for 1, 2 and 4 workers.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{gen_events, marks, scratch, tampines, wait_job};
use serde_json::json;

const INPUT: &str = r#"{"type":"snapshot","exchange":"ex","symbol":"A","ts":1000,"seq":10,"bids":[["10.0","1"],["9.5","2"]],"asks":[["10.5","3"]]}
not json at all
{"type":"book","exchange":"ex","symbol":"A","ts":1050,"seq":11,"bids":[["10.0","0"]],"asks":[]}
{"type":"book","exchange":"ex","symbol":"A","ts":1060,"seq":11,"bids":[["9.0","5"]],"asks":[]}
{"type":"trade","exchange":"ex","symbol":"A","ts":1070,"id":"1","price":"10.5","qty":"2","side":"buy"}
{"type":"trade","exchange":"ex","symbol":"A","ts":1080,"id":"1","price":"10.5","qty":"2","side":"buy"}
{"type":"trade","exchange":"ex","symbol":"A","ts":1090,"id":"2","price":"10.25","qty":"0","side":"buy"}
{"type":"trade","exchange":"ex","symbol":"A","ts":1091,"id":"3","price":"100000000000000","qty":"100000000000000","side":"buy"}
{"type":"book","exchange":"ex","symbol":"A","ts":1092,"seq":12,"bids":[["9.0","1000000000000000"]],"asks":[]}
{"type":"trade","exchange":"ex","symbol":"A","ts":1093,"id":"4","price":"79228162514264337593543950335","qty":"79228162514264337593543950335","side":"buy"}
{"type":"quote","exchange":"ex","symbol":"A","ts":1095}
"#;

/// A trade of `ex:A`, quantity 1, taken by a buyer: one line with its line feed.
fn trade_a(ts: u64, id: impl std::fmt::Display, price: impl std::fmt::Display) -> String {
    format!(
        r#"{{"type":"trade","exchange":"ex","symbol":"A","ts":{ts},"id":"{id}","price":"{price}","qty":"1","side":"buy"}}"#
    ) + "\n"
}

/// `tampines replay FILES --out OUT --dlq DIR/dlq.ndjson`: its stderr and its dead letters as
/// (reason, payload).
fn replay_with_dlq(
    dir: &std::path::Path,
    files: &[&std::path::Path],
    out: &str,
) -> (String, Vec<(String, String)>) {
    let dlq = dir.join("dlq.ndjson");
    let mut args = vec!["replay"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    args.extend(["--out", out, "--dlq", dlq.to_str().unwrap()]);
    let stderr = tampines(&args);
    let dead = std::fs::read_to_string(&dlq)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let text = |k: &str| v[k].as_str().unwrap().to_string();
            (text("reason"), text("payload"))
        })
        .collect();
    (stderr, dead)
}

#[test]
fn bad_lines_are_dead_lettered_counted_and_never_fatal() {
    let dir = scratch("replay_dlq");
    let input = dir.join("in.ndjson");
    // Also a line that is not UTF-8, a blank line (not counted), a line of no-break spaces (not
    // JSON whitespace: dead-lettered, where it vanished uncounted) and Windows line ends (read
    // as the line without them): the file's reader thread parses them, as the source would.
    // The file starts with a byte order mark, which is dropped (it dead-lettered the snapshot).
    let text = INPUT.replacen(
        "not json at all\n",
        "not json at all\r\n@@ bad\n\n\u{a0}\u{a0}\n",
        1,
    );
    let mut bytes = [b"\xef\xbb\xbf".as_slice(), text.as_bytes()].concat();
    let at = bytes.windows(2).position(|w| w == b"@@").unwrap();
    bytes.splice(at..at + 2, [0xff, 0xfe]);
    std::fs::write(&input, bytes).unwrap();
    let (out, dlq) = (dir.join("out.ndjson"), dir.join("dlq.ndjson"));
    let stderr = tampines(&[
        "replay",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--dlq",
        dlq.to_str().unwrap(),
    ]);
    // 13 lines and a blank one: 8 bad (3 of them values so large that their sums could
    // overflow: they used to stop the job), 1 duplicate book event (seq 11 again), 1 repeated
    // trade id, 3 applied.
    assert!(
        stderr.contains("read 13 processed 3 dead-lettered 8 duplicates 2 late 0"),
        "{stderr}"
    );
    let dead: Vec<serde_json::Value> = std::fs::read_to_string(&dlq)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reasons: Vec<&str> = dead.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons.len(), 8);
    assert!(reasons[0].starts_with("not json"));
    assert_eq!(reasons[1], "invalid utf-8");
    assert!(reasons[2].starts_with("not json"));
    assert_eq!(dead[2]["payload"], "\u{a0}\u{a0}");
    let reasons = [&reasons[..2], &reasons[3..]].concat();
    assert_eq!(reasons[2], "trade quantity must be positive");
    assert_eq!(
        reasons[3],
        "trade value too large: price x qty must be below 10^20"
    );
    assert_eq!(
        reasons[4],
        "bad bids: too large: 1000000000000000 (prices and quantities must be below 10^15)"
    );
    assert_eq!(
        reasons[5],
        "bad price: too large: 79228162514264337593543950335 (prices and quantities must be below 10^15)"
    );
    assert_eq!(reasons[6], "unknown type \"quote\"");
    assert_eq!(dead[0]["payload"], "not json at all");
    assert_eq!(dead[1]["payload"], "\u{fffd}\u{fffd} bad");

    let marks = marks(&out);
    // Everything lands at T = 1000 (snapshot) and T = 1100, the mark of the highest `ts` applied
    // (a dead letter's `ts` moves no mark, but here 1095 is in it too: golden case
    // `dead_letters_move_no_watermark` tells the two apart).
    assert_eq!(
        marks.iter().map(|m| m.0).collect::<Vec<_>>(),
        vec![1000, 1100]
    );
    let book = marks[1]
        .1
        .iter()
        .find(|r| r["kind"] == "book" && r["resolution"] == 1)
        .unwrap();
    assert_eq!(book["bids"], serde_json::json!([["9.5", "2"]]));
    assert_eq!(book["seq"], 11);
    assert_eq!(book["status"], "ok");
    let ticker = marks[1].1.iter().find(|r| r["kind"] == "ticker").unwrap();
    assert_eq!(
        (ticker["count"].as_u64(), ticker["volume"].as_str()),
        (Some(1), Some("2"))
    );
    assert_eq!(
        (ticker["bid"].as_str(), ticker["ask"].as_str()),
        (Some("9.5"), Some("10.5"))
    );
}

/// With no option, a replay follows the contract's defaults: 100 ms timestamps, 1 s of
/// lateness, depth 20, resolutions 1, 5, 10 and 100, the seven intervals, a 24 h window and
/// 1,000 candles kept (a trade older than 1,000 minutes is too late). Each value below changes
/// when one default does.
#[test]
fn defaults_are_the_contracts() {
    let dir = scratch("replay_defaults");
    let input = dir.join("in.ndjson");
    let bids: Vec<String> = (76..=100)
        .rev()
        .map(|p| format!(r#"["{p}","1"]"#))
        .collect();
    let mut text = format!(
        r#"{{"type":"snapshot","exchange":"ex","symbol":"A","ts":1000,"seq":1,"bids":[{}],"asks":[["101","1"]]}}"#,
        bids.join(",")
    ) + "\n";
    // Read in this order: trade 3 is within the lateness of trade 2, 4 and 6 are late, 5 too
    // late (1,000 minutes or more below the highest ts read, 86,401,000; 6 is not).
    for (ts, id, price) in [
        (1000, 1, 100),
        (86_401_000, 2, 101),
        (86_400_500, 3, 102),
        (86_399_000, 4, 103),
        (25_000_000, 5, 105),
        (30_000_000, 6, 104),
    ] {
        text += &trade_a(ts, id, price);
    }
    std::fs::write(&input, text).unwrap();
    let out = dir.join("out.ndjson");
    let (stderr, dead) = replay_with_dlq(&dir, &[&input], out.to_str().unwrap());
    assert!(
        stderr.contains("read 7 processed 6 dead-lettered 1 duplicates 0 late 2"),
        "{stderr}"
    );
    let too_late = trade_a(25_000_000, 5, 105);
    assert_eq!(dead, [("too_late".into(), too_late.trim_end().into())]);

    let marks = marks(&out);
    let times: Vec<u64> = marks.iter().map(|(t, _)| *t).collect();
    // The first events; the closing of trade 1's candles of each interval (1m at 60 s, ...,
    // 1d at 86,400 s); trade 3 (with the late 4 and 6, at the earliest open timestamp); trade 2.
    let closings = [
        60_000, 300_000, 900_000, 1_800_000, 3_600_000, 14_400_000, 86_400_000,
    ];
    let expected: Vec<u64> = [1000]
        .into_iter()
        .chain(closings)
        .chain([86_400_500, 86_401_000])
        .collect();
    assert_eq!(times, expected);

    let first = &marks[0].1;
    let books: Vec<&serde_json::Value> = first.iter().filter(|r| r["kind"] == "book").collect();
    let resolutions: Vec<u64> = books
        .iter()
        .map(|b| b["resolution"].as_u64().unwrap())
        .collect();
    assert_eq!(resolutions, [1, 5, 10, 100]);
    let finest = books[0]["bids"].as_array().unwrap();
    assert_eq!(finest.len(), 20);
    assert_eq!(finest[19], serde_json::json!(["81", "1"]));
    let intervals: Vec<&str> = first
        .iter()
        .filter(|r| r["kind"] == "candle")
        .map(|r| r["interval"].as_str().unwrap())
        .collect();
    assert_eq!(intervals, ["1m", "5m", "15m", "30m", "1h", "4h", "1d"]);

    // The window (86,401,000 - 86,400,000, 86,401,000] leaves trade 1 out, exactly at its edge.
    let ticker = marks
        .last()
        .unwrap()
        .1
        .iter()
        .find(|r| r["kind"] == "ticker")
        .unwrap();
    assert_eq!(ticker["count"], 4);
    assert_eq!(
        (&ticker["first_id"], &ticker["open"]),
        (&"6".into(), &"104".into())
    );
    assert_eq!(
        (&ticker["last_id"], &ticker["last"]),
        (&"2".into(), &"101".into())
    );
}

/// Only a late trade is `too_late` (CONTRACT 2 names it among late events). With a lateness (1 s)
/// as long as the retention's span (one 1 s candle), a trade 1 s older than the highest ts whose
/// timestamp is still open applies there; one older still, whose timestamp closed, is too late.
/// The first was dead-lettered too, and the ticker missed it.
#[test]
fn only_a_late_trade_is_too_late() {
    let dir = scratch("replay_too_late_only_late");
    let input = dir.join("in.ndjson");
    let text = trade_a(2000, 1, 10) + &trade_a(1000, 2, 20) + &trade_a(500, 3, 30);
    std::fs::write(&input, text).unwrap();
    let (out, dlq) = (dir.join("out.ndjson"), dir.join("dlq.ndjson"));
    let stderr = tampines(&[
        "replay",
        input.to_str().unwrap(),
        "--intervals",
        "1s",
        "--candle-retention",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--dlq",
        dlq.to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("read 3 processed 2 dead-lettered 1 duplicates 0 late 0"),
        "{stderr}"
    );
    let dead = std::fs::read_to_string(&dlq).unwrap();
    let line = trade_a(500, 3, 30);
    assert_eq!(
        dead,
        format!(
            "{}\n",
            serde_json::json!({"reason": "too_late", "payload": line.trim_end()})
        )
    );
    let marks = marks(&out);
    let times: Vec<u64> = marks.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, [1000, 2000]);
    let ticker = marks[1].1.iter().find(|r| r["kind"] == "ticker").unwrap();
    assert_eq!(
        (&ticker["count"], &ticker["first_id"], &ticker["vwap"]),
        (&2.into(), &"2".into(), &"15".into())
    );
}

/// `--max-ahead-ms`: an event further than that after the wall clock is dead-lettered (`ts ahead
/// of the clock`), and the input's later events are on time; one within it applies. Without it
/// the far one moves the watermark to its time, and the next trade is `too_late` (README, Known
/// limitations).
#[test]
fn an_event_far_ahead_of_the_clock_is_dead_lettered_with_max_ahead_ms() {
    let dir = scratch("replay_max_ahead");
    let input = dir.join("in.ndjson");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // Ten minutes ahead, within the hour allowed: a mark of its own, after the others.
    let soon = now + 600_000;
    let far = trade_a(9_000_000_000_000_000_000, 2, 11);
    let text = trade_a(1000, 1, 10) + &far + &trade_a(2000, 3, 12) + &trade_a(soon, 4, 14);
    std::fs::write(&input, text).unwrap();
    let run = |extra: &[&str]| {
        let (out, dlq) = (dir.join("out.ndjson"), dir.join("dlq.ndjson"));
        let mut args = vec!["replay", input.to_str().unwrap(), "--intervals", "1s"];
        args.extend(extra);
        args.extend([
            "--out",
            out.to_str().unwrap(),
            "--dlq",
            dlq.to_str().unwrap(),
        ]);
        let stderr = tampines(&args);
        let dead: Vec<serde_json::Value> = std::fs::read_to_string(&dlq)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (stderr, dead, marks(&out))
    };
    let (stderr, dead, marks) = run(&["--max-ahead-ms", "3600000"]);
    assert!(
        stderr.contains("read 4 processed 3 dead-lettered 1 duplicates 0 late 0"),
        "{stderr}"
    );
    assert_eq!(
        dead,
        [serde_json::json!({
            "reason": "ts ahead of the clock (--max-ahead-ms)",
            "payload": far.trim_end()
        })]
    );
    // 3000: the 1 s candle of 2000 closes; a day after each trade, it leaves the window.
    let times: Vec<u64> = marks.iter().map(|(t, _)| *t).collect();
    let soon_mark = soon.div_ceil(100) * 100;
    assert_eq!(times, [1000, 2000, 3000, 86_401_000, 86_402_000, soon_mark]);
    let ticker = marks[1].1.iter().find(|r| r["kind"] == "ticker").unwrap();
    assert_eq!(
        (&ticker["count"], &ticker["last_id"], &ticker["vwap"]),
        (&2.into(), &"3".into(), &"11".into())
    );

    let (stderr, dead, marks) = run(&[]);
    assert!(
        stderr.contains("read 4 processed 2 dead-lettered 2 duplicates 0 late 0"),
        "{stderr}"
    );
    let reasons: Vec<&str> = dead.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["too_late", "too_late"]);
    assert_eq!(marks.last().unwrap().0, 9_000_000_000_000_000_000);
}

/// `--tick-size EXCHANGE:SYMBOL=STEP` groups that symbol's levels by the step (bids down, asks
/// up) at resolution 1, and no other symbol's; without it the tick comes from the prices. A
/// comma-separated list of them is a list.
#[test]
fn a_tick_size_groups_its_symbol_only() {
    let dir = scratch("replay_tick_size");
    let input = dir.join("in.ndjson");
    let book = |symbol: &str| {
        format!(
            r#"{{"type":"snapshot","exchange":"ex","symbol":"{symbol}","ts":1000,"seq":1,"bids":[["100.37","1"]],"asks":[["100.41","1"]]}}"#
        ) + "\n"
    };
    std::fs::write(&input, book("A") + &book("B")).unwrap();
    let sides = |extra: &[&str]| -> Vec<(String, String, String)> {
        let out = dir.join("out.ndjson");
        let args = ["replay", input.to_str().unwrap(), "--resolutions", "1"];
        tampines(&[&args[..], extra, &["--out", out.to_str().unwrap()]].concat());
        marks(&out)[0]
            .1
            .iter()
            .map(|r| {
                let price = |side: &str| r[side][0][0].as_str().unwrap().to_string();
                (
                    r["symbol"].as_str().unwrap().into(),
                    price("bids"),
                    price("asks"),
                )
            })
            .collect()
    };
    let own = |s: &str| (s.to_string(), "100.37".to_string(), "100.41".to_string());
    assert_eq!(
        sides(&["--tick-size", "ex:A=0.05"]),
        [("A".into(), "100.35".into(), "100.45".into()), own("B")]
    );
    assert_eq!(sides(&[]), [own("A"), own("B")]);
    assert_eq!(sides(&["--tick-size", "A:ex=0.05"]), [own("A"), own("B")]);
    // A list, as `--resolutions` takes one: it was read whole, as a tick for the symbol
    // `A=0.05,ex:B` of `ex`, and changed nothing.
    assert_eq!(
        sides(&["--tick-size", "ex:A=0.05,ex:B=0.2"]),
        [
            ("A".into(), "100.35".into(), "100.45".into()),
            ("B".into(), "100.2".into(), "100.6".into())
        ]
    );
}

/// The inferred tick counts every price string of the symbol's book events, a level deleted
/// (size 0) included (CONTRACT 3): a delete at 10.25 makes the tick 0.01, so resolution 10
/// groups by 0.1 and 10.5 / 11.5 stay as they are. Leaving deletes out (tick 0.1, groups of 1,
/// 10 / 12) passed the harness, whose finer prices rarely come first in a delete.
#[test]
fn a_deleted_level_s_price_refines_the_tick() {
    let dir = scratch("replay_tick_from_delete");
    let input = dir.join("in.ndjson");
    std::fs::write(
        &input,
        concat!(
            r#"{"type":"snapshot","exchange":"ex","symbol":"A","ts":1000,"seq":1,"bids":[["10.5","1"]],"asks":[["11.5","1"]]}"#,
            "\n",
            r#"{"type":"book","exchange":"ex","symbol":"A","ts":1000,"seq":2,"bids":[["10.25","0"]],"asks":[]}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = dir.join("out.ndjson");
    let args = ["replay", input.to_str().unwrap(), "--resolutions", "10"];
    tampines(&[&args[..], &["--out", out.to_str().unwrap()]].concat());
    let marks = marks(&out);
    let book = &marks[0].1[0];
    assert_eq!(
        (&book["resolution"], &book["bids"], &book["asks"]),
        (&json!(10), &json!([["10.5", "1"]]), &json!([["11.5", "1"]])),
        "{book}"
    );
}

/// Copies of one trade in two files: the first in (timestamp, input, offset) order counts,
/// whatever the worker count, and the other is a duplicate.
#[test]
fn the_first_copy_of_a_trade_by_timestamp_then_input_counts() {
    let dir = scratch("replay_first_copy");
    let trade = |name: &str, ts: u64, price: &str| {
        let path = dir.join(name);
        std::fs::write(&path, trade_a(ts, 1, price)).unwrap();
        path.to_str().unwrap().to_string()
    };
    let a = trade("a.ndjson", 1050, "20");
    let b = trade("b.ndjson", 1020, "10");
    let later_a = trade("later_a.ndjson", 1150, "20");
    // Both at mark 1100: the first input's copy; a's at 1200: b's, the earlier timestamp.
    for (files, open, open_ts) in [
        ([&a, &b], "20", 1050),
        ([&b, &a], "10", 1020),
        ([&later_a, &b], "10", 1020),
    ] {
        for workers in ["1", "2"] {
            let out = dir.join("out.ndjson");
            let stderr = tampines(&[
                "replay",
                files[0],
                files[1],
                "-w",
                workers,
                "--out",
                out.to_str().unwrap(),
            ]);
            let context = format!("{files:?} -w {workers}");
            assert!(
                stderr.contains("read 2 processed 1 dead-lettered 0 duplicates 1"),
                "{context}: {stderr}"
            );
            let marks = marks(&out);
            let ticker = marks[0].1.iter().find(|r| r["kind"] == "ticker").unwrap();
            assert_eq!(marks[0].0, 1100, "{context}");
            assert_eq!(ticker["open"], open, "{context}");
            assert_eq!(ticker["open_ts"], open_ts, "{context}");
            assert_eq!(ticker["count"], 1, "{context}");
        }
    }
}

/// Within a timestamp, one symbol's events from several files apply in (input, offset) order:
/// the first file's before the second's, whatever their offsets. Here the first file's copy of
/// a trade and its snapshot come after a line of another symbol (later offsets than the second
/// file's), and all of them fall in mark 1100: the first file's copy of the trade counts, and the
/// second file's snapshot applies last. The repeated-trade test above has each copy at offset
/// 0, so ordering by offset first passed it.
#[test]
fn events_of_a_timestamp_apply_by_input_then_offset() {
    let dir = scratch("replay_input_then_offset");
    let snapshot = |ts: u64, bid: u32| {
        format!(
            r#"{{"type":"snapshot","exchange":"ex","symbol":"A","ts":{ts},"seq":1,"bids":[["{bid}","1"]],"asks":[["{}","1"]]}}"#,
            bid + 100
        ) + "\n"
    };
    let other = trade_a(1010, 7, "5").replace(r#""symbol":"A""#, r#""symbol":"B""#);
    let first = dir.join("first.ndjson");
    let second = dir.join("second.ndjson");
    std::fs::write(
        &first,
        other + &trade_a(1050, 1, "20") + &snapshot(1060, 10),
    )
    .unwrap();
    std::fs::write(&second, trade_a(1020, 1, "10") + &snapshot(1030, 20)).unwrap();
    for workers in ["1", "2"] {
        let out = dir.join("out.ndjson");
        let (first, second) = (first.to_str().unwrap(), second.to_str().unwrap());
        let stderr = tampines(&[
            "replay",
            first,
            second,
            "-w",
            workers,
            "--resolutions",
            "1",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(
            stderr.contains("read 5 processed 4 dead-lettered 0 duplicates 1"),
            "-w {workers}: {stderr}"
        );
        let marks = marks(&out);
        assert_eq!(marks[0].0, 1100, "-w {workers}");
        let of_a = |kind: &str| {
            (marks[0].1.iter())
                .find(|r| r["kind"] == kind && r["symbol"] == "A")
                .unwrap_or_else(|| panic!("no {kind} of A: {:?}", marks[0]))
        };
        let ticker = of_a("ticker");
        assert_eq!(
            (&ticker["open"], &ticker["open_ts"], &ticker["count"]),
            (&json!("20"), &json!(1050), &json!(1)),
            "-w {workers}: {ticker}"
        );
        let book = of_a("book");
        assert_eq!(book["bids"], json!([["20", "1"]]), "-w {workers}: {book}");
        assert_eq!(book["asks"], json!([["120", "1"]]), "-w {workers}: {book}");
    }
}

/// A mark's records are in the README's order (books by resolution, tickers, candles by
/// interval length) whatever order the options list them in.
#[test]
fn records_of_a_mark_follow_sizes_not_the_options_order() {
    let dir = scratch("replay_record_order");
    let input = dir.join("in.ndjson");
    std::fs::write(
        &input,
        concat!(
            r#"{"type":"trade","exchange":"ex","symbol":"A","ts":1000,"id":"1","price":"10","qty":"1","side":"buy"}"#,
            "\n",
            r#"{"type":"snapshot","exchange":"ex","symbol":"A","ts":1000,"seq":1,"bids":[["9","1"]],"asks":[["11","1"]]}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = dir.join("out.ndjson");
    tampines(&[
        "replay",
        input.to_str().unwrap(),
        "--resolutions",
        "10,1",
        "--intervals",
        "1h,1m",
        "--out",
        out.to_str().unwrap(),
    ]);
    let marks = marks(&out);
    let order: Vec<String> = marks[0]
        .1
        .iter()
        .map(|r| match r["kind"].as_str().unwrap() {
            "book" => format!("book {}", r["resolution"]),
            "candle" => format!("candle {}", r["interval"].as_str().unwrap()),
            kind => kind.to_string(),
        })
        .collect();
    assert_eq!(
        order,
        ["book 1", "book 10", "ticker", "candle 1m", "candle 1h"]
    );
}

/// Blank lines are JSON whitespace only (space, tab, CR), skipped and not counted; a form feed
/// or a trailing no-break space is not JSON (dead-lettered), trailing JSON whitespace is. A
/// byte order mark is dropped at the start of a file, gzipped too, and nowhere else.
#[test]
fn blank_lines_and_byte_order_marks() {
    let dir = scratch("replay_blank_lines");
    let trade = |id: u32| trade_a(1000, id, 10).trim_end().to_string();
    let lines = [
        trade(1),
        "\t \r".into(),
        " ".into(),
        "\r".into(),
        "\u{c}".into(),
        trade(2) + "\u{a0}",
        trade(1) + "\t ",
        format!("\u{feff}{}", trade(3)),
    ];
    let plain = dir.join("blank.ndjson");
    std::fs::write(&plain, lines.join("\n") + "\n").unwrap();
    let gz = dir.join("bom.ndjson.gz");
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    writeln!(encoder, "\u{feff}{}", trade(4)).unwrap();
    encoder.finish().unwrap();
    let (stderr, dead) = replay_with_dlq(&dir, &[&plain, &gz], "/dev/null");
    // Trades 1 and 4 processed, 1 again a duplicate; the form feed, trade 2 and trade 3 dead.
    assert!(
        stderr.contains("read 6 processed 2 dead-lettered 3 duplicates 1"),
        "{stderr}"
    );
    let not_json = |column: u32| format!("not json: expected value at line 1 column {column}");
    assert_eq!(
        dead,
        [
            (not_json(1), "\u{c}".to_string()),
            (
                "not json: trailing characters at line 1 column 101".to_string(),
                trade(2) + "\u{a0}"
            ),
            (not_json(1), format!("\u{feff}{}", trade(3))),
        ]
    );
}

/// A line over 16 MiB is dead-lettered with its length and its first MiB, and the lines after
/// it are read (README, files); the limits themselves, which the unit tests set lower.
#[test]
fn a_line_over_16_mib_is_dead_lettered_and_reading_goes_on() {
    let dir = scratch("replay_long_line");
    let input = dir.join("in.ndjson");
    let long = 20 << 20;
    let mut bytes = vec![b'x'; long];
    bytes.push(b'\n');
    bytes.extend_from_slice(trade_a(1000, 1, 10).as_bytes());
    std::fs::write(&input, bytes).unwrap();
    let (stderr, dead) = replay_with_dlq(&dir, &[&input], "/dev/null");
    assert!(
        stderr.contains("read 2 processed 1 dead-lettered 1 duplicates 0"),
        "{stderr}"
    );
    let reason = format!("line too long: {long} bytes (at most {})", 16 << 20);
    assert_eq!(dead, [(reason, "x".repeat(1 << 20))]);
}

#[test]
fn output_is_identical_for_1_2_and_4_workers() {
    let dir = scratch("replay_workers");
    let files: Vec<String> = (0..3)
        .map(|i| {
            let f = dir.join(format!("in{i}.ndjson"));
            gen_events(&f, 4, 3000, "0.02", i, &["--exchange", &format!("x{i}")])
        })
        .collect();
    let run = |w: &str| {
        let out = dir.join(format!("out{w}.ndjson"));
        let mut args = vec!["replay"];
        args.extend(files.iter().map(String::as_str));
        args.extend(["-w", w, "--out", out.to_str().unwrap()]);
        tampines(&args);
        std::fs::read_to_string(out).unwrap()
    };
    let one = run("1");
    assert!(one.lines().count() > 1000);
    assert_eq!(one, run("2"));
    assert_eq!(one, run("4"));
}

/// Two processes of one job print exactly the bytes one process does, `--out -` included: the
/// connection set-up says nothing on stdout (timely's own reports its wait there).
#[test]
fn two_processes_write_to_stdout_exactly_what_one_process_does() {
    let dir = scratch("replay_processes");
    let input = gen_events(&dir.join("in.ndjson"), 6, 4000, "0.02", 3, &[]);
    // A bad line in each file, read by a worker of each process: both dead letters are process
    // 0's to write.
    let mut text = std::fs::read_to_string(&input).unwrap();
    text.push_str("not json\n");
    std::fs::write(&input, text).unwrap();
    let bad = dir.join("bad.ndjson");
    std::fs::write(&bad, "not json\n").unwrap();
    let files = [input.as_str(), bad.to_str().unwrap()];
    let one = dir.join("one.ndjson");
    let stderr = tampines(
        &[
            &["replay"],
            &files[..],
            &["-w", "2", "--out", one.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(stderr.contains("dead-lettered 2 "), "{stderr}");
    let one = std::fs::read_to_string(one).unwrap();
    assert!(one.lines().count() > 1000, "{}", one.lines().count());
    let hostfile = common::two_hosts(&dir);
    let dlq = |p: &str| dir.join(format!("dlq{p}.ndjson"));
    let spawn = |p: &str| {
        Command::new(env!("CARGO_BIN_EXE_tampines"))
            .arg("replay")
            .args(files)
            .args(["-w", "1", "-n", "2", "-p", p, "-h"])
            .arg(&hostfile)
            .args(["--out", "-", "--dlq"])
            .arg(dlq(p))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn process")
    };
    // The later process first: it waits for the earlier one to listen.
    let p1 = spawn("1");
    let p0 = spawn("0");
    let outputs = wait_job("replay on 2 processes", vec![p0, p1]);
    let (o0, o1) = (&outputs[0], &outputs[1]);
    assert_eq!(String::from_utf8_lossy(&o0.stdout), one);
    assert!(
        o1.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o1.stdout)
    );
    let dead = std::fs::read_to_string(dlq("0")).unwrap();
    let line =
        "{\"reason\":\"not json: expected ident at line 1 column 2\",\"payload\":\"not json\"}\n";
    assert_eq!(dead, line.repeat(2));
    let other = std::fs::read_to_string(dlq("1")).unwrap_or_default();
    assert!(other.is_empty(), "process 1 wrote dead letters: {other}");
}

/// What both processes of a job whose process 1 differs from process 0 say last.
const MISMATCH: &str = "tampines: failed to connect the processes: process 1 was started with other options than process 0 (or another build, another -n, or a hostfile listing the processes in another order): every process of a job needs the same ones";

/// Processes 0 and 1 of a replay of `events` across `hostfile`, given `options` each and both
/// started before either is waited for: each must end within 60 s with exit 1, saying
/// [`MISMATCH`] last.
fn both_refused(events: &str, hostfile: &std::path::Path, options: [&[&str]; 2]) {
    let processes = [0, 1].map(|p| {
        Killed(
            Command::new(env!("CARGO_BIN_EXE_tampines"))
                .args(["replay", events, "-p", &p.to_string(), "-h"])
                .arg(hostfile)
                .args(options[p])
                .args(["--out", "/dev/null"])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    });
    for (p, process) in processes.into_iter().enumerate() {
        let (code, said) = ended_within_60s(process, &format!("process {p}"));
        assert_eq!(code, Some(1), "process {p}: {said}");
        assert_eq!(said.lines().last(), Some(MISMATCH), "process {p}: {said}");
    }
}

/// Processes that count the job's processes otherwise (`-n 2` and `-n 3`) are refused when they
/// connect: process 0 took process 1 in and formed the job, and process 1 waited for a process 2,
/// both for ever and silently.
#[test]
fn processes_counted_otherwise_are_refused() {
    let dir = scratch("replay_other_counts");
    let events = gen_events(&dir.join("events.ndjson"), 2, 200, "0.01", 1, &[]);
    let hostfile = common::two_hosts(&dir);
    let third = format!("127.0.0.1:{}\n", common::free_port());
    let hosts = std::fs::read_to_string(&hostfile).unwrap() + &third;
    std::fs::write(&hostfile, hosts).unwrap();
    both_refused(&events, &hostfile, [&["-n", "2"], &["-n", "3"]]);
}

/// Processes given other worker counts (`-w 1` and `-w 2`) are refused when they connect, both
/// with one line: timely assumes every process runs as many workers.
#[test]
fn processes_with_other_worker_counts_are_refused() {
    let dir = scratch("replay_other_workers");
    let events = gen_events(&dir.join("events.ndjson"), 2, 200, "0.01", 1, &[]);
    let hostfile = common::two_hosts(&dir);
    both_refused(
        &events,
        &hostfile,
        [&["-n", "2", "-w", "1"], &["-n", "2", "-w", "2"]],
    );
}

/// Processes given different input lists are refused when they connect, both with one line,
/// before anything is read: each worker reads the files of its places in the list, so a file
/// missing from one process's list would have been read by no worker, silently.
#[test]
fn processes_with_other_inputs_are_refused() {
    let dir = scratch("replay_other_inputs");
    let a = gen_events(&dir.join("a.ndjson"), 2, 200, "0.01", 1, &[]);
    let b = gen_events(&dir.join("b.ndjson"), 2, 300, "0.01", 2, &[]);
    // One file missing from a list; the same files in another order.
    for (first, second) in [(vec![&a, &b], vec![&a]), (vec![&a, &b], vec![&b, &a])] {
        let hostfile = common::two_hosts(&dir);
        let spawn = |p: &str, files: &[&String]| {
            let hostfile = hostfile.clone();
            let p = p.to_string();
            let files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
            std::thread::spawn(move || {
                Command::new(env!("CARGO_BIN_EXE_tampines"))
                    .arg("replay")
                    .args(&files)
                    .args(["-w", "1", "-n", "2", "-p", &p, "-h"])
                    .arg(&hostfile)
                    .args(["--out", "/dev/null"])
                    .output()
                    .expect("run process")
            })
        };
        let p1 = spawn("1", &second);
        let p0 = spawn("0", &first);
        for (p, out) in [(0, p0.join().unwrap()), (1, p1.join().unwrap())] {
            let said = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(1),
                "process {p} of {second:?}: {said}"
            );
            assert_eq!(said.lines().last(), Some(MISMATCH), "process {p}: {said}");
        }
    }
}

/// A pipe given to a process that does not read it is refused: given "their own" streams, two
/// processes read one and left the other unread, exit 0 (input 0 is process 1's at `-w 1`).
#[test]
fn a_pipe_another_process_reads_is_refused() {
    let dir = scratch("replay_pipe_elsewhere");
    let hostfile = common::two_hosts(&dir);
    let process = Command::new(env!("CARGO_BIN_EXE_tampines"))
        .args([
            "replay",
            "/dev/stdin",
            "-w",
            "1",
            "-n",
            "2",
            "-p",
            "0",
            "-h",
        ])
        .arg(&hostfile)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, said) = ended_within_60s(Killed(process), "process 0");
    assert_eq!(code, Some(2), "{said}");
    assert_eq!(
        said,
        "tampines: /dev/stdin is not a regular file (a pipe?), and process 1 reads input 0, not this one (0): it would go unread; give it to process 1, and a regular file (an empty one will do) at its place here\n"
    );
}

/// The layout that refusal asks for works: the pipe on its reader's process (1 at `-w 1`), an
/// empty regular file at its place on process 0, which writes what one process writes from the
/// same lines in a file. (The processes used to build different dataflows when one was given a
/// pipe and the other a file, and both waited for ever.)
#[test]
fn a_pipe_given_to_its_reader_with_a_file_elsewhere_is_read() {
    let dir = scratch("replay_pipe_on_its_reader");
    let hostfile = common::two_hosts(&dir);
    let (empty, file) = (dir.join("empty.ndjson"), dir.join("input.ndjson"));
    std::fs::write(&empty, "").unwrap();
    std::fs::write(&file, INPUT).unwrap();
    let process = |p: &str, input: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_tampines"))
            .arg("replay")
            .arg(input)
            .args(["-w", "1", "-n", "2", "-p", p, "-h"])
            .arg(&hostfile)
            .args(["--out", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut reader = process("1", std::path::Path::new("/dev/stdin"));
    let writer = process("0", &empty);
    reader
        .stdin
        .take()
        .unwrap()
        .write_all(INPUT.as_bytes())
        .unwrap();
    let (send, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(wait_job("a pipe on process 1", vec![writer, reader]));
    });
    let outputs = done
        .recv_timeout(Duration::from_secs(60))
        .expect("the processes never finished");
    let one = Command::new(env!("CARGO_BIN_EXE_tampines"))
        .args(["replay", file.to_str().unwrap(), "--out", "-"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&one.stdout).contains(r#""kind":"ticker""#));
    assert_eq!(outputs[0].stdout, one.stdout);
}

/// The exit status and stderr of `process`, which must end within 60 s (polled: a process that
/// waits for its peers for ever fails the test instead of holding it).
fn ended_within_60s(mut process: Killed, what: &str) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while process.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "{what} still runs after 60 s");
        std::thread::sleep(Duration::from_millis(20)); // polling a child, with a deadline
    }
    let mut said = String::new();
    let stderr = process.0.stderr.as_mut().unwrap();
    stderr.read_to_string(&mut said).unwrap();
    (process.0.wait().unwrap().code(), said)
}

/// When another process of the job stops, a process exits with status 1 (CONTRACT section 5: a
/// fatal runtime error) and says why on its last line, not with a panic's 101.
#[test]
fn a_process_whose_peer_stops_exits_1() {
    let dir = scratch("replay_peer_stops");
    let hostfile = common::two_hosts(&dir);
    // Input from stdin, held open and empty: the job never ends by itself. Process 1 reads it;
    // process 0 holds an empty file at its place.
    let empty = dir.join("empty.ndjson");
    std::fs::write(&empty, "").unwrap();
    let spawn = |p: &str| {
        let input = if p == "1" {
            "/dev/stdin"
        } else {
            empty.to_str().unwrap()
        };
        Command::new(env!("CARGO_BIN_EXE_tampines"))
            .args(["replay", input, "-w", "1", "-n", "2", "-p", p, "-h"])
            .arg(&hostfile)
            .args(["--out", "/dev/null"])
            .env("RUST_LOG", "tampines::cluster=info")
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn process")
    };
    let mut p0 = Killed(spawn("0"));
    let mut p1 = Killed(spawn("1"));
    let stderr = p0.0.stderr.take().unwrap();
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let next =
        |what: &str| match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => Some(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("process 0: {what}"),
        };
    while !next("no word of being connected")
        .expect("process 0 ended before it was connected")
        .contains("connected to the job's processes")
    {}
    p1.0.kill().unwrap();
    p1.0.wait().unwrap();
    let mut p1_said = String::new();
    p1.0.stderr
        .take()
        .unwrap()
        .read_to_string(&mut p1_said)
        .unwrap();
    let mut said = Vec::new();
    while let Some(line) = next("still running after its peer stopped") {
        said.push(line);
    }
    assert_eq!(p0.0.wait().unwrap().code(), Some(1), "{said:#?}\n{p1_said}");
    assert_eq!(
        said.last().map(String::as_str),
        Some("tampines: the connection between the job's processes broke (has one stopped? see above)"),
        "{said:#?}\n{p1_said}"
    );
}

/// A process whose host vanishes (power lost, the network cut: no reset, no packet any more)
/// ends the job as one that stops does, within about 30 s (`cluster::SILENCE`): the processes'
/// connections use TCP keepalive and `TCP_USER_TIMEOUT`. Both processes run in a network
/// namespace of their own, whose loopback is taken down once results flow: with nothing more to
/// send (keepalive finds the silence), and with events still coming (data left unacknowledged).
/// Without them both processes waited for ever, silent. Runs in a [`Namespaced`] script.
#[cfg(target_os = "linux")]
#[test]
fn processes_whose_network_goes_silent_exit_1_within_a_minute() {
    std::thread::scope(|s| {
        let idle = s.spawn(|| network_goes_silent("idle", false));
        let busy = s.spawn(|| network_goes_silent("busy", true));
        idle.join().unwrap();
        busy.join().unwrap();
    });
}

/// A job of two processes in a network namespace of its own, process 1 reading stdin; once
/// process 0 has written a mark, the namespace's loopback goes down (and, when `busy`, more
/// events follow). Both processes must exit 1 within 120 s, saying the connection broke, and
/// timely's own line must give TCP's reason.
#[cfg(target_os = "linux")]
fn network_goes_silent(case: &str, busy: bool) {
    let dir = scratch(&format!("replay_network_silent_{case}"));
    let events = gen_events(&dir.join("events.ndjson"), 10, 4_000, "0.02", 3, &[]);
    let events = std::fs::read_to_string(events).unwrap();
    let lines: Vec<&str> = events.lines().collect();
    let (first, rest) = lines.split_at(lines.len() / 2);
    let (first, rest) = (first.join("\n") + "\n", rest.join("\n") + "\n");
    let hostfile = common::two_hosts(&dir);
    std::fs::write(dir.join("empty.ndjson"), "").unwrap();
    let down = dir.join("down");
    common::mkfifo(&down);
    // sh gives a background job /dev/null for stdin: process 1 reads the script's through fd 3.
    let script = r#"
        ip link set lo up || exit 97
        "$BIN" replay "$DIR/empty.ndjson" -w 1 -n 2 -p 0 -h "$HOSTS" --out "$DIR/out.ndjson" 2>"$DIR/err0" &
        p0=$!
        exec 3<&0
        "$BIN" replay /dev/stdin -w 1 -n 2 -p 1 -h "$HOSTS" --out /dev/null <&3 2>"$DIR/err1" &
        p1=$!
        read -r _ <"$DIR/down"
        ip link set lo down || exit 98
        wait $p0; s0=$?
        wait $p1; s1=$?
        echo "$s0 $s1"
    "#;
    let mut job = Namespaced::start(script, &dir, &[("HOSTS", hostfile.as_os_str())]);
    let mut stdin = job.0.stdin.take().unwrap();
    stdin.write_all(first.as_bytes()).unwrap();
    let out = dir.join("out.ndjson");
    job.wait_for(
        Duration::from_secs(60),
        &format!("{case}: a mark written"),
        || std::fs::read_to_string(&out).is_ok_and(|o| o.contains(r#""kind":"progress""#)),
    );
    std::fs::write(&down, "\n").unwrap();
    // Events after the network went: process 1 sends process 0 its share, which nothing
    // acknowledges. Written from a thread: once process 1 stops reading, the pipe fills.
    let writer = std::thread::spawn(move || {
        if busy {
            let _ = stdin.write_all(rest.as_bytes());
        }
        stdin
    });
    let statuses = job.ended(
        Duration::from_secs(120),
        &format!("{case}: the processes, after their network went silent,"),
    );
    drop(writer.join().unwrap());
    let said = |p: &str| std::fs::read_to_string(dir.join(format!("err{p}"))).unwrap();
    assert_eq!(statuses, "1 1", "{case}: {}\n{}", said("0"), said("1"));
    for p in ["0", "1"] {
        let said = said(p);
        assert_eq!(
            said.lines().last(),
            Some("tampines: the connection between the job's processes broke (has one stopped? see above)"),
            "{case}, process {p}: {said}"
        );
        assert!(
            said.contains("Connection timed out"),
            "{case}, process {p}: not TCP's timeout: {said}"
        );
    }
}

/// A process that dials another whose host drops its packets silently (not up yet, or cut off)
/// says so every 6 s, and connects within seconds once it is reachable: each try to connect
/// gives up after 3 s. `connect` waited through the kernel's retries, about 130 s, silent, and
/// connected only at its next retry, up to a minute after the network was back. In a
/// [`Namespaced`] script, process 1 dials process 0 at 10.66.0.2, which a veth link sends to a
/// hardware address nobody has; then the address becomes local, where process 0 listens (on
/// 0.0.0.0: the processes' hostfiles may differ in addresses).
#[cfg(target_os = "linux")]
#[test]
fn a_process_dialling_an_unreachable_one_says_so_and_connects_once_it_is_reachable() {
    let dir = scratch("replay_dial_unreachable");
    let input = dir.join("input.ndjson");
    std::fs::write(&input, INPUT).unwrap();
    let port = common::free_port();
    let (p1_port, hosts0, hosts1) = (common::free_port(), dir.join("hosts0"), dir.join("hosts1"));
    std::fs::write(&hosts0, format!("0.0.0.0:{port}\n127.0.0.1:{p1_port}\n")).unwrap();
    std::fs::write(&hosts1, format!("10.66.0.2:{port}\n127.0.0.1:{p1_port}\n")).unwrap();
    let reachable = dir.join("reachable");
    common::mkfifo(&reachable);
    let script = r#"
        ip link set lo up || exit 97
        ip link add va type veth peer name vb || exit 97
        ip link set va up && ip link set vb up && ip addr add 10.66.0.1/24 dev va || exit 97
        ip neigh replace 10.66.0.2 lladdr 02:00:00:00:00:99 dev va nud permanent || exit 97
        "$BIN" replay "$DIR/input.ndjson" -w 1 -n 2 -p 0 -h "$DIR/hosts0" --out "$DIR/out.ndjson" 2>"$DIR/err0" &
        p0=$!
        "$BIN" replay "$DIR/input.ndjson" -w 1 -n 2 -p 1 -h "$DIR/hosts1" 2>"$DIR/err1" &
        p1=$!
        read -r _ <"$DIR/reachable"
        ip addr add 10.66.0.2/32 dev lo || exit 98
        wait $p0; s0=$?
        wait $p1; s1=$?
        echo "$s0 $s1"
    "#;
    let mut job = Namespaced::start(script, &dir, &[]);
    let err1 = dir.join("err1");
    job.wait_for(Duration::from_secs(30), "process 1 saying it waits", || {
        std::fs::read_to_string(&err1).is_ok_and(|e| e.contains("waiting for a process to listen"))
    });
    let waiting = std::fs::read_to_string(&err1).unwrap();
    assert!(waiting.contains(r#"address="10.66.0.2:"#), "{waiting}");
    assert!(waiting.contains("timed out"), "{waiting}");
    std::fs::write(&reachable, "\n").unwrap();
    let statuses = job.ended(
        Duration::from_secs(30),
        "the processes, after process 0 became reachable,",
    );
    let said = |p: &str| std::fs::read_to_string(dir.join(format!("err{p}"))).unwrap();
    assert_eq!(statuses, "0 0", "{}\n{}", said("0"), said("1"));
    let one = Command::new(env!("CARGO_BIN_EXE_tampines"))
        .args(["replay", input.to_str().unwrap(), "--out", "-"])
        .output()
        .unwrap();
    assert_eq!(std::fs::read(dir.join("out.ndjson")).unwrap(), one.stdout);
}

/// A script that `sh` runs in a network namespace of its own (`unshare -n` as root, else
/// `unshare -rn`, where the system allows user namespaces unprivileged; the test fails, saying
/// so, where neither works), as the leader of a process group, all of which is killed when
/// dropped. It sees `BIN` (the binary) and `DIR`, with `RUST_BACKTRACE=0` and no `RUST_LOG`;
/// its stdin, stdout and stderr are pipes. `ip` (iproute2) is installed when missing.
#[cfg(target_os = "linux")]
struct Namespaced(std::process::Child);

#[cfg(target_os = "linux")]
impl Namespaced {
    fn start(script: &str, dir: &std::path::Path, env: &[(&str, &std::ffi::OsStr)]) -> Namespaced {
        use std::os::unix::process::CommandExt;
        static IP: std::sync::Once = std::sync::Once::new();
        IP.call_once(|| {
            common::ensure_package("iproute2", || {
                Command::new("ip")
                    .arg("-V")
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
        });
        let unshare = [&["-n"][..], &["-r", "-n"][..]]
            .into_iter()
            .find(|options| {
                Command::new("unshare")
                    .args(*options)
                    .arg("true")
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .expect("cannot make a network namespace (unshare -n needs root; unshare -rn, user namespaces)");
        let child = Command::new("unshare")
            .args(unshare)
            .args(["sh", "-c", script])
            .process_group(0)
            .env("BIN", env!("CARGO_BIN_EXE_tampines"))
            .env("DIR", dir)
            .envs(env.iter().copied())
            .env("RUST_BACKTRACE", "0")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux)");
        Namespaced(child)
    }

    /// Polls `done` until it holds: the test fails after `within`, or with what the script
    /// said if it ends first.
    fn wait_for(&mut self, within: Duration, what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + within;
        while !done() {
            if let Some(status) = self.0.try_wait().unwrap() {
                let mut said = String::new();
                let stderr = self.0.stderr.as_mut().unwrap();
                stderr.read_to_string(&mut said).unwrap();
                panic!("{what}: the namespace's script ended first ({status}): {said}");
            }
            assert!(Instant::now() < deadline, "{what}: not within {within:?}");
            std::thread::sleep(Duration::from_millis(20)); // polling, with a deadline
        }
    }

    /// What the script printed (its processes' exit statuses), once it has ended: the test
    /// fails if `what` still runs after `within`.
    fn ended(&mut self, within: Duration, what: &str) -> String {
        let deadline = Instant::now() + within;
        while self.0.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "{what} still run after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20)); // polling a child, with a deadline
        }
        let mut printed = String::new();
        let stdout = self.0.stdout.as_mut().unwrap();
        stdout.read_to_string(&mut printed).unwrap();
        printed.trim().to_string()
    }
}

#[cfg(target_os = "linux")]
impl Drop for Namespaced {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}

/// The exit status of `child`, which must end within 60 s (polled, as [`ended_within_60s`]).
fn exit_within_60s(mut child: Killed, what: &str) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < deadline, "{what} still runs after 60 s");
        std::thread::sleep(Duration::from_millis(20)); // polling a child, with a deadline
    }
}

/// A job whose stderr has no reader any more (a supervisor's log pipe gone, `2>&1 | head`)
/// computes and writes everything, and exits 0: tracing's complaint about the failed write was
/// an `eprintln!`, which panicked the logging worker (the other waited for it for ever), and
/// the closing line's `eprintln!` exited 101.
#[test]
fn a_job_whose_stderr_reader_has_gone_writes_everything_and_exits_0() {
    let dir = scratch("replay_stderr_gone");
    let input = dir.join("in.ndjson");
    let events = gen_events(&dir.join("gen.ndjson"), 4, 3000, "0.02", 3, &[]);
    // Bad lines, each a warning on stderr, from the workers that read them.
    let text = INPUT.to_string() + &std::fs::read_to_string(&events).unwrap();
    std::fs::write(&input, text).unwrap();
    let args = |name: &str| {
        let files = [
            dir.join(format!("{name}.out")),
            dir.join(format!("{name}.dlq")),
        ];
        let args: Vec<String> = ["replay", input.to_str().unwrap(), "-w", "2", "--out"]
            .into_iter()
            .map(String::from)
            .chain([files[0].display().to_string(), "--dlq".into()])
            .chain([files[1].display().to_string()])
            .collect();
        (args, files)
    };
    let (expected, expected_files) = args("expected");
    tampines(&expected.iter().map(String::as_str).collect::<Vec<_>>());
    for log in ["warn", "debug"] {
        let (given, files) = args(log);
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let job = Command::new(env!("CARGO_BIN_EXE_tampines"))
            .args(&given)
            .env("RUST_LOG", log)
            .stderr(writer)
            .spawn()
            .unwrap();
        let what = format!("a job logging at {log} to a stderr no one reads");
        assert_eq!(exit_within_60s(Killed(job), &what), Some(0), "{what}");
        for (file, expected) in files.iter().zip(&expected_files) {
            assert_eq!(
                std::fs::read_to_string(file).unwrap(),
                std::fs::read_to_string(expected).unwrap(),
                "{what}: {}",
                file.display()
            );
        }
    }
}

/// A worker that panics (a bug) ends the job with exit 1, saying so, where its peers waited
/// for it for ever. The panic is asked for through a variable that only debug builds read.
#[test]
fn a_worker_that_panics_ends_the_job_with_exit_1() {
    let dir = scratch("replay_worker_panics");
    let input = gen_events(&dir.join("in.ndjson"), 4, 3000, "0.02", 4, &[]);
    let hostfile = common::two_hosts(&dir);
    let spawn = |process: Option<&str>, panics: Option<&str>| {
        let mut job = Command::new(env!("CARGO_BIN_EXE_tampines"));
        job.args(["replay", &input, "-w", "2", "--out", "/dev/null"]);
        if let Some(p) = process {
            job.args(["-n", "2", "-p", p, "-h"]).arg(&hostfile);
        }
        if let Some(worker) = panics {
            job.env("TAMPINES_TEST_PANIC_WORKER", worker);
        }
        let job = job.env("RUST_BACKTRACE", "0").stderr(Stdio::piped());
        Killed(job.spawn().unwrap())
    };
    let panicked = |worker: &str| {
        format!(
            "tampines: a worker panicked (a bug): worker {worker} panicked as \
             TAMPINES_TEST_PANIC_WORKER asks at src/job.rs:"
        )
    };
    for worker in ["0", "1"] {
        let (code, said) = ended_within_60s(spawn(None, Some(worker)), "a panicking worker's job");
        assert_eq!(code, Some(1), "{said}");
        let last = said.lines().last().unwrap_or("");
        assert!(last.starts_with(&panicked(worker)), "{said}");
    }
    // Across processes: worker 2 is process 1's first. Process 0 sees its connection break.
    let (p0, p1) = (spawn(Some("0"), None), spawn(Some("1"), Some("2")));
    let (code, said) = ended_within_60s(p1, "the process whose worker panics");
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.lines()
            .last()
            .unwrap_or("")
            .starts_with(&panicked("2")),
        "{said}"
    );
    let (code, said) = ended_within_60s(p0, "the process whose peer's worker panics");
    assert_eq!(code, Some(1), "{said}");
    assert_eq!(
        said.lines().last(),
        Some("tampines: the connection between the job's processes broke (has one stopped? see above)"),
        "{said}"
    );
}

/// A named pipe is read whole, once. Checking that the file can be read used to open it and
/// close it again, which took the writer's first lines or made its writes fail (no reader), and
/// the job then waited on a pipe with no writer.
#[cfg(unix)]
#[test]
fn a_named_pipe_is_read_whole() {
    let dir = scratch("replay_named_pipe");
    let (pipe, file) = (dir.join("events.pipe"), dir.join("events.ndjson"));
    std::fs::write(&file, INPUT).unwrap();
    common::mkfifo(&pipe);
    let replay = |input: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_tampines"))
            .args(["replay", input.to_str().unwrap(), "--out", "-"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tampines")
    };
    let mut job = Killed(replay(&pipe));
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut w = std::fs::OpenOptions::new().write(true).open(&pipe)?;
        for line in INPUT.lines() {
            writeln!(w, "{line}")?;
            w.flush()?;
        }
        Ok(())
    });
    let mut stdout = job.0.stdout.take().unwrap();
    let (send, done) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = send.send(stdout.read_to_string(&mut text).map(|_| text));
    });
    let from_pipe = done
        .recv_timeout(Duration::from_secs(60))
        .expect("the job never finished: it waits on the pipe")
        .unwrap();
    // The job first: one that ended without opening the pipe left the writer waiting for ever.
    assert!(job.0.wait().unwrap().success());
    assert!(from_pipe.contains(r#""kind":"ticker""#), "{from_pipe}");
    writer.join().unwrap().expect("the pipe's reader went away");
    let from_file = replay(&file).wait_with_output().unwrap();
    assert_eq!(from_pipe, String::from_utf8(from_file.stdout).unwrap());
}

/// Each mark reaches stdout once it is published, while the input is still open: a live reader
/// of `--out -` (a pipe to a strategy) sees mark 1000 as soon as the event at 2000 closes it
/// (lateness 0), not when the input ends (a mutation audit, 2026-12-07: flushing only at the
/// end failed no test).
#[cfg(unix)]
#[test]
fn each_mark_reaches_stdout_while_the_input_is_still_open() {
    let dir = scratch("replay_stdout_per_mark");
    let pipe = dir.join("events.pipe");
    common::mkfifo(&pipe);
    let mut job = Killed(
        Command::new(env!("CARGO_BIN_EXE_tampines"))
            .args(["replay", pipe.to_str().unwrap(), "--out", "-"])
            .args(["--lateness-ms", "0", "--resolutions", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tampines"),
    );
    let snapshot = |symbol: &str, ts: u64| {
        format!(
            r#"{{"type":"snapshot","exchange":"ex","symbol":"{symbol}","ts":{ts},"seq":1,"bids":[["10","1"]],"asks":[["11","1"]]}}"#
        )
    };
    let lines = [snapshot("A", 1000), snapshot("B", 2000)];
    let (close, closing) = mpsc::channel::<()>();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut w = std::fs::OpenOptions::new().write(true).open(&pipe)?;
        for line in lines {
            writeln!(w, "{line}")?;
        }
        w.flush()?;
        // The input stays open until the test has seen the mark.
        let _ = closing.recv();
        Ok(())
    });
    let stdout = job.0.stdout.take().unwrap();
    let (send, seen) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = seen
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no mark 1000 within 60 s of an open input: {before:?}"));
        if line == r#"{"kind":"progress","ts":1000}"# {
            break;
        }
        before.push(line);
    }
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(before[0].contains(r#""symbol":"A""#), "{before:?}");
    close.send(()).unwrap();
    writer.join().unwrap().expect("the pipe's reader went away");
    assert!(job.0.wait().unwrap().success());
}

/// Two named pipes written by one producer, in event order, as a split of one capture into books
/// and trades would be: the results equal those of the same two files, at `-w 1` and `-w 2`.
/// The producer opens the second pipe first, and writes 3.9 MB of trades (30,000 timestamps)
/// into it between the first pipe's two lines. The job waited for ever on each of three things:
/// opening the first pipe (on the worker, while the producer waited to open the second), the
/// first pipe having nothing yet (while the second's read-ahead stayed full), and, at `-w 2`, a
/// pause of the second pipe's worker for the first's input (2,048 timestamps ahead of it). That
/// worker must not pause either when it also reads a regular file (two more inputs at `-w 2`:
/// input 3 goes to the trades' worker, input 2 to the books').
#[cfg(unix)]
#[test]
fn pipes_written_by_one_producer_in_event_order_are_read_whole() {
    let dir = scratch("replay_pipes_one_producer");
    let snapshot = r#"{"type":"snapshot","exchange":"ex","symbol":"A","ts":1000,"seq":1,"bids":[["10","1"]],"asks":[["11","1"]]}"#;
    let last = r#"{"type":"book","exchange":"ex","symbol":"A","ts":3001100,"seq":2,"bids":[["10","2"]],"asks":[]}"#;
    let books = format!("{snapshot}\n{last}\n");
    let trades: String = (1..=30_000u64)
        .map(|i| trade_a(1_000 + i * 100, i, 10 + i % 3) + "\n")
        .collect();
    let (book_file, trade_file) = (dir.join("books.ndjson"), dir.join("trades.ndjson"));
    std::fs::write(&book_file, &books).unwrap();
    std::fs::write(&trade_file, &trades).unwrap();
    let regular = [dir.join("b.ndjson"), dir.join("c.ndjson")];
    for (file, symbol) in regular.iter().zip(["B", "C"]) {
        let trade = format!(
            r#"{{"type":"trade","exchange":"ex","symbol":"{symbol}","ts":1100,"id":"1","price":"5","qty":"2","side":"sell"}}"#
        );
        std::fs::write(file, trade + "\n").unwrap();
    }
    let options = ["--resolutions", "1", "--depth", "1", "--intervals", "1m"];
    let replay = |files: &[&std::path::Path], workers: &str| {
        Command::new(env!("CARGO_BIN_EXE_tampines"))
            .arg("replay")
            .args(files)
            .args(["-w", workers, "--out", "-"])
            .args(options)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tampines")
    };
    let expected = |more: &[&std::path::Path]| {
        let files = [&[&*book_file, &*trade_file], more].concat();
        let out = replay(&files, "1").wait_with_output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let (alone, among) = (expected(&[]), expected(&[&regular[0], &regular[1]]));
    assert_eq!(alone.matches(r#""kind":"ticker""#).count(), 30_000);
    // A's, and one each of B's and C's (their one trade).
    assert_eq!(among.matches(r#""kind":"ticker""#).count(), 30_002);
    for (workers, more) in [("1", 0), ("2", 0), ("2", 2)] {
        let (book_pipe, trade_pipe) = (dir.join("books.pipe"), dir.join("trades.pipe"));
        for pipe in [&book_pipe, &trade_pipe] {
            let _ = std::fs::remove_file(pipe);
            common::mkfifo(pipe);
        }
        let files = [&book_pipe, &trade_pipe, &regular[0], &regular[1]].map(|p| p.as_path());
        let mut job = Killed(replay(&files[..2 + more], workers));
        let (books, trades) = (books.clone(), trades.clone());
        let producer = std::thread::spawn(move || -> std::io::Result<()> {
            let open = |p: &std::path::Path| std::fs::OpenOptions::new().write(true).open(p);
            let mut to_trades = open(&trade_pipe)?;
            let mut to_books = open(&book_pipe)?;
            let (first, rest) = books.split_at(books.find('\n').unwrap() + 1);
            to_books.write_all(first.as_bytes())?;
            to_books.flush()?;
            to_trades.write_all(trades.as_bytes())?;
            drop(to_trades);
            to_books.write_all(rest.as_bytes())
        });
        let mut stdout = job.0.stdout.take().unwrap();
        let (send, done) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = send.send(stdout.read_to_string(&mut text).map(|_| text));
        });
        let case = format!("-w {workers}, {more} regular files");
        let got = done
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("{case}: the job never finished"))
            .unwrap();
        // The job first: one that ended without opening a pipe leaves the producer waiting.
        assert!(job.0.wait().unwrap().success(), "{case}");
        let expected = if more == 0 { &alone } else { &among };
        assert!(got == *expected, "{case}: other results than the files'");
        producer.join().unwrap().expect("a pipe's reader went away");
    }
}

/// A child process that is killed when dropped: a failing test leaves none running.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A replay serving metrics on a port the system chooses that runs until killed: it reads a
/// named pipe no one opens to write (opening one in a test hung when the job had ended), in a
/// scratch directory `name`, its logs at the default level followed. Returns it, its log, and
/// the address its log names (within 60 s; the test fails with the log if none).
#[cfg(unix)]
fn serving_metrics(name: &str) -> (Killed, common::StderrLog, String) {
    let pipe = scratch(name).join("silent.pipe");
    common::mkfifo(&pipe);
    let mut job = Killed(
        Command::new(env!("CARGO_BIN_EXE_tampines"))
            .args(["replay", pipe.to_str().unwrap(), "--out", "/dev/null"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tampines"),
    );
    let log = common::StderrLog::follow(&mut job.0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = log
        .metrics_addr_within(deadline)
        .unwrap_or_else(|| panic!("no line names the port within 60 s: {}", log.text()));
    (job, log, addr)
}

/// A hostfile that cannot serve the job is bad configuration: exit 2 with one line, before any
/// process listens or dials.
#[test]
fn a_bad_hostfile_exits_2_with_one_line() {
    let dir = scratch("replay_bad_hostfile");
    let cases = [
        (
            "127.0.0.1:2101\n",
            "-n 2 needs a line per process, it has 1",
        ),
        (
            "127.0.0.1:2101\nhost-b\n",
            "line 2 \"host-b\": want HOST:PORT (several separated by spaces)",
        ),
        (
            "127.0.0.1:2101\n\n",
            "line 2 \"\": want HOST:PORT (several separated by spaces)",
        ),
        (
            "127.0.0.1:2101 :2102\nb:2101\n",
            "line 1 \"127.0.0.1:2101 :2102\": want HOST:PORT (several separated by spaces)",
        ),
        (
            "a:port\nb:2101\n",
            "line 1 \"a:port\": want HOST:PORT (several separated by spaces)",
        ),
    ];
    for (i, (hosts, message)) in cases.into_iter().enumerate() {
        let hostfile = dir.join(format!("hosts{i}"));
        std::fs::write(&hostfile, hosts).unwrap();
        // Under `timeout`: without the check, a process would wait for the other for ever.
        let out = Command::new("timeout")
            .args(["30", env!("CARGO_BIN_EXE_tampines")])
            .args(["replay", "x.ndjson", "-n", "2", "-p", "0", "-h"])
            .arg(&hostfile)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{hosts:?}: {out:?}");
        let expected = format!("tampines: -h {}: {message}", hostfile.display());
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), expected);
    }
}

/// No command: one line that names the commands, exit 2 (CONTRACT 5: bad usage has a one-line
/// reason). It printed the whole help (18 lines); before that, one line that said only what
/// Tampines is.
#[test]
fn no_command_names_the_commands_in_one_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tampines"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "tampines: a command is needed: run, replay, produce, broker, gen or demo \
         (`tampines --help` says what each does)\n"
    );
}

#[test]
fn bad_usage_exits_2_with_one_line() {
    let cases: [(&[&str], &str); 46] = [
        (
            &["replay", "x.ndjson", "--granularity-ms", "0"],
            "tampines: --granularity-ms must be positive",
        ),
        (
            &["replay", "x.ndjson", "--redis", "redis://127.0.0.1:1/0", "--prefix", ""],
            "tampines: --prefix is empty: every key would start with ':' (give one; the default is tampines)",
        ),
        (
            // Before it starts a broker, or a redis-server, and says where to look.
            &["demo", "--prefix", ""],
            "tampines: --prefix is empty: every key would start with ':' (give one; the default is tampines)",
        ),
        (
            &["replay", "x.ndjson", "--intervals", "1m,5m,60s"],
            "tampines: --intervals must not repeat a length (1m and 60s are the same)",
        ),
        (
            &["replay", "x.ndjson", "--metrics-addr", "nowhere"],
            "tampines: --metrics-addr \"nowhere\": want HOST:PORT",
        ),
        (
            &["demo", "--depth", "0"],
            "tampines: --depth must be positive",
        ),
        // A demo of nothing: 0 partitions read nothing; 0 symbols and 0 events/s ran as 1.
        (
            &["demo", "--partitions", "0"],
            "tampines: --partitions must be between 1 and 10000",
        ),
        (
            &["demo", "--symbols", "0"],
            "tampines: --symbols must be between 1 and 1000000",
        ),
        // These aborted the process (librdkafka's allocation, and the symbols').
        (
            &["demo", "--partitions", "2147483647"],
            "tampines: --partitions must be between 1 and 10000",
        ),
        (
            &["demo", "--symbols", "1000000000000"],
            "tampines: --symbols must be between 1 and 1000000",
        ),
        // A retention of 2^64 - 1 removed stored candles; 10^17 failed a step halfway.
        (
            &["replay", "x.ndjson", "--candle-retention", "18446744073709551615"],
            "tampines: --candle-retention must be between 1 and 1000000000",
        ),
        (&["demo", "--rate", "0"], "tampines: --rate must be positive"),
        // librdkafka's refusal of a property was a runtime error (exit 1); a topic named twice
        // was read once, and a bounded run never ended.
        (
            &["run", "--brokers", "127.0.0.1:1", "-X", "no.such.prop=1"],
            "tampines: -X no.such.prop=***: No such configuration property: \"no.such.prop\"",
        ),
        (
            &["run", "--brokers", "127.0.0.1:1", "--topics", "a,b,a"],
            "tampines: --topics names a twice",
        ),
        // clap's own messages span lines (a usage summary, hints): joined into one.
        (
            &["replay", "x.ndjson", "--granularity-ms", "abc"],
            "tampines: invalid value 'abc' for '--granularity-ms <GRANULARITY_MS>': invalid digit found in string",
        ),
        (
            &["replay"],
            "tampines: the following required arguments were not provided: <FILES>...",
        ),
        // Spans beyond any time panicked on an overflow (exit 101, or 1 from a worker).
        (
            &["replay", "x.ndjson", "--window-ms", "18446744073709551615"],
            "tampines: --window-ms must be at most 1000000000000000",
        ),
        (
            &["replay", "x.ndjson", "--intervals", "100000000000000w"],
            "tampines: --intervals: interval \"100000000000000w\" is longer than 1000000000000000 ms",
        ),
        (
            &["gen", "--disorder-ms", "9223372036854775808"],
            "tampines: --disorder-ms must be at most 1000000000000000",
        ),
        // Prices would go negative: the events would be invalid.
        (
            &["gen", "--depth", "5000"],
            "tampines: --depth must be between 1 and 1000",
        ),
        // A file that cannot be read at all passed as a run that read nothing (exit 0).
        (
            &["replay", "/nonexistent/x.ndjson"],
            "tampines: cannot read /nonexistent/x.ndjson: No such file or directory (os error 2)",
        ),
        // The results overwrote the dead letters (exit 0); 100,000 workers took 19 GB.
        (
            &["replay", "x.ndjson", "--out", "o.ndjson", "--dlq", "./o.ndjson"],
            "tampines: --out and --dlq name one file: the results would overwrite the dead letters",
        ),
        // Both went to stdout (exit 0): dead letters among the results.
        (
            &["replay", "x.ndjson", "--out", "-", "--dlq", "-"],
            "tampines: --out and --dlq both name stdout: the dead letters would mix with the results",
        ),
        (
            &["replay", "x.ndjson", "--out", "/dev/stdout", "--dlq", "-"],
            "tampines: --out and --dlq both name stdout: the dead letters would mix with the results",
        ),
        // Stdout by another of its names: found by what the file is.
        (
            &["replay", "x.ndjson", "--out", "-", "--dlq", "/dev/./stdout"],
            "tampines: --out and --dlq both name stdout: the dead letters would mix with the results",
        ),
        (
            &["demo", "--stdout", "--dlq", "/dev/stdout"],
            "tampines: --stdout with --dlq on stdout: the dead letters would mix with the results (give --out FILE, or --dlq FILE)",
        ),
        // The password was printed.
        (
            &["replay", "x.ndjson", "--redis", "redis://default:pw5@127.0.0.1:1/zz"],
            "tampines: bad --redis URL \"redis://default:***@127.0.0.1:1/zz\": Invalid database number",
        ),
        // Passwords with `/`, and misspelt or unsupported secrets of librdkafka, were printed.
        (
            &["replay", "x.ndjson", "--redis", "redis://default:ab/cd+ef=@127.0.0.1:1/zz"],
            "tampines: bad --redis URL \"redis://default:***@127.0.0.1:1/zz\": Redis URL did not parse",
        ),
        // What the redis crate ignores: `?db=5` wrote to database 0 (exit 0).
        (
            &["replay", "x.ndjson", "--redis", "redis://127.0.0.1:1?db=5"],
            "tampines: bad --redis URL \"redis://127.0.0.1:1?db=5\": its query parameter \"db\" is not read (the database is the path: redis://HOST:PORT/DB)",
        ),
        (
            &["replay", "x.ndjson", "--redis", "redis://127.0.0.1:1/0#x"],
            "tampines: bad --redis URL \"redis://127.0.0.1:1/0#x\": a Redis URL has no fragment (a '#' in a password is written %23)",
        ),
        (
            &["run", "--brokers", "127.0.0.1:1", "-X", "sasl.pasword=sekret1"],
            "tampines: -X sasl.pasword=***: No such configuration property: \"sasl.pasword\"",
        ),
        // A secret written `key:value`, quoted whole by clap.
        (
            &["run", "--brokers", "127.0.0.1:1", "-X", "sasl.password:hunter2"],
            "tampines: invalid value '***' for '-X <PROPERTY>': bad property: want key=value (what was given is not shown)",
        ),
        // A list with a part that is no tick size was read whole, as one odd symbol (exit 0).
        (
            &["replay", "x.ndjson", "--tick-size", "ex:A=0.05,B=0.2"],
            "tampines: bad tick size \"B=0.2\": want EXCHANGE:SYMBOL=STEP",
        ),
        (
            &["replay", "x.ndjson", "-w", "100000"],
            "tampines: -w 100000: at most 1024 workers per process",
        ),
        // Each was a runtime error (exit 1), after a minute for the brokers; -1 partitions
        // aborted in librdkafka; 2^64 - 1 symbols panicked.
        (
            &["produce", "/nonexistent/x.ndjson", "--brokers", "127.0.0.1:1"],
            "tampines: cannot read /nonexistent/x.ndjson: No such file or directory (os error 2)",
        ),
        (
            &["run", "--brokers", " "],
            "tampines: --brokers must name at least one broker (HOST:PORT)",
        ),
        (
            &["run", "--brokers", "127.0.0.1:1", "--topics", "market.book,"],
            "tampines: --topics: \"\" is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -)",
        ),
        (
            &["broker", "--topics", "a,b,a.dlq"],
            "tampines: --topics names a and a.dlq: the broker makes a.dlq, a's dead-letter topic, itself",
        ),
        (
            &["broker", "--partitions=-1"],
            "tampines: --partitions must be between 1 and 10000",
        ),
        (
            &["gen", "--symbols", "18446744073709551615"],
            "tampines: --symbols must be between 1 and 1000000",
        ),
        (
            &["replay", "x.ndjson", "--tick-size", ":B=0.1"],
            "tampines: bad tick size \":B=0.1\": want EXCHANGE:SYMBOL=STEP",
        ),
        (
            &["replay", "x.ndjson", "--tick-size", "a:B=0.1", "--tick-size", "a:B=0.5"],
            "tampines: --tick-size names a:B twice",
        ),
        // Each process of `demo -n 2` started its own broker and market: the job read a mix.
        (
            &["demo", "-n", "2", "-p", "1", "-h", "hosts"],
            "tampines: demo runs in one process, with its own broker and market: -n, -p and -h are for run and replay",
        ),
        // Set by -X, these bypassed --group and --start (and the check that every process
        // gives the same), or committed offsets before their results were written.
        (
            &["run", "--brokers", "127.0.0.1:1", "-X", "group.id=g"],
            "tampines: -X group.id: use --group (every process of a job must give the same)",
        ),
        (
            &["run", "--brokers", "127.0.0.1:1", "-X", "auto.offset.reset=latest"],
            "tampines: -X auto.offset.reset: use --start",
        ),
        (
            &["run", "--brokers", "127.0.0.1:1", "-X", "enable.auto.commit=true"],
            "tampines: -X enable.auto.commit: the job commits offsets itself, once their results are written (exactly-once in Redis)",
        ),
    ];
    for (args, message) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tampines"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), message);
    }
}

/// `gen --out -` writes to stdout, as `--out -` does for the jobs (it made a file named `-`),
/// the same lines as `--out FILE`.
/// A replay that cannot write its results fails (exit 1, naming the cause): only a closed pipe
/// (`| head`) is a reader that is done.
#[test]
fn a_replay_that_cannot_write_its_results_exits_1() {
    let dir = scratch("replay_full");
    let file = dir.join("events.ndjson");
    gen_events(&file, 2, 2_000, "0.01", 3, &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_tampines"))
        .args(["replay", file.to_str().unwrap(), "--out", "/dev/full"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("writing results to /dev/full: No space left on device"),
        "{stderr}"
    );
}

/// `gen` is seeded: a seed gives the same events every time, and another seed other events.
#[test]
fn gen_seeds_repeat_and_differ() {
    let dir = scratch("gen_seeds");
    let text = |name: &str, seed: u32| {
        let path = dir.join(name);
        gen_events(&path, 3, 500, "0.01", seed, &[]);
        std::fs::read_to_string(path).unwrap()
    };
    let (a, again, other) = (text("a", 5), text("again", 5), text("other", 6));
    assert_eq!(a.lines().count(), 503);
    assert_eq!(a, again);
    assert_eq!(other.lines().count(), 503);
    assert_ne!(a.lines().nth(10), other.lines().nth(10));
}

#[test]
fn gen_out_dash_is_stdout() {
    let dir = scratch("gen_stdout");
    let file = dir.join("events.ndjson");
    gen_events(&file, 2, 50, "0.01", 3, &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_tampines"))
        .args(["gen", "--symbols", "2", "--events", "50", "--hours", "0.01"])
        .args(["--seed", "3", "--out", "-"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, std::fs::read(&file).unwrap());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 52);
    assert!(!dir.join("-").exists());
}

/// `gen --out NAME.gz` writes gzip, which replay reads back whole: it wrote plain text under
/// that name, which replay then read as one bad line (`read 1 ... dead-lettered 1`). A file it
/// cannot create is named.
#[test]
fn gen_out_gz_is_gzipped() {
    let dir = scratch("gen_gz");
    let (plain, gz) = (dir.join("events.ndjson"), dir.join("events.ndjson.gz"));
    gen_events(&plain, 2, 50, "0.01", 3, &[]);
    gen_events(&gz, 2, 50, "0.01", 3, &[]);
    let mut text = Vec::new();
    let file = std::fs::File::open(&gz).unwrap();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(file), &mut text).unwrap();
    assert_eq!(text, std::fs::read(&plain).unwrap());
    let stderr = tampines(&["replay", gz.to_str().unwrap(), "--out", "/dev/null"]);
    assert!(
        stderr.contains("read 52 processed 52 dead-lettered 0"),
        "{stderr}"
    );

    let nowhere = dir.join("no/such/dir.ndjson");
    let out = Command::new(env!("CARGO_BIN_EXE_tampines"))
        .args(["gen", "--events", "1", "--out", nowhere.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "tampines: gen: {}: No such file or directory (os error 2)\n",
            nowhere.display()
        )
    );
}

/// A bad value from the `--config` file names the file (it read as if given on the command line,
/// where it was not); one on the command line does not.
#[test]
fn a_bad_value_in_the_config_file_names_the_file() {
    let dir = scratch("config_bad_value");
    let config = dir.join("bad.toml");
    std::fs::write(&config, "depth = \"abc\"\n").unwrap();
    let config = config.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tampines"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        String::from_utf8(out.stderr).unwrap().trim().to_string()
    };
    let invalid = "invalid value 'abc' for '--depth <DEPTH>': invalid digit found in string";
    assert_eq!(
        run(&["replay", "x.ndjson", "--config", config]),
        format!("tampines: --config {config}: {invalid}")
    );
    assert_eq!(
        run(&["replay", "x.ndjson", "--depth", "abc"]),
        format!("tampines: {invalid}")
    );
    // Also when the file gives a required option, so that the command line alone is short.
    let run_config = dir.join("run.toml");
    std::fs::write(
        &run_config,
        "brokers = \"localhost:1\"\nidle_ms = \"abc\"\n",
    )
    .unwrap();
    let run_config = run_config.to_str().unwrap();
    assert_eq!(
        run(&["--config", run_config, "run"]),
        format!("tampines: --config {run_config}: invalid value 'abc' for '--idle-ms <IDLE_MS>': invalid digit found in string")
    );
    // Help takes no options: the file's were given to it, and refused.
    for args in [
        ["--config", config, "help", "replay"],
        ["--config", config, "replay", "--help"],
    ] {
        let help = Command::new(env!("CARGO_BIN_EXE_tampines"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            help.status.success(),
            "{}",
            String::from_utf8_lossy(&help.stderr)
        );
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(text.starts_with("Runs the dataflow over NDJSON"), "{text}");
    }
}

/// A `--dlq` path that is not UTF-8 is the file it names: it was opened by its lossy text, so
/// `a\xff.ndjson` wrote to `a\u{fffd}.ndjson`, which a replay of that file had emptied before
/// reading it (exit 0, `read 0`).
#[cfg(unix)]
#[test]
fn a_dlq_path_that_is_not_utf8_is_the_file_it_names() {
    use std::os::unix::ffi::OsStrExt;
    let dir = scratch("replay_dlq_not_utf8");
    let input = dir.join("a\u{fffd}.ndjson");
    std::fs::write(&input, INPUT).unwrap();
    let dlq = dir.join(std::ffi::OsStr::from_bytes(b"a\xff.ndjson"));
    let out = Command::new(env!("CARGO_BIN_EXE_tampines"))
        .arg("replay")
        .arg(&input)
        .args(["--out", "/dev/null", "--dlq"])
        .arg(&dlq)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&input).unwrap(),
        INPUT,
        "the input is kept"
    );
    assert!(stderr.contains("read 11 processed"), "{stderr}");
    let dead = std::fs::read_to_string(&dlq).unwrap();
    assert_eq!(dead.lines().count(), 6, "{dead}");
}

/// A configuration file may be named like a command: `tampines --config gen replay ...` took
/// `gen` for the command and refused the file's `depth` (exit 2).
#[test]
fn a_config_file_may_be_named_like_a_command() {
    let dir = scratch("config_named_gen");
    std::fs::write(dir.join("gen"), "depth = 1\nresolutions = [1]\n").unwrap();
    std::fs::write(dir.join("in.ndjson"), INPUT).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tampines"))
        .current_dir(&dir)
        .args([
            "--config",
            "gen",
            "replay",
            "in.ndjson",
            "--out",
            "out.ndjson",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The snapshot's two bids at resolution 1, depth 1: the best only.
    let (_, records) = &marks(&dir.join("out.ndjson"))[0];
    let books: Vec<_> = records.iter().filter(|r| r["kind"] == "book").collect();
    assert_eq!(books.len(), 1, "{records:?}");
    assert_eq!(books[0]["bids"], json!([["10", "1"]]), "{}", books[0]);
}

/// A configuration file's error never shows a password: TOML's message quotes the line, which
/// may hold a `--redis` URL.
#[test]
fn a_config_error_hides_a_password() {
    let dir = scratch("config_password");
    let config = dir.join("job.toml");
    std::fs::write(&config, "redis = \"redis://u:pw6@h:1/0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tampines"))
        .args(["replay", "x.ndjson", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("redis://u:***@h:1/0"), "{stderr}");
    assert!(!stderr.contains("pw6"), "{stderr}");
}

/// `--help` does not show the value of `TAMPINES_REDIS`, which may hold a password (clap showed
/// `[env: TAMPINES_REDIS=redis://u:sekret@h:1/0]`).
#[test]
fn help_hides_the_redis_url_of_the_environment() {
    for command in ["replay", "run"] {
        let out = Command::new(env!("CARGO_BIN_EXE_tampines"))
            .args([command, "--help"])
            .env("TAMPINES_REDIS", "redis://u:sekret@h:1/0")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("[env: TAMPINES_REDIS"), "{help}");
        assert!(!help.contains("sekret"), "{help}");
    }
}

/// A `--config` value that starts with `-` is a value (`unexpected argument '-x' found`, exit 2).
#[test]
fn config_values_may_start_with_a_dash() {
    let dir = scratch("config_dash");
    let config = dir.join("gen.toml");
    std::fs::write(&config, "exchange = \"-x\"\nsymbols = 1\nevents = 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tampines"))
        .args(["gen", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 4);
    assert!(
        text.lines().all(|l| l.contains(r#""exchange":"-x""#)),
        "{text}"
    );
}

/// By default a dead letter is logged (at warn) as well as counted and written, without colour
/// codes when stderr is no terminal. The default showed errors only: dead letters were not
/// logged unless `RUST_LOG` asked, and colour codes went into log files.
#[test]
fn dead_letters_are_logged_by_default() {
    let dir = scratch("replay_logged");
    let input = dir.join("in.ndjson");
    std::fs::write(&input, INPUT).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tampines"))
        .args(["replay", input.to_str().unwrap(), "--out", "/dev/null"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    let logged: Vec<&str> = (stderr.lines())
        .filter(|l| l.contains(" WARN tampines::dead_letters: dead letter reason="))
        .collect();
    assert_eq!(logged.len(), 6, "{stderr}");
    assert!(
        logged[5].ends_with(&format!(
            r#"dead letter reason=unknown type "quote" input={} offset=10"#,
            tampines::metrics::label_value(input.to_str().unwrap())
        )),
        "{stderr}"
    );
    assert!(!stderr.contains('\x1b'), "{stderr}");
}

/// Dead letters are logged one by one up to 10 a second, the rest as a number (a file of bad
/// lines logged each, which took longer than the replay); the numbers add up to them all.
#[test]
fn many_dead_letters_are_logged_as_a_number() {
    let dir = scratch("replay_many_logged");
    let input = dir.join("in.ndjson");
    std::fs::write(&input, "not json\n".repeat(5_000)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tampines"))
        .args(["replay", input.to_str().unwrap(), "--out", "/dev/null"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    let one_by_one = stderr.matches(" dead letter reason=").count();
    let numbers: usize = (stderr.lines())
        .filter(|l| l.contains("more dead letters, not logged one by one"))
        .map(|l| {
            l.rsplit_once(" count=")
                .unwrap()
                .1
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert!((10..=100).contains(&one_by_one), "{stderr}");
    assert_eq!(one_by_one + numbers, 5_000, "{stderr}");
}

/// A sink named as an input (here through `..`) is refused: opening it emptied the input before
/// it was read, and the run exited 0 having read nothing.
#[test]
fn a_sink_that_names_an_input_is_refused() {
    let dir = scratch("replay_sink_is_input");
    let input = dir.join("in.ndjson");
    std::fs::write(&input, INPUT).unwrap();
    let alias = dir
        .join("..")
        .join("replay_sink_is_input")
        .join("in.ndjson");
    for option in ["--out", "--dlq"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tampines"))
            .args([
                "replay",
                input.to_str().unwrap(),
                option,
                alias.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{option}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            format!(
                "tampines: {} is also {option}: it would be emptied before it is read",
                input.display()
            )
        );
        assert_eq!(std::fs::read_to_string(&input).unwrap(), INPUT);
    }
}

/// `--config FILE.toml` gives the same options as the command line; the command line wins over
/// the file; a key that is no option of the command is bad usage (exit 2).
#[test]
fn config_file_maps_onto_the_command_line() {
    let dir = scratch("replay_config");
    let events = dir.join("events.ndjson");
    gen_events(&events, 3, 3000, "1", 7, &[]);
    let run = |name: &str, extra: &[&str]| -> String {
        let out = dir.join(name);
        let mut args = vec![
            "replay",
            events.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        tampines(&args);
        std::fs::read_to_string(out).expect("output")
    };
    let config = dir.join("tampines.toml");
    std::fs::write(
        &config,
        "granularity_ms = 1000\ndepth = 7\nresolutions = [1, 10]\nintervals = [\"1m\", \"1h\"]\n\
         tick-size = [\"synth:S000USDT=0.5\"]\nworkers = 2\n",
    )
    .unwrap();
    let flags = [
        "--granularity-ms",
        "1000",
        "--resolutions",
        "1,10",
        "--intervals",
        "1m,1h",
        "--tick-size",
        "synth:S000USDT=0.5",
    ];
    let from_flags = run("flags.ndjson", &[&flags[..], &["--depth", "7"]].concat());
    let from_file = run("file.ndjson", &["--config", config.to_str().unwrap()]);
    assert_eq!(
        from_file, from_flags,
        "the file gives the same options as flags"
    );
    assert!(from_file.contains(r#""resolution":10"#) && !from_file.contains(r#""resolution":5"#));
    let overridden = run(
        "override.ndjson",
        &["--config", config.to_str().unwrap(), "--depth", "3"],
    );
    let depth_3 = run("depth3.ndjson", &[&flags[..], &["--depth", "3"]].concat());
    assert_eq!(overridden, depth_3, "the command line wins over the file");
    assert_ne!(overridden, from_file);

    // Keys and values the options cannot take are bad configuration: a boolean for an option
    // with a value was dropped, an empty list gave the defaults, `help = true` printed help.
    let at = format!("tampines: --config {}: ", config.display());
    for (text, message) in [
        (
            "no_such_option = 1",
            "`replay` has no option \"no_such_option\"",
        ),
        (
            "depth = false",
            "depth = false: want a string, a number, or an array of them",
        ),
        (
            "resolutions = []",
            "resolutions = []: want at least one value",
        ),
        ("help = true", "`replay` has no option \"help\""),
    ] {
        std::fs::write(&config, format!("{text}\n")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tampines"))
            .args(["replay", events.to_str().unwrap()])
            .args(["--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim(), format!("{at}{message}"), "{text}");
    }
}

/// `--log-format json`: every log line on stderr is a JSON object (filtered by RUST_LOG), even
/// with a config file that says `text`: the command line wins.
#[test]
fn json_logs() {
    let dir = scratch("replay_json_logs");
    let input = dir.join("in.ndjson");
    std::fs::write(&input, INPUT).unwrap();
    // The flag, given before the subcommand, wins over the file (the file used to win there).
    let config = dir.join("text.toml");
    std::fs::write(&config, "log_format = \"text\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tampines"))
        .args(["--log-format", "json", "replay", input.to_str().unwrap()])
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| !l.starts_with("read "))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    // The dead letters of INPUT are logged at warn, one each, with their reasons.
    let reasons: Vec<&str> = logs
        .iter()
        .filter(|l| l["fields"]["message"] == "dead letter")
        .map(|l| l["fields"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "not json: expected ident at line 1 column 2",
            "trade quantity must be positive",
            "trade value too large: price x qty must be below 10^20",
            "bad bids: too large: 1000000000000000 (prices and quantities must be below 10^15)",
            "bad price: too large: 79228162514264337593543950335 (prices and quantities must be below 10^15)",
            "unknown type \"quote\""
        ],
        "{stderr}"
    );
}

/// `TAMPINES_SLOW_OPERATOR_MS`: with a threshold of 0 every activation is reported, named after
/// its operator (the stages' names as built), never after the dataflow scope that spans them all;
/// without it, none is.
#[test]
fn slow_operator_activations_are_logged_by_name() {
    let dir = scratch("replay_slow_operators");
    let input = dir.join("in.ndjson");
    std::fs::write(&input, INPUT).unwrap();
    let operators = |threshold: Option<&str>| -> std::collections::BTreeSet<String> {
        let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_tampines"));
        run.args(["--log-format", "json", "replay", input.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .env_remove("TAMPINES_SLOW_OPERATOR_MS");
        if let Some(t) = threshold {
            run.env("TAMPINES_SLOW_OPERATOR_MS", t);
        }
        let out = run.output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["fields"]["message"] == "slow operator activation")
            .map(|l| l["fields"]["operator"].as_str().unwrap().to_string())
            .collect()
    };
    let all = operators(Some("0"));
    for stage in [
        "Source",
        "Books",
        "TradeWindow",
        "Ticker",
        "Candles",
        "Gather",
    ] {
        assert!(all.contains(stage), "{stage} missing from {all:?}");
    }
    assert!(!all.contains("Dataflow") && !all.contains("?"), "{all:?}");
    assert!(operators(None).is_empty());
}

/// Precedence: command line, then environment, then the file (`--config`).
#[test]
fn environment_wins_over_the_config_file() {
    let dir = scratch("replay_config_env");
    let input = dir.join("in.ndjson");
    std::fs::write(&input, INPUT).unwrap();
    let config = dir.join("c.toml");
    std::fs::write(&config, "granularity_ms = 1000\n").unwrap();
    let run = |env: Option<&str>| -> String {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_tampines"));
        c.args(["replay", input.to_str().unwrap(), "--out", "-", "--config"])
            .arg(&config)
            .env_remove("TAMPINES_GRANULARITY_MS");
        if let Some(g) = env {
            c.env("TAMPINES_GRANULARITY_MS", g);
        }
        let out = c.output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let marks = |text: &str| -> Vec<u64> {
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["kind"] == "progress")
            .map(|v| v["ts"].as_u64().unwrap())
            .collect()
    };
    // INPUT spans ts 1000..1095: one 1 s mark from the file, 100 ms marks from the environment.
    assert_eq!(marks(&run(None)), vec![1000, 2000]);
    assert_eq!(marks(&run(Some("100"))), vec![1000, 1100]);

    // The command line wins over the environment; the lateness and the window read it too.
    let trades = dir.join("trades.ndjson");
    std::fs::write(
        &trades,
        trade_a(1000, 1, "9") + &trade_a(5000, 2, "9.6") + &trade_a(3000, 3, "9.3"),
    )
    .unwrap();
    let replay = |env: &[(&str, &str)], flags: &[&str]| -> (String, serde_json::Value) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tampines"))
            .args(["replay", trades.to_str().unwrap(), "--out", "-"])
            .args(flags)
            .env_remove("TAMPINES_GRANULARITY_MS")
            .env_remove("TAMPINES_LATENESS_MS")
            .env_remove("TAMPINES_WINDOW_MS")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let ticker = text
            .lines()
            .rev()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["kind"] == "ticker")
            .unwrap();
        (String::from_utf8(out.stderr).unwrap(), ticker)
    };
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_tampines"));
    c.args(["replay", input.to_str().unwrap(), "--out", "-"])
        .args(["--granularity-ms", "100"])
        .env("TAMPINES_GRANULARITY_MS", "1000");
    let flag_wins = String::from_utf8(c.output().unwrap().stdout).unwrap();
    assert_eq!(marks(&flag_wins), vec![1000, 1100], "the flag's 100 ms");
    // Trade 3 comes 2 s below trade 2: late with the default 1 s of lateness, in time with 3 s.
    let late = |env: &[(&str, &str)]| replay(env, &[]).0;
    assert!(late(&[]).contains(" late 1"));
    assert!(late(&[("TAMPINES_LATENESS_MS", "3000")]).contains(" late 0"));
    // A 1 s window at the last mark (5000) holds trade 2 alone.
    let (_, ticker) = replay(&[("TAMPINES_WINDOW_MS", "1000")], &[]);
    assert_eq!(
        (&ticker["count"], &ticker["open"]),
        (&1.into(), &"9.6".into())
    );
    let (_, ticker) = replay(&[], &[]);
    assert_eq!(ticker["count"], 3);
}

/// Dead letters past the 10 a second logged one by one are told as a number within about a
/// second, while the input stays open and nothing more comes (the count waited for the next
/// dead letter or the end: a burst of 100 showed as 10 until then).
#[cfg(unix)]
#[test]
fn a_burst_of_dead_letters_is_counted_in_the_log_within_a_second() {
    let pipe = scratch("replay_dead_letter_burst").join("bad.pipe");
    common::mkfifo(&pipe);
    let mut job = Killed(
        Command::new(env!("CARGO_BIN_EXE_tampines"))
            .args(["replay", pipe.to_str().unwrap(), "--out", "/dev/null"])
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tampines"),
    );
    // 100 bad lines, and the pipe held open until the test ends (a thread: opening it waits for
    // the job, and must not hang the test if the job is gone).
    let (hold, done) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut w = std::fs::OpenOptions::new().write(true).open(&pipe)?;
        for i in 0..100 {
            writeln!(w, "not json {i}")?;
        }
        w.flush()?;
        let _ = done.recv(); // until the test ends
        std::io::Result::Ok(())
    });
    let (send, lines) = mpsc::channel();
    let log = job.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(log).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    // All 100 told, one by one (10 a second) or in counts, while the pipe is still open.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut one_by_one, mut counted) = (0, 0);
    while one_by_one + counted < 100 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).unwrap_or_else(|_| {
            panic!("{one_by_one} logged one by one and {counted} counted in 60 s, of 100")
        });
        one_by_one += line.contains("dead letter reason=") as u64;
        counted += (line.split("count=").nth(1))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    assert_eq!(one_by_one + counted, 100);
    assert!(counted > 0, "every one logged: more than 10 a second");
    drop(hold);
}

/// A `RUST_LOG` that does not parse is said (the default was used without a word), and an empty
/// one is as none (it logged nothing, dead letters included).
#[test]
fn a_rust_log_that_does_not_parse_is_said() {
    let dir = scratch("replay_bad_rust_log");
    let input = dir.join("in.ndjson");
    std::fs::write(&input, INPUT).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tampines"))
        .args(["replay", input.to_str().unwrap(), "--out", "/dev/null"])
        .env("RUST_LOG", "info,tampines=[bad")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("tampines: RUST_LOG is not a filter (")
            && first.ends_with("); logging as by default (error,tampines=warn)"),
        "{stderr}"
    );
    // ... and the default holds: the dead letters at warn.
    assert!(
        stderr.contains("WARN tampines::dead_letters: dead letter"),
        "{stderr}"
    );
    // An empty one is as none (it logged nothing at all).
    let out = Command::new(env!("CARGO_BIN_EXE_tampines"))
        .args(["replay", input.to_str().unwrap(), "--out", "/dev/null"])
        .env("RUST_LOG", "")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WARN tampines::dead_letters: dead letter"),
        "{stderr}"
    );
}

/// With `--metrics-addr HOST:0` the system chooses the port, and a line at the default level
/// names it (only an info line did, which the default level hides): the port it names serves.
#[cfg(unix)]
#[test]
fn a_metrics_port_the_system_chose_is_named() {
    let (_job, _log, addr) = serving_metrics("replay_metrics_port_0");
    assert!(!addr.ends_with(":0"), "{addr}");
    assert!(
        common::get(&addr, "/metrics").starts_with("HTTP/1.1 200"),
        "{addr}"
    );
}

/// A worker thread the system refuses ends the job with exit 1 and a line that says which threads
/// and why (timely said only `Os { code: 11, kind: WouldBlock, .. }`). The job runs as `nobody`
/// with `RLIMIT_NPROC` at 1 (root is not held to it), from a copy of the binary in a folder of
/// the system's temporary one, which `nobody` may read wherever the checkout lies.
#[cfg(target_os = "linux")]
#[test]
fn a_worker_thread_the_system_refuses_is_said() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("tampines-refused-thread-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("tampines");
    std::fs::copy(env!("CARGO_BIN_EXE_tampines"), &bin).unwrap();
    let input = dir.join("one.ndjson");
    std::fs::write(&input, trade_a(1070, 1, "10.5")).unwrap();
    std::fs::set_permissions(&input, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["prlimit", "--nproc=1"])
        .arg(&bin)
        .args(["replay", input.to_str().unwrap(), "--out", "/dev/null"])
        .env_remove("RUST_LOG")
        .output()
        .expect("setpriv and prlimit (util-linux)");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("tampines: starting the workers' threads: ")
            && last.ends_with("(the system refused a thread: too many for this user, `ulimit -u`, or too little memory)"),
        "{stderr}"
    );
}

/// Without `--out` or `--redis` a replay computes its results, writes none and says so at the
/// default level (it said only its counts, as if it had found no results); with a sink, not.
#[test]
fn a_job_without_a_sink_says_nothing_is_written() {
    let dir = scratch("replay_without_a_sink");
    let input = dir.join("events.ndjson");
    std::fs::write(&input, trade_a(1070, 1, "10.5")).unwrap();
    let replay = |sink: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tampines"))
            .arg("replay")
            .arg(&input)
            .args(sink)
            .env_remove("RUST_LOG")
            .output()
            .expect("run tampines");
        assert!(out.status.success(), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    };
    let said = "neither --out nor --redis: results are computed but not written";
    let (stdout, stderr) = replay(&[]);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains(said), "{stderr}");
    assert!(stderr.contains("read 1 processed 1 "), "{stderr}");
    let (stdout, stderr) = replay(&["--out", "-"]);
    assert!(!stderr.contains(said), "{stderr}");
    assert!(
        stdout.ends_with("{\"kind\":\"progress\",\"ts\":1100}\n"),
        "{stdout}"
    );
}

/// At most 8 metrics connections of one client (32 in all) are answered at once: one more is
/// closed at once, not held (clients that opened hundreds and sent nothing took the file
/// descriptors the job needs), and once the silent ones close a scrape is answered.
#[cfg(unix)]
#[test]
fn metrics_connections_beyond_8_of_a_client_are_closed() {
    let (_job, _log, metrics) = serving_metrics("replay_metrics_connections");
    let deadline = Instant::now() + Duration::from_secs(60);
    assert!(common::get_within(&metrics, "/metrics", deadline).starts_with("HTTP/1.1 200"));
    let silent: Vec<std::net::TcpStream> = (0..8)
        .map(|_| std::net::TcpStream::connect(&metrics).unwrap())
        .collect();
    // A whole request on one more: closed unanswered (without the bound it got its 200).
    let mut one_more = std::net::TcpStream::connect(&metrics).unwrap();
    one_more
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let _ = one_more.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = Vec::new();
    let _ = one_more.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "the 9th connection was answered"
    );
    drop(silent);
    assert!(common::get_within(&metrics, "/metrics", deadline).starts_with("HTTP/1.1 200"));
}

/// A metrics request must arrive whole within 5 s: a client sending a byte every 200 ms, never
/// ending its headers, is cut off (it held its thread for as long as it went on), and the next
/// scrape is answered.
#[cfg(unix)]
#[test]
fn a_metrics_request_that_never_ends_is_cut_off() {
    let (_job, _log, metrics) = serving_metrics("replay_metrics_slow_client");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut slow = loop {
        if let Ok(s) = std::net::TcpStream::connect(&metrics) {
            break s;
        }
        assert!(Instant::now() < deadline, "no metrics within 60 s");
        std::thread::sleep(Duration::from_millis(20)); // poll interval, bounded by the deadline
    };
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let request = b"GET /metrics HTTP/1.1\r\nX-Slow: ";
    let started = Instant::now();
    let mut cut_off = None;
    // 40 s of bytes, one every 200 ms (the read's timeout): the first ones are the request line.
    for i in 0..200 {
        if slow
            .write_all(&[request.get(i).copied().unwrap_or(b'a')])
            .is_err()
        {
            cut_off = Some(started.elapsed());
            break;
        }
        let mut byte = [0u8; 1];
        match slow.read(&mut byte) {
            Ok(0) => {
                cut_off = Some(started.elapsed());
                break;
            }
            Ok(_) => panic!("an answer to a request never ended"),
            Err(_) => {} // nothing yet: the read's timeout
        }
    }
    let cut_off = cut_off.expect("the slow request was never cut off");
    assert!(cut_off < Duration::from_secs(15), "{cut_off:?}");
    assert!(common::get(&metrics, "/metrics").starts_with("HTTP/1.1 200"));
}
