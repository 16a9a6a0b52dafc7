//! A step: one module of a zone in its mode, with its canary, its
//! rollback and its time budget.
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use graft_contract::{
    Changes, ConfigError, Decision, FailurePolicy, Module, RequestView, Response,
};
use serde::Deserialize;

use super::state::Threshold;
use crate::counters::Kill;
use crate::shared::WindowTable;
use crate::{Count, Counters};

/// How a step serves requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The Lua twin only.
    Lua,
    /// The Rust implementation; Lua serves a request Rust declines, fails or panics on.
    Rust,
    /// Both run; Lua's decision is served and the two are compared.
    Shadow,
    /// A sticky share of clients on Rust (as `rust`), the others on Lua.
    Canary,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Lua => "lua",
            Mode::Rust => "rust",
            Mode::Shadow => "shadow",
            Mode::Canary => "canary",
        }
    }
}

/// One module of a zone, in its mode.
pub struct Step {
    pub module_name: &'static str,
    pub mode: Mode,
    pub canary: Option<Box<Canary>>,
    pub rollback: Option<Box<Rollback>>,
    /// How long one Rust call may take, and when too many calls over it
    /// send the step back to Lua.
    pub budget: Option<Box<Budget>>,
    /// What the step does with a request it cannot decide.
    pub on_failure: FailurePolicy,
    pub module: Box<dyn Module>,
    pub counters: Counters,
    /// Windowed counters every worker shares, for the rollback.
    pub(super) windows: OnceLock<&'static WindowTable<'static>>,
    /// The window keys of its rollback and its budget's threshold start
    /// with this (empty without either).
    pub(super) window_key: Box<[u8]>,
}

/// When to send a step back to Lua by itself: more than `max_rate` of the
/// requests it saw in the last `window` seconds went wrong (a fallback in
/// `rust` or `canary`, a difference in `shadow`), once at least
/// `min_requests` were seen.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    pub max_rate: f64,
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    #[serde(default = "default_window")]
    pub window: u32,
}

/// A time budget for one call of the step's Rust side, in microseconds
/// (`us`). A call over it is counted (`over_budget`) and logged, and is
/// still served: the budget judges the step, not the request. With
/// `max_rate`, the step rolls itself back to Lua when more than that share
/// of its Rust calls in the last `window` seconds went over it, once at
/// least `min_requests` calls were made.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub us: u64,
    #[serde(default)]
    pub max_rate: Option<f64>,
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    #[serde(default = "default_window")]
    pub window: u32,
}

/// The longest budget a step may have: ten seconds.
pub const MAX_BUDGET_US: u64 = 10_000_000;

impl Rollback {
    /// The share of requests gone wrong that kills the step's switch.
    pub(crate) fn threshold(&self) -> Threshold {
        Threshold {
            max_rate: self.max_rate,
            min_events: self.min_requests,
            window: self.window,
            keys: Threshold::ROLLBACK_KEYS,
        }
    }
}

impl Budget {
    /// The share of calls over the budget that kills the step's switch,
    /// with a `max_rate`.
    pub(crate) fn threshold(&self) -> Option<Threshold> {
        Some(Threshold {
            max_rate: self.max_rate?,
            min_events: self.min_requests,
            window: self.window,
            keys: Threshold::BUDGET_KEYS,
        })
    }

    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_BUDGET_US).contains(&self.us) {
            return Err(ConfigError::new(
                "budget.us",
                format!("{} is not a time from 1 to {MAX_BUDGET_US} µs", self.us),
            ));
        }
        // A share of 1 could never be crossed: no more calls go over the
        // budget than are made.
        if self.max_rate.is_some_and(|r| !(0.0..1.0).contains(&r)) {
            return Err(ConfigError::new(
                "budget.max_rate",
                "is a share from 0 up to (not including) 1",
            ));
        }
        if self.window == 0 || self.window > 86_400 {
            return Err(ConfigError::new(
                "budget.window",
                "is seconds from 1 to 86400",
            ));
        }
        Ok(())
    }
}

/// A Rust call that went over its step's budget: the budget, and when
/// the call sent the step back to Lua, why (`Ok`) or why it could not
/// (`Err`).
#[derive(Debug, PartialEq)]
pub struct OverBudget {
    pub budget_us: u64,
    pub rollback: Option<Result<String, String>>,
}

fn default_min_requests() -> u64 {
    100
}

fn default_window() -> u32 {
    60
}

impl Step {
    /// Counts what served a request at this step and, with a rollback
    /// configured, kills the step's kill switch when the share that went
    /// wrong crosses it. Returns the reason when it did (`Ok`), or why the
    /// switch could not be killed (`Err`: the step goes on in its mode).
    pub fn record(&self, what: Count, now_secs: u64) -> Option<Result<String, String>> {
        self.counters.add(what);
        let rollback = self.rollback.as_ref()?;
        let windows = self.windows.get()?;
        let bad = matches!(what, Count::Fallback | Count::ShadowDiff);
        if !bad && !matches!(what, Count::Rust | Count::ShadowMatch) {
            return None;
        }
        let threshold = rollback.threshold();
        let tally = threshold.count(windows, &self.window_key, bad, now_secs);
        if !tally.crossed {
            return None;
        }
        Threshold::kill(&self.counters, || {
            format!(
                "{} of {} requests went wrong in {} s, over {}%",
                tally.bad,
                tally.events,
                rollback.window,
                rollback.max_rate * 100.0
            )
        })
    }

    /// Judges one Rust call's time against the step's budget (nothing to
    /// do without one): a call over it is counted; with a threshold, every
    /// call is counted in the budget's window and the step's kill switch is
    /// killed when the share over it crosses the threshold.
    pub fn check_budget(&self, nanos: u64, now_secs: u64) -> Option<OverBudget> {
        let budget = self.budget.as_ref()?;
        let over = nanos > budget.us.saturating_mul(1000);
        if over {
            self.counters.add(Count::OverBudget);
        }
        let rollback = match (budget.threshold(), self.windows.get()) {
            (Some(threshold), Some(windows)) => {
                let tally = threshold.count(windows, &self.window_key, over, now_secs);
                if over && tally.crossed {
                    Threshold::kill(&self.counters, || {
                        format!(
                            "{} of {} calls went over its time budget of {} µs in {} s, over {}%",
                            tally.bad,
                            tally.events,
                            budget.us,
                            budget.window,
                            threshold.max_rate * 100.0
                        )
                    })
                } else {
                    None
                }
            }
            _ => None,
        };
        over.then_some(OverBudget {
            budget_us: budget.us,
            rollback,
        })
    }

    /// What the step serves for a request it cannot decide, by its
    /// failure policy.
    pub fn failure_decision(&self) -> Decision {
        match self.on_failure {
            FailurePolicy::Continue => Decision::Continue(Changes::default()),
            FailurePolicy::Respond(status) => Decision::Respond(Response {
                status,
                headers: Vec::new(),
                body: Vec::new(),
                log: Vec::new(),
            }),
        }
    }

    /// How this request is served at this step: `Lua`, `Rust` or `Shadow`
    /// (a canary step resolves to `Rust` or `Lua` for the request's client;
    /// a module killed makes it `Lua`).
    pub fn mode_for(&self, req: &dyn RequestView) -> Mode {
        if self.mode != Mode::Lua && self.counters.kill() != Kill::Off {
            return Mode::Lua;
        }
        self.configured_mode_for(req)
    }

    /// How this request is served at this step where no Lua can serve it
    /// (a location with the native pipeline alone): as [`Step::mode_for`],
    /// but an automatic rollback (a time budget's or an error rate's) does
    /// not send the step back to Lua there. With no Lua to go back to, it
    /// would send every request to the step's failure policy (a 503 for an
    /// access control), and a client able to trip the threshold (slow or
    /// big requests) would turn the control into an outage. `true` with
    /// the mode: an automatic rollback is killed and was passed over (the
    /// caller counts and logs it). An operator's kill switch still holds.
    pub fn mode_where_no_lua(&self, req: &dyn RequestView) -> (Mode, bool) {
        match self.counters.kill() {
            Kill::Automatic if self.mode != Mode::Lua && !self.counters.killed_by_hand() => {
                (self.configured_mode_for(req), true)
            }
            _ => (self.mode_for(req), false),
        }
    }

    fn configured_mode_for(&self, req: &dyn RequestView) -> Mode {
        match (&self.mode, &self.canary) {
            (Mode::Canary, Some(c)) if c.picks_rust(req) => Mode::Rust,
            (Mode::Canary, _) => Mode::Lua,
            (mode, _) => *mode,
        }
    }
}

/// A canary's share: the same client (address, or the value of a header)
/// always lands on the same side, in every worker and across reloads.
pub struct Canary {
    pub percent: u8,
    key: StickyKey,
}

enum StickyKey {
    Client,
    Header(Vec<u8>),
}

impl Canary {
    pub(super) fn parse(percent: Option<u8>, sticky: Option<&str>) -> Result<Canary, ConfigError> {
        let percent = percent
            .ok_or_else(|| ConfigError::new("percent", "a canary needs a percent, 0 to 100"))?;
        if percent > 100 {
            return Err(ConfigError::new(
                "percent",
                format!("{percent} is over 100"),
            ));
        }
        let key = match sticky.unwrap_or("client") {
            "client" => StickyKey::Client,
            s => match s.strip_prefix("header:") {
                Some(h) if !h.is_empty() => StickyKey::Header(h.as_bytes().to_vec()),
                _ => {
                    return Err(ConfigError::new(
                        "sticky",
                        "is \"client\" or \"header:<name>\"",
                    ))
                }
            },
        };
        Ok(Canary { percent, key })
    }

    pub fn picks_rust(&self, req: &dyn RequestView) -> bool {
        // DefaultHasher::new() has fixed keys: the same answer everywhere.
        let mut h = DefaultHasher::new();
        let header = match &self.key {
            StickyKey::Header(name) => req.header(name),
            StickyKey::Client => None,
        };
        match header {
            Some(v) => v.hash(&mut h),
            None => req.client_addr().hash(&mut h),
        }
        h.finish() % 100 < u64::from(self.percent)
    }
}
