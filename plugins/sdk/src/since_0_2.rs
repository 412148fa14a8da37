//! What contract 0.2 adds to the SDK: records a plugin emits and keyed state, the `export!`
//! that hands a call its key's state, and their test helpers. Not in the build against
//! contract 0.1 (`sluice-plugin-v0-1`).

pub use crate::bindings::sluice::handler::types::Emitted;
use crate::bindings::sluice::handler::types::StockAdjustment;
use crate::{HandlerError, LOCAL, Mutation, invalid};

/// Export `handle` (a `fn(&Message) -> Outcome`) as the plugin, optionally with a self-test
/// (a `fn() -> Result<(), String>`) the host runs before activating a version. The key's
/// state the host passes is what [`state`] returns during the call.
#[macro_export]
macro_rules! export {
    ($handle:path) => {
        $crate::export!($handle, self_test = $crate::__private::no_self_test);
    };
    ($handle:path, self_test = $self_test:path) => {
        struct __SluicePlugin;

        impl $crate::bindings::Guest for __SluicePlugin {
            fn handle(
                message: $crate::Message,
                state: ::core::option::Option<::std::vec::Vec<u8>>,
            ) -> $crate::Outcome {
                $crate::__private::with_state(state, || $handle(&message))
            }

            fn self_test() -> ::core::result::Result<(), ::std::string::String> {
                $self_test()
            }
        }

        $crate::bindings::__export_checked_handler!(__SluicePlugin);
    };
}

/// Publish a record with this key and value to `topic` (one the operator allows for the
/// route), in the transaction that applies the message. [`Emitted`] gives full control
/// (headers, no key, a tombstone): `Mutation::Emit(Emitted { .. })`.
pub fn emit(
    topic: impl Into<String>,
    key: impl Into<Vec<u8>>,
    value: impl Into<Vec<u8>>,
) -> Mutation {
    Mutation::Emit(Emitted {
        topic: topic.into(),
        key: Some(key.into()),
        value: Some(value.into()),
        headers: Vec::new(),
    })
}

/// The message key's state as the host passed it to this call (`None`: the key has none, the
/// message has no key, or the route keeps no state).
pub fn state() -> Option<Vec<u8>> {
    LOCAL.with_borrow(|local| local.state.clone())
}

/// The key's state as JSON of type `T`; a state that does not parse is an `invalid` error.
pub fn state_json<T: serde::de::DeserializeOwned>() -> Result<Option<T>, HandlerError> {
    LOCAL.with_borrow(|local| {
        local
            .state
            .as_deref()
            .map(|bytes| {
                serde_json::from_slice(bytes)
                    .map_err(|e| invalid(format!("this key's state is not what it should be: {e}")))
            })
            .transpose()
    })
}

/// Make `value` the message key's state once the message applies.
pub fn set_state(value: impl Into<Vec<u8>>) -> Mutation {
    Mutation::SetState(value.into())
}

/// [`set_state`] with `value` as JSON.
pub fn set_state_json<T: serde::Serialize>(value: &T) -> Result<Mutation, HandlerError> {
    serde_json::to_vec(value)
        .map(Mutation::SetState)
        .map_err(|e| invalid(format!("state: {e}")))
}

/// Remove the message key's state once the message applies.
pub fn clear_state() -> Mutation {
    Mutation::ClearState
}

/// The stock adjustment a mutation is, if it is one.
pub(crate) fn stock_adjustment(mutation: &Mutation) -> Option<&StockAdjustment> {
    match mutation {
        Mutation::StockAdjustment(adjustment) => Some(adjustment),
        _ => None,
    }
}

/// What the prelude adds on contract 0.2.
pub mod prelude {
    pub use super::{clear_state, emit, set_state, set_state_json, state, state_json};
}

/// What `testing` adds on contract 0.2: calls with a key's state, and what they emit.
pub mod testing {
    use super::Emitted;
    use crate::{Message, Mutation, Outcome};

    /// Call `handle` on `message` with `state` as its key's state, as the host would.
    pub fn call_with_state(
        handle: impl FnOnce(&Message) -> Outcome,
        message: &Message,
        state: Option<Vec<u8>>,
    ) -> Outcome {
        crate::__private::with_state(state, || handle(message))
    }

    /// Call `handle` on `messages` one after another, each with the state the earlier ones
    /// left (a refused message changes nothing), as the host does for one key's messages.
    /// Returns each outcome and the state at the end.
    pub fn fold(
        handle: impl Fn(&Message) -> Outcome,
        messages: &[Message],
        initial: Option<Vec<u8>>,
    ) -> (Vec<Outcome>, Option<Vec<u8>>) {
        let mut state = initial;
        let mut outcomes = Vec::with_capacity(messages.len());
        for message in messages {
            let outcome = call_with_state(&handle, message, state.clone());
            if let Ok(mutations) = &outcome {
                for mutation in mutations {
                    match mutation {
                        Mutation::SetState(value) => state = Some(value.clone()),
                        Mutation::ClearState => state = None,
                        _ => {}
                    }
                }
            }
            outcomes.push(outcome);
        }
        (outcomes, state)
    }

    /// The records an outcome emits.
    pub fn emitted(outcome: &Outcome) -> Vec<Emitted> {
        let Ok(mutations) = outcome else {
            return Vec::new();
        };
        mutations
            .iter()
            .filter_map(|mutation| match mutation {
                Mutation::Emit(emitted) => Some(emitted.clone()),
                _ => None,
            })
            .collect()
    }

    /// The state an outcome leaves: `None` if it does not change it, `Some(None)` if it clears
    /// it, `Some(Some(value))` if it sets it.
    #[allow(clippy::option_option)] // the three cases are the point
    pub fn state_change(outcome: &Outcome) -> Option<Option<Vec<u8>>> {
        outcome
            .as_ref()
            .ok()?
            .iter()
            .rev()
            .find_map(|mutation| match mutation {
                Mutation::SetState(value) => Some(Some(value.clone())),
                Mutation::ClearState => Some(None),
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::testing;
    use crate::{Message, Outcome, rejected};

    #[test]
    fn state_reaches_the_handler_and_a_fold_carries_it_from_message_to_message() {
        fn count(message: &Message) -> Outcome {
            let seen: u64 = state_json()?.unwrap_or(0);
            if message.payload == b"reset" {
                return Ok(vec![clear_state()]);
            }
            if message.payload == b"refuse" {
                return Err(rejected("refused"));
            }
            Ok(vec![
                set_state_json(&(seen + 1))?,
                emit("counts", "k", (seen + 1).to_string()),
            ])
        }
        let messages: Vec<Message> = ["a", "b", "refuse", "c"]
            .iter()
            .map(|p| testing::message(*p))
            .collect();
        let (outcomes, state) = fold(count, &messages, Some(b"10".to_vec()));
        assert_eq!(
            state.as_deref(),
            Some(&b"13"[..]),
            "10 + three applied messages"
        );
        let [one] = emitted(&outcomes[3])
            .try_into()
            .expect("one record emitted");
        assert_eq!(
            (one.topic.as_str(), one.key.as_deref(), one.value.as_deref()),
            ("counts", Some(&b"k"[..]), Some(&b"13"[..]))
        );
        assert_eq!(
            state_change(&outcomes[2]),
            None,
            "a refusal changes nothing"
        );
        let reset = call_with_state(count, &testing::message("reset"), Some(b"3".to_vec()));
        assert_eq!(state_change(&reset), Some(None));
        let bad = call_with_state(count, &testing::message("a"), Some(b"not json".to_vec()));
        assert!(matches!(bad, Err(HandlerError::InvalidMessage(r)) if r.contains("state")));
        assert_eq!(super::state(), None, "no state outside a call");
    }
}
