//! Runs a Rust module for one request, so that nothing it does can take
//! the worker down: a panic is caught, counted and reported as an outcome.
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use graft_contract::{
    check_response_ops, BodyRewriter, Context, Decision, HeaderOp, RequestView, ResponseHead,
    ResponseView,
};

use crate::{Count, Step};

/// What the Rust side of one step did with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A decision to serve: continue (with changes) or respond.
    Decided(Decided),
    /// The module said "not mine".
    Declined,
    /// The module returned an error (counted `error`; the request falls
    /// back). Not `failed`: that is a step no side could decide, served by
    /// its failure policy.
    Errored(String),
    /// The module panicked; the message is the panic's.
    Panicked(String),
}

/// A decision to serve, on its way through the step protocol to the
/// server. A continue that changes nothing (what most steps answer on
/// most requests) is known as such once, as it leaves the module: it
/// carries no change lists to drop, is not checked for framing, and the
/// server has nothing to apply. Any other decision goes as it is (boxing
/// it made the moves smaller but cost an allocation on every changed
/// decision: more, measured, than the moves).
#[derive(Debug, PartialEq, Eq)]
pub struct Decided(Option<Decision>);

impl Decided {
    pub fn new(decision: Decision) -> Decided {
        match decision {
            Decision::Continue(changes) if changes.is_empty() => Decided(None),
            decision => Decided(Some(decision)),
        }
    }

    /// A continue with no change: nothing for the server to apply.
    pub fn is_unchanged(&self) -> bool {
        self.0.is_none()
    }

    /// The decision itself (an unchanged continue is made here, with
    /// empty change lists: no allocation).
    pub fn into_decision(self) -> Decision {
        self.0
            .unwrap_or_else(|| Decision::Continue(Default::default()))
    }

    /// The decision, `None` for an unchanged continue.
    pub fn decision(&self) -> Option<&Decision> {
        self.0.as_ref()
    }
}

impl From<Decision> for Decided {
    fn from(decision: Decision) -> Decided {
        Decided::new(decision)
    }
}

thread_local! {
    static IN_MODULE: Cell<bool> = const { Cell::new(false) };
}

/// Keeps the default panic hook quiet for panics inside a module: they are
/// caught and logged through the server's log instead of stderr. Panics
/// elsewhere still reach the previous hook.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !IN_MODULE.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, a module's code, with a panic caught and kept from the
/// default hook (one lookup of the thread's flag for both marks).
fn in_module<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    IN_MODULE.with(|flag| {
        flag.set(true);
        let result = panic::catch_unwind(AssertUnwindSafe(f));
        flag.set(false);
        result
    })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Runs `f` in a module's code: a panic is caught and becomes an error
/// (`Err` with the panic's message, prefixed "panicked: "); an error is
/// the module's. Counts an error or a panic on `step`.
pub fn guarded_module<T>(
    step: &Step,
    f: impl FnOnce() -> Result<T, graft_contract::ModuleError>,
) -> Result<T, String> {
    match in_module(f) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            step.counters.add(Count::Error);
            Err(format!("returned an error: {}", e.message))
        }
        Err(payload) => {
            step.counters.add(Count::Panic);
            Err(format!("panicked: {}", panic_message(payload.as_ref())))
        }
    }
}

/// The response-body phase of `step`'s module for one response: its
/// rewriter, `None` for a response it leaves as it is, or why it failed.
pub fn start_response_body(
    step: &Step,
    head: &ResponseHead<'_>,
) -> Result<Option<Box<dyn BodyRewriter>>, String> {
    guarded_module(step, || Ok(step.module.on_response_body(head)))
}

/// The response-header phase of `step`'s module for one response: its
/// header changes, checked whole (a change of a framing header is the
/// module's error), or why it failed (counted on the step).
pub fn run_response_phase(
    step: &Step,
    req: &dyn RequestView,
    resp: &dyn ResponseView,
    ctx: &Context,
) -> Result<Vec<HeaderOp>, String> {
    let ops = guarded_module(step, || step.module.on_response(req, resp, ctx))?;
    check_response_ops(&ops).map_err(|e| {
        step.counters.add(Count::Error);
        format!("returned an error: its response-header phase {e}")
    })?;
    Ok(ops)
}

/// The log phase of `step`'s module for one request.
pub fn run_log_phase(
    step: &Step,
    req: &dyn RequestView,
    done: &graft_contract::Completed<'_>,
) -> Result<graft_contract::LogOutcome, String> {
    guarded_module(step, || step.module.on_log(req, done))
}

/// Runs the request phase of `step`'s module and counts a decline, error or
/// panic on the step. A decision that breaks HTTP's framing
/// (`Decision::check_framing`) is the step's error. Serving counts (lua, rust, fallback, shadow) are the
/// caller's, who knows which decision was served.
pub fn run_request_phase(step: &Step, req: &dyn RequestView, ctx: &Context) -> Outcome {
    let result = in_module(|| step.module.on_request(req, ctx));
    let outcome = match result {
        Ok(Ok(Decision::Decline)) => Outcome::Declined,
        Ok(Ok(Decision::Continue(changes))) if changes.is_empty() => {
            if changes.holds_nothing() {
                // Nothing was ever allocated in it: its drop would free nothing.
                std::mem::forget(changes);
            }
            Outcome::Decided(Decided(None))
        }
        // A decision that cannot go on the wire as it is fails whole,
        // before any of it is applied.
        Ok(Ok(mut decision)) => match decision.check_framing() {
            Ok(()) => Outcome::Decided(Decided(Some(decision))),
            Err(e) => Outcome::Errored(format!("its decision {e}")),
        },
        Ok(Err(e)) => Outcome::Errored(e.message),
        Err(payload) => Outcome::Panicked(panic_message(payload.as_ref())),
    };
    match outcome {
        Outcome::Declined => step.counters.add(Count::Decline),
        Outcome::Errored(_) => step.counters.add(Count::Error),
        Outcome::Panicked(_) => step.counters.add(Count::Panic),
        Outcome::Decided(_) => {}
    }
    outcome
}
