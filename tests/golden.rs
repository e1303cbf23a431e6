//! Golden cases as data: `tests/golden/<case>/input.ndjson` replayed with default options must
//! publish exactly `expected.ndjson`, compared mark by mark; the expected files also equal the
//! harness's reference model. After a deliberate change, `TAMPINES_BLESS=1 cargo test --test golden`
//! rewrites the expected files (review the diff).

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
        let out = scratch(&format!("golden_{name}")).join("out.ndjson");
        tampines(&[
            "replay",
            case.join("input.ndjson").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        let expected_path = case.join("expected.ndjson");
        if std::env::var_os("TAMPINES_BLESS").is_some() {
            std::fs::copy(&out, &expected_path).unwrap();
        }
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
    }
}
