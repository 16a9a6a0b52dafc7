use super::*;
use graft_contract::OwnedRequest;
use serde_json::json;

fn eval(cond: serde_json::Value, req: &OwnedRequest) -> bool {
    Condition::parse(&cond).unwrap().eval(&Subject::new(req))
}

fn req() -> OwnedRequest {
    let mut r = OwnedRequest::get(
        "shop.example",
        "/admin/users?id=1%27%20OR%201=1&flag&a=x&a=y",
    );
    r.headers
        .push((b"User-Agent".to_vec(), b"curl/8.0".to_vec()));
    r.headers
        .push((b"X-Forwarded-For".to_vec(), b"203.0.113.9".to_vec()));
    r.client = Some("10.1.2.3".parse().unwrap());
    r
}

#[test]
fn fields_and_operators() {
    let r = req();
    let yes = [
        json!({ "field": "path", "op": "prefix", "value": "/admin" }),
        json!({ "field": "method", "op": "in", "values": ["GET", "HEAD"] }),
        json!({ "field": "host", "op": "equals", "value": "shop.example" }),
        json!({ "field": "arg:id", "op": "contains", "value": "' OR 1=1" }),
        json!({ "field": "arg:a", "op": "equals", "value": "y" }),
        json!({ "field": "arg:flag", "op": "equals", "value": "" }),
        json!({ "field": "args", "op": "equals", "value": "flag" }),
        json!({ "field": "header:user-agent", "op": "regex", "value": "(?i)^CURL/" }),
        json!({ "field": "headers", "op": "in_prefix", "values": ["203.0.113.0/24"] }),
        json!({ "field": "client", "op": "in_prefix", "values": ["10.0.0.0/8", "2001:db8::/32"] }),
        json!({ "field": "client", "op": "equals", "value": "10.1.2.3" }),
        json!({ "field": "query", "op": "contains", "value": "%27" }),
    ];
    for c in yes {
        assert!(eval(c.clone(), &r), "{c}");
    }
    let no = [
        json!({ "field": "path", "op": "equals", "value": "/admin" }),
        json!({ "field": "arg:missing", "op": "equals", "value": "" }),
        json!({ "field": "client", "op": "in_prefix", "values": ["10.1.3.0/24"] }),
        json!({ "field": "header:x-none", "op": "contains", "value": "" }),
    ];
    for c in no {
        assert!(!eval(c.clone(), &r), "{c}");
    }
}

#[test]
fn combinators() {
    let r = req();
    let p = json!({ "field": "path", "op": "prefix", "value": "/admin" });
    let q = json!({ "field": "method", "op": "equals", "value": "POST" });
    assert!(!eval(json!({ "all": [p, q] }), &r));
    assert!(eval(json!({ "any": [p, q] }), &r));
    assert!(eval(json!({ "all": [p, { "not": q }] }), &r));
    assert!(eval(json!({ "all": [] }), &r));
    assert!(!eval(json!({ "any": [] }), &r));
}

#[test]
fn errors_name_the_place() {
    let cases = [
        (
            json!({ "any": [ { "field": "path", "op": "like", "value": "x" } ] }),
            "any[0].op",
        ),
        (
            json!({ "not": { "field": "cookie", "op": "equals", "value": "x" } }),
            "not.field",
        ),
        (
            json!({ "field": "path", "op": "regex", "value": "(unclosed" }),
            "value",
        ),
        (
            json!({ "field": "client", "op": "in_prefix", "values": ["10.0.0.0/8", "300.1.1.1"] }),
            "values[1]",
        ),
        (json!({ "field": "path", "op": "equals" }), "value"),
        (
            json!({ "field": "path", "op": "in", "values": "x" }),
            "values",
        ),
        (
            json!({ "field": "path", "op": "equals", "value": "x", "extra": 1 }),
            "extra",
        ),
    ];
    for (c, field) in cases {
        let e = Condition::parse(&c).unwrap_err();
        assert_eq!(e.field, field, "{c}: {e}");
    }
    let mut deep = json!({ "field": "path", "op": "equals", "value": "x" });
    for _ in 0..20 {
        deep = json!({ "not": deep });
    }
    assert!(Condition::parse(&deep)
        .unwrap_err()
        .message
        .contains("nested deeper"));
}

#[test]
fn a_payload_past_the_hundredth_argument_is_seen() {
    let mut target = String::from("/?");
    for i in 0..500 {
        target.push_str(&format!("k{i}=v&"));
    }
    target.push_str("last=%3Cscript%3E");
    let r = OwnedRequest::get("a", &target);
    assert!(eval(
        json!({ "field": "args", "op": "contains", "value": "<script>" }),
        &r
    ));
}
