//! Golden cases as data: `tests/golden/<case>/input.ndjson` replayed with default options must
//! publish exactly `expected.ndjson`, compared mark by mark, and dead-letter exactly
//! `expected.dlq.ndjson` (none where there is no such file). The expected files also equal the
//! harness's reference model, and those of a case without dead letters the independent reference
//! (`tests/reference/reference.py`, which shares no code with Tampines: the model renders its
//! records with the dataflow's writer). After a deliberate change, `TAMPINES_BLESS=1 cargo test
//! --test golden` rewrites the expected files (review the diff).

mod common;

use std::path::Path;

use common::{marks, scratch, tampines};
use tampines_dataflows::config::Config;

#[test]
fn golden_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 2);
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let dir = scratch(&format!("golden_{name}"));
        let (out, dlq) = (dir.join("out.ndjson"), dir.join("dlq.ndjson"));
        let input = case.join("input.ndjson");
        tampines(&[
            "replay",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--dlq",
            dlq.to_str().unwrap(),
        ]);
        let expected_path = case.join("expected.ndjson");
        let expected_dlq = case.join("expected.dlq.ndjson");
        let dead = std::fs::read_to_string(&dlq).unwrap();
        if std::env::var_os("TAMPINES_BLESS").is_some() {
            std::fs::copy(&out, &expected_path).unwrap();
            match dead.is_empty() {
                true => drop(std::fs::remove_file(&expected_dlq)),
                false => drop(std::fs::copy(&dlq, &expected_dlq).unwrap()),
            }
        }
        let want_dead = std::fs::read_to_string(&expected_dlq).unwrap_or_default();
        assert_eq!(dead, want_dead, "{name}: dead letters");
        let (actual, expected) = (marks(&out), marks(&expected_path));
        for (a, e) in actual.iter().zip(&expected) {
            assert_eq!(a.0, e.0, "{name}: mark");
            assert_eq!(a.1, e.1, "{name}: records at mark {}", a.0);
        }
        assert_eq!(actual.len(), expected.len(), "{name}: number of marks");

        let lines: Vec<String> = std::fs::read_to_string(case.join("input.ndjson"))
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        let model = tampines_harness::model::expected(&[lines], &Config::default());
        let model_marks: Vec<_> = model
            .marks
            .iter()
            .map(|m| (m.time, m.changed.clone()))
            .collect();
        assert_eq!(
            model_marks, expected,
            "{name}: expected file differs from the reference model"
        );
        let model_dead: Vec<(String, String)> = (want_dead.lines())
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|d| {
                (
                    d["reason"].as_str().unwrap().into(),
                    d["payload"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(model.dead, model_dead, "{name}: the model's dead letters");

        if want_dead.is_empty() {
            let checked = std::process::Command::new("python3")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/reference/reference.py"
                ))
                .args([&expected_path, &input])
                .output()
                .expect("run python3");
            assert!(
                checked.status.success(),
                "{name}: the independent reference: {}{}",
                String::from_utf8_lossy(&checked.stdout),
                String::from_utf8_lossy(&checked.stderr)
            );
        }
    }
}
