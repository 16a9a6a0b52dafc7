//! graft-replay: sends a corpus of requests through nginx with the modules
//! of a graft configuration in Lua and in Rust, and shows every difference.
//!
//!     graft-replay --config graft.json [--init init.lua] [--site site.conf]
//!                  [--native] requests.txt [more.txt ...]
//!
//! `--init`: Lua run in init_by_lua before graft loads (a team's
//! `graft.legacy.declare` calls); `--site`: more locations for the main
//! server (a team's own handlers); `--native`: `graft_native on` in
//! `location /` (the native run always has it).
//!
//! Flamingo: the same corpus sent to FL1 (nginx + graft + Lua) and to FL2
//! (graft-edge in front of an FL1 of its own) at once, every response
//! pair compared, first with every module in `lua`, then zone by zone
//! moved to `rust` (`tests/src/flamingo.rs`):
//!
//!     graft-replay --flamingo --config graft.json [--in-flight 256]
//!                  [--capture N] [--ends] requests.txt [more.txt ...]
//!
//! `--in-flight`: how many lanes are sent at once (each request of a lane
//! to both fronts at once); `--capture N`: N requests sent through an FL1
//! with `graft_capture`, and the capture replayed with the files;
//! `--ends`: only the runs with every module in `lua` and in `rust`.
//! graft-edge is `GRAFT_EDGE`, else `target/release/graft-edge`.
//!
//! The request format is described in `tests/src/corpus.rs` (one request a
//! line, tab-separated). Exits 1 when any run differs from the Lua baseline
//! (with `--flamingo`: when any pair of responses differs).
use graft_tests::{corpus, flamingo, replay, Site};

const USAGE: &str = "usage: graft-replay --config graft.json [--init init.lua] [--site site.conf] [--native] requests.txt [more.txt ...]
       graft-replay --flamingo --config graft.json [--in-flight N] [--capture N] [--ends] requests.txt [more.txt ...]";

/// A number after an option.
fn number(what: &str, arg: Option<&String>) -> usize {
    match arg.and_then(|a| a.parse().ok()) {
        Some(n) if n > 0 => n,
        _ => {
            eprintln!("{what} needs a number above 0\n{USAGE}");
            std::process::exit(2)
        }
    }
}

fn read(what: &str, path: Option<&String>) -> String {
    let Some(path) = path else {
        eprintln!("{what} needs a file\n{USAGE}");
        std::process::exit(2);
    };
    std::fs::read_to_string(path).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(2)
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut config = None;
    let mut site = Site::default();
    let mut files = Vec::new();
    let (mut flamingo, mut in_flight, mut capture, mut ends) = (false, 256, 0, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => config = it.next().cloned(),
            "--init" => site.init = read("--init", it.next()),
            "--site" => site.extra = read("--site", it.next()),
            "--native" => site.native = true,
            "--flamingo" => flamingo = true,
            "--in-flight" => in_flight = number("--in-flight", it.next()),
            "--capture" => capture = number("--capture", it.next()),
            "--ends" => ends = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            f => files.push(f.to_string()),
        }
    }
    let (Some(config), false) = (config, files.is_empty()) else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let config: serde_json::Value = match std::fs::read_to_string(&config)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{config}: {e}");
            std::process::exit(2);
        }
    };
    let mut requests = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| {
            eprintln!("{f}: {e}");
            std::process::exit(2)
        });
        requests.extend(corpus::parse(&text).unwrap_or_else(|e| {
            eprintln!("{f}: {e}");
            std::process::exit(2)
        }));
    }
    if flamingo {
        run_flamingo(&config, requests, in_flight, capture, ends);
    }
    eprintln!("{} requests", requests.len());
    let report = replay::replay(&config, &requests, &site, &mut |run| {
        eprintln!("run: {run}")
    });
    print!("{}", report.render(&requests));
    std::process::exit(if report.clean() { 0 } else { 1 });
}

/// `--flamingo`: every run, its table and differences, then the share
/// passed to FL1 run by run; exits 1 on any difference.
fn run_flamingo(
    config: &serde_json::Value,
    mut requests: Vec<corpus::CorpusRequest>,
    in_flight: usize,
    capture: usize,
    ends: bool,
) -> ! {
    if capture > 0 {
        let sample = flamingo::live_sample(config, capture);
        let captured = flamingo::capture(config, &sample).unwrap_or_else(|e| {
            eprintln!("capture: {e}");
            std::process::exit(1)
        });
        eprintln!(
            "capture: {} requests sent through FL1, {} captured",
            sample.len(),
            captured.len()
        );
        requests.extend(captured);
    }
    let lanes = flamingo::lanes(config, &requests);
    eprintln!(
        "{} requests on {} lanes (the longest {}), {in_flight} in flight",
        requests.len(),
        lanes.len(),
        lanes.first().map_or(0, Vec::len)
    );
    let runs = if ends {
        let zones: Vec<String> = config["zones"]
            .as_object()
            .map(|z| z.keys().cloned().collect())
            .unwrap_or_default();
        [
            ("every module in lua", &[][..]),
            ("every module in rust", &zones[..]),
        ]
        .iter()
        .map(|(name, rust)| {
            eprintln!("run: {name}");
            let c = flamingo::with_rust_zones(config, rust);
            flamingo::run(name, &c, rust, &requests, in_flight)
        })
        .collect()
    } else {
        flamingo::flamingo(config, &requests, in_flight, &mut |run| {
            eprintln!("run: {run}")
        })
    };
    for run in &runs {
        print!("{}", run.render(&requests));
    }
    println!("\n## share passed to FL1, run by run\n");
    print!("{}", flamingo::summary(&runs));
    let clean = runs.iter().all(|r| r.different() == 0);
    std::process::exit(if clean { 0 } else { 1 })
}
