//! ip_access: per-zone allow and deny lists of IPv4 and IPv6 prefixes.
//!
//! The most specific prefix that holds the client's address decides; a
//! prefix may not stand in both lists. With no match, `default` decides.
//! A denied request is answered with `status` (403).
//!
//! ```json
//! { "allow": [ "10.0.0.0/8", "2001:db8::/32" ], "deny": [ "10.66.0.0/16" ],
//!   "default": "deny", "status": 403 }
//! ```
//!
//! The Lua legacy implementation is `lua/graft/legacy/ip_access.lua`.
#![forbid(unsafe_code)]

use graft_conditions::{parse_prefix, MAX_LIST};
use graft_contract::{
    parse_config, Changes, ConfigError, Configured, Context, Decision, Factory, FailurePolicy,
    Module, ModuleError, RequestView, Response,
};
use ipnet::IpNet;
use prefix_trie::joint::map::JointPrefixMap;
use serde::Deserialize;

pub const NAME: &str = "ip_access";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default = "allow")]
    default: Access,
    #[serde(default = "forbidden")]
    status: u16,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Access {
    Allow,
    Deny,
}

fn allow() -> Access {
    Access::Allow
}

fn forbidden() -> u16 {
    403
}

pub struct IpAccess {
    prefixes: JointPrefixMap<IpNet, Access>,
    default: Access,
    status: u16,
}

impl IpAccess {
    pub fn from_config(config: &serde_json::Value) -> Result<IpAccess, ConfigError> {
        let c: Config = parse_config(config)?;
        if !(400..=599).contains(&c.status) {
            return Err(ConfigError::new(
                "status",
                format!("{} is not a 4xx or 5xx status", c.status),
            ));
        }
        let mut prefixes = JointPrefixMap::new();
        for (list, access, items) in [
            ("allow", Access::Allow, &c.allow),
            ("deny", Access::Deny, &c.deny),
        ] {
            if items.len() > MAX_LIST {
                return Err(ConfigError::new(
                    list,
                    format!("more than {MAX_LIST} prefixes"),
                ));
            }
            for (i, text) in items.iter().enumerate() {
                let at = format!("{list}[{i}]");
                let net = parse_prefix(text).map_err(|e| ConfigError::new(&at, e))?;
                if let Some(previous) = prefixes.insert(net, access) {
                    if previous != access {
                        return Err(ConfigError::new(
                            at,
                            format!("{net} is in both allow and deny"),
                        ));
                    }
                }
            }
        }
        Ok(IpAccess {
            prefixes,
            default: c.default,
            status: c.status,
        })
    }
}

impl Module for IpAccess {
    fn on_request(&self, req: &dyn RequestView, _ctx: &Context) -> Result<Decision, ModuleError> {
        let access = req
            .client_addr()
            .and_then(|ip| self.prefixes.get_lpm(&IpNet::from(ip)).map(|(_, a)| *a))
            .unwrap_or(self.default);
        Ok(match access {
            Access::Allow => Decision::Continue(Changes::default()),
            Access::Deny => Decision::Respond(Response {
                status: self.status,
                headers: Vec::new(),
                body: Vec::new(),
                log: Vec::new(),
            }),
        })
    }
}

impl Configured for IpAccess {
    const NAME: &'static str = NAME;
    /// An access control: a request it cannot decide is not let through.
    const ON_FAILURE: FailurePolicy = FailurePolicy::CLOSED;

    fn configure(config: &serde_json::Value) -> Result<Self, ConfigError> {
        Self::from_config(config)
    }
}

/// The registry's factory of this module.
pub static FACTORY: Factory<IpAccess> = Factory::new();

#[cfg(test)]
mod tests {
    use super::*;
    use graft_contract::{LocalWindows, OwnedRequest};
    use serde_json::json;

    fn denied(config: &serde_json::Value, client: &str) -> bool {
        let m = IpAccess::from_config(config).unwrap();
        let mut req = OwnedRequest::get("a", "/");
        req.client = Some(client.parse().unwrap());
        let counters = LocalWindows::default();
        matches!(
            m.on_request(&req, &Context::local(0, &counters)).unwrap(),
            Decision::Respond(_)
        )
    }

    #[test]
    fn most_specific_prefix_wins() {
        let c = json!({ "allow": ["10.0.0.0/8", "10.66.6.0/24", "2001:db8::/32"],
                        "deny": ["10.66.0.0/16", "2001:db8:bad::/48"], "default": "deny" });
        assert!(!denied(&c, "10.1.1.1"));
        assert!(denied(&c, "10.66.1.1"));
        assert!(!denied(&c, "10.66.6.6"));
        assert!(denied(&c, "192.0.2.1"));
        assert!(!denied(&c, "2001:db8:1::1"));
        assert!(denied(&c, "2001:db8:bad::1"));
        assert!(denied(&c, "::1"));
        let open = json!({ "deny": ["203.0.113.7"] });
        assert!(denied(&open, "203.0.113.7"));
        assert!(!denied(&open, "203.0.113.8"));
    }

    #[test]
    fn refuses_bad_prefixes_and_contradictions() {
        let e = IpAccess::from_config(&json!({ "allow": ["10.0.0.0/33"] }))
            .err()
            .unwrap();
        assert_eq!(e.field, "allow[0]");
        let e = IpAccess::from_config(&json!({ "allow": ["10.0.0.0/8"], "deny": ["10.1.2.3/8"] }))
            .err()
            .unwrap();
        assert_eq!(e.field, "deny[0]");
        assert!(e.message.contains("both"), "{e}");
        let e = IpAccess::from_config(&json!({ "default": "maybe" }))
            .err()
            .unwrap();
        assert_eq!(e.field, "default");
    }
}
