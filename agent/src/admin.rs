//! The admin API of the nginx beside the agent (its loopback listener):
//! live apply with the configuration sent as the body, kill switches,
//! fleet reports, and the metrics the health gates read. Blocking calls
//! with timeouts, made off the agent's event loop.
use std::collections::BTreeSet;
use std::io::Read;
use std::time::Duration;

use crate::fleet::Counts;

/// How a call to the admin API went wrong.
#[derive(Debug)]
pub enum AdminError {
    /// nginx answered and refused (a configuration, a report): the reason.
    Refused(String),
    /// nginx could not be reached, did not answer in time, or answered
    /// something unreadable.
    Unreachable(String),
    /// nginx answered with another status (a 500 from a failing call): it
    /// is there, and its other calls may well work.
    Status(String),
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::Refused(why) => write!(f, "refused: {why}"),
            AdminError::Unreachable(why) | AdminError::Status(why) => {
                write!(f, "nginx's admin API: {why}")
            }
        }
    }
}

#[derive(Clone)]
pub struct Admin {
    base: String,
    /// `Authorization: Bearer <token>`, nginx's `graft_admin_token`.
    authorization: String,
    agent: ureq::Agent,
    /// For a live apply, which parses and builds a whole configuration.
    slow: ureq::Agent,
}

/// The most an answer of the admin API may be (the totals are a few
/// kilobytes whatever the configuration; a message, a few hundred bytes).
const MAX_ANSWER_BYTES: u64 = 1 << 20;

impl Admin {
    /// The admin API at `base` (`http://127.0.0.1:8081`), called with
    /// `token` (the text of the file nginx's `graft_admin_token` names).
    pub fn new(base: &str, token: &str) -> Admin {
        let agent = |secs| -> ureq::Agent {
            ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(secs)))
                .http_status_as_error(false)
                .build()
                .into()
        };
        Admin {
            base: base.trim_end_matches('/').to_string(),
            authorization: format!("Bearer {}", token.trim()),
            agent: agent(5),
            slow: agent(120),
        }
    }

    fn call(
        &self,
        agent: &ureq::Agent,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<String, AdminError> {
        let url = format!("{}{path}", self.base);
        let auth = self.authorization.as_str();
        let sent = match (method, body) {
            ("GET", _) => agent.get(&url).header("Authorization", auth).call(),
            (_, Some(body)) => agent
                .post(&url)
                .header("Authorization", auth)
                .header("Content-Type", "application/json")
                .send(body),
            (_, None) => agent.post(&url).header("Authorization", auth).send_empty(),
        };
        let mut response = sent.map_err(|e| AdminError::Unreachable(format!("{url}: {e}")))?;
        let status = response.status().as_u16();
        let mut text = String::new();
        response
            .body_mut()
            .as_reader()
            .take(MAX_ANSWER_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| AdminError::Unreachable(format!("{url}: {e}")))?;
        // A cut answer is never read as a whole one.
        if text.len() as u64 > MAX_ANSWER_BYTES {
            return Err(AdminError::Unreachable(format!(
                "{url}: an answer over {MAX_ANSWER_BYTES} bytes"
            )));
        }
        match status {
            200 => Ok(text),
            400 => Err(AdminError::Refused(text.trim().to_string())),
            s => Err(AdminError::Status(format!(
                "{url}: status {s}: {}",
                text.trim()
            ))),
        }
    }

    /// Applies `text` live in every worker; nginx validates it exactly as
    /// it validates its graft file.
    pub fn apply(&self, text: &[u8]) -> Result<String, AdminError> {
        self.call(&self.slow, "POST", "/graft/admin/apply", Some(text))
            .map(|t| t.trim().to_string())
            .map_err(|e| match e {
                AdminError::Refused(why) => AdminError::Refused(
                    why.trim_start_matches("refused, the running configuration goes on: ")
                        .to_string(),
                ),
                e => e,
            })
    }

    /// Throws (`thrown`) or resets a kill switch.
    pub fn switch(&self, module: &str, zone: Option<&str>, thrown: bool) -> Result<(), AdminError> {
        let action = if thrown { "kill" } else { "revive" };
        let mut path = format!("/graft/admin/{action}?module={}", escape(module));
        if let Some(zone) = zone {
            path.push_str(&format!("&zone={}", escape(zone)));
        }
        self.call(&self.agent, "POST", &path, None).map(drop)
    }

    /// Sends the agent's report (`name=value&...`) for `/graft/metrics`.
    pub fn report(&self, report: &str) -> Result<(), AdminError> {
        self.call(
            &self.agent,
            "POST",
            &format!("/graft/admin/fleet?{report}"),
            None,
        )
        .map(drop)
    }

    /// What the server counted, and which nginx counted it.
    pub fn counts(&self) -> Result<Reading, AdminError> {
        let text = self.call(&self.agent, "GET", "/graft/admin/totals", None)?;
        Ok(parse_metrics(&text))
    }
}

/// Escapes a query value (module and zone names are host names and words,
/// but nothing is assumed).
fn escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// What the agent reads of its nginx's metrics.
#[derive(Clone, Debug, Default)]
pub struct Reading {
    pub counts: Counts,
    /// Whether its nginx has had a report from an agent since it started
    /// (a restarted nginx has not: its kill switches and live
    /// configuration are to be given again).
    pub reported: bool,
    /// When its nginx started (`graft_start_time_seconds`): a restart
    /// changes it.
    pub started: Option<u64>,
    /// The kill switches its nginx has thrown, (module, zone), as
    /// `graft_kill_switch` says (None from an nginx that does not say).
    pub kills: Option<BTreeSet<(String, Option<String>)>>,
    /// The hash of the configuration its nginx serves
    /// (`graft_configuration_info{hash}`; None from an nginx that does
    /// not say).
    pub served: Option<String>,
}

/// A label's value in a series (`zone` of `x{zone="a",module="b"}`).
fn label<'s>(series: &'s str, name: &str) -> Option<&'s str> {
    series
        .split(&format!("{name}=\""))
        .nth(1)
        .and_then(|rest| rest.split('"').next())
}

/// The counts the gates read from a Prometheus text of graft's metrics.
pub fn parse_metrics(text: &str) -> Reading {
    let mut counts = Counts::default();
    let mut reported = false;
    let mut started = None;
    let mut kills = None;
    let mut served = None;
    let (mut starts, mut restarts) = (None, None);
    for line in text.lines() {
        if line.starts_with("# TYPE graft_kill_switch ") {
            kills.get_or_insert_with(BTreeSet::new);
        }
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if name == "graft_start_time_seconds" {
            started = Some((value * 1000.0).round() as u64);
            continue;
        }
        if name == "graft_configuration_info" {
            served = label(series, "hash").map(str::to_string);
            continue;
        }
        if name == "graft_kill_switch" {
            if let Some(module) = label(series, "module").filter(|_| value != 0.0) {
                let zone = label(series, "zone").map(str::to_string);
                kills
                    .get_or_insert_with(BTreeSet::new)
                    .insert((module.to_string(), zone));
            }
            continue;
        }
        let value = value as u64;
        match name {
            "graft_requests_total" => {
                counts.steps += value;
                match label(series, "path") {
                    Some("fallback") | Some("failed") => counts.fallback += value,
                    Some("shadow_match") => counts.shadow_match += value,
                    Some("shadow_diff") => counts.shadow_diff += value,
                    _ => {}
                }
            }
            "graft_configuration_refused_total" => counts.refused = value,
            "graft_worker_starts_total" => starts = Some(value),
            "graft_worker_restarts_total" => restarts = Some(value),
            "graft_fleet_report_timestamp_seconds" => reported = true,
            _ => {}
        }
    }
    // Workers started again after one died; from an nginx that does not
    // tell them apart, every start (a reload's among them).
    counts.worker_starts = restarts.or(starts).unwrap_or_default();
    Reading {
        counts,
        reported,
        started,
        kills,
        served,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gates_read_requests_by_path_refusals_and_worker_starts() {
        let text = r#"# HELP graft_requests Requests
# TYPE graft_requests counter
graft_requests_total{zone="a",module="waf",path="rust"} 90
graft_requests_total{zone="a",module="waf",path="fallback"} 4
graft_requests_total{zone="a",module="waf",path="failed"} 1
graft_requests_total{zone="b",module="probe",path="shadow_match"} 3
graft_requests_total{zone="b",module="probe",path="shadow_diff"} 2
graft_configuration_refused_total{} 7
graft_worker_starts_total{} 4
"#;
        let Reading {
            counts: c,
            reported,
            started,
            kills,
            served,
        } = parse_metrics(text);
        assert_eq!(served, None, "an nginx that does not say");
        assert_eq!(started, None);
        assert_eq!(kills, None, "an nginx that does not say");
        assert_eq!(
            (
                c.steps,
                c.fallback,
                c.shadow_match,
                c.shadow_diff,
                c.refused,
                c.worker_starts
            ),
            (100, 5, 3, 2, 7, 4)
        );
        assert!(!reported);
        let r = parse_metrics(&format!("{text}graft_worker_restarts_total{{}} 1\n"));
        assert_eq!(r.counts.worker_starts, 1, "restarts, not a reload's starts");
        let r = parse_metrics(
            "graft_fleet_report_timestamp_seconds{} 17\ngraft_start_time_seconds{} 1795479897.123\n",
        );
        assert!(r.reported);
        assert_eq!(r.started, Some(1_795_479_897_123));
        let r = parse_metrics("# TYPE graft_kill_switch gauge\n");
        assert_eq!(r.kills, Some(BTreeSet::new()), "none thrown");
        let r = parse_metrics(
            "# TYPE graft_kill_switch gauge\ngraft_kill_switch{module=\"waf\"} 1\ngraft_kill_switch{zone=\"a.com\",module=\"probe\"} 2\n",
        );
        assert_eq!(
            r.kills.unwrap().into_iter().collect::<Vec<_>>(),
            vec![
                ("probe".to_string(), Some("a.com".to_string())),
                ("waf".to_string(), None)
            ]
        );
        let r = parse_metrics("graft_configuration_info{hash=\"0123456789abcdef\"} 1\n");
        assert_eq!(r.served.as_deref(), Some("0123456789abcdef"));
        assert_eq!(escape("shop.example"), "shop.example");
        assert_eq!(escape("a&b c"), "a%26b%20c");
    }
}
