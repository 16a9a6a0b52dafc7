//! The contract between graft and its product modules.
//!
//! A product module takes a read-only [`RequestView`] and its own typed,
//! validated configuration, and returns a [`Decision`]. Nothing here knows
//! about nginx or Lua: the shim implements [`RequestView`] over nginx's own
//! request structure, tests implement it over [`OwnedRequest`].
//!
//! The Lua twins under `lua/graft/legacy/` follow the same contract
//! field for field (see `lua/graft/contract.lua`), so that the two can be
//! compared decision by decision.
#![forbid(unsafe_code)]

pub mod args;
pub mod body;
mod context;
mod decision;
mod error;
mod header;
mod request;
mod response;

pub use context::{Context, LocalWindows, Windows};
pub use decision::{
    is_framing_header, Changes, Decision, HeaderAction, HeaderOp, Response, FRAMING_HEADERS,
};
pub use error::{ConfigError, ModuleError};
pub use header::{HeaderName, HeaderValue, InvalidHeader};
pub use request::{HeaderVisitor, OwnedRequest, RequestView};
pub use response::{check_response_ops, OwnedResponse, ResponseView};

/// A product module, in the shape of a proxy's phase trait: every phase has
/// a default, a module overrides the phases it acts in.
pub trait Module: Send + Sync {
    /// Runs before the content phase, once per request, in the zone's
    /// module order. The default lets the request continue unchanged.
    ///
    /// Return [`Decision::Decline`] for a request this implementation does
    /// not handle: graft then serves it through the Lua twin.
    fn on_request(&self, _req: &dyn RequestView, _ctx: &Context) -> Result<Decision, ModuleError> {
        Ok(Decision::Continue(Changes::default()))
    }

    /// Whether `on_request` reads the request body ([`RequestView::body`]).
    /// graft reads bodies only for zones with a module that does, and
    /// refuses a configuration that puts one in a zone with no body limit.
    fn wants_body(&self) -> bool {
        false
    }

    /// The response-body phase: a rewriter for this response's body, or
    /// `None` to leave it as it is (the default). Called once a response,
    /// when its headers are known; the rewriter then gets the body chunk by
    /// chunk, as it streams, and keeps what it needs between chunks (never
    /// the whole body). graft removes `Content-Length` from a response it
    /// rewrites.
    fn on_response_body(&self, _head: &ResponseHead<'_>) -> Option<Box<dyn BodyRewriter>> {
        None
    }

    /// Whether the module has a response-body phase at all.
    fn rewrites_bodies(&self) -> bool {
        false
    }

    /// The response-header phase: header changes for this response, from
    /// its status and headers as they are before they are sent (the
    /// upstream's, a content handler's, an error page's), and the request
    /// (as the request phase left it). Called once a main response. The
    /// default changes nothing. A change of a header only the server
    /// frames is refused whole, as an error.
    fn on_response(
        &self,
        _req: &dyn RequestView,
        _resp: &dyn ResponseView,
        _ctx: &Context,
    ) -> Result<Vec<HeaderOp>, ModuleError> {
        Ok(Vec::new())
    }

    /// Whether the module has a response-header phase at all.
    fn edits_responses(&self) -> bool {
        false
    }

    /// The log phase, once a request after its response: a record to
    /// write, or none. The default has none.
    fn on_log(
        &self,
        _req: &dyn RequestView,
        _done: &Completed<'_>,
    ) -> Result<LogOutcome, ModuleError> {
        Ok(LogOutcome::NotSampled)
    }

    /// Whether the module has a log phase at all.
    fn logs_requests(&self) -> bool {
        false
    }

    /// The files the module writes, each with the field of its
    /// configuration that names it (`("path", "/var/log/graft/x.jsonl")`).
    /// A server writes them only under directories its own configuration
    /// names (nginx's `graft_log_dir`), never where a graft file alone
    /// says: a configuration from a fleet's store must not choose a file.
    fn files(&self) -> Vec<(&'static str, &str)> {
        Vec::new()
    }
}

/// What the log phase knows of a request that was answered.
#[derive(Debug, Clone, Copy)]
pub struct Completed<'a> {
    /// The zone whose steps served it.
    pub zone: &'a str,
    pub status: u16,
    /// Bytes sent to the client, headers included (nginx's `$bytes_sent`).
    pub bytes_sent: u64,
    /// The time, in seconds since the epoch (the server's cached clock).
    pub time: u64,
}

/// What a log phase made of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOutcome {
    /// Not chosen by the module's sampling.
    NotSampled,
    /// A line to append to the file at `path`.
    Write {
        path: std::sync::Arc<str>,
        line: String,
    },
    /// A record over the module's rate: not written, counted.
    Dropped { line: String },
}

/// What the response-body phase knows of a response: its status and the
/// headers that say what the body is.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHead<'a> {
    pub status: u16,
    pub content_type: Option<&'a [u8]>,
    pub content_encoding: Option<&'a [u8]>,
}

/// One response body's rewriter: chunks in, chunks out. `Send`: a server
/// may carry a response from one thread to another between two chunks
/// (graft-edge's tasks move between its worker threads).
pub trait BodyRewriter: Send {
    /// Takes the next chunk of the body and appends to `out` what can be
    /// written so far.
    fn write(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), ModuleError>;
    /// The body ended: appends the rest to `out`.
    fn end(&mut self, out: &mut Vec<u8>) -> Result<(), ModuleError>;
}

/// Builds a module from its configuration. Registered once per module name;
/// called at configuration load, never per request.
pub trait ModuleFactory: Send + Sync {
    /// The name the configuration uses for the module.
    fn name(&self) -> &'static str;

    /// Parses and validates the module's configuration. An error names the
    /// field (`rules[3].status`) and says what is wrong with it.
    fn build(&self, config: &serde_json::Value) -> Result<Box<dyn Module>, ConfigError>;

    /// The configuration the Lua twin receives, from a configuration that
    /// `build` accepted. The default hands it over as it is.
    fn lua_config(&self, config: &serde_json::Value) -> serde_json::Value {
        config.clone()
    }

    /// What a step of this module does with a request it cannot decide
    /// (its Lua side missing or throwing, its Rust side failing with no Lua
    /// to fall back to), when the configuration does not say. Access
    /// controls answer instead of letting the request through; the default
    /// lets it go on past this step.
    fn on_failure(&self) -> FailurePolicy {
        FailurePolicy::Continue
    }
}

/// What a module crate implements once: its name, how it is built from its
/// configuration (parsed and validated, naming the field that is wrong),
/// and what its steps do when they cannot decide. [`Factory`] makes the
/// registry's [`ModuleFactory`] out of it.
pub trait Configured: Module + Sized + 'static {
    /// The name the configuration uses for the module.
    const NAME: &'static str;
    /// The failure policy of its steps when the configuration gives none:
    /// access controls answer ([`FailurePolicy::CLOSED`]).
    const ON_FAILURE: FailurePolicy = FailurePolicy::Continue;

    /// Parses and validates the module's configuration.
    fn configure(config: &serde_json::Value) -> Result<Self, ConfigError>;

    /// The configuration the Lua twin receives (see
    /// [`ModuleFactory::lua_config`]).
    fn lua_config(config: &serde_json::Value) -> serde_json::Value {
        config.clone()
    }
}

/// The registry's factory of a [`Configured`] module:
/// `pub static FACTORY: Factory<MyModule> = Factory::new();`.
pub struct Factory<M>(std::marker::PhantomData<fn() -> M>);

impl<M> Factory<M> {
    pub const fn new() -> Self {
        Factory(std::marker::PhantomData)
    }
}

impl<M> Default for Factory<M> {
    fn default() -> Self {
        Factory::new()
    }
}

impl<M: Configured> ModuleFactory for Factory<M> {
    fn name(&self) -> &'static str {
        M::NAME
    }

    fn build(&self, config: &serde_json::Value) -> Result<Box<dyn Module>, ConfigError> {
        Ok(Box::new(M::configure(config)?))
    }

    fn lua_config(&self, config: &serde_json::Value) -> serde_json::Value {
        M::lua_config(config)
    }

    fn on_failure(&self) -> FailurePolicy {
        M::ON_FAILURE
    }
}

/// What a step does with a request it cannot decide. Either way the failure
/// is counted and logged, and the steps after this one still run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Go on past this step, and this step only.
    Continue,
    /// Answer with this status (nginx's own page for it).
    Respond(u16),
}

impl FailurePolicy {
    /// The status a failing access control answers with by default: the
    /// server could not decide, so the request is not let through.
    pub const CLOSED: FailurePolicy = FailurePolicy::Respond(503);
}

/// Deserializes a module configuration, naming the field that failed.
///
/// Modules use it in [`ModuleFactory::build`] so that every configuration
/// error carries the path to the offending field.
pub fn parse_config<T: serde::de::DeserializeOwned>(
    config: &serde_json::Value,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(config).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        ConfigError::new(field, e.into_inner().to_string())
    })
}
