//! graft-edge's own settings file: where it listens, the graft file it
//! serves, each zone's origin, FL1's address and the secrets. Parsed and
//! checked whole at start: an error names the file and the field, and
//! nothing starts.
//!
//! ```json
//! { "listen": ["0.0.0.0:80",
//!              { "address": "0.0.0.0:443", "certificate": "/etc/graft/edge.crt",
//!                "key": "/etc/graft/edge.pem" }],
//!   "admin_listen": "127.0.0.1:8091",
//!   "graft": "/etc/graft/graft.json",
//!   "origins": { "shop.example": "10.0.0.5:8080", "default": "10.0.0.4:8080" },
//!   "fl1": "127.0.0.1:8080",
//!   "fl1_key_file": "/etc/graft/edge.key",
//!   "admin_token_file": "/etc/graft/admin.token",
//!   "timeouts": { "connect_ms": 1000, "read_ms": 60000, "write_ms": 60000, "idle_ms": 60000,
//!                 "shutdown_ms": 60000, "client_body_ms": 60000, "client_send_ms": 60000,
//!                 "client_keepalive_ms": 75000 },
//!   "limits": { "max_connections": 10000, "keepalive_requests": 1000,
//!               "max_line_bytes": 8192, "max_head_bytes": 32768 },
//!   "tables": { "counter_bytes": 33554432, "window_bytes": 4194304 },
//!   "access_log": "/var/log/graft-edge/access.log",
//!   "log_dirs": ["/var/log/graft"] }
//! ```
//!
//! `origins` names an origin per zone of the graft file (by the zone's
//! name, `"*"` included), and `default` serves every zone not named.
use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The key of `origins` that serves every zone not named.
pub const DEFAULT_ORIGIN: &str = "default";

/// The settings as the file says them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Vec<ListenRaw>,
    admin_listen: Option<String>,
    graft: PathBuf,
    origins: BTreeMap<String, String>,
    fl1: String,
    fl1_key_file: PathBuf,
    #[serde(default)]
    admin_token_file: Option<PathBuf>,
    #[serde(default)]
    timeouts: Timeouts,
    #[serde(default)]
    threads: Option<usize>,
    #[serde(default)]
    run_dir: Option<PathBuf>,
    #[serde(default)]
    tables: Tables,
    /// A path, or `"off"` (the default).
    #[serde(default)]
    access_log: Option<PathBuf>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    log_dirs: Vec<PathBuf>,
}

/// What one client may hold of graft-edge.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Client connections open at once, over every `listen` address
    /// (nginx's `worker_connections`): one more is closed as it comes.
    pub max_connections: usize,
    /// Requests one HTTP/1 connection carries before graft-edge closes it
    /// (nginx's `keepalive_requests`).
    pub keepalive_requests: u32,
    /// The longest request line (past it, 414) and header line (past it,
    /// 400): the size of nginx's `large_client_header_buffers`.
    pub max_line_bytes: usize,
    /// The longest request head, its request line and every header line
    /// (past it, 400): nginx's `large_client_header_buffers`, number
    /// times size.
    pub max_head_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            keepalive_requests: 1_000,
            max_line_bytes: 8 * 1024,
            max_head_bytes: 32 * 1024,
        }
    }
}

/// A client listener as the file says it: an address, or an address with
/// the certificate and key it terminates TLS with.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ListenRaw {
    Address(String),
    Tls(TlsRaw),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsRaw {
    address: String,
    certificate: PathBuf,
    key: PathBuf,
}

/// A client listener.
#[derive(Debug, Clone)]
pub struct Listener {
    pub addr: SocketAddr,
    /// TLS, terminated here (rustls), with HTTP/2 and HTTP/1.1 by ALPN.
    pub tls: Option<Tls>,
}

/// A TLS listener's certificate chain and private key (PEM files).
#[derive(Debug, Clone)]
pub struct Tls {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// The sizes of the counter and window tables, in bytes: nginx's
/// `graft_shared_memory` (its defaults, 32 MiB and 4 MiB). Made once at
/// start, so that a live apply brings no allocation of its own: a new
/// configuration that does not fit them is refused. Pages never used cost
/// nothing.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tables {
    /// Step counters, graft-edge's own counts and kill switches (at least
    /// twice what the graft file at start needs, whatever this says).
    pub counter_bytes: usize,
    /// Rate-limit and rollback windows.
    pub window_bytes: usize,
}

impl Default for Tables {
    fn default() -> Self {
        Tables {
            counter_bytes: 32 << 20,
            window_bytes: 4 << 20,
        }
    }
}

/// Time limits, in milliseconds.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Connecting to an origin or to FL1.
    pub connect_ms: u64,
    /// Waiting for a read from an origin or FL1 (past it, 504).
    pub read_ms: u64,
    /// Waiting for a write to an origin or FL1.
    pub write_ms: u64,
    /// Keeping an idle connection to an origin or FL1 for reuse.
    pub idle_ms: u64,
    /// What requests in flight have to finish after a graceful stop
    /// (SIGQUIT), in whole seconds.
    pub shutdown_ms: u64,
    /// Waiting for the next read of a client's request body (nginx's
    /// `client_body_timeout`): past it, 408.
    pub client_body_ms: u64,
    /// Waiting for a client to take the next write of a response (nginx's
    /// `send_timeout`): past it, the connection is closed.
    pub client_send_ms: u64,
    /// Keeping an idle client connection open for its next request
    /// (nginx's `keepalive_timeout`; an HTTP/2 connection's idle time
    /// too), in whole seconds.
    pub client_keepalive_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_ms: 1_000,
            read_ms: 60_000,
            write_ms: 60_000,
            idle_ms: 60_000,
            shutdown_ms: 60_000,
            client_body_ms: 60_000,
            client_send_ms: 60_000,
            client_keepalive_ms: 75_000,
        }
    }
}

impl Timeouts {
    pub fn connect(&self) -> Duration {
        Duration::from_millis(self.connect_ms)
    }
    pub fn read(&self) -> Duration {
        Duration::from_millis(self.read_ms)
    }
    pub fn write(&self) -> Duration {
        Duration::from_millis(self.write_ms)
    }
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }
    /// In whole seconds (Pingora's unit), at least one.
    pub fn shutdown_secs(&self) -> u64 {
        self.shutdown_ms.div_ceil(1000).max(1)
    }
    pub fn client_body(&self) -> Duration {
        Duration::from_millis(self.client_body_ms)
    }
    pub fn client_send(&self) -> Duration {
        Duration::from_millis(self.client_send_ms)
    }
    /// In whole seconds (Pingora's unit for HTTP/1), at least one.
    pub fn client_keepalive_secs(&self) -> u64 {
        self.client_keepalive_ms.div_ceil(1000).max(1)
    }
}

/// The settings, checked.
#[derive(Debug)]
pub struct Settings {
    pub source: PathBuf,
    pub listen: Vec<Listener>,
    pub admin_listen: Option<SocketAddr>,
    pub graft: PathBuf,
    /// Origins by zone name; [`DEFAULT_ORIGIN`] for the others.
    pub origins: BTreeMap<String, SocketAddr>,
    pub fl1: SocketAddr,
    /// The key a request passed to FL1 carries (`Graft-Edge: ...; key=`).
    pub fl1_key: Vec<u8>,
    /// The admin listener's token; `None`: every admin call is refused.
    pub admin_token: Option<Vec<u8>>,
    pub timeouts: Timeouts,
    /// Pingora's worker threads.
    pub threads: usize,
    /// Where Pingora keeps its pid file and graceful-upgrade socket.
    pub run_dir: PathBuf,
    pub tables: Tables,
    /// The access log's file (`None`: off).
    pub access_log: Option<PathBuf>,
    pub limits: Limits,
    /// Where a module may write files (request_log's records), nginx's
    /// `graft_log_dir`: a graft file whose module writes anywhere else is
    /// refused, at start and at a live apply (none named: no module may
    /// write a file).
    pub log_dirs: Vec<PathBuf>,
}

/// A settings file refused: the file, the field, and why.
#[derive(Debug)]
pub struct Refused {
    pub file: PathBuf,
    pub field: String,
    pub why: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.why)
        } else {
            write!(
                f,
                "{}: field \"{}\": {}",
                self.file.display(),
                self.field,
                self.why
            )
        }
    }
}

impl std::error::Error for Refused {}

impl Settings {
    /// Reads and checks the settings file at `path`.
    pub fn load(path: &Path) -> Result<Settings, Refused> {
        let text = std::fs::read(path).map_err(|e| Refused {
            file: path.to_path_buf(),
            field: String::new(),
            why: e.to_string(),
        })?;
        Settings::parse(path, &text)
    }

    /// Parses and checks settings held in memory; `source` names them in errors.
    pub fn parse(source: &Path, text: &[u8]) -> Result<Settings, Refused> {
        let refuse = |field: &str, why: String| Refused {
            file: source.to_path_buf(),
            field: field.to_string(),
            why,
        };
        let mut de = serde_json::Deserializer::from_slice(text);
        let file: File = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." { String::new() } else { field };
            let why = e.into_inner().to_string();
            let why = if why.contains("untagged enum ListenRaw") {
                "neither an address (\"host:port\") nor { \"address\", \"certificate\", \"key\" } (and nothing else)".to_string()
            } else {
                why
            };
            refuse(&field, why)
        })?;
        if file.listen.is_empty() {
            return Err(refuse("listen", "lists no address".into()));
        }
        let relative = |p: &Path| match source.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        };
        let mut listen = Vec::with_capacity(file.listen.len());
        for (i, raw) in file.listen.iter().enumerate() {
            let field = format!("listen[{i}]");
            listen.push(match raw {
                ListenRaw::Address(a) => Listener {
                    addr: address(a).map_err(|why| refuse(&field, why))?,
                    tls: None,
                },
                ListenRaw::Tls(t) => {
                    let tls = Tls {
                        certificate: relative(&t.certificate),
                        key: relative(&t.key),
                    };
                    check_tls(&tls).map_err(|(f, why)| refuse(&format!("{field}.{f}"), why))?;
                    Listener {
                        addr: address(&t.address)
                            .map_err(|why| refuse(&format!("{field}.address"), why))?,
                        tls: Some(tls),
                    }
                }
            });
        }
        let admin_listen = match &file.admin_listen {
            None => None,
            Some(a) => {
                let addr = address(a).map_err(|why| refuse("admin_listen", why))?;
                if !addr.ip().is_loopback() {
                    return Err(refuse(
                        "admin_listen",
                        format!("{addr} is not a loopback address: the admin API listens on loopback only"),
                    ));
                }
                Some(addr)
            }
        };
        let origins = file
            .origins
            .iter()
            .map(|(zone, a)| {
                address(a)
                    .map(|addr| (zone.clone(), addr))
                    .map_err(|why| refuse(&format!("origins.{zone}"), why))
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        let fl1 = address(&file.fl1).map_err(|why| refuse("fl1", why))?;
        let fl1_key = secret(&file.fl1_key_file).map_err(|why| refuse("fl1_key_file", why))?;
        // FL1 splits the header's parameters at `;` (graft_engine::edge).
        if fl1_key.contains(&b';') {
            return Err(refuse(
                "fl1_key_file",
                "the key has a \";\", which the Graft-Edge header cannot carry".into(),
            ));
        }
        let admin_token = match &file.admin_token_file {
            None => None,
            Some(p) => Some(secret(p).map_err(|why| refuse("admin_token_file", why))?),
        };
        let t = file.timeouts;
        for (name, ms) in [
            ("connect_ms", t.connect_ms),
            ("read_ms", t.read_ms),
            ("write_ms", t.write_ms),
            ("idle_ms", t.idle_ms),
            ("shutdown_ms", t.shutdown_ms),
            ("client_body_ms", t.client_body_ms),
            ("client_send_ms", t.client_send_ms),
            ("client_keepalive_ms", t.client_keepalive_ms),
        ] {
            if !(1..=3_600_000).contains(&ms) {
                return Err(refuse(
                    &format!("timeouts.{name}"),
                    format!("{ms} is not from 1 to 3600000 milliseconds"),
                ));
            }
        }
        let threads = file.threads.unwrap_or(2);
        if !(1..=1024).contains(&threads) {
            return Err(refuse(
                "threads",
                format!("{threads} is not from 1 to 1024"),
            ));
        }
        for (name, bytes) in [
            ("counter_bytes", file.tables.counter_bytes),
            ("window_bytes", file.tables.window_bytes),
        ] {
            if !(64 << 10..=16 << 30).contains(&bytes) {
                return Err(refuse(
                    &format!("tables.{name}"),
                    format!("{bytes} is not from 65536 (64 KiB) to 17179869184 (16 GiB)"),
                ));
            }
        }
        let l = file.limits;
        if !(1..=1_000_000).contains(&l.max_connections) {
            return Err(refuse(
                "limits.max_connections",
                format!("{} is not from 1 to 1000000", l.max_connections),
            ));
        }
        if !(256..=1 << 20).contains(&l.max_line_bytes)
            || !(l.max_line_bytes..=1 << 20).contains(&l.max_head_bytes)
        {
            return Err(refuse(
                "limits",
                format!(
                    "max_line_bytes {} and max_head_bytes {}: from 256 to 1048576, and a line no longer than the head",
                    l.max_line_bytes, l.max_head_bytes
                ),
            ));
        }
        if l.keepalive_requests == 0 {
            return Err(refuse(
                "limits.keepalive_requests",
                "0: a connection carries one request at least".into(),
            ));
        }
        let mut log_dirs = Vec::with_capacity(file.log_dirs.len());
        for (i, dir) in file.log_dirs.iter().enumerate() {
            let text = dir.to_string_lossy();
            let text = text.trim_end_matches('/');
            if !text.starts_with('/') || text.split('/').any(|p| p == "." || p == "..") {
                return Err(refuse(
                    &format!("log_dirs[{i}]"),
                    format!(
                        "\"{}\" is not an absolute directory with no \".\" or \"..\" part",
                        dir.display()
                    ),
                ));
            }
            log_dirs.push(PathBuf::from(text));
        }
        Ok(Settings {
            log_dirs,
            source: source.to_path_buf(),
            listen,
            admin_listen,
            graft: relative(&file.graft),
            origins,
            fl1,
            fl1_key,
            admin_token,
            timeouts: t,
            threads,
            run_dir: relative(
                file.run_dir
                    .as_deref()
                    .unwrap_or(Path::new("/run/graft-edge")),
            ),
            tables: file.tables,
            limits: file.limits,
            access_log: file
                .access_log
                .filter(|p| p != Path::new("off"))
                .map(|p| relative(&p)),
        })
    }

    /// The origin of the zone named `zone`: its own, else the default.
    pub fn origin_of(&self, zone: &str) -> Option<SocketAddr> {
        self.origins
            .get(zone)
            .or_else(|| self.origins.get(DEFAULT_ORIGIN))
            .copied()
    }

    /// Checks the origins against the graft file's zones: every zone has
    /// one, and every origin named for a zone names one of the file's.
    pub fn check_origins(&self, zones: &[&str]) -> Result<(), Refused> {
        let refuse = |field: String, why: String| Refused {
            file: self.source.clone(),
            field,
            why,
        };
        for name in self.origins.keys() {
            if name != DEFAULT_ORIGIN && !zones.contains(&name.as_str()) {
                return Err(refuse(
                    format!("origins.{name}"),
                    format!("names no zone of {}", self.graft.display()),
                ));
            }
        }
        if let Some(zone) = zones.iter().find(|z| self.origin_of(z).is_none()) {
            return Err(refuse(
                "origins".into(),
                format!("zone \"{zone}\" has no origin, and there is no \"{DEFAULT_ORIGIN}\""),
            ));
        }
        Ok(())
    }
}

/// `host:port` (a name is resolved once, now).
fn address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let mut found = text
        .to_socket_addrs()
        .map_err(|e| format!("\"{text}\" is not a host:port address ({e})"))?;
    found
        .next()
        .ok_or_else(|| format!("\"{text}\" resolves to no address"))
}

/// Loads a TLS listener's certificate chain and key as Pingora will, and
/// checks that the key is the certificate's, so that a listener never
/// fails to start in a Pingora thread: the field at fault, and why.
fn check_tls(tls: &Tls) -> Result<(), (&'static str, String)> {
    let (cert, key) = (&tls.certificate, &tls.key);
    for (field, path) in [("certificate", cert), ("key", key)] {
        std::fs::File::open(path).map_err(|e| (field, format!("{}: {e}", path.display())))?;
    }
    let mode = std::fs::metadata(key).map_or(0, |m| m.permissions().mode());
    if mode & 0o007 != 0 {
        return Err((
            "key",
            format!(
                "{}: mode {:o} lets every local user read or write it: chmod 0640",
                key.display(),
                mode & 0o777
            ),
        ));
    }
    let loaded = pingora_rustls::load_certs_and_key_files(
        &cert.display().to_string(),
        &key.display().to_string(),
    )
    .map_err(|e| ("certificate", format!("{}: {e}", cert.display())))?;
    let Some((certs, private_key)) = loaded else {
        return Err((
            "certificate",
            format!(
                "{} and {}: no PEM certificate in the first, or no PEM private key (PKCS#1, PKCS#8, SEC1) in the second",
                cert.display(),
                key.display()
            ),
        ));
    };
    pingora_rustls::install_default_crypto_provider();
    pingora_rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map_err(|e| {
            (
                "key",
                format!(
                    "{} is not the key of {}: {e}",
                    key.display(),
                    cert.display()
                ),
            )
        })?;
    Ok(())
}

/// A secret's file, as nginx reads its own (`graft_admin_token`): a file
/// that not every local user may read, holding one token of at least 32
/// printable bytes.
fn secret(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown}: not a file"));
    }
    let mode = meta.permissions().mode();
    if mode & 0o007 != 0 {
        return Err(format!(
            "{shown}: mode {:o} lets every local user read or write it: chmod 0640",
            mode & 0o777
        ));
    }
    let text = std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?;
    graft_engine::admin::parse_token(&text).map_err(|e| format!("{shown}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "0123456789abcdef0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// A directory of the test's own, removed when the test ends.
    fn dir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("graft-edge-settings-")
            .tempdir()
            .unwrap()
    }

    fn parse(text: &str) -> Result<Settings, Refused> {
        Settings::parse(Path::new("/etc/graft/edge.json"), text.as_bytes())
    }

    #[test]
    fn a_whole_file_reads_back() {
        let d = dir();
        let key = key_file(d.path(), "key", 0o600);
        let s = parse(&format!(
            r#"{{ "listen": ["127.0.0.1:8000"], "admin_listen": "127.0.0.1:8001", "graft": "graft.json",
                 "origins": {{ "a.test": "127.0.0.1:9000", "default": "127.0.0.1:9001" }},
                 "fl1": "127.0.0.1:8080", "fl1_key_file": "{}", "timeouts": {{ "connect_ms": 50 }} }}"#,
            key.display()
        ))
        .unwrap();
        assert_eq!(s.graft, Path::new("/etc/graft/graft.json"));
        assert_eq!(s.origin_of("a.test").unwrap().port(), 9000);
        assert_eq!(s.origin_of("b.test").unwrap().port(), 9001);
        assert_eq!(s.fl1_key.len(), 32);
        assert_eq!(s.timeouts.connect_ms, 50);
        assert_eq!(s.timeouts.read_ms, 60_000);
        assert!(s.check_origins(&["a.test", "*", "c.test"]).is_ok());
    }

    #[test]
    fn every_refusal_names_its_field() {
        let d = dir();
        let key = key_file(d.path(), "key2", 0o600);
        let open = key_file(d.path(), "open", 0o644);
        let base = |extra: &str| {
            format!(
                r#"{{ "listen": ["127.0.0.1:8000"], "graft": "g.json", "origins": {{ "default": "127.0.0.1:9" }},
                     "fl1": "127.0.0.1:8080", "fl1_key_file": "{}" {extra} }}"#,
                key.display()
            )
        };
        for (text, field, why) in [
            (
                base(r#", "admin_listen": "0.0.0.0:9""#),
                "admin_listen",
                "not a loopback",
            ),
            (
                base(r#", "timeouts": { "read_ms": 0 }"#),
                "timeouts.read_ms",
                "not from 1",
            ),
            (
                base(r#", "timeouts": { "read": 5 }"#),
                "timeouts.read",
                "unknown field",
            ),
            (base(r#", "threads": "two""#), "threads", "invalid type"),
            (base(r#", "listn": []"#), "listn", "unknown field"),
            (
                base("").replace("127.0.0.1:9\"", "nowhere\""),
                "origins.default",
                "not a host:port",
            ),
            (
                base("").replace(&key.display().to_string(), &open.display().to_string()),
                "fl1_key_file",
                "every local user",
            ),
            (
                base("").replace(&key.display().to_string(), "/no/such/key"),
                "fl1_key_file",
                "No such file",
            ),
        ] {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.to_string().contains(why), "{e}");
            assert!(e.to_string().starts_with("/etc/graft/edge.json: "), "{e}");
        }
        let s = parse(&base("")).unwrap();
        let e = parse(&base("").replace("\"default\"", "\"a.test\""))
            .unwrap()
            .check_origins(&["a.test", "b.test"])
            .unwrap_err();
        assert!(
            e.to_string().contains("zone \"b.test\" has no origin"),
            "{e}"
        );
        let e = parse(&base("").replace("\"default\"", "\"typo.test\""))
            .unwrap()
            .check_origins(&["a.test"])
            .unwrap_err();
        assert_eq!(e.field, "origins.typo.test");
        assert!(s.check_origins(&["a.test"]).is_ok());
    }
}
