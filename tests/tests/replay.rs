//! The shipped corpus (10,000 generated requests over a multi-zone
//! configuration, and the hand-written hostile set) through nginx: Lua
//! against Rust module by module, all modules, and shadow. Every response
//! must be the same, the shadow counters must show no difference, and the
//! error log must stay clean.
use graft_tests::{corpus, replay, root};

fn load(name: &str) -> String {
    std::fs::read_to_string(root().join("tests/corpus").join(name)).unwrap()
}

#[test]
fn the_corpus_answers_alike_in_lua_and_rust() {
    let config: serde_json::Value = serde_json::from_str(&load("config.json")).unwrap();
    let mut requests = corpus::parse(&load("hostile.txt")).unwrap();
    let hostile = requests.len();
    requests.extend(corpus::parse(&load("requests.txt")).unwrap());
    assert!(hostile > 50 && requests.len() >= 10_000 + hostile);

    let report = replay::replay(&config, &requests, &Default::default(), &mut |_| {});
    let rendered = report.render(&requests);
    assert!(report.clean(), "{rendered}");
    // 1 baseline + 7 modules + all + native + shadow: every module took a turn.
    assert_eq!(report.runs.len(), 11, "{rendered}");
    // The corpus exercises every module: each kind of answer occurs.
    for status in [200, 301, 302, 308, 400, 403, 404, 405, 406, 429] {
        let n = report
            .statuses
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n);
        assert!(n > 0, "no {status} in the baseline:\n{rendered}");
    }
}
