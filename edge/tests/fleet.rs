//! graft-agent drives graft-edge as it drives nginx: a real etcd (Debian's
//! etcd-server, one member on loopback), an agent given graft-edge's admin
//! listener, token and graft file, and graft-edge in front of a stand-in
//! FL1. A configuration put in etcd reaches graft-edge and serves; a kill
//! switch put in etcd sends the module's requests to FL1, and its removal
//! brings them back.
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use graft_tests::{free_port, tests_dir};
use serde_json::json;
use support::{Edge, Recorder};

const PREFIX: &str = "/graft/edge-test";

/// One etcd member on loopback, stopped (by its pid) when dropped.
struct Etcd {
    client: u16,
    dir: PathBuf,
    child: Child,
}

impl Etcd {
    fn start() -> Etcd {
        let dir = tests_dir().join(format!("edge-etcd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (client, peer) = (free_port(), free_port());
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let child = Command::new("etcd")
            .args(["--name", "m0", "--data-dir"])
            .arg(dir.join("data"))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-cluster",
                &format!("m0=http://127.0.0.1:{peer}"),
                "--initial-cluster-state",
                "new",
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd (Debian's etcd-server) runs");
        let etcd = Etcd { client, dir, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !etcd.ctl(&["endpoint", "health"]).status.success() {
            assert!(Instant::now() < deadline, "etcd did not become healthy");
            std::thread::sleep(Duration::from_millis(100));
        }
        etcd
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint(), "--command-timeout=3s"])
            .args(args)
            .output()
            .expect("etcdctl (Debian's etcd-client) runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// graft-agent, built beside graft-edge (`cargo test --workspace` builds
/// it; a test run of graft-edge alone builds it here).
fn agent_binary() -> PathBuf {
    let path = Path::new(support::binary()).with_file_name("graft-agent");
    if !path.exists() {
        let profile_dir = path.parent().unwrap();
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "-q", "-p", "graft-agent"])
            .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap());
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        assert!(build.status().unwrap().success(), "graft-agent built");
    }
    path
}

/// The agent of `edge`, as the README runs it beside graft-edge.
struct Agent(Child);

impl Agent {
    fn start(etcd: &Etcd, edge: &Edge) -> Agent {
        let log = std::fs::File::create(edge.dir.join("agent.log")).unwrap();
        let child = Command::new(agent_binary())
            .args(["--etcd", &etcd.endpoint(), "--prefix", PREFIX])
            .args(["--timeout-ms", "1000", "run", "--name", "edge-1"])
            .args(["--admin", &format!("http://127.0.0.1:{}", edge.admin_port)])
            .arg("--admin-token-file")
            .arg(edge.dir.join("admin.token"))
            .arg("--file")
            .arg(edge.dir.join("graft.json"))
            .arg("--state-dir")
            .arg(edge.dir.join("agent"))
            .args(["--interval-ms", "200"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Agent(child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn graft(extra: serde_json::Value) -> String {
    let mut zones = json!({
        "rust.test": { "modules": [ { "module": "probe", "mode": "rust" } ] }
    });
    for (k, v) in extra.as_object().unwrap() {
        zones[k] = v.clone();
    }
    json!({ "zones": zones }).to_string()
}

/// Waits until `check` holds, for at most `secs`.
fn converge(edge: &Edge, secs: u64, what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {secs} s\n--- agent ---\n{}\n--- graft-edge ---\n{}",
            std::fs::read_to_string(edge.dir.join("agent.log")).unwrap_or_default(),
            edge.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn graft_agent_gives_graft_edge_the_fleet_s_configuration_and_kill_switches() {
    let etcd = Etcd::start();
    let fl1 = Recorder::start("fl1");
    let origin = Recorder::start("origin");
    let edge = Edge::start(
        &graft(json!({})),
        json!({ "default": origin.addr() }),
        &fl1.addr(),
    );
    let agent = Agent::start(&etcd, &edge);
    assert_eq!(
        edge.get("new.test", "/n").text(),
        "fl1 /n 0\n",
        "no zone yet"
    );

    // The fleet's configuration: a zone more.
    let b = graft(json!({ "new.test": { "modules": [ { "module": "probe", "mode": "rust" } ] } }));
    etcd.ok(&["put", &format!("{PREFIX}/config"), &b]);
    converge(&edge, 20, "the configuration put in etcd", || {
        edge.get("new.test", "/n").text() == "rust /n\n"
    });
    // Kept in graft-edge's graft file for its next start (the agent
    // writes it once graft-edge took it), and said in the server's key
    // and the metrics.
    converge(&edge, 10, "the graft file kept", || {
        std::fs::read_to_string(edge.dir.join("graft.json")).unwrap_or_default() == b
    });
    let hash = graft_engine::fleet_report::config_hash(b.as_bytes());
    converge(&edge, 10, "the server's key", || {
        etcd.ok(&[
            "get",
            "--print-value-only",
            &format!("{PREFIX}/servers/edge-1"),
        ])
        .contains(&hash)
    });
    converge(&edge, 10, "the agent's report", || {
        graft_tests::metric(&edge.metrics(), "graft_fleet_etcd_up{}") == Some(1)
    });

    // A kill switch in etcd: rust.test's probe goes to FL1, then back.
    etcd.ok(&["put", &format!("{PREFIX}/kill/probe/rust.test"), ""]);
    converge(&edge, 10, "the kill switch put in etcd", || {
        edge.get("rust.test", "/k").text() == "fl1 /k 0\n"
    });
    assert_eq!(
        edge.get("new.test", "/n").text(),
        "rust /n\n",
        "another zone's probe"
    );
    etcd.ok(&["del", &format!("{PREFIX}/kill/probe/rust.test")]);
    converge(&edge, 10, "the kill switch removed from etcd", || {
        edge.get("rust.test", "/k").text() == "rust /k\n"
    });
    // Every zone's, then none.
    etcd.ok(&["put", &format!("{PREFIX}/kill/probe"), ""]);
    converge(&edge, 10, "a module's kill switch in every zone", || {
        edge.get("new.test", "/n").text() == "fl1 /n 0\n"
    });
    etcd.ok(&["del", &format!("{PREFIX}/kill/probe")]);
    converge(&edge, 10, "the module's kill switch removed", || {
        edge.get("new.test", "/n").text() == "rust /n\n"
    });
    assert_eq!(
        edge.metric("graft_configuration_refused_total{}"),
        0,
        "{}",
        edge.log()
    );
    drop(agent);
    let said = std::fs::read_to_string(edge.dir.join("agent.log")).unwrap();
    assert!(
        !said.contains("ERROR") && !said.contains("refused"),
        "the agent complained:\n{said}"
    );
}
