//! graft-bench (`make bench`): the request path's cost in each variant,
//! measured with wrk on loopback against one nginx worker.
//!
//! Variants: plain nginx (static content, no modules), the Lua pipeline
//! (every module in `lua`), Lua calling Rust (`rust` through the bridge),
//! the native pipeline (`graft_native`, no Lua), and `shadow`. Each runs in
//! its own nginx; runs alternate between variants, round after round, so
//! that the machine's drift spreads over all of them. Reports requests/s,
//! worker CPU time per request (from /proc), p50 and p99 latency, worker
//! memory with 10,000 zones loaded, the cost of one bridge call, as a
//! markdown table (and ratios to plain nginx and to the Lua pipeline) and
//! an SVG chart, under target/graft-bench/.
//!
//! And how cost grows with WAF rules, bulk redirects and zones, Lua
//! against native (`--only scaling`, or `--only versus` for the modules
//! against nginx's own, measures one part alone); and FL1 and FL2 side by
//! side (`--only side-by-side`): plain nginx proxying, FL1 with its
//! modules in Lua, FL1 native and graft-edge, in front of one origin.
//!
//! Each nginx gets the `graft_shared_memory` its configuration needs
//! (`graft_tests::bench::sizing`), and after each run every variant's
//! counts must show the work it names: no step failed or fell back, every
//! step served by the variant's side (`graft_tests::bench::work`), or the
//! bench stops. `--smoke` runs every variant and every series once, at
//! their smallest and for a second, and fails unless each wrote its
//! figures (`make bench-smoke`; no figure of it is a measurement).
//!
//!     graft-bench [--rounds N] [--seconds S] [--only scaling|versus|streams|side-by-side] [--smoke] [--out DIR]
//!
//! Its files: `server.rs` (the nginx of each variant, and graft-edge),
//! `load.rs` (the request mix, wrk, and a fixed-rate client),
//! `measure.rs` (each part's measure), `side_by_side.rs` (FL1 and FL2
//! side by side: the setups, their measure, table and figures),
//! `report.rs` (the tables, `results.json` and the check of its
//! figures), `svg.rs` (the charts).
use std::path::PathBuf;

use graft_tests::root;
use serde_json::{json, Value};

mod load;
mod measure;
mod report;
mod server;
mod side_by_side;
mod svg;

use crate::load::{medians, wrk_script, Sample};
use crate::measure::{
    graft_modules, measure_load, measure_scaling, measure_streams, measure_versus, measure_zones,
    Scale,
};
use crate::report::{
    machine, missing_figures, results_json, scaling_table, streams_table, table, versus_table,
};
use crate::side_by_side::measure_side_by_side;
use crate::svg::{chart, scaling_chart};

/// How much a run measures: `make bench`'s, or `--smoke`'s, which runs
/// every part once, at its smallest and briefly.
struct Run {
    rounds: usize,
    seconds: u64,
    /// Zones of the memory and start-up measure (10,000).
    zones: usize,
    /// Rounds of each scaling point.
    scaling_rounds: usize,
    /// Each scaling series at its first size only.
    smallest_only: bool,
    /// Requests counted under callgrind, per server.
    callgrind_requests: usize,
    smoke: bool,
}

fn main() {
    let (run, only, out_dir) = parse_args();
    std::fs::create_dir_all(&out_dir).unwrap();
    // One part alone, written to its own file.
    if let Some(part) = only {
        let machine = machine();
        let md = if part == "scaling" {
            let scaling = measure_scaling(&out_dir, &run);
            scaling_chart(&out_dir.join("scaling.svg"), &scaling, &machine);
            scaling_table(&scaling)
        } else if part == "streams" {
            streams_table(&measure_streams(&out_dir, &run))
        } else if part == "side-by-side" {
            let measured = measure_side_by_side(&out_dir, &run);
            let json = json!({ "machine": machine, "smoke": run.smoke, "rounds": run.rounds,
                               "seconds": run.seconds, "side_by_side": side_by_side::to_json(&measured) });
            write_json(&out_dir.join("side-by-side.json"), &json);
            require_figures(&side_by_side::missing(&json["side_by_side"]));
            side_by_side::table(&measured)
        } else {
            versus_table(&measure_versus(&out_dir, &run), run.callgrind_requests)
        };
        let md = format!("Machine: {machine}.\n{md}");
        std::fs::write(out_dir.join(format!("{part}.md")), &md).unwrap();
        println!("{md}");
        return;
    }
    let (rounds, seconds) = (run.rounds, run.seconds);
    let script = wrk_script(&out_dir);
    let machine = machine();
    eprintln!("machine: {machine}");
    let (samples, calls) = measure_load(&script, &run);
    let side = measure_side_by_side(&out_dir, &run);
    let memory = measure_zones(&run);
    let versus = measure_versus(&out_dir, &run);
    let scaling = measure_scaling(&out_dir, &run);
    let streams = measure_streams(&out_dir, &run);
    let medians: Vec<Sample> = samples.iter().map(|s| medians(s)).collect();
    let mut md = format!("Machine: {machine}. wrk -t1 -c16, {rounds} rounds of {seconds} s per variant, alternating; medians.\n\n");
    if run.smoke {
        md.insert_str(
            0,
            "A smoke run (make bench-smoke): every part once, briefly; not a measurement.\n\n",
        );
    }
    md.push_str(&table(&medians, &memory, run.zones));
    md.push_str(&side_by_side::table(&side));
    md.push_str(&versus_table(&versus, run.callgrind_requests));
    md.push_str(&scaling_table(&scaling));
    md.push_str(&streams_table(&streams));
    md.push_str(&format!("\nOne call across the bridge (graft_ffi_run to a module that does nothing) against a plain LuaJIT FFI call into nginx (ngx_http_lua_ffi_get_phase), JIT-compiled loop: `{}`\n", calls.trim()));
    std::fs::write(out_dir.join("results.md"), &md).unwrap();
    let mut json = results_json(&machine, &run, &medians, &memory, &calls);
    json["versus"] = versus
        .iter()
        .map(|v| {
            json!({ "job": v.job.job, "nginx": v.job.nginx,
                    "nginx_own_cpu_us_per_req": v.nginx_us,
                    "graft_modules": graft_modules(&v.job),
                    "graft_own_cpu_us_per_req": v.graft_us,
                    "graft_vs_nginx": v.graft_us / v.nginx_us,
                    "nginx_own_instructions_per_req": v.nginx_instructions,
                    "graft_own_instructions_per_req": v.graft_instructions,
                    "graft_vs_nginx_instructions": v.graft_instructions.zip(v.nginx_instructions).map(|(g, n)| g / n) })
        })
        .collect();
    json["scaling"] = scaling.iter().map(Scale::to_json).collect();
    json["side_by_side"] = side_by_side::to_json(&side);
    json["streams"] = streams
        .iter()
        .map(|s| {
            json!({ "job": s.job, "bytes_per_request": s.bytes,
                    "plain_mb_per_s": s.mb_per_s[0], "native_mb_per_s": s.mb_per_s[1], "lua_mb_per_s": s.mb_per_s[2],
                    "native_own_cpu_us_per_req": s.own_us[0], "lua_own_cpu_us_per_req": s.own_us[1],
                    "native_vs_lua_mb_per_s": s.mb_per_s[1] / s.mb_per_s[2] })
        })
        .collect();
    scaling_chart(&out_dir.join("scaling.svg"), &scaling, &machine);
    write_json(&out_dir.join("results.json"), &json);
    let (rps, cpu): (Vec<f64>, Vec<f64>) =
        medians.iter().map(|m| (m.rps, m.cpu_us_per_req)).unzip();
    chart(&out_dir.join("bench.svg"), &rps, &cpu, &machine);
    println!("{md}");
    println!(
        "written: {}, {}, {} and {}",
        out_dir.join("results.md").display(),
        out_dir.join("results.json").display(),
        out_dir.join("bench.svg").display(),
        out_dir.join("scaling.svg").display()
    );
    // What was written, read back: every variant, job, series point,
    // streaming job and side-by-side setup has its figures.
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("results.json")).unwrap())
            .unwrap();
    require_figures(&missing_figures(&written, &run));
}

fn write_json(path: &std::path::Path, json: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(json).unwrap() + "\n").unwrap();
}

/// Exits with an error naming each figure a run should have written and
/// did not (a part that did not run has none).
fn require_figures(missing: &[String]) {
    if !missing.is_empty() {
        eprintln!("graft-bench: figures missing from results.json:");
        for m in missing {
            eprintln!("  {m}");
        }
        std::process::exit(1);
    }
    eprintln!("every part that ran wrote its figures");
}

/// `--rounds N --seconds S --only PART --smoke --out DIR`: the run, the
/// part alone (if any), and where its files go (`target/graft-bench`).
fn parse_args() -> (Run, Option<String>, PathBuf) {
    let mut args = std::env::args().skip(1);
    let (mut rounds, mut seconds, mut only, mut smoke) = (3usize, 5u64, None, false);
    let mut out = root().join("target/graft-bench");
    let usage = || -> ! {
        eprintln!("usage: graft-bench [--rounds N] [--seconds S] [--only scaling|versus|streams|side-by-side] [--smoke] [--out DIR]");
        std::process::exit(2);
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--only" => {
                only = Some(
                    args.next()
                        .filter(|o| {
                            ["scaling", "versus", "streams", "side-by-side"].contains(&o.as_str())
                        })
                        .unwrap_or_else(|| usage()),
                )
            }
            "--smoke" => smoke = true,
            "--out" => out = args.next().map(PathBuf::from).unwrap_or_else(|| usage()),
            _ => usage(),
        }
    }
    let run = if smoke {
        Run {
            rounds: 1,
            seconds: 1,
            zones: 100,
            scaling_rounds: 1,
            smallest_only: true,
            callgrind_requests: 20,
            smoke,
        }
    } else {
        Run {
            rounds,
            seconds,
            zones: 10_000,
            scaling_rounds: 2,
            smallest_only: false,
            callgrind_requests: 400,
            smoke,
        }
    };
    (run, only, out)
}
