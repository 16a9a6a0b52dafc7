//! graft-replay: sends a corpus of requests through nginx with the modules
//! of a graft configuration in Lua and in Rust, and shows every difference.
//!
//!     graft-replay --config graft.json requests.txt [more.txt ...]
//!
//! The request format is described in `tests/src/corpus.rs` (one request a
//! line, tab-separated). Exits 1 when any run differs from the Lua baseline.
use graft_tests::{corpus, replay};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut config = None;
    let mut files = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => config = it.next().cloned(),
            "-h" | "--help" => {
                println!("usage: graft-replay --config graft.json requests.txt [more.txt ...]");
                return;
            }
            f => files.push(f.to_string()),
        }
    }
    let (Some(config), false) = (config, files.is_empty()) else {
        eprintln!("usage: graft-replay --config graft.json requests.txt [more.txt ...]");
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
    let report = replay::replay(&config, &requests, &mut |run| eprintln!("run: {run}"));
    print!("{}", report.render(&requests));
    std::process::exit(if report.clean() { 0 } else { 1 });
}
