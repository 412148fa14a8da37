//! What only the build against contract 0.1 has (`sluice-plugin-v0-1`): its `export!`,
//! whose `handle` gets no state.

use crate::Mutation;
use crate::bindings::sluice::handler::types::StockAdjustment;

/// Export `handle` (a `fn(&Message) -> Outcome`) as a contract 0.1 plugin, optionally with a
/// self-test (a `fn() -> Result<(), String>`) the host runs before activating a version.
#[macro_export]
macro_rules! export {
    ($handle:path) => {
        $crate::export!($handle, self_test = $crate::__private::no_self_test);
    };
    ($handle:path, self_test = $self_test:path) => {
        struct __SluicePlugin;

        impl $crate::bindings::Guest for __SluicePlugin {
            fn handle(message: $crate::Message) -> $crate::Outcome {
                $handle(&message)
            }

            fn self_test() -> ::core::result::Result<(), ::std::string::String> {
                $self_test()
            }
        }

        $crate::bindings::__export_checked_handler!(__SluicePlugin);
    };
}

/// The stock adjustment a mutation is (on contract 0.1, every mutation is one).
pub(crate) fn stock_adjustment(mutation: &Mutation) -> Option<&StockAdjustment> {
    let Mutation::StockAdjustment(adjustment) = mutation;
    Some(adjustment)
}

/// Contract 0.1 adds nothing to the prelude.
pub mod prelude {}

/// Contract 0.1 adds nothing to `testing`.
pub mod testing {}
