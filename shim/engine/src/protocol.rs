//! The step protocol, written once: what happens at one step of a zone's
//! pipeline for one request, whichever server drives it.
//!
//! mode → run the Rust side (timed, budgeted, a panic caught) → count what
//! served → hand the request to the legacy side, or answer with the step's
//! failure policy → roll the step back when too much went wrong.
//!
//! A server implements [`Server`] (its clock and its log) and drives
//! [`Protocol::step`] for each step in order, applying what comes back.
//! Three servers drive it: nginx's Lua bridge (`graft_ffi_run`), nginx's
//! native phases, and graft-edge. What a step's legacy side is differs
//! between them ([`Legacy`]); what a step does does not. The phases after
//! the request's (response headers, response body, log) follow
//! [`later`].
pub mod later;

use std::cell::Cell;
use std::fmt;

use graft_contract::{Context, FailurePolicy, RequestView, Windows};

use crate::log_budget::LogFamily;
use crate::{run_request_phase, Count, Decided, Impl, Mode, Outcome, Step};

/// What the protocol needs from the server that drives it.
pub trait Server {
    /// Seconds since the epoch, as the server's cached clock says.
    fn now_secs(&self) -> u64;
    /// Writes a per-request line of `family` within the family's budget
    /// (`log_budget`): formatted only when it is written.
    fn log(&self, family: LogFamily, line: fmt::Arguments<'_>);
    /// Writes a change of state (a step rolled itself back) at warn level,
    /// outside any budget: it happens once.
    fn log_change(&self, line: fmt::Arguments<'_>);
}

/// Who serves a step the Rust side cannot serve for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Legacy {
    /// The legacy side serves this very step (nginx's Lua bridge): a step
    /// in `lua` is counted as served by Lua, and `shadow` runs here.
    Here,
    /// The legacy side takes the request from this step on and counts
    /// there (nginx's native phases ahead of a Lua bridge; graft-edge ahead
    /// of FL1).
    Ahead,
    /// Nothing else can serve it: the step's failure policy does (a
    /// location with the native pipeline alone). An automatic rollback is
    /// passed over there: with no Lua to go back to it would turn the
    /// control into its failure policy for everyone.
    None,
}

/// Why a step was handed to the legacy side.
#[derive(Debug, PartialEq, Eq)]
pub enum HandOver {
    /// The step is not Rust's for this request: its mode (`lua`,
    /// `shadow`, a canary's Lua share) or a thrown kill switch.
    Mode,
    /// Its Rust side was asked and did not decide: what it did instead
    /// (declined, failed, panicked; never `Decided`). Counted as a
    /// fallback.
    Rust(Outcome),
}

impl HandOver {
    /// The reason's name in metrics and logs: `mode`, `decline`, `error`
    /// or `panic`.
    pub fn name(&self) -> &'static str {
        match self {
            HandOver::Mode => "mode",
            HandOver::Rust(Outcome::Declined) => "decline",
            HandOver::Rust(Outcome::Panicked(_)) => "panic",
            HandOver::Rust(_) => "error",
        }
    }
}

/// What a step comes to for one request.
#[derive(Debug)]
pub enum Served {
    /// Serve this: the Rust side's decision, or the failure policy's.
    Decision(Decided),
    /// The legacy side takes the request from this step.
    HandOver(HandOver),
    /// `shadow` with the legacy side here: the Rust side's outcome, for it
    /// to compare with its own decision (which it serves and counts).
    Shadow(Outcome),
}

/// Why a step with no legacy side could not decide.
const NO_LUA_AFTER_RUST: &str = "its Rust side did not decide and this location runs no Lua bridge";
const NO_LUA_FOR_MODE: &str =
    "Lua serves it for this request (its mode or a kill switch) and this location runs no Lua bridge";

thread_local! {
    static SAMPLE: Cell<u32> = const { Cell::new(0) };
}

/// One call in this many has its latency measured (on either side).
pub const SAMPLE_EVERY: u32 = 32;

/// The protocol for one zone of one request, on one server.
pub struct Protocol<'a, S: Server + ?Sized> {
    pub server: &'a S,
    pub zone: &'a str,
    pub legacy: Legacy,
    /// Count a Rust decision as `native` too (no Lua in the request's
    /// path).
    pub native: bool,
}

impl<'a, S: Server + ?Sized> Protocol<'a, S> {
    /// The protocol at one step. `fell_back`: this step's Rust side was
    /// already asked for this request and did not decide (and that was
    /// counted), so it is not asked again.
    pub fn step(
        &self,
        step: &Step,
        req: &dyn RequestView,
        windows: &dyn Windows,
        fell_back: bool,
    ) -> Served {
        let mode = self.mode(step, req);
        if fell_back {
            let earlier = Outcome::Errored("it did not decide earlier for this request".into());
            return self.not_decided(step, HandOver::Rust(earlier));
        }
        match mode {
            Mode::Rust => {}
            Mode::Lua if self.legacy == Legacy::Here => {
                self.record(step, Count::Lua);
                return Served::HandOver(HandOver::Mode);
            }
            Mode::Shadow if self.legacy == Legacy::Here => {
                let outcome = self.run(step, req, windows);
                self.log_outcome(step, &outcome);
                return Served::Shadow(outcome);
            }
            _ => return self.not_decided(step, HandOver::Mode),
        }
        let outcome = self.run(step, req, windows);
        self.log_outcome(step, &outcome);
        match outcome {
            Outcome::Decided(d) => {
                self.record(step, Count::Rust);
                if self.native {
                    step.counters.add(Count::Native);
                }
                Served::Decision(d)
            }
            outcome => {
                self.record(step, Count::Fallback);
                self.not_decided(step, HandOver::Rust(outcome))
            }
        }
    }

    /// How the request is served at `step` on this server: with no legacy
    /// side an automatic rollback is passed over (counted by the switch,
    /// logged here).
    fn mode(&self, step: &Step, req: &dyn RequestView) -> Mode {
        if self.legacy != Legacy::None {
            return step.mode_for(req);
        }
        let (mode, passed_over) = step.mode_where_no_lua(req);
        if passed_over && mode == Mode::Rust {
            self.server.log(
                LogFamily::Budget,
                format_args!(
                    "graft: zone \"{}\" module \"{}\" was rolled back to lua, but this location runs no Lua bridge: Rust serves on (revive it, or kill it by hand)",
                    self.zone, step.module_name
                ),
            );
        }
        mode
    }

    /// A step the Rust side does not decide: handed over where a legacy
    /// side follows, else its failure policy serves.
    fn not_decided(&self, step: &Step, why: HandOver) -> Served {
        if self.legacy != Legacy::None {
            return Served::HandOver(why);
        }
        let text = match why {
            HandOver::Mode => NO_LUA_FOR_MODE,
            HandOver::Rust(_) => NO_LUA_AFTER_RUST,
        };
        self.fail(step, text);
        Served::Decision(step.failure_decision().into())
    }

    /// Runs the step's Rust side, timing one call in [`SAMPLE_EVERY`] for
    /// the latency metrics, and every call of a step with a time budget: a
    /// call over it is counted and logged within its family's budget, and
    /// may roll the step back ([`Step::check_budget`]).
    pub fn run(&self, step: &Step, req: &dyn RequestView, windows: &dyn Windows) -> Outcome {
        let now_secs = self.server.now_secs();
        let ctx = Context {
            zone: self.zone,
            now_secs,
            windows,
        };
        let n = SAMPLE.with(|s| {
            let n = s.get().wrapping_add(1);
            s.set(n);
            n
        });
        let sampled = n.is_multiple_of(SAMPLE_EVERY);
        if !sampled && step.budget.is_none() {
            return run_request_phase(step, req, &ctx);
        }
        let started = std::time::Instant::now();
        let outcome = run_request_phase(step, req, &ctx);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if sampled {
            step.counters.observe(Impl::Rust, nanos);
        }
        if let Some(over) = step.check_budget(nanos, now_secs) {
            self.server.log(
                LogFamily::Budget,
                format_args!(
                    "graft: zone \"{}\" module \"{}\" took {} µs, over its time budget of {} µs",
                    self.zone,
                    step.module_name,
                    nanos / 1000,
                    over.budget_us
                ),
            );
            if let Some(result) = over.rollback {
                self.state_change(step, result);
            }
        }
        outcome
    }

    /// Counts what served the request at `step`, and logs an automatic
    /// rollback this request made happen (or could not).
    pub fn record(&self, step: &Step, what: Count) {
        if let Some(result) = step.record(what, self.server.now_secs()) {
            self.state_change(step, result);
        }
    }

    /// Counts a step that could not decide (no side could), logs why
    /// within the failure lines' budget, and returns its policy.
    pub fn fail(&self, step: &Step, why: &str) -> FailurePolicy {
        self.record(step, Count::Failed);
        let policy = step.on_failure;
        let serves = match policy {
            FailurePolicy::Continue => "continues past it".to_string(),
            FailurePolicy::Respond(status) => format!("answers {status}"),
        };
        self.server.log(
            LogFamily::Failure,
            format_args!(
                "graft: zone \"{}\" module \"{}\" could not decide: {why}; its failure policy {serves}",
                self.zone, step.module_name
            ),
        );
        policy
    }

    /// Logs the lines a served decision carries (why a request was
    /// blocked or limited), within the budget of decision lines.
    pub fn log_decision(&self, step: &Step, lines: &[String]) {
        for line in lines {
            self.server.log(
                LogFamily::Decision,
                format_args!(
                    "graft: zone \"{}\" module \"{}\": {line}",
                    self.zone, step.module_name
                ),
            );
        }
    }

    /// Logs a Rust outcome that is not a decision within its family's
    /// budget: a decline at info level, an error or a panic at error level.
    pub fn log_outcome(&self, step: &Step, outcome: &Outcome) {
        let (family, what, detail) = match outcome {
            Outcome::Decided(_) => return,
            Outcome::Declined => (LogFamily::Decline, "declined", ""),
            Outcome::Errored(e) => (LogFamily::Failure, "returned an error: ", e.as_str()),
            Outcome::Panicked(e) => (LogFamily::Failure, "panicked: ", e.as_str()),
        };
        self.server.log(
            family,
            format_args!(
                "graft: zone \"{}\" module \"{}\" {what}{detail}",
                self.zone, step.module_name
            ),
        );
    }

    /// Logs an automatic rollback (`Ok`: once, outside any budget), or why
    /// the kill switch could not be thrown (`Err`: tried again on every bad
    /// request while it fails, so within the failure lines' budget).
    fn state_change(&self, step: &Step, result: Result<String, String>) {
        let (zone, module) = (self.zone, step.module_name);
        match result {
            Ok(line) => self.server.log_change(format_args!(
                "graft: zone \"{zone}\" module \"{module}\" {line}"
            )),
            Err(line) => self.server.log(
                LogFamily::Failure,
                format_args!("graft: zone \"{zone}\" module \"{module}\" {line}"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::path::Path;

    use graft_contract::{Decision, LocalWindows, OwnedRequest};

    use super::*;
    use crate::Config;

    /// A server that keeps its lines, with a fixed clock.
    #[derive(Default)]
    struct Lines(RefCell<Vec<(Option<LogFamily>, String)>>);

    impl Server for Lines {
        fn now_secs(&self) -> u64 {
            1_000
        }
        fn log(&self, family: LogFamily, line: fmt::Arguments<'_>) {
            self.0.borrow_mut().push((Some(family), line.to_string()));
        }
        fn log_change(&self, line: fmt::Arguments<'_>) {
            self.0.borrow_mut().push((None, line.to_string()));
        }
    }

    fn probe(mode: &str, on_failure: &str) -> Config {
        let text = format!(
            r#"{{ "zones": {{ "a.example": {{ "modules": [ {{ "module": "probe", "mode": "{mode}", "on_failure": {on_failure},
                "config": {{ "decline_on": "/decline", "panic_on": "/panic" }} }} ] }} }} }}"#
        );
        Config::parse(Path::new("/etc/graft/graft.json"), text.as_bytes()).unwrap()
    }

    fn served(config: &Config, legacy: Legacy, path: &str, server: &Lines) -> Served {
        let step = &config.zones[0].steps[0];
        let p = Protocol {
            server,
            zone: "a.example",
            legacy,
            native: legacy != Legacy::Here,
        };
        p.step(
            step,
            &OwnedRequest::get("a.example", path),
            &LocalWindows::default(),
            false,
        )
    }

    #[test]
    fn a_rust_decision_is_served_and_counted_wherever_it_runs() {
        for legacy in [Legacy::Here, Legacy::Ahead, Legacy::None] {
            let config = probe("rust", "\"continue\"");
            let server = Lines::default();
            let s = served(&config, legacy, "/x", &server);
            assert!(
                matches!(&s, Served::Decision(d) if matches!(d.decision(), Some(Decision::Respond(_)))),
                "{s:?}"
            );
            let c = &config.zones[0].steps[0].counters;
            assert_eq!(c.get(Count::Rust), 1);
            assert_eq!(c.get(Count::Native), u64::from(legacy != Legacy::Here));
            assert!(server.0.borrow().is_empty());
        }
    }

    #[test]
    fn a_rust_side_that_does_not_decide_goes_to_the_legacy_side_or_the_policy() {
        for (path, kind) in [("/decline", "decline"), ("/panic", "panic")] {
            for legacy in [Legacy::Here, Legacy::Ahead] {
                let config = probe("rust", r#"{ "respond": 503 }"#);
                let server = Lines::default();
                match served(&config, legacy, path, &server) {
                    Served::HandOver(why) => assert_eq!(why.name(), kind),
                    other => panic!("{other:?}"),
                }
                let c = &config.zones[0].steps[0].counters;
                assert_eq!((c.get(Count::Fallback), c.get(Count::Failed)), (1, 0));
            }
            // No legacy side: the failure policy answers, counted and logged.
            let config = probe("rust", r#"{ "respond": 503 }"#);
            let server = Lines::default();
            match served(&config, Legacy::None, path, &server) {
                Served::Decision(d) => match d.into_decision() {
                    Decision::Respond(r) => assert_eq!(r.status, 503),
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            }
            let c = &config.zones[0].steps[0].counters;
            assert_eq!((c.get(Count::Fallback), c.get(Count::Failed)), (1, 1));
            let lines = server.0.borrow();
            assert!(
                lines.iter().any(|(f, l)| *f == Some(LogFamily::Failure)
                    && l.contains("could not decide")
                    && l.contains("answers 503")),
                "{lines:?}"
            );
        }
    }

    #[test]
    fn a_step_in_lua_is_counted_where_lua_serves_it() {
        let config = probe("lua", "\"continue\"");
        let server = Lines::default();
        assert!(matches!(
            served(&config, Legacy::Here, "/x", &server),
            Served::HandOver(HandOver::Mode)
        ));
        assert_eq!(config.zones[0].steps[0].counters.get(Count::Lua), 1);
        // Ahead: the legacy side counts it when it serves.
        assert!(matches!(
            served(&config, Legacy::Ahead, "/x", &server),
            Served::HandOver(HandOver::Mode)
        ));
        assert_eq!(config.zones[0].steps[0].counters.get(Count::Lua), 1);
        // Nowhere to go: the failure policy, never a silent pass.
        assert!(matches!(
            served(&config, Legacy::None, "/x", &server),
            Served::Decision(d) if d.decision().is_none_or(|d| matches!(d, Decision::Continue(_)))
        ));
        assert_eq!(config.zones[0].steps[0].counters.get(Count::Failed), 1);
    }

    #[test]
    fn shadow_runs_rust_for_comparison_only_where_lua_is_here() {
        let config = probe("shadow", "\"continue\"");
        let server = Lines::default();
        assert!(matches!(
            served(&config, Legacy::Here, "/x", &server),
            Served::Shadow(Outcome::Decided(_))
        ));
        assert!(matches!(
            served(&config, Legacy::Ahead, "/x", &server),
            Served::HandOver(HandOver::Mode)
        ));
        let c = &config.zones[0].steps[0].counters;
        assert_eq!((c.get(Count::Rust), c.get(Count::Lua)), (0, 0));
    }
}
