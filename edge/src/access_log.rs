//! graft-edge's access log: one line per request, nginx's `combined`
//! format and graft's fields after it, written by a thread of its own so
//! that no request ever waits on the disk.
//!
//! ```text
//! 127.0.0.1 - - [07/Dec/2025:10:00:00 +0000] "GET /x HTTP/1.1" 200 8 "-" "curl/7.88.1" zone="shop.example" served=fl1 from=1 reason=decline time=0.002
//! ```
//!
//! - `zone`: the zone that served the Host (`-`: none, passed to FL1 as sent);
//! - `served`: who answered: `rust` (graft-edge: a step's answer, a failure
//!   policy's, or the zone's origin once every step let the request on) or
//!   `fl1`;
//! - `from`, `reason`: when the steps passed the request to FL1, the step
//!   FL1 took it from and why (`mode`, `decline`, `error`, `panic`,
//!   `phase`: as `graft_edge_passed_total`); `-` otherwise. A request with
//!   `served=rust` and a reason was to go to FL1, which could not be
//!   reached: the failure policies served it;
//! - `time`: seconds from the request's head read to its last byte sent
//!   (nginx's `$request_time`).
//!
//! The time is UTC. Bytes outside printable ASCII, `"` and `\` are written
//! `\xHH`, as nginx escapes its variables in a log. Requests a line reaches
//! a bounded queue (`CAPACITY` lines); when the writer falls that far
//! behind, lines are dropped and counted
//! (`graft_edge_access_log_dropped_total`), never waited for. The file is
//! created mode 0640 and appended to; SIGUSR1 makes the writer open it
//! again (nginx's `-s reopen`), for logrotate.
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Lines waiting for the writer, at most.
pub const CAPACITY: usize = 16_384;

/// The access log: the sending end of the writer's queue.
pub struct AccessLog {
    lines: SyncSender<String>,
    dropped: AtomicU64,
}

impl AccessLog {
    /// Opens `path` (created 0640, appended to) and starts its writer,
    /// which opens it again on SIGUSR1.
    pub fn open(path: &Path) -> std::io::Result<AccessLog> {
        let file = open(path)?;
        let reopen = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, reopen.clone())?;
        let (lines, queue) = sync_channel(CAPACITY);
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("graft-edge-access-log".into())
            .spawn(move || write_lines(&path, file, &queue, &reopen))?;
        Ok(AccessLog::over(lines))
    }

    fn over(lines: SyncSender<String>) -> AccessLog {
        AccessLog {
            lines,
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues one line (with its newline); drops and counts it when the
    /// queue is full.
    pub fn write(&self, line: String) {
        match self.lines.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines dropped since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// The writer: lines as they come, flushed whenever the queue is empty;
/// the file opened again when SIGUSR1 came.
fn write_lines(path: &Path, file: File, queue: &Receiver<String>, reopen: &AtomicBool) {
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    let mut failing = false;
    loop {
        let mut result = Ok(());
        match queue.recv_timeout(Duration::from_millis(250)) {
            Ok(line) => {
                result = out.write_all(line.as_bytes());
                while let (Ok(line), Ok(())) = (queue.try_recv(), &result) {
                    result = out.write_all(line.as_bytes());
                }
                result = result.and_then(|()| out.flush());
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        }
        // Said once, when it starts failing (a full disk), and once when
        // it writes again.
        match (&result, failing) {
            (Err(e), false) => {
                tracing::error!("graft-edge: access log {}: {e}", path.display());
                failing = true;
            }
            (Ok(()), true) => {
                tracing::warn!("graft-edge: access log {}: writing again", path.display());
                failing = false;
            }
            _ => {}
        }
        if reopen.swap(false, Ordering::Relaxed) {
            let _ = out.flush();
            match open(path) {
                Ok(file) => out = BufWriter::with_capacity(64 * 1024, file),
                Err(e) => tracing::error!(
                    "graft-edge: access log {} not opened again, the old file goes on: {e}",
                    path.display()
                ),
            }
        }
    }
}

/// What one line says.
pub struct Entry<'a> {
    pub client: Option<IpAddr>,
    pub at: SystemTime,
    pub method: &'a str,
    pub target: &'a [u8],
    pub version: &'a str,
    pub status: u16,
    pub body_bytes: usize,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub zone: Option<&'a str>,
    pub served_by_fl1: bool,
    /// The step FL1 was to take the request from, and why.
    pub passed: Option<(usize, &'static str)>,
    pub seconds: f64,
}

impl Entry<'_> {
    /// The line, with its newline.
    pub fn line(&self) -> String {
        let dash = |v: Option<&[u8]>| v.map_or("-".to_string(), escape);
        let (from, reason) = match self.passed {
            Some((from, reason)) => (from.to_string(), reason),
            None => ("-".to_string(), "-"),
        };
        format!(
            "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" zone=\"{}\" served={} from={from} reason={reason} time={:.3}\n",
            self.client.map_or("-".to_string(), |a| a.to_string()),
            time_local(self.at),
            escape(self.method.as_bytes()),
            escape(self.target),
            self.version,
            self.status,
            self.body_bytes,
            dash(self.referer),
            dash(self.user_agent),
            self.zone.map_or("-".to_string(), |z| escape(z.as_bytes())),
            if self.served_by_fl1 { "fl1" } else { "rust" },
            self.seconds,
        )
    }
}

/// Bytes as nginx writes a variable in a log: printable ASCII as it is,
/// `"`, `\` and everything else as `\xHH`.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

/// nginx's `$time_local`, in UTC: `07/Dec/2025:10:00:00 +0000`.
fn time_local(at: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_as_nginx_s_combined_and_graft_s_fields() {
        let entry = Entry {
            client: Some("127.0.0.1".parse().unwrap()),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_765_101_600),
            method: "GET",
            target: b"/a\"b\xff",
            version: "HTTP/1.1",
            status: 200,
            body_bytes: 8,
            referer: None,
            user_agent: Some(b"curl/7.88.1"),
            zone: Some("shop.example"),
            served_by_fl1: true,
            passed: Some((1, "decline")),
            seconds: 0.0021,
        };
        assert_eq!(
            entry.line(),
            "127.0.0.1 - - [07/Dec/2025:10:00:00 +0000] \"GET /a\\x22b\\xFF HTTP/1.1\" 200 8 \"-\" \"curl/7.88.1\" zone=\"shop.example\" served=fl1 from=1 reason=decline time=0.002\n"
        );
        assert_eq!(
            time_local(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "29/Feb/2000:00:00:00 +0000"
        );
        assert_eq!(
            time_local(SystemTime::UNIX_EPOCH),
            "01/Jan/1970:00:00:00 +0000"
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_never_waits() {
        let (lines, queue) = sync_channel(2);
        let log = AccessLog::over(lines);
        for i in 0..5 {
            log.write(format!("{i}\n"));
        }
        assert_eq!(log.dropped(), 3);
        assert_eq!(queue.try_recv().unwrap(), "0\n");
        log.write("5\n".into());
        assert_eq!(log.dropped(), 3);
        drop(queue);
        log.write("6\n".into());
        assert_eq!(log.dropped(), 4);
    }
}
