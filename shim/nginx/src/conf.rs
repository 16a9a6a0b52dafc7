//! graft's configuration structures in nginx, and how every other file
//! finds them: below every file that needs them, importing no other file
//! of the crate.
//!
//! The `ngx_module_t` itself is defined in `module.rs`, the top of the
//! crate, because it names every handler; it registers itself here
//! ([`register`]) when nginx creates its main conf, the first call nginx
//! makes into the module in a cycle, before any location conf, worker or
//! request. From then on [`Graft`] is the module as `ngx`'s configuration
//! traits know it, and the lookups below are theirs.
use std::ffi::c_void;
use std::path::PathBuf;
use std::ptr::{null_mut, NonNull};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use graft_engine::Config;
use ngx::ffi::{ngx_conf_t, ngx_flag_t, ngx_http_request_t, ngx_module_t, ngx_str_t};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf};

pub use ngx::core::NGX_CONF_ERROR;

/// The module's main (http-level) configuration.
#[derive(Default)]
pub struct MainConf {
    /// Swapped whole, atomically, when a new file is applied live.
    pub config: Option<ArcSwap<Config>>,
    /// The file `graft_config` names, resolved.
    pub path: Option<PathBuf>,
    /// `graft_shared_memory`: bytes of the step counters and of the
    /// windowed counters, when set.
    pub shared_bytes: Option<(usize, usize)>,
    /// `graft_capture`: a sample of requests written for replays.
    pub capture: Option<Capture>,
    /// `graft_admin_token`: the admin API's credential (`None`: the admin
    /// API refuses every call).
    pub admin_token: Option<Vec<u8>>,
    /// `graft_edge_key`: the key of graft-edge's hand-offs (`None`: a
    /// `Graft-Edge` header is refused, and every step runs).
    pub edge_key: Option<Vec<u8>>,
    /// `graft_log_dir`: the directories files a module writes (request
    /// records) may be in; a configuration naming a file elsewhere is
    /// refused, at load and in a live apply.
    pub log_dirs: Vec<PathBuf>,
    /// The epoch of live applies when this cycle read its file: applies
    /// after it are this cycle's to serve. Kept with the cycle, not in a
    /// static: a reload refused after `graft_config` was read must leave
    /// the running cycle's alone (its respawned workers read it).
    pub cycle_epoch: u64,
    /// This cycle's number in the master (every `graft_config` read
    /// counts one): the workers it started are counted under it.
    pub cycle: u64,
}

/// `graft_capture`'s settings, in the http block's main conf (`capture.rs`
/// parses them and writes the file).
pub struct Capture {
    /// nginx's own log file, opened in the cycle, reopened by `-s reopen`.
    pub file: *mut ngx::ffi::ngx_open_file_t,
    /// One main request in `every` is written.
    pub every: u64,
    /// The file's size past which nothing more is written.
    pub max: u64,
    /// Lower-case names of the headers never written.
    pub drop: Vec<Vec<u8>>,
    /// Lower-case names of the headers written with their values (every
    /// other is written with its value redacted).
    pub keep: Vec<Vec<u8>>,
}

/// nginx's "unset" for a flag, before merging.
pub const NGX_CONF_UNSET: ngx_flag_t = -1;

/// The module's location configuration.
pub struct LocConf {
    /// `graft_native on|off`.
    pub native: ngx_flag_t,
    /// `graft_scope <zone>`: the zone whose steps serve this location,
    /// whatever the host (empty: the host's zone).
    pub scope: ngx_str_t,
}

impl LocConf {
    pub fn unset() -> Self {
        LocConf {
            native: NGX_CONF_UNSET,
            scope: ngx_str_t {
                len: 0,
                data: null_mut(),
            },
        }
    }

    /// The scope's zone name, when `graft_scope` is set.
    pub fn scope_name(&self) -> Option<&str> {
        if self.scope.data.is_null() {
            return None;
        }
        // SAFETY: a string nginx parsed from the configuration, in the
        // cycle's pool, which outlives every request and location conf;
        // merge_loc_conf refused one that is empty or not UTF-8.
        let bytes = unsafe { std::slice::from_raw_parts(self.scope.data, self.scope.len) };
        std::str::from_utf8(bytes).ok()
    }
}

/// graft's nginx module, for `ngx`'s configuration traits.
pub struct Graft;

static MODULE: AtomicPtr<ngx_module_t> = AtomicPtr::new(null_mut());

/// Makes `module` the one [`Graft`] stands for (`module.rs`, from
/// create_main_conf).
pub fn register(module: *mut ngx_module_t) {
    MODULE.store(module, Ordering::Release);
}

/// Whether nginx has made graft's main conf (there is an http block).
pub fn registered() -> bool {
    !MODULE.load(Ordering::Acquire).is_null()
}

impl HttpModule for Graft {
    fn module() -> &'static ngx_module_t {
        let module = NonNull::new(MODULE.load(Ordering::Acquire))
            .expect("nginx creates graft's main conf before anything else calls graft");
        // SAFETY: the module's static, which lives as long as the process;
        // nginx writes its indexes while loading modules, before this
        // first call.
        unsafe { module.as_ref() }
    }
}

// SAFETY: create_main_conf (module.rs) makes every main conf of this module
// a `MainConf`.
unsafe impl HttpModuleMainConf for Graft {
    type MainConf = MainConf;
}

// SAFETY: create_loc_conf (location.rs) makes every location conf of this
// module a `LocConf`.
unsafe impl HttpModuleLocationConf for Graft {
    type LocationConf = LocConf;
}

/// The main conf of the http block serving `r`.
pub fn main_conf(r: &ngx_http_request_t) -> Option<&'static MainConf> {
    Graft::main_conf(r)
}

/// The main conf of a cycle's http block (`None` without one).
///
/// # Safety
/// `cycle` is a cycle whose configuration nginx has read.
pub unsafe fn cycle_main_conf(cycle: *mut ngx::ffi::ngx_cycle_t) -> Option<&'static MainConf> {
    // SAFETY: the caller's contract: the cycle and its conf_ctx are valid.
    Graft::main_conf(unsafe { cycle.as_ref()? })
}

/// The configuration serving now in this worker (a request keeps the one
/// it started with: see `ctx`).
pub fn current_config(r: &ngx_http_request_t) -> Option<Arc<Config>> {
    main_conf(r)?.config.as_ref().map(ArcSwap::load_full)
}

/// The configuration of the http block being configured (`None` before
/// its `graft_config`).
///
/// # Safety
/// `cf` is nginx's configuration state inside an http block.
pub unsafe fn config_being_read(cf: *mut ngx_conf_t) -> Option<Arc<Config>> {
    // SAFETY: the caller's contract: cf is valid, its ctx the http block's.
    let cf = unsafe { &*cf };
    Graft::main_conf(cf)?
        .config
        .as_ref()
        .map(ArcSwap::load_full)
}

/// The location conf serving `r`.
pub fn loc_conf(r: &ngx_http_request_t) -> Option<&'static LocConf> {
    Graft::location_conf(r)
}

/// graft's slot in `r->ctx`, one per http module, indexed by ctx_index.
///
/// # Safety
/// `r` is a live request.
pub unsafe fn ctx_slot(r: &ngx_http_request_t) -> *mut *mut c_void {
    // SAFETY: the caller's contract; r->ctx has a slot per http module.
    unsafe { r.ctx.add(Graft::module().ctx_index) }
}

/// A main-conf directive's handler arguments: graft's main conf and the
/// directive's words.
///
/// # Safety
/// `conf` is the main conf nginx passes to a directive of graft's (made by
/// create_main_conf) and `cf` nginx's state while it calls the handler.
pub unsafe fn main_directive<'a>(
    cf: *mut ngx_conf_t,
    conf: *mut c_void,
) -> (&'a mut MainConf, &'a [ngx_str_t]) {
    // SAFETY: the caller's contract, as this function's # Safety says.
    unsafe { (&mut *(conf as *mut MainConf), conf_args(cf)) }
}

/// The directive being parsed and its arguments (`cf->args`).
///
/// # Safety
/// `cf` is nginx's configuration state while it calls a directive's
/// handler; the slice lives as long as that call.
pub unsafe fn conf_args<'a>(cf: *mut ngx_conf_t) -> &'a [ngx_str_t] {
    // SAFETY: the caller's contract: cf->args is an array of ngx_str_t
    // with nelts elements, in the configuration's pool.
    unsafe {
        let a = &*(*cf).args;
        std::slice::from_raw_parts(a.elts as *const ngx_str_t, a.nelts)
    }
}
