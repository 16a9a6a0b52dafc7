//! Flamingo, bounded (`make flamingo` runs it whole): 1,000 requests of
//! the shipped corpus (the hostile set, then the generated one) sent to
//! FL1 and to FL2 (graft-edge in front of an FL1 of its own) at once,
//! with every module in `lua`, then in `rust`. Every pair of responses
//! must be alike (the accepted differences of `flamingo::ACCEPTED` left
//! out, and counted); with every module in `lua` graft-edge passes every
//! request to FL1 whole, and with every module in `rust` none (a Host no
//! zone serves goes to FL1 as sent, in both).
//!
//! Needs the built graft-edge (`make edge`, or `GRAFT_EDGE`).
use graft_tests::corpus::{self, CorpusRequest};
use graft_tests::flamingo::{self, Run};
use serde_json::Value;

const REQUESTS: usize = 1_000;
const IN_FLIGHT: usize = 64;

fn shipped() -> (Value, Vec<CorpusRequest>) {
    let dir = graft_tests::root().join("tests/corpus");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let config: Value = serde_json::from_str(&read("config.json")).unwrap();
    let mut requests = corpus::parse(&read("hostile.txt")).unwrap();
    requests.extend(corpus::parse(&read("requests.txt")).unwrap());
    requests.truncate(REQUESTS);
    (config, requests)
}

fn zones(config: &Value) -> Vec<String> {
    config["zones"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

/// What is wrong with a run: its differences and log errors, if any.
fn unlike(run: &Run, requests: &[CorpusRequest]) -> Option<String> {
    (run.different() > 0 || !run.log_errors.is_empty()).then(|| {
        format!(
            "{}: {} differences, {} log errors{}",
            run.name,
            run.different(),
            run.log_errors.len(),
            run.render(requests)
        )
    })
}

#[test]
fn fl1_and_fl2_answer_alike_and_fl2_keeps_what_is_in_rust() {
    let (config, requests) = shipped();
    let all = zones(&config);
    let run = |name: &str, rust: &[String]| {
        let c = flamingo::with_rust_zones(&config, rust);
        flamingo::run(name, &c, rust, &requests, IN_FLIGHT)
    };
    let lua = run("every module in lua", &[]);
    let rust = run("every module in rust", &all);
    let mut wrong: Vec<String> = [&lua, &rust]
        .iter()
        .filter_map(|r| unlike(r, &requests))
        .collect();
    // A Host no zone serves goes to FL1 as sent, in every run.
    let unzoned = |p: &flamingo::Passed| p.zone.is_empty() && p.reason == "zone";

    // Every module in lua: every request goes to FL1 whole, from its
    // zone's first step, for that step's mode.
    let (passed, total) = lua.passed_share();
    if total == 0 || passed != total {
        wrong.push(format!(
            "every module in lua: {passed} of {total} passed to FL1"
        ));
    }
    for p in lua.passed.keys().filter(|p| !unzoned(p)) {
        let first = config["zones"][&p.zone]["modules"][0]["module"].as_str();
        if p.reason != "mode" || Some(p.module.as_str()) != first {
            wrong.push(format!("every module in lua: passed {p:?}"));
        }
    }
    // Every module in rust: nothing of a zone goes to FL1, for any reason.
    for (p, n) in rust.passed.iter().filter(|(p, _)| !unzoned(p)) {
        wrong.push(format!("every module in rust: {n} passed {p:?}"));
    }
    let (_, total) = rust.passed_share();
    if total == 0 {
        wrong.push("every module in rust: graft-edge took no request".to_string());
    }
    assert!(
        wrong.is_empty(),
        "{}\n\n{}",
        wrong.join("\n"),
        flamingo::summary(&[lua, rust])
    );
}
