//! Flamingo: one corpus sent to FL1 and to FL2 (graft-edge in front of
//! an FL1 of its own) at the same time, many requests in flight, and each
//! pair of responses compared: status, headers and body.
//!
//! A run starts the trio (`edge::Trio`) afresh with one graft file, so
//! that every run begins with empty windows and counters, sends every
//! request to both fronts, compares, and reads from graft-edge's
//! `/graft/metrics` how many requests it passed to FL1, by zone, module
//! and reason (`graft_edge_passed_total`).
//!
//! Requests that can change each other's answer are sent in corpus order
//! on one lane: those of a zone that count in one rate-limit window (the
//! same key of the same limit: a client's address, a header's value), and
//! all those of a zone with a step that keeps rollback windows. Lanes run
//! side by side, `in_flight` at a time; each request of a lane goes to
//! both fronts at once.
mod capture;
mod compare;
mod lanes;
mod wire;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde_json::Value;

pub use capture::{capture, live_sample};
pub use compare::{accepted, explain, observe, ACCEPTED, IGNORED};
pub use lanes::{lanes, zone_of};
use wire::{finish, open};

use crate::corpus::CorpusRequest;
use crate::edge::{Fl1Setup, Trio};
use crate::replay::{with_modes, Observed};
use crate::Nginx;

/// Sends every request to both fronts, lanes side by side, `in_flight`
/// lanes at a time; each request goes to FL1 and FL2 at once.
pub fn send_pairs(
    fl1: u16,
    fl2: u16,
    requests: &[CorpusRequest],
    lanes: &[Vec<usize>],
    in_flight: usize,
) -> Vec<(Observed, Observed)> {
    let seen: Mutex<Vec<Option<(Observed, Observed)>>> = Mutex::new(vec![None; requests.len()]);
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..in_flight.clamp(1, lanes.len().max(1)) {
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn_scoped(s, || loop {
                    let Some(lane) = lanes.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        return;
                    };
                    for &i in lane {
                        let req = &requests[i];
                        let (a, b) = (open(fl1, req), open(fl2, req));
                        let pair = (finish(a, req), finish(b, req));
                        seen.lock().unwrap()[i] = Some(pair);
                    }
                })
                .expect("a sender thread");
        }
    });
    seen.into_inner()
        .unwrap()
        .into_iter()
        .map(|p| p.expect("every request sent"))
        .collect()
}

/// The table's line for requests of a Host no zone serves.
const NO_ZONE: &str = "(no zone)";

/// One series of graft-edge's metrics, by its labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Passed {
    pub zone: String,
    pub module: String,
    pub reason: String,
}

/// The labels and value of every line of `family` in a metrics text.
fn series(text: &str, family: &str) -> Vec<(BTreeMap<String, String>, u64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(family).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let labels = labels
            .split("\",")
            .filter_map(|kv| {
                let (k, v) = kv.split_once("=\"")?;
                Some((k.to_string(), v.trim_end_matches('"').to_string()))
            })
            .collect();
        out.push((labels, value as u64));
    }
    out
}

/// What a run's comparison found.
pub struct Run {
    pub name: String,
    /// The zones whose modules were in `rust` in this run.
    pub rust_zones: Vec<String>,
    /// Per request: its zone, and the two responses (FL1's, FL2's).
    pub zones: Vec<Option<String>>,
    pub pairs: Vec<(Observed, Observed)>,
    /// Per request: the accepted difference its pair is, if any
    /// ([`ACCEPTED`]): left out of the comparison, and counted.
    pub accepted: Vec<Option<&'static str>>,
    /// graft-edge's `graft_edge_requests_total`, by zone.
    pub edge_requests: BTreeMap<String, u64>,
    /// graft-edge's `graft_edge_passed_total`, non-zero series only.
    pub passed: BTreeMap<Passed, u64>,
    /// Lines at `[error]` or worse in the nginx logs, and ERROR lines of
    /// graft-edge's, each with whose it is.
    pub log_errors: Vec<String>,
}

impl Run {
    /// The pairs that differ, the accepted differences left out.
    pub fn differences(&self) -> impl Iterator<Item = (usize, &Observed, &Observed)> {
        self.pairs
            .iter()
            .enumerate()
            .filter(|(i, (a, b))| a != b && self.accepted[*i].is_none())
            .map(|(i, (a, b))| (i, a, b))
    }

    /// The pairs not compared, by accepted difference ([`ACCEPTED`]).
    pub fn not_compared(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for name in self.accepted.iter().flatten() {
            *out.entry(*name).or_default() += 1;
        }
        out
    }

    pub fn different(&self) -> usize {
        self.differences().count()
    }

    /// Requests graft-edge passed to FL1, and requests it took (a Host
    /// no zone serves included on both sides: `zone=""`, reason `zone`).
    pub fn passed_share(&self) -> (u64, u64) {
        (
            self.passed.values().sum::<u64>(),
            self.edge_requests.values().sum(),
        )
    }

    /// Requests graft-edge took for a Host no zone serves.
    fn no_zone(&self) -> u64 {
        self.edge_requests.get("").copied().unwrap_or(0)
    }

    /// Passed to FL1, in the zone, by module and reason.
    pub fn passed_in(&self, zone: &str) -> Vec<(&Passed, u64)> {
        self.passed
            .iter()
            .filter(|(p, _)| p.zone == zone)
            .map(|(p, n)| (p, *n))
            .collect()
    }

    /// The table per zone (requests, equal, different, not compared (an
    /// accepted difference), passed to FL1 and its share), each zone followed by a line per module that passed
    /// requests (by reason), then every difference.
    pub fn render(&self, requests: &[CorpusRequest]) -> String {
        let mut out = format!("\n## {}\n\n", self.name);
        out.push_str("| zone / module | requests | equal | different | not compared | passed to FL1 | share passed | by reason |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---|\n");
        let mut zones: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
        for ((z, (a, b)), skipped) in self.zones.iter().zip(&self.pairs).zip(&self.accepted) {
            let e = zones.entry(z.as_deref().unwrap_or(NO_ZONE)).or_default();
            e.0 += 1;
            e.1 += usize::from(a == b);
            e.2 += usize::from(skipped.is_some());
        }
        for (zone, (n, equal, skipped)) in &zones {
            let (passed, total) = if *zone == NO_ZONE {
                (self.no_zone(), self.no_zone())
            } else {
                (
                    self.passed_in(zone).iter().map(|(_, n)| n).sum(),
                    self.edge_requests.get(*zone).copied().unwrap_or(0),
                )
            };
            out.push_str(&format!(
                "| {zone}{} | {n} | {equal} | {} | {skipped} | {passed} | {} | |\n",
                if self.rust_zones.iter().any(|z| z == zone) {
                    " (rust)"
                } else {
                    ""
                },
                n - equal - skipped,
                share(passed, total)
            ));
            let mut modules: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for (p, n) in self.passed_in(zone) {
                modules
                    .entry(p.module.as_str())
                    .or_default()
                    .push(format!("{}: {n}", p.reason));
            }
            for (module, reasons) in modules {
                out.push_str(&format!(
                    "| ↳ {module} | | | | | {} | | {} |\n",
                    self.passed_in(zone)
                        .iter()
                        .filter(|(p, _)| p.module == module)
                        .map(|(_, n)| n)
                        .sum::<u64>(),
                    reasons.join(", ")
                ));
            }
        }
        let (passed, total) = self.passed_share();
        out.push_str(&format!(
            "| all | {} | {} | {} | {} | {passed} | {} | |\n",
            self.pairs.len(),
            self.pairs.iter().filter(|(a, b)| a == b).count(),
            self.different(),
            self.accepted.iter().flatten().count(),
            share(passed, total)
        ));
        for (name, n) in self.not_compared() {
            out.push_str(&format!(
                "\nnot compared: {n} (an accepted difference: {name})"
            ));
        }
        for (i, a, b) in self.differences() {
            let mut line = requests[i].to_line();
            if line.len() > 300 {
                line.truncate(line.floor_char_boundary(300));
                line.push('…');
            }
            out.push_str(&format!(
                "\n[{}] request {}: {line}\n{}",
                self.name,
                i + 1,
                explain(a, b)
            ));
        }
        for line in &self.log_errors {
            out.push_str(&format!("\n[{}] {line}\n", self.name));
        }
        out
    }
}

/// `passed` of `total` as a percentage.
pub fn share(passed: u64, total: u64) -> String {
    if total == 0 {
        return "-".to_string();
    }
    format!("{:.1} %", passed as f64 * 100.0 / total as f64)
}

fn nginx_errors(who: &str, nginx: &Nginx) -> Vec<String> {
    nginx
        .error_log()
        .lines()
        .filter(|l| {
            ["[error]", "[crit]", "[alert]", "[emerg]"]
                .iter()
                .any(|t| l.contains(t))
        })
        .map(|l| format!("{who}: {l}"))
        .collect()
}

/// One run: the trio started with `config`, every request sent to both
/// fronts, compared, and graft-edge's counts read.
pub fn run(
    name: &str,
    config: &Value,
    rust_zones: &[String],
    requests: &[CorpusRequest],
    in_flight: usize,
) -> Run {
    let trio = Trio::start(&config.to_string(), &Fl1Setup::default());
    let lanes = lanes(config, requests);
    let pairs = send_pairs(trio.fl1.port, trio.edge.port, requests, &lanes, in_flight);
    let metrics = trio.edge.metrics();
    let edge_requests = series(&metrics, "graft_edge_requests_total")
        .into_iter()
        .map(|(l, n)| (l.get("zone").cloned().unwrap_or_default(), n))
        .collect();
    let passed = series(&metrics, "graft_edge_passed_total")
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(l, n)| {
            let label = |k: &str| l.get(k).cloned().unwrap_or_default();
            (
                Passed {
                    zone: label("zone"),
                    module: label("module"),
                    reason: label("reason"),
                },
                n,
            )
        })
        .collect();
    let mut log_errors = nginx_errors("FL1", &trio.fl1);
    log_errors.extend(nginx_errors("FL1 behind FL2", &trio.behind));
    log_errors.extend(nginx_errors("origin", &trio.origin));
    log_errors.extend(
        trio.edge
            .log()
            .lines()
            .filter(|l| l.contains(" ERROR "))
            .map(|l| format!("FL2: {l}")),
    );
    Run {
        name: name.to_string(),
        rust_zones: rust_zones.to_vec(),
        zones: requests.iter().map(|r| zone_of(config, r)).collect(),
        accepted: requests
            .iter()
            .zip(&pairs)
            .map(|(r, (a, b))| (a != b).then(|| accepted(r, a, b)).flatten())
            .collect(),
        pairs,
        edge_requests,
        passed,
        log_errors,
    }
}

/// The configuration with the modules of `rust_zones` in `rust` and every
/// other module in `lua`.
pub fn with_rust_zones(config: &Value, rust_zones: &[String]) -> Value {
    let mut out = with_modes(config, &|_| "lua");
    let rust = with_modes(config, &|_| "rust");
    for zone in rust_zones {
        out["zones"][zone] = rust["zones"][zone].clone();
    }
    out
}

/// Every run of `make flamingo`: every module in `lua` (graft-edge passes
/// every request to FL1), then the zones moved to `rust` one at a time, in
/// name order, each run keeping the zones moved before it (the last one is
/// every module in `rust`). `progress` hears each run's name.
pub fn flamingo(
    config: &Value,
    requests: &[CorpusRequest],
    in_flight: usize,
    progress: &mut dyn FnMut(&str),
) -> Vec<Run> {
    let zones: Vec<String> = config["zones"]
        .as_object()
        .map(|z| z.keys().cloned().collect())
        .unwrap_or_default();
    let mut runs = Vec::new();
    progress("every module in lua");
    runs.push(run(
        "every module in lua",
        &with_rust_zones(config, &[]),
        &[],
        requests,
        in_flight,
    ));
    for k in 1..=zones.len() {
        let rust = &zones[..k];
        let name = if k == zones.len() {
            "every module in rust".to_string()
        } else {
            format!(
                "{} moved to rust ({k} of {} zones)",
                zones[k - 1],
                zones.len()
            )
        };
        progress(&name);
        runs.push(run(
            &name,
            &with_rust_zones(config, rust),
            rust,
            requests,
            in_flight,
        ));
    }
    runs
}

/// The share passed to FL1, run by run: one line each.
pub fn summary(runs: &[Run]) -> String {
    let mut out = String::from(
        "| run | requests | different | not compared | passed to FL1 | share passed | log errors |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in runs {
        let (passed, total) = r.passed_share();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {passed} of {total} | {} | {} |\n",
            r.name,
            r.pairs.len(),
            r.different(),
            r.accepted.iter().flatten().count(),
            share(passed, total),
            r.log_errors.len()
        ));
    }
    out
}
