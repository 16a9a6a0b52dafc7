//! The load graft-bench puts on a server: the request mix, wrk (closed
//! loop: as many requests as the server answers, for req/s and CPU under
//! saturation), and a fixed-rate client of its own (open loop: latency
//! below saturation, as wrk2 measures it; wrk2 is not in Debian).
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The zones the mix's requests name, in turn.
pub(crate) const MIX_ZONES: [&str; 5] = [
    "shop.example",
    "blog.example",
    "news.example",
    "docs.example",
    "m.example",
];

/// One request of the mix: its zone, target and headers beyond `Host`.
pub(crate) struct MixRequest {
    pub(crate) host: &'static str,
    pub(crate) target: String,
    pub(crate) headers: Vec<(&'static str, &'static str)>,
}

impl MixRequest {
    /// The request as HTTP/1.1 sends it, kept alive.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let mut head = format!("GET {} HTTP/1.1\r\nHost: {}\r\n", self.target, self.host);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        head.into_bytes()
    }
}

/// The request mix: 100 requests over five zones, mostly clean, some
/// blocked (an SQL injection, an admin path), some redirected.
pub(crate) fn mix() -> Vec<MixRequest> {
    (0..100)
        .map(|i| {
            let (target, agent) = match i % 20 {
                0 => ("/search?q=1%27%20OR%20%271%27=%271".to_string(), false),
                1 => ("/admin/users".to_string(), false),
                2 => (format!("/legacy/{}", i * 7), false),
                3 => ("/old?x=1".to_string(), false),
                4 => ("/static/app.js".to_string(), true),
                _ => (
                    format!(
                        "/index.html?page={i}&ref=mail&utm_source=news&id={}",
                        i * 31
                    ),
                    false,
                ),
            };
            let mut headers = vec![("Cookie", "session=abc123")];
            if agent {
                headers.push(("User-Agent", "curl/8.5.0"));
            }
            MixRequest {
                host: MIX_ZONES[i % MIX_ZONES.len()],
                target,
                headers,
            }
        })
        .collect()
}

/// The mix as a wrk script (`mix.lua` in `dir`).
pub(crate) fn wrk_script(dir: &Path) -> PathBuf {
    let reqs: Vec<String> = mix()
        .iter()
        .map(|r| {
            let headers: String = std::iter::once(("Host", r.host))
                .chain(r.headers.iter().copied())
                .map(|(n, v)| format!("[\"{n}\"] = \"{v}\""))
                .collect::<Vec<_>>()
                .join(", ");
            format!("wrk.format(\"GET\", \"{}\", {{ {headers} }})", r.target)
        })
        .collect();
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

/// CPU time in clock ticks (USER_HZ) on Linux.
pub(crate) const TICKS_PER_SEC: f64 = 100.0;

/// wrk (one thread, 16 connections) against the server on `port` for
/// `seconds`; its CPU per request from `ticks` (the server's CPU time in
/// clock ticks) read before and after.
pub(crate) fn run_wrk(port: u16, script: &Path, seconds: u64, ticks: impl Fn() -> u64) -> Sample {
    let before = ticks();
    let out = Command::new("wrk")
        .args(["-t1", "-c16", &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .expect("wrk (make deps installs it)");
    let after = ticks();
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
    Sample {
        rps: find("Requests/sec:").parse().unwrap_or(f64::NAN),
        cpu_us_per_req: (after - before) as f64 / TICKS_PER_SEC * 1e6 / requests,
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

/// What a fixed-rate run measured.
pub(crate) struct Paced {
    /// Requests answered: all that were sent.
    pub(crate) requests: usize,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// Requests whose connection was still busy when they were due,
    /// timed from when they were due.
    pub(crate) late: usize,
}

/// `count` requests of `mix`, in turn, to the server on `port` at `rate`
/// a second over `connections` kept-alive connections (each connection
/// takes every `connections`-th request): open loop, the requests due on
/// a schedule whatever the answers do. A request is timed from when it
/// was sent, or, when its connection was still busy with the one before
/// at the time it was due, from that time, as wrk2 does (a slow answer
/// delays the requests behind it, and that wait is the server's).
/// An error when a request fails, or is not answered within 10 s.
pub(crate) fn paced(
    port: u16,
    mix: &[Vec<u8>],
    rate: f64,
    count: usize,
    connections: usize,
) -> Result<Paced, String> {
    let start = Instant::now() + Duration::from_millis(50);
    let lanes: Vec<Result<(Vec<Duration>, usize), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..connections)
            .map(|lane| {
                scope.spawn(move || {
                    let mut conn: Option<BufReader<TcpStream>> = None;
                    let mut times = Vec::new();
                    let mut late = 0;
                    for i in (lane..count).step_by(connections) {
                        let due = start + Duration::from_secs_f64(i as f64 / rate);
                        let now = Instant::now();
                        let from = if now < due {
                            std::thread::sleep(due - now);
                            Instant::now()
                        } else {
                            late += 1;
                            due
                        };
                        let request = &mix[i % mix.len()];
                        let keep = exchange_kept(&mut conn, port, request)
                            .map_err(|e| format!("request {i}: {e}"))?;
                        times.push(from.elapsed());
                        if !keep {
                            conn = None;
                        }
                    }
                    Ok((times, late))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut times = Vec::with_capacity(count);
    let mut late = 0;
    for lane in lanes {
        let (t, l) = lane?;
        times.extend(t);
        late += l;
    }
    times.sort();
    let at = |q: f64| {
        times
            .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    Ok(Paced {
        requests: times.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        late,
    })
}

/// One request on the kept connection `conn` (connecting when there is
/// none, and once again when a kept one was closed before answering);
/// whether the connection stays open.
fn exchange_kept(
    conn: &mut Option<BufReader<TcpStream>>,
    port: u16,
    request: &[u8],
) -> std::io::Result<bool> {
    if let Some(c) = conn.as_mut() {
        match exchange(c, request) {
            Ok(answer) => return Ok(answer.keep_alive),
            // Closed by the server between requests: a new connection.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(e) => return Err(e),
        }
    }
    let c = conn.insert(connect(port)?);
    exchange(c, request).map(|a| a.keep_alive)
}

pub(crate) fn connect(port: u16) -> std::io::Result<BufReader<TcpStream>> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(BufReader::new(s))
}

/// An answer as the fixed-rate client read it.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    pub(crate) keep_alive: bool,
}

/// Sends `request` on `conn` and reads its answer whole (by
/// `Content-Length`, chunks, or to the end of a closed connection). An
/// `UnexpectedEof` error when the connection closed before any of it.
pub(crate) fn exchange(conn: &mut BufReader<TcpStream>, request: &[u8]) -> std::io::Result<Answer> {
    use std::io::{Error, ErrorKind};
    conn.get_mut().write_all(request)?;
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    let bad = |what: &str| Error::new(ErrorKind::InvalidData, what.to_string());
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or_default().to_string();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("not a status line: {line:?}")))?;
    let (mut length, mut chunked, mut keep_alive) = (None, false, version == "HTTP/1.1");
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Err(bad("the head was cut"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let value = value.trim().to_ascii_lowercase();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().ok(),
            "transfer-encoding" => chunked = value.contains("chunked"),
            "connection" => {
                keep_alive =
                    value.contains("keep-alive") || (keep_alive && !value.contains("close"))
            }
            _ => {}
        }
    }
    let mut body = Vec::new();
    if let Some(n) = length {
        body.resize(n, 0);
        conn.read_exact(&mut body)?;
    } else if chunked {
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("a bad chunk size"))?;
            let mut chunk = vec![0; n + 2];
            conn.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if !(status == 204 || status == 304 || (100..200).contains(&status)) {
        conn.read_to_end(&mut body)?;
        keep_alive = false;
    }
    Ok(Answer {
        status,
        body,
        keep_alive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server on a loopback port answering the requests of each
    /// connection with `answers` in turn (the last one closing it).
    fn server(answers: &'static [&'static str]) -> u16 {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut out = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    for answer in answers {
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        out.write_all(answer.as_bytes()).unwrap();
                    }
                });
            }
        });
        port
    }

    const ANSWERS: &[&str] = &[
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        "HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nno \r\n4\r\nway!\r\n0\r\n\r\n",
        "HTTP/1.1 301 Moved\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ];

    #[test]
    fn answers_are_read_whole_and_a_close_is_seen() {
        let port = server(ANSWERS);
        let mut conn = connect(port).unwrap();
        let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let a = exchange(&mut conn, get).unwrap();
        assert_eq!(
            (a.status, a.body.as_slice(), a.keep_alive),
            (200, &b"hello"[..], true)
        );
        let a = exchange(&mut conn, get).unwrap();
        assert_eq!(
            (a.status, a.body.as_slice(), a.keep_alive),
            (403, &b"no way!"[..], true)
        );
        let a = exchange(&mut conn, get).unwrap();
        assert_eq!((a.status, a.keep_alive), (301, false));
        // Closed: the end of the stream, or a reset when the request
        // written after the close reached the server's closed socket first.
        let e = exchange(&mut conn, get).err().expect("closed");
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            ),
            "{e}"
        );
    }

    #[test]
    fn a_fixed_rate_sends_every_request_and_reconnects_after_a_close() {
        let port = server(ANSWERS);
        let mix = vec![b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()];
        let started = Instant::now();
        let p = paced(port, &mix, 200.0, 40, 4).unwrap();
        assert_eq!(p.requests, 40);
        assert!(p.p50_ms > 0.0 && p.p50_ms <= p.p99_ms);
        // 40 requests due over 0.2 s: not sent at once.
        assert!(started.elapsed() >= Duration::from_millis(190));
    }
}
