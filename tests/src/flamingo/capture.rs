//! A capture made on the fly: live-like requests sent through an FL1
//! with `graft_capture`, read back as the replay's corpus.
use serde_json::Value;

use super::wire::{finish, open};
use crate::corpus::CorpusRequest;
use crate::edge::{start_fl1, start_origin, Fl1Setup};
use crate::replay::with_modes;

/// Requests as a capture writes them: sent through an FL1 (every module in
/// `lua`) with `graft_capture ... rate=1`, and the capture file read back
/// (headers redacted, clients as `127.b.c.d`, no bodies: what
/// `graft_capture` keeps of live traffic).
pub fn capture(config: &Value, requests: &[CorpusRequest]) -> Result<Vec<CorpusRequest>, String> {
    let origin = start_origin();
    let file = origin.prefix.join("capture.txt");
    let fl1 = start_fl1(
        &with_modes(config, &|_| "lua").to_string(),
        origin.port,
        &Fl1Setup {
            behind_edge: false,
            capture: Some(file.clone()),
        },
    );
    for req in requests {
        let _ = finish(open(fl1.port, req), req);
    }
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    crate::corpus::parse(&text).map_err(|e| format!("{}: {e}", file.display()))
}

/// Traffic for a capture made on the fly, beyond the shipped corpus:
/// `n` requests over the configuration's zones, as browsers and API
/// clients send them (HTML pages sent in pieces, conditional and ranged
/// requests, API calls with keys, cross-origin calls), from 64 clients.
pub fn live_sample(config: &Value, n: usize) -> Vec<CorpusRequest> {
    let zones: Vec<String> = config["zones"]
        .as_object()
        .map(|z| z.keys().filter(|k| *k != "*").cloned().collect())
        .unwrap_or_default();
    let browser =
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    (0..n)
        .map(|i| {
            let zone = zones.get(i % zones.len().max(1)).map_or("localhost", |z| z);
            let client = std::net::Ipv4Addr::new(127, 0, 30, (i % 64) as u8 + 1);
            let req = match (i / zones.len().max(1)) % 6 {
                0 => {
                    CorpusRequest::get(zone, &format!("/html/{}/page-{i}", [1, 7, 64, 512][i % 4]))
                        .header(browser)
                        .header("Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8")
                        .header("Accept-Language: en-GB,en;q=0.5")
                        .header("Accept-Encoding: gzip, deflate, br")
                }
                1 => CorpusRequest::get(zone, &format!("/docs/page-{i}?utm_source=mail&ref={i}"))
                    .header(browser)
                    .header("If-None-Match: \"abc123\"")
                    .header("If-Modified-Since: Sat, 01 Jun 2024 10:00:00 GMT"),
                2 => CorpusRequest::get(zone, &format!("/api/v1/items/{i}"))
                    .header("User-Agent: okhttp/4.12")
                    .header("Accept: application/json")
                    .header(&format!("X-Api-Key: live-{}", i % 5)),
                3 => CorpusRequest::get(zone, &format!("/img/logo-{i}.png"))
                    .header(browser)
                    .header("Range: bytes=0-99")
                    .header("Sec-Fetch-Dest: image")
                    .header("Sec-Fetch-Mode: no-cors"),
                4 => CorpusRequest::get(zone, &format!("/api/v1/cart?id={i}"))
                    .header(browser)
                    .header("Origin: https://shop.example")
                    .header("Access-Control-Request-Method: POST")
                    .header("Cache-Control: no-cache"),
                _ => CorpusRequest::get(
                    zone,
                    &format!("/search?q=%3Cscript%3Ealert({i})%3C/script%3E"),
                )
                .header("User-Agent: curl/8.5.0")
                .header("DNT: 1"),
            };
            req.from(client)
        })
        .collect()
}
