//! The Rust product modules graft knows, by configuration name.
use graft_contract::ModuleFactory;

/// Every product module, in a fixed order.
static PRODUCT: &[&dyn ModuleFactory] = &[
    &graft_redirects::FACTORY,
    &graft_url_normalize::FACTORY,
    &graft_ip_access::FACTORY,
    &graft_waf::FACTORY,
    &graft_headers::FACTORY,
    &graft_html_rewrite::FACTORY,
    &graft_request_log::FACTORY,
    &graft_rate_limit::FACTORY,
    // New modules above this line (make new-module).
];

/// `probe`, which answers, declines, fails or panics on demand, exists for
/// graft's own tests of modes, fallback and failure policies: registered
/// in test builds only (the `probe` feature: `make build`, `make test`),
/// never in the package.
#[cfg(any(test, feature = "probe"))]
static TEST_ONLY: &[&dyn ModuleFactory] = &[&graft_probe::FACTORY];
#[cfg(not(any(test, feature = "probe")))]
static TEST_ONLY: &[&dyn ModuleFactory] = &[];

fn factories() -> impl Iterator<Item = &'static dyn ModuleFactory> {
    PRODUCT.iter().chain(TEST_ONLY).copied()
}

pub fn factory(name: &str) -> Option<&'static dyn ModuleFactory> {
    factories().find(|f| f.name() == name)
}

/// What a request no step of `name` could be found for is served with:
/// the module's own failure policy (`None`: no such module).
pub fn default_policy(name: &str) -> Option<graft_contract::FailurePolicy> {
    factory(name).map(|f| f.on_failure())
}

pub fn names() -> impl Iterator<Item = &'static str> {
    factories().map(|f| f.name())
}
