//! The functions the Lua bridge (`lua/graft.lua`) calls through LuaJIT's
//! FFI, declared in `shim/include/graft.h`.
//!
//! The per-request calls take the `ngx_http_request_t *` that
//! `resty.core.base.get_request()` gives and read the request where nginx
//! keeps it. Return codes follow lua-resty-core's conventions.
//!
//! Each file depends only on files listed after it:
//!
//! - [`request`]: the exports of the request path;
//! - [`admin`]: the exports of the admin API and of the Lua side's start;
//! - [`marshal`]: the ABI's codes and structures, and what crosses it.

mod admin;
mod marshal;
mod request;
