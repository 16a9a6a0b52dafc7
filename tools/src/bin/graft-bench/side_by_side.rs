//! The seeds' headline, side by side (`--only side-by-side`, and part of
//! every run): six setups in front of one origin, serving the same mix
//! with the same six modules.
//!
//! ```text
//!                    ┌─ plain nginx proxying (no graft) ───────────────┐
//! wrk, or the        ├─ FL1: nginx + graft, modules in lua ────────────┤
//! fixed-rate client ─┼─ FL1 with graft_native on (modules in rust) ────┼─► origin (plain nginx,
//!                    ├─ FL2: graft-edge (modules in rust) ─────────────┤   a fixed small page)
//!                    │            └─ passes nothing to: FL1 behind ────┤
//!                    ├─ graft-edge with no step (FL2's floor) ─────────┤
//!                    └─ Pingora alone, no graft ───────────────────────┘
//! ```
//!
//! graft-edge with no step stands to FL2 as plain nginx to FL1: what the
//! server costs before any module runs. Pingora alone (its `ProxyHttp`
//! with nothing but an origin) is what graft-edge is built on: the part
//! of FL2's floor that is Pingora's and tokio's, not graft-edge's.
//!
//! Each front has one worker (nginx) or one proxy thread (Pingora's
//! `threads`: graft-edge); each keeps its connections to the origin. For
//! each: the highest req/s (wrk, 16 connections), CPU per request (the
//! server's own processes, from /proc, over the same number of requests
//! at a fixed rate, and under wrk), the RSS of nginx's worker or
//! graft-edge's process after the runs, p50 and p99 at a fixed rate below
//! saturation (half the slowest setup's highest req/s, the same for all).
//! Runs alternate between setups, round after round. FL2 must pass
//! nothing to FL1 (graft-edge's `graft_edge_passed_total`), and every
//! graft setup must show in its counts the work it names, or the bench
//! stops.
use std::path::Path;

use graft_tests::bench::work::Side;
use serde_json::{json, Value};

use crate::load::{connect, exchange, median, medians, mix, paced, run_wrk, Sample, TICKS_PER_SEC};
use crate::server::{
    behind_edge_http, lua_phases, realistic_config, warn_on_logged_errors_at, Edge, PingoraFloor,
    Server, EDGE_THREADS,
};
use crate::Run;

/// The page the origin answers every request with.
pub(crate) const ORIGIN_PAGE: &str =
    "<!doctype html><html><head><title>origin</title></head><body><p>origin</p></body></html>\n";

/// Connections of wrk and of the fixed-rate client.
const CONNECTIONS: usize = 16;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Setup {
    Plain,
    Fl1Lua,
    Fl1Native,
    Fl2,
    EdgeFloor,
    Pingora,
}

pub(crate) const SETUPS: [Setup; 6] = [
    Setup::Plain,
    Setup::Fl1Lua,
    Setup::Fl1Native,
    Setup::Fl2,
    Setup::EdgeFloor,
    Setup::Pingora,
];

impl Setup {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Setup::Plain => "plain nginx proxying (no graft)",
            Setup::Fl1Lua => "FL1: nginx + Lua pipeline (modules in lua)",
            Setup::Fl1Native => "FL1 with graft_native on (modules in rust)",
            Setup::Fl2 => "FL2: graft-edge (modules in rust), FL1 behind",
            Setup::EdgeFloor => "graft-edge with no step (FL2's floor)",
            Setup::Pingora => "Pingora alone, no graft (under FL2's floor)",
        }
    }

    pub(crate) fn slug(self) -> &'static str {
        match self {
            Setup::Plain => "plain",
            Setup::Fl1Lua => "fl1_lua",
            Setup::Fl1Native => "fl1_native",
            Setup::Fl2 => "fl2",
            Setup::EdgeFloor => "edge_floor",
            Setup::Pingora => "pingora",
        }
    }

    /// Whether it runs the six modules (else every request reaches the
    /// origin).
    fn runs_modules(self) -> bool {
        !matches!(self, Setup::Plain | Setup::EdgeFloor | Setup::Pingora)
    }
}

/// The six modules graft-edge runs whole, in the shipped ten zones:
/// url_normalize, ip_access, waf, redirects, headers and rate_limit (a
/// limit never reached), every step in `mode`. html_rewrite and
/// request_log are left out: their response-body and log phases are FL1's
/// (graft-edge passes a zone that has them), and the origin's page is
/// small.
pub(crate) fn six_modules(mode: &str) -> Value {
    let mut config = realistic_config(mode);
    let limit = json!({ "module": "rate_limit", "mode": mode, "config": { "limits": [
        { "name": "clients", "key": "client", "limit": 1000000, "window": 1 } ] } });
    for zone in config["zones"].as_object_mut().unwrap().values_mut() {
        let steps = zone["modules"].as_array_mut().unwrap();
        if steps.len() == 1 {
            continue; // the bridge-call loop's `localhost`
        }
        steps.retain(|s| s["module"] != "html_rewrite" && s["module"] != "request_log");
        if !steps.iter().any(|s| s["module"] == "rate_limit") {
            steps.push(limit.clone());
        }
    }
    config
}

/// One setup's figures.
pub(crate) struct Figures {
    pub(crate) setup: Setup,
    /// Under wrk: the highest req/s, and CPU per request there.
    pub(crate) max: Sample,
    /// At the fixed rate: CPU per request, p50 and p99.
    pub(crate) cpu_us_per_req: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// Requests timed from when they were due (median of the runs).
    pub(crate) late: usize,
    pub(crate) rss_kib: u64,
}

pub(crate) struct SideBySide {
    /// The fixed rate, req/s, and the requests of each run at it.
    pub(crate) rate: f64,
    pub(crate) requests: usize,
    pub(crate) figures: Vec<Figures>,
    /// graft-edge's requests, and those it passed to FL1.
    pub(crate) fl2_requests: u64,
    pub(crate) fl2_passed: u64,
}

/// A front: an nginx, graft-edge, or Pingora alone.
enum Front {
    Nginx(Server),
    Edge(Edge),
    Pingora(PingoraFloor),
}

impl Front {
    fn port(&self) -> u16 {
        match self {
            Front::Nginx(s) => s.port,
            Front::Edge(e) => e.port,
            Front::Pingora(p) => p.port,
        }
    }

    /// CPU time of the server's own processes: nginx's master and worker,
    /// or graft-edge's (Pingora's) process.
    fn ticks(&self) -> u64 {
        match self {
            Front::Nginx(s) => s.ticks(),
            Front::Edge(e) => e.ticks(),
            Front::Pingora(p) => p.ticks(),
        }
    }

    /// nginx's worker's, or graft-edge's (Pingora's) process's.
    fn rss_kib(&self) -> u64 {
        match self {
            Front::Nginx(s) => s.worker_rss_kib(),
            Front::Edge(e) => e.rss_kib(),
            Front::Pingora(p) => p.rss_kib(),
        }
    }
}

/// An http block's way to the origin, kept alive as Pingora keeps its own.
fn upstream(origin: u16) -> String {
    format!("upstream origin {{\n        server 127.0.0.1:{origin};\n        keepalive 32;\n    }}")
}

/// A location proxying to the origin after `pipeline`.
fn proxied(pipeline: &str) -> String {
    format!(
        "{pipeline}\n            proxy_pass http://origin;\n            proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n            proxy_set_header Host $http_host;"
    )
}

pub(crate) fn measure_side_by_side(dir: &Path, run: &Run) -> SideBySide {
    let origin = Server::start_plain(
        "sbs-origin",
        "keepalive_requests 1000000;",
        &format!(
            "default_type text/html;\n            return 200 \"{}\";",
            ORIGIN_PAGE.replace('\n', "\\n")
        ),
    );
    let (lua, rust) = (six_modules("lua"), six_modules("rust"));
    let http = upstream(origin.port);
    let plain = Server::start_plain("sbs-plain", &http, &proxied(""));
    let fl1_lua = Server::start_with(
        "sbs-fl1-lua",
        Some(&lua),
        &http,
        &proxied(&lua_phases(Some(&lua))),
    );
    let fl1_native = Server::start_with(
        "sbs-fl1-native",
        Some(&rust),
        &http,
        &proxied("graft_native on;"),
    );
    // The FL1 graft-edge passes to: as FL1 native, holding graft-edge's key.
    let behind = Server::start_with(
        "sbs-fl1-behind",
        Some(&rust),
        &format!("{}\n    {http}", behind_edge_http()),
        &proxied("graft_native on;"),
    );
    let edge = Edge::start(
        "sbs-fl2",
        &rust,
        origin.port,
        behind.port,
        fl1_native.counter_kib.unwrap(),
    );
    // The same zones, none with a step.
    let mut bare = rust.clone();
    for zone in bare["zones"].as_object_mut().unwrap().values_mut() {
        zone["modules"] = json!([]);
    }
    let floor = Edge::start(
        "sbs-edge-floor",
        &bare,
        origin.port,
        behind.port,
        fl1_native.counter_kib.unwrap(),
    );
    let fronts = [
        Front::Nginx(plain),
        Front::Nginx(fl1_lua),
        Front::Nginx(fl1_native),
        Front::Edge(edge),
        Front::Edge(floor),
        Front::Pingora(PingoraFloor::start(origin.port)),
    ];
    let requests: Vec<Vec<u8>> = mix().iter().map(|r| r.bytes()).collect();
    require_same_answers(&fronts, &requests);
    let script = crate::load::wrk_script(dir);
    for f in &fronts {
        run_wrk(f.port(), &script, 1, || f.ticks());
    }
    // The highest req/s, rounds alternating.
    let mut max: Vec<Vec<Sample>> = SETUPS.iter().map(|_| Vec::new()).collect();
    for round in 0..run.rounds {
        for k in 0..SETUPS.len() {
            let i = (k + round) % SETUPS.len();
            eprintln!(
                "side by side, round {}/{}: {}, wrk",
                round + 1,
                run.rounds,
                SETUPS[i].name()
            );
            let f = &fronts[i];
            max[i].push(run_wrk(f.port(), &script, run.seconds, || f.ticks()));
        }
    }
    let max: Vec<Sample> = max.iter().map(|s| medians(s)).collect();
    // Half the slowest setup's highest req/s, in hundreds: below every
    // setup's saturation.
    let slowest = max.iter().map(|m| m.rps).fold(f64::INFINITY, f64::min);
    assert!(
        slowest.is_finite() && slowest > 0.0,
        "a setup answered no request under wrk"
    );
    let rate = ((slowest / 2.0 / 100.0).floor() * 100.0).max(100.0);
    let count = (rate * run.seconds as f64) as usize;
    let mut at_rate: Vec<Vec<(f64, f64, f64, usize)>> = SETUPS.iter().map(|_| Vec::new()).collect();
    for round in 0..run.rounds {
        for k in 0..SETUPS.len() {
            let i = (k + round) % SETUPS.len();
            eprintln!(
                "side by side, round {}/{}: {}, {rate} req/s",
                round + 1,
                run.rounds,
                SETUPS[i].name()
            );
            let f = &fronts[i];
            let before = f.ticks();
            let p = paced(f.port(), &requests, rate, count, CONNECTIONS)
                .unwrap_or_else(|e| panic!("{} at {rate} req/s: {e}", SETUPS[i].name()));
            let cpu = (f.ticks() - before) as f64 / TICKS_PER_SEC * 1e6 / p.requests as f64;
            at_rate[i].push((cpu, p.p50_ms, p.p99_ms, p.late));
        }
    }
    let figures: Vec<Figures> = SETUPS
        .iter()
        .zip(max)
        .zip(&at_rate)
        .zip(&fronts)
        .map(|(((&setup, max), runs), front)| {
            let of = |f: fn(&(f64, f64, f64, usize)) -> f64| median(runs.iter().map(f).collect());
            Figures {
                setup,
                max,
                cpu_us_per_req: of(|r| r.0),
                p50_ms: of(|r| r.1),
                p99_ms: of(|r| r.2),
                late: of(|r| r.3 as f64) as usize,
                rss_kib: front.rss_kib(),
            }
        })
        .collect();
    // Each did the work it names.
    let [_, Front::Nginx(fl1_lua), Front::Nginx(fl1_native), Front::Edge(edge), _, _] = &fronts
    else {
        unreachable!()
    };
    fl1_lua.require_work(Side::Lua, Setup::Fl1Lua.name());
    fl1_native.require_work(Side::Rust, Setup::Fl1Native.name());
    edge.require_work(Setup::Fl2.name());
    let metrics = edge.metrics();
    let fl2_requests = Edge::metric_sum(&metrics, "graft_edge_requests_total");
    let fl2_passed = Edge::metric_sum(&metrics, "graft_edge_passed_total");
    eprintln!("FL2: graft-edge counted {fl2_requests} requests, passed {fl2_passed} to FL1");
    assert!(
        fl2_requests > 0 && fl2_passed == 0,
        "FL2 passed {fl2_passed} of {fl2_requests} requests to FL1: with every module in rust it must pass none (its log: {})",
        edge.dir.join("edge.log").display()
    );
    for (f, setup) in fronts.iter().zip(SETUPS) {
        if let Front::Nginx(s) = f {
            warn_on_logged_errors_at(s, setup.name());
        }
    }
    for f in &figures {
        eprintln!(
            "side by side: {}: {:.0} req/s; at {rate} req/s {:.1} µs CPU/req, p50 {:.2} ms, p99 {:.2} ms; RSS {} KiB",
            f.setup.name(),
            f.max.rps,
            f.cpu_us_per_req,
            f.p50_ms,
            f.p99_ms,
            f.rss_kib
        );
    }
    SideBySide {
        rate,
        requests: count,
        figures,
        fl2_requests,
        fl2_passed,
    }
}

/// Stops the bench unless every request of the mix answers alike from
/// the three graft setups (the same status; the origin's page when it
/// reaches the origin), and plain nginx answers each with the origin's
/// page: the setups do the same work.
fn require_same_answers(fronts: &[Front], requests: &[Vec<u8>]) {
    let answers: Vec<Vec<(u16, Vec<u8>)>> = fronts
        .iter()
        .zip(SETUPS)
        .map(|(f, setup)| {
            let mut conn = connect(f.port()).unwrap();
            requests
                .iter()
                .map(|r| {
                    let a = exchange(&mut conn, r).unwrap_or_else(|e| {
                        panic!("{}: {}: {e}", setup.name(), String::from_utf8_lossy(r))
                    });
                    if !a.keep_alive {
                        conn = connect(f.port()).unwrap();
                    }
                    (a.status, a.body)
                })
                .collect()
        })
        .collect();
    let request_line = |r: &[u8]| {
        String::from_utf8_lossy(r)
            .lines()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let fl1 = SETUPS.iter().position(|&s| s == Setup::Fl1Lua).unwrap();
    for (k, r) in requests.iter().enumerate() {
        let (status, body) = &answers[fl1][k];
        for (i, setup) in SETUPS.iter().enumerate() {
            let (s, b) = &answers[i][k];
            if setup.runs_modules() {
                assert!(
                    s == status && (*status != 200 || b == body),
                    "{}: {} answered {s}, {} {status}: the setups do not do the same work",
                    setup.name(),
                    request_line(r),
                    Setup::Fl1Lua.name()
                );
            } else {
                assert!(
                    *s == 200 && b == ORIGIN_PAGE.as_bytes(),
                    "{}: {} answered {s}, not the origin's page",
                    setup.name(),
                    request_line(r)
                );
            }
        }
    }
    let blocked = answers[fl1].iter().filter(|(s, _)| *s != 200).count();
    assert!(
        blocked > 0,
        "no request of the mix was blocked or redirected: the modules did nothing"
    );
}

/// The part's JSON: the rate, each setup's figures and its ratios to FL1
/// (the Lua pipeline) and to FL1 native, FL2's passed count, and the
/// goals.
pub(crate) fn to_json(s: &SideBySide) -> Value {
    let by = |setup: Setup| s.figures.iter().find(|f| f.setup == setup).unwrap();
    let (lua, native, fl2) = (by(Setup::Fl1Lua), by(Setup::Fl1Native), by(Setup::Fl2));
    let (plain, floor, pingora) = (by(Setup::Plain), by(Setup::EdgeFloor), by(Setup::Pingora));
    let setups: Vec<Value> = s
        .figures
        .iter()
        .map(|f| {
            json!({
                "setup": f.setup.slug(), "name": f.setup.name(),
                "max_rps": f.max.rps,
                "cpu_us_per_req_at_max": f.max.cpu_us_per_req,
                "cpu_us_per_req": f.cpu_us_per_req,
                "p50_ms": f.p50_ms, "p99_ms": f.p99_ms,
                "late_requests": f.late,
                "rss_kib": f.rss_kib,
                "cpu_vs_fl1_lua": f.cpu_us_per_req / lua.cpu_us_per_req,
                "rss_vs_fl1_lua": f.rss_kib as f64 / lua.rss_kib as f64,
                "cpu_vs_fl1_native": f.cpu_us_per_req / native.cpu_us_per_req,
                "rss_vs_fl1_native": f.rss_kib as f64 / native.rss_kib as f64,
            })
        })
        .collect();
    json!({
        "rate_rps": s.rate,
        "requests_per_run": s.requests,
        "connections": CONNECTIONS,
        "nginx_workers": 1,
        "edge_threads": EDGE_THREADS,
        "setups": setups,
        "fl2_requests": s.fl2_requests,
        "fl2_passed_to_fl1": s.fl2_passed,
        // The modules' own CPU per request, above their server's floor.
        "own_cpu_us_per_req": {
            "fl1_lua_above_plain": lua.cpu_us_per_req - plain.cpu_us_per_req,
            "fl1_native_above_plain": native.cpu_us_per_req - plain.cpu_us_per_req,
            "fl2_above_edge_floor": fl2.cpu_us_per_req - floor.cpu_us_per_req,
            "edge_floor_above_pingora": floor.cpu_us_per_req - pingora.cpu_us_per_req,
        },
        "goals": {
            "fl2_vs_fl1_cpu": fl2.cpu_us_per_req / lua.cpu_us_per_req,
            "fl2_vs_fl1_cpu_met": fl2.cpu_us_per_req <= 0.5 * lua.cpu_us_per_req,
            "fl2_vs_fl1_rss": fl2.rss_kib as f64 / lua.rss_kib as f64,
            "fl2_vs_fl1_rss_met": (fl2.rss_kib as f64) <= 0.5 * lua.rss_kib as f64,
            "fl2_p99_ms": fl2.p99_ms,
            "fl1_native_p99_ms": native.p99_ms,
            "fl2_p99_met": fl2.p99_ms <= native.p99_ms,
        },
    })
}

/// The part's table, and the goals read against it.
pub(crate) fn table(s: &SideBySide) -> String {
    let by = |setup: Setup| s.figures.iter().find(|f| f.setup == setup).unwrap();
    let (lua, native, fl2) = (by(Setup::Fl1Lua), by(Setup::Fl1Native), by(Setup::Fl2));
    let (plain, floor, pingora) = (by(Setup::Plain), by(Setup::EdgeFloor), by(Setup::Pingora));
    let mut md = format!(
        "\nFL1 and FL2 side by side: the setups in front of one origin (a plain nginx answering a {}-byte page), the shipped ten zones with six modules (url_normalize, ip_access, waf, redirects, headers, rate_limit), the same mix. One nginx worker; graft-edge with `threads: {EDGE_THREADS}` (Pingora's proxy on one thread). Highest req/s: wrk -t1 -c{CONNECTIONS}; CPU per request: the server's own processes (nginx's master and worker, graft-edge's process), from /proc, over {} requests at {:.0} req/s (half the slowest setup's highest), and under wrk; p50 and p99 at that rate ({CONNECTIONS} connections, open loop, timed from when each request was due when its connection was busy); RSS: nginx's worker, graft-edge's process, after the runs. FL2 passed {} of {} requests to FL1.\n\n| setup | highest req/s | CPU µs/req | vs FL1 | vs FL1 native | CPU µs/req under wrk | RSS MiB | vs FL1 | vs FL1 native | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        ORIGIN_PAGE.len(),
        s.requests,
        s.rate,
        s.fl2_passed,
        s.fl2_requests
    );
    for f in &s.figures {
        md.push_str(&format!(
            "| {} | {:.0} | {:.1} | {:.2} | {:.2} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            f.setup.name(),
            f.max.rps,
            f.cpu_us_per_req,
            f.cpu_us_per_req / lua.cpu_us_per_req,
            f.cpu_us_per_req / native.cpu_us_per_req,
            f.max.cpu_us_per_req,
            f.rss_kib as f64 / 1024.0,
            f.rss_kib as f64 / lua.rss_kib as f64,
            f.rss_kib as f64 / native.rss_kib as f64,
            f.p50_ms,
            f.p99_ms,
        ));
    }
    let met = |ok: bool| if ok { "met" } else { "not met" };
    md.push_str(&format!(
        "\nGoals: FL2's CPU per request {:.2}× FL1's (≤ 0.5×: {}); its memory {:.2}× FL1's (≤ 0.5×: {}); its p99 {:.2} ms against FL1 native's {:.2} ms (no worse: {}).\n",
        fl2.cpu_us_per_req / lua.cpu_us_per_req,
        met(fl2.cpu_us_per_req <= 0.5 * lua.cpu_us_per_req),
        fl2.rss_kib as f64 / lua.rss_kib as f64,
        met((fl2.rss_kib as f64) <= 0.5 * lua.rss_kib as f64),
        fl2.p99_ms,
        native.p99_ms,
        met(fl2.p99_ms <= native.p99_ms),
    ));
    md.push_str(&format!(
        "The six modules' own CPU per request, above their server's floor: FL1 (Lua) {:.1} µs and FL1 native {:.1} µs above plain nginx's, FL2 {:.1} µs above graft-edge's with no step. graft-edge with no step takes {:.1} µs above Pingora alone; Pingora alone {:.2}× plain nginx's CPU per request.\n",
        lua.cpu_us_per_req - plain.cpu_us_per_req,
        native.cpu_us_per_req - plain.cpu_us_per_req,
        fl2.cpu_us_per_req - floor.cpu_us_per_req,
        floor.cpu_us_per_req - pingora.cpu_us_per_req,
        pingora.cpu_us_per_req / plain.cpu_us_per_req,
    ));
    md
}

/// What the part should have written and did not: every setup's figures
/// (numbers above zero), FL2's requests, and its passed count.
pub(crate) fn missing(json: &Value) -> Vec<String> {
    let mut missing = Vec::new();
    let setups = json["setups"].as_array().map_or(&[][..], |v| v);
    for setup in SETUPS {
        let Some(f) = setups.iter().find(|f| f["setup"] == setup.slug()) else {
            missing.push(format!("side by side: {}: not run", setup.name()));
            continue;
        };
        for key in [
            "max_rps",
            "cpu_us_per_req",
            "cpu_us_per_req_at_max",
            "p50_ms",
            "p99_ms",
            "rss_kib",
        ] {
            if !f[key].as_f64().is_some_and(|x| x.is_finite() && x > 0.0) {
                missing.push(format!("side by side: {} {key}: {}", setup.name(), f[key]));
            }
        }
    }
    if json["fl2_requests"].as_u64().unwrap_or(0) == 0 {
        missing.push(format!(
            "side by side: FL2's requests: {}",
            json["fl2_requests"]
        ));
    }
    if json["fl2_passed_to_fl1"].as_u64() != Some(0) {
        missing.push(format!(
            "side by side: FL2 passed to FL1: {}",
            json["fl2_passed_to_fl1"]
        ));
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(setups: &[Setup], passed: u64) -> Value {
        let setups: Vec<Value> = setups
            .iter()
            .map(|s| {
                json!({ "setup": s.slug(), "max_rps": 1000.0, "cpu_us_per_req": 50.0,
                        "cpu_us_per_req_at_max": 40.0, "p50_ms": 0.2, "p99_ms": 2.0, "rss_kib": 9000 })
            })
            .collect();
        json!({ "setups": setups, "fl2_requests": 5000, "fl2_passed_to_fl1": passed })
    }

    #[test]
    fn a_setup_not_run_or_a_request_passed_is_missing() {
        assert!(missing(&figures(&SETUPS, 0)).is_empty());
        let m = missing(&figures(&SETUPS[..5], 0));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].contains("Pingora alone") && m[0].contains("not run"),
            "{m:?}"
        );
        let m = missing(&figures(&SETUPS, 3));
        assert_eq!(m, ["side by side: FL2 passed to FL1: 3"]);
        assert_eq!(missing(&Value::Null).len(), SETUPS.len() + 2);
    }

    #[test]
    fn the_six_modules_are_in_every_zone_and_nothing_else() {
        let config = six_modules("rust");
        for (name, zone) in config["zones"].as_object().unwrap() {
            let modules: Vec<&str> = zone["modules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["module"].as_str().unwrap())
                .collect();
            if name == "localhost" {
                continue;
            }
            let mut sorted = modules.clone();
            sorted.sort();
            assert_eq!(
                sorted,
                [
                    "headers",
                    "ip_access",
                    "rate_limit",
                    "redirects",
                    "url_normalize",
                    "waf"
                ],
                "{name}"
            );
            assert!(zone["modules"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["mode"] == "rust"));
        }
    }
}
