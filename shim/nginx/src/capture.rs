//! `graft_capture`: a sample of live requests written in the replay's
//! corpus format (`graft_engine::corpus`), so that `graft-replay` compares
//! Lua and Rust on a team's own traffic.
//!
//! ```nginx
//! graft_capture /var/log/nginx/graft-capture.txt rate=0.01 max=256m drop=X-Api-Key;
//! ```
//!
//! The file is nginx's own kind of log file (`ngx_conf_open_file`): the
//! master opens it, hands it to the workers' user, and `nginx -s reopen`
//! (logrotate's signal) reopens it, as access logs are rotated. Once the
//! file holds `max` bytes nothing more is written until it is rotated
//! (counted, and said in the error log within its budget); it is made
//! mode 0640. Authorization, Cookie, Proxy-Authorization, X-Forwarded-For
//! and X-Real-IP are never written, nor request bodies (nor so their
//! Content-Length and Transfer-Encoding: a captured request replays
//! without its body), nor the headers `drop=` names. Of the others, only
//! those on an allow-list (`KEPT`, and `keep=`) are written with their
//! values; the rest with the value `graft-redacted`. The target is written as sent
//! (a query string carrying a token is: `drop=` cannot reach it). Headers
//! are written as the client sent them: the capture runs in nginx's
//! post-read phase, before any step changes the request. A client address becomes a loopback one with the same
//! low 24 bits (`@client: 127.b.c.d`), so that a replay keeps clients
//! apart (rate limits, canaries) from one machine.
use std::cell::Cell;
use std::ffi::{c_char, c_void};
use std::io::Write;
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::os::unix::fs::PermissionsExt;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicU64, Ordering};

use std::net::{IpAddr, Ipv4Addr};
use std::ops::ControlFlow;

use graft_contract::RequestView;
use graft_engine::corpus::CorpusRequest;
use ngx::ffi::{
    ngx_command_t, ngx_conf_open_file, ngx_conf_t, ngx_http_request_t, ngx_int_t, ngx_parse_size,
    ngx_str_t, NGX_DECLINED, NGX_LOG_EMERG,
};
use ngx::ngx_conf_log_error;

use crate::conf::{main_conf, main_directive, Capture, NGX_CONF_ERROR};
use crate::guard::guarded;
use crate::request::NgxRequest;
use crate::steps::{log_limited, LogFamily};

/// Headers never written to a capture, whatever the configuration says:
/// credentials, and the client addresses proxies forward.
/// Bodies are not captured (they carry passwords, tokens and personal
/// data), so neither are the headers that announce one: a captured request
/// is replayed without its body.
const ALWAYS_DROPPED: [&str; 7] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    "x-forwarded-for",
    "x-real-ip",
    "content-length",
    "transfer-encoding",
];

/// Headers whose values a capture writes as the client sent them: what
/// says how a client asks, never who it is. Every other header is written
/// with its value replaced by [`REDACTED`] (`keep=` adds names to this
/// list): a credential in a header graft has never heard of (`X-Api-Key`,
/// `Forwarded`, a vendor's token) never reaches the file.
const KEPT: [&str; 22] = [
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "access-control-request-headers",
    "access-control-request-method",
    "cache-control",
    "content-type",
    "dnt",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "origin",
    "pragma",
    "range",
    "sec-fetch-dest",
    "sec-fetch-mode",
    "sec-fetch-site",
    "upgrade-insecure-requests",
    "user-agent",
];

/// What a header's value becomes when its name is not kept.
const REDACTED: &[u8] = b"graft-redacted";

/// A capture file's mode: read and written by its owner, read by its
/// group (logrotate's `adm`), nothing for others.
const FILE_MODE: u32 = 0o640;

/// Requests not written because the file was full, in this worker.
static SKIPPED_FULL: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static SEEN: Cell<u64> = const { Cell::new(0) };
}

fn bad_arg(cf: *mut ngx_conf_t, why: &str) -> *mut c_char {
    ngx_conf_log_error!(NGX_LOG_EMERG, cf, "graft_capture: {why}");
    NGX_CONF_ERROR
}

/// `graft_capture <file> [rate=R] [max=SIZE] [drop=H1,H2,...];`
pub unsafe extern "C" fn set_capture(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guarded(NGX_CONF_ERROR, || {
        // SAFETY: nginx calls a directive's handler with graft's main conf.
        let (mcf, args) = unsafe { main_directive(cf, conf) };
        if mcf.capture.is_some() {
            return c"is duplicate".as_ptr() as *mut c_char;
        }
        let mut capture = Capture {
            file: null_mut(),
            every: 100,
            max: 64 << 20,
            drop: ALWAYS_DROPPED
                .iter()
                .map(|h| h.as_bytes().to_vec())
                .collect(),
            keep: KEPT.iter().map(|h| h.as_bytes().to_vec()).collect(),
        };
        for arg in &args[2..] {
            let text = arg.to_string();
            let bad = |why: &str| {
                ngx_conf_log_error!(NGX_LOG_EMERG, cf, "graft_capture: \"{text}\": {why}");
                NGX_CONF_ERROR
            };
            match text.split_once('=') {
                Some(("rate", r)) => match r.parse::<f64>() {
                    Ok(rate) if rate > 0.0 && rate <= 1.0 => {
                        capture.every = (1.0 / rate).round().max(1.0) as u64;
                    }
                    _ => return bad("rate is a share of requests, above 0 and at most 1"),
                },
                Some(("max", m)) => {
                    let mut s = ngx_str_t {
                        len: m.len(),
                        data: m.as_ptr() as *mut u8,
                    };
                    // SAFETY: ngx_parse_size reads `len` bytes of `s`.
                    let n = unsafe { ngx_parse_size(&mut s) };
                    if n < 4096 {
                        return bad("max is a size of at least 4k");
                    }
                    capture.max = n as u64;
                }
                Some(("drop", list)) => capture.drop.extend(
                    list.split(',')
                        .filter(|h| !h.is_empty())
                        .map(|h| h.to_ascii_lowercase().into_bytes()),
                ),
                Some(("keep", list)) => {
                    for h in list.split(',').filter(|h| !h.is_empty()) {
                        let lower = h.to_ascii_lowercase();
                        if ALWAYS_DROPPED.contains(&lower.as_str()) {
                            return bad("keep= cannot name a header graft never writes");
                        }
                        capture.keep.push(lower.into_bytes());
                    }
                }
                _ => return bad("is not rate=, max=, keep= or drop="),
            }
        }
        let mut name = args[1];
        if name.len == 0 {
            return bad_arg(cf, "the file name is empty");
        }
        // SAFETY: registers the file with the cycle, which opens it (as
        // the master, for the workers' user) and reopens it on `-s reopen`.
        capture.file = unsafe { ngx_conf_open_file((*cf).cycle, &mut name) };
        if capture.file.is_null() {
            return NGX_CONF_ERROR;
        }
        mcf.capture = Some(capture);
        null_mut()
    })
}

/// The post-read-phase handler (before any step or handler changes the
/// request): writes one main request in `every` to the capture file.
pub unsafe extern "C" fn capture_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guarded(NGX_DECLINED as ngx_int_t, || {
        // SAFETY: nginx calls phase handlers with a live request.
        let r = unsafe { &*r };
        if !std::ptr::eq(r, r.main) {
            return NGX_DECLINED as ngx_int_t;
        }
        let Some(capture) = main_conf(r).and_then(|m| m.capture.as_ref()) else {
            return NGX_DECLINED as ngx_int_t;
        };
        let n = SEEN.with(|s| {
            let n = s.get().wrapping_add(1);
            s.set(n);
            n
        });
        if !n.is_multiple_of(capture.every) {
            return NGX_DECLINED as ngx_int_t;
        }
        let mut line = capture.line(r).to_line();
        line.push('\n');
        // SAFETY: the cycle's open file, whose fd nginx keeps open (and
        // swaps on reopen) for the worker's life; borrowed, never closed.
        let mut file = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd((*capture.file).fd) });
        let meta = file.metadata();
        let size = meta.as_ref().map_or(u64::MAX, |m| m.len());
        // A file nginx opened (at start, or again on `-s reopen`) has
        // nginx's default mode, readable by every local user: narrowed
        // before the first line goes in. Only its owner may: the master
        // for the file it opened at start (`restrict_files`), a worker for
        // one it reopened.
        if meta.is_ok_and(|m| m.permissions().mode() & 0o777 != FILE_MODE) {
            if let Err(e) = file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE)) {
                log_limited(
                    r,
                    LogFamily::Failure,
                    format_args!("graft: capture: the file's mode cannot be narrowed to 0640: {e}; nothing written"),
                );
                return NGX_DECLINED as ngx_int_t;
            }
        }
        if size.saturating_add(line.len() as u64) > capture.max {
            let skipped = SKIPPED_FULL.fetch_add(1, Ordering::Relaxed) + 1;
            log_limited(
                r,
                LogFamily::Decline,
                format_args!(
                    "graft: capture file full ({} bytes): {skipped} requests not captured; rotate it (nginx -s reopen)",
                    capture.max
                ),
            );
            return NGX_DECLINED as ngx_int_t;
        }
        // One write of the whole line: the file is opened to append, so
        // the workers' lines never interleave.
        if let Err(e) = file.write_all(line.as_bytes()) {
            log_limited(r, LogFamily::Failure, format_args!("graft: capture: {e}"));
        }
        NGX_DECLINED as ngx_int_t
    })
}

impl Capture {
    /// The request as the client sent it: method, host, the raw target,
    /// the headers not dropped, and a loopback stand-in for its address
    /// (the same low 24 bits, so that clients stay apart in a replay; an
    /// IPv6 client keeps the low 24 bits of its address).
    fn line(&self, r: &ngx_http_request_t) -> CorpusRequest {
        let view = NgxRequest::new(r);
        let host = view.header(b"host").unwrap_or_else(|| view.host()).to_vec();
        let mut headers = Vec::new();
        view.for_each_header(&mut |name, value| {
            let name = name.trim_ascii();
            if !name.eq_ignore_ascii_case(b"host")
                && !self.drop.iter().any(|d| name.eq_ignore_ascii_case(d))
            {
                let value = match self.keep.iter().any(|k| name.eq_ignore_ascii_case(k)) {
                    true => value,
                    false => REDACTED,
                };
                headers.push([name, b": ", value].concat());
            }
            ControlFlow::Continue(())
        });
        let client = view.client_addr().map(|a| {
            let low = match a {
                IpAddr::V4(v4) => v4.octets(),
                IpAddr::V6(v6) => {
                    let o = v6.octets();
                    [0, o[13], o[14], o[15]]
                }
            };
            Ipv4Addr::new(127, low[1], low[2], low[3])
        });
        CorpusRequest {
            method: view.method().to_vec(),
            host,
            target: view.raw_uri().to_vec(),
            headers,
            client,
            body: None,
        }
    }
}

/// The master's part: narrows the mode of the capture file it opened at
/// start (nginx opens its log files readable by every local user), before
/// any worker writes to it. From the module's init_module, after nginx
/// opened the cycle's files.
///
/// # Safety
/// `cycle` is the cycle nginx is starting, its files open.
pub unsafe fn restrict_files(cycle: *mut ngx::ffi::ngx_cycle_t) {
    // SAFETY: the caller's contract: the cycle's configuration is
    // complete and its open files hold valid descriptors.
    let Some(capture) =
        (unsafe { crate::conf::cycle_main_conf(cycle) }).and_then(|m| m.capture.as_ref())
    else {
        return;
    };
    // SAFETY: the cycle's open file, kept open by nginx; borrowed only.
    let fd = unsafe { (*capture.file).fd };
    if fd < 0 {
        return;
    }
    // SAFETY: as above: a descriptor nginx owns, never closed here.
    let file = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    // A failure here leaves the worker's check to refuse the writes.
    let _ = file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE));
}
