use std::collections::HashMap;
use std::sync::Mutex;

/// What a module may use besides the request: the server's clock and
/// windowed counts that every worker process shares.
pub struct Context<'a> {
    /// The zone (host) the request is for, as the configuration names it.
    pub zone: &'a str,
    /// Seconds since the epoch, as the server's cached clock says.
    pub now_secs: u64,
    /// Windowed counts (rate limits) shared by every worker.
    pub windows: &'a dyn Windows,
}

/// Counts in fixed windows (rate limits), shared by every worker of a server.
pub trait Windows {
    /// Adds one to `key`'s count in the window of `window_secs` seconds
    /// (aligned on multiples of it) that holds `now_secs`, and returns the
    /// count after this request.
    fn incr(&self, key: &[u8], window_secs: u32, now_secs: u64) -> u64;
}

/// Windowed counts in this process's memory: for tests and for tools that run
/// modules outside a server.
#[derive(Default)]
pub struct LocalWindows(Mutex<HashMap<(Vec<u8>, u64), u64>>);

impl Windows for LocalWindows {
    fn incr(&self, key: &[u8], window_secs: u32, now_secs: u64) -> u64 {
        let window = now_secs / u64::from(window_secs.max(1));
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|(_, w), _| *w + 1 >= window);
        let count = map.entry((key.to_vec(), window)).or_insert(0);
        *count += 1;
        *count
    }
}

impl Context<'_> {
    /// A context with a fixed clock and process-local counters.
    pub fn local(now_secs: u64, windows: &LocalWindows) -> Context<'_> {
        Context {
            zone: "test",
            now_secs,
            windows,
        }
    }
}
