//! A harness that runs the real nginx, with the real Lua module and graft's
//! module, on a loopback port in a prefix of its own, and stops it by its pid.
//!
//! The nginx configuration is graft's own `nginx/graft.conf.in`, filled in
//! here. `GRAFT_MODULE` names the module to load (the Makefile sets it);
//! without it, the release build under `target/` is used.
pub mod bench;
pub mod corpus;
pub mod edge;
pub mod flamingo;
pub mod parity;
pub mod replay;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn module_path() -> PathBuf {
    match std::env::var_os("GRAFT_MODULE") {
        Some(p) => PathBuf::from(p),
        None => root().join("target/release/libngx_http_graft_module.so"),
    }
}

/// A loopback port nothing listens on, for an nginx to listen on.
///
/// Taken below Linux's ephemeral range (32768 and up), from a stretch of
/// ports of this process's own: a port the kernel handed out for bind(0)
/// could be handed again, to the client side of a test's connection,
/// before nginx binds it.
pub fn free_port() -> u16 {
    static NEXT_PORT: AtomicUsize = AtomicUsize::new(0);
    let base = 20_000 + (std::process::id() as usize % 400) * 30;
    loop {
        let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let port = (base + n % 12_000).min(32_767) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
        assert!(n < 12_000, "no free loopback port below 32768");
    }
}

pub struct Nginx {
    pub prefix: PathBuf,
    pub port: u16,
    pub admin_port: u16,
}

/// A response as read off the wire.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What a team adds to graft's nginx configuration so that its own code
/// runs: Lua run in `init_by_lua` before graft loads (its
/// `graft.legacy.declare` calls), more locations or a snippet in the
/// main server (its own handlers), and whether `location /` runs the
/// native pipeline. `make run`, `make diff`, the parity helper and
/// `graft-replay` take the same three.
#[derive(Debug, Clone, Default)]
pub struct Site {
    pub init: String,
    pub extra: String,
    pub native: bool,
}

impl Site {
    /// From files named by `GRAFT_INIT` and `GRAFT_SITE`, and
    /// `GRAFT_NATIVE=1` (the Makefile sets them from `INIT`, `SITE` and
    /// `NATIVE`); nothing of the team's when unset.
    pub fn from_env() -> Result<Site, String> {
        let read = |var: &str| match std::env::var_os(var) {
            Some(path) if !path.is_empty() => std::fs::read_to_string(&path)
                .map_err(|e| format!("{var}={}: {e}", path.to_string_lossy())),
            _ => Ok(String::new()),
        };
        Ok(Site {
            init: read("GRAFT_INIT")?,
            extra: read("GRAFT_SITE")?,
            native: std::env::var("GRAFT_NATIVE").is_ok_and(|v| v == "1"),
        })
    }

    /// nginx started with `config` and this site; `native` for `location /`.
    pub fn start(&self, config: &str, native: bool) -> Nginx {
        let nginx = Nginx::prepare_custom(config, native, 1, &self.extra, &self.init);
        nginx.launch();
        nginx
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Lays out an nginx prefix with `nginx/prefix.sh`: what nginx's workers
/// (not root) read goes into it, where they can reach it wherever graft
/// was cloned; `@GRAFT_ROOT@` is then `prefix/graft`.
pub fn lay_out_prefix(prefix: &Path) {
    run_ok(Command::new(root().join("nginx/prefix.sh")).arg(prefix));
}

/// Runs a command that must succeed; fails with what it printed otherwise.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed:\n{}\n{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Where the test prefixes live: outside the clone (which may be private
/// to its owner), in a directory nginx's workers can enter.
/// Whether a passing run's directories stay to read: `GRAFT_KEEP=1` keeps
/// every nginx prefix and graft-edge directory (their logs, the origin's
/// access log) under [`tests_dir`]; by default only a failing test's stay.
pub fn keep_dirs() -> bool {
    std::env::var("GRAFT_KEEP").is_ok_and(|v| v == "1")
}

pub fn tests_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("graft-tests");
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
    dir
}

impl Nginx {
    /// A prefix with `config` as graft's configuration, not yet started.
    pub fn prepare(config: &str) -> Nginx {
        Nginx::prepare_with(config, false)
    }

    /// As `prepare`; `native` turns the native pipeline on in `location /`.
    pub fn prepare_with(config: &str, native: bool) -> Nginx {
        Nginx::prepare_full(config, native, 1)
    }

    /// As `prepare`, with `workers` worker processes.
    pub fn prepare_full(config: &str, native: bool, workers: usize) -> Nginx {
        Nginx::prepare_extra(config, native, workers, "")
    }

    /// As `prepare_full`, with `extra` added to the main server block
    /// (more locations); `@PORT@` and `@PREFIX@` in it are filled in.
    pub fn prepare_extra(config: &str, native: bool, workers: usize, extra: &str) -> Nginx {
        Nginx::prepare_custom(config, native, workers, extra, "")
    }

    /// As `prepare_extra`, with `init` Lua run in init_by_lua before graft
    /// loads (declaring a team's own legacy functions).
    pub fn prepare_custom(
        config: &str,
        native: bool,
        workers: usize,
        extra: &str,
        init: &str,
    ) -> Nginx {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let prefix = tests_dir().join(format!("nginx-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&prefix);
        std::fs::create_dir_all(prefix.join("html/native")).unwrap();
        std::fs::write(prefix.join("html/native/index.html"), "native origin\n").unwrap();
        for page in ["page", "dx", "px"] {
            std::fs::write(
                prefix.join("html/native").join(page),
                format!("native {page}\n"),
            )
            .unwrap();
        }
        lay_out_prefix(&prefix);
        let nginx = Nginx {
            port: free_port(),
            admin_port: free_port(),
            prefix,
        };
        nginx.write_config(config);
        let template = std::fs::read_to_string(root().join("nginx/graft.conf.in")).unwrap();
        let conf = template
            .replace("@EXTRA@", extra)
            .replace("@INIT@", init)
            .replace("@GRAFT_MODULE@", module_path().to_str().unwrap())
            .replace("@PREFIX@", nginx.prefix.to_str().unwrap())
            .replace("@GRAFT_ROOT@", nginx.prefix.join("graft").to_str().unwrap())
            .replace("@GRAFT_CONFIG@", nginx.config_path().to_str().unwrap())
            .replace("@PORT@", &nginx.port.to_string())
            .replace("@NATIVE@", if native { "graft_native on;" } else { "" })
            .replace("@WORKERS@", &workers.to_string())
            .replace("@ADMIN_PORT@", &nginx.admin_port.to_string())
            .replace("@LOG_DIR@", tests_dir().to_str().unwrap());
        std::fs::write(nginx.prefix.join("nginx.conf"), conf).unwrap();
        nginx
    }

    /// Starts nginx with `config` and waits until it accepts connections.
    pub fn start(config: &str) -> Nginx {
        Nginx::start_with(config, false)
    }

    /// As `start`, with the native pipeline on in `location /`.
    pub fn start_native(config: &str) -> Nginx {
        Nginx::start_with(config, true)
    }

    /// Starts nginx with `config` and `extra` locations in the main server.
    pub fn start_extra(config: &str, native: bool, extra: &str) -> Nginx {
        let nginx = Nginx::prepare_extra(config, native, 1, extra);
        nginx.launch();
        nginx
    }

    /// As `start`, with `workers` worker processes.
    pub fn start_workers(config: &str, workers: usize) -> Nginx {
        let nginx = Nginx::prepare_full(config, false, workers);
        nginx.launch();
        let deadline = Instant::now() + Duration::from_secs(10);
        while nginx.worker_pids().len() < workers {
            assert!(
                Instant::now() < deadline,
                "workers did not start\n{}",
                nginx.error_log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        nginx
    }

    fn start_with(config: &str, native: bool) -> Nginx {
        let nginx = Nginx::prepare_with(config, native);
        nginx.launch();
        nginx
    }

    /// Starts the nginx a `prepare_*` call laid out, and waits until it
    /// accepts connections.
    pub fn launch(&self) {
        let out = self.run(&[]);
        assert!(
            out.status.success(),
            "nginx did not start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.error_log()
        );
        self.wait_ready();
    }

    pub fn config_path(&self) -> PathBuf {
        self.prefix.join("graft.json")
    }

    pub fn write_config(&self, config: &str) {
        std::fs::write(self.config_path(), config).unwrap();
    }

    /// Runs the nginx binary on this prefix with extra arguments.
    pub fn run(&self, args: &[&str]) -> Output {
        let prefix = self.prefix.to_str().unwrap();
        let conf = self.prefix.join("nginx.conf");
        let log = self.prefix.join("error.log");
        Command::new("nginx")
            .args(["-p", prefix, "-c", conf.to_str().unwrap(), "-e"])
            .arg(log)
            .args(args)
            .output()
            .expect("nginx is installed (make deps)")
    }

    /// `nginx -t`: what it printed, and whether it passed.
    pub fn test_config(&self) -> (bool, String) {
        let out = self.run(&["-t"]);
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&self.error_log());
        (out.status.success(), text)
    }

    /// `nginx -s reload`, then waits until a new generation of workers serves.
    pub fn reload(&self) {
        let before = self.worker_pids();
        let out = self.run(&["-s", "reload"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let now = self.worker_pids();
            if !now.is_empty() && now.iter().all(|p| !before.contains(p)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no new workers after reload\n{}", self.error_log());
    }

    /// Stops nginx (its shared memory goes with it) and starts it again on
    /// the same prefix and files.
    pub fn restart(&self) {
        if let Some(pid) = self.master_pid() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while alive(pid) {
                assert!(Instant::now() < deadline, "nginx did not stop");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.launch();
    }

    /// Sends a reload signal for a configuration the master will refuse, and
    /// waits for the master to log that it refused it.
    ///
    /// The signal goes to the master directly, as a service manager sends
    /// it: `nginx -s reload` would parse the file itself and refuse to signal.
    pub fn reload_refused(&self) {
        let before = self.error_log().matches("[emerg]").count();
        let pid = self.master_pid().expect("nginx runs").to_string();
        let status = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.error_log().matches("[emerg]").count() == before {
            assert!(
                Instant::now() < deadline,
                "reload was not refused\n{}",
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn master_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.prefix.join("nginx.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The pids of the master's worker processes.
    pub fn worker_pids(&self) -> Vec<i32> {
        let Some(master) = self.master_pid() else {
            return vec![];
        };
        let mut pids = vec![];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...
            let after = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
            let ppid = after.split(' ').nth(1).and_then(|p| p.parse::<i32>().ok());
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let worker = String::from_utf8_lossy(&cmdline).contains("worker process");
            if ppid == Some(master)
                && worker
                && !String::from_utf8_lossy(&cmdline).contains("shutting")
            {
                pids.push(pid);
            }
        }
        pids
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() || self.worker_pids().is_empty()
        {
            assert!(
                Instant::now() < deadline,
                "nginx never listened\n{}",
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default()
    }

    /// Fails on any `[alert]`, `[crit]` or `[emerg]` line, and on any
    /// `[error]` line that does not contain one of `expected`.
    pub fn assert_clean_log(&self, expected: &[&str]) {
        let log = self.error_log();
        for line in log.lines() {
            let bad = ["[alert]", "[crit]", "[emerg]"]
                .iter()
                .any(|l| line.contains(l))
                || (line.contains("[error]") && !expected.iter().any(|e| line.contains(e)));
            assert!(
                !bad,
                "unexpected line in the error log: {line}\n--- whole log:\n{log}"
            );
        }
    }

    /// Sends raw bytes as a request and reads the response (the connection is closed after it).
    pub fn raw(&self, request: &[u8]) -> Response {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        parse_response(&buf).unwrap_or_else(|| {
            panic!(
                "no HTTP response to {:?}: {:?}\n{}",
                String::from_utf8_lossy(&request[..request.len().min(200)]),
                String::from_utf8_lossy(&buf),
                self.error_log()
            )
        })
    }

    /// Sends a request in `pieces`, each written on its own after a pause
    /// (nginx reads it in as many reads), and reads the response.
    pub fn raw_in_pieces(&self, pieces: &[&[u8]]) -> Response {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        for piece in pieces {
            s.write_all(piece).unwrap();
            s.flush().unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        parse_response(&buf).unwrap_or_else(|| {
            panic!(
                "no HTTP response to {} pieces: {:?}\n{}",
                pieces.len(),
                String::from_utf8_lossy(&buf),
                self.error_log()
            )
        })
    }

    /// The admin API's token (`graft_admin_token`, made by nginx/prefix.sh).
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.prefix.join("admin.token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// A request to the admin listener, with the admin token.
    pub fn admin(&self, method: &str, target: &str) -> Response {
        self.admin_body(method, target, b"")
    }

    /// A request to the admin listener with a body, with the admin token.
    pub fn admin_body(&self, method: &str, target: &str, body: &[u8]) -> Response {
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.admin_token(),
            body.len()
        );
        self.admin_raw(&[head.as_bytes(), body].concat())
    }

    /// Raw bytes to the admin listener, and its response.
    pub fn admin_raw(&self, request: &[u8]) -> Response {
        let mut s = TcpStream::connect(("127.0.0.1", self.admin_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(request).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        parse_response(&buf).expect("an HTTP response from the admin listener")
    }

    /// `GET target` with the given Host header.
    pub fn get(&self, host: &str, target: &str) -> Response {
        self.raw(
            format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
    }

    /// The counters JSON of the (single) worker.
    pub fn counters(&self) -> serde_json::Value {
        let r = self.get("localhost", "/graft/counters");
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    }

    /// One counter of one zone's step.
    pub fn counter(&self, zone: &str, step: usize, what: &str) -> u64 {
        self.counters()["zones"][zone][step][what]
            .as_u64()
            .unwrap_or_else(|| {
                panic!(
                    "no counter {what} for zone {zone} step {step}: {}",
                    self.counters()
                )
            })
    }
}

/// Whether a process runs (a zombie, exited but not yet reaped, does not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat[stat.rfind(')').map_or(0, |i| i + 2)..].chars().next();
            state != Some('Z')
        })
        .unwrap_or(false)
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(pid) = self.master_pid() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if alive(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        // A passing test's prefix goes (unless GRAFT_KEEP=1); a failing
        // one's stays, to read.
        if !std::thread::panicking() && !keep_dirs() {
            let _ = std::fs::remove_dir_all(&self.prefix);
        }
    }
}

/// Parses a whole HTTP/1.x response read until the connection closed.
/// Header bytes that are not UTF-8 (an echoed header a client sent, say)
/// are kept as `\xNN`, so that two responses that differ in them still
/// differ, and none is taken for "no response".
pub fn parse_response(buf: &[u8]) -> Option<Response> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let mut lines = buf[..end].split(|&b| b == b'\n').map(|l| {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        escape_bytes(l)
    });
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let mut body = buf[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Some(Response {
        status,
        headers,
        body,
    })
}

/// Text as it is when UTF-8; otherwise every byte outside printable ASCII
/// as `\xNN` (and a backslash as `\\`), one text for each byte string.
fn escape_bytes(bytes: &[u8]) -> String {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if !text.contains('\\') {
            return text.to_string();
        }
    }
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b' '..=b'~' | b'\t' => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// A configuration with one zone (and the `*` zone) running `modules`.
pub fn one_zone(zone: &str, modules: serde_json::Value) -> String {
    serde_json::json!({ "zones": { zone: { "modules": modules } } }).to_string()
}

/// One metric's value in a Prometheus text exposition.
pub fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::parse_response;

    #[test]
    fn a_response_header_that_is_not_utf8_is_kept_byte_for_byte() {
        let a = parse_response(b"HTTP/1.1 200 OK\r\nX-Origin: \xff\xfe\r\n\r\nbody").unwrap();
        let b = parse_response(b"HTTP/1.1 200 OK\r\nX-Origin: \xfe\xff\r\n\r\nbody").unwrap();
        assert_eq!(a.header("X-Origin"), Some("\\xff\\xfe"));
        assert_ne!(a.headers, b.headers);
        assert_eq!(a.body, b"body");
        // A backslash is escaped too: no UTF-8 text reads as an escape.
        let c = parse_response(b"HTTP/1.1 200 OK\r\nX-Origin: \\xff\xfe\r\n\r\n").unwrap();
        assert_ne!(c.header("X-Origin"), a.header("X-Origin"));
        let d = parse_response(b"HTTP/1.1 204 No Content\r\nX-A: caf\xc3\xa9\r\n\r\n").unwrap();
        assert_eq!(d.header("X-A"), Some("caf\u{e9}"));
    }
}

/// The parts of a long scenario test, in order: [`Scenario::part`] names
/// the one under way, and when anything panics during it (an assertion
/// of the test's or of a helper's, an `unwrap`), the test's output ends
/// with the part it broke in, e.g. `a_rollout_goes_stage_by_stage_and_...:
/// broke in part 2, a good configuration is rolled out to one server,
/// then two, then all`.
///
/// Made first in the test, it is dropped last: after the servers and
/// clusters the test started, whose logs they print on a failure.
#[derive(Debug)]
pub struct Scenario {
    part: usize,
    what: &'static str,
}

impl Scenario {
    /// The scenario starts, with its first part.
    pub fn start(what: &'static str) -> Scenario {
        Scenario { part: 1, what }
    }

    /// The next part of the scenario, and what it shows.
    pub fn part(&mut self, what: &'static str) {
        self.part += 1;
        self.what = what;
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let thread = std::thread::current();
            eprintln!(
                "{}: broke in part {}, {}",
                thread.name().unwrap_or("the scenario"),
                self.part,
                self.what
            );
        }
    }
}
