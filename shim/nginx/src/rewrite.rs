//! The response-body phase: a zone's steps whose module rewrites bodies
//! (`Module::on_response_body`), in Rust, as the body streams through
//! nginx's body filter chain; a step that Lua serves for this response
//! (its mode, a canary, a kill switch) is left to the Lua side's body
//! filter (`graft.body_filter()`), which runs after this one.
//!
//! The header filter (`start`) decides per step, once a response, and for
//! a body it rewrites takes `Content-Length` away (the length changes),
//! turns ranges off and asks nginx for the body in memory (as `sub_filter`
//! does). The body filter then feeds each chunk through the rewriters in
//! step order and passes on what they wrote, reusing the buffers the next
//! filter gave back. A rewriter that fails or panics is counted and
//! logged, and the rest of the body passes as it is (what it held of a
//! tag it was reading is lost); the step's failure policy cannot answer,
//! the response having started.
use std::sync::atomic::{AtomicUsize, Ordering};

use graft_contract::ResponseHead;
use graft_engine::{guarded_module, start_response_body, Count, Mode, Zone};
use ngx::ffi::{
    ngx_buf_t, ngx_chain_get_free_buf, ngx_chain_t, ngx_chain_update_chains,
    ngx_http_output_body_filter_pt, ngx_http_request_t, ngx_http_top_body_filter, ngx_int_t,
    ngx_pnalloc, ngx_str_t, NGX_ERROR, NGX_OK,
};

use crate::ctx;
use crate::guard::guarded;
use crate::request::{buf_bytes, NgxRequest};
use crate::steps::{log_limited, record, LogFamily};

/// The next body filter in nginx's chain (the same code address in every
/// cycle).
static NEXT_BODY_FILTER: AtomicUsize = AtomicUsize::new(0);

/// Marks graft's output buffers (nginx's `ngx_buf_tag_t`).
static TAG: u8 = 0;

/// Puts graft's body filter at the top of nginx's chain (from the module's
/// postconfiguration, once per cycle).
///
/// # Safety
/// Called while nginx configures, in its one thread.
pub unsafe fn install_body_filter() {
    // SAFETY: the caller's contract: nginx's filter chain is written only
    // while it configures, and read by requests after.
    unsafe {
        if let Some(next) = ngx_http_top_body_filter {
            if next as usize != body_filter as *const () as usize {
                NEXT_BODY_FILTER.store(next as usize, Ordering::Relaxed);
            }
        }
        ngx_http_top_body_filter = Some(body_filter);
    }
}

fn str_bytes(s: &ngx_str_t) -> &[u8] {
    if s.len == 0 || s.data.is_null() {
        &[]
    } else {
        // SAFETY: a non-empty ngx_str_t of a live request points at `len`
        // bytes that live as long as the request.
        unsafe { std::slice::from_raw_parts(s.data, s.len) }
    }
}

/// From the header filter, for a main request the pipeline ran for: which
/// of the zone's body steps Rust serves for this response, and their
/// rewriters. Counts `rust` for a body Rust rewrites, `untouched` for one
/// it leaves as it is (not HTML, compressed), a failure to start as an
/// error (the body then passes as it is).
pub fn start(r: &mut ngx_http_request_t, zone: &Zone) {
    let Some(ctx) = ctx::existing(r) else {
        return;
    };
    if !ctx.body_steps.is_empty() || r.header_only() != 0 {
        return;
    }
    let steps: Vec<(usize, &graft_engine::Step)> = zone
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.module.rewrites_bodies())
        .collect();
    if steps.is_empty() {
        return;
    }
    let content_type = str_bytes(&r.headers_out.content_type);
    // SAFETY: content_encoding is null or a header element of this
    // response; `hash == 0` marks a removed one.
    let content_encoding = unsafe { r.headers_out.content_encoding.as_ref() }
        .filter(|h| h.hash != 0)
        .map(|h| str_bytes(&h.value));
    let head = ResponseHead {
        status: u16::try_from(r.headers_out.status).unwrap_or(0),
        content_type: Some(content_type).filter(|c| !c.is_empty()),
        content_encoding,
    };
    let mut body_steps = smallvec::SmallVec::new();
    let mut rewriters = Vec::new();
    let mut shadows = Vec::new();
    for (i, step) in steps {
        let mode = step.mode_for(&NgxRequest::new(r));
        let rust = mode == Mode::Rust;
        body_steps.push((i, rust, false));
        if !rust && mode != Mode::Shadow {
            continue;
        }
        match start_response_body(step, &head) {
            Ok(Some(rw)) if !rust => shadows.push(ctx::ShadowBody {
                step: i,
                rewriter: rw,
                hash: Default::default(),
                len: 0,
                failed: None,
                done: None,
            }),
            // The request phase counted which side served the request.
            Ok(Some(rw)) => rewriters.push((i, rw)),
            // In shadow the Lua side, which serves, counts it.
            Ok(None) if rust => step.counters.add(Count::Untouched),
            Ok(None) => {}
            Err(why) => {
                record(r, &zone.name, step, Count::Failed);
                log_limited(
                    r,
                    LogFamily::Failure,
                    format_args!(
                        "graft: zone \"{}\" module \"{}\" {why}: the response body passes as it is",
                        zone.name, step.module_name
                    ),
                );
            }
        }
    }
    if !rewriters.is_empty() {
        // As ngx_http_clear_content_length, ngx_http_clear_accept_ranges.
        r.headers_out.content_length_n = -1;
        // SAFETY: content_length is null or a header element of this
        // response; a zero hash removes it from the response.
        if let Some(h) = unsafe { r.headers_out.content_length.as_mut() } {
            h.hash = 0;
        }
        r.headers_out.content_length = std::ptr::null_mut();
        r.set_allow_ranges(0);
        r.set_filter_need_in_memory(1);
        // The body is not the one its validators name (as sub_filter
        // drops Last-Modified; the ETag goes too).
        r.headers_out.last_modified_time = -1;
        for h in [&mut r.headers_out.last_modified, &mut r.headers_out.etag] {
            // SAFETY: null or a header element of this response; a zero
            // hash removes it from the response.
            if let Some(e) = unsafe { h.as_mut() } {
                e.hash = 0;
            }
            *h = std::ptr::null_mut();
        }
    }
    if !shadows.is_empty() {
        r.set_filter_need_in_memory(1);
    }
    // The record again: `record` may have logged through the request.
    if let Some(ctx) = ctx::existing(r) {
        ctx.body_steps = body_steps;
        ctx.rewriters = rewriters;
        ctx.shadows = shadows;
    }
}

/// Whether Rust serves step `step` of the response's body phase (`None`:
/// the header filter did not decide, the step has no body phase, or no
/// pipeline ran for the request). The Lua side asks for the steps it
/// takes: a step left to Lua that no Lua filter took is a failure.
pub fn rust_serves(r: &ngx_http_request_t, step: usize) -> Option<bool> {
    let entry = ctx::existing(r)?
        .body_steps
        .iter_mut()
        .find(|(i, _, _)| *i == step)?;
    if !entry.1 {
        entry.2 = true;
    }
    Some(entry.1)
}

/// Mode `shadow`: compares the body the Lua side wrote for step `index`
/// with what Rust wrote beside it (by hash and length), counting and
/// logging a difference (a match is the request phase's to count).
pub fn compare(r: &ngx_http_request_t, zone: &Zone, index: usize, lua: &[u8]) {
    let Some(ctx) = ctx::existing(r) else {
        return;
    };
    let Some(sh) = ctx.shadows.iter().find(|s| s.step == index) else {
        return;
    };
    let mut h = std::collections::hash_map::DefaultHasher::default();
    std::hash::Hasher::write(&mut h, lua);
    let lua_seen = (std::hash::Hasher::finish(&h), lua.len() as u64);
    let rust = match (&sh.failed, sh.done) {
        (Some(why), _) => Err(why.clone()),
        (None, Some(done)) => Ok(done),
        (None, None) => Err("did not see the body's end".to_string()),
    };
    if rust == Ok(lua_seen) {
        return;
    }
    let Some(step) = zone.steps.get(index) else {
        return;
    };
    record(r, &zone.name, step, Count::ShadowDiff);
    let rust = match rust {
        Ok((_, len)) => format!("{len} bytes"),
        Err(why) => why,
    };
    log_limited(
        r,
        LogFamily::Diff,
        format_args!(
            "graft: shadow diff: zone \"{}\" module \"{}\" response body: lua {} bytes, rust {rust}, not the same",
            zone.name,
            step.module_name,
            lua.len()
        ),
    );
}

/// Counts and logs, once, each body step left to Lua for this response
/// that no Lua header filter took (the location runs none): its body
/// passed as it was.
fn check_lua_took(r: &ngx_http_request_t) {
    let Some(ctx) = ctx::existing(r) else {
        return;
    };
    let config = ctx.config.clone();
    let Some(zone) = ctx.ran_zones.last().and_then(|&z| config.zones.get(z)) else {
        return;
    };
    let missed: Vec<usize> = ctx
        .body_steps
        .iter_mut()
        .filter(|(_, rust, took)| !rust && !took)
        .map(|e| {
            e.2 = true;
            e.0
        })
        .collect();
    for i in missed {
        let Some(step) = zone.steps.get(i) else {
            continue;
        };
        record(r, &zone.name, step, Count::Failed);
        log_limited(
            r,
            LogFamily::Failure,
            format_args!(
                "graft: zone \"{}\" module \"{}\" is served by Lua for this response, but no Lua filter took it (this location runs no graft.header_filter() and graft.body_filter()): the response body passes as it is",
                zone.name, step.module_name
            ),
        );
    }
}

unsafe extern "C" fn body_filter(r: *mut ngx_http_request_t, input: *mut ngx_chain_t) -> ngx_int_t {
    // SAFETY: nginx calls body filters with a live request and its chain.
    let req = unsafe { &mut *r };
    // No chain: nginx's writer flushing what the filters below hold (a
    // slow client). It goes down as it came, or the response stalls.
    let out = if input.is_null() {
        Ok(None)
    } else {
        guarded(Err(()), || rewrite_chain(req, input))
    };
    let (chain, ours) = match out {
        // Nothing to pass on yet (the rewriters hold a tag they are
        // reading): nothing is called below. lua-nginx-module before
        // 0.10.29 leaves its context set to body_filter_by_lua when its
        // filter is called with no chain, and the content handler's next
        // ngx.print or ngx.flush then fails (its commit 0581262).
        Ok(Some(chain)) if chain.is_null() => return NGX_OK as ngx_int_t,
        Ok(Some(chain)) => (chain, true),
        Ok(None) => (input, false),
        Err(()) => return NGX_ERROR as ngx_int_t,
    };
    let next = NEXT_BODY_FILTER.load(Ordering::Relaxed);
    // SAFETY: set in postconfiguration to the filter that was at the top
    // of nginx's chain before ours: a function of that type.
    let rc = unsafe {
        match std::mem::transmute::<usize, ngx_http_output_body_filter_pt>(next) {
            Some(f) => f(r, chain),
            None => return NGX_ERROR as ngx_int_t,
        }
    };
    let ours = ours || (input.is_null() && ctx::existing(req).is_some_and(|c| !c.busy.is_null()));
    if ours {
        if let Some(ctx) = ctx::existing(req) {
            {
                let mut sent = chain;
                // SAFETY: the chains are this request's, made from its
                // pool; nginx's helper moves what the next filter sent
                // from busy to free, by graft's tag.
                unsafe {
                    ngx_chain_update_chains(
                        req.pool,
                        &mut ctx.free,
                        &mut ctx.busy,
                        &mut sent,
                        &TAG as *const u8 as *mut std::ffi::c_void,
                    )
                };
            }
        }
    }
    rc
}

/// The bytes of one buffer nginx gave the filter (from memory, or from
/// the file a static response is sent from: this filter runs above
/// nginx's copy filter), marked consumed.
///
/// # Safety
/// `b` is a live buffer of the request's response chain.
unsafe fn take(b: &mut ngx_buf_t, into: &mut Vec<u8>) -> std::io::Result<()> {
    // SAFETY: the caller's contract, which is buf_bytes'.
    unsafe { buf_bytes(b, usize::MAX, into)? };
    b.pos = b.last;
    b.file_pos = b.file_last;
    Ok(())
}

/// The chain to pass on in place of `input`: what the rewriters wrote of
/// it (`None`: no rewriter, pass `input` as it is).
fn rewrite_chain(
    r: &mut ngx_http_request_t,
    input: *mut ngx_chain_t,
) -> Result<Option<*mut ngx_chain_t>, ()> {
    if !std::ptr::eq(r, r.main) {
        return Ok(None);
    }
    let Some(ctx) = ctx::existing(r) else {
        return Ok(None);
    };
    if ctx.body_steps.iter().any(|(_, rust, took)| !rust && !took) {
        check_lua_took(r);
    }
    let Some(ctx) = ctx::existing(r) else {
        return Ok(None);
    };
    if ctx.rewriters.is_empty() && ctx.shadows.is_empty() {
        return Ok(None);
    }
    let (mut data, mut last, mut flush) = (Vec::new(), false, false);
    let mut cl = input;
    // SAFETY: the chain nginx passed: links to live buffers, ending in null.
    unsafe {
        while let Some(link) = cl.as_ref() {
            if let Some(b) = link.buf.as_mut() {
                if let Err(e) = take(b, &mut data) {
                    log_limited(
                        r,
                        LogFamily::Failure,
                        format_args!(
                            "graft: the response body cannot be read for its rewriters: {e}"
                        ),
                    );
                    return Err(());
                }
                last |= b.last_buf() != 0;
                flush |= b.flush() != 0;
            }
            cl = link.next;
        }
    }
    let config = ctx.config.clone();
    let zone = ctx.ran_zones.last().and_then(|&z| config.zones.get(z));
    let mut failed = Vec::new();
    for (k, (i, rw)) in ctx.rewriters.iter_mut().enumerate() {
        let Some(step) = zone.and_then(|z| z.steps.get(*i)) else {
            continue;
        };
        let mut out = Vec::with_capacity(data.len() + 64);
        let result = guarded_module(step, || {
            rw.write(&data, &mut out)?;
            if last {
                rw.end(&mut out)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => data = out,
            Err(why) => failed.push((k, *i, why)),
        }
    }
    for (k, i, why) in failed.into_iter().rev() {
        ctx.rewriters.remove(k);
        if let Some((zone, step)) = zone.and_then(|z| z.steps.get(i).map(|s| (z, s))) {
            record(r, &zone.name, step, Count::Failed);
            log_limited(
                r,
                LogFamily::Failure,
                format_args!(
                    "graft: zone \"{}\" module \"{}\" {why}: the rest of the response body passes as it is",
                    zone.name, step.module_name
                ),
            );
        }
    }
    let Some(ctx) = ctx::existing(r) else {
        return Err(());
    };
    // Shadows rewrite what Lua's steps get (after Rust's), keeping a hash.
    for sh in ctx
        .shadows
        .iter_mut()
        .filter(|s| s.failed.is_none() && s.done.is_none())
    {
        let Some(step) = zone.and_then(|z| z.steps.get(sh.step)) else {
            continue;
        };
        let mut out = Vec::new();
        let rw = &mut sh.rewriter;
        match guarded_module(step, || {
            rw.write(&data, &mut out)?;
            if last {
                rw.end(&mut out)?;
            }
            Ok(())
        }) {
            Ok(()) => {
                std::hash::Hasher::write(&mut sh.hash, &out);
                sh.len += out.len() as u64;
                if last {
                    sh.done = Some((std::hash::Hasher::finish(&sh.hash), sh.len));
                }
            }
            Err(why) => sh.failed = Some(why),
        }
    }
    if data.is_empty() && !last && !flush {
        return Ok(Some(std::ptr::null_mut()));
    }
    // SAFETY: the request's pool; a free link's buffer is graft's own
    // (tagged) or a fresh zeroed one; memory for it comes from the pool
    // when it has none or too little, and is written before it is read.
    unsafe {
        let link = ngx_chain_get_free_buf(r.pool, &mut ctx.free);
        let Some(link) = link.as_mut() else {
            return Err(());
        };
        let Some(b) = link.buf.as_mut() else {
            return Err(());
        };
        let room = if b.start.is_null() {
            0
        } else {
            usize::try_from(b.end.offset_from(b.start)).unwrap_or(0)
        };
        if room < data.len() {
            // Rounded up, so that growing chunks take a few allocations
            // from the pool, not one each.
            let size = data.len().next_power_of_two().max(4096);
            let mem = ngx_pnalloc(r.pool, size) as *mut u8;
            if mem.is_null() {
                return Err(());
            }
            b.start = mem;
            b.end = mem.add(size);
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), b.start, data.len());
        b.pos = b.start;
        b.last = b.start.add(data.len());
        b.tag = &TAG as *const u8 as *mut std::ffi::c_void;
        // An empty buffer that only ends or flushes the body is a special
        // one: no memory flags, or nginx's writer calls it a zero-size
        // buffer.
        let has_data = u32::from(!data.is_empty());
        b.set_temporary(has_data);
        b.set_recycled(has_data);
        b.set_last_buf(u32::from(last));
        b.set_flush(u32::from(flush && !last));
        link.next = std::ptr::null_mut();
        if last {
            // Done: a later call (nginx flushing) passes through.
            ctx.rewriters.clear();
        }
        Ok(Some(link))
    }
}
