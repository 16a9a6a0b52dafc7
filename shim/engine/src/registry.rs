//! The Rust product modules graft knows, by configuration name.
use graft_contract::ModuleFactory;

/// Every module, in a fixed order. `probe` exists for graft's own tests of
/// modes and fallback.
static FACTORIES: &[&dyn ModuleFactory] = &[
    &graft_redirects::FACTORY,
    &graft_url_normalize::FACTORY,
    &graft_ip_access::FACTORY,
    &graft_waf::FACTORY,
    &graft_headers::FACTORY,
    &graft_rate_limit::FACTORY,
    &graft_probe::FACTORY,
];

pub fn factory(name: &str) -> Option<&'static dyn ModuleFactory> {
    FACTORIES.iter().copied().find(|f| f.name() == name)
}

/// What a request no step of `name` could be found for is served with:
/// the module's own failure policy (`None`: no such module).
pub fn default_policy(name: &str) -> Option<graft_contract::FailurePolicy> {
    factory(name).map(|f| f.on_failure())
}

pub fn names() -> impl Iterator<Item = &'static str> {
    FACTORIES.iter().map(|f| f.name())
}
