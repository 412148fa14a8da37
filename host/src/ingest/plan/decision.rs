//! The decision for one record: a duplicate; or, on a route that keeps state, called again
//! when what its call saw is not its key's state at its place; then its output applied to the
//! stock (and its key's state) in memory, or refused.

use std::collections::HashMap;

use super::stock::apply_in_memory;
use super::{Handled, Keyed};
use crate::domain::{ErrorKind, OrderStatus, Outcome, SeenState, state_change};
use crate::runtime::HandleError;

/// What happens to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Applied,
    /// A business refusal: the plugin's `rejected`, an unknown product, not enough stock.
    Rejected {
        kind: ErrorKind,
        reason: String,
    },
    /// Poison: the plugin could not handle the record (invalid input, trap, deadline,
    /// output the host refuses).
    DeadLetter {
        kind: ErrorKind,
        reason: String,
    },
    Duplicate,
}

impl Decision {
    /// A record not applied for `kind`: rejected or poison, as the kind says.
    pub fn refused(kind: ErrorKind, reason: String) -> Self {
        match kind.outcome() {
            Outcome::Rejected => Self::Rejected { kind, reason },
            _ => Self::DeadLetter { kind, reason },
        }
    }

    /// The decision for a plugin failure.
    pub fn from_error(error: &HandleError) -> Self {
        Self::refused(error.kind(), error.to_string())
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Applied => Outcome::Applied,
            Self::Rejected { .. } => Outcome::Rejected,
            Self::DeadLetter { .. } => Outcome::DeadLetter,
            Self::Duplicate => Outcome::Duplicate,
        }
    }

    /// The order's status this decision implies.
    pub fn order_status(&self) -> OrderStatus {
        match self {
            Self::Applied => OrderStatus::Applied,
            _ => OrderStatus::Rejected,
        }
    }

    pub fn kind_and_reason(&self) -> (Option<ErrorKind>, Option<&str>) {
        match self {
            Self::Rejected { kind, reason } | Self::DeadLetter { kind, reason } => {
                (Some(*kind), Some(reason))
            }
            Self::Applied | Self::Duplicate => (None, None),
        }
    }
}

/// One record decided, with the record as finally called: itself, or called again.
pub struct Decided<'a> {
    pub decision: Decision,
    original: &'a Handled,
    /// The record called again with its key's state at its place (see [`Keyed`]).
    pub again: Option<Handled>,
}

impl Decided<'_> {
    /// The record as it was finally called.
    pub fn handled(&self) -> &Handled {
        self.again.as_ref().unwrap_or(self.original)
    }
}

/// Decide `original` (`duplicate`: its event was decided before; `refused`: PostgreSQL
/// refused its table writes, and why). Applies what it changes to `stock` and, on a route that
/// keeps state, to its key's state in `keyed`.
pub fn decide<'a>(
    original: &'a Handled,
    (duplicate, refused): (bool, Option<&String>),
    stock: &mut HashMap<String, i64>,
    mut keyed: Option<&mut Keyed<'_>>,
) -> Decided<'a> {
    let settled = if duplicate {
        Some(Decision::Duplicate)
    } else {
        refused.map(|why| Decision::refused(ErrorKind::TableRefused, why.clone()))
    };
    if let Some(decision) = settled {
        return Decided {
            decision,
            original,
            again: None,
        };
    }
    let again = keyed
        .as_deref_mut()
        .and_then(|k| k.recall_if_stale(original));
    let handled = again.as_ref().unwrap_or(original);
    let decision = match &handled.result {
        Err(error) => Decision::from_error(error),
        Ok(mutations) => match apply_in_memory(stock, mutations) {
            Ok(()) => {
                if let Some(keyed) = keyed {
                    keyed.apply(handled, mutations);
                }
                Decision::Applied
            }
            Err(refusal) => refusal,
        },
    };
    Decided {
        decision,
        original,
        again,
    }
}

impl Keyed<'_> {
    /// `handled` called again with its key's state here, if its call saw another one.
    fn recall_if_stale(&mut self, handled: &Handled) -> Option<Handled> {
        let key = handled.record.key.as_deref()?;
        if !handled.seen_state.is_given() {
            return None;
        }
        let current = self.states.get(key);
        if handled.seen_state.value() == current.map(Vec::as_slice) {
            return None;
        }
        Some((self.recall)(handled, SeenState::of(current.cloned())))
    }

    /// An applied record's change to its key's state.
    fn apply(&mut self, handled: &Handled, mutations: &[crate::domain::Mutation]) {
        let (Some(key), true, Some(change)) = (
            handled.record.key.as_deref(),
            handled.seen_state.is_given(),
            state_change(mutations),
        ) else {
            return;
        };
        match change.value() {
            Some(value) => self.states.insert(key.to_vec(), value.to_vec()),
            None => self.states.remove(key),
        };
    }
}
