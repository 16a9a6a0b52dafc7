//! The life of graft's configuration in nginx: `graft_config` and
//! `graft_shared_memory` (loaded and checked while nginx reads its files,
//! so that `nginx -t`, start-up and reload refuse a bad one), the shared
//! tables every worker counts in, the live apply in two calls (check,
//! then commit or refuse), and each
//! worker catching up with a configuration applied live elsewhere.
//!
//! The parsed configuration lives in the module's main conf, allocated from
//! the cycle's pool and dropped with it: each nginx cycle (start, each
//! reload) owns its own, and a reload whose file is refused leaves the old
//! cycle, and its configuration, serving.
use std::ffi::{c_char, c_void};
use std::mem::size_of;
use std::path::{Path, PathBuf};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use graft_engine::shared::{CounterTable, WindowTable};
use graft_engine::Config;
use ngx::ffi::{
    ngx_add_timer, ngx_command_t, ngx_conf_full_name, ngx_conf_t, ngx_cycle_t, ngx_event_t,
    ngx_exiting, ngx_http_request_t, ngx_int_t, ngx_msec_t, ngx_parse_size, ngx_pcalloc, ngx_quit,
    ngx_terminate, NGX_LOG_EMERG, NGX_LOG_ERR, NGX_LOG_NOTICE, NGX_OK,
};
use ngx::http::HttpModuleMainConf;
use ngx::{ngx_conf_log_error, ngx_log_error, ngx_string};

use crate::conf::{main_conf, main_directive, Graft, MainConf, NGX_CONF_ERROR};
use crate::guard::guarded;
use crate::snapshot;

/// `graft_shared_memory <counters> [<windows>];`: the sizes of the shared
/// tables (step counters and kill switches; rate-limit and rollback
/// windows), as `lua_shared_dict` and `limit_req_zone` take theirs. Before
/// `graft_config`, which maps them; a change needs a restart (the tables
/// outlive reloads).
pub unsafe extern "C" fn set_shared_memory(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guarded(NGX_CONF_ERROR, || {
        // SAFETY: nginx calls a directive's handler with graft's main conf.
        let (mcf, args) = unsafe { main_directive(cf, conf) };
        if mcf.config.is_some() {
            return c"must come before graft_config".as_ptr() as *mut c_char;
        }
        let mut sizes = [DEFAULT_COUNTER_BYTES, DEFAULT_WINDOW_BYTES];
        for (i, arg) in args.iter().skip(1).enumerate() {
            let mut arg = *arg;
            // SAFETY: ngx_parse_size reads the argument nginx parsed.
            let n = unsafe { ngx_parse_size(&mut arg) };
            if !(64 * 1024..=16 << 30).contains(&n) {
                ngx_conf_log_error!(
                    NGX_LOG_EMERG,
                    cf,
                    "graft_shared_memory: \"{}\" is not a size from 64k to 16g",
                    arg
                );
                return NGX_CONF_ERROR;
            }
            sizes[i] = n as usize;
        }
        mcf.shared_bytes = Some((sizes[0], sizes[1]));
        null_mut()
    })
}

/// `graft_config <file>;` loads and validates the file now, so that
/// `nginx -t`, start-up and reload refuse a bad one.
pub unsafe extern "C" fn set_config(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guarded(NGX_CONF_ERROR, || {
        // SAFETY: nginx calls a directive's handler with graft's main conf;
        // graft_config takes one argument (NGX_CONF_TAKE1).
        let (mcf, args) = unsafe { main_directive(cf, conf) };
        let mut name = args[1];
        if mcf.config.is_some() {
            return c"is duplicate".as_ptr() as *mut c_char;
        }
        // SAFETY: resolves `name` against the configuration prefix into
        // memory from the cycle's pool.
        if unsafe { ngx_conf_full_name((*cf).cycle, &mut name, 1) } != NGX_OK as ngx_int_t {
            return NGX_CONF_ERROR;
        }
        let (counter_bytes, window_bytes) = mcf
            .shared_bytes
            .unwrap_or((DEFAULT_COUNTER_BYTES, DEFAULT_WINDOW_BYTES));
        let (Some((windows, step_counters)), true) = (
            shared_slots(cf, counter_bytes, window_bytes),
            snapshot::map(cf) && crate::diffs::map(cf),
        ) else {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "graft: cannot map the shared counters");
            return NGX_CONF_ERROR;
        };
        if (step_counters.len() * 8, windows.len() * 8)
            != (
                counter_words(counter_bytes) * 8,
                window_words(window_bytes) * 8,
            )
        {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "graft: graft_shared_memory changed ({} and {} bytes mapped): the tables outlive reloads, so a new size needs a restart",
                step_counters.len() * 8,
                windows.len() * 8
            );
            return NGX_CONF_ERROR;
        }
        let Ok(path) = name.to_str() else {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "graft: the file name is not UTF-8");
            return NGX_CONF_ERROR;
        };
        crate::log::install();
        match Config::load(Path::new(path)) {
            Ok(config) => {
                let counters = CounterTable::new(step_counters);
                if let Err(e) = config.fits(&counters) {
                    ngx_conf_log_error!(NGX_LOG_EMERG, cf, "graft: {path}: {e}");
                    count_refused(counters);
                    return NGX_CONF_ERROR;
                }
                config.attach(counters, WindowTable::new(windows));
                config.mark_started(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                );
                let config = Arc::new(config);
                *lock(&LOADED) = Some(config.clone());
                // This cycle serves what it loaded now, not what an earlier
                // cycle's workers applied live before it.
                mcf.cycle_epoch = snapshot::epoch();
                mcf.cycle = CYCLES.fetch_add(1, Ordering::Relaxed) + 1;
                mcf.config = Some(ArcSwap::new(config));
                mcf.path = Some(PathBuf::from(path));
                // Parsing a large file leaves freed heap behind; give it back
                // before the workers fork, so that they do not carry it.
                // SAFETY: glibc's malloc_trim only releases free memory.
                unsafe { malloc_trim(0) };
                null_mut()
            }
            Err(e) => {
                ngx_conf_log_error!(NGX_LOG_EMERG, cf, "graft: {e}");
                count_refused(CounterTable::new(step_counters));
                NGX_CONF_ERROR
            }
        }
    })
}

pub unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    guarded(NGX_OK as ngx_int_t, || {
        graft_engine::dispatch::install_panic_hook();
        // Without an http block nginx never made graft's main conf.
        if !crate::conf::registered() {
            return NGX_OK as ngx_int_t;
        }
        // SAFETY: nginx passes the worker's cycle; its http main confs hold
        // ours (made by create_main_conf), which lives as long as the cycle.
        let Some(mcf) = Graft::main_conf(unsafe { &*cycle }) else {
            return NGX_OK as ngx_int_t;
        };
        if mcf.config.is_none() {
            return NGX_OK as ngx_int_t;
        }
        // The master keeps the configuration it loaded alive for the Lua
        // side's check at start (`graft_ffi_plans`); a worker has no use
        // for it, and holding it would keep it alive past a live apply.
        lock(&LOADED).take();
        // A worker (re)started after a live apply serves what was applied,
        // as its siblings do: the timer below loads it on its first tick.
        APPLIED_EPOCH.store(mcf.cycle_epoch, Ordering::Relaxed);
        // SAFETY: the cycle's log lives as long as the cycle.
        catch_up(mcf, unsafe { (*cycle).log });
        if let Some(config) = mcf.config.as_ref() {
            // SAFETY: the cycle's conf_ctx holds every core module's conf,
            // the core module's at its index an ngx_core_conf_t, for as
            // long as the cycle lives.
            let workers = unsafe {
                let ccf = *(*cycle).conf_ctx.add(ngx::ffi::ngx_core_module.index)
                    as *const ngx::ffi::ngx_core_conf_t;
                ccf.as_ref().map_or(1, |c| c.worker_processes.max(1) as u64)
            };
            config.load().count_worker_start(mcf.cycle, workers);
        }
        // SAFETY: an event from the cycle's pool, zeroed, that lives as long
        // as the worker; nginx calls its handler from the event loop.
        unsafe {
            let ev = ngx_pcalloc((*cycle).pool, size_of::<ngx_event_t>()) as *mut ngx_event_t;
            if let Some(ev) = ev.as_mut() {
                ev.handler = Some(epoch_timer);
                ev.data = mcf as *const MainConf as *mut c_void;
                ev.log = (*cycle).log;
                ev.set_cancelable(1);
                ngx_add_timer(ev, EPOCH_CHECK_MS);
            }
        }
        NGX_OK as ngx_int_t
    })
}

/// How often a worker looks for a configuration applied live elsewhere.
const EPOCH_CHECK_MS: ngx_msec_t = 250;
/// The live apply this worker serves (see `snapshot`).
static APPLIED_EPOCH: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn epoch_timer(ev: *mut ngx_event_t) {
    guarded((), || {
        // SAFETY: the event made in init_process; its data is the cycle's
        // main conf and its log the cycle's log.
        let (ev, mcf) = unsafe { (&mut *ev, &*((*ev).data as *const MainConf)) };
        flush_counts(mcf);
        // SAFETY: nginx's process-wide flags, read in its own thread.
        if unsafe { ngx_exiting != 0 || ngx_quit != 0 || ngx_terminate != 0 } {
            return;
        }
        catch_up(mcf, ev.log);
        // SAFETY: re-arms the worker's own timer event.
        unsafe { ngx_add_timer(ev, EPOCH_CHECK_MS) };
    })
}

/// Moves what this worker counted on the configuration it serves, and on
/// the replaced ones requests still hold, into the shared table.
fn flush_counts(mcf: &MainConf) {
    let now = u64::try_from(ngx::ffi::ngx_time()).unwrap_or(0);
    if let Some(config) = mcf.config.as_ref() {
        config.load().flush_counts(now);
    }
    RETIRED.with_borrow_mut(|retired| {
        retired.retain(|weak| match weak.upgrade() {
            Some(config) => {
                config.flush_counts(now);
                true
            }
            None => false,
        })
    });
}

/// A worker leaving (a reload, a shutdown) keeps what it counted since
/// its last tick.
pub unsafe extern "C" fn exit_process(cycle: *mut ngx_cycle_t) {
    guarded((), || {
        if !crate::conf::registered() {
            return;
        }
        // SAFETY: nginx passes the worker's cycle, whose http main confs
        // hold ours for as long as the cycle lives.
        if let Some(mcf) = Graft::main_conf(unsafe { &*cycle }) {
            flush_counts(mcf);
        }
    })
}

/// Takes the configuration applied live since this worker last looked
/// before an admin call acts on it: a kill switch for a zone that an
/// apply just brought must find the zone in the worker that another
/// worker's apply has not reached yet (its tick is up to 250 ms away).
pub fn catch_up_for(r: &ngx_http_request_t) {
    if let Some(mcf) = main_conf(r) {
        // SAFETY: a live request's connection and its log are valid.
        catch_up(mcf, unsafe { (*r.connection).log });
    }
}

/// Loads the configuration applied live since this worker last looked, if
/// any (a write under way is picked up on a later call).
fn catch_up(mcf: &MainConf, log: *mut ngx::ffi::ngx_log_t) {
    if snapshot::epoch() <= APPLIED_EPOCH.load(Ordering::Relaxed) {
        return;
    }
    let Some((epoch, text)) = snapshot::read() else {
        return;
    };
    APPLIED_EPOCH.store(epoch, Ordering::Relaxed);
    match load_into(mcf, &text) {
        Ok(generation) => {
            ngx_log_error!(
                NGX_LOG_NOTICE,
                log,
                "graft: applied the configuration live (generation {generation})"
            );
        }
        Err(e) => {
            ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "graft: live configuration refused, the running one goes on: {e}"
            );
        }
    }
}

/// The cycles the master read a `graft_config` for (see `MainConf::cycle`).
static CYCLES: AtomicU64 = AtomicU64::new(0);

/// The configuration the master loaded last, until the workers fork.
static LOADED: Mutex<Option<Arc<Config>>> = Mutex::new(None);

thread_local! {
    /// A live apply's configuration and text, checked and not yet swapped in.
    static PENDING: std::cell::RefCell<Option<(Arc<Config>, Vec<u8>)>> =
        const { std::cell::RefCell::new(None) };
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The configuration the master has just loaded (start, reload, `nginx -t`).
pub fn loaded_config() -> Option<Arc<Config>> {
    lock(&LOADED).clone()
}

/// The configuration a live apply is checking.
pub fn pending_config() -> Option<Arc<Config>> {
    PENDING.with_borrow(|p| p.as_ref().map(|(c, _)| c.clone()))
}

/// Parses a configuration text for this worker, counting in the shared tables.
fn parse_attached(mcf: &MainConf, text: &[u8]) -> Result<Config, String> {
    let path = mcf.path.as_ref().ok_or("no graft_config")?;
    let config = Config::parse(path, text).map_err(|e| e.to_string())?;
    config
        .check_files(&mcf.log_dirs)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let (Some(windows), Some(counters)) = (
        WINDOWS.get().copied().flatten(),
        COUNTERS.get().copied().flatten(),
    ) else {
        return Err("no shared memory".into());
    };
    let counters = CounterTable::new(counters);
    config.fits(&counters).map_err(|e| e.to_string())?;
    config.attach(counters, WindowTable::new(windows));
    Ok(config)
}

/// Parses a configuration text and swaps it in for this worker.
fn load_into(mcf: &MainConf, text: &[u8]) -> Result<u64, String> {
    let cell = mcf.config.as_ref().ok_or("no graft_config")?;
    let config = parse_attached(mcf, text)?;
    let generation = config.generation;
    retire(cell.swap(Arc::new(config)));
    Ok(generation)
}

thread_local! {
    /// Configurations this worker replaced that requests in flight still
    /// hold (a long download, a websocket): flushed on every tick until
    /// the last request lets go of them.
    static RETIRED: std::cell::RefCell<Vec<std::sync::Weak<Config>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Takes a replaced configuration out of service: what this worker counted
/// on it goes to the shared table now, and on each tick while requests
/// still hold it.
fn retire(old: Arc<Config>) {
    old.flush_counts(u64::try_from(ngx::ffi::ngx_time()).unwrap_or(0));
    if Arc::strong_count(&old) > 1 {
        RETIRED.with_borrow_mut(|r| r.push(Arc::downgrade(&old)));
    }
}

/// A live apply's check: reads and validates the file (or `sent`,
/// a text the admin API was sent in its place, validated the same way and
/// named after the file) and keeps it pending, for the Lua side to check
/// its Lua twins; returns the pending generation. Nothing serves it
/// yet.
pub fn prepare_live(r: &ngx_http_request_t, sent: Option<Vec<u8>>) -> Result<u64, String> {
    let mcf = main_conf(r).ok_or("no graft_config")?;
    let path = mcf.path.as_ref().ok_or("no graft_config")?;
    let was_sent = sent.is_some();
    let text = match sent {
        Some(text) => text,
        None => std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?,
    };
    // A text sent is not the file: its errors say so, not the file's name
    // (the file may well be fine).
    let named = |e: String| match e.strip_prefix(&format!("{}", path.display())) {
        Some(rest) if was_sent => format!("the configuration sent{rest}"),
        _ => e,
    };
    if text.len() > snapshot::MAX_LIVE_BYTES {
        return Err(named(format!(
            "{}: {} bytes, over the limit of {} for a live apply (use nginx -s reload)",
            path.display(),
            text.len(),
            snapshot::MAX_LIVE_BYTES
        )));
    }
    let config = Arc::new(parse_attached(mcf, &text).map_err(named)?);
    let generation = config.generation;
    PENDING.with_borrow_mut(|p| *p = Some((config, text)));
    Ok(generation)
}

/// Ends a live apply that was refused: drops what it checked, if anything,
/// and counts the refusal.
pub fn refuse_live() {
    PENDING.with_borrow_mut(|p| *p = None);
    if let Some(counters) = COUNTERS.get().copied().flatten() {
        count_refused(CounterTable::new(counters));
    }
}

/// Counts a refused graft file in the shared table, for
/// `graft_configuration_refused_total`. On a reload the table is the one
/// the running workers count in (it outlives cycles); under `nginx -t` it
/// is the test process's own, gone with it.
fn count_refused(counters: CounterTable<'static>) {
    counters.add(graft_engine::counters::refused_key(), 1);
}

/// A live apply's commit: swaps the pending configuration in, in
/// this worker at once and in every other worker within `EPOCH_CHECK_MS`
/// (they load these very bytes, not the file again).
pub fn commit_live(r: &ngx_http_request_t) -> Result<u64, String> {
    let mcf = main_conf(r).ok_or("no graft_config")?;
    let cell = mcf.config.as_ref().ok_or("no graft_config")?;
    let (config, text) = PENDING
        .with_borrow_mut(Option::take)
        .ok_or("nothing checked to apply")?;
    let epoch = snapshot::publish(&text)?;
    let generation = config.generation;
    retire(cell.swap(config));
    APPLIED_EPOCH.store(epoch, Ordering::Relaxed);
    drop(text);
    // SAFETY: glibc's malloc_trim only releases free memory.
    unsafe { malloc_trim(0) };
    Ok(generation)
}

extern "C" {
    /// glibc: returns free memory at the top of the heap, and free whole
    /// pages inside it, to the system.
    fn malloc_trim(pad: usize) -> std::ffi::c_int;
}

/// The step counters and kill switches every worker shares, unless
/// `graft_shared_memory` says otherwise: 32 MiB, room for about 1.97
/// million counters (14 a step: about 100,000 steps within three
/// quarters, about 320 bytes a step) and about 260,000 kill switches. Pages are
/// only used when touched.
const DEFAULT_COUNTER_BYTES: usize = 32 << 20;
/// The window table (rate limits, rollback windows): 4 MiB, 520,000
/// slots.
const DEFAULT_WINDOW_BYTES: usize = 4 << 20;

/// Words of a counter table of `bytes` (`CounterTable::words_for`).
fn counter_words(bytes: usize) -> usize {
    CounterTable::words_for(bytes)
}

/// Words of a window table of `bytes`.
fn window_words(bytes: usize) -> usize {
    (bytes / 8).max(64)
}

static WINDOWS: OnceLock<Option<&'static [AtomicU64]>> = OnceLock::new();
static COUNTERS: OnceLock<Option<&'static [AtomicU64]>> = OnceLock::new();

/// Maps `words` atomic words of shared memory, once per master process:
/// the mapping is made before the workers fork, so every worker of every
/// later cycle sees the same memory, and counts survive reloads and a
/// worker's restart.
fn shared_words(
    cell: &'static OnceLock<Option<&'static [AtomicU64]>>,
    cf: *mut ngx_conf_t,
    words: usize,
) -> Option<&'static [AtomicU64]> {
    *cell.get_or_init(|| crate::shm::map_words(cf, ngx_string!("graft_shared"), words))
}

fn shared_slots(
    cf: *mut ngx_conf_t,
    counter_bytes: usize,
    window_bytes: usize,
) -> Option<(&'static [AtomicU64], &'static [AtomicU64])> {
    let windows = shared_words(&WINDOWS, cf, window_words(window_bytes))?;
    // Draws the table's hash keys now, in the master, before the fork:
    // every worker then hashes with the same keys, and no client can
    // know them.
    WindowTable::new(windows);
    Some((
        windows,
        shared_words(&COUNTERS, cf, counter_words(counter_bytes))?,
    ))
}

/// The window table every worker shares, for the modules' context.
pub fn shared_windows() -> Option<WindowTable<'static>> {
    // Made once per worker (its hash keys were drawn in the master).
    static TABLE: OnceLock<Option<WindowTable<'static>>> = OnceLock::new();
    *TABLE.get_or_init(|| WINDOWS.get().copied().flatten().map(WindowTable::new))
}
