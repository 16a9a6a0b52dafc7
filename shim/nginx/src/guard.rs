//! No panic crosses into nginx: every entry point runs its body here.
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `body`; a panic becomes `on_panic`. The panic hook installed by
/// `graft_engine::dispatch` has already said nothing to stderr for module
/// panics; a panic in the shim itself is a bug and reaches the default hook.
pub fn guarded<T>(on_panic: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(on_panic)
}
