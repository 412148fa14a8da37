//! How the sandbox fails: a call (`HandleError`, costing only its record) or a component that
//! cannot become a plugin (`LoadError`).

use crate::domain::ErrorKind;

/// How a plugin call failed. Every case costs only the message that caused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// The plugin said the message is unusable.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// The plugin refused the message on business grounds.
    #[error("rejected by plugin: {0}")]
    Rejected(String),
    /// The call trapped: a panic, a memory or stack overflow, a bug in the plugin.
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The call ran past its deadline and was interrupted.
    #[error("plugin exceeded its {0} ms deadline")]
    Timeout(u128),
    /// The plugin tried to wait in a WASI call (sleep, timer, poll), which plugins may not.
    #[error("plugin tried to block: {0}")]
    Blocked(String),
    /// The plugin returned something the host will not apply.
    #[error("plugin output refused: {0}")]
    InvalidOutput(String),
}

impl HandleError {
    /// What kind of failure it is, stored with the message's outcome.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidMessage(_) => ErrorKind::InvalidMessage,
            Self::Rejected(_) => ErrorKind::Rejected,
            Self::Trap(_) => ErrorKind::Trap,
            Self::Timeout(_) => ErrorKind::Timeout,
            Self::Blocked(_) => ErrorKind::Blocked,
            Self::InvalidOutput(_) => ErrorKind::InvalidOutput,
        }
    }
}

/// Why a component cannot become a plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("refused: {0}")]
    TooLarge(String),
    #[error("not a valid WebAssembly component: {0}")]
    Compile(String),
    #[error("refused while compiling: {0}")]
    CompileLimit(String),
    #[error("component does not fit the sluice:handler world: {0}")]
    Link(String),
    #[error("the component does not fit the sandbox's limits: {0}")]
    Limits(String),
    #[error("the plugin's self-test failed: {0}")]
    SelfTest(String),
}

impl LoadError {
    /// A stable name for the reason (the `reason` label of `sluice_plugin_refusals_total`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too-large",
            Self::Compile(_) => "compile",
            Self::CompileLimit(_) => "compile-limit",
            Self::Link(_) => "link",
            Self::Limits(_) => "limits",
            Self::SelfTest(_) => "self-test",
        }
    }
}

/// An error message on one line: wasmtime's reports span several.
pub(crate) fn one_line(text: &str) -> String {
    text.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}
