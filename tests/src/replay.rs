//! Differential replay: the same requests through nginx with the zones'
//! modules in `lua` mode and in `rust` mode, responses compared.
//!
//! One run serves every module from Lua (the baseline); then one run per
//! module with only that module on Rust, so that a difference is laid at
//! the door of one module; then every module on Rust through the bridge;
//! then every module on Rust in the native pipeline (no Lua in the path);
//! then every module in `shadow`, whose counters must show no difference.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;
use socket2::{Domain, Socket, Type};

use crate::corpus::CorpusRequest;
use crate::{parse_response, Nginx, Site};

/// What a client sees of a response: the `Date` header left out, and the
/// value of `Retry-After` (seconds left in a rate-limit window, which
/// depends on when the run happens) shown as `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Observed {
    pub fn describe(&self) -> String {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        let mut body = String::from_utf8_lossy(&self.body).replace('\n', "\\n");
        if body.len() > 160 {
            body.truncate(160);
            body.push('…');
        }
        format!("{} [{}] {body}", self.status, headers.join("; "))
    }
}

pub fn send(port: u16, req: &CorpusRequest) -> std::io::Result<Observed> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    if let Some(client) = req.client {
        socket.bind(&SocketAddr::from((client, 0)).into())?;
    }
    socket.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(&req.to_wire())?;
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    let r = parse_response(&buf).ok_or_else(|| {
        std::io::Error::other(format!(
            "no HTTP response: {:?}",
            String::from_utf8_lossy(&buf)
        ))
    })?;
    Ok(Observed {
        status: r.status,
        headers: r
            .headers
            .into_iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case("date"))
            .map(|(n, v)| match n.eq_ignore_ascii_case("retry-after") {
                true => (n, "*".to_string()),
                false => (n, v),
            })
            .collect(),
        body: r.body,
    })
}

/// The configuration with every step's mode chosen by `mode(module)`.
pub fn with_modes(config: &Value, mode: &dyn Fn(&str) -> &'static str) -> Value {
    let mut config = config.clone();
    if let Some(zones) = config["zones"].as_object_mut() {
        for zone in zones.values_mut() {
            if let Some(steps) = zone["modules"].as_array_mut() {
                for step in steps {
                    let name = step["module"].as_str().unwrap_or_default().to_string();
                    step["mode"] = Value::from(mode(&name));
                }
            }
        }
    }
    config
}

/// Every module name the configuration uses, in first-seen order.
pub fn modules_of(config: &Value) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for zone in config["zones"]
        .as_object()
        .into_iter()
        .flat_map(|z| z.values())
    {
        for step in zone["modules"].as_array().into_iter().flatten() {
            if let Some(n) = step["module"].as_str() {
                if !names.iter().any(|x| x == n) {
                    names.push(n.to_string());
                }
            }
        }
    }
    names
}

pub struct Difference {
    pub request: usize,
    pub lua: Observed,
    pub other: Observed,
}

pub struct Run {
    pub name: String,
    pub requests: usize,
    pub different: Vec<Difference>,
    /// Shadow runs: the sum of the shadow_diff counters.
    pub shadow_diffs: Option<u64>,
    /// Lines of the error log at [error] or worse.
    pub log_errors: Vec<String>,
}

pub struct Report {
    pub runs: Vec<Run>,
    /// How many baseline responses had each status, in status order.
    pub statuses: Vec<(u16, usize)>,
}

impl Report {
    pub fn clean(&self) -> bool {
        self.runs.iter().all(|r| {
            r.different.is_empty() && r.shadow_diffs.unwrap_or(0) == 0 && r.log_errors.is_empty()
        })
    }

    /// The summary table, then every difference.
    pub fn render(&self, requests: &[CorpusRequest]) -> String {
        let mut out = String::new();
        out.push_str(
            "| run (Rust for) | requests | equal | different | shadow diffs | log errors |\n",
        );
        out.push_str("|---|---:|---:|---:|---:|---:|\n");
        for r in &self.runs {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                r.name,
                r.requests,
                r.requests - r.different.len(),
                r.different.len(),
                r.shadow_diffs.map_or("-".to_string(), |d| d.to_string()),
                r.log_errors.len(),
            ));
        }
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        out.push_str(&format!("\nbaseline statuses: {}\n", statuses.join(", ")));
        for r in &self.runs {
            for d in &r.different {
                out.push_str(&format!(
                    "\n[{}] {}\n  lua:  {}\n  {}: {}\n",
                    r.name,
                    requests[d.request].describe(),
                    d.lua.describe(),
                    if r.name == "shadow" { "shadow" } else { "rust" },
                    d.other.describe()
                ));
            }
            for line in &r.log_errors {
                out.push_str(&format!("\n[{}] error log: {line}\n", r.name));
            }
        }
        out
    }
}

fn serve_all(config: &Value, requests: &[CorpusRequest], site: &Site) -> (Nginx, Vec<Observed>) {
    serve_with(site.start(&config.to_string(), site.native), requests)
}

fn serve_with(nginx: Nginx, requests: &[CorpusRequest]) -> (Nginx, Vec<Observed>) {
    let observed = requests
        .iter()
        .map(|r| send(nginx.port, r).unwrap_or_else(|e| no_response(&e)))
        .collect();
    (nginx, observed)
}

/// What a replay saw of a request that got no HTTP response (a reset
/// connection, bytes that are not HTTP): an outcome compared like any
/// other, never a stop.
fn no_response(e: &std::io::Error) -> Observed {
    Observed {
        status: 0,
        headers: vec![("graft-replay".to_string(), format!("no HTTP response: {e}"))],
        body: Vec::new(),
    }
}

fn log_errors(nginx: &Nginx) -> Vec<String> {
    nginx
        .error_log()
        .lines()
        .filter(|l| {
            ["[error]", "[crit]", "[alert]", "[emerg]"]
                .iter()
                .any(|t| l.contains(t))
        })
        .map(str::to_string)
        .collect()
}

fn compare(name: &str, base: &[Observed], other: &[Observed], nginx: &Nginx) -> Run {
    Run {
        name: name.to_string(),
        requests: base.len(),
        different: base
            .iter()
            .zip(other)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| Difference {
                request: i,
                lua: a.clone(),
                other: b.clone(),
            })
            .collect(),
        shadow_diffs: None,
        log_errors: log_errors(nginx),
    }
}

/// Replays `requests` in every run; `progress` hears each run's name.
/// nginx runs the team's own Lua and locations (`site`) in every run.
pub fn replay(
    config: &Value,
    requests: &[CorpusRequest],
    site: &Site,
    progress: &mut dyn FnMut(&str),
) -> Report {
    progress("lua (baseline)");
    let (base_nginx, base) = serve_all(&with_modes(config, &|_| "lua"), requests, site);
    let mut runs = vec![compare("none (baseline)", &base, &base, &base_nginx)];
    let mut statuses = std::collections::BTreeMap::new();
    for o in &base {
        *statuses.entry(o.status).or_insert(0) += 1;
    }
    drop(base_nginx);

    for module in modules_of(config) {
        progress(&module);
        let only = with_modes(config, &|m| if m == module { "rust" } else { "lua" });
        let (nginx, seen) = serve_all(&only, requests, site);
        runs.push(compare(&module, &base, &seen, &nginx));
    }

    progress("all modules");
    let (nginx, seen) = serve_all(&with_modes(config, &|_| "rust"), requests, site);
    runs.push(compare("all modules", &base, &seen, &nginx));
    drop(nginx);

    progress("native");
    let all_rust = with_modes(config, &|_| "rust").to_string();
    let (nginx, seen) = serve_with(site.start(&all_rust, true), requests);
    runs.push(compare("native pipeline", &base, &seen, &nginx));
    drop(nginx);

    progress("shadow");
    let (nginx, seen) = serve_all(&with_modes(config, &|_| "shadow"), requests, site);
    let mut run = compare("shadow", &base, &seen, &nginx);
    let counters = nginx.counters();
    run.shadow_diffs = Some(
        counters["zones"]
            .as_object()
            .into_iter()
            .flat_map(|z| z.values())
            .flat_map(|steps| steps.as_array().into_iter().flatten())
            .map(|s| s["shadow_diff"].as_u64().unwrap_or(0))
            .sum(),
    );
    runs.push(run);
    Report {
        runs,
        statuses: statuses.into_iter().collect(),
    }
}
