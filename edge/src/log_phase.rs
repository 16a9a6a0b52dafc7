//! The log phase in graft-edge (request_log, and any module with
//! `Module::on_log`), from Pingora's `logging`: for a request graft-edge
//! served (its steps' answer, a failure policy's, or the origin's
//! response), each log step's record, written as FL1 writes it
//! (`graft_engine::record_file`, the writer nginx's log phase uses), in a
//! file under the settings' `log_dirs` (checked when the graft file is
//! loaded). A request FL1 served was logged by FL1, which runs the log
//! phase of every step of the zone.
//!
//! Which side serves a log step was decided at request time: a zone whose
//! log step is not in `rust` for a request goes to FL1 whole
//! (`steps::passed_whole`). A step that stopped being Rust's since (a kill
//! switch thrown meanwhile), a record that cannot be made or a file that
//! cannot be opened or written is a failure of the step: counted
//! (`failed`) and logged within the failure lines' budget, never silent;
//! records over the module's rate are counted `dropped`.
use graft_contract::Completed;
use graft_engine::protocol::later::{Phase, Side};
use graft_engine::protocol::Legacy;
use graft_engine::record_file::log_step;
use graft_engine::Zone;
use pingora_http::ResponseHeader;

use crate::request::EdgeRequest;
use crate::steps;

/// Runs the log phase of `zone`'s steps for a request graft-edge served.
pub fn run(zone: &Zone, req: &EdgeRequest<'_>, done: &Completed<'_>) {
    let p = steps::protocol(&zone.name, Legacy::None);
    for step in zone.steps.iter().filter(|s| s.module.logs_requests()) {
        let failed = |why: String| p.later_failed(step, Phase::Log, &why, true);
        if p.later_side(step, req) != Side::Rust {
            failed("is not in rust for this request any more (a kill switch, a rollback), and graft-edge runs no Lua".into());
            continue;
        }
        if let Err(why) = log_step(step, req, done) {
            failed(why);
        }
    }
}

/// The bytes of a response's head as HTTP/1.1 puts it on the wire (its
/// part of nginx's `$bytes_sent`).
pub fn head_bytes(head: &ResponseHeader) -> u64 {
    let reason = head.status.canonical_reason().unwrap_or("");
    let mut n = "HTTP/1.1 200 ".len() + reason.len() + 2;
    for (name, value) in &head.headers {
        n += name.as_str().len() + 2 + value.len() + 2;
    }
    (n + 2) as u64
}
