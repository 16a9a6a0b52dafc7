//! The request corpus format: graft's engine holds it (the nginx module
//! writes it when it captures traffic; the replay reads it).
pub use graft_engine::corpus::*;
