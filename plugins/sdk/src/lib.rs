//! Write a Sluice plugin as a plain function from a message to mutations.
//!
//! ```ignore
//! use sluice_plugin::prelude::*;
//!
//! fn handle(message: &Message) -> Outcome {
//!     let order = message.order()?;                      // the order event, parsed strictly
//!     let max: i64 = config_or("max-quantity", 100)?;    // this plugin's configuration
//!     if order.quantity > max {
//!         return Err(rejected(format!("at most {max} per order")));
//!     }
//!     info(format!("order {} takes {}", order.order_id, order.quantity));
//!     Ok(vec![stock(order.product_id, -order.quantity)])
//! }
//!
//! sluice_plugin::export!(handle);
//! ```
//!
//! `export!(handle)` makes the function the plugin's `handle` export (world `checked-handler`
//! of `sluice:handler@0.2.0`); `export!(handle, self_test = check)` adds a self-test the host
//! runs before activating a version. Build with `cargo build --target wasm32-wasip2 --release`
//! (or `sluice plugin build`). Tests run natively (`cargo test`) and on the real target under
//! wasmtime (`sluice plugin test`); [`testing`] sets configuration and state and reads log
//! lines in both.
//!
//! Contract 0.2 adds records a plugin emits ([`emit`]) and keyed state ([`state`],
//! [`set_state`], [`clear_state`]) where the operator enabled them for the route:
//!
//! ```ignore
//! fn handle(message: &Message) -> Outcome {
//!     let order = message.order()?;
//!     let seen: u64 = state_json()?.unwrap_or(0);           // this key's state, if any
//!     let mut out = vec![set_state_json(&(seen + 1))?];     // committed with the position
//!     if seen + 1 > 10 {
//!         out.push(emit("alerts", order.user_id.clone(), "too many orders"));
//!     }
//!     Ok(out)
//! }
//! ```
//!
//! The same source built as the crate `sluice-plugin-v0-1` (`v0.1/`) targets contract 0.1,
//! without emit and state, for plugins that stay on it.

// The generated bindings name this crate by its path, as plugins see it.
extern crate self as sluice_plugin;

use std::cell::RefCell;
use std::collections::HashMap;

pub use sluice_order_event as order;
pub use sluice_order_event::OrderEvent;

/// The bindings generated from the contract (`wit/handler.wit`; `wit/v0.1/handler.wit` in the
/// 0.1 build).
#[allow(clippy::too_many_arguments)] // generated code
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "checked-handler",
        additional_derives: [PartialEq],
        pub_export_macro: true,
        export_macro_name: "__export_checked_handler",
        default_bindings_module: "sluice_plugin::bindings",
        runtime_path: "sluice_plugin::__private::wit_bindgen::rt",
    });
}

pub use bindings::sluice::handler::host::Level;
pub use bindings::sluice::handler::types::{Header, StockAdjustment};
pub use bindings::{HandlerError, Message, Mutation};

// The contract this source is built against: 0.3 as `sluice-plugin`, 0.2 as
// `sluice-plugin-v0-2` (`v0.2/`, which sets `sluice_contract_0_2`), 0.1 as `sluice-plugin-v0-1`
// (`v0.1/`, `sluice_contract_0_1`). These lines are the switch; all that differs is in
// `since_0_2` (emitted records, keyed state), `since_0_3` (table writes) and `only_0_1`, and
// `contract` is the newest of them in this build.
#[cfg(sluice_contract_0_1)]
mod only_0_1;
#[cfg(not(sluice_contract_0_1))]
mod since_0_2;
#[cfg(not(any(sluice_contract_0_1, sluice_contract_0_2)))]
mod since_0_3;
#[cfg(sluice_contract_0_1)]
use only_0_1 as contract;
#[cfg(sluice_contract_0_2)]
use since_0_2 as contract;
#[cfg(not(sluice_contract_0_1))]
pub use since_0_2::{Emitted, clear_state, emit, set_state, set_state_json, state, state_json};
#[cfg(not(any(sluice_contract_0_1, sluice_contract_0_2)))]
use since_0_3 as contract;
#[cfg(not(any(sluice_contract_0_1, sluice_contract_0_2)))]
pub use since_0_3::{Cell, Value, add, cell, delete, json_value, timestamp, upsert};

/// What a handler returns: the mutations to apply, or why not.
pub type Outcome = Result<Vec<Mutation>, HandlerError>;

/// Everything a handler usually needs.
pub mod prelude {
    #[allow(unused_imports)] // nothing on contract 0.1
    pub use crate::contract::prelude::*;
    pub use crate::{
        HandlerError, Level, Message, MessageExt as _, Mutation, OrderEvent, Outcome, config,
        config_or, debug, error, info, invalid, log, rejected, stock, warn,
    };
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    pub fn no_self_test() -> Result<(), String> {
        Ok(())
    }

    /// Run `handle` with `state` as the key's state (what `state()` reads, contract 0.2).
    pub fn with_state<T>(state: Option<Vec<u8>>, handle: impl FnOnce() -> T) -> T {
        crate::LOCAL.with_borrow_mut(|local| local.state = state);
        let output = handle();
        crate::LOCAL.with_borrow_mut(|local| local.state = None);
        output
    }
}

/// Change `product_id`'s stock by `delta` (negative takes stock out).
pub fn stock(product_id: impl Into<String>, delta: i64) -> Mutation {
    Mutation::StockAdjustment(StockAdjustment {
        product_id: product_id.into(),
        delta,
    })
}

/// The message cannot be used (the reason should name the field): a dead letter.
pub fn invalid(reason: impl Into<String>) -> HandlerError {
    HandlerError::InvalidMessage(reason.into())
}

/// The message is well formed but refused on business grounds: `REJECTED`.
pub fn rejected(reason: impl Into<String>) -> HandlerError {
    HandlerError::Rejected(reason.into())
}

/// Reading a message.
pub trait MessageExt {
    /// The payload as UTF-8 text.
    fn text(&self) -> Result<&str, HandlerError>;
    /// The payload as JSON of type `T` (an `invalid` error says what is wrong).
    fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HandlerError>;
    /// The payload as the order service's event, parsed strictly (every field present and
    /// well typed, keys unique, quantity in range).
    fn order(&self) -> Result<OrderEvent, HandlerError>;
    /// The first header named `key`.
    fn header(&self, key: &str) -> Option<&[u8]>;
    /// The first header named `key`, as text.
    fn header_str(&self, key: &str) -> Option<&str>;
    /// The record key as text.
    fn key_str(&self) -> Option<&str>;
}

impl MessageExt for Message {
    fn text(&self) -> Result<&str, HandlerError> {
        std::str::from_utf8(&self.payload)
            .map_err(|e| invalid(format!("payload is not UTF-8: {e}")))
    }

    fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HandlerError> {
        serde_json::from_slice(&self.payload).map_err(|e| invalid(format!("payload: {e}")))
    }

    fn order(&self) -> Result<OrderEvent, HandlerError> {
        order::parse_order(&self.payload).map_err(invalid)
    }

    fn header(&self, key: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.key == key)
            .and_then(|h| h.value.as_deref())
    }

    fn header_str(&self, key: &str) -> Option<&str> {
        self.header(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }
}

/// The log lines of this instance (tests read them), configuration set by tests, and the
/// state of the call under way.
struct Local {
    logs: Vec<(Level, String)>,
    config: HashMap<String, String>,
    state: Option<Vec<u8>>,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local {
        logs: Vec::new(),
        config: HashMap::new(),
        state: None,
    });
}

/// The most log lines kept for [`testing::logs`].
const KEPT_LOG_LINES: usize = 1000;

/// Write a line to the host's log (tagged with the plugin's name and version there).
pub fn log(level: Level, message: impl AsRef<str>) {
    let message = message.as_ref();
    LOCAL.with_borrow_mut(|local| {
        if local.logs.len() < KEPT_LOG_LINES {
            local.logs.push((level, message.to_string()));
        }
    });
    #[cfg(target_arch = "wasm32")]
    bindings::sluice::handler::host::log(level, message);
}

pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message)
}

pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message)
}

pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message)
}

pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message)
}

/// This plugin's configuration value for `key` (set by the operator), if any.
pub fn config(key: &str) -> Option<String> {
    if let Some(value) = LOCAL.with_borrow(|local| local.config.get(key).cloned()) {
        return Some(value);
    }
    #[cfg(target_arch = "wasm32")]
    return bindings::sluice::handler::host::get_config(key);
    #[cfg(not(target_arch = "wasm32"))]
    None
}

/// `key`'s value parsed as `T`, or `default` when it is not set. A value that does not parse
/// is an `invalid` error naming the key (the record becomes a dead letter with the reason).
pub fn config_or<T: std::str::FromStr>(key: &str, default: T) -> Result<T, HandlerError>
where
    T::Err: std::fmt::Display,
{
    match config(key) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e| invalid(format!("configuration `{key}` = `{raw}`: {e}"))),
    }
}

/// The heap of a plugin built for `wasm32-unknown-unknown` (the stock plugin embedded in
/// `sluice`). The SDK's footprint (`footprint.rs`) gives a component one WebAssembly page:
/// the stack, the static data, and the rest of the page for the heap. std's allocator there
/// (dlmalloc) takes memory 64 KiB at a time, more than that rest, so its first allocation
/// would grow every call's memory to two pages; the same allocator taking 4 KiB at a time
/// starts in the rest of the first page and grows only when a call needs more. (A
/// `wasm32-wasip2` build allocates through wasi-libc, which starts there anyway.)
#[cfg(all(
    target_arch = "wasm32",
    target_os = "unknown",
    not(target_feature = "atomics")
))]
mod heap {
    use std::alloc::{GlobalAlloc, Layout};
    use std::cell::UnsafeCell;

    /// How much the allocator takes from the memory at a time: the rest of the first page
    /// (the linker's `__heap_base` to `__heap_end`) when a request fits there, else whole
    /// pages by `memory.grow`.
    const GRANULARITY: usize = 4 << 10;

    struct Heap(UnsafeCell<dlmalloc::Dlmalloc>);

    // SAFETY: without the `atomics` feature a wasm32 module has exactly one thread.
    unsafe impl Sync for Heap {}

    #[global_allocator]
    static HEAP: Heap = Heap(UnsafeCell::new({
        let mut heap = dlmalloc::Dlmalloc::new();
        assert!(heap.set_granularity(GRANULARITY));
        heap
    }));

    // SAFETY: each call is passed through to dlmalloc, which keeps `GlobalAlloc`'s contract;
    // there is one thread, so no two calls overlap.
    unsafe impl GlobalAlloc for Heap {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            unsafe { (*self.0.get()).malloc(layout.size(), layout.align()) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            unsafe { (*self.0.get()).calloc(layout.size(), layout.align()) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { (*self.0.get()).free(ptr, layout.size(), layout.align()) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            unsafe { (*self.0.get()).realloc(ptr, layout.size(), layout.align(), new_size) }
        }
    }
}

/// For tests, natively and on wasm32-wasip2 alike: messages, configuration, log lines (and
/// on contract 0.2, calls with a key's state and what they emit).
pub mod testing {
    use super::*;
    #[allow(unused_imports)] // nothing on contract 0.1
    pub use crate::contract::testing::*;

    /// A message with this payload (topic `test`, partition 0, offset 0, no key or headers).
    pub fn message(payload: impl Into<Vec<u8>>) -> Message {
        Message {
            topic: "test".into(),
            partition: 0,
            offset: 0,
            key: None,
            payload: payload.into(),
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    /// An order event as the order service publishes it.
    pub fn order(order_id: &str, product_id: &str, quantity: i64) -> Message {
        let payload = serde_json::json!({
            "orderId": order_id, "userId": "test", "productId": product_id, "quantity": quantity,
            "unitPrice": 100, "totalPrice": 100 * quantity, "createdAt": "2026-01-01T00:00:00Z"
        });
        let mut message = message(payload.to_string());
        message.key = Some(product_id.as_bytes().to_vec());
        message.headers.push(Header {
            key: "event-id".into(),
            value: Some(order_id.as_bytes().to_vec()),
        });
        message
    }

    /// Set a configuration value, as an operator would (until [`clear_config`]).
    pub fn set_config(key: &str, value: &str) {
        LOCAL.with_borrow_mut(|local| {
            local.config.insert(key.to_string(), value.to_string());
        });
    }

    pub fn clear_config() {
        LOCAL.with_borrow_mut(|local| local.config.clear());
    }

    /// The lines logged so far (on this thread), oldest first.
    pub fn logs() -> Vec<(Level, String)> {
        LOCAL.with_borrow(|local| local.logs.clone())
    }

    /// Forget the lines logged so far.
    pub fn clear_logs() {
        LOCAL.with_borrow_mut(|local| local.logs.clear());
    }

    /// The stock adjustments of an outcome, as (product, delta) pairs.
    pub fn adjustments(outcome: &Outcome) -> Option<Vec<(String, i64)>> {
        outcome
            .as_ref()
            .ok()
            .map(|mutations| mutations.iter().filter_map(adjustment).collect())
    }

    fn adjustment(mutation: &Mutation) -> Option<(String, i64)> {
        let a = crate::contract::stock_adjustment(mutation)?;
        Some((a.product_id.clone(), a.delta))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn configuration_set_by_a_test_is_read_and_a_bad_value_is_named() {
        clear_config();
        assert_eq!(config_or("max", 7), Ok(7));
        set_config("max", " 12 ");
        assert_eq!(config_or("max", 7), Ok(12));
        set_config("max", "lots");
        let Err(HandlerError::InvalidMessage(reason)) = config_or::<i64>("max", 7) else {
            panic!("a value that does not parse is invalid");
        };
        assert!(reason.contains("`max` = `lots`"), "{reason}");
        clear_config();
        assert_eq!(config("max"), None);
    }

    #[test]
    fn log_lines_are_kept_for_tests_with_their_level() {
        clear_logs();
        info("one");
        warn(format!("two {}", 2));
        assert_eq!(
            logs(),
            vec![
                (Level::Info, "one".to_string()),
                (Level::Warn, "two 2".to_string())
            ]
        );
        clear_logs();
        assert!(logs().is_empty());
    }

    #[test]
    fn messages_read_as_orders_json_and_headers() {
        let message = order("o-1", "P-1", 3);
        assert_eq!(message.order().map(|o| o.quantity), Ok(3));
        assert_eq!(message.header_str("event-id"), Some("o-1"));
        assert_eq!(message.key_str(), Some("P-1"));
        let value: serde_json::Value = message.json().unwrap();
        assert_eq!(value["productId"], "P-1");

        let bad = testing::message(vec![0xff]);
        assert!(matches!(bad.text(), Err(HandlerError::InvalidMessage(r)) if r.contains("UTF-8")));
        assert!(matches!(bad.order(), Err(HandlerError::InvalidMessage(_))));
        assert_eq!(bad.header("event-id"), None);
    }

    #[test]
    fn helpers_build_mutations_and_errors() {
        assert_eq!(
            adjustments(&Ok(vec![stock("A", -2)])),
            Some(vec![("A".to_string(), -2)])
        );
        assert_eq!(adjustments(&Err(rejected("no"))), None);
        assert_eq!(invalid("x"), HandlerError::InvalidMessage("x".into()));
    }
}
