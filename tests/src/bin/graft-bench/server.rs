//! The nginx servers graft-bench measures, one per variant, and wrk
//! against them: a run's requests/s, CPU per request and latency.
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
pub(crate) enum Variant {
    Plain,
    Lua,
    Bridge,
    Native,
    Shadow,
}

pub(crate) const VARIANTS: [Variant; 5] = [
    Variant::Plain,
    Variant::Lua,
    Variant::Bridge,
    Variant::Native,
    Variant::Shadow,
];

impl Variant {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain nginx",
            Variant::Lua => "Lua pipeline",
            Variant::Bridge => "Lua calling Rust (bridge)",
            Variant::Native => "native Rust pipeline",
            Variant::Shadow => "shadow",
        }
    }
    pub(crate) fn slug(self) -> &'static str {
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
    pub(crate) fn pipeline(self, config: Option<&Value>) -> String {
        match self {
            Variant::Plain => String::new(),
            Variant::Native => "graft_native on;".into(),
            _ => lua_phases(config),
        }
    }

    /// The side every step must be served by, after a run.
    pub(crate) fn side(self) -> Option<Side> {
        match self {
            Variant::Plain => None,
            Variant::Lua => Some(Side::Lua),
            Variant::Bridge | Variant::Native => Some(Side::Rust),
            Variant::Shadow => Some(Side::Shadow),
        }
    }

    pub(crate) fn mode(self) -> Option<&'static str> {
        match self {
            Variant::Plain => None,
            Variant::Lua => Some("lua"),
            Variant::Bridge | Variant::Native => Some("rust"),
            Variant::Shadow => Some("shadow"),
        }
    }
}

/// Whether a step of graft's file `config` runs `module`.
pub(crate) fn uses_module(config: Option<&Value>, module: &str) -> bool {
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
pub(crate) fn lua_phases(config: Option<&Value>) -> String {
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

pub(crate) struct Server {
    pub(crate) prefix: PathBuf,
    pub(crate) port: u16,
    /// The `graft_shared_memory` its configuration needs, in KiB.
    pub(crate) counter_kib: Option<usize>,
    /// Seconds from starting nginx to its first answer (0 until started).
    pub(crate) start_s: f64,
}

impl Server {
    pub(crate) fn start(variant: Variant, config: Option<&Value>, tag: &str) -> Server {
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
    pub(crate) fn start_with(
        name: &str,
        config: Option<&Value>,
        http: &str,
        location: &str,
    ) -> Server {
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
    pub(crate) fn prepare(
        name: &str,
        config: Option<&Value>,
        http: &str,
        location: &str,
    ) -> Server {
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
    pub(crate) fn require_work(&self, side: Side, what: &str) {
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
    pub(crate) fn instructions_per_request(&self, host: &str, path: &str, n: usize) -> Option<f64> {
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

    pub(crate) fn master(&self) -> Option<i32> {
        std::fs::read_to_string(self.prefix.join("nginx.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub(crate) fn worker(&self) -> Option<i32> {
        let master = self.master()?;
        let children =
            std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// utime + stime of the worker, in clock ticks.
    pub(crate) fn worker_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.worker().unwrap())).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    pub(crate) fn worker_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.worker().unwrap())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    pub(crate) fn get(&self, host: &str, path: &str) -> (u16, String) {
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
pub(crate) fn realistic_config(mode: &str) -> Value {
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
pub(crate) fn many_zones(mode: &str, count: usize) -> Value {
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
pub(crate) fn wrk_script(dir: &Path) -> PathBuf {
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

pub(crate) struct Sample {
    pub(crate) rps: f64,
    pub(crate) cpu_us_per_req: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

pub(crate) fn parse_duration_ms(s: &str) -> f64 {
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

pub(crate) fn run_wrk(server: &Server, script: &Path, seconds: u64) -> Sample {
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
pub(crate) fn medians(runs: &[Sample]) -> Sample {
    let of = |f: fn(&Sample) -> f64| median(runs.iter().map(f).collect());
    Sample {
        rps: of(|s| s.rps),
        cpu_us_per_req: of(|s| s.cpu_us_per_req),
        p50_ms: of(|s| s.p50_ms),
        p99_ms: of(|s| s.p99_ms),
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Says so when a variant's error log has errors (a static 404 of the
/// plain variant, which has no WAF or redirects, is not one).
pub(crate) fn warn_on_logged_errors(v: Variant, s: &Server) {
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

/// Error lines a streaming variant logged (a bench whose requests fail
/// measures nothing).
pub(crate) fn warn_on_logged_errors_at(s: &Server, what: &str) {
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
