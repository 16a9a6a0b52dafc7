//! The engine's one error type: what kind of thing failed, where or what
//! it was about (the context), and the error underneath, if any.
//!
//! Displayed as "context: source" (or the context alone), so that a
//! refused configuration reads `file: zone "z": module #0 "waf": field
//! "rules[0].when.op": unknown operator`.
use std::fmt;

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A configuration refused: its file, zone, module and field.
    Config,
    /// The shared tables have no room for it (`graft_shared_memory`).
    Capacity,
    /// A zone or module the configuration does not have.
    NotFound,
    /// A kill switch that could not be stored: it is not thrown.
    Switch,
    /// A configuration text that could not be published for the workers.
    Snapshot,
    /// A line of a corpus file that cannot be read.
    Corpus,
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    context: String,
    source: Option<Source>,
}

impl Error {
    /// An error with no error underneath: the context says it all.
    pub fn new(kind: ErrorKind, context: impl Into<String>) -> Self {
        Error {
            kind,
            context: context.into(),
            source: None,
        }
    }

    /// An error about `context`, caused by `source`.
    pub fn with_source(
        kind: ErrorKind,
        context: impl Into<String>,
        source: impl Into<Source>,
    ) -> Self {
        Error {
            kind,
            context: context.into(),
            source: Some(source.into()),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.source, self.context.is_empty()) {
            (Some(source), true) => write!(f, "{source}"),
            (Some(source), false) => write!(f, "{}: {source}", self.context),
            (None, _) => f.write_str(&self.context),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// Errors of the engine.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;
    use graft_contract::ConfigError;

    #[test]
    fn reads_context_then_source() {
        let e = Error::with_source(
            ErrorKind::Config,
            "f.json: zone \"z\"",
            ConfigError::new("mode", "unknown"),
        );
        assert_eq!(e.to_string(), "f.json: zone \"z\": field \"mode\": unknown");
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(
            Error::new(ErrorKind::NotFound, "no zone \"x\"").to_string(),
            "no zone \"x\""
        );
    }
}
