//! What graft-bench measures: the variants under load, memory with many
//! zones, graft against nginx's own modules, how cost grows with rules and
//! zones, and the streaming jobs.
use std::path::{Path, PathBuf};

use graft_tests::bench::work::Side;
use serde_json::{json, Value};

use crate::load::{median, medians, run_wrk, Sample};
use crate::server::{
    lua_phases, many_zones, realistic_config, warn_on_logged_errors, warn_on_logged_errors_at,
    Server, Variant, VARIANTS,
};
use crate::Run;

/// wrk against `server`, its worker's CPU per request.
fn wrk(server: &Server, script: &Path, seconds: u64) -> Sample {
    run_wrk(server.port, script, seconds, || server.worker_ticks())
}

/// Throughput, CPU and latency: every variant up at once, runs
/// alternating; the samples of each variant, and the bridge variant's
/// timing of one call.
pub(crate) fn measure_load(script: &Path, run: &Run) -> (Vec<Vec<Sample>>, String) {
    let (rounds, seconds) = (run.rounds, run.seconds);
    let servers: Vec<(Variant, Server)> = VARIANTS
        .iter()
        .map(|&v| {
            (
                v,
                Server::start(v, v.mode().map(realistic_config).as_ref(), "load"),
            )
        })
        .collect();
    for (v, s) in &servers {
        // Each kind of request answers as the mix means it to.
        if *v != Variant::Plain {
            let (status, _) = s.get("shop.example", "/admin/users");
            assert_eq!(status, 403, "{}: the WAF did not block", v.name());
        }
        wrk(s, script, 1);
    }
    require_same_pages(&servers);
    let mut samples: Vec<Vec<Sample>> = VARIANTS.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for k in 0..VARIANTS.len() {
            let i = (k + round) % VARIANTS.len();
            let (v, s) = &servers[i];
            eprintln!("round {}/{rounds}: {}", round + 1, v.name());
            samples[i].push(wrk(s, script, seconds));
        }
    }
    let calls = servers
        .iter()
        .find(|(v, _)| *v == Variant::Bridge)
        .map(|(_, s)| s.get("localhost", "/bench/calls").1)
        .unwrap_or_default();
    for (v, s) in &servers {
        warn_on_logged_errors(*v, s);
        if let Some(side) = v.side() {
            s.require_work(side, &format!("{} (the ten-zone mix)", v.name()));
        }
    }
    (samples, calls)
}

/// Stops the bench unless every graft variant answers a page of each of
/// the mix's zones alike, rewritten by the zone's `html_rewrite` (its
/// `head_end` snippet in the page): graft's counts do not show a Lua
/// rewriter whose body filter never ran.
pub(crate) fn require_same_pages(servers: &[(Variant, Server)]) {
    let config = realistic_config("lua");
    for zone in [
        "shop.example",
        "blog.example",
        "news.example",
        "docs.example",
        "m.example",
    ] {
        let snippet = config["zones"][zone]["modules"]
            .as_array()
            .and_then(|m| m.iter().find(|s| s["module"] == "html_rewrite"))
            .and_then(|s| s["config"]["head_end"].as_str())
            .map(str::to_string);
        let mut first: Option<(Variant, String)> = None;
        for (v, s) in servers.iter().filter(|(v, _)| *v != Variant::Plain) {
            let (status, page) = s.get(zone, "/index.html?page=1");
            let rewritten = snippet
                .as_ref()
                .is_none_or(|snippet| page.contains(snippet.as_str()));
            assert!(
                status == 200 && rewritten,
                "{}: {zone}'s page answered {status}, {}: the variant does not do the work it names",
                v.name(),
                if rewritten { "rewritten" } else { "not rewritten by html_rewrite" }
            );
            match &first {
                None => first = Some((*v, page)),
                Some((w, other)) => assert!(
                    *other == page,
                    "{zone}'s page differs between {} and {}: the variants do not do the same work",
                    w.name(),
                    v.name()
                ),
            }
        }
    }
}

/// Memory and start time with many zones, per variant.
pub(crate) struct Zones {
    /// Worker RSS after every zone served a request.
    pub(crate) rss_kib: u64,
    /// From starting nginx to its first answer.
    pub(crate) start_s: f64,
    /// The graft_shared_memory its configuration needs.
    pub(crate) counter_kib: Option<usize>,
}

/// Memory and start time with `run.zones` zones (ten thousand), every
/// variant, each zone touched once.
pub(crate) fn measure_zones(run: &Run) -> Vec<Zones> {
    let mut memory = Vec::new();
    for &v in &VARIANTS {
        let config = v.mode().map(|mode| many_zones(mode, run.zones));
        let s = Server::start_with(
            &format!("zones-{}", v.slug()),
            config.as_ref(),
            "",
            &v.pipeline(config.as_ref()),
        );
        let start_s = s.start_s;
        if v != Variant::Plain {
            // Every zone once, so the Lua side builds every zone's plan too.
            for i in 0..run.zones {
                s.get(&format!("z{i}.example"), "/index.html");
            }
        }
        let zones = Zones {
            rss_kib: s.worker_rss_kib(),
            start_s,
            counter_kib: s.counter_kib,
        };
        if let Some(side) = v.side() {
            s.require_work(side, &format!("{} ({} zones)", v.name(), run.zones));
        }
        eprintln!(
            "{} zones: {}: {} KiB, up in {start_s:.1} s, graft_shared_memory {:?} KiB",
            run.zones,
            v.name(),
            zones.rss_kib,
            zones.counter_kib
        );
        memory.push(zones);
    }
    memory
}

/// One job done two ways on the same requests: by nginx's own module, and
/// by graft's module alone in the native pipeline.
pub(crate) struct Versus {
    pub(crate) job: &'static str,
    pub(crate) nginx: &'static str,
    pub(crate) nginx_http: String,
    pub(crate) nginx_location: String,
    pub(crate) graft: Value,
    /// A request that must answer as the job means it to, and its status.
    pub(crate) check: (&'static str, u16),
}

pub(crate) fn versus_jobs() -> Vec<Versus> {
    let zone = |modules: Value| json!({ "zones": { "*": { "modules": modules } } });
    let prefixes: Vec<String> = (0..1000)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    let map: String = (0..1000)
        .map(|i| format!("        /old/{i} /new/{i};\n"))
        .collect();
    let mut jobs = vec![
        Versus {
            job: "1,000 denied prefixes, request allowed",
            nginx: "allow/deny",
            nginx_http: String::new(),
            nginx_location: prefixes
                .iter()
                .map(|p| format!("deny {p}; "))
                .collect::<String>()
                + "allow all;",
            graft: zone(
                json!([{ "module": "ip_access", "mode": "rust", "config": { "deny": prefixes } }]),
            ),
            check: ("/index.html", 200),
        },
        Versus {
            job: "a rate limit per client, never reached",
            nginx: "limit_req",
            nginx_http: "limit_req_zone $binary_remote_addr zone=bench:10m rate=1000000r/s;".into(),
            nginx_location: "limit_req zone=bench burst=1000000 nodelay;".into(),
            graft: zone(
                json!([{ "module": "rate_limit", "mode": "rust", "config": { "limits": [
                { "name": "clients", "key": "client", "limit": 1048575, "window": 1 } ] } }]),
            ),
            check: ("/index.html", 200),
        },
        Versus {
            job: "1,000 exact redirects, request not redirected",
            nginx: "map + return",
            nginx_http: format!("map $uri $bench_target {{\n        default \"\";\n{map}    }}"),
            nginx_location: "if ($bench_target) { return 301 $bench_target; }".into(),
            graft: zone(
                json!([{ "module": "redirects", "mode": "rust", "config": { "rules":
                (0..1000).map(|i| json!({ "from": format!("/old/{i}"), "to": format!("/new/{i}") })).collect::<Vec<_>>() } }]),
            ),
            check: ("/old/999", 301),
        },
        Versus {
            job: "one response header set",
            nginx: "add_header",
            nginx_http: String::new(),
            nginx_location: "add_header X-Frame-Options DENY;".into(),
            graft: zone(
                json!([{ "module": "headers", "mode": "rust", "config": { "rules": [
                { "response": [ { "set": "X-Frame-Options", "value": "DENY" } ] } ] } }]),
            ),
            check: ("/index.html", 200),
        },
    ];
    // The four at once: graft's pipeline costs are paid once a request
    // for all its steps, nginx's modules each pay their own.
    let all = Versus {
        job: "the four jobs at once",
        nginx: "the four",
        nginx_http: jobs
            .iter()
            .map(|j| j.nginx_http.as_str())
            .collect::<Vec<_>>()
            .join("\n    "),
        nginx_location: jobs
            .iter()
            .map(|j| j.nginx_location.as_str())
            .collect::<Vec<_>>()
            .join("\n            "),
        graft: zone(Value::Array(
            jobs.iter()
                .flat_map(|j| j.graft["zones"]["*"]["modules"].as_array().unwrap().clone())
                .collect(),
        )),
        check: ("/index.html", 200),
    };
    jobs.push(all);
    jobs
}

/// The modules of a job's graft configuration, joined.
pub(crate) fn graft_modules(job: &Versus) -> String {
    job.graft["zones"]["*"]["modules"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["module"].as_str())
                .collect::<Vec<_>>()
                .join(" + ")
        })
        .unwrap_or_default()
}

/// Each job by nginx's module and by graft's, against plain nginx, runs
/// alternating: (job, nginx's module, nginx's own CPU µs/req, graft's).
/// One job's result: each side's own cost above plain nginx's, in CPU
/// time (medians under wrk) and in instructions (callgrind).
pub(crate) struct VersusResult {
    pub(crate) job: Versus,
    pub(crate) nginx_us: f64,
    pub(crate) graft_us: f64,
    pub(crate) nginx_instructions: Option<f64>,
    pub(crate) graft_instructions: Option<f64>,
}

pub(crate) fn measure_versus(dir: &Path, run: &Run) -> Vec<VersusResult> {
    let (rounds, seconds) = (run.rounds, run.seconds);
    let script = dir.join("page.lua");
    std::fs::write(
        &script,
        "request = function()\n  return wrk.format(\"GET\", \"/index.html\", { [\"Host\"] = \"localhost\" })\nend\n",
    )
    .unwrap();
    let plain = Server::start_with("versus-plain", None, "", "");
    let plain_instructions = Server::prepare("versus-plain-cg", None, "", "")
        .instructions_per_request("localhost", "/index.html", run.callgrind_requests);
    let mut out = Vec::new();
    for (k, job) in versus_jobs().into_iter().enumerate() {
        let nginx = Server::start_with(
            &format!("versus-{k}-nginx"),
            None,
            &job.nginx_http,
            &job.nginx_location,
        );
        let graft = Server::start_with(
            &format!("versus-{k}-graft"),
            Some(&job.graft),
            "",
            "graft_native on;",
        );
        for s in [&nginx, &graft] {
            let (status, _) = s.get("localhost", job.check.0);
            assert_eq!(
                status, job.check.1,
                "{}: {} answered {status}",
                job.job, job.check.0
            );
        }
        let mut cpu: [Vec<f64>; 3] = Default::default();
        for _ in 0..rounds {
            for (i, s) in [&plain, &nginx, &graft].into_iter().enumerate() {
                cpu[i].push(wrk(s, &script, seconds).cpu_us_per_req);
            }
        }
        let [p, n, g] = cpu.map(median);
        graft.require_work(Side::Rust, &format!("graft's side of {}", job.job));
        drop((nginx, graft));
        let own = |name: &str, config: Option<&Value>, http: &str, location: &str| {
            // The page requests wrk sends, which every job lets through.
            let count = Server::prepare(name, config, http, location).instructions_per_request(
                "localhost",
                "/index.html",
                run.callgrind_requests,
            );
            Some(count? - plain_instructions?)
        };
        let nginx_instructions = own(
            &format!("versus-{k}-nginx-cg"),
            None,
            &job.nginx_http,
            &job.nginx_location,
        );
        let graft_instructions = own(
            &format!("versus-{k}-graft-cg"),
            Some(&job.graft),
            "",
            "graft_native on;",
        );
        eprintln!(
            "versus {}: nginx {:.2} µs, graft {:.2} µs above plain; instructions nginx {nginx_instructions:?}, graft {graft_instructions:?}",
            job.job,
            n - p,
            g - p
        );
        out.push(VersusResult {
            job,
            nginx_us: n - p,
            graft_us: g - p,
            nginx_instructions,
            graft_instructions,
        });
    }
    out
}

/// The dimensions a user sizing graft asks about, and their sizes.
pub(crate) const SERIES: [(&str, &[usize]); 3] = [
    ("WAF rules in a zone", &[10, 100, 1_000]),
    ("bulk redirects in a zone", &[10, 1_000, 100_000, 1_000_000]),
    ("zones", &[10, 1_000, 10_000, 100_000]),
];

/// One implementation at one point of a series.
pub(crate) struct Point {
    /// Worker CPU per request above plain nginx's, on the same requests.
    pub(crate) cpu_us: f64,
    pub(crate) rss_kib: u64,
    pub(crate) start_s: f64,
}

/// One point of a series: the Lua pipeline and the native one.
pub(crate) struct Scale {
    pub(crate) series: &'static str,
    pub(crate) size: usize,
    /// The graft_shared_memory of its configuration, in KiB.
    pub(crate) counter_kib: Option<usize>,
    pub(crate) lua: Point,
    pub(crate) native: Point,
}

impl Scale {
    pub(crate) fn to_json(&self) -> Value {
        let point = |p: &Point| json!({ "own_cpu_us_per_req": p.cpu_us, "rss_kib": p.rss_kib, "start_s": p.start_s });
        json!({ "series": self.series, "size": self.size, "graft_shared_memory_kib": self.counter_kib,
                "lua": point(&self.lua), "native": point(&self.native),
                "native_vs_lua_cpu": self.native.cpu_us / self.lua.cpu_us,
                "native_vs_lua_rss": self.native.rss_kib as f64 / self.lua.rss_kib as f64 })
    }
}

/// A series' configuration at `size` in `mode`, and the paths its requests
/// take (every zone's requests go to `zone{i}.example` for i below the
/// third figure).
pub(crate) fn scaling_config(series: &str, size: usize, mode: &str) -> (Value, Vec<String>, usize) {
    let one_zone = |modules: Value| json!({ "zones": { "*": { "modules": modules } } });
    match series {
        "WAF rules in a zone" => {
            // Half prefix rules on the path, then half equality rules on
            // one header (a run the WAF folds into one lookup); the
            // requests match none, so every rule is tried.
            let rules: Vec<Value> = (0..size)
                .map(|r| {
                    if r < size / 2 {
                        json!({ "id": format!("p{r}"), "action": "block",
                                "when": { "field": "path", "op": "prefix", "value": format!("/blocked/{r}/") } })
                    } else {
                        json!({ "id": format!("t{r}"), "action": "block",
                                "when": { "field": "header:x-tenant", "op": "equals", "value": format!("banned-{r}") } })
                    }
                })
                .collect();
            let config = one_zone(json!([
                { "module": "waf", "mode": mode, "config": { "rules": rules } }
            ]));
            (config, vec!["/index.html".into()], 1)
        }
        "bulk redirects in a zone" => {
            let map: serde_json::Map<String, Value> = (0..size)
                .map(|i| (format!("/old/{i}"), json!(format!("/new/{i}"))))
                .collect();
            let config = one_zone(json!([
                { "module": "redirects", "mode": mode, "config": { "bulk": { "map": map } } }
            ]));
            // Half the requests redirected, half not.
            let mut paths: Vec<String> = (0..50)
                .map(|k| format!("/old/{}", (k * 7919) % size))
                .collect();
            paths.extend((0..50).map(|_| "/index.html".to_string()));
            (config, paths, 1)
        }
        _ => {
            let mut zones = serde_json::Map::new();
            for i in 0..size {
                let rules: Vec<Value> = (0..10)
                    .map(|r| json!({ "id": format!("r{r}"), "action": "block",
                                     "when": { "field": "path", "op": "prefix", "value": format!("/blocked/{i}/{r}") } }))
                    .collect();
                let redirects: Vec<Value> = (0..10)
                    .map(|r| json!({ "from": format!("/old/{r}"), "to": format!("/new/{i}/{r}") }))
                    .collect();
                zones.insert(
                    format!("zone{i}.example"),
                    json!({ "modules": [
                        { "module": "url_normalize", "mode": mode },
                        { "module": "ip_access", "mode": mode, "config": { "deny": [format!("10.{}.{}.0/24", (i / 256) % 256, i % 256)] } },
                        { "module": "waf", "mode": mode, "config": { "rules": rules, "signatures": ["sql_injection"] } },
                        { "module": "redirects", "mode": mode, "config": { "rules": redirects } },
                        { "module": "headers", "mode": mode, "config": { "rules": [ { "response": [ { "set": "X-Zone", "value": format!("z{i}") } ] } ] } },
                    ] }),
                );
            }
            (
                json!({ "zones": zones }),
                vec!["/index.html".into()],
                size.min(100),
            )
        }
    }
}

/// A wrk script sending `paths` round robin over `hosts` hosts.
pub(crate) fn scaling_script(
    dir: &Path,
    paths: &[String],
    hosts: usize,
    named_zones: bool,
) -> PathBuf {
    let host_list: Vec<String> = (0..hosts)
        .map(|i| {
            if named_zones {
                format!("\"zone{i}.example\"")
            } else {
                "\"localhost\"".to_string()
            }
        })
        .collect();
    let path_list: Vec<String> = paths.iter().map(|p| format!("\"{p}\"")).collect();
    let script = format!(
        "local hosts = {{ {} }}\nlocal paths = {{ {} }}\nlocal i = 0\n\
         request = function()\n  i = i + 1\n  \
         return wrk.format(\"GET\", paths[i % #paths + 1], {{ [\"Host\"] = hosts[i % #hosts + 1] }})\nend\n",
        host_list.join(", "),
        path_list.join(", ")
    );
    let path = dir.join("scaling.lua");
    std::fs::write(&path, script).unwrap();
    path
}

/// How cost grows: for each series and size, the Lua pipeline and the
/// native one, each in its own nginx with graft's counter table sized for
/// its configuration: CPU per request above plain
/// nginx's on the same requests (runs alternating), worker RSS after every
/// zone has served a request, and the time from starting nginx to its
/// first answer.
pub(crate) fn measure_scaling(dir: &Path, run: &Run) -> Vec<Scale> {
    let seconds = run.seconds.min(2);
    let plain = Server::start_with("scaling-plain", None, "", "");
    let mut out = Vec::new();
    for (series, sizes) in SERIES {
        for &size in series_sizes(sizes, run) {
            let named = series == "zones";
            let (_, paths, hosts) = scaling_config(series, size, "lua");
            let script = scaling_script(dir, &paths, hosts, named);
            let mut points = Vec::new();
            let mut servers = Vec::new();
            for variant in [Variant::Lua, Variant::Native] {
                let mode = variant.mode().unwrap();
                let (config, ..) = scaling_config(series, size, mode);
                let s = Server::start_with(
                    &format!("scaling-{mode}"),
                    Some(&config),
                    "",
                    &variant.pipeline(Some(&config)),
                );
                let start_s = s.start_s;
                if named {
                    // Every zone once, so the Lua side builds every plan.
                    touch_every_zone(&s, size);
                }
                let (status, _) = s.get(
                    if named { "zone0.example" } else { "localhost" },
                    "/index.html",
                );
                assert_eq!(
                    status, 200,
                    "{series} {size} {mode}: /index.html answered {status}"
                );
                wrk(&s, &script, 1);
                servers.push((s, start_s));
            }
            let mut cpu: [Vec<f64>; 3] = Default::default();
            for _ in 0..run.scaling_rounds {
                cpu[0].push(wrk(&plain, &script, seconds).cpu_us_per_req);
                for (k, (s, _)) in servers.iter().enumerate() {
                    cpu[k + 1].push(wrk(s, &script, seconds).cpu_us_per_req);
                }
            }
            let [p, l, n] = cpu.map(median);
            for (k, (s, start_s)) in servers.iter().enumerate() {
                points.push(Point {
                    cpu_us: [l, n][k] - p,
                    rss_kib: s.worker_rss_kib(),
                    start_s: *start_s,
                });
            }
            for ((s, _), variant) in servers.iter().zip([Variant::Lua, Variant::Native]) {
                s.require_work(
                    variant.side().unwrap(),
                    &format!("{} at {series} {size}", variant.name()),
                );
            }
            let counter_kib = servers[0].0.counter_kib;
            let native = points.pop().unwrap();
            let lua = points.pop().unwrap();
            eprintln!(
                "{series} {size}: CPU above plain Lua {:.2} µs, native {:.2} µs; RSS Lua {} MiB, native {} MiB; start Lua {:.1} s, native {:.1} s",
                lua.cpu_us, native.cpu_us, lua.rss_kib / 1024, native.rss_kib / 1024, lua.start_s, native.start_s
            );
            drop(servers);
            out.push(Scale {
                series,
                size,
                counter_kib,
                lua,
                native,
            });
        }
    }
    out
}

/// A series' sizes in this run: all of them, or the first.
pub(crate) fn series_sizes<'a>(sizes: &'a [usize], run: &Run) -> &'a [usize] {
    if run.smallest_only {
        &sizes[..1]
    } else {
        sizes
    }
}

/// One request to each of `size` zones, from four threads.
pub(crate) fn touch_every_zone(s: &Server, size: usize) {
    std::thread::scope(|scope| {
        for t in 0..4 {
            scope.spawn(move || {
                for i in (t..size).step_by(4) {
                    s.get(&format!("zone{i}.example"), "/index.html");
                }
            });
        }
    });
}

/// One streaming job (a body inspected, a document rewritten): MB/s of
/// the bytes graft reads (the request body, or the response document)
/// for plain nginx, native and Lua, and graft's own CPU per request above
/// plain nginx's (native, Lua).
pub(crate) struct Stream {
    pub(crate) job: &'static str,
    pub(crate) bytes: usize,
    pub(crate) mb_per_s: [f64; 3],
    pub(crate) own_us: [f64; 2],
}

/// A streaming job: its name, the bytes graft reads a request, its wrk
/// script, and the variants (graft's file, the location's directives):
/// plain nginx, native, Lua.
pub(crate) type StreamJob<'a> = (&'static str, usize, &'a Path, [(Option<Value>, String); 3]);

/// HTML rewriting (html_rewrite) and body inspection (the WAF with
/// inspect_body), each against plain nginx serving the same requests.
pub(crate) fn measure_streams(dir: &Path, run: &Run) -> Vec<Stream> {
    let (rounds, seconds) = (run.rounds, run.seconds);
    let pieces: Vec<String> = graft_html_rewrite::sample::PIECES
        .iter()
        .map(|p| p.to_string())
        .collect();
    let body: Vec<String> = (0..160).flat_map(|_| pieces.iter().cloned()).collect();
    let doc = graft_html_rewrite::sample::document(&pieces[..4], &body);
    let form = format!(
        "q=hello+world&page=2&{}",
        (0..400)
            .map(|i| format!("field{i}=value+number+{i}+with+some+text"))
            .collect::<Vec<_>>()
            .join("&")
    );
    let rewrite = |mode: &str| {
        json!({ "zones": { "localhost": { "modules": [ { "module": "html_rewrite", "mode": mode,
            "config": { "head_end": "<script src=\"/rum.js\"></script>",
                        "https_hosts": ["example.com", "cdn.example.com"], "obfuscate_emails": true } } ] } } })
    };
    let inspect = |mode: &str| {
        json!({ "zones": { "localhost": { "body": { "max_bytes": 65536, "over": "inspect" },
            "modules": [ { "module": "waf", "mode": mode, "config": {
                "signatures": ["sql_injection", "path_traversal", "script_injection"], "inspect_body": true } } ] } } })
    };
    let get_script = dir.join("stream-get.lua");
    std::fs::write(
        &get_script,
        "wrk.headers[\"Host\"] = \"localhost\"\nwrk.path = \"/doc.html\"\n",
    )
    .unwrap();
    let post_script = dir.join("stream-post.lua");
    std::fs::write(
        &post_script,
        format!(
            "wrk.method = \"POST\"\nwrk.path = \"/index.html\"\nwrk.headers[\"Host\"] = \"localhost\"\nwrk.headers[\"Content-Type\"] = \"application/x-www-form-urlencoded\"\nwrk.body = \"{form}\"\n"
        ),
    )
    .unwrap();
    // The body stays in memory up to the zone's limit, as graft inspects it.
    let http = format!(
        "client_body_buffer_size {};",
        inspect("rust")["zones"]["localhost"]["body"]["max_bytes"]
    );
    let (rewrite_lua, inspect_lua) = (rewrite("lua"), inspect("lua"));
    let jobs: [StreamJob; 2] = [
        (
            "HTML rewriting (html_rewrite, a document of the sample pieces)",
            doc.len(),
            &get_script,
            [
                (None, String::new()),
                (Some(rewrite("rust")), "graft_native on;".into()),
                (Some(rewrite_lua.clone()), lua_phases(Some(&rewrite_lua))),
            ],
        ),
        (
            "Body inspection (the WAF's signatures over a form body)",
            form.len(),
            &post_script,
            [
                (None, String::new()),
                (Some(inspect("rust")), "graft_native on;".into()),
                (Some(inspect_lua.clone()), lua_phases(Some(&inspect_lua))),
            ],
        ),
    ];
    let mut out = Vec::new();
    for (job, bytes, script, variants) in jobs {
        let servers: Vec<Server> = variants
            .iter()
            .enumerate()
            .map(|(i, (config, location))| {
                let s =
                    Server::start_with(&format!("stream-{i}"), config.as_ref(), &http, location);
                std::fs::write(s.prefix.join("html/doc.html"), &doc).unwrap();
                // A rewriting variant that does not rewrite measures nothing.
                let (status, text) = s.get("localhost", "/doc.html");
                assert_eq!(status, 200);
                assert_eq!(
                    text.contains("ann&#64;example.org"),
                    i > 0 && bytes == doc.len(),
                    "{job}, variant {i}"
                );
                s
            })
            .collect();
        let mut runs: Vec<Vec<Sample>> = (0..3).map(|_| Vec::new()).collect();
        for _ in 0..rounds {
            for (i, s) in servers.iter().enumerate() {
                runs[i].push(wrk(s, script, seconds));
            }
        }
        let m: Vec<Sample> = runs.iter().map(|r| medians(r)).collect();
        for (i, s) in servers.iter().enumerate().skip(1) {
            warn_on_logged_errors_at(s, &format!("{job}, variant {i}"));
            let (side, name) = [(Side::Rust, "native"), (Side::Lua, "Lua")][i - 1];
            s.require_work(side, &format!("{job}, {name}"));
        }
        let mb = |s: &Sample| s.rps * bytes as f64 / 1e6;
        out.push(Stream {
            job,
            bytes,
            mb_per_s: [mb(&m[0]), mb(&m[1]), mb(&m[2])],
            own_us: [
                m[1].cpu_us_per_req - m[0].cpu_us_per_req,
                m[2].cpu_us_per_req - m[0].cpu_us_per_req,
            ],
        });
    }
    out
}
