//! The native pipeline: with `graft_native on;` in a location, graft runs
//! the zone's modules in nginx's access phase and applies response-header
//! changes in a header filter, with no Lua in the request's path.
//!
//! The pipeline runs natively from its first step while steps are in
//! `rust` mode. At the first step in another mode, or whose Rust side
//! declines, fails or panics, it stops and hands the request on: if the
//! location also runs `require("graft").access()`, the Lua bridge resumes
//! the pipeline at that step (`graft_ffi_resume`); without it, the request
//! goes on to the content phase unchanged by the remaining steps.
use std::ffi::{c_char, c_void};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicUsize, Ordering};

use graft_contract::{Changes, Context, Decision, HeaderAction, Response};
use graft_engine::{Count, Mode, Outcome, Zone};
use ngx::core::Pool;
use ngx::ffi::{
    ngx_alloc_chain_link, ngx_array_push, ngx_chain_t, ngx_conf_t, ngx_create_temp_buf, ngx_flag_t,
    ngx_http_conf_ctx_t, ngx_http_core_main_conf_t, ngx_http_core_module,
    ngx_http_finalize_request, ngx_http_handler_pt, ngx_http_output_filter,
    ngx_http_output_header_filter_pt, ngx_http_phases_NGX_HTTP_ACCESS_PHASE, ngx_http_request_t,
    ngx_http_send_header, ngx_http_set_content_type, ngx_http_set_exten,
    ngx_http_top_header_filter, ngx_int_t, ngx_list_part_t, ngx_list_push, ngx_list_t, ngx_pnalloc,
    ngx_pool_t, ngx_str_t, ngx_table_elt_t, ngx_time, NGX_DECLINED, NGX_DONE, NGX_ERROR, NGX_OK,
};

use ngx::ffi::NGX_LOG_WARN;
use ngx::ngx_log_error;

use crate::bridge::{log_outcome, record, run_sampled};
use crate::ctx;
use crate::guard::guarded;
use crate::module::{ngx_http_graft_module, shared_counters};
use crate::request::NgxRequest;

const NGX_CONF_UNSET: ngx_flag_t = -1;
const NGX_CONF_ERROR: *mut c_char = usize::MAX as *mut c_char;

/// The module's location configuration.
pub struct LocConf {
    /// `graft_native on|off`.
    pub native: ngx_flag_t,
}

pub unsafe extern "C" fn create_loc_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    guarded(null_mut(), || {
        // SAFETY: nginx passes a valid conf; `allocate` ties the value's
        // drop to the pool's cleanup.
        let pool = unsafe { Pool::from_ngx_pool((*cf).pool) };
        pool.allocate(LocConf {
            native: NGX_CONF_UNSET,
        }) as *mut c_void
    })
}

pub unsafe extern "C" fn merge_loc_conf(
    _cf: *mut ngx_conf_t,
    prev: *mut c_void,
    conf: *mut c_void,
) -> *mut c_char {
    guarded(NGX_CONF_ERROR, || {
        // SAFETY: nginx passes two location confs made by create_loc_conf.
        let (prev, conf) = unsafe { (&*(prev as *const LocConf), &mut *(conf as *mut LocConf)) };
        if conf.native == NGX_CONF_UNSET {
            conf.native = if prev.native == NGX_CONF_UNSET {
                0
            } else {
                prev.native
            };
        }
        null_mut()
    })
}

/// The next header filter in nginx's chain, a code address that is the same
/// in every cycle.
static NEXT_HEADER_FILTER: AtomicUsize = AtomicUsize::new(0);

/// Registers the access-phase handler and the header filter.
pub unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    guarded(NGX_ERROR as ngx_int_t, || {
        // SAFETY: during postconfiguration cf->ctx is the http block's
        // ngx_http_conf_ctx_t, whose main confs hold the core module's.
        unsafe {
            let ctx = (*cf).ctx as *const ngx_http_conf_ctx_t;
            let cmcf = *(*ctx).main_conf.add(ngx_http_core_module.ctx_index)
                as *mut ngx_http_core_main_conf_t;
            let phase = &mut (*cmcf).phases[ngx_http_phases_NGX_HTTP_ACCESS_PHASE as usize];
            let h = ngx_array_push(&mut phase.handlers) as *mut ngx_http_handler_pt;
            if h.is_null() {
                return NGX_ERROR as ngx_int_t;
            }
            *h = Some(access_handler);
            if let Some(next) = ngx_http_top_header_filter {
                if next as usize != header_filter as *const () as usize {
                    NEXT_HEADER_FILTER.store(next as usize, Ordering::Relaxed);
                }
            }
            ngx_http_top_header_filter = Some(header_filter);
        }
        NGX_OK as ngx_int_t
    })
}

fn loc_conf(r: &ngx_http_request_t) -> Option<&LocConf> {
    // SAFETY: a live request's loc_conf array holds one conf per http
    // module, ours made by create_loc_conf.
    unsafe {
        let index = (*std::ptr::addr_of!(ngx_http_graft_module)).ctx_index;
        (*r.loc_conf.add(index) as *const LocConf).as_ref()
    }
}

unsafe extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guarded(NGX_DECLINED as ngx_int_t, || {
        // SAFETY: nginx calls phase handlers with a live request.
        let r = unsafe { &mut *r };
        // Once a request: not for subrequests, nor again after an internal
        // redirect (which clears the ctx).
        if !std::ptr::eq(r, r.main)
            || r.internal() != 0
            || loc_conf(r).is_none_or(|c| c.native != 1)
        {
            return NGX_DECLINED as ngx_int_t;
        }
        let Some(ctx) = ctx::of(r) else {
            return NGX_DECLINED as ngx_int_t;
        };
        if ctx.native_ran {
            return NGX_DECLINED as ngx_int_t;
        }
        ctx.native_ran = true;
        let config = ctx.config.clone();
        use graft_contract::RequestView;
        let Some(zone) = config
            .zone_index(NgxRequest::new(r).host())
            .map(|z| &config.zones[z])
        else {
            return NGX_DECLINED as ngx_int_t;
        };
        run_pipeline(r, zone)
    })
}

fn run_pipeline(r: &mut ngx_http_request_t, zone: &Zone) -> ngx_int_t {
    let Some(counters) = shared_counters() else {
        return NGX_DECLINED as ngx_int_t;
    };
    // SAFETY: a live request's connection and its log are valid.
    let log = unsafe { (*r.connection).log };
    for (i, step) in zone.steps.iter().enumerate() {
        if step.mode_for(&NgxRequest::new(r)) != Mode::Rust {
            return hand_on(r, i, false);
        }
        let ctx = Context {
            zone: &zone.name,
            now_secs: u64::try_from(ngx_time()).unwrap_or(0),
            counters: &counters,
        };
        let outcome = run_sampled(step, &NgxRequest::new(r), &ctx);
        log_outcome(log, &zone.name, step.module_name, &outcome);
        let Outcome::Decided(decision) = outcome else {
            record(r, &zone.name, step, Count::Fallback);
            return hand_on(r, i, true);
        };
        record(r, &zone.name, step, Count::Rust);
        let lines = match &decision {
            Decision::Respond(resp) => &resp.log,
            Decision::Continue(changes) => &changes.log,
            Decision::Decline => unreachable!("a decline is an outcome of its own"),
        };
        for line in lines {
            ngx_log_error!(
                NGX_LOG_WARN,
                log,
                "graft: zone \"{}\" module \"{}\": {line}",
                zone.name,
                step.module_name
            );
        }
        match decision {
            Decision::Respond(resp) => return respond(r, &resp),
            Decision::Continue(changes) => {
                if apply(r, changes).is_err() {
                    return NGX_ERROR as ngx_int_t;
                }
            }
            Decision::Decline => unreachable!("a decline is an outcome of its own"),
        }
    }
    if let Some(ctx) = ctx::of(r) {
        ctx.resume_at = None;
    }
    NGX_DECLINED as ngx_int_t
}

fn hand_on(r: &mut ngx_http_request_t, step: usize, fallback: bool) -> ngx_int_t {
    if let Some(ctx) = ctx::of(r) {
        ctx.resume_at = Some(step);
        ctx.fallback = fallback;
    }
    NGX_DECLINED as ngx_int_t
}

/// Copies bytes into the request's pool.
fn pool_str(pool: *mut ngx_pool_t, bytes: &[u8]) -> Option<ngx_str_t> {
    // SAFETY: ngx_pnalloc returns `len` writable bytes from a live pool
    // (or null); the copy stays in bounds.
    unsafe {
        let p = ngx_pnalloc(pool, bytes.len().max(1)) as *mut u8;
        if p.is_null() {
            return None;
        }
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        Some(ngx_str_t {
            len: bytes.len(),
            data: p,
        })
    }
}

/// Appends a header to one of a request's header lists, in place.
fn push_header(
    pool: *mut ngx_pool_t,
    list: &mut ngx_list_t,
    name: &str,
    value: &[u8],
) -> Option<()> {
    let key = pool_str(pool, name.as_bytes())?;
    let lower = pool_str(pool, name.to_ascii_lowercase().as_bytes())?;
    let value = pool_str(pool, value)?;
    // SAFETY: ngx_list_push returns a slot of the list's element type
    // (ngx_table_elt_t for header lists) from the list's pool, or null.
    unsafe {
        let h = (ngx_list_push(list) as *mut ngx_table_elt_t).as_mut()?;
        h.hash = 1;
        h.key = key;
        h.value = value;
        h.lowcase_key = lower.data;
    }
    Some(())
}

fn key_of(h: &ngx_table_elt_t) -> &[u8] {
    if h.key.len == 0 {
        return &[];
    }
    // SAFETY: a header's key points at `len` bytes of the request's memory.
    unsafe { std::slice::from_raw_parts(h.key.data, h.key.len) }
}

/// Removes every request header of that name from the list, moving the
/// later elements of its part down, as the Lua module's header removal does.
fn remove_request_header(list: &mut ngx_list_t, name: &str) {
    let mut part: *mut ngx_list_part_t = &mut list.part;
    // SAFETY: an ngx_list_t of ngx_table_elt_t: each part holds `nelts`
    // elements and links to the next; elements move only within a part.
    unsafe {
        while let Some(p) = part.as_mut() {
            let elts = p.elts as *mut ngx_table_elt_t;
            let mut i = 0;
            while i < p.nelts {
                if key_of(&*elts.add(i)).eq_ignore_ascii_case(name.as_bytes()) {
                    std::ptr::copy(elts.add(i + 1), elts.add(i), p.nelts - i - 1);
                    p.nelts -= 1;
                } else {
                    i += 1;
                }
            }
            part = p.next;
        }
    }
}

/// Hides every response header of that name (nginx skips hash 0).
fn hide_response_header(list: &mut ngx_list_t, name: &str) {
    let mut part: *mut ngx_list_part_t = &mut list.part;
    // SAFETY: as in remove_request_header.
    unsafe {
        while let Some(p) = part.as_mut() {
            let elts = p.elts as *mut ngx_table_elt_t;
            for i in 0..p.nelts {
                let h = &mut *elts.add(i);
                if key_of(h).eq_ignore_ascii_case(name.as_bytes()) {
                    h.hash = 0;
                }
            }
            part = p.next;
        }
    }
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
            HeaderAction::Add => push_header(pool, list, name, op.value.as_bytes()).ok_or(())?,
        }
    }
    if !changes.response_headers.is_empty() {
        if let Some(ctx) = ctx::existing(r) {
            ctx.response_ops.extend(changes.response_headers);
        }
    }
    Ok(())
}

/// Sends a module's answer: nginx's own page for a status of 300 or more
/// without a body, else the status and body (as Lua's ngx.print and
/// ngx.exit do, so the two paths answer byte for byte alike).
fn respond(r: &mut ngx_http_request_t, resp: &Response) -> ngx_int_t {
    let pool = r.pool;
    for (name, value) in &resp.headers {
        if push_header(
            pool,
            &mut r.headers_out.headers,
            name.as_str(),
            value.as_bytes(),
        )
        .is_none()
        {
            return NGX_ERROR as ngx_int_t;
        }
    }
    if resp.body.is_empty() && resp.status >= 300 {
        return ngx_int_t::from(i16::try_from(resp.status).unwrap_or(500));
    }
    r.headers_out.status = usize::from(resp.status);
    // SAFETY: the standard sequence of a handler that answers itself:
    // content type, header, one last buffer from the request's pool, then
    // finalize; NGX_DONE tells the phase engine the request is taken care of.
    unsafe {
        if ngx_http_set_content_type(r) != NGX_OK as ngx_int_t {
            return NGX_ERROR as ngx_int_t;
        }
        let rc = ngx_http_send_header(r);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || r.header_only() != 0 {
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
        let Some(ctx) = ctx::existing(req) else {
            return true;
        };
        let ops = std::mem::take(&mut ctx.response_ops);
        let pool = req.pool;
        let list = &mut req.headers_out.headers;
        let mut ok = true;
        for op in &ops {
            let name = op.name.as_str();
            match op.action {
                HeaderAction::Remove => hide_response_header(list, name),
                HeaderAction::Set => {
                    hide_response_header(list, name);
                    ok &= push_header(pool, list, name, op.value.as_bytes()).is_some();
                }
                HeaderAction::Add => {
                    ok &= push_header(pool, list, name, op.value.as_bytes()).is_some()
                }
            }
        }
        ok
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
