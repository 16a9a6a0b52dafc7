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
//! graft-edge could not serve. Accepted or not, the header is removed
//! before anything else reads the request: the key never reaches an
//! origin or a log of request headers. A refused header gains nothing:
//! every step runs, and the refusal is counted and logged.
use std::ffi::{c_char, c_void};
use std::ptr::null_mut;

use graft_contract::RequestView;
use graft_engine::edge::{judge, Refusal, HEADER};
use ngx::ffi::{ngx_command_t, ngx_conf_t, ngx_http_request_t};

use crate::conf::{main_conf, main_directive, NGX_CONF_ERROR};
use crate::ctx;
use crate::guard::guarded;
use crate::headers::remove_request_header;
use crate::request::NgxRequest;
use crate::steps::{log_limited, LogFamily};

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

/// Judges the request's `Graft-Edge` header once per main request, before
/// its pipeline runs (the native access handler, the Lua bridge's resume,
/// a handler's `graft.decide`): removes it, and on a hand-off this server
/// accepts marks the steps graft-edge ran as run.
///
/// # Safety
/// `r` is a live request, not borrowed elsewhere during the call.
pub unsafe fn judge_once(r: *mut ngx_http_request_t) {
    // SAFETY: the caller's contract.
    let Some(r) = (unsafe { r.as_mut() }) else {
        return;
    };
    if !std::ptr::eq(r, r.main) {
        return;
    }
    match ctx::of(r) {
        Some(c) if !c.edge_judged => c.edge_judged = true,
        _ => return,
    }
    let Some(value) = NgxRequest::new(r).header(b"graft-edge").map(<[u8]>::to_vec) else {
        return;
    };
    remove_request_header(&mut r.headers_in.headers, HEADER);
    let r: &ngx_http_request_t = r;
    let key = main_conf(r).and_then(|m| m.edge_key.as_deref());
    let Some(ctx) = ctx::of(r) else {
        return;
    };
    let config = ctx.config.clone();
    let refused = match judge(&value, key) {
        Ok(handoff) => match config.zone_named(handoff.zone) {
            Some(zone) if handoff.from <= config.zones[zone].steps.len() => {
                for step in 0..handoff.from {
                    if !ctx.claimed.contains(&(zone, step)) {
                        ctx.claimed.push((zone, step));
                    }
                }
                None
            }
            _ => Some(Refusal::Malformed),
        },
        Err(refusal) => Some(refusal),
    };
    config.count_edge_handoff(refused);
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
