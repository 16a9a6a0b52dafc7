//! FL1's side of graft-edge: `graft_edge_key`, and the `Graft-Edge` header
//! of a request graft-edge passed here (`graft_engine::edge` says what it
//! holds and what is refused).
//!
//! ```nginx
//! graft_edge_key /etc/graft/edge.key;
//! ```
//!
//! An accepted header marks the steps graft-edge ran as run here (a rate
//! limit counts the request once); the pipeline starts at the step
//! graft-edge could not serve, from Lua without asking Rust again when
//! its Rust side did not decide there (`fallback=1`). Accepted or not, the header is removed
//! before anything else reads the request: the key never reaches an
//! origin or a log of request headers. A refused header gains nothing:
//! every step runs, and the refusal is counted and logged.
use std::ffi::{c_char, c_void};
use std::ptr::null_mut;

use graft_engine::edge::{judge, Bound, HandOff, Refusal, HEADER};
use graft_engine::{Count, Mode};
use ngx::ffi::{
    ngx_command_t, ngx_conf_t, ngx_http_request_t, ngx_int_t, ngx_str_t, ngx_time, NGX_DECLINED,
};

use crate::conf::{main_conf, main_directive, NGX_CONF_ERROR};
use crate::ctx;
use crate::guard::guarded;
use crate::headers::{refresh_headers_in, remove_request_header};
use crate::request::NgxRequest;
use crate::steps::{log_limited, record, LogFamily};

/// `graft_edge_key <file>;`: the key graft-edge's hand-offs carry.
pub unsafe extern "C" fn set_edge_key(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guarded(NGX_CONF_ERROR, || {
        // SAFETY: nginx calls a directive's handler with graft's main conf;
        // graft_edge_key takes one argument (NGX_CONF_TAKE1).
        let (mcf, args) = unsafe { main_directive(cf, conf) };
        if mcf.edge_key.is_some() {
            return c"is duplicate".as_ptr() as *mut c_char;
        }
        // SAFETY: `cf` is the configuration being read (the caller's).
        match unsafe { crate::admin_auth::secret_file(cf, "graft_edge_key", args[1]) } {
            Some(key) => {
                mcf.edge_key = Some(key);
                null_mut()
            }
            None => NGX_CONF_ERROR,
        }
    })
}

/// Judges the request's `Graft-Edge` header, first thing in a main
/// request (graft's post-read handler; the access handler, the Lua
/// bridge's resume and `graft.decide` ask again, for a request another
/// post-read handler kept from graft's, and find it judged): removes
/// every copy, and on a hand-off this server accepts marks the
/// steps graft-edge ran as run. Two copies are refused: graft-edge sends
/// one.
///
/// # Safety
/// `r` is a live request, not borrowed elsewhere during the call.
pub unsafe fn judge_once(r: *mut ngx_http_request_t) {
    // SAFETY: the caller's contract.
    let Some(r) = (unsafe { r.as_mut() }) else {
        return;
    };
    if !std::ptr::eq(r, r.main) || !ctx::judge_edge_first(r) {
        return;
    }
    let Some((value, copies)) = edge_header(r) else {
        return;
    };
    remove_request_header(&mut r.headers_in.headers, HEADER);
    // The list moved: nginx's pointers into it (Host, Cookie, ...) follow.
    if refresh_headers_in(r, false).is_none() {
        log_limited(
            r,
            LogFamily::Failure,
            format_args!("graft: no memory to remove a {HEADER} header"),
        );
    }
    let r: &ngx_http_request_t = r;
    let key = main_conf(r).and_then(|m| m.edge_key.as_deref());
    let Some(ctx) = ctx::of(r) else {
        // No graft configuration here: nothing to pass, every step runs.
        return;
    };
    let config = ctx.config.clone();
    // The request as graft-edge sent it: the MAC covers its method and
    // target.
    let bound = Bound {
        method: str_bytes(&r.method_name),
        target: str_bytes(&r.unparsed_uri),
    };
    let now = u64::try_from(ngx_time()).unwrap_or(0);
    let mut fallback = None;
    let judged = if copies > 1 {
        Err(Refusal::Malformed)
    } else {
        judge(&value, bound, key, &config.hash, now)
    };
    let refused = match judged {
        Ok(handoff) => match config.zone_named(handoff.zone) {
            Some(zone) if handoff.from <= config.zones[zone].steps.len() => {
                fallback =
                    take_over(r, ctx, zone, &config.zones[zone], &handoff).map(|step| (zone, step));
                None
            }
            _ => Some(Refusal::Malformed),
        },
        Err(refusal) => Some(refusal),
    };
    config.count_edge_handoff(refused);
    if let Some((zone, step)) = fallback {
        let z = &config.zones[zone];
        record(r, &z.name, &z.steps[step], Count::Fallback);
    }
    if let Some(refusal) = refused {
        log_limited(
            r,
            LogFamily::Failure,
            format_args!(
                "graft: a {HEADER} header was refused ({}): every step runs here",
                refusal.reason()
            ),
        );
    }
}

/// The request's `Graft-Edge` header and how many copies of it came, or
/// `None` when it has none.
fn edge_header(r: &ngx_http_request_t) -> Option<(Vec<u8>, usize)> {
    // One pass over the headers (every request makes it, once: a client
    // may send the header to any server), most names told apart by their
    // length alone.
    let mut copies = 0usize;
    let mut first = None;
    NgxRequest::new(r).for_each_table_elt(|h| {
        if h.key.len >= HEADER.len() {
            let name = crate::request::bytes(&h.key);
            if name.trim_ascii().eq_ignore_ascii_case(HEADER.as_bytes()) {
                copies += 1;
                first.get_or_insert_with(|| crate::request::bytes(&h.value).to_vec());
            }
        }
        std::ops::ControlFlow::Continue(())
    });
    Some((first?, copies))
}

/// An accepted hand-off: the steps graft-edge ran (before `from`) are
/// claimed as run; where this server would ask the same Rust side again
/// (`fallback=1`, the step in `rust` here too), Lua serves the step
/// instead, and its index is returned to be counted as a fallback.
fn take_over(
    r: &ngx_http_request_t,
    ctx: &mut ctx::RequestCtx,
    zone_index: usize,
    zone: &graft_engine::Zone,
    handoff: &HandOff<'_>,
) -> Option<usize> {
    for step in 0..handoff.from {
        if !ctx.claimed.contains(&(zone_index, step)) {
            ctx.claimed.push((zone_index, step));
        }
    }
    let step = zone.steps.get(handoff.from)?;
    if handoff.fallback && step.mode_for(&NgxRequest::new(r)) == Mode::Rust {
        ctx.edge_fallback = Some((zone_index, handoff.from));
        return Some(handoff.from);
    }
    None
}

fn str_bytes(s: &ngx_str_t) -> &[u8] {
    if s.len == 0 || s.data.is_null() {
        return &[];
    }
    // SAFETY: a set ngx_str_t of a live request points at `len` bytes
    // that live as long as the request.
    unsafe { std::slice::from_raw_parts(s.data, s.len) }
}

/// graft's post-read handler for the hand-off: the header is judged and
/// removed before any phase or variable reads the request.
pub unsafe extern "C" fn post_read_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guarded((), || {
        // SAFETY: nginx calls phase handlers with a live request, which
        // nothing else borrows during this call.
        unsafe { judge_once(r) }
    });
    NGX_DECLINED as ngx_int_t
}
