//! graft's engine: everything the nginx module does that does not need nginx.
//!
//! - [`config`]: the JSON configuration, parsed and validated once, whole or
//!   not at all;
//! - [`corpus`]: the request-corpus format, written by captures, read by replays;
//! - [`registry`]: the Rust product modules graft knows, in a fixed order;
//! - [`dispatch`]: runs one module for one request under `catch_unwind`;
//! - [`body_phase`]: one response's body rewriters, in step order, bounded;
//! - [`edge`]: the `Graft-Edge` header of a request graft-edge passes to
//!   FL1, and FL1's judgement of it;
//! - [`protocol`]: the step protocol every server drives (mode, run,
//!   count, hand over or failure policy, rollback and budget);
//! - [`counters`]: what happened, per zone, module and path;
//! - [`shared`]: the counter table and the window table every worker maps;
//! - [`diff_ring`]: the last shadow differences, for the dashboard;
//! - [`snapshot`]: the configuration text applied live, for every worker;
//! - [`fleet_report`]: what a server's fleet agent reports, for the metrics;
//! - [`log_budget`]: how many log lines a second each family may write;
//! - [`record_file`]: a log phase's records appended to their files.
//!
//! The nginx shim (`shim/nginx`) owns a [`Config`] per nginx cycle and calls
//! in here; tests call in here directly.
#![forbid(unsafe_code)]

pub mod admin;
pub mod body_phase;
pub mod config;
pub mod corpus;
pub mod counters;
pub mod diff_ring;
pub mod dispatch;
pub mod edge;
pub mod error;
pub mod fleet_report;
pub mod log_budget;
pub mod metrics;
pub mod protocol;
pub mod record_file;
pub mod registry;
pub mod shared;
pub mod snapshot;

pub use config::{BodyLimit, Config, LaterPhases, Mode, OverLimit, Step, Zone};
pub use counters::{Count, Counters, Impl, Kill};
pub use dispatch::{
    guarded_module, run_log_phase, run_request_phase, run_response_phase, start_response_body,
    Decided, Outcome,
};
pub use error::{Error, ErrorKind};
