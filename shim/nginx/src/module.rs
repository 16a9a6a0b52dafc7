//! The nginx module itself: its `ngx_module_t`, directives and phase
//! handlers. The top of the crate: it names every handler, and no other
//! file imports it (they find the module through `conf::Graft`).
use std::ffi::{c_char, c_void};
use std::ptr::{addr_of, addr_of_mut, null_mut};

use ngx::core::Pool;
use ngx::ffi::{
    ngx_array_push, ngx_command_t, ngx_conf_set_flag_slot, ngx_conf_set_str_slot, ngx_conf_t,
    ngx_http_conf_ctx_t, ngx_http_core_main_conf_t, ngx_http_core_module, ngx_http_handler_pt,
    ngx_http_module_t, ngx_http_phases, ngx_http_phases_NGX_HTTP_ACCESS_PHASE,
    ngx_http_phases_NGX_HTTP_LOG_PHASE, ngx_http_phases_NGX_HTTP_POST_READ_PHASE,
    ngx_http_phases_NGX_HTTP_PRECONTENT_PHASE, ngx_int_t, ngx_module_t, ngx_uint_t, NGX_CONF_1MORE,
    NGX_CONF_FLAG, NGX_CONF_TAKE1, NGX_CONF_TAKE12, NGX_ERROR, NGX_HTTP_LOC_CONF,
    NGX_HTTP_MAIN_CONF, NGX_HTTP_MODULE, NGX_HTTP_SRV_CONF, NGX_OK,
};
use ngx::ngx_string;

use crate::conf::{LocConf, MainConf};
use crate::guard::guarded;
use crate::{admin_auth, capture, edge, live, location, log_phase, native, rewrite};

// The module context names graft's own functions rather than the defaults
// of ngx's `HttpModule` trait: create_main_conf also registers the module
// for `conf::Graft` (conf.rs, below every file that uses it, cannot name this static), and
// merge_loc_conf needs nginx's conf to refuse a `graft_scope` with its file
// and line, which ngx's `Merge` does not pass.
static NGX_HTTP_GRAFT_MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: None,
    postconfiguration: Some(postconfiguration),
    create_main_conf: Some(create_main_conf),
    init_main_conf: Some(init_main_conf),
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(location::create_loc_conf),
    merge_loc_conf: Some(location::merge_loc_conf),
};

static mut NGX_HTTP_GRAFT_COMMANDS: [ngx_command_t; 9] = [
    ngx_command_t {
        name: ngx_string!("graft_capture"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE) as ngx_uint_t,
        set: Some(capture::set_capture),
        conf: 0, // NGX_HTTP_MAIN_CONF_OFFSET
        offset: 0,
        post: null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("graft_admin_token"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(admin_auth::set_admin_token),
        conf: 0, // NGX_HTTP_MAIN_CONF_OFFSET
        offset: 0,
        post: null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("graft_edge_key"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(edge::set_edge_key),
        conf: 0, // NGX_HTTP_MAIN_CONF_OFFSET
        offset: 0,
        post: null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("graft_log_dir"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE) as ngx_uint_t,
        set: Some(log_phase::set_log_dir),
        conf: 0, // NGX_HTTP_MAIN_CONF_OFFSET
        offset: 0,
        post: null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("graft_shared_memory"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE12) as ngx_uint_t,
        set: Some(live::set_shared_memory),
        conf: 0, // NGX_HTTP_MAIN_CONF_OFFSET
        offset: 0,
        post: null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("graft_config"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(live::set_config),
        conf: 0, // NGX_HTTP_MAIN_CONF_OFFSET
        offset: 0,
        post: null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("graft_native"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_FLAG)
            as ngx_uint_t,
        set: Some(ngx_conf_set_flag_slot),
        conf: std::mem::offset_of!(ngx_http_conf_ctx_t, loc_conf) as ngx_uint_t,
        offset: std::mem::offset_of!(LocConf, native) as ngx_uint_t,
        post: null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("graft_scope"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1)
            as ngx_uint_t,
        set: Some(ngx_conf_set_str_slot),
        conf: std::mem::offset_of!(ngx_http_conf_ctx_t, loc_conf) as ngx_uint_t,
        offset: std::mem::offset_of!(LocConf, scope) as ngx_uint_t,
        post: null_mut(),
    },
    ngx_command_t::empty(),
];

#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_graft_module: ngx_module_t = ngx_module_t {
    ctx: addr_of!(NGX_HTTP_GRAFT_MODULE_CTX) as *mut c_void,
    // SAFETY: only the address is taken; nginx reads the array, never graft.
    commands: unsafe { addr_of_mut!(NGX_HTTP_GRAFT_COMMANDS[0]) },
    type_: NGX_HTTP_MODULE as ngx_uint_t,
    init_module: Some(init_module),
    init_process: Some(live::init_process),
    exit_process: Some(live::exit_process),
    ..ngx_module_t::default()
};

/// After nginx opened a cycle's files, in the master: the capture file is
/// made readable by its owner and group only.
unsafe extern "C" fn init_module(cycle: *mut ngx::ffi::ngx_cycle_t) -> ngx_int_t {
    guarded(NGX_OK as ngx_int_t, || {
        // SAFETY: nginx calls init_module with the cycle it is starting,
        // its configuration read and its files open.
        unsafe { capture::restrict_files(cycle) };
        NGX_OK as ngx_int_t
    })
}

/// After the http block is read (every directive in it, in any order):
/// the graft file's files are under the directories `graft_log_dir`
/// names, or nginx refuses to start or reload.
unsafe extern "C" fn init_main_conf(cf: *mut ngx_conf_t, conf: *mut c_void) -> *mut c_char {
    guarded(crate::conf::NGX_CONF_ERROR, || {
        // SAFETY: nginx passes graft's main conf, made by create_main_conf.
        let mcf = unsafe { &*(conf as *const MainConf) };
        let Some(config) = mcf.config.as_ref().map(|c| c.load_full()) else {
            return null_mut();
        };
        match config.check_files(&mcf.log_dirs) {
            Ok(()) => null_mut(),
            Err(e) => {
                let path = mcf
                    .path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                ngx::ngx_conf_log_error!(ngx::ffi::NGX_LOG_EMERG, cf, "graft: {path}: {e}");
                crate::conf::NGX_CONF_ERROR
            }
        }
    })
}

/// nginx's first call into the module in a cycle: registers the module
/// for `conf::Graft`, and makes the http block's `MainConf`.
unsafe extern "C" fn create_main_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    guarded(null_mut(), || {
        crate::conf::register(addr_of_mut!(ngx_http_graft_module));
        // SAFETY: nginx passes a valid conf whose pool lives as long as the
        // cycle; `allocate` registers a cleanup that drops the value with it.
        let pool = unsafe { Pool::from_ngx_pool((*cf).pool) };
        pool.allocate(MainConf::default()) as *mut c_void
    })
}

/// Registers graft's phase handlers (post-read: graft-edge's hand-off,
/// then the capture; access: the
/// native pipeline; precontent: the native finish; log: the records of
/// the steps Rust serves), its header filter and its body filter.
unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    guarded(NGX_ERROR as ngx_int_t, || {
        let handlers: [(ngx_http_phases, ngx_http_handler_pt); 5] = [
            // Captured as the client sent it, before any step changes it.
            (
                ngx_http_phases_NGX_HTTP_POST_READ_PHASE,
                Some(capture::capture_handler),
            ),
            // Pushed after the capture, so it runs before it (nginx runs a
            // phase's handlers last pushed first): graft-edge's key is
            // never captured, nor read by anything after.
            (
                ngx_http_phases_NGX_HTTP_POST_READ_PHASE,
                Some(edge::post_read_handler),
            ),
            (
                ngx_http_phases_NGX_HTTP_ACCESS_PHASE,
                Some(native::access_handler),
            ),
            (
                ngx_http_phases_NGX_HTTP_PRECONTENT_PHASE,
                Some(native::finish_handler),
            ),
            (
                ngx_http_phases_NGX_HTTP_LOG_PHASE,
                Some(log_phase::log_handler),
            ),
        ];
        // SAFETY: during postconfiguration cf->ctx is the http block's
        // ngx_http_conf_ctx_t, whose main confs hold the core module's, with
        // an array of handlers per phase in the configuration's pool.
        unsafe {
            let ctx = (*cf).ctx as *const ngx_http_conf_ctx_t;
            let cmcf = *(*ctx).main_conf.add(ngx_http_core_module.ctx_index)
                as *mut ngx_http_core_main_conf_t;
            for (phase, handler) in handlers {
                let phase = &mut (*cmcf).phases[phase as usize];
                let h = ngx_array_push(&mut phase.handlers) as *mut ngx_http_handler_pt;
                if h.is_null() {
                    return NGX_ERROR as ngx_int_t;
                }
                *h = handler;
            }
            native::install_header_filter();
            rewrite::install_body_filter();
        }
        NGX_OK as ngx_int_t
    })
}
