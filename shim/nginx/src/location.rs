//! The module's location configuration (made and merged here; the
//! structure is `conf::LocConf`), and the zone a request is served from:
//! the location's `graft_scope`, else the request's host.
use std::ffi::{c_char, c_void};
use std::ptr::null_mut;

use ngx::core::Pool;
use ngx::ffi::{ngx_conf_t, ngx_http_request_t, NGX_LOG_EMERG};
use ngx::ngx_conf_log_error;

use crate::conf::{config_being_read, loc_conf, LocConf, NGX_CONF_ERROR, NGX_CONF_UNSET};
use crate::ctx::RequestCtx;
use crate::guard::guarded;
use crate::request::NgxRequest;

pub unsafe extern "C" fn create_loc_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    guarded(null_mut(), || {
        // SAFETY: nginx passes a valid conf; `allocate` ties the value's
        // drop to the pool's cleanup.
        let pool = unsafe { Pool::from_ngx_pool((*cf).pool) };
        pool.allocate(LocConf::unset()) as *mut c_void
    })
}

pub unsafe extern "C" fn merge_loc_conf(
    cf: *mut ngx_conf_t,
    prev: *mut c_void,
    conf: *mut c_void,
) -> *mut c_char {
    guarded(NGX_CONF_ERROR, || {
        // SAFETY: nginx passes two location confs made by create_loc_conf.
        let (prev, conf) = unsafe { (&*(prev as *const LocConf), &mut *(conf as *mut LocConf)) };
        // Left unset when no level sets it: `graft_native off` said in so
        // many words is an operator's choice the `satisfy any` rule keeps
        // (`native::access_handler`).
        if conf.native == NGX_CONF_UNSET {
            conf.native = prev.native;
        }
        if conf.scope.data.is_null() {
            conf.scope = prev.scope;
        }
        if !conf.scope.data.is_null() && conf.scope_name().is_none_or(str::is_empty) {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "graft_scope: a zone's name, not empty");
            return NGX_CONF_ERROR;
        }
        // A scope must name a zone of the file graft_config loaded (when
        // it comes first): refused here, with nginx's file and line.
        // SAFETY: during configuration, cf is valid.
        if let (Some(scope), Some(config)) = (conf.scope_name(), unsafe { config_being_read(cf) }) {
            if config.zone_named(scope).is_none() {
                ngx_conf_log_error!(
                    NGX_LOG_EMERG,
                    cf,
                    "graft_scope \"{scope}\": no such zone in {}",
                    config.source.display()
                );
                return NGX_CONF_ERROR;
            }
        }
        null_mut()
    })
}

/// The zone serving the request: its location's `graft_scope`, else its
/// host's zone (or `"*"`), looked up once for a main request (`ctx`), so
/// that a step's edit of the Host header never moves it. `Ok(None)`: no
/// zone serves it. `Err`: the location names a zone the configuration no
/// longer has (a live apply removed it): graft cannot tell which steps
/// apply.
pub fn zone_for(r: &ngx_http_request_t, ctx: &mut RequestCtx) -> Result<Option<usize>, String> {
    if let Some(scope) = loc_conf(r).and_then(|c| c.scope_name()) {
        return ctx.config.zone_named(scope).map(Some).ok_or_else(|| {
            format!("graft_scope \"{scope}\": no such zone in the configuration serving")
        });
    }
    if let Some(z) = ctx.host_zone {
        return Ok(z);
    }
    use graft_contract::RequestView;
    let z = ctx.config.zone_index(NgxRequest::new(r).host());
    // A subrequest shares the main request's record: it never sets it.
    if std::ptr::eq(r, r.main) {
        ctx.host_zone = Some(z);
    }
    Ok(z)
}
