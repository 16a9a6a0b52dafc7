//! The Rust product modules graft knows, by configuration name.
use graft_contract::ModuleFactory;

/// Every module, in a fixed order. `probe` exists for graft's own tests of
/// modes and fallback.
static FACTORIES: &[&dyn ModuleFactory] = &[
    &graft_redirects::Factory,
    &graft_url_normalize::Factory,
    &graft_ip_access::Factory,
    &graft_waf::Factory,
    &graft_headers::Factory,
    &graft_rate_limit::Factory,
    &graft_probe::Factory,
];

pub fn factory(name: &str) -> Option<&'static dyn ModuleFactory> {
    FACTORIES.iter().copied().find(|f| f.name() == name)
}

pub fn names() -> impl Iterator<Item = &'static str> {
    FACTORIES.iter().map(|f| f.name())
}
