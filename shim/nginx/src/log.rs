//! Rust `tracing` events into nginx's error log, at nginx's levels
//! (ERROR → error, WARN → warn, INFO → info, DEBUG and TRACE → debug),
//! through the current cycle's log.
use std::io::Write;

use ngx::ffi::{ngx_cycle, ngx_uint_t, NGX_LOG_DEBUG, NGX_LOG_ERR, NGX_LOG_INFO, NGX_LOG_WARN};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// Installs the subscriber, once per process (a worker inherits it from
/// the master).
pub fn install() {
    let subscriber = tracing_subscriber::fmt()
        .with_writer(NgxLog)
        .with_ansi(false)
        .without_time()
        .with_level(false)
        .with_target(false)
        .with_max_level(Level::DEBUG)
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
}

struct NgxLog;

/// One event's text, written to nginx's log when complete.
pub struct Line {
    level: ngx_uint_t,
    buf: Vec<u8>,
}

impl<'a> MakeWriter<'a> for NgxLog {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            level: NGX_LOG_INFO as ngx_uint_t,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        let level = match *meta.level() {
            Level::ERROR => NGX_LOG_ERR,
            Level::WARN => NGX_LOG_WARN,
            Level::INFO => NGX_LOG_INFO,
            _ => NGX_LOG_DEBUG,
        };
        Line {
            level: level as ngx_uint_t,
            buf: Vec::new(),
        }
    }
}

impl Write for Line {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        while self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        if self.buf.is_empty() {
            return;
        }
        // SAFETY: ngx_cycle is nginx's current cycle, set before any module
        // code runs, and its log lives as long as it; nginx is single-
        // threaded in each process.
        unsafe {
            let cycle = ngx_cycle;
            if cycle.is_null() || (*cycle).log.is_null() {
                return;
            }
            let log = (*cycle).log;
            if self.level <= (*log).log_level {
                let text = String::from_utf8_lossy(&self.buf);
                ngx::ngx_log_error!(self.level, log, "graft: {text}");
            }
        }
    }
}
