//! Running graft-edge as a server is run: its access log (one line per
//! request, written off the request path, reopened on SIGUSR1).
mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Edge, Recorder};

fn graft() -> String {
    json!({ "zones": {
        "rust.test": { "modules": [ { "module": "probe", "mode": "rust" } ] },
        "lua.test": { "modules": [ { "module": "probe", "mode": "lua" } ] },
        "two.test": { "modules": [
            { "module": "headers", "mode": "rust", "config": { "rules": [
                { "request": [ { "set": "X-Step0", "value": "ran" } ] } ] } },
            { "module": "probe", "mode": "rust", "config": { "continue": true, "decline_on": "/decline" } } ] },
        "body.test": { "body": { "max_bytes": 131072, "over": "inspect" }, "modules": [
            { "module": "waf", "mode": "rust", "config": { "signatures": ["sql_injection"], "inspect_body": true } } ] },
        "slow.test": { "modules": [] }
    } })
    .to_string()
}

/// The lines of `path` once it has `n` of them (the writer flushes when
/// its queue is empty).
fn lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_access_log_has_a_line_per_request_and_is_reopened_on_sigusr1() {
    let fl1 = Recorder::start("fl1");
    let origin = Recorder::start("origin");
    let edge = Edge::start_with(
        &graft(),
        json!({ "default": origin.addr() }),
        &fl1.addr(),
        |s, dir| s["access_log"] = json!(dir.join("access.log")),
    );
    let log = edge.dir.join("access.log");
    let ua = "User-Agent: test/1.0\r\nReferer: http://r.test/\"q\"\r\n";
    assert_eq!(edge.get_with("rust.test", "/a?x=1", ua).status, 200);
    assert_eq!(edge.get("lua.test", "/b").text(), "fl1 /b 0\n");
    assert_eq!(edge.get("two.test", "/decline").text(), "fl1 /decline 0\n");
    assert_eq!(edge.get("two.test", "/ok").text(), "origin /ok 0\n");
    assert_eq!(edge.get("nowhere.test", "/n").text(), "fl1 /n 0\n");
    assert_eq!(edge.get("rust.test", "/../x").status, 400);
    // A body read whole past Pingora's replay goes in a subrequest: one
    // line still, its request's.
    let body = "a".repeat(100_000);
    let post = format!(
        "POST /form HTTP/1.1\r\nHost: body.test\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(edge.raw(post.as_bytes()).text(), "origin /form 100000\n");

    let got = lines(&log, 7);
    assert_eq!(got.len(), 7, "{got:#?}\n{}", edge.log());
    let expect = [
        "\"GET /a?x=1 HTTP/1.1\" 200 8 \"http://r.test/\\x22q\\x22\" \"test/1.0\" zone=\"rust.test\" served=rust from=- reason=- time=",
        "\"GET /b HTTP/1.1\" 200 9 \"-\" \"-\" zone=\"lua.test\" served=fl1 from=0 reason=mode time=",
        "\"GET /decline HTTP/1.1\" 200 15 \"-\" \"-\" zone=\"two.test\" served=fl1 from=1 reason=decline time=",
        "\"GET /ok HTTP/1.1\" 200 13 \"-\" \"-\" zone=\"two.test\" served=rust from=- reason=- time=",
        "\"GET /n HTTP/1.1\" 200 9 \"-\" \"-\" zone=\"-\" served=fl1 from=- reason=- time=",
        "\"GET /../x HTTP/1.1\" 400 ",
        "\"POST /form HTTP/1.1\" 200 20 \"-\" \"-\" zone=\"body.test\" served=rust from=- reason=- time=",
    ];
    for (line, part) in got.iter().zip(expect) {
        assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
        assert!(line.contains(" +0000] "), "{line}");
        assert!(line.contains(part), "{line}\nhas no {part}");
    }
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o037, 0, "mode {mode:o}: not 0640 or tighter");

    // logrotate's move, then SIGUSR1: the writer opens a new file.
    std::fs::rename(&log, edge.dir.join("access.log.1")).unwrap();
    edge.signal("-USR1");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(edge.get("rust.test", "/after").status, 200);
    let got = lines(&log, 1);
    assert_eq!(got.len(), 1, "{got:#?}\n{}", edge.log());
    assert!(got[0].contains("\"GET /after HTTP/1.1\" 200"), "{}", got[0]);
    assert_eq!(lines(&edge.dir.join("access.log.1"), 7).len(), 7);
    assert_eq!(
        graft_tests::metric(&edge.metrics(), "graft_edge_access_log_dropped_total"),
        Some(0)
    );
}

/// Reads from `s` until it closes: true if it did within `limit`.
fn closed_within(s: &mut std::net::TcpStream, limit: Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(limit)).unwrap();
    let start = Instant::now();
    let mut buf = [0; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
        if start.elapsed() > limit {
            return false;
        }
    }
}

#[test]
fn connection_limits_and_client_timeouts_come_from_the_settings() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    let fl1 = Recorder::start("fl1");
    let origin = Recorder::start("origin");
    let slow = support::slow_origin(Duration::from_millis(2000));
    let edge = Edge::start_with(
        &graft(),
        json!({ "default": origin.addr(), "slow.test": format!("127.0.0.1:{slow}") }),
        &fl1.addr(),
        |s, _| {
            s["timeouts"]["read_ms"] = json!(500);
            s["limits"] = json!({ "max_connections": 2, "keepalive_requests": 2 });
            s["timeouts"]["client_keepalive_ms"] = json!(1000);
            s["timeouts"]["client_body_ms"] = json!(500);
        },
    );
    let connect = || TcpStream::connect(("127.0.0.1", edge.port)).unwrap();

    // The connections that saw it start (the harness's, waiting for its
    // listeners) gone first, as the gauge says.
    let open_now = || edge.metric("graft_edge_connections_open");
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_now() != 0 {
        assert!(Instant::now() < deadline, "{}", edge.metrics());
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = edge.metric("graft_edge_connections_refused_total");

    // Two connections open (each waiting for its request): a third is
    // closed as it comes; once one goes, a new one is served.
    let (first, _second) = (connect(), connect());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(open_now(), 2);
    let mut third = connect();
    assert!(closed_within(&mut third, Duration::from_secs(2)));
    drop(first);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(edge.get("rust.test", "/in").text(), "rust /in\n");
    assert_eq!(
        edge.metric("graft_edge_connections_refused_total"),
        refused + 1
    );
    drop(_second);
    std::thread::sleep(Duration::from_millis(200));

    // Two requests on one connection at most, and then it is closed.
    let mut s = connect();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    for i in 0..2 {
        s.write_all(format!("GET /k{i} HTTP/1.1\r\nHost: rust.test\r\n\r\n").as_bytes())
            .unwrap();
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut body = vec![0; 9];
        reader.read_exact(&mut body).unwrap();
    }
    assert!(
        closed_within(&mut s, Duration::from_secs(2)),
        "after 2 requests"
    );

    // A kept-alive connection idle for client_keepalive_ms is closed.
    let mut s = connect();
    s.write_all(b"GET /idle HTTP/1.1\r\nHost: rust.test\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let mut buf = [0; 512];
    assert!(s.read(&mut buf).unwrap() > 0);
    assert!(closed_within(&mut s, Duration::from_secs(4)), "idle");
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A body that stops coming: 408 after client_body_ms.
    let mut s = connect();
    s.write_all(b"POST /b HTTP/1.1\r\nHost: body.test\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n0123456789")
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(origin.count(), 0);

    // An origin slower than read_ms: 504, as nginx answers.
    let started = Instant::now();
    assert_eq!(edge.get("slow.test", "/s").status, 504);
    assert!(started.elapsed() < Duration::from_millis(1800));
}
