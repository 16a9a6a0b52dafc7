//! What graft-bench writes: the markdown tables, `results.json`, and
//! the check that every figure is in it.
use std::process::Command;

use serde_json::{json, Value};

use crate::load::Sample;
use crate::measure::{
    graft_modules, series_sizes, versus_jobs, Scale, Stream, VersusResult, Zones, SERIES,
};
use crate::server::VARIANTS;
use crate::Run;

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let nginx = String::from_utf8_lossy(&Command::new("nginx").arg("-v").output().unwrap().stderr)
        .trim()
        .to_string();
    format!(
        "{cpu}, {cores} cores, Linux {}, {nginx}; {}",
        kernel.trim(),
        when()
    )
}

/// The run's date (UTC) and the commit measured, when git knows it.
fn when() -> String {
    let out = |cmd: &mut Command| {
        cmd.output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let date = out(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])).unwrap_or_default();
    match out(Command::new("git")
        .arg("-C")
        .arg(graft_tests::root())
        .args(["rev-parse", "--short", "HEAD"]))
    {
        Some(commit) => format!("{date}, at {commit}"),
        None => date,
    }
}

/// What a run should have written and did not: every variant's req/s, CPU
/// and memory, every job's CPU, every series point's memory and start,
/// every streaming job's MB/s (numbers above zero; a variant that did not
/// run has none).
pub(crate) fn missing_figures(json: &Value, run: &Run) -> Vec<String> {
    let mut missing = Vec::new();
    let mut need = |what: String, v: &Value, positive: bool| {
        let ok = v
            .as_f64()
            .is_some_and(|x| x.is_finite() && (!positive || x > 0.0));
        if !ok {
            missing.push(format!("{what}: {v}"));
        }
    };
    let variants = json["variants"].as_array().map_or(&[][..], |v| v);
    for v in VARIANTS {
        let Some(f) = variants.iter().find(|f| f["variant"] == v.slug()) else {
            need(format!("variant {}", v.name()), &Value::Null, true);
            continue;
        };
        for key in [
            "rps",
            "cpu_us_per_req",
            "p50_ms",
            "p99_ms",
            "rss_kib_zones",
            "start_s_zones",
        ] {
            need(format!("{} {key}", v.name()), &f[key], true);
        }
    }
    need(
        "bridge call ns".into(),
        &json["bridge_call"]["bridge_ns"],
        true,
    );
    let versus = json["versus"].as_array().map_or(&[][..], |v| v);
    if versus.len() != versus_jobs().len() {
        need("versus jobs".into(), &json!(versus.len()), false);
    }
    for j in versus {
        for key in ["nginx_own_cpu_us_per_req", "graft_own_cpu_us_per_req"] {
            need(format!("{} {key}", j["job"]), &j[key], false);
        }
    }
    let scaling = json["scaling"].as_array().map_or(&[][..], |v| v);
    for (series, sizes) in SERIES {
        for &size in series_sizes(sizes, run) {
            let Some(p) = scaling
                .iter()
                .find(|p| p["series"] == series && p["size"] == size)
            else {
                need(format!("{series} {size}"), &Value::Null, true);
                continue;
            };
            for side in ["lua", "native"] {
                need(
                    format!("{series} {size} {side} cpu"),
                    &p[side]["own_cpu_us_per_req"],
                    false,
                );
                need(
                    format!("{series} {size} {side} rss"),
                    &p[side]["rss_kib"],
                    true,
                );
                need(
                    format!("{series} {size} {side} start"),
                    &p[side]["start_s"],
                    true,
                );
            }
        }
    }
    let streams = json["streams"].as_array().map_or(&[][..], |v| v);
    if streams.len() != 2 {
        need("streaming jobs".into(), &json!(streams.len()), false);
    }
    for s in streams {
        for key in ["plain_mb_per_s", "native_mb_per_s", "lua_mb_per_s"] {
            need(format!("{} {key}", s["job"]), &s[key], true);
        }
    }
    missing.extend(crate::side_by_side::missing(&json["side_by_side"]));
    missing
}

/// Every figure of the run, machine-readable: per variant the medians and
/// their ratios to plain nginx and to the Lua pipeline, and graft's own
/// CPU per request above plain nginx.
pub(crate) fn results_json(
    machine: &str,
    run: &Run,
    medians: &[Sample],
    memory: &[Zones],
    calls: &str,
) -> Value {
    let (plain, lua) = (0usize, 1usize);
    let cpu = |i: usize| medians[i].cpu_us_per_req;
    let rps = |i: usize| medians[i].rps;
    let variants: Vec<Value> = VARIANTS
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let Zones {
                rss_kib,
                start_s,
                counter_kib,
                ..
            } = memory[i];
            json!({
                "variant": v.slug(),
                "name": v.name(),
                "rps": rps(i),
                "rps_vs_plain": rps(i) / rps(plain),
                "rps_vs_lua": rps(i) / rps(lua),
                "cpu_us_per_req": cpu(i),
                "cpu_vs_lua": cpu(i) / cpu(lua),
                "own_cpu_us_per_req": cpu(i) - cpu(plain),
                "own_cpu_vs_lua_own": (cpu(i) - cpu(plain)) / (cpu(lua) - cpu(plain)),
                "p50_ms": medians[i].p50_ms,
                "p99_ms": medians[i].p99_ms,
                "rss_kib_zones": rss_kib,
                "rss_vs_lua": rss_kib as f64 / memory[lua].rss_kib as f64,
                "start_s_zones": start_s,
                "graft_shared_memory_kib_zones": counter_kib,
            })
        })
        .collect();
    json!({
        "machine": machine,
        "smoke": run.smoke,
        "rounds": run.rounds,
        "seconds": run.seconds,
        "zones": run.zones,
        "variants": variants,
        "bridge_call": serde_json::from_str::<Value>(calls.trim()).unwrap_or(Value::Null),
    })
}

/// Each module against nginx's own for the job: CPU time (noisy) and
/// instructions (not), each above plain nginx's on the same requests.
pub(crate) fn versus_table(versus: &[VersusResult], callgrind_requests: usize) -> String {
    let mut md = format!("\nEach module alone in the native pipeline against what nginx itself offers for the job, on the same page requests; each side's own cost above plain nginx's on the same requests, as CPU time under wrk (medians) and as instructions per request under callgrind ({callgrind_requests} requests after a warm-up; the count does not move with the machine's load):\n\n| job | nginx | nginx's own µs/req | graft | graft's own µs/req | graft / nginx | nginx's own instructions/req | graft's own instructions/req | graft / nginx |\n|---|---|---:|---|---:|---:|---:|---:|---:|\n");
    for v in versus {
        // Below a quarter of a microsecond, the difference of two medians
        // is this machine's noise, not a cost: no ratio.
        let ratio = if v.nginx_us >= 0.25 {
            format!("{:.2}", v.graft_us / v.nginx_us)
        } else {
            "within noise".into()
        };
        let count = |c: Option<f64>| c.map_or("-".into(), |c| format!("{c:.0}"));
        let count_ratio = match (v.graft_instructions, v.nginx_instructions) {
            (Some(g), Some(n)) if n >= 50.0 => format!("{:.2}", g / n),
            (Some(_), Some(_)) => "nginx's cost is below 50".into(),
            _ => "-".into(),
        };
        md.push_str(&format!(
            "| {} | {} | {:.2} | {} | {:.2} | {ratio} | {} | {} | {count_ratio} |\n",
            v.job.job,
            v.job.nginx,
            v.nginx_us,
            graft_modules(&v.job),
            v.graft_us,
            count(v.nginx_instructions),
            count(v.graft_instructions),
        ));
    }
    md
}

/// The results table: every variant against plain nginx and the Lua pipeline.
pub(crate) fn table(medians: &[Sample], memory: &[Zones], zones: usize) -> String {
    let rps: Vec<f64> = medians.iter().map(|m| m.rps).collect();
    let cpu: Vec<f64> = medians.iter().map(|m| m.cpu_us_per_req).collect();
    let lua = 1usize;
    let mut md = String::new();
    let k = if zones.is_multiple_of(1000) {
        format!("{}k", zones / 1000)
    } else {
        zones.to_string()
    };
    md.push_str(&format!("| variant | req/s | vs plain | vs Lua | CPU µs/req | vs Lua | p50 ms | p99 ms | RSS, {k} zones (MiB) | vs Lua | start, {k} zones (s) |\n"));
    md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (i, v) in VARIANTS.iter().enumerate() {
        let Zones {
            rss_kib: rss,
            start_s: start,
            ..
        } = memory[i];
        md.push_str(&format!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} | {:.1} |\n",
            v.name(),
            rps[i],
            rps[i] / rps[0],
            rps[i] / rps[lua],
            cpu[i],
            cpu[i] / cpu[lua],
            medians[i].p50_ms,
            medians[i].p99_ms,
            rss as f64 / 1024.0,
            rss as f64 / memory[lua].rss_kib as f64,
            start,
        ));
    }
    // What graft itself costs: CPU per request above plain nginx's.
    let own = |i: usize| cpu[i] - cpu[0];
    md.push_str("\ngraft's own CPU per request, above plain nginx's:");
    for (i, v) in VARIANTS.iter().enumerate().skip(1) {
        md.push_str(&format!(
            " {} {:.1} µs ({:.2} of the Lua pipeline's own);",
            v.name(),
            own(i),
            own(i) / own(lua)
        ));
    }
    md.pop();
    md.push_str(".\n");
    md
}

pub(crate) fn scaling_table(scaling: &[Scale]) -> String {
    let mut md = String::from("\nHow cost grows (graft's counter table sized for each configuration: the smallest that graft's load check accepts). CPU per request above plain nginx's on the same requests; RSS of the one worker after every zone served a request; start: from starting nginx to its first answer.\n\n| series | size | Lua µs/req | native µs/req | native / Lua | Lua RSS MiB | native RSS MiB | native / Lua | Lua start s | native start s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for p in scaling {
        // A cost under a quarter of a microsecond is this machine's noise.
        let cpu_ratio = if p.lua.cpu_us >= 0.25 && p.native.cpu_us >= 0.25 {
            format!("{:.2}", p.native.cpu_us / p.lua.cpu_us)
        } else {
            "within noise".into()
        };
        md.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {cpu_ratio} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} |\n",
            p.series,
            p.size,
            p.lua.cpu_us,
            p.native.cpu_us,
            p.lua.rss_kib as f64 / 1024.0,
            p.native.rss_kib as f64 / 1024.0,
            p.native.rss_kib as f64 / p.lua.rss_kib as f64,
            p.lua.start_s,
            p.native.start_s,
        ));
    }
    md
}

pub(crate) fn streams_table(streams: &[Stream]) -> String {
    let mut md = String::from("\nStreaming jobs: MB/s of the bytes graft reads (a request body inspected, a response document rewritten), plain nginx serving the same requests without graft, and graft's own CPU per request above plain nginx's.\n\n| job | bytes | plain MB/s | native MB/s | Lua MB/s | native / Lua | native own µs/req | Lua own µs/req |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for s in streams {
        md.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} |\n",
            s.job,
            s.bytes,
            s.mb_per_s[0],
            s.mb_per_s[1],
            s.mb_per_s[2],
            s.mb_per_s[1] / s.mb_per_s[2],
            s.own_us[0],
            s.own_us[1]
        ));
    }
    md
}
