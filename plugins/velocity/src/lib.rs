//! Order velocity (an example of contract 0.2: keyed state and emitted records): counts the
//! orders of each record key in fixed windows of time, kept in the key's state, and rejects
//! an order that would go over the configured rate. The order that reaches the rate emits an
//! alert record. An order within the rate takes its quantity out of its product's stock, as the
//! stock plugin does, so this plugin can replace it on the orders topic.
//!
//! The order service keys its events by product, so on `example-order-topic` this limits how
//! fast each product sells (a flash sale's guard); a topic keyed by user limits each user.
//!
//! Configuration (`--plugin-config velocity:KEY=VALUE`): `max-orders` per window (default 100),
//! `window-seconds` (60), `alert-topic` (`order-alerts`; the route must allow it: `--emit
//! example-order-topic=order-alerts`). The route keeps state: `--state example-order-topic`.
//!
//! Time is the record's timestamp, not the clock: a replay or a redrive decides the same.

use serde::{Deserialize, Serialize};
use sluice_plugin::prelude::*;

/// What the plugin keeps per key: the window it counts in and its orders so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// The window's start, milliseconds since the Unix epoch (the first order's timestamp).
    pub start_ms: i64,
    /// Orders applied in the window.
    pub orders: u64,
}

/// The handler: count the order against its key's window, reject it over the rate, and alert
/// when the key reaches it.
pub fn handle(message: &Message) -> Outcome {
    let order = message.order()?;
    let max: u64 = config_or("max-orders", 100)?;
    let window_s: i64 = config_or("window-seconds", 60)?;
    let alert_topic = config("alert-topic").unwrap_or_else(|| "order-alerts".to_string());
    let Some(key) = message.key.clone() else {
        return Err(invalid("the record has no key to count its orders under"));
    };
    let now = message.timestamp_ms.unwrap_or_default();
    let mut window: Window = state_json()?.unwrap_or_default();
    if window.orders == 0
        || now
            >= window
                .start_ms
                .saturating_add(window_s.saturating_mul(1000))
    {
        window = Window {
            start_ms: now,
            orders: 0,
        };
    }
    if window.orders >= max {
        return Err(rejected(format!(
            "{} orders for key {} in the {window_s} s window, at most {max}",
            window.orders + 1,
            String::from_utf8_lossy(&key)
        )));
    }
    window.orders += 1;
    let mut out = vec![
        stock(order.product_id.clone(), -order.quantity),
        set_state_json(&window)?,
    ];
    if window.orders == max {
        let alert = serde_json::json!({
            "alert": "order-velocity",
            "key": String::from_utf8_lossy(&key),
            "orders": window.orders,
            "windowSeconds": window_s,
            "windowStartMs": window.start_ms,
            "lastOrderId": order.order_id,
        });
        debug(format!(
            "key {} reached {max} orders in its window",
            String::from_utf8_lossy(&key)
        ));
        out.push(emit(alert_topic, key, alert.to_string()));
    }
    Ok(out)
}

/// Run by the host before this version becomes active: the third order of a key with a rate
/// of three alerts, the fourth is rejected, a later window starts over.
fn self_test() -> Result<(), String> {
    use sluice_plugin::testing::{call_with_state, emitted};
    let order = |ts: i64| {
        let mut message = sluice_plugin::testing::order("o", "P-1", 1);
        message.timestamp_ms = Some(ts);
        message
    };
    let three = |ts: i64, orders: u64| {
        Some(
            serde_json::to_vec(&Window {
                start_ms: ts,
                orders,
            })
            .unwrap_or_default(),
        )
    };
    // The samples' own configuration, whatever the operator's is.
    sluice_plugin::testing::set_config("max-orders", "3");
    sluice_plugin::testing::set_config("window-seconds", "60");
    let alert = call_with_state(handle, &order(1_000), three(0, 2));
    let over = call_with_state(handle, &order(2_000), three(0, 3));
    let later = call_with_state(handle, &order(61_000), three(0, 3));
    sluice_plugin::testing::clear_config();
    if emitted(&alert).len() != 1 {
        return Err(format!("the third order should alert: {alert:?}"));
    }
    if !matches!(over, Err(HandlerError::Rejected(_))) {
        return Err(format!("the fourth order should be rejected: {over:?}"));
    }
    if later.is_err() || !emitted(&later).is_empty() {
        return Err(format!("a new window should start over: {later:?}"));
    }
    Ok(())
}

sluice_plugin::export!(handle, self_test = self_test);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin::testing::{
        adjustments, call_with_state, clear_config, emitted, fold, set_config, state_change,
    };

    fn order_at(id: &str, key: &str, ts: i64) -> Message {
        let mut message = sluice_plugin::testing::order(id, "CATALOG-0001", 2);
        message.key = Some(key.as_bytes().to_vec());
        message.timestamp_ms = Some(ts);
        message
    }

    fn window(state: &Option<Vec<u8>>) -> Window {
        serde_json::from_slice(state.as_deref().expect("a state")).expect("a window")
    }

    #[test]
    fn orders_within_the_rate_take_stock_and_count() {
        set_config("max-orders", "5");
        let messages: Vec<Message> = (0..3)
            .map(|i| order_at(&format!("o-{i}"), "P", 1_000 + i))
            .collect();
        let (outcomes, state) = fold(handle, &messages, None);
        clear_config();
        assert!(
            outcomes
                .iter()
                .all(|o| adjustments(o) == Some(vec![("CATALOG-0001".into(), -2)]))
        );
        assert!(outcomes.iter().all(|o| emitted(o).is_empty()));
        assert_eq!(
            window(&state),
            Window {
                start_ms: 1_000,
                orders: 3
            }
        );
    }

    #[test]
    fn the_order_that_reaches_the_rate_alerts_and_the_next_is_rejected() {
        set_config("max-orders", "3");
        set_config("alert-topic", "alerts");
        let messages: Vec<Message> = (0..5)
            .map(|i| order_at(&format!("o-{i}"), "P", 1_000 + i))
            .collect();
        let (outcomes, state) = fold(handle, &messages, None);
        clear_config();
        let alerts = emitted(&outcomes[2]);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].topic, "alerts");
        assert_eq!(alerts[0].key.as_deref(), Some(&b"P"[..]));
        let alert: serde_json::Value =
            serde_json::from_slice(alerts[0].value.as_deref().unwrap()).unwrap();
        assert_eq!(alert["orders"], 3);
        assert_eq!(alert["lastOrderId"], "o-2");
        for over in &outcomes[3..] {
            let Err(HandlerError::Rejected(reason)) = over else {
                panic!("over the rate: {over:?}");
            };
            assert!(reason.contains("at most 3"), "{reason}");
        }
        assert_eq!(window(&state).orders, 3, "rejected orders do not count");
    }

    #[test]
    fn a_new_window_starts_over_and_keys_are_counted_apart() {
        set_config("max-orders", "2");
        set_config("window-seconds", "10");
        let full = Some(
            serde_json::to_vec(&Window {
                start_ms: 0,
                orders: 2,
            })
            .unwrap(),
        );
        let same_window = call_with_state(handle, &order_at("a", "P", 9_999), full.clone());
        let next_window = call_with_state(handle, &order_at("b", "P", 10_000), full);
        let other_key = call_with_state(handle, &order_at("c", "Q", 5_000), None);
        clear_config();
        assert!(matches!(same_window, Err(HandlerError::Rejected(_))));
        let Some(Some(state)) = state_change(&next_window) else {
            panic!("a new window is kept: {next_window:?}");
        };
        assert_eq!(
            window(&Some(state)),
            Window {
                start_ms: 10_000,
                orders: 1
            }
        );
        assert!(other_key.is_ok());
    }

    #[test]
    fn bad_input_and_bad_state_are_named() {
        let mut keyless = order_at("a", "P", 0);
        keyless.key = None;
        assert!(
            matches!(handle(&keyless), Err(HandlerError::InvalidMessage(r)) if r.contains("no key"))
        );
        let bad = call_with_state(
            handle,
            &order_at("a", "P", 0),
            Some(b"{\"start\": \"noon\"}".to_vec()),
        );
        assert!(matches!(bad, Err(HandlerError::InvalidMessage(r)) if r.contains("state")));
        set_config("max-orders", "many");
        let bad_config = handle(&order_at("a", "P", 0));
        clear_config();
        assert!(
            matches!(bad_config, Err(HandlerError::InvalidMessage(r)) if r.contains("max-orders"))
        );
    }

    #[test]
    fn the_self_test_passes_whatever_the_operator_configured() {
        assert_eq!(self_test(), Ok(()));
        set_config("window-seconds", "0");
        set_config("max-orders", "1");
        // The self-test sets its own values over these (tests set them as the host would).
        assert_eq!(self_test(), Ok(()));
        clear_config();
    }
}
