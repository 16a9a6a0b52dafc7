//! The step protocol after the request phase: a step's response-header,
//! response-body and log phases ([`Phase`]). By then the request's route
//! is settled and nothing can take a step over from the server, so the
//! protocol is shorter: the side that serves the phase is decided once a
//! request (the first to ask decides, [`Sides`]), the Rust side runs, and
//! what neither side could do is left undone, counted `failed` and logged
//! (within the failure lines' budget), never skipped in silence.
//!
//! A server keeps one [`Sides`] per request; it and its legacy side (the
//! Lua bridge's filters and log handler) both read the decision from
//! there.
use graft_contract::RequestView;
use smallvec::SmallVec;

use super::{Legacy, Protocol, Server};
use crate::log_budget::LogFamily;
use crate::{Count, Mode, Step};

/// A phase after the request phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `Module::on_response`: changes to the response's headers.
    ResponseHeaders,
    /// `Module::on_response_body`: the response body rewritten as it streams.
    ResponseBody,
    /// `Module::on_log`: a record of the request, after its response.
    Log,
}

impl Phase {
    /// What is left as it was when the phase cannot be served.
    fn left(self) -> &'static str {
        match self {
            Phase::ResponseHeaders => "the response's headers are left as they are",
            Phase::ResponseBody => "the response body passes as it is",
            Phase::Log => "no record written",
        }
    }

    /// The legacy side's handler for the phase, and the Lua calls a
    /// location runs for it, as the log names them.
    fn legacy_handler(self) -> (&'static str, &'static str) {
        match self {
            Phase::ResponseHeaders => ("Lua header filter", "graft.header_filter()"),
            Phase::ResponseBody => (
                "Lua body filter",
                "graft.header_filter() and graft.body_filter()",
            ),
            Phase::Log => ("Lua log handler", "graft.log()"),
        }
    }
}

/// Who serves a later phase of a step for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The Rust side, run by the server.
    Rust,
    /// The legacy side (its mode for the request, a kill switch).
    Legacy,
    /// `shadow`: the legacy side serves, the Rust side runs beside it and
    /// is compared.
    Shadow,
}

impl Side {
    /// Whether the legacy side serves it (and must take it).
    pub fn legacy_serves(self) -> bool {
        self != Side::Rust
    }
}

#[derive(Debug)]
struct Entry {
    zone: usize,
    step: usize,
    phase: Phase,
    side: Side,
    /// The legacy side took it (or it was reported as not taken).
    taken: bool,
}

/// One request's later-phase sides: for each zone, step and phase, the
/// side decided by the first to ask, and whether the legacy side took
/// what it was given.
#[derive(Debug, Default)]
pub struct Sides(SmallVec<[Entry; 2]>);

impl Sides {
    fn entry(&mut self, zone: usize, step: usize, phase: Phase) -> Option<&mut Entry> {
        self.0
            .iter_mut()
            .find(|e| (e.zone, e.step, e.phase) == (zone, step, phase))
    }

    /// The side decided for this step and phase, if any was.
    pub fn get(&self, zone: usize, step: usize, phase: Phase) -> Option<Side> {
        self.0
            .iter()
            .find(|e| (e.zone, e.step, e.phase) == (zone, step, phase))
            .map(|e| e.side)
    }

    /// The side decided for this step and phase, deciding it with
    /// `decide` when nobody has.
    pub fn decide(
        &mut self,
        zone: usize,
        step: usize,
        phase: Phase,
        decide: impl FnOnce() -> Side,
    ) -> Side {
        if let Some(e) = self.entry(zone, step, phase) {
            return e.side;
        }
        let side = decide();
        self.0.push(Entry {
            zone,
            step,
            phase,
            side,
            taken: false,
        });
        side
    }

    /// The legacy side asks for a step and phase decided before: the side,
    /// and when it is the legacy side's to serve, it is taken.
    pub fn legacy_asks(&mut self, zone: usize, step: usize, phase: Phase) -> Option<Side> {
        let e = self.entry(zone, step, phase)?;
        if e.side.legacy_serves() {
            e.taken = true;
        }
        Some(e.side)
    }

    /// Whether some step of `phase` is the legacy side's and not taken yet.
    pub fn any_not_taken(&self, phase: Phase) -> bool {
        self.0
            .iter()
            .any(|e| e.phase == phase && e.side.legacy_serves() && !e.taken)
    }

    /// The steps of `phase` the legacy side was to serve and did not take,
    /// as `(zone, step)`: each is returned once (the server counts it with
    /// [`Protocol::later_not_taken`]).
    pub fn not_taken(&mut self, phase: Phase) -> SmallVec<[(usize, usize); 2]> {
        let mut out = SmallVec::new();
        for e in &mut self.0 {
            if e.phase == phase && e.side.legacy_serves() && !e.taken {
                e.taken = true;
                out.push((e.zone, e.step));
            }
        }
        out
    }
}

impl<S: Server + ?Sized> Protocol<'_, S> {
    /// Who serves a later phase of `step` for this request: its mode, as
    /// the request phase reads it on this server (with no legacy side an
    /// automatic rollback is passed over); `shadow` only where the legacy
    /// side is here to serve it.
    pub fn later_side(&self, step: &Step, req: &dyn RequestView) -> Side {
        match self.mode(step, req) {
            Mode::Rust => Side::Rust,
            Mode::Shadow if self.legacy == Legacy::Here => Side::Shadow,
            _ => Side::Legacy,
        }
    }

    /// The Rust side of `phase` could not serve (an error, a panic, no
    /// shared tables): counted `failed` when it was serving the phase
    /// (`serving`; in `shadow` the legacy side serves, and the engine
    /// counted the Rust side's error), and logged.
    pub fn later_failed(&self, step: &Step, phase: Phase, why: &str, serving: bool) {
        if serving {
            self.record(step, Count::Failed);
        }
        self.log_failure(step, why, phase.left());
    }

    /// A response-body rewriter that failed on the body (an error, a
    /// panic, more output held than `MAX_HELD`): counted `failed` and
    /// logged with what became of the response (`what`: the rest passes as
    /// it is, the response is cut, or a policy's answer goes in its place).
    pub fn body_rewriter_failed(&self, step: &Step, why: &str, what: &str) {
        self.record(step, Count::Failed);
        self.log_failure(step, why, what);
    }

    fn log_failure(&self, step: &Step, why: &str, what: &str) {
        self.server.log(
            LogFamily::Failure,
            format_args!(
                "graft: zone \"{}\" module \"{}\" {why}: {what}",
                self.zone, step.module_name
            ),
        );
    }

    /// A step of `phase` left to the legacy side that no legacy handler
    /// took (the location runs none): counted `failed` and logged.
    pub fn later_not_taken(&self, step: &Step, phase: Phase) {
        self.record(step, Count::Failed);
        let (handler, calls) = phase.legacy_handler();
        self.server.log(
            LogFamily::Failure,
            format_args!(
                "graft: zone \"{}\" module \"{}\" is served by Lua for this request, but no {handler} took it (this location runs no {calls}): {}",
                self.zone,
                step.module_name,
                phase.left()
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_to_ask_decides_and_the_legacy_side_takes_its_own() {
        let mut sides = Sides::default();
        assert_eq!(sides.get(0, 1, Phase::Log), None);
        assert_eq!(
            sides.decide(0, 1, Phase::Log, || Side::Legacy),
            Side::Legacy
        );
        // Decided once: a later asker gets the first decision.
        assert_eq!(sides.decide(0, 1, Phase::Log, || Side::Rust), Side::Legacy);
        sides.decide(0, 2, Phase::Log, || Side::Shadow);
        sides.decide(0, 3, Phase::Log, || Side::Rust);
        sides.decide(0, 1, Phase::ResponseBody, || Side::Legacy);
        assert!(sides.any_not_taken(Phase::Log));
        assert_eq!(sides.legacy_asks(0, 1, Phase::Log), Some(Side::Legacy));
        assert_eq!(sides.legacy_asks(0, 3, Phase::Log), Some(Side::Rust));
        assert_eq!(sides.legacy_asks(0, 4, Phase::Log), None);
        // Step 2 (shadow) was not taken; step 3 is Rust's, never "not taken".
        assert_eq!(sides.not_taken(Phase::Log).as_slice(), &[(0, 2)]);
        // Each is returned once.
        assert!(sides.not_taken(Phase::Log).is_empty());
        assert!(!sides.any_not_taken(Phase::Log));
        assert_eq!(sides.not_taken(Phase::ResponseBody).as_slice(), &[(0, 1)]);
    }
}
