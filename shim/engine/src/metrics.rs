//! The counters in Prometheus' text format, for `/graft/metrics`.
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::counters::SERVED;
use crate::{Config, Count, Impl, Step};

type NoLabels = [(&'static str, &'static str); 0];
const NO_LABELS: NoLabels = [];

/// What the Rust side could not do, or did too slowly.
const FAULTS: [Count; 4] = [
    Count::Decline,
    Count::Error,
    Count::Panic,
    Count::OverBudget,
];

/// Every metric family of one configuration, as one collector (not the
/// live-apply `snapshot::Snapshot`).
struct Families(Arc<Config>);

impl std::fmt::Debug for Families {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Families(generation {})", self.0.generation)
    }
}

impl Families {
    /// Every step, with its zone's name.
    fn steps(&self) -> impl Iterator<Item = (&str, &Step)> {
        self.0
            .zones
            .iter()
            .flat_map(|z| z.steps.iter().map(move |s| (z.name.as_str(), s)))
    }

    /// A counter family with one series per step and count in `whats`,
    /// the count's name under `label`.
    fn step_counts(
        &self,
        encoder: &mut DescriptorEncoder,
        (name, help): (&str, &str),
        label: &'static str,
        whats: &[Count],
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (zone, step) in self.steps() {
            for &what in whats {
                let labels = [
                    ("zone", zone),
                    ("module", step.module_name),
                    (label, what.name()),
                ];
                ConstCounter::new(step.counters.get(what))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

impl Families {
    /// Each step's sampled time and sample count, per implementation: its
    /// mean where the module's histogram has the distribution.
    fn step_latency(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, seconds) in [
            (
                "graft_step_latency_seconds",
                "Time one implementation took to decide at a step, over its sampled calls.",
                true,
            ),
            (
                "graft_step_latency_samples",
                "Calls whose time was sampled at a step (one in 32).",
                false,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (zone, step) in self.steps() {
                for imp in [Impl::Lua, Impl::Rust] {
                    let (sum_secs, count) = step.counters.latency(imp);
                    let labels = [
                        ("zone", zone),
                        ("module", step.module_name),
                        ("impl", imp.name()),
                    ];
                    let encoder = family.encode_family(&labels)?;
                    if seconds {
                        ConstCounter::new(sum_secs).encode(encoder)?;
                    } else {
                        ConstCounter::new(count).encode(encoder)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A family of one series with no labels: a counter, or a gauge.
fn single(
    encoder: &mut DescriptorEncoder,
    (name, help): (&str, &str),
    kind: MetricType,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    match kind {
        MetricType::Counter => ConstCounter::new(value).encode(family.encode_family(&NO_LABELS)?),
        _ => ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
            .encode(family.encode_family(&NO_LABELS)?),
    }
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.step_counts(
            &mut encoder,
            (
                "graft_requests",
                "Requests per zone and module, by the path that served them (lua, rust, fallback, shadow_match, shadow_diff; failed: no implementation decided and the step's failure policy served).",
            ),
            "path",
            &SERVED,
        )?;
        self.step_counts(
            &mut encoder,
            (
                "graft_rust_outcomes",
                "Requests on which a module's Rust side declined, returned an error, panicked, or took longer than its step's time budget (over_budget; the call was still served).",
            ),
            "outcome",
            &FAULTS,
        )?;
        self.latency_histograms(&mut encoder)?;
        self.step_latency(&mut encoder)?;
        self.step_budgets(&mut encoder)?;
        self.later_count(
            &mut encoder,
            (
                "graft_response_bodies_untouched",
                "Responses a step with a response-body phase left as they were (not text/html, or compressed), per zone and module (such steps only).",
            ),
            |step| step.module.rewrites_bodies(),
            Count::Untouched,
        )?;
        self.later_count(
            &mut encoder,
            (
                "graft_log_records_dropped",
                "Records a step with a log phase did not write because they were over its module's rate, per zone and module (such steps only).",
            ),
            |step| step.module.logs_requests(),
            Count::Dropped,
        )?;
        self.kill_switches(&mut encoder)?;
        self.bodies_over_limit(&mut encoder)?;
        process_families(&self.0, &mut encoder)
    }
}

impl Families {
    /// Each module's decision time per implementation, summed over its
    /// zones: a histogram.
    fn latency_histograms(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "graft_latency_seconds",
            "Time one implementation of a module took to decide, summed over its zones, sampled one call in 32.",
            None,
            MetricType::Histogram,
        )?;
        for module in self.0.module_names() {
            for imp in [Impl::Lua, Impl::Rust] {
                let l = self.0.module_latency(module, imp);
                let labels = [("module", module), ("impl", imp.name())];
                family
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabels>(l.sum_secs, l.count, &l.buckets, None)?;
            }
        }
        Ok(())
    }

    /// The time budget of each step that has one.
    fn step_budgets(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "graft_step_budget_seconds",
            "The time budget of one Rust call at a step (steps with a budget only): compare with graft_step_latency_seconds_total / graft_step_latency_samples_total.",
            None,
            MetricType::Gauge,
        )?;
        for (zone, step) in self.steps() {
            if let Some(b) = &step.budget {
                let labels = [("zone", zone), ("module", step.module_name)];
                ConstGauge::new(b.us as f64 / 1e6).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    /// A counter family of one count of a later phase (`what`), with one
    /// series per step whose module `has` that phase.
    fn later_count(
        &self,
        encoder: &mut DescriptorEncoder,
        (name, help): (&str, &str),
        has: fn(&Step) -> bool,
        what: Count,
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (zone, step) in self.steps().filter(|(_, s)| has(s)) {
            let labels = [("zone", zone), ("module", step.module_name)];
            ConstCounter::new(step.counters.get(what)).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// Each step's kill switch: off, killed by an operator, or by a rollback.
    fn kill_switches(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "graft_module_killed",
            "1 when an operator's kill switch sends the module back to Lua, 2 when an automatic rollback did, else 0.",
            None,
            MetricType::Gauge,
        )?;
        for (zone, step) in self.steps() {
            let labels = [("zone", zone), ("module", step.module_name)];
            ConstGauge::new(step.counters.kill() as i64).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// The requests over their zone's body limit, per zone that reads bodies.
    fn bodies_over_limit(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let config = &self.0;
        let mut family = encoder.encode_descriptor(
            "graft_request_bodies_over_limit",
            "Requests whose body was longer than their zone's body max_bytes (zones that read bodies only): answered with the zone's status, or inspected as far as max_bytes, by its \"over\".",
            None,
            MetricType::Counter,
        )?;
        for zone in config.zones.iter().filter(|z| z.body.is_some()) {
            let labels = [("zone", zone.name.as_str())];
            ConstCounter::new(config.bodies_over(&zone.name))
                .encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The families of the whole nginx (not of a step): its shared tables,
/// what it refused, its workers, its fleet agent's report, the
/// configuration serving.
fn process_families(
    config: &Config,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    table_families(config, encoder)?;
    refusal_families(config, encoder)?;
    worker_families(config, encoder)?;
    fleet_families(config, encoder)?;
    configuration_families(config, encoder)
}

/// The shared tables' health: counts lost, windows evicted.
fn table_families(config: &Config, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    single(
            encoder,
            (
                "graft_counters_lost",
                "Counts that found no room in graft's shared counter table (it is too small for the configuration).",
            ),
            MetricType::Counter,
            config.counters_lost(),
        )?;
    single(
            encoder,
            (
                "graft_window_evictions",
                "Rate-limit and rollback windows that took over a slot still in use (the shared table is too small for the traffic; an evicted count is carried over, never reset).",
            ),
            MetricType::Counter,
            config.window_evictions(),
        )?;
    Ok(())
}

/// What this nginx refused: admin calls, graft-edge's hand-offs,
/// configurations.
fn refusal_families(
    config: &Config,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "graft_admin_refused",
        "Admin API calls refused since nginx started, by reason: closed (no graft_admin_token), browser (Origin, Sec-Fetch-*, a form's body type), host (not a loopback name), token (none, or a wrong one).",
        None,
        MetricType::Counter,
    )?;
    for reason in crate::admin::Refusal::ALL {
        ConstCounter::new(config.admin_refused(reason))
            .encode(family.encode_family(&[("reason", reason.reason())])?)?;
    }
    let mut family = encoder.encode_descriptor(
        "graft_edge_handoffs",
        "Requests graft-edge passed to this server with a Graft-Edge header, by result: accepted (the steps graft-edge ran are passed), or refused (no_key: no graft_edge_key; malformed, or two headers; key: a MAC not this key's for this request; stale: sent over 60 s from this clock; config: graft-edge ran another configuration), when every step runs here.",
        None,
        MetricType::Counter,
    )?;
    ConstCounter::new(config.edge_handoffs(None))
        .encode(family.encode_family(&[("result", "accepted")])?)?;
    for reason in crate::edge::Refusal::ALL {
        ConstCounter::new(config.edge_handoffs(Some(reason)))
            .encode(family.encode_family(&[("result", reason.reason())])?)?;
    }
    single(
            encoder,
            (
                "graft_configuration_refused",
                "Graft files this nginx refused since it started, on a reload signal its master received or in a live apply (the running configuration went on serving). `nginx -s reload` and systemd's reload check the file first and do not signal a bad one: graft_configuration_file_unapplied shows those.",
            ),
            MetricType::Counter,
            config.configurations_refused(),
        )?;
    if let Some(unapplied) = config.file_unapplied() {
        single(
                encoder,
                (
                    "graft_configuration_file_unapplied",
                    "1 when the graft file on disk is not the configuration serving: a reload or live apply refused it, or none was made since it changed.",
                ),
                MetricType::Gauge,
                u64::from(unapplied),
            )?;
    }
    Ok(())
}

/// Its workers' starts and restarts, and its own start time.
fn worker_families(
    config: &Config,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    single(
            encoder,
            (
                "graft_worker_starts",
                "Worker processes started since nginx started: a reload starts its workers, and so does nginx after a worker died.",
            ),
            MetricType::Counter,
            config.worker_starts(),
        )?;
    single(
        encoder,
        (
            "graft_worker_restarts",
            "Worker processes started again after one died (a reload's new workers are not counted).",
        ),
        MetricType::Counter,
        config.worker_restarts(),
    )?;
    let mut family = encoder.encode_descriptor(
            "graft_start_time_seconds",
            "Unix time this nginx started (its shared memory was first used): a reload keeps it, a restart changes it.",
            None,
            MetricType::Gauge,
        )?;
    ConstGauge::new(config.started_ms() as f64 / 1000.0)
        .encode(family.encode_family(&NO_LABELS)?)?;
    Ok(())
}

/// Its fleet agent's last report, when one came.
fn fleet_families(config: &Config, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    if let Some((reported, fields)) = config.fleet() {
        single(
                encoder,
                (
                    "graft_fleet_report_timestamp_seconds",
                    "Unix time of the last report of this server's fleet agent (graft-agent): an old one means the agent is not running.",
                ),
                MetricType::Gauge,
                reported,
            )?;
        for (name, help, value) in fields {
            if name == "rollout_state" {
                let mut family = encoder.encode_descriptor(
                    "graft_fleet_rollout_state",
                    "The state of the rollout this server last saw: 1 for the state it is in.",
                    None,
                    MetricType::Gauge,
                )?;
                for (i, state) in crate::fleet_report::ROLLOUT_STATES.iter().enumerate() {
                    ConstGauge::new(i64::from(value == i as u64))
                        .encode(family.encode_family(&[("state", *state)])?)?;
                }
                continue;
            }
            let name = match name {
                "etcd_contact" => "graft_fleet_etcd_contact_timestamp_seconds".to_string(),
                n => format!("graft_fleet_{n}"),
            };
            single(encoder, (&name, help), MetricType::Gauge, value)?;
        }
    }
    Ok(())
}

/// The configuration serving: its hash and generation.
fn configuration_families(
    config: &Config,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    // A gauge of 1 with the hash as its label, not an OpenMetrics info:
    // Prometheus's text format (what graft serves) has no info type, and
    // one line it cannot read fails the whole scrape.
    let mut family = encoder.encode_descriptor(
        "graft_configuration_info",
        "The configuration serving, by the hash of its text (the first 16 hex digits of its SHA-256): the name graft-agent gives it in the fleet's keys. Always 1.",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(1).encode(family.encode_family(&[("hash", config.hash.as_str())])?)?;
    single(
        encoder,
        (
            "graft_configuration_generation",
            "The generation of the configuration serving.",
        ),
        MetricType::Gauge,
        config.generation,
    )
}

/// What a fleet agent's health gates read, small whatever the
/// configuration's size: `graft_requests_total` by path summed over every
/// zone and module, and the families of the whole nginx.
struct Totals(Arc<Config>);

impl std::fmt::Debug for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Totals(generation {})", self.0.generation)
    }
}

impl Collector for Totals {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "graft_requests",
            "Requests by the path that served them, summed over every zone and module.",
            None,
            MetricType::Counter,
        )?;
        for &what in &SERVED {
            let sum: u64 = self
                .0
                .zones
                .iter()
                .flat_map(|z| z.steps.iter())
                .map(|s| s.counters.get(what))
                .fold(0, u64::saturating_add);
            ConstCounter::new(sum).encode(family.encode_family(&[("path", what.name())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "graft_kill_switch",
            "The modules killed (1 by an operator, 2 by an automatic rollback): a module's in every zone, or in one zone. Only those killed.",
            None,
            MetricType::Gauge,
        )?;
        for ((module, zone), v) in self.0.switches_killed() {
            let gauge = ConstGauge::new(v as i64);
            match zone {
                Some(zone) => {
                    gauge.encode(family.encode_family(&[("zone", zone), ("module", module)])?)?
                }
                None => gauge.encode(family.encode_family(&[("module", module)])?)?,
            }
        }
        process_families(&self.0, &mut encoder)
    }
}

fn render(collector: Box<dyn Collector>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(collector);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String");
    out
}

/// The totals a fleet agent reads (`GET /graft/admin/totals`), in
/// Prometheus' text format.
pub fn totals_text(config: &Arc<Config>) -> String {
    render(Box::new(Totals(config.clone())))
}

/// The metrics of every zone and step, in Prometheus' text format.
pub fn prometheus_text(config: &Arc<Config>) -> String {
    render(Box::new(Families(config.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn every_step_has_its_series() {
        let config = Arc::new(
            Config::parse(
                Path::new("t.json"),
                br#"{ "zones": { "a.test": { "modules": [ { "module": "probe", "mode": "shadow" } ] } } }"#,
            )
            .unwrap(),
        );
        config.zones[0].steps[0].counters.add(Count::ShadowDiff);
        let text = prometheus_text(&config);
        assert!(
            text.contains(
                r#"graft_requests_total{zone="a.test",module="probe",path="shadow_diff"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"graft_rust_outcomes_total{zone="a.test",module="probe",outcome="panic"} 0"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"graft_step_latency_samples_total{zone="a.test",module="probe",impl="rust"} 0"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"graft_latency_seconds_count{module="probe",impl="lua"} 0"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"graft_latency_seconds_count{zone="#),
            "{text}"
        );
        assert!(text.contains("# TYPE graft_requests counter"), "{text}");
        assert!(text.contains("graft_counters_lost_total{} 0"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn totals_sum_every_step_by_path_and_name_no_zone() {
        let config = Arc::new(
            Config::parse(
                Path::new("t.json"),
                br#"{ "zones": {
                    "a.test": { "modules": [ { "module": "probe", "mode": "shadow" } ] },
                    "b.test": { "modules": [ { "module": "probe", "mode": "shadow" },
                                             { "module": "probe", "mode": "rust" } ] } } }"#,
            )
            .unwrap(),
        );
        config.zones[0].steps[0].counters.add(Count::ShadowDiff);
        config.zones[1].steps[0].counters.add(Count::ShadowDiff);
        config.zones[1].steps[1].counters.add(Count::Rust);
        let text = totals_text(&config);
        assert!(
            text.contains(r#"graft_requests_total{path="shadow_diff"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"graft_requests_total{path="rust"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"graft_requests_total{path="lua"} 0"#),
            "{text}"
        );
        assert!(!text.contains("zone="), "{text}");
        assert!(text.contains("graft_worker_starts_total"), "{text}");
        assert!(text.contains("graft_worker_restarts_total{} 0"), "{text}");
        assert!(text.contains("graft_start_time_seconds"), "{text}");
        // Only the types Prometheus's text format 0.0.4 has: one it cannot
        // read fails the whole scrape.
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let kind = line.rsplit(' ').next().unwrap_or_default();
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
        }
        // The configuration serving, named as graft-agent names it.
        assert_eq!(config.hash.len(), 16);
        assert!(
            text.contains(&format!(
                "graft_configuration_info{{hash=\"{}\"}} 1\n",
                config.hash
            )),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
