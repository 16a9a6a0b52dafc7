//! The trio Flamingo runs on loopback, started from one graft file: an
//! origin, FL1 (nginx + graft + the Lua side, proxying what its pipeline
//! lets through to the origin) and FL2 (the built `graft-edge`, in front
//! of an FL1 of its own, proxying to the same origin).
//!
//! ```text
//! client ─► FL1 ──────────────────────────► origin      (the reference)
//! client ─► FL2 (graft-edge) ─┬───────────► origin
//!                             └─► FL1 behind ─► origin  (Graft-Edge hand-off)
//! ```
//!
//! Why two FL1: the reference FL1 and the FL1 behind graft-edge are the
//! same configuration, but they must not share rate-limit windows (nor
//! rollback windows or kill switches). Each counts a request it serves
//! once; with one FL1 for both, a request sent to FL1 and to FL2 would be
//! counted twice in one window whenever FL2 passes it on, and a limit
//! would trip at half the requests on one side only. Each nginx has its
//! own shared memory, so two prefixes are two sets of windows.
//!
//! Everything here is started by this process and stopped by it: the
//! nginx instances by their master's pid (`Nginx`'s `Drop`), graft-edge
//! by its `Child`.
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::{free_port, lay_out_prefix, parse_response, root, tests_dir, Nginx, Response};

/// The key graft-edge signs its hand-offs with and FL1 checks them by
/// (`fl1_key_file`, `graft_edge_key`): a test key, never a real one.
pub const EDGE_KEY: &str = "flamingo-edge-key-0123456789abcdef0123456789";
/// graft-edge's admin token (`admin_token_file`).
pub const ADMIN_TOKEN: &str = "flamingo-admin-token-0123456789abcdef01234";

/// Request headers the origin leaves out of its echo, and why: each is
/// one a hop sets for the next hop, not what the client asked, and FL1
/// (nginx's `proxy_pass`) and graft-edge (Pingora) set them differently
/// on the same request.
///
/// - `Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
///   `Upgrade`: hop-by-hop (RFC 9110 section 7.6.1). nginx's proxy speaks
///   HTTP/1.0 to the origin and sends `Connection: close`; graft-edge
///   keeps its connections to the origin alive.
/// - `Content-Length`, `Transfer-Encoding`: the body's framing on that
///   hop. The echo says how many body bytes arrived (`body: N bytes`), so
///   a body cut or grown on the way still shows.
/// - `X-Forwarded-For`: graft-edge adds the client's address for FL1's
///   realip; nginx's proxy adds none. FL1's modules judging the right
///   address is compared through their answers, not through this header.
///
/// `Graft-Edge` is not left out: it must never reach an origin, and the
/// echo would show it on FL2's side only.
pub const ORIGIN_LEAVES_OUT: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "transfer-encoding",
    "x-forwarded-for",
];

/// Where the `graft-edge` binary is: `GRAFT_EDGE` when set (the Makefile
/// sets it), else the release build under `CARGO_TARGET_DIR` or
/// `target/` (`make edge` builds it; `cargo test --workspace` builds it
/// before any test runs).
pub fn edge_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("GRAFT_EDGE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    target.join("release/graft-edge")
}

/// A new directory of this process's own under the tests' directory.
fn scratch(what: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = tests_dir().join(format!("flamingo-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A file only its owner reads (as a key or token file must be).
fn secret_file(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_path_buf()
}

/// The origin: a plain nginx (the Lua module, no graft) whose one
/// location answers with graft's echo (`lua/graft/echo.lua`: the URI,
/// the request headers sorted, the body's length; an HTML page for
/// `/html/<n>/...`), once the headers of [`ORIGIN_LEAVES_OUT`] are
/// cleared. Deterministic: the same request gives the same bytes.
///
/// The body is read before `Content-Length` is cleared: cleared first,
/// nginx takes the request for one without a body, reads none of it, and
/// on a kept-alive connection (graft-edge's) parses the body as the next
/// request, answering the request sent next on it 400.
pub fn start_origin() -> Nginx {
    let prefix = scratch("origin");
    lay_out_prefix(&prefix);
    let nginx = Nginx {
        port: free_port(),
        admin_port: 0,
        prefix,
    };
    let clear: String = std::iter::once("            ngx.req.read_body()\n".to_string())
        .chain(
            ORIGIN_LEAVES_OUT
                .iter()
                .map(|h| format!("            ngx.req.clear_header(\"{h}\")\n")),
        )
        .collect();
    let p = nginx.prefix.display();
    let conf = format!(
        "load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
worker_rlimit_nofile 8192;
pid {p}/nginx.pid;
error_log {p}/error.log info;
events {{ worker_connections 4096; }}
http {{
    # Each request with its connection and place on it: which request came
    # before another on one upstream connection (kept with GRAFT_KEEP=1).
    log_format conn '$connection $connection_requests $status $request_length '
                    '$body_bytes_sent \"$request\" $http_host';
    access_log {p}/access.log conn;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    lua_package_path \"{p}/graft/lua/?.lua;{p}/graft/lua/testing/?.lua;;\";
    # Bodies are the fronts' to limit: the origin reads what reaches it.
    client_max_body_size 0;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            content_by_lua_block {{
{clear}            require(\"graft.echo\")()
            }}
        }}
    }}
}}
",
        port = nginx.port
    );
    std::fs::write(nginx.prefix.join("nginx.conf"), conf).unwrap();
    nginx.launch();
    nginx
}

/// How an FL1 is set up beyond its graft file.
#[derive(Debug, Clone, Default)]
pub struct Fl1Setup {
    /// Behind graft-edge: `graft_edge_key` (it takes hand-offs) and
    /// nginx's realip from graft-edge's `X-Forwarded-For` (its modules see
    /// the client, not graft-edge). The reference FL1 has neither: clients
    /// reach it directly, and a client's own `X-Forwarded-For` must not
    /// move its address.
    pub behind_edge: bool,
    /// `graft_capture` into this file, every request (`rate=1`).
    pub capture: Option<PathBuf>,
}

/// FL1: the harness's nginx (`nginx/graft.conf.in`) with graft and the
/// Lua side serving `graft`, its `location /` proxying to the origin at
/// `origin_port` in place of the Lua echo (the Host as the client sent
/// it), set up as `setup` says.
pub fn start_fl1(graft: &str, origin_port: u16, setup: &Fl1Setup) -> Nginx {
    let nginx = Nginx::prepare(graft);
    let conf_path = nginx.prefix.join("nginx.conf");
    let mut conf = std::fs::read_to_string(&conf_path).unwrap();
    // The Lua echo of `location /` becomes the way to the origin.
    let echo = conf
        .find("require(\"graft.echo\")()")
        .expect("nginx/graft.conf.in's location / ends in graft's echo");
    let start = conf[..echo]
        .rfind("content_by_lua_block {")
        .expect("the echo is a content_by_lua_block");
    let end = echo + conf[echo..].find('}').expect("the block closes") + 1;
    conf.replace_range(
        start..end,
        &format!(
            "proxy_pass http://127.0.0.1:{origin_port};\n            proxy_set_header Host $http_host;"
        ),
    );
    let mut http = String::new();
    if setup.behind_edge {
        let key = secret_file(&nginx.prefix.join("edge.key"), EDGE_KEY);
        http.push_str(&format!(
            "    graft_edge_key {};\n    set_real_ip_from 127.0.0.1;\n    real_ip_header X-Forwarded-For;\n",
            key.display()
        ));
    }
    if let Some(file) = &setup.capture {
        http.push_str(&format!(
            "    graft_capture {} rate=1 max=64m;\n",
            file.display()
        ));
    }
    http.push_str("    graft_config ");
    conf = conf.replacen("    graft_config ", &http, 1);
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
}

impl Edge {
    /// graft-edge serving `graft` in front of FL1 at `fl1_port`, every
    /// zone's origin at `origin_port`; its files (settings, graft file,
    /// key, token, log) in a directory of its own.
    pub fn start(graft: &str, origin_port: u16, fl1_port: u16) -> Edge {
        let binary = edge_binary();
        assert!(
            binary.is_file(),
            "no graft-edge at {} (build it: make edge, or set GRAFT_EDGE)",
            binary.display()
        );
        let dir = scratch("edge");
        let (port, admin_port) = (free_port(), free_port());
        std::fs::write(dir.join("graft.json"), graft).unwrap();
        let settings = serde_json::json!({
            "listen": [format!("127.0.0.1:{port}")],
            "admin_listen": format!("127.0.0.1:{admin_port}"),
            "graft": dir.join("graft.json"),
            "origins": { "default": format!("127.0.0.1:{origin_port}") },
            "fl1": format!("127.0.0.1:{fl1_port}"),
            "fl1_key_file": secret_file(&dir.join("edge.key"), EDGE_KEY),
            "admin_token_file": secret_file(&dir.join("admin.token"), ADMIN_TOKEN),
            "timeouts": { "connect_ms": 1000, "read_ms": 10000, "write_ms": 10000,
                          "idle_ms": 10000, "shutdown_ms": 1000 },
            "threads": 2,
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
        edge.wait_ready();
        edge
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err()
            || TcpStream::connect(("127.0.0.1", self.admin_port)).is_err()
        {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("graft-edge exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "graft-edge never listened:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("edge.log")).unwrap_or_default()
    }

    /// `GET /graft/metrics` on the admin listener (loopback, no token).
    pub fn metrics(&self) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.admin_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        use std::io::{Read, Write};
        s.write_all(b"GET /graft/metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let r: Response = parse_response(&buf).expect("graft-edge's metrics");
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() && !crate::keep_dirs() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The origin, the reference FL1, graft-edge and the FL1 behind it, all
/// serving one graft file. Dropped in reverse order of start: the fronts
/// before what they proxy to.
pub struct Trio {
    pub edge: Edge,
    pub behind: Nginx,
    pub fl1: Nginx,
    pub origin: Nginx,
}

impl Trio {
    /// Starts the four, each on its loopback ports, serving `graft`; the
    /// reference FL1 with `fl1` (its capture, say).
    pub fn start(graft: &str, fl1: &Fl1Setup) -> Trio {
        let origin = start_origin();
        let reference = start_fl1(
            graft,
            origin.port,
            &Fl1Setup {
                behind_edge: false,
                ..fl1.clone()
            },
        );
        let behind = start_fl1(
            graft,
            origin.port,
            &Fl1Setup {
                behind_edge: true,
                capture: None,
            },
        );
        let edge = Edge::start(graft, origin.port, behind.port);
        Trio {
            edge,
            behind,
            fl1: reference,
            origin,
        }
    }
}
