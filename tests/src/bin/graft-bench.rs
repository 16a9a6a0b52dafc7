//! graft-bench (`make bench`): the request path's cost in each variant,
//! measured with wrk on loopback against one nginx worker.
//!
//! Variants: plain nginx (static content, no modules), the Lua pipeline
//! (every module in `lua`), Lua calling Rust (`rust` through the bridge),
//! the native pipeline (`graft_native`, no Lua), and `shadow`. Each runs in
//! its own nginx; runs alternate between variants, round after round, so
//! that the machine's drift spreads over all of them. Reports requests/s,
//! worker CPU time per request (from /proc), p50 and p99 latency, worker
//! memory with 10,000 zones loaded, the cost of one bridge call, as a
//! markdown table (and ratios to plain nginx and to the Lua pipeline) and
//! an SVG chart, under target/graft-bench/.
//!
//! And how cost grows with WAF rules, bulk redirects and zones, Lua
//! against native (`--only scaling`, or `--only versus` for the modules
//! against nginx's own, measures one part alone).
//!
//! Each nginx gets the `graft_shared_memory` its configuration needs
//! (`graft_tests::bench::sizing`), and after each run every variant's
//! counts must show the work it names: no step failed or fell back, every
//! step served by the variant's side (`graft_tests::bench::work`), or the
//! bench stops. `--smoke` runs every variant and every series once, at
//! their smallest and for a second, and fails unless each wrote its
//! figures (`make bench-smoke`; no figure of it is a measurement).
//!
//!     graft-bench [--rounds N] [--seconds S] [--only scaling|versus|streams] [--smoke] [--out DIR]
use std::io::{Read, Write};

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use graft_tests::bench::sizing::counter_kib as counter_kib_for;
use graft_tests::bench::work::{Served, Side};
use graft_tests::{module_path, root};
use serde_json::{json, Value};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Plain,
    Lua,
    Bridge,
    Native,
    Shadow,
}

const VARIANTS: [Variant; 5] = [
    Variant::Plain,
    Variant::Lua,
    Variant::Bridge,
    Variant::Native,
    Variant::Shadow,
];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain nginx",
            Variant::Lua => "Lua pipeline",
            Variant::Bridge => "Lua calling Rust (bridge)",
            Variant::Native => "native Rust pipeline",
            Variant::Shadow => "shadow",
        }
    }
    fn slug(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Lua => "lua",
            Variant::Bridge => "bridge",
            Variant::Native => "native",
            Variant::Shadow => "shadow",
        }
    }
    /// What the pages' location runs for graft's file `config`: on the
    /// Lua side, each phase of graft's Lua that the file's steps use, as
    /// `nginx/graft.conf.in` wires them.
    fn pipeline(self, config: Option<&Value>) -> String {
        match self {
            Variant::Plain => String::new(),
            Variant::Native => "graft_native on;".into(),
            _ => lua_phases(config),
        }
    }

    /// The side every step must be served by, after a run.
    fn side(self) -> Option<Side> {
        match self {
            Variant::Plain => None,
            Variant::Lua => Some(Side::Lua),
            Variant::Bridge | Variant::Native => Some(Side::Rust),
            Variant::Shadow => Some(Side::Shadow),
        }
    }

    fn mode(self) -> Option<&'static str> {
        match self {
            Variant::Plain => None,
            Variant::Lua => Some("lua"),
            Variant::Bridge | Variant::Native => Some("rust"),
            Variant::Shadow => Some("shadow"),
        }
    }
}

/// Whether a step of graft's file `config` runs `module`.
fn uses_module(config: Option<&Value>, module: &str) -> bool {
    config
        .and_then(|c| c["zones"].as_object())
        .is_some_and(|zones| {
            zones.values().any(|z| {
                z["modules"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|s| s["module"] == module))
            })
        })
}

/// graft's Lua phases for a location serving `config`: access and the
/// response headers always, the response body when a step rewrites it
/// (html_rewrite), the log phase when a step logs (request_log). A phase
/// left out would count those steps failed.
fn lua_phases(config: Option<&Value>) -> String {
    let mut phases = vec![
        "access_by_lua_block { require(\"graft\").access() }",
        "header_filter_by_lua_block { require(\"graft\").header_filter() }",
    ];
    if uses_module(config, "html_rewrite") {
        phases.push("body_filter_by_lua_block { require(\"graft\").body_filter() }");
    }
    if uses_module(config, "request_log") {
        phases.push("log_by_lua_block { require(\"graft\").log() }");
    }
    phases.join("\n            ")
}

struct Server {
    prefix: PathBuf,
    port: u16,
    /// The `graft_shared_memory` its configuration needs, in KiB.
    counter_kib: Option<usize>,
    /// Seconds from starting nginx to its first answer (0 until started).
    start_s: f64,
}

impl Server {
    fn start(variant: Variant, config: Option<&Value>, tag: &str) -> Server {
        Server::start_with(
            &format!("{tag}-{}", variant.slug()),
            config,
            "",
            &variant.pipeline(config),
        )
    }

    /// A server named `name`: graft's file `config` (if any), `http` more
    /// directives of the http block, `location` those of the location
    /// serving the pages.
    fn start_with(name: &str, config: Option<&Value>, http: &str, location: &str) -> Server {
        let mut server = Server::prepare(name, config, http, location);
        let started = Instant::now();
        graft_tests::run_ok(
            Command::new("nginx")
                .args([
                    "-p",
                    server.prefix.to_str().unwrap(),
                    "-c",
                    server.prefix.join("nginx.conf").to_str().unwrap(),
                ])
                .args(["-e", server.prefix.join("error.log").to_str().unwrap()]),
        );
        // A Lua pipeline with 100,000 zones checks every zone's plan at start.
        let deadline = Instant::now() + Duration::from_secs(300);
        while server.worker().is_none() || TcpStream::connect(("127.0.0.1", server.port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        server.start_s = started.elapsed().as_secs_f64();
        server
    }

    /// The prefix and nginx.conf of `start_with`, nginx not started.
    fn prepare(name: &str, config: Option<&Value>, http: &str, location: &str) -> Server {
        // Outside the clone, where nginx's workers (not root) can read.
        let prefix = std::env::temp_dir().join("graft-bench").join(name);
        let _ = std::fs::remove_dir_all(&prefix);
        std::fs::create_dir_all(prefix.join("tmp")).unwrap();
        std::fs::create_dir_all(prefix.join("html/static")).unwrap();
        // With a head, so that a zone's html_rewrite has its snippet to add.
        let page = format!(
            "<!doctype html><html><head><title>graft</title></head><body>{}</body></html>\n",
            "<p>content</p>".repeat(40)
        );
        std::fs::write(prefix.join("html/index.html"), &page).unwrap();
        std::fs::write(
            prefix.join("html/static/app.js"),
            "console.log('graft');\n".repeat(20),
        )
        .unwrap();
        let _ = Command::new("chmod")
            .args(["a+rx"])
            .arg(prefix.parent().unwrap())
            .status();
        graft_tests::lay_out_prefix(&prefix);
        let port = graft_tests::free_port();
        // graft_shared_memory must come before graft_config; its size is
        // what this configuration needs.
        let mut graft_config = http.to_string();
        let mut counter_kib = None;
        if let Some(c) = config {
            let path = prefix.join("graft.json");
            std::fs::write(&path, c.to_string()).unwrap();
            let kib = counter_kib_for(&path)
                .unwrap_or_else(|e| panic!("{name}: graft's file does not load: {e}"));
            counter_kib = Some(kib);
            graft_config = format!(
                "graft_shared_memory {kib}k;\n    {graft_config}\n    graft_config {};",
                path.display()
            );
        }
        let conf = std::fs::read_to_string(root().join("nginx/bench.conf.in"))
            .unwrap()
            .replace("@GRAFT_MODULE@", module_path().to_str().unwrap())
            .replace("@PREFIX@", prefix.to_str().unwrap())
            .replace("@GRAFT_ROOT@", prefix.join("graft").to_str().unwrap())
            .replace("@GRAFT_CONFIG@", &graft_config)
            .replace("@PIPELINE@", location)
            .replace("@PORT@", &port.to_string());
        std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
        Server {
            prefix,
            port,
            counter_kib,
            start_s: 0.0,
        }
    }

    /// Stops the bench unless graft's counts show that this server's steps
    /// were all served by `side`, none failed or fell back, none lost.
    fn require_work(&self, side: Side, what: &str) {
        let (status, totals) = self.get("localhost", "/graft/totals");
        let checked = if status == 200 {
            Served::parse(&totals).and_then(|s| s.check(side))
        } else {
            Err(format!("/graft/totals answered {status}"))
        };
        if let Err(e) = checked {
            panic!(
                "{what} did not do the work it names ({side:?} serving every step): {e}; its log: {}",
                self.prefix.join("error.log").display()
            );
        }
    }

    /// Instructions per request: this server's nginx run as one process
    /// under callgrind, counting only while `n` page requests are served
    /// after a warm-up. Unlike time, the count does not move with the
    /// machine's load. `None` without valgrind.
    fn instructions_per_request(&self, host: &str, path: &str, n: usize) -> Option<f64> {
        let conf = std::fs::read_to_string(self.prefix.join("nginx.conf"))
            .unwrap()
            .replacen(
                "worker_processes 1;",
                "worker_processes 1;\nmaster_process off;\ndaemon off;",
                1,
            );
        let cg_conf = self.prefix.join("callgrind.conf");
        std::fs::write(&cg_conf, conf).unwrap();
        let out = self.prefix.join("callgrind.out");
        let _ = std::fs::remove_file(&out);
        let mut child = Command::new("valgrind")
            .args(["--tool=callgrind", "--instr-atstart=no"])
            .arg(format!("--callgrind-out-file={}", out.display()))
            .args(["nginx", "-p", self.prefix.to_str().unwrap(), "-c"])
            .arg(&cg_conf)
            .args(["-e", self.prefix.join("callgrind.log").to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(300);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for _ in 0..50 {
            self.get(host, path);
        }
        let control = |on: &str| {
            Command::new("callgrind_control")
                .args(["-i", on, &child.id().to_string()])
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let counted = control("on") && {
            for _ in 0..n {
                self.get(host, path);
            }
            control("off")
        };
        // A graceful stop, then a fast one: callgrind writes its counts
        // when nginx exits either way (a stop signal that arrives while
        // valgrind handles callgrind_control's request can be lost).
        for signal in ["-QUIT", "-TERM", "-TERM", "-KILL"] {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
        }
        let _ = child.wait();
        let totals: f64 = std::fs::read_to_string(&out)
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("totals:"))?
            .trim()
            .parse()
            .ok()?;
        counted.then_some(totals / n as f64)
    }

    fn master(&self) -> Option<i32> {
        std::fs::read_to_string(self.prefix.join("nginx.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn worker(&self) -> Option<i32> {
        let master = self.master()?;
        let children =
            std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// utime + stime of the worker, in clock ticks.
    fn worker_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.worker().unwrap())).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    fn worker_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.worker().unwrap())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    fn get(&self, host: &str, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        let r = graft_tests::parse_response(&buf).expect("an HTTP response");
        (r.status, r.text())
    }
}

impl Drop for Server {
    /// Stops this nginx and waits for its master to exit: the next server
    /// of the same name reuses the prefix, and a master still exiting (one
    /// with a million redirects takes seconds) would remove the new one's
    /// pid file.
    fn drop(&mut self) {
        if let Some(pid) = self.master() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The shipped ten-zone configuration, in one mode, with a `localhost`
/// zone for the bridge-call loop and a rate limit that never triggers.
fn realistic_config(mode: &str) -> Value {
    let text = std::fs::read_to_string(root().join("tests/corpus/config.json")).unwrap();
    let mut config: Value = serde_json::from_str(&text).unwrap();
    for zone in config["zones"].as_object_mut().unwrap().values_mut() {
        for step in zone["modules"].as_array_mut().unwrap() {
            step["mode"] = json!(mode);
            if step["module"] == "rate_limit" {
                step["config"] = json!({ "limits": [ { "name": "clients", "key": "client", "limit": 1000000, "window": 1 } ] });
            }
        }
    }
    config["zones"]["localhost"] =
        json!({ "modules": [ { "module": "headers", "mode": mode, "config": { "rules": [] } } ] });
    config
}

/// `count` zones (ten thousand), each with a lighter pipeline of every
/// module.
fn many_zones(mode: &str, count: usize) -> Value {
    let mut zones = serde_json::Map::new();
    for i in 0..count {
        let rules: Vec<Value> = (0..10)
            .map(|r| json!({ "id": format!("r{r}"), "when": { "field": "path", "op": "prefix", "value": format!("/blocked/{i}/{r}") }, "action": "block" }))
            .collect();
        let redirects: Vec<Value> = (0..50)
            .map(|r| json!({ "from": format!("/old/{r}"), "to": format!("/new/{i}/{r}") }))
            .collect();
        zones.insert(
            format!("z{i}.example"),
            json!({ "modules": [
                { "module": "url_normalize", "mode": mode },
                { "module": "ip_access", "mode": mode, "config": { "deny": [format!("10.{}.{}.0/24", i / 256, i % 256)] } },
                { "module": "waf", "mode": mode, "config": { "rules": rules, "signatures": ["sql_injection", "script_injection"] } },
                { "module": "redirects", "mode": mode, "config": { "rules": redirects } },
                { "module": "headers", "mode": mode, "config": { "rules": [ { "response": [ { "set": "X-Zone", "value": format!("z{i}") } ] } ] } },
            ] }),
        );
    }
    json!({ "zones": zones })
}

/// The request mix: mostly clean, some blocked, some redirected.
fn wrk_script(dir: &Path) -> PathBuf {
    let zones = [
        "shop.example",
        "blog.example",
        "news.example",
        "docs.example",
        "m.example",
    ];
    let mut reqs = Vec::new();
    for i in 0..100 {
        let zone = zones[i % zones.len()];
        let (path, extra) = match i % 20 {
            0 => ("/search?q=1%27%20OR%20%271%27=%271".to_string(), ""),
            1 => ("/admin/users".to_string(), ""),
            2 => (format!("/legacy/{}", i * 7), ""),
            3 => ("/old?x=1".to_string(), ""),
            4 => (
                "/static/app.js".to_string(),
                ", [\"User-Agent\"] = \"curl/8.5.0\"",
            ),
            _ => (
                format!(
                    "/index.html?page={i}&ref=mail&utm_source=news&id={}",
                    i * 31
                ),
                "",
            ),
        };
        reqs.push(format!(
            "wrk.format(\"GET\", \"{path}\", {{ [\"Host\"] = \"{zone}\", [\"Cookie\"] = \"session=abc123\"{extra} }})"
        ));
    }
    let script = format!(
        "local reqs = {{\n  {}\n}}\nlocal i = 0\nrequest = function()\n  i = i % #reqs + 1\n  return reqs[i]\nend\n",
        reqs.join(",\n  ")
    );
    let path = dir.join("mix.lua");
    std::fs::write(&path, script).unwrap();
    path
}

struct Sample {
    rps: f64,
    cpu_us_per_req: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn parse_duration_ms(s: &str) -> f64 {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_alphabetic()).unwrap_or(s.len()));
    let v: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        _ => f64::NAN,
    }
}

fn run_wrk(server: &Server, script: &Path, seconds: u64) -> Sample {
    let before = server.worker_ticks();
    let out = Command::new("wrk")
        .args(["-t1", "-c16", &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(script)
        .arg(format!("http://127.0.0.1:{}/", server.port))
        .output()
        .expect("wrk (make deps installs it)");
    let after = server.worker_ticks();
    let text = String::from_utf8_lossy(&out.stdout);
    let find = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::trim))
            .unwrap_or("nan")
            .to_string()
    };
    let requests: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN);
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    Sample {
        rps: find("Requests/sec:").parse().unwrap_or(f64::NAN),
        cpu_us_per_req: (after - before) as f64 / ticks_per_sec * 1e6 / requests,
        p50_ms: parse_duration_ms(&find("50%")),
        p99_ms: parse_duration_ms(&find("99%")),
    }
}

/// Each figure's median over a variant's runs.
fn medians(runs: &[Sample]) -> Sample {
    let of = |f: fn(&Sample) -> f64| median(runs.iter().map(f).collect());
    Sample {
        rps: of(|s| s.rps),
        cpu_us_per_req: of(|s| s.cpu_us_per_req),
        p50_ms: of(|s| s.p50_ms),
        p99_ms: of(|s| s.p99_ms),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let nginx = String::from_utf8_lossy(&Command::new("nginx").arg("-v").output().unwrap().stderr)
        .trim()
        .to_string();
    format!("{cpu}, {cores} cores, Linux {}, {nginx}", kernel.trim())
}

/// How much a run measures: `make bench`'s, or `--smoke`'s, which runs
/// every part once, at its smallest and briefly.
struct Run {
    rounds: usize,
    seconds: u64,
    /// Zones of the memory and start-up measure (10,000).
    zones: usize,
    /// Rounds of each scaling point.
    scaling_rounds: usize,
    /// Each scaling series at its first size only.
    smallest_only: bool,
    /// Requests counted under callgrind, per server.
    callgrind_requests: usize,
    smoke: bool,
}

fn main() {
    let (run, only, out_dir) = parse_args();
    std::fs::create_dir_all(&out_dir).unwrap();
    // One part alone, written to its own file.
    if let Some(part) = only {
        let machine = machine();
        let md = if part == "scaling" {
            let scaling = measure_scaling(&out_dir, &run);
            scaling_chart(&out_dir.join("scaling.svg"), &scaling, &machine);
            scaling_table(&scaling)
        } else if part == "streams" {
            streams_table(&measure_streams(&out_dir, &run))
        } else {
            versus_table(&measure_versus(&out_dir, &run), run.callgrind_requests)
        };
        let md = format!("Machine: {machine}.\n{md}");
        std::fs::write(out_dir.join(format!("{part}.md")), &md).unwrap();
        println!("{md}");
        return;
    }
    let (rounds, seconds) = (run.rounds, run.seconds);
    let script = wrk_script(&out_dir);
    let machine = machine();
    eprintln!("machine: {machine}");
    let (samples, calls) = measure_load(&script, &run);
    let memory = measure_zones(&run);
    let versus = measure_versus(&out_dir, &run);
    let scaling = measure_scaling(&out_dir, &run);
    let streams = measure_streams(&out_dir, &run);
    let medians: Vec<Sample> = samples.iter().map(|s| medians(s)).collect();
    let mut md = format!("Machine: {machine}. wrk -t1 -c16, {rounds} rounds of {seconds} s per variant, alternating; medians.\n\n");
    if run.smoke {
        md.insert_str(
            0,
            "A smoke run (make bench-smoke): every part once, briefly; not a measurement.\n\n",
        );
    }
    md.push_str(&table(&medians, &memory, run.zones));
    md.push_str(&versus_table(&versus, run.callgrind_requests));
    md.push_str(&scaling_table(&scaling));
    md.push_str(&streams_table(&streams));
    md.push_str(&format!("\nOne call across the bridge (graft_ffi_run to a module that does nothing) against a plain LuaJIT FFI call into nginx (ngx_http_lua_ffi_get_phase), JIT-compiled loop: `{}`\n", calls.trim()));
    std::fs::write(out_dir.join("results.md"), &md).unwrap();
    let mut json = results_json(&machine, &run, &medians, &memory, &calls);
    json["versus"] = versus
        .iter()
        .map(|v| {
            json!({ "job": v.job.job, "nginx": v.job.nginx,
                    "nginx_own_cpu_us_per_req": v.nginx_us,
                    "graft_modules": graft_modules(&v.job),
                    "graft_own_cpu_us_per_req": v.graft_us,
                    "graft_vs_nginx": v.graft_us / v.nginx_us,
                    "nginx_own_instructions_per_req": v.nginx_instructions,
                    "graft_own_instructions_per_req": v.graft_instructions,
                    "graft_vs_nginx_instructions": v.graft_instructions.zip(v.nginx_instructions).map(|(g, n)| g / n) })
        })
        .collect();
    json["scaling"] = scaling.iter().map(Scale::to_json).collect();
    json["streams"] = streams
        .iter()
        .map(|s| {
            json!({ "job": s.job, "bytes_per_request": s.bytes,
                    "plain_mb_per_s": s.mb_per_s[0], "native_mb_per_s": s.mb_per_s[1], "lua_mb_per_s": s.mb_per_s[2],
                    "native_own_cpu_us_per_req": s.own_us[0], "lua_own_cpu_us_per_req": s.own_us[1],
                    "native_vs_lua_mb_per_s": s.mb_per_s[1] / s.mb_per_s[2] })
        })
        .collect();
    scaling_chart(&out_dir.join("scaling.svg"), &scaling, &machine);
    std::fs::write(
        out_dir.join("results.json"),
        serde_json::to_string_pretty(&json).unwrap() + "\n",
    )
    .unwrap();
    let (rps, cpu): (Vec<f64>, Vec<f64>) =
        medians.iter().map(|m| (m.rps, m.cpu_us_per_req)).unzip();
    chart(&out_dir.join("bench.svg"), &rps, &cpu, &machine);
    println!("{md}");
    println!(
        "written: {}, {}, {} and {}",
        out_dir.join("results.md").display(),
        out_dir.join("results.json").display(),
        out_dir.join("bench.svg").display(),
        out_dir.join("scaling.svg").display()
    );
    // What was written, read back: every variant, job, series point and
    // streaming job has its figures.
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("results.json")).unwrap())
            .unwrap();
    let missing = missing_figures(&written, &run);
    if !missing.is_empty() {
        eprintln!("graft-bench: figures missing from results.json:");
        for m in &missing {
            eprintln!("  {m}");
        }
        std::process::exit(1);
    }
    eprintln!("every variant, job and series wrote its figures");
}

/// What a run should have written and did not: every variant's req/s, CPU
/// and memory, every job's CPU, every series point's memory and start,
/// every streaming job's MB/s (numbers above zero; a variant that did not
/// run has none).
fn missing_figures(json: &Value, run: &Run) -> Vec<String> {
    let mut missing = Vec::new();
    let mut need = |what: String, v: &Value, positive: bool| {
        let ok = v
            .as_f64()
            .is_some_and(|x| x.is_finite() && (!positive || x > 0.0));
        if !ok {
            missing.push(format!("{what}: {v}"));
        }
    };
    let variants = json["variants"].as_array().map_or(&[][..], |v| v);
    for v in VARIANTS {
        let Some(f) = variants.iter().find(|f| f["variant"] == v.slug()) else {
            need(format!("variant {}", v.name()), &Value::Null, true);
            continue;
        };
        for key in [
            "rps",
            "cpu_us_per_req",
            "p50_ms",
            "p99_ms",
            "rss_kib_zones",
            "start_s_zones",
        ] {
            need(format!("{} {key}", v.name()), &f[key], true);
        }
    }
    need(
        "bridge call ns".into(),
        &json["bridge_call"]["bridge_ns"],
        true,
    );
    let versus = json["versus"].as_array().map_or(&[][..], |v| v);
    if versus.len() != versus_jobs().len() {
        need("versus jobs".into(), &json!(versus.len()), false);
    }
    for j in versus {
        for key in ["nginx_own_cpu_us_per_req", "graft_own_cpu_us_per_req"] {
            need(format!("{} {key}", j["job"]), &j[key], false);
        }
    }
    let scaling = json["scaling"].as_array().map_or(&[][..], |v| v);
    for (series, sizes) in SERIES {
        for &size in series_sizes(sizes, run) {
            let Some(p) = scaling
                .iter()
                .find(|p| p["series"] == series && p["size"] == size)
            else {
                need(format!("{series} {size}"), &Value::Null, true);
                continue;
            };
            for side in ["lua", "native"] {
                need(
                    format!("{series} {size} {side} cpu"),
                    &p[side]["own_cpu_us_per_req"],
                    false,
                );
                need(
                    format!("{series} {size} {side} rss"),
                    &p[side]["rss_kib"],
                    true,
                );
                need(
                    format!("{series} {size} {side} start"),
                    &p[side]["start_s"],
                    true,
                );
            }
        }
    }
    let streams = json["streams"].as_array().map_or(&[][..], |v| v);
    if streams.len() != 2 {
        need("streaming jobs".into(), &json!(streams.len()), false);
    }
    for s in streams {
        for key in ["plain_mb_per_s", "native_mb_per_s", "lua_mb_per_s"] {
            need(format!("{} {key}", s["job"]), &s[key], true);
        }
    }
    missing
}

/// Every figure of the run, machine-readable: per variant the medians and
/// their ratios to plain nginx and to the Lua pipeline, and graft's own
/// CPU per request above plain nginx.
fn results_json(
    machine: &str,
    run: &Run,
    medians: &[Sample],
    memory: &[Zones],
    calls: &str,
) -> Value {
    let (plain, lua) = (0usize, 1usize);
    let cpu = |i: usize| medians[i].cpu_us_per_req;
    let rps = |i: usize| medians[i].rps;
    let variants: Vec<Value> = VARIANTS
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let Zones {
                rss_kib,
                start_s,
                counter_kib,
                ..
            } = memory[i];
            json!({
                "variant": v.slug(),
                "name": v.name(),
                "rps": rps(i),
                "rps_vs_plain": rps(i) / rps(plain),
                "rps_vs_lua": rps(i) / rps(lua),
                "cpu_us_per_req": cpu(i),
                "cpu_vs_lua": cpu(i) / cpu(lua),
                "own_cpu_us_per_req": cpu(i) - cpu(plain),
                "own_cpu_vs_lua_own": (cpu(i) - cpu(plain)) / (cpu(lua) - cpu(plain)),
                "p50_ms": medians[i].p50_ms,
                "p99_ms": medians[i].p99_ms,
                "rss_kib_zones": rss_kib,
                "rss_vs_lua": rss_kib as f64 / memory[lua].rss_kib as f64,
                "start_s_zones": start_s,
                "graft_shared_memory_kib_zones": counter_kib,
            })
        })
        .collect();
    json!({
        "machine": machine,
        "smoke": run.smoke,
        "rounds": run.rounds,
        "seconds": run.seconds,
        "zones": run.zones,
        "variants": variants,
        "bridge_call": serde_json::from_str::<Value>(calls.trim()).unwrap_or(Value::Null),
    })
}

/// `--rounds N --seconds S --only PART --smoke --out DIR`: the run, the
/// part alone (if any), and where its files go (`target/graft-bench`).
fn parse_args() -> (Run, Option<String>, PathBuf) {
    let mut args = std::env::args().skip(1);
    let (mut rounds, mut seconds, mut only, mut smoke) = (3usize, 5u64, None, false);
    let mut out = root().join("target/graft-bench");
    let usage = || -> ! {
        eprintln!("usage: graft-bench [--rounds N] [--seconds S] [--only scaling|versus|streams] [--smoke] [--out DIR]");
        std::process::exit(2);
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--only" => {
                only = Some(
                    args.next()
                        .filter(|o| ["scaling", "versus", "streams"].contains(&o.as_str()))
                        .unwrap_or_else(|| usage()),
                )
            }
            "--smoke" => smoke = true,
            "--out" => out = args.next().map(PathBuf::from).unwrap_or_else(|| usage()),
            _ => usage(),
        }
    }
    let run = if smoke {
        Run {
            rounds: 1,
            seconds: 1,
            zones: 100,
            scaling_rounds: 1,
            smallest_only: true,
            callgrind_requests: 20,
            smoke,
        }
    } else {
        Run {
            rounds,
            seconds,
            zones: 10_000,
            scaling_rounds: 2,
            smallest_only: false,
            callgrind_requests: 400,
            smoke,
        }
    };
    (run, only, out)
}

/// Throughput, CPU and latency: every variant up at once, runs
/// alternating; the samples of each variant, and the bridge variant's
/// timing of one call.
fn measure_load(script: &Path, run: &Run) -> (Vec<Vec<Sample>>, String) {
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
        run_wrk(s, script, 1);
    }
    require_same_pages(&servers);
    let mut samples: Vec<Vec<Sample>> = VARIANTS.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for k in 0..VARIANTS.len() {
            let i = (k + round) % VARIANTS.len();
            let (v, s) = &servers[i];
            eprintln!("round {}/{rounds}: {}", round + 1, v.name());
            samples[i].push(run_wrk(s, script, seconds));
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
fn require_same_pages(servers: &[(Variant, Server)]) {
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

/// Says so when a variant's error log has errors (a static 404 of the
/// plain variant, which has no WAF or redirects, is not one).
fn warn_on_logged_errors(v: Variant, s: &Server) {
    let log = std::fs::read_to_string(s.prefix.join("error.log")).unwrap_or_default();
    let bad: Vec<_> = log
        .lines()
        .filter(|l| {
            ["[error]", "[alert]", "[crit]"]
                .iter()
                .any(|t| l.contains(t))
                && !l.contains("open() \"")
        })
        .take(3)
        .collect();
    if !bad.is_empty() {
        eprintln!("warning: {} logged errors: {bad:?}", v.name());
    }
}

/// Memory and start time with many zones, per variant.
struct Zones {
    /// Worker RSS after every zone served a request.
    rss_kib: u64,
    /// From starting nginx to its first answer.
    start_s: f64,
    /// The graft_shared_memory its configuration needs.
    counter_kib: Option<usize>,
}

/// Memory and start time with `run.zones` zones (ten thousand), every
/// variant, each zone touched once.
fn measure_zones(run: &Run) -> Vec<Zones> {
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
struct Versus {
    job: &'static str,
    nginx: &'static str,
    nginx_http: String,
    nginx_location: String,
    graft: Value,
    /// A request that must answer as the job means it to, and its status.
    check: (&'static str, u16),
}

fn versus_jobs() -> Vec<Versus> {
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
fn graft_modules(job: &Versus) -> String {
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
struct VersusResult {
    job: Versus,
    nginx_us: f64,
    graft_us: f64,
    nginx_instructions: Option<f64>,
    graft_instructions: Option<f64>,
}

fn measure_versus(dir: &Path, run: &Run) -> Vec<VersusResult> {
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
                cpu[i].push(run_wrk(s, &script, seconds).cpu_us_per_req);
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

/// Each module against nginx's own for the job: CPU time (noisy) and
/// instructions (not), each above plain nginx's on the same requests.
fn versus_table(versus: &[VersusResult], callgrind_requests: usize) -> String {
    let mut md = format!("\nEach module alone in the native pipeline against what nginx itself offers for the job, on the same page requests; each side's own cost above plain nginx's on the same requests, as CPU time under wrk (medians) and as instructions per request under callgrind ({callgrind_requests} requests after a warm-up; the count does not move with the machine's load):\n\n| job | nginx | nginx's own µs/req | graft | graft's own µs/req | graft / nginx | nginx's own instructions/req | graft's own instructions/req | graft / nginx |\n|---|---|---:|---|---:|---:|---:|---:|---:|\n");
    for v in versus {
        // Below a quarter of a microsecond, the difference of two medians
        // is this machine's noise, not a cost: no ratio.
        let ratio = if v.nginx_us >= 0.25 {
            format!("{:.2}", v.graft_us / v.nginx_us)
        } else {
            "within noise".into()
        };
        let count = |c: Option<f64>| c.map_or("-".into(), |c| format!("{c:.0}"));
        let count_ratio = match (v.graft_instructions, v.nginx_instructions) {
            (Some(g), Some(n)) if n >= 50.0 => format!("{:.2}", g / n),
            (Some(_), Some(_)) => "nginx's cost is below 50".into(),
            _ => "-".into(),
        };
        md.push_str(&format!(
            "| {} | {} | {:.2} | {} | {:.2} | {ratio} | {} | {} | {count_ratio} |\n",
            v.job.job,
            v.job.nginx,
            v.nginx_us,
            graft_modules(&v.job),
            v.graft_us,
            count(v.nginx_instructions),
            count(v.graft_instructions),
        ));
    }
    md
}

/// The results table: every variant against plain nginx and the Lua pipeline.
fn table(medians: &[Sample], memory: &[Zones], zones: usize) -> String {
    let rps: Vec<f64> = medians.iter().map(|m| m.rps).collect();
    let cpu: Vec<f64> = medians.iter().map(|m| m.cpu_us_per_req).collect();
    let lua = 1usize;
    let mut md = String::new();
    let k = if zones.is_multiple_of(1000) {
        format!("{}k", zones / 1000)
    } else {
        zones.to_string()
    };
    md.push_str(&format!("| variant | req/s | vs plain | vs Lua | CPU µs/req | vs Lua | p50 ms | p99 ms | RSS, {k} zones (MiB) | vs Lua | start, {k} zones (s) |\n"));
    md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (i, v) in VARIANTS.iter().enumerate() {
        let Zones {
            rss_kib: rss,
            start_s: start,
            ..
        } = memory[i];
        md.push_str(&format!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} | {:.1} |\n",
            v.name(),
            rps[i],
            rps[i] / rps[0],
            rps[i] / rps[lua],
            cpu[i],
            cpu[i] / cpu[lua],
            medians[i].p50_ms,
            medians[i].p99_ms,
            rss as f64 / 1024.0,
            rss as f64 / memory[lua].rss_kib as f64,
            start,
        ));
    }
    // What graft itself costs: CPU per request above plain nginx's.
    let own = |i: usize| cpu[i] - cpu[0];
    md.push_str("\ngraft's own CPU per request, above plain nginx's:");
    for (i, v) in VARIANTS.iter().enumerate().skip(1) {
        md.push_str(&format!(
            " {} {:.1} µs ({:.2} of the Lua pipeline's own);",
            v.name(),
            own(i),
            own(i) / own(lua)
        ));
    }
    md.pop();
    md.push_str(".\n");
    md
}

fn chart(path: &Path, rps: &[f64], cpu: &[f64], machine: &str) {
    use plotters::prelude::*;
    let root_area = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root_area.fill(&WHITE).unwrap();
    let (left, right) = root_area.split_horizontally(450);
    let names: Vec<&str> = VARIANTS.iter().map(|v| v.slug()).collect();
    for (area, values, title) in [
        (left, rps, "requests/s (higher is better)"),
        (right, cpu, "worker CPU µs per request (lower is better)"),
    ] {
        let max = values.iter().cloned().fold(0.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d((0..values.len()).into_segmented(), 0.0..max)
            .unwrap();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) => names.get(*i).unwrap_or(&"").to_string(),
                _ => String::new(),
            })
            .draw()
            .unwrap();
        chart
            .draw_series(values.iter().enumerate().map(|(i, v)| {
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), *v),
                    ],
                    BLUE.mix(0.6).filled(),
                );
                bar.set_margin(0, 0, 8, 8);
                bar
            }))
            .unwrap();
    }
    root_area.titled(machine, ("sans-serif", 10)).ok();
    root_area.present().unwrap();
}

/// The dimensions a user sizing graft asks about, and their sizes.
const SERIES: [(&str, &[usize]); 3] = [
    ("WAF rules in a zone", &[10, 100, 1_000]),
    ("bulk redirects in a zone", &[10, 1_000, 100_000, 1_000_000]),
    ("zones", &[10, 1_000, 10_000, 100_000]),
];

/// One implementation at one point of a series.
struct Point {
    /// Worker CPU per request above plain nginx's, on the same requests.
    cpu_us: f64,
    rss_kib: u64,
    start_s: f64,
}

/// One point of a series: the Lua pipeline and the native one.
struct Scale {
    series: &'static str,
    size: usize,
    /// The graft_shared_memory of its configuration, in KiB.
    counter_kib: Option<usize>,
    lua: Point,
    native: Point,
}

impl Scale {
    fn to_json(&self) -> Value {
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
fn scaling_config(series: &str, size: usize, mode: &str) -> (Value, Vec<String>, usize) {
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
fn scaling_script(dir: &Path, paths: &[String], hosts: usize, named_zones: bool) -> PathBuf {
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
fn measure_scaling(dir: &Path, run: &Run) -> Vec<Scale> {
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
                run_wrk(&s, &script, 1);
                servers.push((s, start_s));
            }
            let mut cpu: [Vec<f64>; 3] = Default::default();
            for _ in 0..run.scaling_rounds {
                cpu[0].push(run_wrk(&plain, &script, seconds).cpu_us_per_req);
                for (k, (s, _)) in servers.iter().enumerate() {
                    cpu[k + 1].push(run_wrk(s, &script, seconds).cpu_us_per_req);
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
fn series_sizes<'a>(sizes: &'a [usize], run: &Run) -> &'a [usize] {
    if run.smallest_only {
        &sizes[..1]
    } else {
        sizes
    }
}

/// One request to each of `size` zones, from four threads.
fn touch_every_zone(s: &Server, size: usize) {
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

fn scaling_table(scaling: &[Scale]) -> String {
    let mut md = String::from("\nHow cost grows (graft's counter table sized for each configuration: the smallest that graft's load check accepts). CPU per request above plain nginx's on the same requests; RSS of the one worker after every zone served a request; start: from starting nginx to its first answer.\n\n| series | size | Lua µs/req | native µs/req | native / Lua | Lua RSS MiB | native RSS MiB | native / Lua | Lua start s | native start s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for p in scaling {
        // A cost under a quarter of a microsecond is this machine's noise.
        let cpu_ratio = if p.lua.cpu_us >= 0.25 && p.native.cpu_us >= 0.25 {
            format!("{:.2}", p.native.cpu_us / p.lua.cpu_us)
        } else {
            "within noise".into()
        };
        md.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {cpu_ratio} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} |\n",
            p.series,
            p.size,
            p.lua.cpu_us,
            p.native.cpu_us,
            p.lua.rss_kib as f64 / 1024.0,
            p.native.rss_kib as f64 / 1024.0,
            p.native.rss_kib as f64 / p.lua.rss_kib as f64,
            p.lua.start_s,
            p.native.start_s,
        ));
    }
    md
}

/// Per series, CPU per request and RSS against size (log scale), Lua and
/// native.
fn scaling_chart(path: &Path, scaling: &[Scale], machine: &str) {
    use plotters::prelude::*;
    let root_area = SVGBackend::new(path, (1200, 640)).into_drawing_area();
    root_area.fill(&WHITE).unwrap();
    let rows = root_area.split_evenly((2, SERIES.len()));
    for (col, (series, _)) in SERIES.iter().enumerate() {
        let points: Vec<&Scale> = scaling.iter().filter(|p| p.series == *series).collect();
        let (min_x, max_x) = (
            points.iter().map(|p| p.size).min().unwrap_or(1) as f64,
            points.iter().map(|p| p.size).max().unwrap_or(10) as f64,
        );
        for (row, (what, of)) in [
            (
                "CPU µs/req above plain",
                (|p: &Point| p.cpu_us) as fn(&Point) -> f64,
            ),
            ("worker RSS MiB", |p: &Point| p.rss_kib as f64 / 1024.0),
        ]
        .into_iter()
        .enumerate()
        {
            let area = &rows[row * SERIES.len() + col];
            let max_y = points
                .iter()
                .flat_map(|p| [of(&p.lua), of(&p.native)])
                .fold(0.0, f64::max)
                * 1.15
                + 0.1;
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{series}: {what}"), ("sans-serif", 13))
                .margin(10)
                .x_label_area_size(28)
                .y_label_area_size(50)
                .build_cartesian_2d((min_x..max_x).log_scale(), 0.0..max_y)
                .unwrap();
            chart.configure_mesh().draw().unwrap();
            for (name, color, pick) in [
                ("Lua", RED, (|p: &Scale| &p.lua) as fn(&Scale) -> &Point),
                ("native", BLUE, |p: &Scale| &p.native),
            ] {
                chart
                    .draw_series(LineSeries::new(
                        points.iter().map(|p| (p.size as f64, of(pick(p)))),
                        color.stroke_width(2),
                    ))
                    .unwrap()
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .unwrap();
        }
    }
    root_area.titled(machine, ("sans-serif", 10)).ok();
    root_area.present().unwrap();
}

/// One streaming job (a body inspected, a document rewritten): MB/s of
/// the bytes graft reads (the request body, or the response document)
/// for plain nginx, native and Lua, and graft's own CPU per request above
/// plain nginx's (native, Lua).
struct Stream {
    job: &'static str,
    bytes: usize,
    mb_per_s: [f64; 3],
    own_us: [f64; 2],
}

/// A streaming job: its name, the bytes graft reads a request, its wrk
/// script, and the variants (graft's file, the location's directives):
/// plain nginx, native, Lua.
type StreamJob<'a> = (&'static str, usize, &'a Path, [(Option<Value>, String); 3]);

/// HTML rewriting (html_rewrite) and body inspection (the WAF with
/// inspect_body), each against plain nginx serving the same requests.
fn measure_streams(dir: &Path, run: &Run) -> Vec<Stream> {
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
                runs[i].push(run_wrk(s, script, seconds));
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

/// Error lines a streaming variant logged (a bench whose requests fail
/// measures nothing).
fn warn_on_logged_errors_at(s: &Server, what: &str) {
    let log = std::fs::read_to_string(s.prefix.join("error.log")).unwrap_or_default();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[error]") || l.contains("[alert]") || l.contains("[crit]"))
        .take(3)
        .collect();
    if !errors.is_empty() {
        eprintln!("warning: {what} logged errors: {errors:#?}");
    }
}

fn streams_table(streams: &[Stream]) -> String {
    let mut md = String::from("\nStreaming jobs: MB/s of the bytes graft reads (a request body inspected, a response document rewritten), plain nginx serving the same requests without graft, and graft's own CPU per request above plain nginx's.\n\n| job | bytes | plain MB/s | native MB/s | Lua MB/s | native / Lua | native own µs/req | Lua own µs/req |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for s in streams {
        md.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} |\n",
            s.job,
            s.bytes,
            s.mb_per_s[0],
            s.mb_per_s[1],
            s.mb_per_s[2],
            s.mb_per_s[1] / s.mb_per_s[2],
            s.own_us[0],
            s.own_us[1]
        ));
    }
    md
}
