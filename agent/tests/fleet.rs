//! A fleet on one machine: a three-member etcd cluster and three graft
//! servers (the distribution's nginx with the real Lua module), each with
//! its own agent, on loopback ports.
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use graft_tests::{free_port, metric, tests_dir, Nginx, Scenario};
use serde_json::json;

/// One etcd member, started and stopped by the test.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    dir: PathBuf,
    child: Option<Child>,
}

struct Etcd {
    members: Vec<Member>,
    token: String,
}

impl Etcd {
    fn start(n: usize) -> Etcd {
        let id = format!(
            "{}-{}",
            std::process::id(),
            free_port() // distinct per cluster of this process
        );
        let members = (0..n)
            .map(|i| {
                let dir = tests_dir().join(format!("etcd-{id}-{i}"));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).unwrap();
                Member {
                    name: format!("m{i}"),
                    client: free_port(),
                    peer: free_port(),
                    dir,
                    child: None,
                }
            })
            .collect();
        let mut etcd = Etcd {
            members,
            token: format!("graft-test-{id}"),
        };
        for i in 0..n {
            etcd.start_member(i);
        }
        etcd.wait_healthy();
        etcd
    }

    fn cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn start_member(&mut self, i: usize) {
        let cluster = self.cluster();
        let m = &mut self.members[i];
        assert!(m.child.is_none());
        let log = std::fs::File::create(m.dir.join("log")).unwrap();
        let child = Command::new("etcd")
            .args([
                "--name",
                &m.name,
                "--data-dir",
                m.dir.join("data").to_str().unwrap(),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-cluster",
                &cluster,
                "--initial-cluster-token",
                &self.token,
                "--initial-cluster-state",
                "new",
                // Quicker elections than the defaults, for loopback.
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd (Debian's etcd-server) runs");
        m.child = Some(child);
    }

    fn stop_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoints(), "--command-timeout=3s"])
            .args(args)
            .output()
            .expect("etcdctl (Debian's etcd-client) runs")
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let live: Vec<String> = self
                .members
                .iter()
                .filter(|m| m.child.is_some())
                .map(|m| format!("http://127.0.0.1:{}", m.client))
                .collect();
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &live.join(","), "endpoint", "health"])
                .output()
                .unwrap();
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn get(&self, key: &str) -> Option<String> {
        let out = self.etcdctl(&["get", "--print-value-only", key]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let text = text.strip_suffix('\n').unwrap_or(&text);
        (!text.is_empty()).then(|| text.to_string())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop_member(i);
        }
        if !std::thread::panicking() {
            for m in &self.members {
                let _ = std::fs::remove_dir_all(&m.dir);
            }
        }
    }
}

/// A graft server: nginx and its agent.
struct Server {
    name: String,
    nginx: Nginx,
    agent: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- agent {} ---\n{}",
                self.name,
                std::fs::read_to_string(self.nginx.prefix.join("agent.log")).unwrap_or_default()
            );
        }
    }
}

const AGENT: &str = env!("CARGO_BIN_EXE_graft-agent");

fn agent_cli_output(etcd: &Etcd, prefix: &str, args: &[&str]) -> std::process::Output {
    Command::new(AGENT)
        .args(["--etcd", &etcd.endpoints(), "--prefix", prefix])
        .args(args)
        .output()
        .unwrap()
}

fn agent_cli(etcd: &Etcd, prefix: &str, args: &[&str]) -> String {
    let out = agent_cli_output(etcd, prefix, args);
    assert!(
        out.status.success(),
        "graft-agent {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every server still serves, and keeps in its graft file, the redirect
/// to `to`: `what` reached none of them.
fn assert_unchanged(servers: &[Server], to: &str, what: &str) {
    for s in servers {
        assert_eq!(location(s), to, "{what} changed {}", s.name);
        assert_eq!(
            std::fs::read_to_string(s.nginx.config_path()).unwrap(),
            redirect_to(to),
            "{what} reached {}'s file",
            s.name
        );
    }
}

/// A server's own key in etcd, as its agent wrote it.
fn server_key(etcd: &Etcd, prefix: &str, server: &Server) -> Option<String> {
    etcd.get(&format!("{prefix}/servers/{}", server.name))
}

/// A command that must fail: what it said on stderr.
fn agent_cli_refused(etcd: &Etcd, prefix: &str, args: &[&str]) -> String {
    let out = agent_cli_output(etcd, prefix, args);
    assert!(!out.status.success(), "graft-agent {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

/// Starts the agent of `nginx`, named `name`.
fn spawn_agent(endpoints: &str, prefix: &str, nginx: &Nginx, name: &str, timeout_ms: u64) -> Child {
    spawn_agent_with(endpoints, prefix, nginx, name, timeout_ms, &[], &[])
}

/// Starts the agent of `nginx` with more options: `global` before `run`
/// (etcd's), `run` after it.
fn spawn_agent_with(
    endpoints: &str,
    prefix: &str,
    nginx: &Nginx,
    name: &str,
    timeout_ms: u64,
    global: &[&str],
    run: &[&str],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(nginx.prefix.join("agent.log"))
        .unwrap();
    Command::new(AGENT)
        .args(["--etcd", endpoints, "--prefix", prefix])
        .args(["--timeout-ms", &timeout_ms.to_string()])
        .args(global)
        .args(["run", "--name", name])
        .args(run)
        .args(["--admin", &format!("http://127.0.0.1:{}", nginx.admin_port)])
        .args([
            "--admin-token-file",
            nginx.prefix.join("admin.token").to_str().unwrap(),
        ])
        .args(["--file", nginx.config_path().to_str().unwrap()])
        .args(["--state-dir", nginx.prefix.join("agent").to_str().unwrap()])
        .args(["--interval-ms", "200"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn start_servers(etcd: &Etcd, prefix: &str, config: &str) -> Vec<Server> {
    (0..3)
        .map(|i| {
            let nginx = Nginx::start_workers(config, 2);
            let name = format!("s{i}");
            let agent = spawn_agent(&etcd.endpoints(), prefix, &nginx, &name, 1000);
            Server { name, nginx, agent }
        })
        .collect()
}

fn redirect_to(to: &str) -> String {
    json!({ "zones": { "localhost": { "modules": [
        { "module": "redirects", "mode": "rust", "config": { "rules": [ { "from": "/a", "to": to } ] } } ] } } })
    .to_string()
}

fn location(server: &Server) -> String {
    server
        .nginx
        .get("localhost", "/a")
        .header("Location")
        .unwrap_or_default()
        .to_string()
}

/// Whether the server serves redirects to `to`: ten requests in a row, and
/// ten more half a second later, when both of its workers serve it (the
/// one that applied a configuration live at once, the other within its
/// 250 ms tick).
fn serves(server: &Server, to: &str) -> bool {
    let all = || (0..10).all(|_| location(server) == to);
    all() && {
        std::thread::sleep(Duration::from_millis(500));
        all()
    }
}

fn metrics(server: &Server) -> String {
    let r = server.nginx.get("localhost", "/graft/metrics");
    assert_eq!(r.status, 200);
    r.text()
}

/// Waits until every server satisfies `check`, or fails with `what`.
fn converge(servers: &[Server], secs: u64, what: &str, check: impl Fn(&Server) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !servers.iter().all(&check) {
        assert!(
            Instant::now() < deadline,
            "{what}: not on every server within {secs} s ({:?})",
            servers
                .iter()
                .map(|s| (s.name.clone(), check(s)))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn write_file(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn killed(server: &Server) -> bool {
    metric(
        &metrics(server),
        r#"graft_module_killed{zone="localhost",module="redirects"}"#,
    ) == Some(1)
}

#[test]
fn kill_switches_and_configurations_reach_every_server_whatever_etcd_does() {
    let mut scenario = Scenario::start("a three-member etcd cluster and three servers start");
    let mut etcd = Etcd::start(3);
    let prefix = "/graft/fleet-a";
    let servers = start_servers(&etcd, prefix, &redirect_to("/local"));
    let dir = servers[0].nginx.prefix.clone();

    scenario.part("the fleet's configuration reaches every server");
    agent_cli(
        &etcd,
        prefix,
        &["put", &write_file(&dir, "b.json", &redirect_to("/b"))],
    );
    converge(&servers, 10, "the fleet's configuration", |s| {
        serves(s, "/b")
    });
    // Each agent keeps it in its graft file, for nginx's next start.
    for s in &servers {
        assert_eq!(
            std::fs::read_to_string(s.nginx.config_path()).unwrap(),
            redirect_to("/b")
        );
        assert_eq!(metric(&metrics(s), "graft_fleet_etcd_up{}"), Some(1));
    }

    scenario.part("a kill switch written once reaches every server within a second");
    let kill_sent = Instant::now();
    agent_cli(&etcd, prefix, &["kill", "redirects", "--reason", "test"]);
    converge(&servers, 5, "the kill switch", killed);
    let took = kill_sent.elapsed();
    eprintln!("the kill switch reached every server in {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "the kill switch took {took:?}"
    );
    scenario.part("a module revived by hand on one server is killed again by its agent");
    // Revived through the server's own admin API: its agent sees that its
    // nginx no longer has the switch, and kills it again.
    assert_eq!(
        servers[0]
            .nginx
            .admin("POST", "/graft/admin/revive?module=redirects")
            .status,
        200
    );
    converge(
        &servers[0..1],
        5,
        "the module revived by hand, killed again",
        killed,
    );
    agent_cli(&etcd, prefix, &["revive", "redirects"]);
    converge(&servers, 5, "the module revived", |s| !killed(s));

    scenario.part("a kill switch for a zone not there yet is killed when the zone comes");
    // Each nginx refuses it, each server's key says so, and it is killed
    // as soon as a configuration brings the zone.
    agent_cli(
        &etcd,
        prefix,
        &["kill", "redirects", "--zone", "later.test"],
    );
    converge(&servers, 5, "the refusal in the servers' keys", |s| {
        server_key(&etcd, prefix, s)
            .is_some_and(|key| key.contains("\"kills_refused\":[\"redirects/later.test: "))
    });
    let mut with_later: serde_json::Value = serde_json::from_str(&redirect_to("/b")).unwrap();
    with_later["zones"]["later.test"] = json!({ "modules": [
        { "module": "redirects", "mode": "rust", "config": { "rules": [ { "from": "/a", "to": "/later" } ] } } ] });
    agent_cli(
        &etcd,
        prefix,
        &[
            "put",
            &write_file(&dir, "later.json", &with_later.to_string()),
        ],
    );
    let later_killed = |s: &Server| {
        metric(
            &metrics(s),
            r#"graft_module_killed{zone="later.test",module="redirects"}"#,
        )
    };
    converge(&servers, 10, "the kill switch of the zone brought", |s| {
        later_killed(s) == Some(1)
    });
    assert!(servers.iter().all(|s| !killed(s)), "only that zone's");
    scenario.part("a zone dropped, revived meanwhile, comes back not killed");
    let later = write_file(&dir, "later.json", &with_later.to_string());
    let b = write_file(&dir, "b.json", &redirect_to("/b"));
    agent_cli(&etcd, prefix, &["put", &b]);
    converge(&servers, 10, "the zone dropped", |s| {
        later_killed(s).is_none()
    });
    agent_cli(
        &etcd,
        prefix,
        &["revive", "redirects", "--zone", "later.test"],
    );
    converge(&servers, 5, "the revive in the servers' keys", |s| {
        server_key(&etcd, prefix, s).is_some_and(|key| !key.contains("later.test"))
    });
    agent_cli(&etcd, prefix, &["put", &later]);
    converge(&servers, 10, "the zone brought back, not killed", |s| {
        later_killed(s) == Some(0)
    });
    agent_cli(&etcd, prefix, &["put", &b]);
    converge(&servers, 10, "the fleet's configuration", |s| {
        serves(s, "/b")
    });

    scenario.part("garbage in etcd is refused by every server and changes nothing");
    // Said in each server's key and metrics.
    let refused = |s: &Server| metric(&metrics(s), "graft_configuration_refused_total{}").unwrap();
    let before: Vec<u64> = servers.iter().map(refused).collect();
    let out = etcd.etcdctl(&["put", &format!("{prefix}/config"), "{\"zones\": garbage"]);
    assert!(out.status.success());
    converge(&servers, 10, "the refusal", |s| {
        server_key(&etcd, prefix, s).is_some_and(|status| status.contains("invalid JSON"))
    });
    for (s, before) in servers.iter().zip(before) {
        assert_eq!(refused(s), before + 1, "{}", s.name);
    }
    assert_unchanged(&servers, "/b", "a refused configuration");

    scenario.part("an empty configuration key is refused and changes nothing");
    // (Sent as an empty body, nginx would apply its own file.)
    let out = etcd.etcdctl(&["put", &format!("{prefix}/config"), ""]);
    assert!(out.status.success());
    converge(&servers, 10, "the empty key refused", |s| {
        server_key(&etcd, prefix, s).is_some_and(|status| status.contains("the key is empty"))
    });
    assert_unchanged(&servers, "/b", "the empty key");

    scenario.part("a kill key that names no switch is said in every key and kills nothing");
    let out = etcd.etcdctl(&["put", &format!("{prefix}/kill/redirects/"), ""]);
    assert!(out.status.success());
    converge(&servers, 10, "the bad kill key", |s| {
        server_key(&etcd, prefix, s)
            .is_some_and(|status| status.contains("kill/redirects/: not a kill switch"))
    });
    assert!(servers.iter().all(|s| !killed(s)));
    let out = etcd.etcdctl(&["del", &format!("{prefix}/kill/redirects/")]);
    assert!(out.status.success());

    scenario.part("an unreadable rollout is said in every key and changes nothing");
    let out = etcd.etcdctl(&["put", &format!("{prefix}/rollout"), "[1, 2"]);
    assert!(out.status.success());
    converge(&servers, 10, "the unreadable rollout", |s| {
        server_key(&etcd, prefix, s)
            .is_some_and(|status| status.contains(r#""key_error":"/graft/fleet-a/rollout: "#))
    });
    for s in &servers {
        assert_eq!(location(s), "/b", "{} changed", s.name);
    }
    let out = etcd.etcdctl(&["del", &format!("{prefix}/rollout")]);
    assert!(out.status.success());

    scenario.part(
        "with one etcd member down, configurations and kill switches still reach every server",
    );
    etcd.stop_member(0);
    agent_cli(
        &etcd,
        prefix,
        &["put", &write_file(&dir, "c.json", &redirect_to("/c"))],
    );
    converge(&servers, 10, "a configuration with a member down", |s| {
        serves(s, "/c")
    });
    let kill_sent = Instant::now();
    agent_cli(&etcd, prefix, &["kill", "redirects"]);
    converge(&servers, 5, "the kill switch with a member down", killed);
    let took = kill_sent.elapsed();
    eprintln!("the kill switch reached every server in {took:?}, one etcd member down");
    assert!(
        took < Duration::from_secs(1),
        "the kill switch took {took:?} with a member down"
    );
    agent_cli(&etcd, prefix, &["revive", "redirects"]);
    converge(&servers, 5, "the module revived", |s| !killed(s));

    scenario.part("with etcd down, every server keeps serving and says so");
    etcd.stop_member(1);
    etcd.stop_member(2);
    converge(&servers, 10, "etcd down in the metrics", |s| {
        metric(&metrics(s), "graft_fleet_etcd_up{}") == Some(0)
    });
    for _ in 0..20 {
        for s in &servers {
            assert_eq!(location(s), "/c", "{} without etcd", s.name);
        }
    }
    for s in &servers {
        s.nginx.assert_clean_log(&[]);
    }

    scenario.part("etcd back, the servers catch up with what is written then");
    for i in 0..3 {
        etcd.start_member(i);
    }
    etcd.wait_healthy();
    agent_cli(
        &etcd,
        prefix,
        &["put", &write_file(&dir, "d.json", &redirect_to("/d"))],
    );
    converge(
        &servers,
        15,
        "the configuration after etcd came back",
        |s| serves(s, "/d") && metric(&metrics(s), "graft_fleet_etcd_up{}") == Some(1),
    );
    let status = agent_cli(&etcd, prefix, &["status"]);
    assert_eq!(status.lines().count(), 3, "{status}");
}

/// A rollout's state, read from etcd.
/// Waits up to `secs` for the rollout to be reverted, and returns it.
fn rolled_back(etcd: &Etcd, prefix: &str, secs: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = rollout(etcd, prefix);
        if r["state"] == "rolled_back" {
            return r;
        }
        assert!(Instant::now() < deadline, "no rollback: {r}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `sig` to nginx's master and workers; returns their pids.
fn signal(nginx: &Nginx, sig: &str) -> Vec<i32> {
    let mut pids = nginx.worker_pids();
    pids.extend(nginx.master_pid());
    for pid in &pids {
        assert!(Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success());
    }
    pids
}

fn rollout(etcd: &Etcd, prefix: &str) -> serde_json::Value {
    serde_json::from_str(&etcd.get(&format!("{prefix}/rollout")).expect("a rollout")).unwrap()
}

#[test]
fn a_rollout_goes_stage_by_stage_and_a_failed_gate_rolls_every_server_back() {
    let mut scenario = Scenario::start("three servers serve the base configuration, with traffic");
    let etcd = Etcd::start(3);
    let prefix = "/graft/fleet-b";
    let servers = Arc::new(start_servers(&etcd, prefix, &redirect_to("/local")));
    let dir = servers[0].nginx.prefix.clone();
    agent_cli(
        &etcd,
        prefix,
        &["put", &write_file(&dir, "base.json", &redirect_to("/base"))],
    );
    converge(&servers, 10, "the base configuration", |s| {
        serves(s, "/base")
    });
    converge(&servers, 10, "every server's key", |s| {
        server_key(&etcd, prefix, s).is_some()
    });

    // Traffic on every server for the health gates, until the test ends.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (servers, stop) = (servers.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for s in servers.iter() {
                    s.nginx.get("localhost", "/x");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    scenario.part("a good configuration is rolled out to one server, then two, then all");
    let good = write_file(&dir, "good.json", &redirect_to("/new"));
    agent_cli(
        &etcd,
        prefix,
        &[
            "rollout",
            "start",
            &good,
            "--stages",
            "1,50%,all",
            "--hold",
            "2",
            "--min-requests",
            "10",
        ],
    );
    // When each server first served it (a server's two workers take a
    // live apply within 250 ms of each other, so one may lag a little).
    let started = Instant::now();
    // While it runs, the fleet's configuration is not put by hand: the
    // rollout's end would overwrite it.
    let refused = agent_cli_refused(
        &etcd,
        prefix,
        &[
            "put",
            &write_file(&dir, "other.json", &redirect_to("/other")),
        ],
    );
    assert!(refused.contains("a rollout is running"), "{refused}");
    let mut first: Vec<Option<Duration>> = vec![None; servers.len()];
    loop {
        for (i, s) in servers.iter().enumerate() {
            if first[i].is_none() && location(s) == "/new" {
                first[i] = Some(started.elapsed());
            }
        }
        let state = rollout(&etcd, prefix)["state"]
            .as_str()
            .unwrap()
            .to_string();
        if state == "done" && first.iter().all(Option::is_some) {
            break;
        }
        assert_eq!(state, "running", "{}", rollout(&etcd, prefix));
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the rollout did not end: {first:?} {}",
            rollout(&etcd, prefix)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    scenario.part("the servers took it in their order, a stage at a time, each held first");
    // Each stage held for its two seconds first. The loop sees a server up
    // to one round late (an etcdctl run each round), and the first server
    // seen late makes a stage look shorter than it was held: 250 ms of
    // slack.
    let first: Vec<Duration> = first.into_iter().map(Option::unwrap).collect();
    let held = Duration::from_millis(1750);
    assert!(
        first[0] + held <= first[1] && first[1] + held <= first[2],
        "{first:?}"
    );
    let done = rollout(&etcd, prefix);
    let history = done["history"].to_string();
    assert!(
        history.contains("stage 1") && history.contains("stage 2") && history.contains("done"),
        "{history}"
    );
    assert_eq!(
        etcd.get(&format!("{prefix}/config")).as_deref(),
        Some(redirect_to("/new").as_str()),
        "the fleet's configuration is the one rolled out"
    );

    scenario.part(
        "a configuration that differs in shadow fails the first server's gate and is reverted",
    );
    // Its module differs from its Lua side in shadow: the first server's
    // gate fails, and it goes back by itself.
    let bad = json!({ "zones": { "localhost": { "modules": [
        { "module": "redirects", "mode": "rust", "config": { "rules": [ { "from": "/a", "to": "/bad" } ] } },
        { "module": "probe", "mode": "shadow" } ] } } })
    .to_string();
    agent_cli(
        &etcd,
        prefix,
        &[
            "rollout",
            "start",
            &write_file(&dir, "bad.json", &bad),
            "--hold",
            "30",
            "--min-requests",
            "10",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut first_took_it = false;
    loop {
        first_took_it |= location(&servers[0]) == "/bad";
        let r = rollout(&etcd, prefix);
        if r["state"] == "rolled_back" {
            let reason = r["reason"].as_str().unwrap();
            assert!(
                reason.starts_with("server s0: shadow difference rate 1.000"),
                "{reason}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no rollback: {r}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        first_took_it,
        "the first server never served the new configuration"
    );
    converge(&servers, 10, "the rollback", |s| serves(s, "/new"));
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    scenario.part("the agents' logs and the metrics tell of the revert");
    // Each server took the good rollout once; the first took the bad one
    // too and went back, the other two never took it.
    let log = |s: &Server| std::fs::read_to_string(s.nginx.prefix.join("agent.log")).unwrap();
    let applied = |s: &Server| log(s).matches("applied the rollout configuration").count();
    assert_eq!(applied(&servers[0]), 2, "{}", log(&servers[0]));
    assert_eq!(applied(&servers[1]), 1, "{}", log(&servers[1]));
    assert_eq!(applied(&servers[2]), 1, "{}", log(&servers[2]));
    // The agent that rolled it back says so as a warning.
    let warned = |s: &Server| {
        log(s).lines().any(|l| {
            l.contains(" WARN ") && l.contains("reverted at stage 0: server s0: shadow difference")
        })
    };
    assert!(
        servers.iter().any(warned),
        "no agent warned of the rollback"
    );
    for s in servers.iter() {
        let text = metrics(s);
        assert_eq!(
            metric(&text, r#"graft_fleet_rollout_state{state="rolled_back"}"#),
            Some(1),
            "{}",
            s.name
        );
        assert_eq!(metric(&text, "graft_fleet_rollout_serving{}"), Some(0));
    }
    assert_eq!(
        etcd.get(&format!("{prefix}/config")).as_deref(),
        Some(redirect_to("/new").as_str()),
        "a rollback leaves the fleet's configuration as it was"
    );

    scenario
        .part("an operator's abort reverts a running rollout, and a second has nothing to abort");
    let later = write_file(&dir, "later.json", &redirect_to("/later"));
    agent_cli(&etcd, prefix, &["rollout", "start", &later, "--hold", "30"]);
    converge(&servers[0..1], 10, "the first stage", |s| {
        serves(s, "/later")
    });
    agent_cli(
        &etcd,
        prefix,
        &["rollout", "abort", "--reason", "not today"],
    );
    let aborted = rollout(&etcd, prefix);
    assert_eq!(aborted["reason"], "not today");
    // Its line in the history says when, as every other line does.
    let history = aborted["history"].as_array().unwrap();
    let line = history.last().unwrap().as_str().unwrap();
    let (time, what) = line.split_once(' ').unwrap();
    let started_at = history[0].as_str().unwrap().split_once(' ').unwrap().0;
    assert!(
        time.parse::<u64>()
            .is_ok_and(|t| t >= started_at.parse().unwrap()),
        "{line}"
    );
    assert!(what.contains("not today"), "{line}");
    converge(&servers, 10, "the abort", |s| serves(s, "/new"));
    let again = agent_cli_refused(&etcd, prefix, &["rollout", "abort", "--reason", "twice"]);
    assert!(again.contains("the rollout is not running"), "{again}");
}

/// Idle servers write their keys only when their state changes: a stage
/// held longer than the silence gate meets servers whose keys were last
/// written long before it started. Their silence counts from when they
/// took their part, never from that older write.
#[test]
fn idle_servers_pass_stages_held_longer_than_their_silence_gate() {
    let etcd = Etcd::start(1);
    let prefix = "/graft/fleet-d";
    let servers = start_servers(&etcd, prefix, &redirect_to("/local"));
    let dir = servers[0].nginx.prefix.clone();
    agent_cli(
        &etcd,
        prefix,
        &["put", &write_file(&dir, "base.json", &redirect_to("/base"))],
    );
    converge(&servers, 10, "the base configuration", |s| {
        serves(s, "/base")
    });
    converge(&servers, 10, "every server's key", |s| {
        server_key(&etcd, prefix, s).is_some()
    });

    // No traffic; held 16 s, past the 15 s an unwritten part may be old
    // (the least the gate gives it, whatever --max-silent says): the two
    // servers of the second stage have not written their keys since the
    // base configuration, over 16 s before that stage.
    let new = write_file(&dir, "new.json", &redirect_to("/new"));
    let start = [
        "rollout",
        "start",
        &new,
        "--stages",
        "1,all",
        "--hold",
        "16",
        "--max-silent",
        "2",
    ];
    agent_cli(&etcd, prefix, &start);
    let started = Instant::now();
    loop {
        let r = rollout(&etcd, prefix);
        if r["state"] == "done" {
            break;
        }
        assert_eq!(r["state"], "running", "{r}");
        assert!(
            started.elapsed() < Duration::from_secs(50),
            "the rollout did not end: {r}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    converge(&servers, 10, "the configuration rolled out", |s| {
        serves(s, "/new")
    });
    let history = rollout(&etcd, prefix)["history"].to_string();
    assert!(
        history.contains("stage 1 (3 of 3 servers) started") && history.contains("done"),
        "{history}"
    );
}

#[test]
fn a_restarted_nginx_gets_its_kill_switches_again_and_a_dying_worker_fails_a_gate() {
    let mut scenario = Scenario::start("three servers serve a configuration with a module killed");
    let etcd = Etcd::start(1);
    let prefix = "/graft/fleet-c";
    let mut servers = start_servers(&etcd, prefix, &redirect_to("/local"));
    let dir = servers[0].nginx.prefix.clone();
    agent_cli(
        &etcd,
        prefix,
        &["put", &write_file(&dir, "base.json", &redirect_to("/base"))],
    );
    agent_cli(&etcd, prefix, &["kill", "redirects"]);
    converge(&servers, 10, "the configuration and kill switch", |s| {
        serves(s, "/base") && killed(s)
    });

    scenario
        .part("nginx started again serves the last configuration and gets its kill switch again");
    // The agent wrote the configuration to its graft file, and kills the
    // kill switch again (shared memory went with the old nginx).
    servers[1].nginx.restart();
    assert_eq!(location(&servers[1]), "/base");
    converge(
        &servers[1..2],
        10,
        "the kill switch after a restart",
        killed,
    );

    scenario.part("a rollout whose first server loses a worker fails its gate");
    agent_cli(&etcd, prefix, &["revive", "redirects"]);
    converge(&servers, 10, "the module revived", |s| !killed(s));
    let new = write_file(&dir, "new.json", &redirect_to("/new"));
    agent_cli(&etcd, prefix, &["rollout", "start", &new, "--hold", "30"]);
    converge(&servers[0..1], 10, "the first stage", |s| serves(s, "/new"));
    let worker = servers[0].nginx.worker_pids()[0];
    assert!(Command::new("kill")
        .args(["-KILL", &worker.to_string()])
        .status()
        .unwrap()
        .success());
    let r = rolled_back(&etcd, prefix, 15);
    assert_eq!(
        r["reason"], "server s0: 1 worker processes restarted, over 0",
        "{r}"
    );
    converge(&servers, 10, "the rollback", |s| serves(s, "/base"));

    scenario.part("an nginx started again while it serves a rollout fails its gates");
    // Its counts started again from zero.
    agent_cli(&etcd, prefix, &["rollout", "start", &new, "--hold", "30"]);
    converge(&servers[0..1], 10, "the first stage", |s| serves(s, "/new"));
    servers[0].nginx.restart();
    let r = rolled_back(&etcd, prefix, 15);
    assert_eq!(
        r["reason"], "server s0: nginx started again while serving the rollout",
        "{r}"
    );
    converge(&servers, 10, "the rollback", |s| serves(s, "/base"));

    scenario.part("a hung nginx on the first server fails its silence gate");
    // Stopped by a signal: its agent cannot read its health.
    let start = [
        "rollout",
        "start",
        &new,
        "--hold",
        "30",
        "--max-silent",
        "2",
    ];
    agent_cli(&etcd, prefix, &start);
    converge(&servers[0..1], 10, "the first stage", |s| serves(s, "/new"));
    let hung = signal(&servers[0].nginx, "-STOP");
    let r = rolled_back(&etcd, prefix, 40);
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("server s0: its nginx has not answered for ")
            && reason.ends_with(", over 2 s"),
        "{r}"
    );
    for pid in hung {
        Command::new("kill")
            .args(["-CONT", &pid.to_string()])
            .status()
            .unwrap();
    }
    converge(&servers, 15, "the rollback", |s| serves(s, "/base"));

    scenario.part("the first server's agent stopped: its key goes, the rollout is reverted");
    // Its key goes with its lease, the other agents cannot read its
    // health and roll the rollout back. The agent, started again, takes
    // its server back too.
    agent_cli(&etcd, prefix, &start);
    converge(&servers[0..1], 10, "the first stage", |s| serves(s, "/new"));
    let _ = servers[0].agent.kill();
    let _ = servers[0].agent.wait();
    let r = rolled_back(&etcd, prefix, 40);
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("server s0: has no readable key"), "{r}");
    converge(&servers[1..], 10, "the rollback", |s| serves(s, "/base"));
    servers[0].agent = spawn_agent(&etcd.endpoints(), prefix, &servers[0].nginx, "s0", 1000);
    converge(
        &servers,
        10,
        "the rollback, by the agent started again",
        |s| serves(s, "/base"),
    );

    scenario.part(
        "kill switches thrown while a server's nginx hangs: its key stays, they reach it later",
    );
    // Its agent waits on each call (5 s), longer than the lease of its
    // key (10 s), and the key stays.
    let hung = signal(&servers[2].nginx, "-STOP");
    agent_cli(&etcd, prefix, &["kill", "redirects"]);
    agent_cli(&etcd, prefix, &["kill", "redirects", "--zone", "localhost"]);
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        assert!(
            etcd.get(&format!("{prefix}/servers/s2")).is_some(),
            "the key of a server whose nginx hangs expired"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    for pid in hung {
        Command::new("kill")
            .args(["-CONT", &pid.to_string()])
            .status()
            .unwrap();
    }
    converge(&servers, 20, "the kill switch, once nginx answers", killed);
    agent_cli(
        &etcd,
        prefix,
        &["revive", "redirects", "--zone", "localhost"],
    );

    scenario.part("an agent started again while etcd is down changes nothing");
    // It has read no key yet, and the metrics still name the revision
    // served.
    agent_cli(&etcd, prefix, &["kill", "redirects"]);
    converge(&servers, 10, "the kill switch", killed);
    let revision = |s: &Server| metric(&metrics(s), "graft_fleet_config_revision{}").unwrap();
    let served = revision(&servers[1]);
    assert!(served > 0);
    let contact =
        |s: &Server| metric(&metrics(s), "graft_fleet_etcd_contact_timestamp_seconds{}").unwrap();
    let contacted = contact(&servers[1]);
    assert!(contacted > 0);
    drop(etcd);
    // Stopped as systemd stops it: it says so, and exits.
    assert!(Command::new("kill")
        .args(["-TERM", &servers[1].agent.id().to_string()])
        .status()
        .unwrap()
        .success());
    let exit = servers[1].agent.wait().unwrap();
    let log = |s: &Server| std::fs::read_to_string(s.nginx.prefix.join("agent.log")).unwrap();
    assert!(exit.success(), "{exit:?}\n{}", log(&servers[1]));
    assert!(
        log(&servers[1]).contains("SIGTERM: stopping"),
        "{}",
        log(&servers[1])
    );
    // Its members take the connection and never answer (a listener
    // that never replies, three times over): each try waits them out.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung = format!("http://{}", listener.local_addr().unwrap());
    let endpoints = [hung.as_str(); 3].join(",");
    let logged_before = log(&servers[1]).len();
    let agent = spawn_agent(&endpoints, prefix, &servers[1].nginx, "s1", 2000);
    servers[1].agent = agent;
    let again = &servers[1];
    converge(
        std::slice::from_ref(again),
        10,
        "etcd down after the agent's start",
        |s| metric(&metrics(s), "graft_fleet_etcd_up{}") == Some(0),
    );
    assert_eq!(revision(again), served);
    // When etcd last answered is kept across the agent's restart, and
    // the agent says at once that etcd does not answer it.
    let kept = contact(again);
    assert!(
        kept >= contacted && kept <= contacted + 60,
        "{kept}, {contacted} before"
    );
    converge(
        std::slice::from_ref(again),
        15,
        "etcd unreachable at the agent's start, in its log",
        |s| {
            log(s)[logged_before..]
                .lines()
                .any(|l| l.contains(" WARN ") && l.contains("etcd does not answer"))
        },
    );
    assert!(serves(again, "/base"));
    assert!(killed(again), "an agent that read no key revived a module");

    scenario.part("its nginx started again too, etcd still down, gets its kill switches again");
    // A server rebooted in an outage: the agent kills the switches it
    // killed before again, without waiting for its tries of etcd's
    // members (6 s a round).
    servers[1].nginx.restart();
    assert!(serves(&servers[1], "/base"));
    converge(
        &servers[1..2],
        3,
        "the kill switch after a restart with etcd down",
        killed,
    );
}

/// A configuration applied by hand through one server's admin API: its
/// agent sees that its nginx serves another configuration than the keys
/// say, says so (its key, its metrics, a warning) and applies the keys'
/// again, with etcd up or down; during a rollout, a member of the stage
/// gets the rollout's back, the others the fleet's.
#[test]
fn a_configuration_applied_by_hand_is_reported_and_replaced_by_the_fleets() {
    let mut scenario = Scenario::start("three servers serve the base configuration, unverified");
    let mut etcd = Etcd::start(1);
    let prefix = "/graft/fleet-e";
    let servers = start_servers(&etcd, prefix, &redirect_to("/local"));
    let dir = servers[0].nginx.prefix.clone();
    agent_cli(
        &etcd,
        prefix,
        &["put", &write_file(&dir, "base.json", &redirect_to("/base"))],
    );
    converge(&servers, 10, "the base configuration", |s| {
        serves(s, "/base")
    });
    let by_hand = |s: &Server, to: &str| {
        let r = s
            .nginx
            .admin_body("POST", "/graft/admin/apply", redirect_to(to).as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
    };
    let repairs = |s: &Server| metric(&metrics(s), "graft_fleet_drift_repairs{}");
    let log = |s: &Server| std::fs::read_to_string(s.nginx.prefix.join("agent.log")).unwrap();
    let warned = |s: &Server| {
        log(s)
            .lines()
            .filter(|l| l.contains(" WARN ") && l.contains("applying the keys' again"))
            .count()
    };
    let base_hash = |s: &Server| {
        let key: serde_json::Value =
            serde_json::from_str(&server_key(&etcd, prefix, s).unwrap()).unwrap();
        key["config"].as_str().unwrap_or_default().to_string()
    };
    converge(&servers, 10, "every server's key", |s| {
        server_key(&etcd, prefix, s).is_some()
    });
    assert!(
        log(&servers[0]).contains("configurations are not verified (no --verify-key)"),
        "{}",
        log(&servers[0])
    );
    assert_eq!(
        metric(&metrics(&servers[0]), "graft_fleet_verify_keys{}"),
        Some(0)
    );
    let base = base_hash(&servers[0]);
    assert_eq!(repairs(&servers[0]), Some(0));

    scenario
        .part("with etcd up, a configuration applied by hand is put back, counted and warned of");
    // Within a few ticks, and the server's key names what its nginx served.
    by_hand(&servers[0], "/hand");
    converge(&servers[0..1], 5, "the fleet's configuration again", |s| {
        serves(s, "/base") && repairs(s) == Some(1)
    });
    assert_eq!(warned(&servers[0]), 1, "{}", log(&servers[0]));
    converge(&servers[0..1], 5, "the drift in the server's key", |s| {
        let key: serde_json::Value =
            serde_json::from_str(&server_key(&etcd, prefix, s).unwrap()).unwrap();
        key["drift"]["repairs"] == 1
            && key["drift"]["served"]
                .as_str()
                .is_some_and(|h| h.len() == 16 && *h != base)
            && key["config"] == base.as_str()
    });
    for s in &servers[1..] {
        assert_eq!(repairs(s), Some(0), "{}", s.name);
    }

    scenario.part("with etcd down, it is put back from the keys last read");
    etcd.stop_member(0);
    converge(&servers[0..1], 10, "etcd down in the metrics", |s| {
        metric(&metrics(s), "graft_fleet_etcd_up{}") == Some(0)
    });
    by_hand(&servers[0], "/hand2");
    converge(
        &servers[0..1],
        5,
        "the fleet's configuration, etcd down",
        |s| serves(s, "/base") && repairs(s) == Some(2),
    );
    etcd.start_member(0);
    etcd.wait_healthy();
    converge(&servers[0..1], 15, "the second repair in the key", |s| {
        server_key(&etcd, prefix, s).is_some_and(|key| key.contains(r#""repairs":2"#))
    });

    scenario.part("during a rollout, its member gets the rollout's back, a server not in the stage the fleet's");
    let new = write_file(&dir, "new.json", &redirect_to("/new"));
    agent_cli(&etcd, prefix, &["rollout", "start", &new, "--hold", "60"]);
    converge(&servers[0..1], 10, "the first stage", |s| serves(s, "/new"));
    by_hand(&servers[0], "/hand3");
    by_hand(&servers[1], "/hand3");
    converge(
        &servers[0..1],
        5,
        "the rollout's configuration again",
        |s| serves(s, "/new") && repairs(s) == Some(3),
    );
    converge(&servers[1..2], 5, "the fleet's configuration again", |s| {
        serves(s, "/base") && repairs(s) == Some(1)
    });
    assert_eq!(rollout(&etcd, prefix)["state"], "running");
    agent_cli(
        &etcd,
        prefix,
        &["rollout", "abort", "--reason", "done testing"],
    );
    converge(&servers, 10, "the abort", |s| serves(s, "/base"));
    for s in &servers {
        s.nginx.assert_clean_log(&[]);
    }
}

/// What a server's key says of the configuration its agent does not
/// apply for its signature.
fn unverified(etcd: &Etcd, prefix: &str, server: &Server) -> Option<String> {
    let key: serde_json::Value = serde_json::from_str(&server_key(etcd, prefix, server)?).ok()?;
    key["unverified"]["reason"].as_str().map(str::to_string)
}

#[test]
fn agents_with_operator_keys_apply_only_signed_configurations() {
    let mut scenario =
        Scenario::start("two servers with the operator's key serve a signed configuration");
    let etcd = Etcd::start(1);
    let prefix = "/graft/fleet-signed";
    let dir = tests_dir().join(format!("keys-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let op = dir.join("operator");
    let out = agent_cli(&etcd, prefix, &["keygen", op.to_str().unwrap()]);
    assert!(out.contains("operator.key"), "{out}");
    let other = dir.join("other");
    agent_cli(&etcd, prefix, &["keygen", other.to_str().unwrap()]);
    let (op_key, op_pub) = (
        op.with_extension("key").to_str().unwrap().to_string(),
        op.with_extension("pub").to_str().unwrap().to_string(),
    );
    let other_key = other.with_extension("key").to_str().unwrap().to_string();
    let servers: Vec<Server> = (0..2)
        .map(|i| {
            let nginx = Nginx::start_workers(&redirect_to("/local"), 2);
            let name = format!("s{i}");
            let agent = spawn_agent_with(
                &etcd.endpoints(),
                prefix,
                &nginx,
                &name,
                1000,
                &[],
                &["--verify-key", &op_pub],
            );
            Server { name, nginx, agent }
        })
        .collect();
    let file = |name: &str, to: &str| write_file(&dir, name, &redirect_to(to));
    agent_cli(
        &etcd,
        prefix,
        &["put", "--key", &op_key, &file("base.json", "/base")],
    );
    converge(&servers, 10, "the signed configuration", |s| {
        serves(s, "/base")
    });
    let sig = etcd.get(&format!("{prefix}/config.sig")).unwrap();
    assert_eq!(sig.len(), 128, "{sig}");
    for s in &servers {
        assert_eq!(metric(&metrics(s), "graft_fleet_verify_keys{}"), Some(1));
        assert_eq!(
            metric(&metrics(s), "graft_fleet_config_unverified{}"),
            Some(0)
        );
    }

    scenario.part(
        "a configuration unsigned, signed by another key or for another text changes nothing",
    );
    // Written to etcd by a writer without the key: every server says why.
    let evil = redirect_to("/evil");
    let config_key = format!("{prefix}/config");
    let sig_key = format!("{prefix}/config.sig");
    let refused_serving = |what: &str, reason: &str, to: &str| {
        converge(&servers, 10, what, |s| {
            unverified(&etcd, prefix, s).is_some_and(|r| r.contains(reason))
                && metric(&metrics(s), "graft_fleet_config_unverified{}") == Some(1)
        });
        std::thread::sleep(Duration::from_millis(600));
        assert_unchanged(&servers, to, what);
    };
    let refused = |what: &str, reason: &str| refused_serving(what, reason, "/base");
    assert!(etcd.etcdctl(&["del", &sig_key]).status.success());
    assert!(etcd.etcdctl(&["put", &config_key, &evil]).status.success());
    refused("an unsigned configuration", "it is not signed");
    let by_other = agent_cli(
        &etcd,
        prefix,
        &["sign", "--key", &other_key, &file("evil.json", "/evil")],
    );
    assert!(etcd
        .etcdctl(&["put", &sig_key, by_other.trim()])
        .status
        .success());
    refused("one signed by another key", "none of the 1 operator keys");
    assert!(etcd.etcdctl(&["put", &sig_key, &sig]).status.success());
    refused("another text's signature", "none of the 1 operator keys");
    let log = |s: &Server| std::fs::read_to_string(s.nginx.prefix.join("agent.log")).unwrap();
    assert!(
        log(&servers[0])
            .lines()
            .any(|l| l.contains(" WARN ") && l.contains("not applying the config configuration")),
        "{}",
        log(&servers[0])
    );

    scenario.part("signed with the operator's key by graft-agent sign, it is applied");
    // As etcdctl writes it.
    let by_operator = agent_cli(
        &etcd,
        prefix,
        &["sign", "--key", &op_key, &file("evil.json", "/evil")],
    );
    assert!(etcd
        .etcdctl(&["put", &sig_key, by_operator.trim()])
        .status
        .success());
    converge(&servers, 10, "the configuration signed since", |s| {
        serves(s, "/evil") && unverified(&etcd, prefix, s).is_none()
    });
    agent_cli(
        &etcd,
        prefix,
        &["put", "--key", &op_key, &file("base.json", "/base")],
    );
    converge(&servers, 10, "the base again", |s| serves(s, "/base"));

    scenario.part("an unsigned rollout is reverted, a signed one goes through");
    // The signed one's signature becomes the fleet's.
    let new = file("new.json", "/new");
    agent_cli(&etcd, prefix, &["rollout", "start", &new, "--hold", "1"]);
    let r = rolled_back(&etcd, prefix, 15);
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("the configuration is not applied: it is not signed"),
        "{r}"
    );
    assert_unchanged(&servers, "/base", "an unsigned rollout");
    agent_cli(
        &etcd,
        prefix,
        &["rollout", "start", "--key", &op_key, &new, "--hold", "1"],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while rollout(&etcd, prefix)["state"] != "done" {
        assert!(Instant::now() < deadline, "{}", rollout(&etcd, prefix));
        std::thread::sleep(Duration::from_millis(100));
    }
    converge(&servers, 10, "the signed rollout", |s| serves(s, "/new"));
    assert_eq!(
        etcd.get(&format!("{prefix}/config.sig")),
        etcd.get(&format!("{prefix}/rollout.sig"))
    );
    scenario.part("a put without a key takes the old signature away with it");
    agent_cli(&etcd, prefix, &["put", &file("base.json", "/base")]);
    assert_eq!(etcd.get(&format!("{prefix}/config.sig")), None);
    refused_serving("an unsigned put", "it is not signed", "/new");
    for s in &servers {
        s.nginx.assert_clean_log(&[]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// An etcd member that speaks TLS only and asks its clients for a
/// certificate its CA signed, with etcd's users on.
struct TlsEtcd {
    dir: PathBuf,
    client: u16,
    child: Child,
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl TlsEtcd {
    fn file(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }

    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.client)
    }

    /// A CA, the member's certificate and a client's, made with openssl;
    /// the member started; users `root` and `agent` (role `fleet`, read
    /// and write under `prefix`) made, and etcd's auth enabled.
    fn start(prefix: &str) -> TlsEtcd {
        let dir = tests_dir().join(format!("etcd-tls-{}-{}", std::process::id(), free_port()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let script = r#"set -e
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key ca.key
openssl req -x509 -new -key ca.key -out ca.crt -days 2 -subj /CN=graft-test-ca
for who in server client stranger; do
  key $who.key
  openssl req -new -key $who.key -out $who.csr -subj /CN=graft-$who
done
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > server.ext
printf 'extendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile server.ext 2>/dev/null
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 2 -extfile client.ext 2>/dev/null
# A certificate no CA of the member's signed: its own.
openssl x509 -req -in stranger.csr -signkey stranger.key -out stranger.crt -days 2 -extfile client.ext 2>/dev/null
echo agent-password > agent.password
echo wrong-password > wrong.password
"#;
        let out = Command::new("sh")
            .args(["-c", script])
            .current_dir(&dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let client = free_port();
        let peer = free_port();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let f = |n: &str| dir.join(n).to_str().unwrap().to_string();
        let child = Command::new("etcd")
            .args(["--name", "tls", "--data-dir", &f("data")])
            .args([
                "--listen-client-urls",
                &format!("https://127.0.0.1:{client}"),
            ])
            .args([
                "--advertise-client-urls",
                &format!("https://127.0.0.1:{client}"),
            ])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
            ])
            .args(["--initial-cluster", &format!("tls=http://127.0.0.1:{peer}")])
            .args([
                "--cert-file",
                &f("server.crt"),
                "--key-file",
                &f("server.key"),
            ])
            .args(["--trusted-ca-file", &f("ca.crt"), "--client-cert-auth"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd (Debian's etcd-server) runs");
        let etcd = TlsEtcd { dir, client, child };
        let ctl = |args: &[&str]| {
            Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &etcd.endpoint(), "--command-timeout=3s"])
                .args(["--cacert", &etcd.file("ca.crt")])
                .args([
                    "--cert",
                    &etcd.file("client.crt"),
                    "--key",
                    &etcd.file("client.key"),
                ])
                .args(args)
                .output()
                .unwrap()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ctl(&["endpoint", "health"]).status.success() {
            assert!(Instant::now() < deadline, "etcd over TLS did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        for args in [
            &["user", "add", "root:root-password"][..],
            &["user", "grant-role", "root", "root"],
            &["role", "add", "fleet"],
            &[
                "role",
                "grant-permission",
                "fleet",
                "--prefix=true",
                "readwrite",
                &format!("{prefix}/"),
            ],
            &["user", "add", "agent:agent-password"],
            &["user", "grant-role", "agent", "fleet"],
            &["auth", "enable"],
        ] {
            let out = ctl(args);
            assert!(
                out.status.success(),
                "etcdctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        etcd
    }
}

#[test]
fn an_agent_reaches_etcd_over_tls_only_with_a_certificate_and_a_user() {
    let mut scenario = Scenario::start("an etcd member over TLS with users takes a put with both");
    let prefix = "/graft/fleet-tls";
    let etcd = TlsEtcd::start(prefix);
    let cli = |tls: &[String], args: &[&str]| {
        Command::new(AGENT)
            .args([
                "--etcd",
                &etcd.endpoint(),
                "--prefix",
                prefix,
                "--timeout-ms",
                "3000",
            ])
            .args(tls)
            .args(args)
            .output()
            .unwrap()
    };
    let with = |cert: &str, password: &str| -> Vec<String> {
        [
            "--etcd-ca",
            &etcd.file("ca.crt"),
            "--etcd-cert",
            &etcd.file(&format!("{cert}.crt")),
            "--etcd-key",
            &etcd.file(&format!("{cert}.key")),
            "--etcd-user",
            "agent",
            "--etcd-password-file",
            &etcd.file(password),
        ]
        .map(String::from)
        .to_vec()
    };
    let good = with("client", "agent.password");
    let config = write_file(&etcd.dir, "graft.json", &redirect_to("/tls"));
    let out = cli(&good, &["put", &config]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    scenario.part(
        "with no certificate or a stranger's, a wrong password, no user or no TLS, nothing is read",
    );
    let no_cert: Vec<String> = good.iter().skip(6).cloned().collect();
    let no_cert = [vec!["--etcd-ca".to_string(), etcd.file("ca.crt")], no_cert].concat();
    let no_user: Vec<String> = good[..6].to_vec();
    for (what, tls, why) in [
        ("no client certificate", no_cert, "no etcd member answers"),
        (
            "a stranger's certificate",
            with("stranger", "agent.password"),
            // The member's alert, or its closed connection (TLS 1.3
            // checks a client's certificate after the handshake).
            "no etcd member answers",
        ),
        (
            "a wrong password",
            with("client", "wrong.password"),
            "authentication failed",
        ),
        ("no user", no_user, "permission denied"),
    ] {
        let out = cli(&tls, &["status"]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains(why), "{what}: {said}");
        assert!(
            !out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let plain = Command::new(AGENT)
        .args([
            "--etcd",
            &format!("http://127.0.0.1:{}", etcd.client),
            "--prefix",
            prefix,
        ])
        .args(["--timeout-ms", "2000", "status"])
        .output()
        .unwrap();
    assert!(!plain.status.success());
    let http_with_tls = Command::new(AGENT)
        .args([
            "--etcd",
            &format!("http://127.0.0.1:{}", etcd.client),
            "--prefix",
            prefix,
        ])
        .args(&good)
        .arg("status")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&http_with_tls.stderr).contains("not an https:// URL"));

    scenario.part("an agent with them serves the fleet's configuration and writes its key");
    let nginx = Nginx::start_workers(&redirect_to("/local"), 2);
    let good_args: Vec<&str> = good.iter().map(String::as_str).collect();
    let agent = spawn_agent_with(
        &etcd.endpoint(),
        prefix,
        &nginx,
        "s0",
        3000,
        &good_args,
        &[],
    );
    let server = Server {
        name: "s0".into(),
        nginx,
        agent,
    };
    converge(
        std::slice::from_ref(&server),
        20,
        "the configuration over TLS",
        |s| serves(s, "/tls"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = cli(&good, &["status"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.contains(r#""name":"s0""#) {
            break;
        }
        assert!(Instant::now() < deadline, "no key for s0: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric(&metrics(&server), "graft_fleet_etcd_up{}"), Some(1));
    server.nginx.assert_clean_log(&[]);
}
