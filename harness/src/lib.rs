//! Incremental correctness: the dataflow's output at every progress mark must equal a reference
//! model recomputed from scratch, for any worker count, batching and granularity.
//!
//! - [`model`]: the deliberately simple reference model;
//! - [`generate`]: seeded adversarial inputs;
//! - [`run`]: the real dataflow, in-process;
//! - [`check`]: runs both and reports the first difference, with the seed.

#![warn(missing_docs)]

pub mod generate;
pub mod model;
pub mod run;

use serde_json::Value;
use tampines_dataflows::config::Config;

/// Runs the dataflow over `inputs` with `workers` workers, reading them as `reading` says, and
/// compares every progress mark, the accounting and the dead letters with the model. `Err`
/// describes the first difference; `label` (the seed, the settings) starts every message.
pub fn check(
    label: &str,
    inputs: &[Vec<String>],
    config: &Config,
    workers: usize,
    reading: run::Reading,
) -> Result<model::Expected, String> {
    let expected = model::expected(inputs, config);
    check_against(&expected, label, inputs, config, workers, reading)?;
    Ok(expected)
}

/// [`check`] against the model's `expected` output of `inputs` under `config`, computed once
/// for several runs (the model is the slow side).
pub fn check_against(
    expected: &model::Expected,
    label: &str,
    inputs: &[Vec<String>],
    config: &Config,
    workers: usize,
    reading: run::Reading,
) -> Result<(), String> {
    let run = run::run(inputs, config, workers, reading);
    let actual: Vec<model::Mark> = run
        .published
        .iter()
        .map(|b| model::Mark {
            time: b.time,
            changed: b
                .changes
                .iter()
                .filter_map(|c| c.json.as_deref())
                .map(|j| serde_json::from_str(j).expect("records are JSON"))
                .collect(),
            removed: b
                .changes
                .iter()
                .filter(|c| c.json.is_none())
                .map(|c| (c.key().to_string(), c.score.unwrap_or(0)))
                .collect(),
        })
        .collect();
    let fail = |what: String| Err(format!("{label} (workers {workers}, {reading:?}): {what}"));
    let times = |m: &[model::Mark]| m.iter().map(|m| m.time).collect::<Vec<_>>();
    for (i, (a, e)) in actual.iter().zip(&expected.marks).enumerate() {
        if a.time != e.time {
            return fail(format!(
                "mark #{i}: published {} but expected {}",
                a.time, e.time
            ));
        }
        if a.changed != e.changed {
            let diff = first_difference(&a.changed, &e.changed);
            return fail(format!("mark {}: records differ: {diff}", a.time));
        }
        let (mut ra, mut re) = (a.removed.clone(), e.removed.clone());
        ra.sort();
        re.sort();
        if ra != re {
            return fail(format!(
                "mark {}: removed candles {ra:?}, expected {re:?}",
                a.time
            ));
        }
    }
    if actual.len() != expected.marks.len() {
        return fail(format!(
            "published {} marks, expected {}: {:?} vs {:?}",
            actual.len(),
            expected.marks.len(),
            times(&actual).iter().rev().take(3).collect::<Vec<_>>(),
            times(&expected.marks)
                .iter()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
        ));
    }
    if run.totals != expected.totals {
        return fail(format!(
            "counters {:?}, expected {:?}",
            run.totals, expected.totals
        ));
    }
    if run.state != expected.state {
        return fail(format!(
            "state gauges at the end {:?}, expected {:?}",
            run.state, expected.state
        ));
    }
    if !run.totals.balanced() {
        return fail(format!("counters do not add up: {:?}", run.totals));
    }
    // Each with its line, byte for byte (the payload a dead-letter output carries).
    let got_dead = run.dead.iter().map(|d| {
        let payload = String::from_utf8_lossy(&d.payload).into_owned();
        (d.reason.clone(), payload)
    });
    let mut want = expected.dead.clone();
    let mut got: Vec<(String, String)> = got_dead.collect();
    want.sort();
    got.sort();
    if got != want {
        return fail(format!("dead letters {got:?}, expected {want:?}"));
    }
    Ok(())
}

fn first_difference(actual: &[Value], expected: &[Value]) -> String {
    for (a, e) in actual.iter().zip(expected) {
        if a != e {
            return format!("\n  published {a}\n  expected  {e}");
        }
    }
    match actual.len().cmp(&expected.len()) {
        std::cmp::Ordering::Greater => format!("extra record {}", actual[expected.len()]),
        _ => format!("missing record {}", expected[actual.len()]),
    }
}
