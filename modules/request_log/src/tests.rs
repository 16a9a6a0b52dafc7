use super::*;
use graft_contract::{LogOutcome, OwnedRequest};
use serde_json::json;

fn done() -> Completed<'static> {
    Completed {
        zone: "shop.example",
        status: 200,
        bytes_sent: 1234,
        time: 1_800_000_000,
    }
}

fn request() -> OwnedRequest {
    let mut r = OwnedRequest::get("shop.example", "/caf\u{e9}?q=\"x\"\\");
    r.headers
        .push((b"User-Agent".to_vec(), b"curl/8 \x01\xff".to_vec()));
    r.client = Some("127.0.0.9".parse().unwrap());
    r
}

#[test]
fn a_record_is_one_ascii_json_line_of_the_fields_in_order() {
    let m = RequestLog::from_config(&json!({ "path": "/tmp/x.jsonl",
        "fields": ["time", "zone", "method", "path", "query", "status", "bytes_sent", "client", "header:user-agent", "header:x-none"] }))
    .unwrap();
    let line = m.record(&request(), &done());
    assert_eq!(
        line,
        r#"{"time":1800000000,"zone":"shop.example","method":"GET","path":"/caf\u00c3\u00a9","query":"q=\"x\"\\","status":200,"bytes_sent":1234,"client":"127.0.0.9","header:user-agent":"curl/8 \u0001\u00ff","header:x-none":null}"#
    );
    let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
    assert_eq!(v["status"], 200);
    assert!(line.is_ascii() && !line.contains('\n'));
}

#[test]
fn values_are_cut_and_sampling_and_rate_are_bounded() {
    let m = RequestLog::from_config(&json!({ "path": "/tmp/x.jsonl", "fields": ["path"],
        "max_value_bytes": 4, "max_per_second": 3 }))
    .unwrap();
    assert_eq!(m.record(&request(), &done()), r#"{"path":"/caf"}"#);
    let outcomes: Vec<_> = (0..5)
        .map(|_| m.on_log(&request(), &done()).unwrap())
        .collect();
    assert!(matches!(outcomes[2], LogOutcome::Write { .. }));
    assert!(matches!(outcomes[3], LogOutcome::Dropped { .. }));
    let next_second = Completed {
        time: done().time + 1,
        ..done()
    };
    assert!(matches!(
        m.on_log(&request(), &next_second).unwrap(),
        LogOutcome::Write { .. }
    ));
    let none = RequestLog::from_config(
        &json!({ "path": "/tmp/x.jsonl", "fields": ["path"], "sample": 0.0 }),
    )
    .unwrap();
    assert_eq!(
        none.on_log(&request(), &done()).unwrap(),
        LogOutcome::NotSampled
    );
    // A tenth of many different requests, near enough.
    let tenth = RequestLog::from_config(&json!({ "path": "/tmp/x.jsonl", "fields": ["path"], "sample": 0.1, "max_per_second": 100000 })).unwrap();
    let chosen = (0..10_000)
        .filter(|i| {
            let r = OwnedRequest::get("a", &format!("/p/{i}"));
            !matches!(tenth.on_log(&r, &done()).unwrap(), LogOutcome::NotSampled)
        })
        .count();
    assert!((800..1200).contains(&chosen), "{chosen}");
}

#[test]
fn bad_configurations_name_their_field() {
    for (config, field) in [
        (json!({ "path": "rel.jsonl", "fields": ["path"] }), "path"),
        (json!({ "path": "/a", "fields": [] }), "fields"),
        (
            json!({ "path": "/a", "fields": ["path", "nope"] }),
            "fields[1]",
        ),
        (
            json!({ "path": "/a", "fields": ["path", "path"] }),
            "fields[1]",
        ),
        (
            json!({ "path": "/a", "fields": ["path"], "sample": 2 }),
            "sample",
        ),
        (
            json!({ "path": "/a", "fields": ["path"], "max_value_bytes": 0 }),
            "max_value_bytes",
        ),
        (
            json!({ "path": "/a", "fields": ["path"], "max_per_second": 0 }),
            "max_per_second",
        ),
    ] {
        let e = RequestLog::from_config(&config).err().expect("refused");
        assert!(e.to_string().contains(field), "{config}: {e}");
    }
}
