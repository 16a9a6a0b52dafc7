//! What graft-edge's tests run: graft-edge itself (the built binary, on
//! loopback ports, stopped by its pid), and small servers that record
//! what reached them (an origin, or a stand-in for FL1).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use graft_tests::{free_port, parse_response, tests_dir, Nginx, Response};

pub const KEY: &str = "edge-key-0123456789abcdef0123456789abcdef";
pub const TOKEN: &str = "admin-token-0123456789abcdef0123456789ab";

/// A request as a recording server read it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub head: String,
    pub body: Vec<u8>,
}

impl Seen {
    /// Every value of the header `name`.
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    pub fn target(&self) -> String {
        self.head.split(' ').nth(1).unwrap_or_default().to_string()
    }

    /// The hand-off it came with, checked as FL1 checks it (the MAC with
    /// [`KEY`] over its fields, method and target; the time): (zone,
    /// from, fallback). Panics when there is none or it does not hold.
    pub fn handoff(&self) -> (String, usize, bool) {
        let values = self.headers("Graft-Edge");
        let [value] = values.as_slice() else {
            panic!("not one Graft-Edge header: {}", self.head)
        };
        let config = value
            .split("; ")
            .find_map(|f| f.strip_prefix("config="))
            .unwrap_or_default();
        let method = self.head.split(' ').next().unwrap_or_default();
        let target = self.target();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let req = graft_engine::edge::Bound {
            method: method.as_bytes(),
            target: target.as_bytes(),
        };
        let h = graft_engine::edge::judge(value.as_bytes(), req, Some(KEY.as_bytes()), config, now)
            .unwrap_or_else(|e| panic!("{value}: refused ({})", e.reason()));
        (h.zone.to_string(), h.from, h.fallback)
    }
}

/// A server on a loopback port that answers every request with `<name>
/// <target> <body length>` and keeps what it read.
pub struct Recorder {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    pub fn start(name: &'static str) -> Recorder {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let record = record.clone();
                std::thread::spawn(move || serve(name, stream, &record));
            }
        });
        Recorder { port, seen }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request reached it")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// Serves requests on one connection (kept alive as the client asks).
fn serve(name: &str, stream: TcpStream, record: &Mutex<Vec<Seen>>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut out = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let seen = Seen {
            head,
            body: Vec::new(),
        };
        let length = seen
            .headers("content-length")
            .first()
            .and_then(|v| v.parse().ok());
        let chunked = seen
            .headers("transfer-encoding")
            .iter()
            .any(|v| v.contains("chunked"));
        let mut body = Vec::new();
        if let Some(n) = length {
            body.resize(n, 0);
            if reader.read_exact(&mut body).is_err() {
                return;
            }
        } else if chunked {
            loop {
                let mut size = String::new();
                if reader.read_line(&mut size).is_err() {
                    return;
                }
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                if reader.read_exact(&mut chunk).is_err() {
                    return;
                }
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        let text = format!("{name} {} {}\n", seen.target(), body.len());
        record.lock().unwrap().push(Seen { body, ..seen });
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Served-By: {name}\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// A file only its owner reads (as a key or token file must be).
pub fn secret_file(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// FL1: the harness's nginx with graft and Lua serving `graft`, set up as
/// the README says: it holds graft-edge's key (`graft_edge_key`), so that
/// it takes a hand-off from the step graft-edge names, and reads the
/// client's address from graft-edge's `X-Forwarded-For` (realip).
pub fn fl1(graft: &str) -> Nginx {
    let nginx = Nginx::prepare(graft);
    let key = secret_file(&nginx.prefix, "edge.key", KEY);
    let conf_path = nginx.prefix.join("nginx.conf");
    let conf = std::fs::read_to_string(&conf_path).unwrap().replacen(
        "    graft_config ",
        &format!(
            "    graft_edge_key {};\n    set_real_ip_from 127.0.0.1;\n    real_ip_header X-Forwarded-For;\n    graft_config ",
            key.display()
        ),
        1,
    );
    std::fs::write(&conf_path, conf).unwrap();
    nginx.launch();
    nginx
}

/// A running graft-edge, stopped (by its pid) when dropped.
pub struct Edge {
    pub dir: PathBuf,
    pub port: u16,
    pub admin_port: u16,
    child: Child,
    log: &'static str,
}

/// A directory of its own under the tests' directory.
pub fn scratch(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = tests_dir().join(format!("edge-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_graft-edge")
}

/// The settings graft-edge is started with: `origins` and `fl1` as given.
pub fn settings(
    dir: &std::path::Path,
    port: u16,
    admin_port: u16,
    origins: serde_json::Value,
    fl1: &str,
) -> serde_json::Value {
    serde_json::json!({
        "listen": [format!("127.0.0.1:{port}")],
        "admin_listen": format!("127.0.0.1:{admin_port}"),
        "graft": dir.join("graft.json"),
        "origins": origins,
        "fl1": fl1,
        "fl1_key_file": secret_file(dir, "edge.key", KEY),
        "admin_token_file": secret_file(dir, "admin.token", TOKEN),
        "timeouts": { "connect_ms": 500, "read_ms": 10000, "write_ms": 10000, "idle_ms": 5000, "shutdown_ms": 1000 },
        "threads": 2,
        "run_dir": dir,
    })
}

impl Edge {
    /// graft-edge serving `graft` with `origins` and FL1 at `fl1`.
    pub fn start(graft: &str, origins: serde_json::Value, fl1: &str) -> Edge {
        Edge::start_with(graft, origins, fl1, |_, _| {})
    }

    /// graft-edge with its settings changed by `change` (given the
    /// directory it runs in) before it starts.
    pub fn start_with(
        graft: &str,
        origins: serde_json::Value,
        fl1: &str,
        change: impl FnOnce(&mut serde_json::Value, &std::path::Path),
    ) -> Edge {
        Edge::start_in_env(graft, origins, fl1, change, &[])
    }

    /// As [`Edge::start_with`], with `env` added to graft-edge's
    /// environment.
    pub fn start_in_env(
        graft: &str,
        origins: serde_json::Value,
        fl1: &str,
        change: impl FnOnce(&mut serde_json::Value, &std::path::Path),
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Edge {
        let dir = scratch("run");
        let (port, admin_port) = (free_port(), free_port());
        std::fs::write(dir.join("graft.json"), graft).unwrap();
        let mut s = settings(&dir, port, admin_port, origins, fl1);
        change(&mut s, &dir);
        std::fs::write(dir.join("edge.json"), s.to_string()).unwrap();
        let log = std::fs::File::create(dir.join("edge.log")).unwrap();
        let child = Command::new(binary())
            .arg(dir.join("edge.json"))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let edge = Edge {
            dir,
            port,
            admin_port,
            child,
            log: "edge.log",
        };
        edge.wait_ready();
        edge
    }

    /// A second graft-edge with the same settings that takes this one's
    /// listeners (`--upgrade`), then SIGQUIT to this one, as an operator
    /// upgrades it.
    pub fn upgrade(&self) -> Edge {
        let log = std::fs::File::create(self.dir.join("upgraded.log")).unwrap();
        let child = Command::new(binary())
            .arg("--upgrade")
            .arg(self.dir.join("edge.json"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        // The new one waits for the sockets on run_dir/upgrade.sock.
        std::thread::sleep(Duration::from_millis(500));
        let quit = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(quit.success());
        Edge {
            dir: self.dir.clone(),
            port: self.port,
            admin_port: self.admin_port,
            child,
            log: "upgraded.log",
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`-USR1`) to this graft-edge.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits until this graft-edge exits by itself; `false` if it did not
    /// within `limit`.
    pub fn exited_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err()
            || TcpStream::connect(("127.0.0.1", self.admin_port)).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "graft-edge never listened:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(self.log)).unwrap_or_default()
    }

    /// Sends raw bytes and reads the response (the connection closes after it).
    pub fn raw(&self, request: &[u8]) -> Response {
        send(self.port, request)
            .unwrap_or_else(|| panic!("no response from graft-edge:\n{}", self.log()))
    }

    pub fn get(&self, host: &str, target: &str) -> Response {
        self.get_with(host, target, "")
    }

    /// `GET target` on `host` with `extra` header lines.
    pub fn get_with(&self, host: &str, target: &str, extra: &str) -> Response {
        self.raw(
            format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
                .as_bytes(),
        )
    }

    /// A GET to the admin listener.
    pub fn admin(&self, target: &str, extra: &str) -> Response {
        self.admin_call("GET", target, extra)
    }

    /// A call to the admin listener.
    pub fn admin_call(&self, method: &str, target: &str, extra: &str) -> Response {
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: localhost\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        send(self.admin_port, head.as_bytes()).expect("a response from the admin listener")
    }

    /// A call to the admin API with its token and `body` (none: an empty
    /// one, as `curl -X POST` sends).
    pub fn admin_api(&self, method: &str, target: &str, body: &[u8]) -> Response {
        let mut req = format!(
            "{method} {target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        send(self.admin_port, &req).expect("a response from the admin listener")
    }

    pub fn metrics(&self) -> String {
        let r = self.admin("/graft/metrics", "");
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
    }

    /// One series of the metrics (0 when absent).
    pub fn metric(&self, series: &str) -> u64 {
        graft_tests::metric(&self.metrics(), series).unwrap_or(0)
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The first graft-edge of a directory removes it (an upgraded one
        // shares it).
        if !std::thread::panicking() && self.log == "edge.log" {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn send(port: u16, request: &[u8]) -> Option<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf)
}

/// An origin that answers each request after `delay`.
pub fn slow_origin(delay: Duration) -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut out = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                std::thread::sleep(delay);
                let _ = out.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nslow\n",
                );
            });
        }
    });
    port
}
