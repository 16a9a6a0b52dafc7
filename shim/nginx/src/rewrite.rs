//! The response-body phase: a zone's steps whose module rewrites bodies
//! (`Module::on_response_body`), in Rust, as the body streams through
//! nginx's body filter chain; a step that Lua serves for this response
//! (its mode, a canary, a kill switch) is left to the Lua side's body
//! filter (`graft.body_filter()`), which runs after this one.
//!
//! The header filter (`start`) decides per step, once a response, and for
//! a body it rewrites takes `Content-Length` away (the length changes),
//! turns ranges off and asks nginx for the body in memory (as `sub_filter`
//! does). The body filter then feeds the body through the rewriters in
//! step order, in slices of `SLICE` bytes, and passes on what they wrote
//! in a few buffers of its own (`OUT_BUFS`), reused; while all of them
//! wait for the client it takes no more input and leaves it unconsumed,
//! so that a large file or an unbuffered upstream waits too, as nginx's
//! gzip filter does: what a response holds is bounded (`graft_engine::body_phase::MAX_HELD`), not
//! its body's length. A rewriter that fails or panics, or writes past
//! that bound, is counted and logged, and the rest of the body passes as
//! it is (what it held of a tag it was reading is lost); the step's
//! failure policy cannot answer, the response having started.
use std::sync::atomic::{AtomicUsize, Ordering};

use graft_contract::ResponseHead;
use graft_engine::body_phase::{bounded, Failed, Rewriters};
use graft_engine::protocol::later::{Phase, Side};
use graft_engine::{guarded_module, start_response_body, Count, Zone};
use ngx::ffi::{
    ngx_alloc_chain_link, ngx_buf_t, ngx_chain_add_copy, ngx_chain_t, ngx_chain_update_chains,
    ngx_create_temp_buf, ngx_http_output_body_filter_pt, ngx_http_request_t,
    ngx_http_top_body_filter, ngx_int_t, ngx_str_t, NGX_AGAIN, NGX_ERROR, NGX_OK,
};

use crate::ctx::{self, Stream};
use crate::guard::guarded;
use crate::request::buf_bytes;
use crate::steps::{
    body_rewriter_failed, check_later_taken, later_failed, later_side, log_limited, record,
    LogFamily,
};

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

/// What the response-body phase knows of this response.
fn response_head(r: &ngx_http_request_t) -> ResponseHead<'_> {
    let content_type = str_bytes(&r.headers_out.content_type);
    // SAFETY: content_encoding is null or a header element of this
    // response; `hash == 0` marks a removed one.
    let content_encoding = unsafe { r.headers_out.content_encoding.as_ref() }
        .filter(|h| h.hash != 0)
        .map(|h| str_bytes(&h.value));
    ResponseHead {
        status: crate::headers::response_status(r),
        content_type: Some(content_type).filter(|c| !c.is_empty()),
        content_encoding,
    }
}

/// A response Rust rewrites: its length, ranges and validators no longer
/// hold (as ngx_http_clear_content_length, ngx_http_clear_accept_ranges,
/// and sub_filter's dropping Last-Modified; the ETag goes too).
fn will_rewrite(r: &mut ngx_http_request_t) {
    r.headers_out.content_length_n = -1;
    // SAFETY: content_length is null or a header element of this
    // response; a zero hash removes it from the response.
    if let Some(h) = unsafe { r.headers_out.content_length.as_mut() } {
        h.hash = 0;
    }
    r.headers_out.content_length = std::ptr::null_mut();
    r.set_allow_ranges(0);
    r.set_filter_need_in_memory(1);
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

/// From the header filter, for a main request the pipeline ran for: which
/// of the zone's body steps Rust serves for this response, and their
/// rewriters. Counts `rust` for a body Rust rewrites, `untouched` for one
/// it leaves as it is (not HTML, compressed), a failure to start as an
/// error (the body then passes as it is).
pub fn start(r: &mut ngx_http_request_t, zone_index: usize, zone: &Zone) {
    let Some(ctx) = ctx::existing(r) else {
        return;
    };
    if !zone.later.response_body || ctx.body_started || r.header_only() != 0 {
        return;
    }
    ctx.body_started = true;
    let steps: Vec<(usize, &graft_engine::Step)> = zone
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.module.rewrites_bodies())
        .collect();
    if steps.is_empty() {
        return;
    }
    let head = response_head(r);
    let mut rewriters = Rewriters::default();
    let mut shadows = Vec::new();
    for (i, step) in steps {
        match later_side(r, zone_index, &zone.name, i, step, Phase::ResponseBody) {
            // The request phase counted which side served the request.
            Some(Side::Rust) => {
                if let Err(why) = rewriters.start_step(i, step, &head) {
                    later_failed(r, &zone.name, step, Phase::ResponseBody, &why, true);
                }
            }
            // Lua serves, and counts it; Rust's output is only hashed.
            Some(Side::Shadow) => match start_response_body(step, &head) {
                Ok(Some(rw)) => shadows.push(ctx::ShadowBody {
                    step: i,
                    rewriter: rw,
                    hash: Default::default(),
                    len: 0,
                    failed: None,
                    done: None,
                }),
                Ok(None) => {}
                Err(why) => later_failed(r, &zone.name, step, Phase::ResponseBody, &why, false),
            },
            Some(Side::Legacy) | None => {}
        }
    }
    if !rewriters.is_empty() {
        will_rewrite(r);
    }
    if !shadows.is_empty() {
        r.set_filter_need_in_memory(1);
    }
    // The record again: `record` may have logged through the request.
    if let Some(ctx) = ctx::existing(r) {
        ctx.rewriters = rewriters;
        ctx.shadows = shadows;
    }
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

/// How much of the body the filter reads at once and feeds to the
/// rewriters: a static file's one buffer (the whole file), or an
/// upstream's, is taken slice by slice.
const SLICE: usize = 16 * 1024;
/// graft's output buffers for one response: at most `OUT_BUFS` of
/// `OUT_SIZE` bytes, reused. When they all wait below (for the client),
/// the filter takes no more of its input, which stays unconsumed: who
/// made it (an upstream, the Lua module) waits as well.
const OUT_SIZE: usize = 32 * 1024;
const OUT_BUFS: usize = 4;
/// graft's bit in `r->buffered` while it holds some of the body (nginx's
/// own bits there: SSI 0x01, sub_filter 0x02, the copy filter 0x04).
const BUFFERED: u32 = 0x08;

impl Stream {
    /// Whether the filter holds some of the body it has not passed on.
    fn holds(&self) -> bool {
        !self.input.is_null()
            || self.at < self.pending.len()
            || self.flush
            || self.last && !self.done
    }
}

unsafe extern "C" fn body_filter(r: *mut ngx_http_request_t, input: *mut ngx_chain_t) -> ngx_int_t {
    match guarded(Err(()), || stream(r, input)) {
        Ok(Some(rc)) => rc,
        // SAFETY: nginx's own request and chain, passed on as they came.
        Ok(None) => unsafe { next(r, input) },
        Err(()) => NGX_ERROR as ngx_int_t,
    }
}

/// Calls the next body filter in nginx's chain.
///
/// # Safety
/// `r` is a live request and `chain` null or a chain of its response.
unsafe fn next(r: *mut ngx_http_request_t, chain: *mut ngx_chain_t) -> ngx_int_t {
    let next = NEXT_BODY_FILTER.load(Ordering::Relaxed);
    // SAFETY: set in postconfiguration to the filter that was at the top
    // of nginx's chain before ours: a function of that type; the caller's
    // contract for the arguments.
    unsafe {
        match std::mem::transmute::<usize, ngx_http_output_body_filter_pt>(next) {
            Some(f) => f(r, chain),
            None => NGX_ERROR as ngx_int_t,
        }
    }
}

/// Moves graft's output buffers the filters below are done with from
/// `busy` to `free`, with `sent` (what was just passed on) added to `busy`.
fn update_chains(r: &ngx_http_request_t, sent: *mut ngx_chain_t) -> Result<(), ()> {
    let ctx = ctx::existing(r).ok_or(())?;
    let mut sent = sent;
    // SAFETY: the chains are this request's, made from its pool; nginx's
    // helper moves, by graft's tag, what the next filter is done with.
    unsafe {
        ngx_chain_update_chains(
            r.pool,
            &mut ctx.free,
            &mut ctx.busy,
            &mut sent,
            &TAG as *const u8 as *mut std::ffi::c_void,
        )
    };
    Ok(())
}

/// The body filter for a response graft rewrites: `None` when graft has
/// nothing of it (no rewriter, nothing held), and `input` passes on as it
/// came.
///
/// Like nginx's gzip filter: the input is queued unconsumed, fed to the
/// rewriters a slice at a time while an output buffer is free, and what
/// they wrote goes on in graft's buffers; when all of them wait below,
/// the rest waits in the queue (`r->buffered` says so) until nginx calls
/// again (its writer, once the client took some: `input` is then null).
fn stream(rp: *mut ngx_http_request_t, input: *mut ngx_chain_t) -> Result<Option<ngx_int_t>, ()> {
    // SAFETY: nginx calls body filters with a live request. The next
    // filter writes through `rp` (r->out, r->buffered): `r` is borrowed
    // again after each call to it, never held across one.
    let mut r: &ngx_http_request_t = unsafe { &*rp };
    if !std::ptr::eq(r, r.main) {
        return Ok(None);
    }
    let Some(ctx) = ctx::existing(r) else {
        return Ok(None);
    };
    if ctx.sides.any_not_taken(Phase::ResponseBody) {
        check_later_taken(r, Phase::ResponseBody);
    }
    let Some(ctx) = ctx::existing(r) else {
        return Ok(None);
    };
    let active = !ctx.rewriters.is_empty()
        || ctx
            .shadows
            .iter()
            .any(|s| s.failed.is_none() && s.done.is_none());
    // No chain: nginx's writer flushing what the filters below hold (a
    // slow client). It goes down as it came, or the response stalls; then
    // graft's buffers the client took are free again.
    let flush_below = input.is_null();
    if !active && !ctx.stream.holds() && (!flush_below || ctx.busy.is_null()) {
        return Ok(None);
    }
    if !input.is_null() {
        // SAFETY: the chain nginx passed and the queue are this request's;
        // the links added come from its pool.
        if unsafe { ngx_chain_add_copy(r.pool, &mut ctx.stream.input, input) }
            != NGX_OK as ngx_int_t
        {
            return Err(());
        }
    }
    let mut rc = NGX_OK as ngx_int_t;
    if flush_below {
        // SAFETY: this request, and no chain.
        rc = unsafe { next(rp, std::ptr::null_mut()) };
        // SAFETY: the live request, borrowed again after the call.
        r = unsafe { &*rp };
        if rc == NGX_ERROR as ngx_int_t {
            return Ok(Some(rc));
        }
    }
    update_chains(r, std::ptr::null_mut())?;
    loop {
        let out = fill(r)?;
        if out.is_null() {
            break;
        }
        // SAFETY: this request, and a chain of graft's buffers.
        rc = unsafe { next(rp, out) };
        // SAFETY: the live request, borrowed again after the call.
        r = unsafe { &*rp };
        update_chains(r, out)?;
        if rc == NGX_ERROR as ngx_int_t {
            return Ok(Some(rc));
        }
    }
    let ctx = ctx::existing(r).ok_or(())?;
    let holds = ctx.stream.holds();
    let busy = !ctx.busy.is_null();
    // SAFETY: the live request nginx passed; no reference to it is used
    // across this write of its flags.
    unsafe {
        let flags = (*rp).buffered();
        (*rp).set_buffered(if holds {
            flags | BUFFERED
        } else {
            flags & !BUFFERED
        });
    }
    Ok(Some(if holds || busy {
        NGX_AGAIN as ngx_int_t
    } else {
        rc
    }))
}

/// The output of one round: what is pending goes into free output
/// buffers, more input is fed while there is room, up to a flush or the
/// body's end (which go on at once). Null: nothing to pass on now (all
/// input fed and written out, or no free buffer).
fn fill(r: &ngx_http_request_t) -> Result<*mut ngx_chain_t, ()> {
    let mut out: *mut ngx_chain_t = std::ptr::null_mut();
    let mut tail: *mut ngx_chain_t = std::ptr::null_mut();
    loop {
        let ctx = ctx::existing(r).ok_or(())?;
        // SAFETY: `tail` is null or the last link of `out`, graft's own.
        let room = unsafe { room(tail) };
        let st = &mut ctx.stream;
        if st.at < st.pending.len() {
            if room == 0 {
                let Some(link) = get_buf(r)? else {
                    break;
                };
                // SAFETY: a link and buffer of graft's, from get_buf;
                // `tail` is null or the last link of `out`.
                unsafe { append_buf(&mut out, tail, link, true) };
                tail = link;
                continue;
            }
            // SAFETY: `tail` is the last link of `out` (room is not 0),
            // with `room` bytes free after its buffer's `last`.
            unsafe { write_pending(st, tail, room) };
            continue;
        }
        if st.flush || st.last && !st.done {
            // SAFETY: `tail` is null or the last link of `out`.
            unsafe { end_output(r, &mut out, tail) }?;
            break;
        }
        if st.input.is_null() || st.last {
            break;
        }
        feed_slice(r)?;
    }
    Ok(out)
}

/// The bytes free after the `last` of the output's last buffer (0 with no
/// buffer yet).
///
/// # Safety
/// `tail` is null or the last link of an output chain of graft's.
unsafe fn room(tail: *mut ngx_chain_t) -> usize {
    // SAFETY: the caller's contract: `tail` is null or a link of graft's,
    // and its buffer one of graft's.
    unsafe { tail.as_ref() }
        .and_then(|l| unsafe { l.buf.as_ref() })
        .map_or(0, |b| {
            // SAFETY: a buffer of graft's, `last` within start..end.
            usize::try_from(unsafe { b.end.offset_from(b.last) }).unwrap_or(0)
        })
}

/// Links a free buffer of graft's at the output's end, emptied and its
/// flags cleared: memory flags (`data`) for bytes, none for an empty
/// buffer that only ends or flushes the body, a special one (with them,
/// nginx's writer calls it a zero-size buffer).
///
/// # Safety
/// `link` is a link and buffer of graft's, from `get_buf`; `tail` is null
/// or the last link of `*out`.
unsafe fn append_buf(
    out: &mut *mut ngx_chain_t,
    tail: *mut ngx_chain_t,
    link: *mut ngx_chain_t,
    data: bool,
) {
    // SAFETY: the caller's contract.
    unsafe {
        let b = &mut *(*link).buf;
        b.pos = b.start;
        b.last = b.start;
        b.set_temporary(u32::from(data));
        b.set_recycled(u32::from(data));
        b.set_flush(0);
        b.set_last_buf(0);
        match tail.as_mut() {
            Some(t) => t.next = link,
            None => *out = link,
        }
    }
}

/// Copies as much of the pending output as fits after the last buffer's
/// `last`; the pending bytes are let go once all of them are out.
///
/// # Safety
/// `tail` is a link of graft's whose buffer has `room` bytes free after
/// its `last`.
unsafe fn write_pending(st: &mut Stream, tail: *mut ngx_chain_t, room: usize) {
    let n = room.min(st.pending.len() - st.at);
    // SAFETY: the caller's contract: `room` bytes are free after the tail
    // buffer's `last`, and `n` is at most that.
    unsafe {
        let b = &mut *(*tail).buf;
        std::ptr::copy_nonoverlapping(st.pending.as_ptr().add(st.at), b.last, n);
        b.last = b.last.add(n);
    }
    st.at += n;
    if st.at == st.pending.len() {
        st.pending.clear();
        st.at = 0;
    }
}

/// Marks the output's last buffer (an empty one when there is none yet)
/// as the body's end, or as a flush; with no free buffer, the mark waits
/// for the next round.
///
/// # Safety
/// `tail` is null or the last link of `*out`, graft's own.
unsafe fn end_output(
    r: &ngx_http_request_t,
    out: &mut *mut ngx_chain_t,
    tail: *mut ngx_chain_t,
) -> Result<(), ()> {
    let link = if tail.is_null() {
        let Some(link) = get_buf(r)? else {
            return Ok(());
        };
        // SAFETY: a link and buffer of graft's, from get_buf; no tail.
        unsafe { append_buf(out, tail, link, false) };
        link
    } else {
        tail
    };
    let ctx = ctx::existing(r).ok_or(())?;
    let st = &mut ctx.stream;
    // SAFETY: `link` is the last link of `*out`, graft's own.
    unsafe {
        let b = &mut *(*link).buf;
        if st.last {
            b.set_last_buf(1);
            st.done = true;
        } else {
            b.set_flush(1);
        }
    }
    st.flush = false;
    Ok(())
}

/// A free output buffer of graft's, or a new one while fewer than
/// `OUT_BUFS` were made (`None`: all of them wait below).
fn get_buf(r: &ngx_http_request_t) -> Result<Option<*mut ngx_chain_t>, ()> {
    let ctx = ctx::existing(r).ok_or(())?;
    // SAFETY: `free` holds links and buffers of graft's (the tag) that the
    // filters below are done with; new ones come from the request's pool.
    unsafe {
        if let Some(link) = ctx.free.as_mut() {
            ctx.free = link.next;
            link.next = std::ptr::null_mut();
            return Ok(Some(link));
        }
        if ctx.stream.made >= OUT_BUFS {
            return Ok(None);
        }
        let b = ngx_create_temp_buf(r.pool, OUT_SIZE);
        let link = ngx_alloc_chain_link(r.pool);
        if b.is_null() || link.is_null() {
            return Err(());
        }
        (*b).tag = &TAG as *const u8 as *mut std::ffi::c_void;
        (*link).buf = b;
        (*link).next = std::ptr::null_mut();
        ctx.stream.made += 1;
        Ok(Some(link))
    }
}

/// Whether a buffer's bytes are in memory (else in its file), as
/// `buf_bytes` reads them.
fn in_memory(b: &ngx_buf_t) -> bool {
    b.temporary() != 0 || b.memory() != 0 || b.mmap() != 0 || b.in_file() == 0 || b.file.is_null()
}

/// How many bytes of a buffer are not consumed yet.
fn unread(b: &ngx_buf_t) -> usize {
    if in_memory(b) {
        if b.pos.is_null() || b.last <= b.pos {
            0
        } else {
            // SAFETY: pos and last point into the same buffer.
            usize::try_from(unsafe { b.last.offset_from(b.pos) }).unwrap_or(0)
        }
    } else {
        usize::try_from(b.file_last - b.file_pos).unwrap_or(0)
    }
}

/// Feeds the next slice of the queued input to the rewriters (from memory,
/// or from the file a static response is sent from: this filter runs
/// above nginx's copy filter), marking that much of its buffer consumed.
fn feed_slice(r: &ngx_http_request_t) -> Result<(), ()> {
    let ctx = ctx::existing(r).ok_or(())?;
    let st = &mut ctx.stream;
    let mut slice = std::mem::take(&mut st.slice);
    slice.clear();
    let (mut last, mut flush) = (false, false);
    // SAFETY: the queue's head: a link of graft's to a buffer nginx passed,
    // live until consumed (its maker reuses it only then).
    unsafe {
        let link = &mut *st.input;
        if let Some(b) = link.buf.as_mut() {
            if let Err(e) = buf_bytes(b, SLICE, &mut slice) {
                log_limited(
                    r,
                    LogFamily::Failure,
                    format_args!("graft: the response body cannot be read for its rewriters: {e}"),
                );
                return Err(());
            }
            let n = slice.len();
            if n > 0 {
                if in_memory(b) {
                    b.pos = b.pos.add(n);
                }
                if b.in_file() != 0 {
                    b.file_pos += i64::try_from(n).unwrap_or(0);
                }
            }
            if unread(b) == 0 {
                last = b.last_buf() != 0;
                flush = b.flush() != 0;
            } else if n == 0 {
                // Bytes left that cannot be read: never fed, they would
                // hold the response for ever.
                return Err(());
            }
        }
        if link.buf.as_ref().is_none_or(|b| unread(b) == 0) {
            st.input = link.next;
            // As ngx_free_chain: the link goes back to the pool.
            link.next = (*r.pool).chain;
            (*r.pool).chain = link;
        }
    }
    if last {
        // Nothing comes after the body's end.
        st.input = std::ptr::null_mut();
        st.last = true;
    }
    st.flush |= flush;
    if slice.is_empty() && !last {
        st.slice = slice;
        return Ok(());
    }
    let written = rewrite_slice(r, &slice, last);
    let ctx = ctx::existing(r).ok_or(())?;
    ctx.stream.slice = slice;
    ctx.stream.pending = written?;
    ctx.stream.at = 0;
    if last {
        // Done: a later call (nginx flushing) passes through.
        ctx.rewriters.clear();
    }
    Ok(())
}

/// What the rewriters write of one slice of the body (`last`: the body's
/// end), in step order; the shadows' output is only hashed. A step that
/// fails, or writes more than `MAX_HELD` from the slice, is counted,
/// logged and dropped: the slice and the rest of the body pass it as they
/// are.
fn rewrite_slice(r: &ngx_http_request_t, slice: &[u8], last: bool) -> Result<Vec<u8>, ()> {
    let ctx = ctx::existing(r).ok_or(())?;
    let config = ctx.config.clone();
    let zone = ctx.ran_zones.last().and_then(|&z| config.zones.get(z));
    let mut failed = Vec::new();
    let data = match zone {
        Some(z) => ctx.rewriters.write(z, slice, last, &mut failed),
        None => slice.to_vec(),
    };
    for Failed { step: i, why } in failed {
        if let Some((zone, step)) = zone.and_then(|z| z.steps.get(i).map(|s| (z, s))) {
            body_rewriter_failed(r, &zone.name, step, &why);
        }
    }
    let ctx = ctx::existing(r).ok_or(())?;
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
            bounded(&out, &data)
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
    Ok(data)
}
