//! Parity through nginx, the one helper every module's parity test uses:
//! the module runs in `shadow` in a real nginx (its Lua side with `ngx.*`,
//! as in production), and every request must leave the shadow-difference
//! counter where it was.
use serde_json::{json, Value};

use crate::corpus::CorpusRequest;
use crate::{replay, Nginx};

/// The zone the requests are sent to.
pub const ZONE: &str = "parity.test";

/// Sends `requests` (for host [`ZONE`]) through `module` configured with
/// `config`, in shadow; `Err` names the first request on which Lua and
/// Rust decided differently, with the logged difference, or the error-log
/// lines nobody expected.
pub fn shadow_parity(
    module: &str,
    config: &Value,
    requests: &[CorpusRequest],
) -> Result<(), String> {
    let file = json!({ "zones": { ZONE: { "modules": [
        { "module": module, "mode": "shadow", "config": config } ] } } });
    let nginx = Nginx::start(&file.to_string());
    let diffs = || nginx.counter(ZONE, 0, "shadow_diff");
    for r in requests {
        let before = diffs();
        replay::send(nginx.port, r).map_err(|e| format!("{}: {e}", r.describe()))?;
        if diffs() != before {
            let log = nginx.error_log();
            let line = log
                .lines()
                .rev()
                .find(|l| l.contains("shadow diff"))
                .unwrap_or("");
            return Err(format!("{module} with {config}: {}\n{line}", r.describe()));
        }
    }
    let unexpected: Vec<_> = nginx
        .error_log()
        .lines()
        .filter(|l| {
            ["[error]", "[alert]", "[crit]", "[emerg]"]
                .iter()
                .any(|x| l.contains(x))
        })
        .map(String::from)
        .collect();
    if unexpected.is_empty() {
        Ok(())
    } else {
        Err(format!("{module} with {config}: {unexpected:?}"))
    }
}
