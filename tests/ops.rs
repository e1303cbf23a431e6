//! The shipped operations files: Prometheus's own checker reads the alert rules, and its rule
//! tests (`ops/prometheus/alerts_test.yml`) show each alert firing in the situation it names
//! and staying quiet otherwise.

mod common;

use std::path::Path;
use std::process::Command;

/// `promtool` with `args`, in `ops/prometheus`: its output, after checking it succeeded.
fn promtool(args: &[&str]) -> String {
    common::ensure_package("prometheus", || {
        Command::new("promtool").arg("--version").output().is_ok()
    });
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/prometheus");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

/// The rules load, and Redis falling behind in an outage raises `TampinesRedisBehind` (its
/// first expression compared Redis's frontier with the output's, which an outage stops a few
/// seconds apart: it could not fire when Redis was down).
#[test]
fn the_alert_rules_load_and_fire_as_their_tests_say() {
    assert!(promtool(&["check", "rules", "alerts.yml"]).contains("SUCCESS: 10 rules found"));
    assert!(promtool(&["test", "rules", "alerts_test.yml"]).contains("SUCCESS"));
}
