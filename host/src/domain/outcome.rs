//! What became of a consumed record: its outcome and, when it was not applied, the kind of
//! error. Stored, reported and counted by these names (`as_str`); never compared as text.

use std::fmt;

/// What happened to one consumed record.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    /// Its mutations were applied.
    Applied,
    /// A business refusal: the plugin's `rejected`, an unknown product, not enough stock.
    Rejected,
    /// Poison: the plugin could not handle it (invalid input, a trap, the deadline, output the
    /// host refuses). Kept whole as a dead letter.
    DeadLetter,
    /// Its event id was decided before: nothing done again.
    Duplicate,
}

impl Outcome {
    pub const ALL: [Self; 4] = [
        Self::Applied,
        Self::Rejected,
        Self::DeadLetter,
        Self::Duplicate,
    ];

    /// Its name in the database, the API and the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "APPLIED",
            Self::Rejected => "REJECTED",
            Self::DeadLetter => "DEAD_LETTER",
            Self::Duplicate => "DUPLICATE",
        }
    }

    /// Its value of the `outcome` label of `sluice_records_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Rejected => "rejected",
            Self::DeadLetter => "dead-lettered",
            Self::Duplicate => "duplicate",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == raw)
    }
}

impl TryFrom<String> for Outcome {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw).ok_or_else(|| format!("unknown outcome `{raw}`"))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a record was not applied: how its plugin call failed, or what the host refused of its
/// output. The `error_kind` of outcomes, dead letters, verdicts and the dead-letter topic's
/// `sluice-error-kind` header.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The plugin said the record is unusable (not an order, a bad field).
    InvalidMessage,
    /// The plugin refused the record on business grounds.
    Rejected,
    /// The call trapped: a panic, memory or stack exhausted, a bug in the plugin.
    Trap,
    /// The call ran past its deadline.
    Timeout,
    /// The plugin tried to wait in a WASI call (sleep, poll).
    Blocked,
    /// The plugin returned output the host will not apply (over a limit, not allowed on the
    /// route, a stock overflow).
    InvalidOutput,
    /// A stock adjustment names a product the catalog does not have.
    UnknownProduct,
    /// A stock adjustment would take a product's stock below zero.
    InsufficientStock,
    /// PostgreSQL refused the record's table write (a constraint of the team's table: a
    /// foreign key, a `CHECK`, a unique index, a trigger).
    TableRefused,
}

impl ErrorKind {
    pub const ALL: [Self; 9] = [
        Self::InvalidMessage,
        Self::Rejected,
        Self::Trap,
        Self::Timeout,
        Self::Blocked,
        Self::InvalidOutput,
        Self::UnknownProduct,
        Self::InsufficientStock,
        Self::TableRefused,
    ];

    /// Its stable, machine-readable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidMessage => "invalid-message",
            Self::Rejected => "rejected",
            Self::Trap => "trap",
            Self::Timeout => "timeout",
            Self::Blocked => "blocked",
            Self::InvalidOutput => "invalid-output",
            Self::UnknownProduct => "unknown-product",
            Self::InsufficientStock => "insufficient-stock",
            Self::TableRefused => "table-refused",
        }
    }

    /// The outcome a record with this error has: a business refusal is `Rejected`, the rest
    /// is poison.
    pub fn outcome(self) -> Outcome {
        match self {
            Self::Rejected | Self::UnknownProduct | Self::InsufficientStock => Outcome::Rejected,
            Self::InvalidMessage
            | Self::Trap
            | Self::Timeout
            | Self::Blocked
            | Self::InvalidOutput
            | Self::TableRefused => Outcome::DeadLetter,
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }
}

impl TryFrom<String> for ErrorKind {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw).ok_or_else(|| format!("unknown error kind `{raw}`"))
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_serde_writes_the_same_names() {
        for outcome in Outcome::ALL {
            assert_eq!(Outcome::parse(outcome.as_str()), Some(outcome));
            assert_eq!(
                serde_json::to_value(outcome).unwrap(),
                serde_json::json!(outcome.as_str())
            );
        }
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(kind.as_str()), Some(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
            assert_ne!(kind.outcome(), Outcome::Applied);
        }
        assert_eq!(Outcome::parse("applied"), None);
    }

    /// The README's table of error kinds lists each kind once, with its outcome, and no other.
    #[test]
    fn the_readme_lists_every_error_kind_with_its_outcome() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
        let rows: Vec<&str> = readme
            .lines()
            .filter(|line| {
                line.starts_with("| `")
                    && (line.contains("| `REJECTED` |") || line.contains("| `DEAD_LETTER` |"))
            })
            .collect();
        for kind in ErrorKind::ALL {
            let row = format!("| `{}` | `{}` |", kind.as_str(), kind.outcome().as_str());
            let found = rows.iter().filter(|r| r.starts_with(&row)).count();
            assert_eq!(found, 1, "the README's row for {kind}: {row}");
        }
        assert_eq!(rows.len(), ErrorKind::ALL.len(), "{rows:#?}");
    }
}
