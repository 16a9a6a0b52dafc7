//! What graft keeps for one request: the configuration it is served with
//! (pinned at its first use, so that a configuration swapped while the
//! request is in flight never serves it half old, half new) and how far
//! the pipeline went.
//!
//! It lives in a cleanup of the request's pool, found again from there
//! after an internal redirect (which clears r->ctx), and dropped with the
//! pool. That is what makes the pipeline run once per main request however
//! it reaches a graft location: the first graft location it reaches runs
//! it, an internal redirect into another one finds it already run.
//! Subrequests share the main request's pool, so they find the main
//! request's record too: callers check `r == r->main` first.
use std::ffi::c_void;
use std::sync::Arc;

use graft_contract::{BodyRewriter, HeaderOp};
use graft_engine::protocol::later::Sides;
use graft_engine::Config;
use ngx::ffi::{ngx_chain_t, ngx_http_request_t, ngx_pool_cleanup_add};
use smallvec::SmallVec;

// The record sits in graft's slot of r->ctx (`conf::ctx_slot`), and is
// found again from the pool's cleanups after an internal redirect clears
// r->ctx: ngx's `get_module_ctx`/`set_module_ctx` cover the first part only.
use crate::conf::{ctx_slot as slot, current_config};

pub struct RequestCtx {
    pub config: Arc<Config>,
    /// Who has run the pipeline for this request so far.
    pub pipeline: Pipeline,
    /// The zones the pipeline ran for, the current one last (it runs once
    /// per main request and zone: an internal redirect into a location
    /// scoped to another zone runs that zone's steps too).
    pub ran_zones: SmallVec<[usize; 2]>,
    /// The zone of the request's host, looked up once (main requests
    /// only): a step's edit of the Host header never moves the request to
    /// another zone's steps.
    pub host_zone: Option<Option<usize>>,
    /// Whether the request's `Graft-Edge` header was judged (`edge`): it
    /// is judged once, first thing, and asked for again only where that
    /// may not have happened.
    pub edge_judged: bool,
    /// The step where the native pipeline stopped and handed the request
    /// on (to the Lua bridge if the location runs it, else to the native
    /// finish in the precontent phase); `None` when it ran every step.
    pub resume_at: Option<usize>,
    /// Whether the step at `resume_at` is a fallback from Rust: it is then
    /// served from Lua, or by its failure policy, without calling Rust again.
    pub fallback: bool,
    /// Steps (zone, step) a team's handler ran through `graft.decide`
    /// before the zone's pipeline reached them: the pipeline passes them.
    pub claimed: SmallVec<[(usize, usize); 2]>,
    /// A hand-off from graft-edge after step (zone, step)'s Rust side did
    /// not decide there: that step is served from Lua (or its failure
    /// policy) without asking Rust again.
    pub edge_fallback: Option<(usize, usize)>,
    /// Response-header changes the native pipeline decided.
    pub response_ops: Vec<HeaderOp>,
    /// Whether the native pipeline has asked nginx for the request body
    /// (it runs again once the body is in).
    pub body_asked: bool,
    /// The body as far as a zone reads it (its `max_bytes`, and what was
    /// read), taken once from what nginx read.
    pub body: Option<(usize, Arc<[u8]>, u64)>,
    /// Who serves each step's later phases (response headers, response
    /// body, log) for this request: decided once, by the first to ask
    /// (graft's header filter for the response's phases), and whether the
    /// Lua side took what was left to it (`graft_engine::protocol::later`).
    pub sides: Sides,
    /// Whether graft's header filter decided the response-header phase.
    pub response_steps_decided: bool,
    /// Whether the native pipeline ran the request's steps (in either of
    /// its phases), and whether the Lua bridge took the request.
    pub native_ran: bool,
    pub lua_bridge: bool,
    /// Whether graft's header filter started the response-body phase.
    pub body_started: bool,
    /// Mode `shadow`: Rust's response-header changes, described, per
    /// (zone, step), to compare with the Lua side's.
    pub response_shadows: SmallVec<[(usize, usize, String); 1]>,
    /// The Rust rewriters of this response's body, in step order.
    pub rewriters: graft_engine::body_phase::Rewriters,
    /// Mode `shadow`: Rust's rewriters of the body Lua serves, whose output
    /// is only hashed, to compare with Lua's at its end.
    pub shadows: Vec<ShadowBody>,
    /// Output buffers the next body filter still holds, and ones it gave
    /// back (reused: a long body does not grow the pool).
    pub busy: *mut ngx_chain_t,
    pub free: *mut ngx_chain_t,
    /// The body filter's input and output in flight (`rewrite::Stream`).
    pub stream: Stream,
}

impl RequestCtx {
    /// Whether the request's steps met no Lua: the native pipeline ran
    /// them and the Lua bridge never took the request (a native-only
    /// location, or a native answer before any Lua ran). Its later phases
    /// then pass over an automatic rollback as its request phase did, and
    /// leave nothing to a Lua handler that will not run.
    pub fn no_lua(&self) -> bool {
        self.native_ran && !self.lua_bridge
    }

    /// Whether step `step` of zone `zone` has run for this request, or
    /// will without being asked again: a step runs once a request, whoever
    /// reaches it first (the native pipeline, the Lua bridge, the native
    /// finish or a team's `graft.decide`).
    pub fn step_ran(&self, zone: usize, step: usize) -> bool {
        if self.claimed.contains(&(zone, step)) {
            return true;
        }
        if !self.ran_zones.contains(&zone) {
            return false;
        }
        match (self.pipeline, self.ran_zones.last() == Some(&zone)) {
            // The native pipeline stopped at `resume_at`: the steps before
            // it ran, the others are the bridge's or the native finish's.
            (Pipeline::Native, true) => self.resume_at.is_none_or(|at| step < at),
            _ => true,
        }
    }

    /// Marks the step as run by a team's handler (`graft.decide`): false
    /// when it had run already.
    pub fn claim(&mut self, zone: usize, step: usize) -> bool {
        if self.step_ran(zone, step) {
            return false;
        }
        self.claimed.push((zone, step));
        true
    }

    /// Whether a handler ran some of the zone's steps before its pipeline.
    pub fn has_claims(&self, zone: usize) -> bool {
        self.claimed.iter().any(|&(z, _)| z == zone)
    }
}

/// The body filter's state for one response (in the request's record; `rewrite.rs` drives it).
pub struct Stream {
    /// Input not yet fed to the rewriters: links of graft's own to the
    /// buffers nginx passed, each consumed only as far as it was fed.
    pub(crate) input: *mut ngx_chain_t,
    /// What the rewriters wrote and no output buffer holds yet, from `at`.
    pub(crate) pending: Vec<u8>,
    pub(crate) at: usize,
    /// A flush to pass on once `pending` is out.
    pub(crate) flush: bool,
    /// The body's end was fed: the last buffer goes once `pending` is out.
    pub(crate) last: bool,
    /// The last buffer went down.
    pub(crate) done: bool,
    /// Output buffers made so far (at most `OUT_BUFS`).
    pub(crate) made: usize,
    /// The slice being fed (kept: one allocation per response).
    pub(crate) slice: Vec<u8>,
}

impl Default for Stream {
    fn default() -> Self {
        Stream {
            input: std::ptr::null_mut(),
            pending: Vec::new(),
            at: 0,
            flush: false,
            last: false,
            done: false,
            made: 0,
            slice: Vec::new(),
        }
    }
}

/// A body step in `shadow`: Rust rewrites the body beside Lua, keeping
/// only a hash and the length of what it wrote (never the body).
pub struct ShadowBody {
    pub step: usize,
    pub rewriter: Box<dyn BodyRewriter>,
    pub hash: std::collections::hash_map::DefaultHasher,
    pub len: u64,
    /// Why the Rust side failed, if it did.
    pub failed: Option<String>,
    /// Its hash and length once the body ended.
    pub done: Option<(u64, u64)>,
}

/// How far the pipeline went for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipeline {
    /// Not yet run: the first graft location the request reaches runs it.
    NotStarted,
    /// The native pipeline ran in the access phase (up to `resume_at`).
    Native,
    /// The Lua bridge took the request (from `resume_at`, or from the
    /// start), or the native finish did: nothing runs it again.
    Taken,
}

/// The request's record, made (and its configuration pinned) on first use;
/// `None` when the request's http block has no `graft_config`.
#[allow(clippy::mut_from_ref)]
pub fn of(r: &ngx_http_request_t) -> Option<&mut RequestCtx> {
    if let Some(ctx) = existing(r) {
        return Some(ctx);
    }
    let config = current_config(r)?;
    // SAFETY: ngx_pool_cleanup_add returns an entry whose data has room for
    // a RequestCtx (pool memory is aligned for it), or null; the value is
    // written before the handler that drops it is set; our r->ctx slot is
    // then pointed at it.
    unsafe {
        let cln = ngx_pool_cleanup_add(r.pool, std::mem::size_of::<RequestCtx>()).as_mut()?;
        let ctx = cln.data as *mut RequestCtx;
        ctx.write(RequestCtx {
            config,
            pipeline: Pipeline::NotStarted,
            ran_zones: SmallVec::new(),
            host_zone: None,
            edge_judged: *slot(r) == judged_mark(),
            resume_at: Some(0),
            fallback: false,
            claimed: SmallVec::new(),
            edge_fallback: None,
            response_ops: Vec::new(),
            body_asked: false,
            body: None,
            sides: Sides::default(),
            response_steps_decided: false,
            native_ran: false,
            lua_bridge: false,
            body_started: false,
            response_shadows: SmallVec::new(),
            rewriters: Default::default(),
            shadows: Vec::new(),
            busy: std::ptr::null_mut(),
            free: std::ptr::null_mut(),
            stream: Default::default(),
        });
        cln.handler = Some(drop_ctx);
        *slot(r) = ctx as *mut c_void;
        ctx.as_mut()
    }
}

/// The configuration the request is served with.
pub fn config(r: &ngx_http_request_t) -> Option<&Arc<Config>> {
    of(r).map(|c| &c.config)
}

/// The request's record if graft has made one.
#[allow(clippy::mut_from_ref)]
pub fn existing(r: &ngx_http_request_t) -> Option<&mut RequestCtx> {
    // SAFETY: our r->ctx slot is null or a RequestCtx made by `of`; the
    // pool's cleanup list is a valid linked list, and the entries whose
    // handler is `drop_ctx` hold a RequestCtx. nginx runs one request at a
    // time in a worker, and graft holds no two of these borrows at once.
    unsafe {
        let slot = slot(r);
        if !(*slot).is_null() && *slot != judged_mark() {
            return (*slot as *mut RequestCtx).as_mut();
        }
        let mut cln = (*r.pool).cleanup;
        while let Some(c) = cln.as_ref() {
            if c.handler.is_some_and(|h| {
                std::ptr::fn_addr_eq(h, drop_ctx as unsafe extern "C" fn(*mut c_void))
            }) {
                *slot = c.data;
                return (c.data as *mut RequestCtx).as_mut();
            }
            cln = c.next;
        }
        None
    }
}

/// What graft's r->ctx slot holds for a request whose `Graft-Edge`
/// header was judged before it had a record (graft's post-read handler):
/// the address of a static that is never read, never a record.
static EDGE_JUDGED: u8 = 0;

fn judged_mark() -> *mut c_void {
    &EDGE_JUDGED as *const u8 as *mut c_void
}

/// Marks the request's `Graft-Edge` header as judged, and says whether
/// it was not yet (the caller judges it then): in its record, or in
/// graft's r->ctx slot until it has one (an internal redirect clears the
/// slot, and a request with no record is then judged again: the header
/// is gone by then, so that only costs a look).
pub fn judge_edge_first(r: &ngx_http_request_t) -> bool {
    // SAFETY: our r->ctx slot of a live request: null, the mark or a record.
    if unsafe { *slot(r) } == judged_mark() {
        return false;
    }
    match existing(r) {
        Some(c) => !std::mem::replace(&mut c.edge_judged, true),
        None => {
            // SAFETY: our r->ctx slot of a live request, which holds no
            // record (`existing` found none): the mark goes where null was.
            unsafe { *slot(r) = judged_mark() };
            true
        }
    }
}

unsafe extern "C" fn drop_ctx(data: *mut c_void) {
    // SAFETY: registered by `of` for data holding a RequestCtx, run once
    // when the pool is destroyed.
    unsafe { std::ptr::drop_in_place(data as *mut RequestCtx) };
}
