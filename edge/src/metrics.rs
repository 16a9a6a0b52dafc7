//! `/graft/metrics` on graft-edge: the engine's families, by the same names
//! as nginx's (`graft_engine::metrics`), and graft-edge's own:
//!
//! - `graft_edge_requests_total{zone}`: requests graft-edge took, per zone
//!   (`zone=""`: a Host no zone serves, passed to FL1 as sent);
//! - `graft_edge_passed_total{zone,module,reason}`: requests passed to FL1,
//!   by the step they were passed from (its module) and why: `mode` (the
//!   step is not graft-edge's for this request: its mode, a canary's Lua
//!   share, a kill switch), `decline`, `error`, `panic` (its Rust side did
//!   not decide); and `zone=""`, `module=""`, `reason="zone"`:
//!   a Host no zone serves, passed to FL1 as sent;
//! - `graft_edge_refused_total{status}`: requests refused before any step,
//!   as nginx refuses them before any phase, with nginx's status and page
//!   (`request::refused_head`: 400 a method nginx does not read, a head
//!   over the limits, a body framed twice; 405 `TRACE`; 414 a request line
//!   over the limits; and 400 a path or Host nginx refuses);
//! - `graft_edge_fl1_unreachable_total{zone}`: requests FL1 was to take and
//!   could not (each step's failure policy served them; counted as
//!   `failed` in `graft_requests_total` too);
//! - `graft_edge_connections_refused_total`: client connections closed as
//!   they came, `limits.max_connections` being open;
//! - `graft_edge_connections_open`: client connections open now (those
//!   the limit counts; nginx's stub_status `Active connections`);
//! - `graft_edge_access_log_dropped_total`: access log lines dropped when
//!   its writer fell behind (with an access log only).
//!
//! The share passed to FL1 is `sum(rate(graft_edge_passed_total[5m])) /
//! sum(rate(graft_edge_requests_total[5m]))`, requests for a Host no zone
//! serves included on both sides.
use std::collections::BTreeMap;
use std::sync::Arc;

use graft_engine::shared::CounterTable;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::state::{refused_key, Edge, Serving, ZoneKeys, REASONS, REFUSED};

struct Families {
    snap: Arc<Serving>,
    counters: CounterTable<'static>,
    unzoned: (u64, u64),
    /// Access log lines dropped (`None`: no access log).
    log_dropped: Option<u64>,
    connections_refused: u64,
    connections_open: u64,
}

impl std::fmt::Debug for Families {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Families(generation {})", self.snap.config.generation)
    }
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let unzoned = ZoneKeys {
            requests: self.unzoned.0,
            fl1_unreachable: self.unzoned.1,
            passed: Vec::new(),
        };
        self.per_zone(
            &mut encoder,
            (
                "graft_edge_requests",
                "Requests graft-edge took, per zone (zone \"\": a Host no zone serves, passed to FL1 as sent).",
            ),
            &unzoned,
            |keys| keys.requests,
        )?;
        self.passed(&mut encoder, &unzoned)?;
        self.refused(&mut encoder)?;
        self.per_zone(
            &mut encoder,
            (
                "graft_edge_fl1_unreachable",
                "Requests FL1 was to take and could not be sent to (each step's failure policy served them, counted as failed in graft_requests_total).",
            ),
            &unzoned,
            |keys| keys.fl1_unreachable,
        )?;
        self.listener(&mut encoder)
    }
}

impl Families {
    /// A counter family with one series per zone, then one for the Hosts
    /// no zone serves (`zone=""`, `unzoned`), each the count `key` names.
    fn per_zone(
        &self,
        encoder: &mut DescriptorEncoder,
        (name, help): (&str, &str),
        unzoned: &ZoneKeys,
        key: fn(&ZoneKeys) -> u64,
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        let zones = self
            .snap
            .config
            .zones
            .iter()
            .map(|z| z.name.as_str())
            .zip(self.snap.keys.iter())
            .chain(std::iter::once(("", unzoned)));
        for (zone, keys) in zones {
            ConstCounter::new(self.counters.get(key(keys)))
                .encode(family.encode_family(&[("zone", zone)])?)?;
        }
        Ok(())
    }

    /// `graft_edge_passed`: per zone, module and reason, then every
    /// request for a Host no zone serves (`unzoned`), passed as sent.
    fn passed(
        &self,
        encoder: &mut DescriptorEncoder,
        unzoned: &ZoneKeys,
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "graft_edge_passed",
            "Requests graft-edge passed to FL1, per zone, the module of the step FL1 took them from, and why: mode (the step is not graft-edge's for the request: its mode, a canary's Lua share, a kill switch), decline, error, panic (its Rust side did not decide), zone (zone \"\": a Host no zone serves, passed as sent).",
            None,
            MetricType::Counter,
        )?;
        for (zone, keys) in self.snap.config.zones.iter().zip(&self.snap.keys) {
            // A module twice in a zone is one series.
            let mut by_module: BTreeMap<(&str, usize), u64> = BTreeMap::new();
            for (step, passed) in zone.steps.iter().zip(&keys.passed) {
                for (r, key) in passed.iter().enumerate() {
                    *by_module.entry((step.module_name, r)).or_default() += self.counters.get(*key);
                }
            }
            for ((module, r), n) in by_module {
                let labels = [
                    ("zone", zone.name.as_str()),
                    ("module", module),
                    ("reason", REASONS[r]),
                ];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        // Every request for a Host no zone serves goes to FL1 as sent.
        let labels = [("zone", ""), ("module", ""), ("reason", "zone")];
        ConstCounter::new(self.counters.get(unzoned.requests))
            .encode(family.encode_family(&labels)?)
    }

    /// `graft_edge_refused`: the requests refused before any step, by status.
    fn refused(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "graft_edge_refused",
            "Requests graft-edge refused before any step, by status, as nginx refuses them before any phase: 400 (a method nginx does not read, a head over the limits, a body framed twice, a path or Host nginx refuses), 405 (TRACE), 414 (a request line over the limits).",
            None,
            MetricType::Counter,
        )?;
        for status in REFUSED {
            ConstCounter::new(self.counters.get(refused_key(status)))
                .encode(family.encode_family(&[("status", status.to_string())])?)?;
        }
        Ok(())
    }

    /// The listener's own: connections closed over the limit and open
    /// now, and access log lines dropped (with an access log only).
    fn listener(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let family = encoder.encode_descriptor(
            "graft_edge_connections_refused",
            "Client connections closed as they came because limits.max_connections were open.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.connections_refused).encode(family)?;
        let family = encoder.encode_descriptor(
            "graft_edge_connections_open",
            "Client connections open now, as limits.max_connections counts them.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.connections_open as i64).encode(family)?;
        if let Some(dropped) = self.log_dropped {
            let family = encoder.encode_descriptor(
                "graft_edge_access_log_dropped",
                "Access log lines dropped because its writer fell behind (its queue was full): requests were never made to wait for the disk.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(dropped).encode(family)?;
        }
        Ok(())
    }
}

/// The metrics in Prometheus' text format: the engine's, then graft-edge's.
pub fn text(edge: &Edge) -> String {
    let snap = edge.serving();
    let engine = graft_engine::metrics::prometheus_text(&snap.config);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Families {
        snap,
        counters: edge.counters,
        unzoned: (edge.unzoned.requests, edge.unzoned.fl1_unreachable),
        log_dropped: edge.access_log.as_ref().map(|l| l.dropped()),
        connections_refused: edge.connections.refused(),
        connections_open: edge.connections.open_now() as u64,
    }));
    let mut ours = String::new();
    prometheus_client::encoding::text::encode(&mut ours, &registry).expect("writing to a String");
    match engine.strip_suffix("# EOF\n") {
        Some(head) => format!("{head}{ours}"),
        None => format!("{engine}{ours}"),
    }
}
