use std::path::Path;

use super::*;
use crate::error::{Error, ErrorKind};
use crate::shared::{CounterTable, WindowTable};
use crate::{run_request_phase, Count, Kill, Outcome};
use graft_contract::{Context, Decision, LocalWindows, OwnedRequest};

fn parse(text: &str) -> Result<Config, Error> {
    Config::parse(Path::new("/etc/graft/graft.json"), text.as_bytes())
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.to_string(),
    }
}

const GOOD: &str = r#"{ "zones": {
    "example.com": { "modules": [
        { "module": "redirects", "mode": "rust",
          "config": { "rules": [ { "from": "/old", "to": "/new" } ] } },
        { "module": "probe", "mode": "shadow", "config": { "panic_on": "/boom" } } ] },
    "*": { "modules": [ { "module": "probe", "mode": "lua" } ] } } }"#;

#[test]
fn loads_zones_in_order_and_finds_them_by_host() {
    let c = parse(GOOD).unwrap();
    let z = &c.zones[c.zone_index(b"example.com").unwrap()];
    assert_eq!(z.name, "example.com");
    let names: Vec<_> = z.steps.iter().map(|s| (s.module_name, s.mode)).collect();
    assert_eq!(names, [("redirects", Mode::Rust), ("probe", Mode::Shadow)]);
    let other = &c.zones[c.zone_index(b"other.org").unwrap()];
    assert_eq!(other.name, "*");
    let plan: serde_json::Value = serde_json::from_str(&z.plan_json()).unwrap();
    assert_eq!(plan["steps"][1]["config"]["panic_on"], "/boom");
    assert_eq!(plan["steps"][0]["mode"], "rust");
}

#[test]
fn no_default_zone_means_no_zone() {
    let c = parse(r#"{ "zones": { "a.example": { "modules": [] } } }"#).unwrap();
    assert_eq!(c.zone_index(b"b.example"), None);
}

#[test]
fn each_load_is_a_new_generation() {
    let (a, b) = (parse(GOOD).unwrap(), parse(GOOD).unwrap());
    assert_ne!(a.generation, b.generation);
}

#[test]
fn errors_name_file_zone_module_and_field() {
    let cases = [
        (
            r#"{ "zones": { "a.com": { "modules": [ { "module": "redirectz", "mode": "rust" } ] } } }"#,
            r#"/etc/graft/graft.json: zone "a.com": module #0 "redirectz": field "module": unknown module; known: redirects, "#,
        ),
        (
            r#"{ "zones": { "a.com": { "modules": [ { "module": "redirects", "mode": "fast", "config": { "rules": [] } } ] } } }"#,
            r#"/etc/graft/graft.json: zone "a.com": module #0 "redirects": field "mode": unknown variant `fast`, expected one of `lua`, `rust`, `shadow`, `canary`"#,
        ),
        (
            r#"{ "zones": { "a.com": { "modules": [ { "module": "redirects", "mode": "rust", "config": { "rules": [ { "from": "/a", "to": "/b\r\nSet-Cookie: x" } ] } } ] } } }"#,
            r#"/etc/graft/graft.json: zone "a.com": module #0 "redirects": field "config.rules[0].to": header value has a CR, LF, NUL or other control character"#,
        ),
        (
            r#"{ "zones": { "A.com": { "modules": [] } } }"#,
            r#"/etc/graft/graft.json: zone "A.com": a zone is a lower-case host name (letters, digits, "-", ".") or "*""#,
        ),
        (
            r#"{ "zones": { "a.com": { "module": [] } } }"#,
            r#"/etc/graft/graft.json: zone "a.com": field "module": unknown field `module`, expected `modules`"#,
        ),
    ];
    for (text, want) in cases {
        let got = error(text);
        assert!(got.starts_with(want), "got {got}\nwant {want}");
    }
}

#[test]
fn canary_is_sticky_and_near_its_share() {
    let c = parse(
        r#"{ "zones": { "a.com": { "modules": [
        { "module": "probe", "mode": "canary", "percent": 30 },
        { "module": "probe", "mode": "canary", "percent": 50, "sticky": "header:X-User" } ] } } }"#,
    )
    .unwrap();
    let (by_client, by_user) = (&c.zones[0].steps[0], &c.zones[0].steps[1]);
    let mut on_rust = 0;
    for i in 0..1000u32 {
        let mut req = OwnedRequest::get("a.com", "/");
        req.client = Some(std::net::IpAddr::from(i.to_be_bytes()));
        let first = by_client.mode_for(&req);
        assert_eq!(by_client.mode_for(&req), first, "a client changed sides");
        on_rust += usize::from(first == Mode::Rust);
        req.headers
            .push((b"X-User".to_vec(), format!("u{}", i % 10).into_bytes()));
        let mut other = req.clone();
        other.client = Some("192.0.2.1".parse().unwrap());
        assert_eq!(
            by_user.mode_for(&req),
            by_user.mode_for(&other),
            "the header did not decide"
        );
    }
    assert!(
        (250..350).contains(&on_rust),
        "{on_rust} of 1000 on Rust for 30 %"
    );
    for bad in [
        r#"{ "module": "probe", "mode": "canary" }"#,
        r#"{ "module": "probe", "mode": "canary", "percent": 101 }"#,
        r#"{ "module": "probe", "mode": "rust", "percent": 5 }"#,
        r#"{ "module": "probe", "mode": "canary", "percent": 5, "sticky": "cookie" }"#,
    ] {
        let e = error(&format!(
            r#"{{ "zones": {{ "a.com": {{ "modules": [ {bad} ] }} }} }}"#
        ));
        assert!(e.contains(r#"module #0 "probe": field ""#), "{e}");
    }
}

#[test]
fn malformed_json_names_line_and_column() {
    let e = error("{ \"zones\": {\n  \"a.com\": { \"modules\": [ }\n} }");
    assert!(
        e.starts_with("/etc/graft/graft.json: invalid JSON: "),
        "{e}"
    );
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn limits_are_checked_and_named() {
    let steps = vec![r#"{ "module": "probe", "mode": "lua" }"#; MAX_MODULES_PER_ZONE + 1].join(",");
    let e = error(&format!(
        r#"{{ "zones": {{ "a.com": {{ "modules": [ {steps} ] }} }} }}"#
    ));
    assert!(e.contains("over the limit of 64"), "{e}");
}

/// Configuration at scale: ten thousand zones, each with a pipeline, load
/// and validate (how fast and in how much memory is `make bench`'s to say).
#[test]
fn ten_thousand_zones_load() {
    let zone = |i: usize| {
        format!(
            r#""z{i}.example": {{ "modules": [
                {{ "module": "url_normalize", "mode": "rust" }},
                {{ "module": "waf", "mode": "rust", "config": {{ "rules": [
                    {{ "id": "a", "when": {{ "field": "path", "op": "regex", "value": "^/admin/{i}" }}, "action": "block" }} ],
                    "signatures": ["sql_injection"] }} }},
                {{ "module": "redirects", "mode": "lua", "config": {{ "rules": [ {{ "from": "/old/{i}", "to": "/new" }} ] }} }} ] }}"#
        )
    };
    let zones: Vec<String> = (0..10_000).map(zone).collect();
    let c = parse(&format!(r#"{{ "zones": {{ {} }} }}"#, zones.join(","))).unwrap();
    assert_eq!(c.zones.len(), 10_000);
    let z = &c.zones[c.zone_index(b"z9999.example").unwrap()];
    assert_eq!(z.steps.len(), 3);
}

#[test]
fn a_panic_in_a_module_is_an_outcome_and_is_counted() {
    crate::dispatch::install_panic_hook();
    let c = parse(GOOD).unwrap();
    let z = &c.zones[c.zone_index(b"example.com").unwrap()];
    let probe = &z.steps[1];
    let counters = LocalWindows::default();
    let ctx = Context::local(0, &counters);
    let out = run_request_phase(probe, &OwnedRequest::get("example.com", "/boom/x"), &ctx);
    assert_eq!(out, Outcome::Panicked("probe panics on /boom/x".into()));
    assert_eq!(probe.counters.get(Count::Panic), 1);
    match run_request_phase(probe, &OwnedRequest::get("example.com", "/fine"), &ctx) {
        Outcome::Decided(d) => match d.into_decision() {
            Decision::Respond(r) => assert_eq!(r.body, b"rust /fine\n"),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    let counters: serde_json::Value = serde_json::from_str(&c.counters_json(0)).unwrap();
    assert_eq!(counters["zones"]["example.com"][1]["panic"], 1);
    assert_eq!(counters["zones"]["example.com"][1]["module"], "probe");
}

fn leaked_tables() -> (CounterTable<'static>, WindowTable<'static>) {
    use std::sync::atomic::AtomicU64;
    let words = |n: usize| -> &'static [AtomicU64] {
        Box::leak((0..n).map(|_| AtomicU64::new(0)).collect())
    };
    (
        CounterTable::new(words(2 * (1 + 512))),
        WindowTable::new(words(1024)),
    )
}

#[test]
fn a_rollback_threshold_sends_the_step_back_to_lua() {
    let c = parse(r#"{ "zones": { "a.com": { "modules": [
        { "module": "probe", "mode": "rust", "rollback": { "max_rate": 0.2, "min_requests": 10, "window": 60 } } ] } } }"#)
    .unwrap();
    let (counters, windows) = leaked_tables();
    c.attach(counters, windows);
    let step = &c.zones[0].steps[0];
    let req = OwnedRequest::get("a.com", "/");
    for _ in 0..10 {
        assert_eq!(step.record(Count::Rust, 1000), None);
    }
    assert_eq!(
        step.record(Count::Fallback, 1000),
        None,
        "1 of 11 is under 20%"
    );
    assert_eq!(
        step.record(Count::Fallback, 1000),
        None,
        "2 of 12 is under 20%"
    );
    let why = step
        .record(Count::Fallback, 1000)
        .expect("3 of 13 is over 20%")
        .expect("the switch is killed");
    assert!(why.contains("3 of 13"), "{why}");
    assert_eq!(step.mode_for(&req), Mode::Lua);
    assert_eq!(step.counters.kill(), Kill::Automatic);
    assert_eq!(step.record(Count::Fallback, 1000), None, "killed once");
    c.set_kill(Some("a.com"), "probe", Kill::Off).unwrap();
    assert_eq!(step.mode_for(&req), Mode::Rust);
}

#[test]
fn calls_over_a_time_budget_are_counted_and_past_its_threshold_roll_the_step_back() {
    let c = parse(r#"{ "zones": { "a.com": { "modules": [
        { "module": "probe", "mode": "rust", "budget": { "us": 100, "max_rate": 0.25, "min_requests": 8 } } ] },
        "b.com": { "modules": [
        { "module": "probe", "mode": "rust", "budget": { "us": 100 } },
        { "module": "probe", "mode": "rust" } ] } } }"#)
    .unwrap();
    let (counters, windows) = leaked_tables();
    c.attach(counters, windows);
    let with_threshold = &c.zones[0].steps[0];
    let [count_only, none] = &c.zones[1].steps[..] else {
        panic!("two steps")
    };
    let req = OwnedRequest::get("a.com", "/");
    assert_eq!(none.check_budget(u64::MAX, 1000), None, "no budget");
    for _ in 0..6 {
        assert_eq!(
            with_threshold.check_budget(100_000, 1000),
            None,
            "at the budget"
        );
    }
    let over = |nanos| with_threshold.check_budget(nanos, 1000).expect("over");
    assert_eq!(over(100_001).rollback, None, "1 of 7: under min_requests");
    assert_eq!(over(200_000).rollback, None, "2 of 8 is 25%: not over it");
    let why = over(300_000)
        .rollback
        .expect("3 of 9 is over 25%")
        .expect("the switch is killed");
    assert_eq!(
        why,
        "rolled back to lua: 3 of 9 calls went over its time budget of 100 µs in 60 s, over 25%"
    );
    assert_eq!(with_threshold.mode_for(&req), Mode::Lua);
    assert_eq!(over(300_000).rollback, None, "killed once");
    assert_eq!(with_threshold.counters.get(Count::OverBudget), 4);
    for _ in 0..20 {
        let o = count_only.check_budget(1_000_000, 1000).expect("over");
        assert_eq!(
            o,
            OverBudget {
                budget_us: 100,
                rollback: None
            }
        );
    }
    assert_eq!(count_only.counters.get(Count::OverBudget), 20);
    assert_eq!(
        count_only.mode_for(&req),
        Mode::Rust,
        "no threshold: never rolled back"
    );
    let json = c.counters_value(1000);
    assert_eq!(json["zones"]["b.com"][0]["budget_us"], 100);
    assert!(json["zones"]["b.com"][1].get("budget_us").is_none());
}

#[test]
fn a_bad_time_budget_is_refused_with_its_field_named() {
    for (budget, field) in [
        (r#"{ "us": 0 }"#, "budget.us"),
        (r#"{ "us": 20000000 }"#, "budget.us"),
        (r#"{ "us": 10, "max_rate": 1.5 }"#, "budget.max_rate"),
        (r#"{ "us": 10, "max_rate": 1.0 }"#, "budget.max_rate"),
        (
            r#"{ "us": 10, "max_rate": 0.1, "window": 0 }"#,
            "budget.window",
        ),
        (r#"{ "us": 10, "limit": 3 }"#, "budget.limit"),
        (r#"{ "us": -1 }"#, "budget.us"),
    ] {
        let text = format!(
            r#"{{ "zones": {{ "a.com": {{ "modules": [ {{ "module": "probe", "mode": "rust", "budget": {budget} }} ] }} }} }}"#
        );
        let got = error(&text);
        let want = format!(r#"zone "a.com": module #0 "probe": field "{field}""#);
        assert!(got.contains(&want), "{budget}: got {got}\nwant {want}");
    }
}

#[test]
fn kill_switches_per_zone_and_everywhere() {
    let c = parse(GOOD).unwrap();
    let (counters, windows) = leaked_tables();
    c.attach(counters, windows);
    let z = &c.zones[c.zone_index(b"example.com").unwrap()];
    let req = OwnedRequest::get("example.com", "/");
    assert_eq!(z.steps[0].mode_for(&req), Mode::Rust);
    c.set_kill(Some("example.com"), "redirects", Kill::Manual)
        .unwrap();
    assert_eq!(z.steps[0].mode_for(&req), Mode::Lua);
    assert_eq!(
        z.steps[1].mode_for(&req),
        Mode::Shadow,
        "another module is untouched"
    );
    c.set_kill(Some("example.com"), "redirects", Kill::Off)
        .unwrap();
    c.set_kill(None, "probe", Kill::Manual).unwrap();
    assert_eq!(z.steps[1].mode_for(&req), Mode::Lua);
    assert_eq!(z.steps[0].mode_for(&req), Mode::Rust);
    assert!(c
        .set_kill(Some("nowhere.com"), "probe", Kill::Manual)
        .is_err());
    assert!(c.set_kill(None, "nothing", Kill::Manual).is_err());
}

#[test]
fn the_default_zones_switch_is_not_the_modules_everywhere() {
    let c = parse(
        r#"{ "zones": { "*": { "modules": [ { "module": "probe", "mode": "rust" } ] },
        "a.com": { "modules": [ { "module": "probe", "mode": "rust" } ] } } }"#,
    )
    .unwrap();
    let (counters, windows) = leaked_tables();
    c.attach(counters, windows);
    let step = |host: &[u8]| &c.zones[c.zone_index(host).unwrap()].steps[0];
    c.set_kill(None, "probe", Kill::Manual).unwrap();
    c.set_kill(Some("*"), "probe", Kill::Off).unwrap();
    assert_eq!(
        step(b"other.com").counters.kill(),
        Kill::Manual,
        "still killed everywhere"
    );
    assert_eq!(step(b"a.com").counters.kill(), Kill::Manual);
    c.set_kill(None, "probe", Kill::Off).unwrap();
    c.set_kill(Some("*"), "probe", Kill::Manual).unwrap();
    assert_eq!(step(b"other.com").counters.kill(), Kill::Manual);
    assert_eq!(
        step(b"a.com").counters.kill(),
        Kill::Off,
        "only the \"*\" zone's"
    );
}

#[test]
fn a_worker_started_past_its_cycles_count_is_a_restart() {
    let c = parse(GOOD).unwrap();
    let (counters, windows) = leaked_tables();
    c.attach(counters, windows);
    c.count_worker_start(1, 2);
    c.count_worker_start(1, 2);
    assert_eq!((c.worker_starts(), c.worker_restarts()), (2, 0));
    c.count_worker_start(1, 2);
    assert_eq!((c.worker_starts(), c.worker_restarts()), (3, 1), "one died");
    // A reload: the next cycle's two workers.
    c.count_worker_start(2, 2);
    c.count_worker_start(2, 2);
    assert_eq!((c.worker_starts(), c.worker_restarts()), (5, 1));
    c.count_worker_start(2, 2);
    assert_eq!(c.worker_restarts(), 2);
}

#[test]
fn the_totals_name_the_kill_switches_killed() {
    let c = std::sync::Arc::new(
        parse(r#"{ "zones": { "*": { "modules": [ { "module": "probe", "mode": "rust" } ] },
        "a.com": { "modules": [ { "module": "probe", "mode": "rust" }, { "module": "probe", "mode": "rust" } ] } } }"#)
        .unwrap(),
    );
    let (counters, windows) = leaked_tables();
    c.attach(counters, windows);
    let text = crate::metrics::totals_text(&c);
    assert!(text.contains("# TYPE graft_kill_switch gauge"), "{text}");
    assert!(!text.contains("graft_kill_switch{"), "none killed: {text}");
    c.set_kill(None, "probe", Kill::Manual).unwrap();
    c.set_kill(Some("a.com"), "probe", Kill::Automatic).unwrap();
    assert_eq!(
        c.switches_killed().into_iter().collect::<Vec<_>>(),
        vec![(("probe", None), 1), (("probe", Some("a.com")), 2)]
    );
    let text = crate::metrics::totals_text(&c);
    assert!(
        text.contains(r#"graft_kill_switch{module="probe"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"graft_kill_switch{zone="a.com",module="probe"} 2"#),
        "one line for the zone's two steps: {text}"
    );
    assert_eq!(text.matches("graft_kill_switch{").count(), 2, "{text}");
}

#[test]
fn a_kill_switch_outlives_its_zone_and_is_revived_without_it() {
    let with_zone = parse(GOOD).unwrap();
    let (counters, windows) = leaked_tables();
    let table = counters;
    with_zone.attach(counters, windows);
    with_zone
        .set_kill(Some("example.com"), "redirects", Kill::Manual)
        .unwrap();
    // A later configuration without the zone, on the same shared table.
    let without = parse(
        r#"{ "zones": { "other.com": { "modules": [ { "module": "probe", "mode": "rust" } ] } } }"#,
    )
    .unwrap();
    without.attach(table, windows);
    let e = without
        .set_kill(Some("example.com"), "redirects", Kill::Manual)
        .unwrap_err();
    assert!(e.to_string().contains("no zone \"example.com\""), "{e}");
    let e = without
        .set_kill(Some("other.com"), "redirects", Kill::Manual)
        .unwrap_err();
    assert!(e.to_string().contains("has no module"), "{e}");
    // Resetting it there clears it: the zone brought back is not killed.
    without
        .set_kill(Some("example.com"), "redirects", Kill::Off)
        .unwrap();
    let again = parse(GOOD).unwrap();
    again.attach(table, windows);
    let z = &again.zones[again.zone_index(b"example.com").unwrap()];
    assert_eq!(z.steps[0].counters.kill(), Kill::Off);
    assert_eq!(
        z.steps[0].mode_for(&OwnedRequest::get("example.com", "/")),
        Mode::Rust
    );
}

#[test]
fn a_configuration_must_fit_the_shared_counters() {
    use std::sync::atomic::AtomicU64;
    let c = parse(GOOD).unwrap();
    let steps: usize = c.zones.iter().map(|z| z.steps.len()).sum();
    let words = |pairs: usize| -> Vec<AtomicU64> {
        (0..2 * (1 + pairs)).map(|_| AtomicU64::new(0)).collect()
    };
    let tiny = words(16);
    let e = c.fits(&CounterTable::new(&tiny)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Capacity);
    assert!(
        e.to_string().contains(&format!("{steps} steps need")),
        "{e}"
    );
    let roomy = words(4096);
    assert!(c.fits(&CounterTable::new(&roomy)).is_ok());
}

#[test]
fn a_module_that_reads_bodies_needs_its_zone_to_say_how_much() {
    let waf = r#"{ "module": "waf", "mode": "rust", "config": { "signatures": ["sql_injection"], "inspect_body": true } }"#;
    let got = error(&format!(
        r#"{{ "zones": {{ "a.com": {{ "modules": [ {{ "module": "probe", "mode": "lua" }}, {waf} ] }} }} }}"#
    ));
    assert!(
        got.contains(
            r#"zone "a.com": module #1 "waf": field "body": this module reads request bodies"#
        ),
        "{got}"
    );
    for (body, field) in [
        (r#"{ "max_bytes": 0, "over": "inspect" }"#, "body.max_bytes"),
        (r#"{ "max_bytes": 1024, "over": "skip" }"#, "body.over"),
        (
            r#"{ "max_bytes": 1024, "over": { "respond": 200 } }"#,
            "body.over",
        ),
        (r#"{ "max_bytes": 1024 }"#, "body"),
    ] {
        let got = error(&format!(
            r#"{{ "zones": {{ "a.com": {{ "body": {body}, "modules": [ {waf} ] }} }} }}"#
        ));
        assert!(
            got.contains(&format!(r#"zone "a.com": field "{field}""#)),
            "{body}: {got}"
        );
    }
    let c = parse(&format!(
        r#"{{ "zones": {{ "a.com": {{ "body": {{ "max_bytes": 1024, "over": {{ "respond": 413 }} }}, "modules": [ {waf} ] }},
            "b.com": {{ "body": {{ "max_bytes": 1024, "over": "inspect" }}, "modules": [ {{ "module": "probe", "mode": "rust" }} ] }} }} }}"#
    ))
    .unwrap();
    let a = &c.zones[c.zone_named("a.com").unwrap()];
    assert_eq!(
        a.body,
        Some(BodyLimit {
            max_bytes: 1024,
            over: OverLimit::Respond(413)
        })
    );
    let plan: serde_json::Value = serde_json::from_str(&a.plan_json()).unwrap();
    assert_eq!(
        plan["body"],
        serde_json::json!({ "max_bytes": 1024, "over": { "respond": 413 } })
    );
    let b = &c.zones[c.zone_named("b.com").unwrap()];
    assert_eq!(b.body, None, "no module there reads bodies: none is read");
}

#[test]
fn a_condition_on_a_body_field_in_any_module_needs_a_body_limit() {
    for module in [
        r#"{ "module": "headers", "mode": "rust", "config": { "rules": [ { "when": { "field": "json", "op": "equals", "value": "x" }, "request": [ { "set": "X-A", "value": "1" } ] } ] } }"#,
        r#"{ "module": "rate_limit", "mode": "rust", "config": { "limits": [ { "name": "l", "key": "client", "limit": 1, "window": 1, "when": { "field": "body_arg:user", "op": "equals", "value": "a" } } ] } }"#,
    ] {
        let got = error(&format!(
            r#"{{ "zones": {{ "a.com": {{ "modules": [ {module} ] }} }} }}"#
        ));
        assert!(
            got.contains(r#"field "body": this module reads request bodies"#),
            "{got}"
        );
        let with_limit = format!(
            r#"{{ "zones": {{ "a.com": {{ "body": {{ "max_bytes": 100, "over": "inspect" }}, "modules": [ {module} ] }} }} }}"#
        );
        let c = parse(&with_limit).unwrap();
        assert!(c.zones[0].body.is_some(), "the zone reads bodies for it");
    }
}
