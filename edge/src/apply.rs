//! The live apply on graft-edge (`POST /graft/admin/apply`), as nginx's
//! (`shim/nginx/src/live.rs`, `lua/graft/admin.lua`): the graft file read
//! again, or a text sent in its place (graft-agent's, from etcd), checked
//! whole by the same parser with the same errors, attached to the tables
//! graft-edge counts in, and swapped in atomically. Requests in flight
//! finish on the configuration they started with; the steps the new one
//! keeps carry their counts, windows and kill switches over. A text
//! refused changes nothing, and is counted
//! (`graft_configuration_refused_total`) and logged.
//!
//! graft-edge has one process, so there is no second stage: nginx's
//! workers each load the applied bytes within 250 ms, graft-edge's
//! threads all read the one configuration serving.
use std::sync::Mutex;

use graft_engine::Config;

use crate::state::Edge;

/// The largest text a live apply takes: nginx's (the size of its
/// snapshot in shared memory); larger files take a restart.
pub const MAX_LIVE_BYTES: usize = 64 * 1024 * 1024;

/// Applies one at a time: two at once would each check against the
/// configuration the other replaces.
static APPLYING: Mutex<()> = Mutex::new(());

/// Applies the graft file again (`sent` None), or `sent` in its place:
/// the new generation, or why it was refused (the running configuration
/// goes on serving).
pub fn apply(edge: &Edge, sent: Option<Vec<u8>>) -> Result<u64, String> {
    let _one = APPLYING.lock().unwrap_or_else(|e| e.into_inner());
    let applied = check(edge, sent).and_then(|config| {
        let generation = config.generation;
        edge.swap(config)?;
        Ok(generation)
    });
    match &applied {
        Ok(generation) => {
            tracing::info!("graft-edge: applied the configuration live (generation {generation})")
        }
        Err(e) => {
            refused(edge);
            tracing::error!("graft-edge: live configuration refused, the running one goes on: {e}");
        }
    }
    applied
}

/// Counts a refused graft file (a live apply's, or one whose body could
/// not be read).
pub fn refused(edge: &Edge) {
    edge.counters.add(graft_engine::counters::refused_key(), 1);
}

/// Reads and checks the text, and attaches it to graft-edge's tables.
fn check(edge: &Edge, sent: Option<Vec<u8>>) -> Result<Config, String> {
    let settings = &edge.settings;
    let path = &settings.graft;
    let was_sent = sent.is_some();
    let text = match sent {
        Some(text) => text,
        None => std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?,
    };
    // A text sent is not the file: its errors say so, not the file's name
    // (the file may well be fine), as nginx's do.
    let named = |e: String| match e.strip_prefix(&path.display().to_string()) {
        Some(rest) if was_sent => format!("the configuration sent{rest}"),
        _ => e,
    };
    if text.len() > MAX_LIVE_BYTES {
        return Err(named(format!(
            "{}: {} bytes, over the limit of {MAX_LIVE_BYTES} for a live apply (restart graft-edge with it)",
            path.display(),
            text.len(),
        )));
    }
    let config = Config::parse(path, &text).map_err(|e| named(e.to_string()))?;
    for zone in &config.zones {
        if settings.origin_of(&zone.name).is_none() {
            return Err(format!(
                "{}: field \"origins\": zone \"{}\" has no origin, and there is no \"{}\"",
                settings.source.display(),
                zone.name,
                crate::settings::DEFAULT_ORIGIN
            ));
        }
    }
    // An origin for a zone this configuration does not have is a zone it
    // dropped (or a typo, which start-up refuses): said, not refused.
    for name in settings.origins.keys() {
        if name != crate::settings::DEFAULT_ORIGIN && config.zone_named(name).is_none() {
            tracing::warn!(
                "graft-edge: {}: field \"origins.{name}\" names no zone of the configuration applied",
                settings.source.display()
            );
        }
    }
    config.fits(&edge.counters).map_err(|e| {
        e.to_string().replace(
            "graft_shared_memory",
            "graft-edge's settings (tables.counter_bytes)",
        )
    })?;
    config.attach(edge.counters, edge.windows);
    Ok(config)
}
