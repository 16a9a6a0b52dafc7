//! The native pipeline: with `graft_native on;` in a location, graft runs
//! the zone's modules in nginx's access phase and applies response-header
//! changes in a header filter, with no Lua in the request's path.
//!
//! The pipeline runs natively from its first step while steps are in
//! `rust` mode. At the first step in another mode, or whose Rust side
//! declines, fails or panics, it stops and hands the request on: if the
//! location also runs `require("graft").access()`, the Lua bridge resumes
//! the pipeline at that step (`graft_ffi_resume`). Without it, the native
//! finish (a precontent-phase handler) takes the request at that step: a
//! step that needs Lua there cannot decide, and its failure policy does
//! (counted and logged), and every later step still runs.
//!
//! Once per main request: a subrequest never runs the pipeline, and an
//! internal redirect into a graft location runs it only if no graft
//! location ran it before (see `ctx`).
use std::ptr::null_mut;
use std::sync::atomic::{AtomicUsize, Ordering};

use graft_contract::{Changes, Decision, HeaderAction, Response};
use graft_engine::protocol::{HandOver, Legacy, Served};
use graft_engine::Zone;
use ngx::ffi::{
    ngx_alloc_chain_link, ngx_chain_t, ngx_create_temp_buf, ngx_http_core_run_phases,
    ngx_http_discard_request_body, ngx_http_finalize_request, ngx_http_output_filter,
    ngx_http_output_header_filter_pt, ngx_http_read_client_request_body, ngx_http_request_t,
    ngx_http_send_header, ngx_http_send_special, ngx_http_set_content_type, ngx_http_set_exten,
    ngx_http_top_header_filter, ngx_int_t, ngx_uint_t, NGX_DECLINED, NGX_DONE, NGX_ERROR,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_LAST, NGX_HTTP_SATISFY_ANY, NGX_HTTP_SPECIAL_RESPONSE,
    NGX_OK,
};

use ngx::http::{HttpModuleLocationConf, NgxHttpCoreModule};

use crate::conf::{current_config, loc_conf};
use crate::ctx::{self, Pipeline};
use crate::guard::guarded;
use crate::headers::{
    pool_str, push_header, remove_request_header, response_header, set_content_length,
};
use crate::live::shared_windows;
use crate::location::zone_for;
use crate::request::has_body;
use crate::request::NgxRequest;
use crate::rewrite;
use crate::steps::{body_declared_over, log_limited, protocol, zone_body, LogFamily, NgxServer};

/// The next header filter in nginx's chain, a code address that is the same
/// in every cycle.
static NEXT_HEADER_FILTER: AtomicUsize = AtomicUsize::new(0);

/// Puts graft's header filter at the top of nginx's chain (from the
/// module's postconfiguration, once per cycle).
///
/// # Safety
/// Called while nginx configures, in its one thread.
pub unsafe fn install_header_filter() {
    // SAFETY: the caller's contract: nginx's filter chain is written only
    // while it configures, and read by requests after.
    unsafe {
        if let Some(next) = ngx_http_top_header_filter {
            if next as usize != header_filter as *const () as usize {
                NEXT_HEADER_FILTER.store(next as usize, Ordering::Relaxed);
            }
        }
        ngx_http_top_header_filter = Some(header_filter);
    }
}

/// The native pipeline in the access phase: the zone's leading steps in
/// Rust, then the Lua bridge or the native finish.
pub unsafe extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // A panic here is a bug in graft itself: fail closed.
    guarded(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || {
        // SAFETY: nginx calls phase handlers with a live request, which
        // nothing else borrows during this call.
        unsafe { crate::edge::judge_once(r) };
        // SAFETY: as above.
        let r = unsafe { &mut *r };
        // Once a main request: never for subrequests. In a location with
        // `satisfy any` too: there the first access handler that allows
        // ends the phase, and lua-nginx-module runs access_by_lua last, so
        // a client that passes `allow` or `auth_basic` would never meet
        // the Lua bridge. graft's handler runs before nginx's own access
        // checks (a module loaded later runs first), so the pipeline runs
        // natively here, and whatever needs Lua is the native finish's.
        // `graft_native off;` said in the location is the operator's way
        // out of this.
        let native = loc_conf(r).map_or(0, |c| c.native);
        if !std::ptr::eq(r, r.main) || (native != 1 && !(native != 0 && satisfy_any(r))) {
            return NGX_DECLINED as ngx_int_t;
        }
        let Some(ctx) = ctx::of(r) else {
            // No configuration: nothing to run. A configuration but no
            // room for the request's record: graft cannot run it, and
            // lets nothing through unchecked.
            return match current_config(r) {
                None => NGX_DECLINED as ngx_int_t,
                Some(_) => NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
            };
        };
        let zone = match zone_for(r, ctx) {
            Ok(Some(zone)) => zone,
            Ok(None) => return NGX_DECLINED as ngx_int_t,
            Err(e) => {
                log_limited(r, LogFamily::Failure, format_args!("graft: {e}"));
                return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
            }
        };
        // Once a main request and zone.
        if ctx.ran_zones.contains(&zone) {
            return NGX_DECLINED as ngx_int_t;
        }
        let config = ctx.config.clone();
        // A zone whose modules read bodies: the body first, then this
        // handler again (from `body_read`).
        if config.zones[zone].body.is_some() && has_body(r) && !ctx.body_asked {
            if let Some(status) = body_declared_over(r, &config, &config.zones[zone]) {
                // The zone answered: its pipeline is over (and its later
                // phases, a response-body step, see the answer as theirs).
                ctx.pipeline = Pipeline::Taken;
                ctx.native_ran = true;
                ctx.ran_zones.push(zone);
                ctx.resume_at = None;
                // Finalized here, not returned: under `satisfy any` a 401
                // or 403 returned to the access phase is only a vote.
                // SAFETY: a live main request in its access phase.
                unsafe { ngx_http_finalize_request(r, status as ngx_int_t) };
                return NGX_DONE as ngx_int_t;
            }
            ctx.body_asked = true;
            // A body nginx writes to a temporary file keeps its name until
            // the request ends (as ngx.req.read_body() asks), so that a
            // Lua handler after this one can still open it.
            r.set_request_body_in_persistent_file(1);
            r.set_request_body_in_clean_file(1);
            // SAFETY: a live main request in its access phase; nginx calls
            // `body_read` once the whole body is in (at once when it is).
            let rc = unsafe { ngx_http_read_client_request_body(r, Some(body_read)) };
            if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
                return rc;
            }
            // SAFETY: reading the body took a reference on the request;
            // NGX_DONE gives this handler's back, as nginx's mirror does.
            unsafe { ngx_http_finalize_request(r, NGX_DONE as ngx_int_t) };
            return NGX_DONE as ngx_int_t;
        }
        ctx.pipeline = Pipeline::Native;
        ctx.ran_zones.push(zone);
        ctx.fallback = false;
        // graft-edge asked a step's Rust side already: from there, Lua.
        let (from, fell_back) = match ctx.edge_fallback {
            Some((z, step)) if z == zone => (step, true),
            _ => (0, false),
        };
        run_steps(r, zone, &config.zones[zone], from, fell_back, true)
    })
}

/// Whether the request's location has `satisfy any`.
fn satisfy_any(r: &ngx_http_request_t) -> bool {
    NgxHttpCoreModule::location_conf(r)
        .is_some_and(|c| c.satisfy == NGX_HTTP_SATISFY_ANY as ngx_uint_t)
}

/// The request body is in: the phases run again from the access phase,
/// where `access_handler` now runs the pipeline.
unsafe extern "C" fn body_read(r: *mut ngx_http_request_t) {
    guarded((), || {
        // SAFETY: nginx calls a body's post handler with its live request;
        // running its phases again is what a phase handler that waited for
        // the body does (nginx's mirror module does the same).
        unsafe {
            (*r).write_event_handler = Some(ngx_http_core_run_phases);
            ngx_http_core_run_phases(r);
        }
    })
}

/// The native finish: a request the native pipeline handed on at a step
/// that no Lua bridge took runs the rest of its steps here, before the
/// content phase.
pub unsafe extern "C" fn finish_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guarded(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || {
        // SAFETY: nginx calls phase handlers with a live request.
        let r = unsafe { &mut *r };
        if !std::ptr::eq(r, r.main) {
            return NGX_DECLINED as ngx_int_t;
        }
        let Some(ctx) = ctx::existing(r) else {
            return NGX_DECLINED as ngx_int_t;
        };
        let (Pipeline::Native, Some(from)) = (ctx.pipeline, ctx.resume_at) else {
            return NGX_DECLINED as ngx_int_t;
        };
        ctx.pipeline = Pipeline::Taken;
        let (config, zone, fell_back) = (
            ctx.config.clone(),
            ctx.ran_zones.last().copied(),
            ctx.fallback,
        );
        match zone.and_then(|z| Some((z, config.zones.get(z)?))) {
            Some((index, z)) => run_steps(r, index, z, from, fell_back, false),
            None => NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        }
    })
}

/// Runs the zone's steps from `from` (but those a team's handler ran
/// first through `graft.decide`), through the engine's step protocol.
/// `fell_back`: Rust already failed on step `from` (and it was counted).
/// `lua_follows`: the Lua bridge may take the request at a step Rust
/// cannot serve; without it, such a step's failure policy decides and the
/// later steps run.
fn run_steps(
    r: &mut ngx_http_request_t,
    zone_index: usize,
    zone: &Zone,
    from: usize,
    mut fell_back: bool,
    lua_follows: bool,
) -> ngx_int_t {
    let Some(windows) = shared_windows() else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    // Whatever ends the request from here (an answer, an error) ends its
    // pipeline: an internal redirect to an error page never runs it again.
    // Only a hand-on to the Lua bridge names a step to resume at.
    if let Some(ctx) = ctx::existing(r) {
        ctx.resume_at = None;
        ctx.native_ran = true;
    }
    let body = match zone_body(r, zone) {
        Ok(body) => body,
        Err(status) => {
            // Finalized here, not returned: under `satisfy any` a 401 or
            // 403 returned to the access phase is only a vote.
            // SAFETY: a live main request in a phase handler; NGX_DONE
            // tells the phase engine the request is taken care of.
            unsafe { ngx_http_finalize_request(r, status as ngx_int_t) };
            return NGX_DONE as ngx_int_t;
        }
    };
    let legacy = if lua_follows {
        Legacy::Ahead
    } else {
        Legacy::None
    };
    for (i, step) in zone.steps.iter().enumerate().skip(from) {
        // A step runs once a request: one a team's handler ran first
        // (`graft.decide`) is passed.
        if ctx::existing(r).is_some_and(|c| c.claimed.contains(&(zone_index, i))) {
            fell_back = false;
            continue;
        }
        let served = {
            let view = NgxRequest::with_body(r, body.clone());
            let server = NgxServer(r);
            protocol(&server, &zone.name, legacy, true).step(
                step,
                &view,
                &windows,
                std::mem::take(&mut fell_back),
            )
        };
        let decision = match served {
            // Nothing to log or apply.
            Served::Decision(d) if d.is_unchanged() => continue,
            Served::Decision(d) => d.into_decision(),
            Served::HandOver(why) => {
                return hand_on(r, i, matches!(why, HandOver::Rust(_)));
            }
            Served::Shadow(_) => unreachable!("shadow is served where Lua is here"),
        };
        let server = NgxServer(r);
        let protocol = protocol(&server, &zone.name, legacy, true);
        match decision {
            Decision::Respond(resp) => {
                protocol.log_decision(step, &resp.log);
                return respond(r, &resp);
            }
            Decision::Continue(changes) => {
                protocol.log_decision(step, &changes.log);
                if apply(r, changes).is_err() {
                    return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
                }
            }
            Decision::Decline => unreachable!("a decline is an outcome of its own"),
        }
    }
    NGX_DECLINED as ngx_int_t
}

/// Stops the native pipeline at `step`, for the Lua bridge (or, without
/// one, the native finish) to take it from there.
fn hand_on(r: &mut ngx_http_request_t, step: usize, fallback: bool) -> ngx_int_t {
    if let Some(ctx) = ctx::of(r) {
        ctx.resume_at = Some(step);
        ctx.fallback = fallback;
    }
    NGX_DECLINED as ngx_int_t
}

fn apply(r: &mut ngx_http_request_t, changes: Changes) -> Result<(), ()> {
    if let Some(uri) = &changes.uri {
        r.uri = pool_str(r.pool, uri).ok_or(())?;
        r.set_valid_unparsed_uri(0);
        // SAFETY: recomputes r->exten from the new r->uri.
        unsafe { ngx_http_set_exten(r) };
    }
    let pool = r.pool;
    let list = &mut r.headers_in.headers;
    for op in &changes.request_headers {
        let name = op.name.as_str();
        match op.action {
            HeaderAction::Remove => remove_request_header(list, name),
            HeaderAction::Set => {
                remove_request_header(list, name);
                push_header(pool, list, name, op.value.as_bytes()).ok_or(())?;
            }
            HeaderAction::Add => {
                push_header(pool, list, name, op.value.as_bytes()).ok_or(())?;
            }
        }
    }
    if !changes.request_headers.is_empty() {
        let host_changed = changes
            .request_headers
            .iter()
            .any(|op| op.name.as_str().eq_ignore_ascii_case("host"));
        crate::headers::refresh_headers_in(r, host_changed).ok_or(())?;
    }
    if !changes.response_headers.is_empty() {
        if let Some(ctx) = ctx::existing(r) {
            if ctx.response_ops.is_empty() {
                // The module's list itself: no copy, no allocation.
                ctx.response_ops = changes.response_headers;
            } else {
                ctx.response_ops.extend(changes.response_headers);
            }
        }
    }
    Ok(())
}

/// Sends a module's answer as the Lua path does (`respond` in
/// `lua/graft/pipeline.lua`), so that the two put the same bytes on the
/// wire: nginx's own page for a status of 300 or more without a body;
/// else the status, `Content-Length` from the body (set through nginx's
/// own field: never beside `Transfer-Encoding`) and the body, if any. The
/// decision's framing was checked when it was made
/// (`Decision::check_framing`).
fn respond(r: &mut ngx_http_request_t, resp: &Response) -> ngx_int_t {
    // A body the client sent must be read and dropped before answering, or
    // on a kept-alive connection it would be taken for the next request.
    // SAFETY: the request is live and in a phase handler, as nginx's own
    // handlers call it.
    let rc = unsafe { ngx_http_discard_request_body(r) };
    if rc != NGX_OK as ngx_int_t {
        return rc;
    }
    for (name, value) in &resp.headers {
        if response_header(r, HeaderAction::Add, name.as_str(), value.as_bytes()).is_none() {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
    }
    if resp.body.is_empty() && resp.status >= 300 {
        // nginx's own page for the status. Finalized here rather than
        // returned: under `satisfy any` the access phase would take a 401
        // or 403 returned to it for a vote that a later `allow` overrules.
        let status = ngx_int_t::from(i16::try_from(resp.status).unwrap_or(500));
        // SAFETY: a live request in a phase handler; NGX_DONE tells the
        // phase engine the request is taken care of.
        unsafe { ngx_http_finalize_request(r, status) };
        return NGX_DONE as ngx_int_t;
    }
    r.headers_out.status = usize::from(resp.status);
    // A 204 has no body, and no length (RFC 9110, 8.6).
    if resp.status != 204 && set_content_length(r, resp.body.len()).is_none() {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    }
    // SAFETY: the standard sequence of a handler that answers itself:
    // content type, header, then the body's one last buffer from the
    // request's pool (or, with no body, only the mark of its end: nginx
    // refuses a buffer of zero bytes), then finalize; NGX_DONE tells the
    // phase engine the request is taken care of.
    unsafe {
        if ngx_http_set_content_type(r) != NGX_OK as ngx_int_t {
            return NGX_ERROR as ngx_int_t;
        }
        let rc = ngx_http_send_header(r);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || r.header_only() != 0 {
            ngx_http_finalize_request(r, rc);
            return NGX_DONE as ngx_int_t;
        }
        if resp.body.is_empty() {
            let rc = ngx_http_send_special(r, NGX_HTTP_LAST as ngx_uint_t);
            ngx_http_finalize_request(r, rc);
            return NGX_DONE as ngx_int_t;
        }
        let b = ngx_create_temp_buf(r.pool, resp.body.len());
        let cl = ngx_alloc_chain_link(r.pool);
        if b.is_null() || cl.is_null() {
            ngx_http_finalize_request(r, NGX_ERROR as ngx_int_t);
            return NGX_DONE as ngx_int_t;
        }
        std::ptr::copy_nonoverlapping(resp.body.as_ptr(), (*b).last, resp.body.len());
        (*b).last = (*b).last.add(resp.body.len());
        (*b).set_last_buf(1);
        (*b).set_last_in_chain(1);
        *cl = ngx_chain_t {
            buf: b,
            next: null_mut(),
        };
        let rc = ngx_http_output_filter(r, cl);
        ngx_http_finalize_request(r, rc);
    }
    NGX_DONE as ngx_int_t
}

unsafe extern "C" fn header_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls header filters with a live request.
    let req = unsafe { &mut *r };
    let applied = guarded(false, || {
        // Subrequests share the main request's pool, and so its record:
        // its response-header changes are the main response's alone.
        if !std::ptr::eq(req, req.main) {
            return true;
        }
        let Some(ctx) = ctx::existing(req) else {
            return true;
        };
        let ops = std::mem::take(&mut ctx.response_ops);
        let (config, zone) = (ctx.config.clone(), ctx.ran_zones.last().copied());
        let applied = ops.iter().all(|op| {
            response_header(req, op.action, op.name.as_str(), op.value.as_bytes()).is_some()
        });
        let Some((index, zone)) = zone.and_then(|z| Some((z, config.zones.get(z)?))) else {
            return applied;
        };
        // A zone whose steps leave the response alone has no more to do
        // here (known at load).
        if !zone.later.response() {
            return applied;
        }
        // The response-header phase sees the request phase's changes.
        let applied = applied && crate::response::run(req, index, zone).is_ok();
        rewrite::start(req, index, zone);
        applied
    });
    if !applied {
        return NGX_ERROR as ngx_int_t;
    }
    let next = NEXT_HEADER_FILTER.load(Ordering::Relaxed);
    // SAFETY: set in postconfiguration to the filter that was at the top
    // of nginx's chain before ours: a function of that type.
    unsafe {
        let next: ngx_http_output_header_filter_pt =
            std::mem::transmute::<usize, ngx_http_output_header_filter_pt>(next);
        match next {
            Some(f) => f(r),
            None => NGX_ERROR as ngx_int_t,
        }
    }
}
