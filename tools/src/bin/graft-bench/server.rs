//! The servers graft-bench measures: an nginx per variant (with graft's
//! module and the Lua side, or plain, with no module), and graft-edge;
//! their CPU time and memory, read from /proc.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
        Server::prepare(name, config, http, location).launch()
    }

    /// Starts this prepared nginx, and waits for its worker and its
    /// first answer.
    fn launch(mut self) -> Server {
        let started = Instant::now();
        graft_tests::run_ok(
            Command::new("nginx")
                .args([
                    "-p",
                    self.prefix.to_str().unwrap(),
                    "-c",
                    self.prefix.join("nginx.conf").to_str().unwrap(),
                ])
                .args(["-e", self.prefix.join("error.log").to_str().unwrap()]),
        );
        // A Lua pipeline with 100,000 zones checks every zone's plan at start.
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.worker().is_none() || TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.start_s = started.elapsed().as_secs_f64();
        self
    }

    /// A plain nginx named `name`, one worker, no module loaded (no graft,
    /// no Lua): `http` more directives of the http block, `location`
    /// those of its one location.
    pub(crate) fn start_plain(name: &str, http: &str, location: &str) -> Server {
        let prefix = bench_dir(name);
        std::fs::create_dir_all(prefix.join("tmp")).unwrap();
        let port = graft_tests::free_port();
        let p = prefix.display();
        let conf = format!(
            "# graft-bench: nginx with no module loaded.
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    {http}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            {location}
        }}
    }}
}}
"
        );
        std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
        Server {
            prefix,
            port,
            counter_kib: None,
            start_s: 0.0,
        }
        .launch()
    }

    /// The prefix and nginx.conf of `start_with`, nginx not started.
    pub(crate) fn prepare(
        name: &str,
        config: Option<&Value>,
        http: &str,
        location: &str,
    ) -> Server {
        let prefix = bench_dir(name);
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
        process_ticks(self.worker().unwrap())
    }

    /// utime + stime of the master and its workers, in clock ticks.
    pub(crate) fn ticks(&self) -> u64 {
        let master = self.master().unwrap();
        let children =
            std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).unwrap();
        children
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .chain([master])
            .map(process_ticks)
            .sum()
    }

    pub(crate) fn worker_rss_kib(&self) -> u64 {
        process_rss_kib(self.worker().unwrap())
    }

    pub(crate) fn get(&self, host: &str, path: &str) -> (u16, String) {
        get(self.port, host, path, "")
    }
}

/// `GET path` on `host` from the server on `port`, with `extra` header
/// lines: its status and body.
pub(crate) fn get(port: u16, host: &str, path: &str, extra: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let r = graft_tests::parse_response(&buf).expect("an HTTP response");
    (r.status, r.text())
}

/// A server's directory of its own, empty, outside the clone (where
/// nginx's workers, not root, can read).
fn bench_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("graft-bench").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// utime + stime of process `pid`, every thread of it, those gone
/// included, in clock ticks (/proc/<pid>/stat).
pub(crate) fn process_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// VmRSS of process `pid`, in KiB.
pub(crate) fn process_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
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

/// The key graft-edge signs its hand-offs with and the FL1 behind it
/// checks them by, and graft-edge's admin token: the bench's own.
const EDGE_KEY: &str = "graft-bench-edge-key-0123456789abcdef0123456789";
const EDGE_TOKEN: &str = "graft-bench-admin-token-0123456789abcdef012345";

/// Pingora's threads for graft-edge's proxy: one, as nginx's one worker.
pub(crate) const EDGE_THREADS: usize = 1;

/// A file only its owner reads (as graft's key and token files must be).
fn secret_file(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_path_buf()
}

/// What FL1's http block says to stand behind graft-edge, as the README
/// sets it up: graft-edge's key, and the client's address read from
/// graft-edge's `X-Forwarded-For`.
pub(crate) fn behind_edge_http() -> String {
    let key = secret_file(&std::env::temp_dir().join("graft-bench/edge.key"), EDGE_KEY);
    format!(
        "graft_edge_key {};\n    set_real_ip_from 127.0.0.1;\n    real_ip_header X-Forwarded-For;",
        key.display()
    )
}

/// The built graft-edge: `GRAFT_EDGE` (the Makefile sets it), else the
/// release build under `CARGO_TARGET_DIR` or `target/`.
fn edge_binary() -> PathBuf {
    std::env::var_os("GRAFT_EDGE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| root().join("target"))
                .join("release/graft-edge")
        })
}

/// Waits (30 s at most) until `child` listens on every port of `ports`;
/// panics, with its log, when it exits first or never does.
fn wait_listening(child: &mut Child, ports: &[u16], what: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while ports
        .iter()
        .any(|&p| TcpStream::connect(("127.0.0.1", p)).is_err())
    {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}):\n{}", log());
        }
        assert!(
            Instant::now() < deadline,
            "{what} never listened:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// graft-edge (FL2), run from its built binary, stopped by its pid when
/// dropped.
pub(crate) struct Edge {
    pub(crate) dir: PathBuf,
    pub(crate) port: u16,
    pub(crate) admin_port: u16,
    child: Child,
}

impl Edge {
    /// graft-edge named `name` serving graft's file `config`, every zone's
    /// origin at port `origin`, FL1 at port `fl1`, with
    /// [`EDGE_THREADS`] threads, no access log (as the bench's nginx), and
    /// its counter table of `counter_kib` (the `graft_shared_memory` nginx
    /// gets for the same file).
    pub(crate) fn start(
        name: &str,
        config: &Value,
        origin: u16,
        fl1: u16,
        counter_kib: usize,
    ) -> Edge {
        let binary = edge_binary();
        assert!(
            binary.is_file(),
            "no graft-edge at {} (make edge builds it; GRAFT_EDGE names another)",
            binary.display()
        );
        let dir = bench_dir(name);
        let (port, admin_port) = (graft_tests::free_port(), graft_tests::free_port());
        std::fs::write(dir.join("graft.json"), config.to_string()).unwrap();
        let settings = json!({
            "listen": [format!("127.0.0.1:{port}")],
            "admin_listen": format!("127.0.0.1:{admin_port}"),
            "graft": dir.join("graft.json"),
            "origins": { "default": format!("127.0.0.1:{origin}") },
            "fl1": format!("127.0.0.1:{fl1}"),
            "fl1_key_file": secret_file(&dir.join("edge.key"), EDGE_KEY),
            "admin_token_file": secret_file(&dir.join("admin.token"), EDGE_TOKEN),
            "threads": EDGE_THREADS,
            "tables": { "counter_bytes": counter_kib * 1024, "window_bytes": 4 << 20 },
            "run_dir": dir,
        });
        std::fs::write(dir.join("edge.json"), settings.to_string()).unwrap();
        let log = std::fs::File::create(dir.join("edge.log")).unwrap();
        let child = Command::new(&binary)
            .arg(dir.join("edge.json"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
        let mut edge = Edge {
            dir,
            port,
            admin_port,
            child,
        };
        let (what, log) = (format!("{name}: graft-edge"), edge.dir.join("edge.log"));
        wait_listening(&mut edge.child, &[port, admin_port], &what, || {
            std::fs::read_to_string(&log).unwrap_or_default()
        });
        edge
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// utime + stime of graft-edge, every thread, in clock ticks.
    pub(crate) fn ticks(&self) -> u64 {
        process_ticks(self.pid())
    }

    pub(crate) fn rss_kib(&self) -> u64 {
        process_rss_kib(self.pid())
    }

    /// `GET target` on the admin listener (with the admin token for the
    /// admin API): its text, which must answer 200.
    fn admin(&self, target: &str) -> String {
        let (status, text) = get(
            self.admin_port,
            "localhost",
            target,
            &format!("Authorization: Bearer {EDGE_TOKEN}\r\n"),
        );
        assert_eq!(status, 200, "graft-edge's {target}: {text}");
        text
    }

    /// `/graft/metrics`, once graft-edge has moved its threads' counts
    /// into its table (every 250 ms).
    pub(crate) fn metrics(&self) -> String {
        std::thread::sleep(Duration::from_millis(300));
        self.admin("/graft/metrics")
    }

    /// The sum of a family's series in graft-edge's metrics.
    pub(crate) fn metric_sum(metrics: &str, family: &str) -> u64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with(&format!("{family}{{")) || l.starts_with(&format!("{family} "))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Stops the bench unless graft-edge's counts show every step served
    /// by its Rust side, none failed or fell back, none lost.
    pub(crate) fn require_work(&self, what: &str) {
        std::thread::sleep(Duration::from_millis(300));
        let totals = self.admin("/graft/admin/totals");
        if let Err(e) = Served::parse(&totals).and_then(|s| s.check(Side::Rust)) {
            panic!(
                "{what} did not do the work it names (Rust serving every step): {e}; its log: {}",
                self.dir.join("edge.log").display()
            );
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pingora alone (`edge/examples/pingora_floor.rs`, built beside
/// graft-edge): a proxy with no graft in it, every request to one origin,
/// on [`EDGE_THREADS`] threads. Stopped by its pid when dropped.
pub(crate) struct PingoraFloor {
    pub(crate) port: u16,
    child: Child,
}

impl PingoraFloor {
    pub(crate) fn start(origin: u16) -> PingoraFloor {
        let binary = edge_binary()
            .with_file_name("examples")
            .join("pingora_floor");
        assert!(
            binary.is_file(),
            "no pingora_floor at {} (make edge builds it beside graft-edge)",
            binary.display()
        );
        let port = graft_tests::free_port();
        let dir = bench_dir("sbs-pingora");
        let log = std::fs::File::create(dir.join("pingora.log")).unwrap();
        let mut child = Command::new(&binary)
            .arg(format!("127.0.0.1:{port}"))
            .arg(format!("127.0.0.1:{origin}"))
            .arg(EDGE_THREADS.to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
        wait_listening(&mut child, &[port], "pingora_floor", || {
            std::fs::read_to_string(dir.join("pingora.log")).unwrap_or_default()
        });
        PingoraFloor { port, child }
    }

    /// utime + stime of its process, every thread, in clock ticks.
    pub(crate) fn ticks(&self) -> u64 {
        process_ticks(self.child.id() as i32)
    }

    pub(crate) fn rss_kib(&self) -> u64 {
        process_rss_kib(self.child.id() as i32)
    }
}

impl Drop for PingoraFloor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
