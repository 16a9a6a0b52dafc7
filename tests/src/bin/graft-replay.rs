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
//! The request format is described in `tests/src/corpus.rs` (one request a
//! line, tab-separated). Exits 1 when any run differs from the Lua baseline.
use graft_tests::{corpus, replay, Site};

const USAGE: &str = "usage: graft-replay --config graft.json [--init init.lua] [--site site.conf] [--native] requests.txt [more.txt ...]";

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
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => config = it.next().cloned(),
            "--init" => site.init = read("--init", it.next()),
            "--site" => site.extra = read("--site", it.next()),
            "--native" => site.native = true,
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
    eprintln!("{} requests", requests.len());
    let report = replay::replay(&config, &requests, &site, &mut |run| {
        eprintln!("run: {run}")
    });
    print!("{}", report.render(&requests));
    std::process::exit(if report.clean() { 0 } else { 1 });
}
