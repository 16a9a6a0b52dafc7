//! `ngx_http_graft_module`: graft inside nginx.
//!
//! This crate is graft's foreign boundary: every `extern "C"` function, raw
//! pointer and nginx structure of graft lives here, and nowhere else. The
//! logic it calls (configuration, modules, modes, counters) is plain Rust in
//! `graft-engine` and `modules/*`.
//!
//! - [`module`]: the nginx module, its directives and configuration;
//! - [`location`]: the location configuration, and which zone serves a request;
//! - [`native`]: the pipeline in nginx's own phases (`graft_native on`);
//! - [`headers`]: header edits that keep nginx's own pointers and fields right;
//! - [`request`]: the read-only request view over `ngx_http_request_t`;
//! - [`capture`]: `graft_capture`, a sample of live requests for replays;
//! - [`diffs`]: the ring of the last shadow differences;
//! - [`ctx`]: what graft keeps per request (its pinned configuration);
//! - [`bridge`]: the functions the Lua bridge calls (`shim/include/graft.h`);
//! - [`log`]: Rust `tracing` events into nginx's error log;
//! - [`shm`]: shared memory mapped before the workers fork;
//! - [`snapshot`]: the configuration applied live, shared by every worker;
//! - [`guard`]: `catch_unwind` around every entry point, so that no panic
//!   unwinds into nginx.

mod bridge;
mod capture;
mod ctx;
mod diffs;
mod guard;
mod headers;
mod location;
mod log;
mod module;
mod native;
mod request;
mod shm;
mod snapshot;

pub use module::ngx_http_graft_module;

ngx::ngx_modules!(ngx_http_graft_module);
