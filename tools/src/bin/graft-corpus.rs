//! graft-corpus: writes graft's replay corpus, the same every time (a
//! fixed seed): a multi-zone configuration and requests over it.
//!
//!     graft-corpus tests/corpus [count]
use std::net::Ipv4Addr;

use graft_tests::corpus::CorpusRequest;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

const ZONES: &[&str] = &[
    "shop.example",
    "api.example",
    "blog.example",
    "cdn.example",
    "admin.example",
    "news.example",
    "docs.example",
    "static.example",
    "m.example",
    "pay.example",
];

fn zone_config(zone: &str, i: usize) -> Value {
    let bulk: serde_json::Map<String, Value> = (0..1000)
        .map(|n| {
            (
                format!("/legacy/{n}"),
                json!(format!("/products/{}", n * 7 % 1000)),
            )
        })
        .collect();
    let mut rules = vec![
        json!({ "id": "admin", "when": { "field": "path", "op": "prefix", "value": "/admin" }, "action": "block" }),
        json!({ "id": "scanner", "when": { "field": "header:user-agent", "op": "regex", "value": "(?i)(sqlmap|nikto|nessus|masscan)" }, "action": "block", "status": 406 }),
        json!({ "id": "office", "when": { "all": [
            { "field": "client", "op": "in_prefix", "values": ["127.0.10.0/24"] },
            { "field": "header:x-office", "op": "equals", "value": "1" } ] }, "action": "allow" }),
        json!({ "id": "no-trace", "when": { "field": "method", "op": "in", "values": ["TRACE", "TRACK", "DEBUG"] }, "action": "block", "status": 405 }),
        json!({ "id": "curl", "when": { "field": "header:user-agent", "op": "prefix", "value": "curl/" }, "action": "log" }),
        json!({ "id": "big-page", "when": { "field": "arg:page", "op": "regex", "value": "^[0-9]{4,}$" }, "action": "block", "status": 400 }),
        json!({ "id": "wp", "when": { "any": [
            { "field": "path", "op": "contains", "value": "wp-login" },
            { "field": "path", "op": "contains", "value": "xmlrpc.php" } ] }, "action": "block", "status": 404 }),
    ];
    for n in 0..43 {
        rules.push(json!({ "id": format!("bad-token-{n}"),
            "when": { "field": "args", "op": "equals", "value": format!("token-{zone}-{n}") },
            "action": "block" }));
    }
    let mut modules = vec![
        json!({ "module": "url_normalize", "mode": "lua" }),
        json!({ "module": "ip_access", "mode": "lua", "config": {
            "allow": ["127.0.0.0/8", "::1"], "deny": ["127.0.0.66", "127.0.66.0/24"],
            "default": if zone == "admin.example" { "deny" } else { "allow" } } }),
        json!({ "module": "waf", "mode": "lua", "config": {
            "rules": rules, "signatures": ["sql_injection", "path_traversal", "script_injection"],
            "inspect_body": true } }),
        json!({ "module": "redirects", "mode": "lua", "config": {
            "rules": [
                { "from": "/old", "to": "/new" },
                { "from": "/sale", "to": "/deals?src=sale", "status": 302 },
                { "from": "/blog/", "to": format!("https://blog.example/{i}/"), "match": "prefix", "status": 308 },
                { "from": "/blog/2019/", "to": "/archive/", "match": "prefix", "query": "drop" } ],
            "bulk": { "status": 301, "map": bulk } } }),
        json!({ "module": "headers", "mode": "lua", "config": { "rules": [
            { "request": [ { "set": "X-Graft-Zone", "value": zone } ],
              "response": [ { "set": "X-Frame-Options", "value": "DENY" } ] },
            { "when": { "field": "path", "op": "prefix", "value": "/api" },
              "request": [ { "remove": "Cookie" } ],
              "response": [ { "add": "Cache-Control", "value": "no-store" } ] } ] } }),
    ];
    if zone == "api.example" {
        modules.push(
            json!({ "module": "rate_limit", "mode": "lua", "config": { "limits": [
            { "name": "keys", "key": "header:X-Api-Key", "limit": 20, "window": 86400 },
            { "name": "clients", "key": "client", "limit": 1000000, "window": 60 } ] } }),
        );
    }
    modules.push(json!({ "module": "html_rewrite", "mode": "lua", "config": {
        "head_end": format!("<script src=\"/rum-{i}.js\"></script>"),
        "https_hosts": ["example.com", "cdn.example.com"], "obfuscate_emails": true } }));
    json!({ "body": { "max_bytes": 4096, "over": { "respond": 413 } }, "modules": modules })
}

/// A request body: a form or JSON (nested, sometimes cut or broken), with
/// a payload in it now and then, or a body over the zones' 4 KiB.
fn body(rng: &mut ChaCha8Rng) -> (&'static str, Vec<u8>) {
    let value = if rng.random_bool(0.3) {
        pick(rng, PAYLOADS).to_string()
    } else {
        format!("item-{}", rng.random_range(0..1000))
    };
    match rng.random_range(0..10) {
        0..=3 => (
            "application/x-www-form-urlencoded",
            format!("name=x&q={value}&page={}", rng.random_range(0..50)).into_bytes(),
        ),
        4..=7 => {
            // JSON carries the payload decoded, as a client would send it.
            let mut decoded = Vec::new();
            graft_contract::args::decode_component(value.as_bytes(), &mut decoded);
            let s = serde_json::to_string(&String::from_utf8_lossy(&decoded)).unwrap();
            let depth = rng.random_range(0..6);
            let doc = format!(
                "{}{{\"q\":{s},\"n\":[1,2]}}{}",
                "{\"a\":[".repeat(depth),
                "]}".repeat(depth)
            );
            let cut = if rng.random_bool(0.1) {
                doc.len() / 2
            } else {
                doc.len()
            };
            ("application/json", doc.as_bytes()[..cut].to_vec())
        }
        8 => ("text/plain", value.into_bytes()),
        _ => (
            "application/x-www-form-urlencoded",
            format!("big={}&q={value}", "a".repeat(5000)).into_bytes(),
        ),
    }
}

fn config() -> Value {
    let mut zones = serde_json::Map::new();
    for (i, z) in ZONES.iter().enumerate() {
        zones.insert(z.to_string(), zone_config(z, i));
    }
    json!({ "zones": zones })
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

const PAGES: &[&str] = &[
    "/",
    "/products",
    "/products/42",
    "/cart",
    "/search",
    "/api/v1/items",
    "/api/v1/users/7",
    "/about",
    "/static/app.js",
    "/img/logo.png",
    "/blog",
    "/news/today",
    "/docs/intro",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0)",
    "Mozilla/5.0 (Linux; Android 14)",
    "curl/8.5.0",
    "Go-http-client/1.1",
    "python-requests/2.31",
    "okhttp/4.12",
    "Googlebot/2.1",
    "Mozilla/5.0 (X11; Linux x86_64)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
    "Mozilla/5.0 (X11; Linux x86_64)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
    "Mozilla/5.0 (Linux; Android 14)",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
    "Mozilla/5.0 (X11; Linux x86_64)",
    "curl/8.5.0",
    "sqlmap/1.7",
    "Nikto/2.5",
];
const PAYLOADS: &[&str] = &[
    "1%27%20OR%20%271%27=%271",
    "1%20UNION%20SELECT%20password%20FROM%20users",
    "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    "..%2F..%2Fetc%2Fpasswd",
    "javascript:alert(1)",
    "1;%20DROP%20TABLE%20users",
    "%252e%252e%252f",
    "sleep(5)",
    "%3Csvg%20onload%3Dalert(1)%3E",
    "information_schema.tables",
];
const ODD_PATHS: &[&str] = &[
    "/a/./b/../c",
    "//double//slash",
    "/a/%2e%2e/b",
    "/%2e%2e/x",
    "/bad%zz",
    "/nul%00",
    "/crlf%0d%0a",
    "/a%252e%252e/b",
    "/%7Euser/",
    "/caf%C3%A9",
    "/%ff%fe",
    "/a/b/..",
    "/.",
    "/legacy/12/../13",
];

fn request(rng: &mut ChaCha8Rng) -> CorpusRequest {
    let zone = *pick(rng, ZONES);
    let roll = rng.random_range(0..100);
    let mut req = match roll {
        0..=49 => {
            let mut target = pick(rng, PAGES).to_string();
            let nargs = rng.random_range(0..4);
            for a in 0..nargs {
                target.push(if a == 0 { '?' } else { '&' });
                target.push_str(&format!(
                    "k{}={}",
                    rng.random_range(0..20),
                    rng.random_range(0..10000)
                ));
            }
            CorpusRequest::get(zone, &target)
        }
        50..=59 => {
            let t = match rng.random_range(0..6) {
                0 => "/old?x=1".to_string(),
                1 => "/sale?utm=mail".to_string(),
                2 => format!(
                    "/blog/{}/post-{}",
                    rng.random_range(2015..2025),
                    rng.random_range(0..50)
                ),
                3 => "/blog/2019/x?y=2".to_string(),
                _ => format!(
                    "/legacy/{}?ref={}",
                    rng.random_range(0..1200),
                    rng.random_range(0..9)
                ),
            };
            CorpusRequest::get(zone, &t)
        }
        60..=71 => {
            let p = pick(rng, PAYLOADS);
            let t = if rng.random_bool(0.3) {
                format!("/search/{p}")
            } else {
                format!("/search?q={p}&page=1")
            };
            CorpusRequest::get(zone, &t)
        }
        72..=79 => {
            let t = match rng.random_range(0..5) {
                0 => "/admin/users".to_string(),
                1 => "/wp-login.php".to_string(),
                2 => format!("/list?page={}", rng.random_range(0..100000)),
                3 => format!("/x?t=token-{zone}-{}", rng.random_range(0..60)),
                _ => "/xmlrpc.php".to_string(),
            };
            CorpusRequest::get(zone, &t)
        }
        80..=87 => CorpusRequest::get(zone, pick::<&str>(rng, ODD_PATHS)),
        88..=93 => CorpusRequest::get("api.example", "/api/v1/items")
            .header(&format!("X-Api-Key: key-{}", rng.random_range(0..8))),
        97 => {
            // A page the origin sends as HTML, in chunks of 1 to 300 bytes.
            let n = rng.random_range(1..300);
            CorpusRequest::get(zone, &format!("/html/{n}/page"))
        }
        94..=96 => {
            let (content_type, body) = body(rng);
            CorpusRequest::post(zone, pick::<&str>(rng, PAGES), content_type, &body)
        }
        _ => {
            let mut r = CorpusRequest::get(zone, pick::<&str>(rng, PAGES));
            r.method = pick(rng, &["POST", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"])
                .as_bytes()
                .to_vec();
            r
        }
    };
    req = req.header(&format!("User-Agent: {}", pick(rng, AGENTS)));
    if rng.random_bool(0.3) {
        req = req.header("Cookie: session=abc123");
    }
    if rng.random_bool(0.1) {
        req = req.header("X-Office: 1");
    }
    let client = match rng.random_range(0..20) {
        0 => Ipv4Addr::new(127, 0, 0, 66),
        1 => Ipv4Addr::new(127, 0, 66, rng.random_range(1..255)),
        2..=4 => Ipv4Addr::new(127, 0, 10, rng.random_range(1..255)),
        _ => Ipv4Addr::new(127, 0, 0, 1),
    };
    req.from(client)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "tests/corpus".into());
    let count: usize = args.next().and_then(|c| c.parse().ok()).unwrap_or(10_000);
    let mut rng = ChaCha8Rng::seed_from_u64(0x67726166);
    std::fs::create_dir_all(&dir).unwrap();
    let config = serde_json::to_string_pretty(&config()).unwrap();
    std::fs::write(format!("{dir}/config.json"), config + "\n").unwrap();
    let mut out = String::from(
        "# graft's generated replay corpus (graft-corpus); format: tests/src/corpus.rs\n",
    );
    for _ in 0..count {
        out.push_str(&request(&mut rng).to_line());
        out.push('\n');
    }
    std::fs::write(format!("{dir}/requests.txt"), out).unwrap();
    eprintln!("wrote {dir}/config.json and {count} requests to {dir}/requests.txt");
}
