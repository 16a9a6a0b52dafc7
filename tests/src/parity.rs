//! Parity through nginx, the one helper every module's parity test uses:
//! the module runs in `shadow` in a real nginx (its Lua side with `ngx.*`,
//! as in production), and every request must leave the shadow-difference
//! counter where it was.
use serde_json::{json, Value};

use crate::corpus::CorpusRequest;
use crate::{replay, Site};

/// The zone the requests are sent to.
pub const ZONE: &str = "parity.test";

/// Sends `requests` (for host [`ZONE`]) through `module` configured with
/// `config`, in shadow; `Err` names the first request on which Lua and
/// Rust decided differently, with the logged difference, or the error-log
/// lines nobody expected. No request may be declined by the Rust side
/// (see [`shadow_parity_declining`]).
pub fn shadow_parity(
    module: &str,
    config: &Value,
    requests: &[CorpusRequest],
) -> Result<(), String> {
    shadow_parity_declining(module, config, requests, |_| false)
}

/// As [`shadow_parity`], with the team's own init Lua, locations and
/// native setting from `GRAFT_INIT`, `GRAFT_SITE` and `GRAFT_NATIVE`
/// (`make test INIT=... SITE=... NATIVE=1`): a legacy function the team
/// declared where it lives is the one compared, not a generated twin.
pub fn shadow_parity_site(
    module: &str,
    config: &Value,
    requests: &[CorpusRequest],
) -> Result<(), String> {
    let site = Site::from_env()?;
    shadow_parity_in(&site, module, config, requests, |_| false)
}

/// As [`shadow_parity`], for a module that leaves some requests to Lua on
/// purpose: a decline is an outcome of its own, not a difference, and
/// `declines` says which requests the Rust side must decline (and no
/// other may).
pub fn shadow_parity_declining(
    module: &str,
    config: &Value,
    requests: &[CorpusRequest],
    declines: impl Fn(&CorpusRequest) -> bool,
) -> Result<(), String> {
    shadow_parity_in(&Site::default(), module, config, requests, declines)
}

/// As [`shadow_parity_declining`], in nginx with `site`'s Lua and locations.
pub fn shadow_parity_in(
    site: &Site,
    module: &str,
    config: &Value,
    requests: &[CorpusRequest],
    declines: impl Fn(&CorpusRequest) -> bool,
) -> Result<(), String> {
    let file = json!({ "zones": { ZONE: { "modules": [
        { "module": module, "mode": "shadow", "config": config } ] } } });
    let nginx = site.start(&file.to_string(), site.native);
    let counts = || {
        let c = nginx.counters();
        let of = |what: &str| c["zones"][ZONE][0][what].as_u64().unwrap_or(0);
        (of("shadow_diff"), of("decline"))
    };
    for r in requests {
        let (diffs, declined) = counts();
        replay::send(nginx.port, r).map_err(|e| format!("{}: {e}", r.describe()))?;
        let (diffs_now, declined_now) = counts();
        if diffs_now != diffs {
            let log = nginx.error_log();
            let line = log
                .lines()
                .rev()
                .find(|l| l.contains("shadow diff"))
                .unwrap_or("");
            return Err(format!("{module} with {config}: {}\n{line}", r.describe()));
        }
        let expected = declines(r);
        if (declined_now != declined) != expected {
            return Err(format!(
                "{module} with {config}: {}: the Rust side {} (expected: {})",
                r.describe(),
                if declined_now != declined {
                    "declined"
                } else {
                    "decided"
                },
                if expected { "a decline" } else { "a decision" }
            ));
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
