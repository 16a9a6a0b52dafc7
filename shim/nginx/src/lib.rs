//! `ngx_http_graft_module`: graft inside nginx.
//!
//! This crate is graft's foreign boundary: every `extern "C"` function, raw
//! pointer and nginx structure of graft lives here, and nowhere else. The
//! logic it calls (configuration, modules, modes, counters) is plain Rust in
//! `graft-engine` and `modules/*`.
//!
//! Each file depends only on files listed after it:
//!
//! - [`module`]: the nginx module itself, its directives and phase handlers
//!   (the top: it names every handler);
//! - [`bridge`]: the functions the Lua bridge calls (`shim/include/graft.h`);
//! - [`native`]: the pipeline in nginx's own phases (`graft_native on`);
//! - [`log_phase`]: the log phase, records written per request;
//! - [`response`]: the response-header phase of the steps Rust serves, in
//!   graft's header filter;
//! - [`rewrite`]: the response-body phase, rewriters in nginx's body filter;
//! - [`capture`]: `graft_capture`, a sample of live requests for replays;
//! - [`edge`]: `graft_edge_key`, and the `Graft-Edge` header of a request
//!   graft-edge passed here;
//! - [`admin_auth`]: `graft_admin_token`, and who may call the admin API;
//! - [`steps`]: nginx as the server of the engine's step protocol (clock,
//!   log), and the zone's request body;
//! - [`live`]: `graft_config`, the shared tables, the live apply;
//! - [`location`]: the location configuration, and which zone serves a request;
//! - [`ctx`]: what graft keeps per request (its pinned configuration);
//! - [`conf`]: the configuration structures, and how every file finds them;
//! - [`snapshot`]: the configuration applied live, shared by every worker;
//! - [`diffs`]: the ring of the last shadow differences;
//! - [`shm`]: shared memory mapped before the workers fork;
//! - [`headers`]: header edits that keep nginx's own pointers and fields right;
//! - [`request`]: the read-only request view over `ngx_http_request_t`;
//! - [`log`]: Rust `tracing` events into nginx's error log;
//! - [`guard`]: `catch_unwind` around every entry point, so that no panic
//!   unwinds into nginx.

mod admin_auth;
mod bridge;
mod capture;
mod conf;
mod ctx;
mod diffs;
mod edge;
mod guard;
mod headers;
mod live;
mod location;
mod log;
mod log_phase;
mod module;
mod native;
mod request;
mod response;
mod rewrite;
mod shm;
mod snapshot;
mod steps;

pub use module::ngx_http_graft_module;

ngx::ngx_modules!(ngx_http_graft_module);
