//! `graft_admin_token`: the credential of the admin API, and the guard
//! that checks every admin call against it (`graft_engine::admin` says
//! what is refused, and why).
//!
//! ```nginx
//! graft_admin_token /etc/graft/admin.token;
//! ```
//!
//! The file is read once, by the master, when nginx reads its
//! configuration (a reload reads it again): it must not be readable by
//! every local user, and holds one token of at least 32 printable bytes.
//! Without the directive, the admin API refuses every call.
use std::ffi::{c_char, c_void};
use std::ops::ControlFlow;
use std::os::unix::fs::PermissionsExt;
use std::ptr::null_mut;

use graft_contract::RequestView;
use graft_engine::admin::{judge, parse_token, Call};
use ngx::ffi::{ngx_command_t, ngx_conf_full_name, ngx_conf_t, ngx_http_request_t, ngx_int_t};
use ngx::ffi::{NGX_LOG_EMERG, NGX_OK};
use ngx::ngx_conf_log_error;

use crate::conf::{current_config, main_conf, main_directive, NGX_CONF_ERROR};
use crate::guard::guarded;
use crate::request::NgxRequest;
use crate::steps::{log_limited, LogFamily};

/// `graft_admin_token <file>;`
pub unsafe extern "C" fn set_admin_token(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guarded(NGX_CONF_ERROR, || {
        // SAFETY: nginx calls a directive's handler with graft's main conf;
        // graft_admin_token takes one argument (NGX_CONF_TAKE1).
        let (mcf, args) = unsafe { main_directive(cf, conf) };
        if mcf.admin_token.is_some() {
            return c"is duplicate".as_ptr() as *mut c_char;
        }
        // SAFETY: `cf` is the configuration being read (the caller's).
        match unsafe { secret_file(cf, "graft_admin_token", args[1]) } {
            Some(token) => {
                mcf.admin_token = Some(token);
                null_mut()
            }
            None => NGX_CONF_ERROR,
        }
    })
}

/// Reads a secret a directive names (the admin token, graft-edge's key):
/// a file, not readable by every local user, holding one token of at
/// least 32 printable bytes (`graft_engine::admin::parse_token`). Read
/// once, by the master, when nginx reads its configuration (a reload reads
/// it again). `None`: refused, and logged naming the directive and file.
///
/// # Safety
/// `cf` is the configuration nginx is reading.
pub unsafe fn secret_file(
    cf: *mut ngx_conf_t,
    directive: &str,
    mut name: ngx::ffi::ngx_str_t,
) -> Option<Vec<u8>> {
    // SAFETY: resolves `name` against the configuration prefix into
    // memory from the cycle's pool (`cf` is live: # Safety).
    if unsafe { ngx_conf_full_name((*cf).cycle, &mut name, 1) } != NGX_OK as ngx_int_t {
        return None;
    }
    let path = name.to_string();
    let refuse = |why: &str| {
        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{directive} \"{path}\": {why}");
        None
    };
    let meta = match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return refuse("not a file"),
        Err(e) => return refuse(&e.to_string()),
    };
    if meta.permissions().mode() & 0o007 != 0 {
        return refuse(&format!(
            "mode {:o} lets every local user read or write it: chmod 0640 (root and the agent's group)",
            meta.permissions().mode() & 0o777
        ));
    }
    match std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|t| parse_token(&t))
    {
        Ok(t) => Some(t),
        Err(e) => refuse(&e),
    }
}

/// Checks an admin call: `Ok` to serve it, or the status it is refused
/// with (counted by reason, and logged within the failure lines' budget).
pub fn check(r: &ngx_http_request_t) -> Result<(), u16> {
    let token = main_conf(r).and_then(|m| m.admin_token.as_deref());
    let view = NgxRequest::new(r);
    let mut browser_headers = false;
    view.for_each_header(&mut |name, _| {
        let name = name.trim_ascii();
        if name.eq_ignore_ascii_case(b"origin")
            || name
                .get(..10)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"sec-fetch-"))
        {
            browser_headers = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    let call = Call {
        host: view.header(b"host"),
        browser_headers,
        content_type: view.header(b"content-type"),
        authorization: view.header(b"authorization"),
    };
    let Err(refusal) = judge(token, &call) else {
        return Ok(());
    };
    if let Some(config) = current_config(r) {
        config.count_admin_refused(refusal);
    }
    log_limited(
        r,
        LogFamily::Failure,
        format_args!("graft: admin API: {}", refusal.why()),
    );
    Err(refusal.status())
}
