//! TLS termination on graft-edge (rustls, through Pingora): a listener
//! that names a certificate and key serves HTTPS, HTTP/2 or HTTP/1.1 by
//! ALPN, beside a plain one; what is behind it hears the request came
//! over TLS; a bad pair is refused at start with its field named. The
//! certificate is made at test time (rcgen), and curl checks it.
mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Edge, Recorder};

fn graft() -> String {
    json!({ "zones": {
        "rust.test": { "modules": [ { "module": "probe", "mode": "rust" } ] },
        "o.test": { "modules": [] }
    } })
    .to_string()
}

/// A self-signed certificate for `localhost`, and its key (0600): paths.
fn certificate(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.join(format!("{name}.crt"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    let key = support::secret_file(
        dir,
        &format!("{name}.pem"),
        &made.signing_key.serialize_pem(),
    );
    (cert, key)
}

/// curl over TLS to `port`, checking the certificate against `ca`:
/// what it printed (the body, then the HTTP version).
fn curl(port: u16, ca: &std::path::Path, host: &str, http: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "10", http, "-w", "%{http_version}"])
        .arg("--cacert")
        .arg(ca)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-H", &format!("Host: {host}")])
        .arg(format!("https://localhost:{port}/t"))
        .output()
        .expect("curl is installed");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_listener_with_a_certificate_serves_https_with_http2_by_alpn() {
    let fl1 = Recorder::start("fl1");
    let origin = Recorder::start("origin");
    let tls_port = graft_tests::free_port();
    let mut ca = None;
    let edge = Edge::start_with(
        &graft(),
        json!({ "default": origin.addr() }),
        &fl1.addr(),
        |s, dir| {
            let (cert, key) = certificate(dir, "edge");
            ca = Some(cert.clone());
            s["listen"].as_array_mut().unwrap().push(json!({
                "address": format!("127.0.0.1:{tls_port}"), "certificate": cert, "key": key }));
        },
    );
    let ca = ca.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
        assert!(Instant::now() < deadline, "{}", edge.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        curl(tls_port, &ca, "rust.test", "--http2"),
        "rust /t\n2",
        "{}",
        edge.log()
    );
    assert_eq!(
        curl(tls_port, &ca, "rust.test", "--http1.1"),
        "rust /t\n1.1"
    );
    // To the origin: plain HTTP, saying the client came over TLS.
    assert_eq!(curl(tls_port, &ca, "o.test", "--http2"), "origin /t 0\n2");
    assert_eq!(origin.last().headers("X-Forwarded-Proto"), ["https"]);
    // The plain listener beside it, as before, and not saying so.
    assert_eq!(edge.get("o.test", "/p").text(), "origin /p 0\n");
    assert!(origin.last().headers("X-Forwarded-Proto").is_empty());
}

#[test]
fn a_certificate_and_key_that_do_not_match_are_refused_naming_the_field() {
    let dir = support::scratch("tls-bad");
    std::fs::write(dir.join("graft.json"), graft()).unwrap();
    let (cert, _) = certificate(&dir, "one");
    let (_, other_key) = certificate(&dir, "two");
    let run = |listener: serde_json::Value| {
        let mut s = support::settings(
            &dir,
            graft_tests::free_port(),
            graft_tests::free_port(),
            json!({ "default": "127.0.0.1:9" }),
            "127.0.0.1:8",
        );
        s["listen"].as_array_mut().unwrap().push(listener);
        std::fs::write(dir.join("edge.json"), s.to_string()).unwrap();
        let out = std::process::Command::new(support::binary())
            .arg("--check")
            .arg(dir.join("edge.json"))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) =
        run(json!({ "address": "127.0.0.1:1", "certificate": cert, "key": other_key }));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("field \"listen[1].key\": ") && err.contains("is not the key of"),
        "{err}"
    );
    let (code, err) =
        run(json!({ "address": "127.0.0.1:1", "certificate": cert, "key": "/no/such.pem" }));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("field \"listen[1].key\": /no/such.pem"),
        "{err}"
    );
    let (code, err) = run(json!({ "address": "127.0.0.1:1", "cert": cert }));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("field \"listen[1]\": neither an address"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
