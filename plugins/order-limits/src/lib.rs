//! Order limits: an example plugin showing what the stock plugin does not — configuration and
//! one message touching several products at once.
//!
//! The event is the order service's, optionally with the order's lines (an extension older
//! consumers ignore: the top-level `productId`/`quantity` stay, and describe the first line):
//!
//! ```json
//! {"orderId": "o-1", "userId": "u", "productId": "CATALOG-0001", "quantity": 2, ...,
//!  "lines": [{"productId": "CATALOG-0001", "quantity": 2},
//!            {"productId": "CATALOG-0002", "quantity": 1}]}
//! ```
//!
//! Each line takes its quantity out of its product's stock. The host applies one message's
//! mutations all or nothing: if any product lacks stock, no line is applied.
//!
//! Configuration (`--plugin-config order_limits:KEY=VALUE`): `max.<productId>` caps the
//! quantity one order may take of that product, `max` every other product. An order over a
//! cap is rejected whole.

use serde::Deserialize;
use sluice_plugin::prelude::*;

/// The most lines one order may have.
pub const MAX_LINES: usize = 100;

#[derive(Debug, Deserialize)]
struct Lines {
    #[serde(default)]
    lines: Option<Vec<Line>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Line {
    product_id: String,
    quantity: i64,
}

pub fn handle(message: &Message) -> Outcome {
    // The base event is validated strictly whether or not it has lines.
    let order = message.order()?;
    let lines = message.json::<Lines>().map_err(|e| match e {
        HandlerError::InvalidMessage(reason) => invalid(format!(
            "field `lines`: {}",
            reason.trim_start_matches("payload: ")
        )),
        other => other,
    })?;
    let lines = match lines.lines {
        None => vec![Line {
            product_id: order.product_id,
            quantity: order.quantity,
        }],
        Some(lines) => lines,
    };
    if lines.is_empty() || lines.len() > MAX_LINES {
        return Err(invalid(format!(
            "field `lines` must have 1 to {MAX_LINES} lines, got {}",
            lines.len()
        )));
    }
    let mut mutations = Vec::with_capacity(lines.len());
    for (i, line) in lines.into_iter().enumerate() {
        if line.product_id.trim().is_empty() {
            return Err(invalid(format!("`lines[{i}].productId` is empty")));
        }
        if !(1..=sluice_plugin::order::MAX_QUANTITY).contains(&line.quantity) {
            return Err(invalid(format!(
                "`lines[{i}].quantity` must be 1 to {}, got {}",
                sluice_plugin::order::MAX_QUANTITY,
                line.quantity
            )));
        }
        let cap = cap_for(&line.product_id)?;
        if line.quantity > cap {
            return Err(rejected(format!(
                "{} units of {} ordered, at most {cap} per order",
                line.quantity, line.product_id
            )));
        }
        mutations.push(stock(line.product_id, -line.quantity));
    }
    info(format!(
        "order {} takes {} lines",
        order.order_id,
        mutations.len()
    ));
    Ok(mutations)
}

/// The most of `product_id` one order may take: `max.<productId>`, else `max`, else no cap.
fn cap_for(product_id: &str) -> Result<i64, HandlerError> {
    let default = config_or("max", i64::MAX)?;
    config_or(&format!("max.{product_id}"), default)
}

fn self_test() -> Result<(), String> {
    let sample = sluice_plugin::testing::order("self-test", "P-1", 2);
    match handle(&sample) {
        Ok(mutations) if mutations == [stock("P-1", -2)] => Ok(()),
        other => Err(format!("a 2-unit order gave {other:?}")),
    }
}

sluice_plugin::export!(handle, self_test = self_test);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin::testing::{self, adjustments};

    fn order_with_lines(lines: &str) -> Message {
        testing::message(format!(
            r#"{{"orderId":"o-1","userId":"u","productId":"A","quantity":2,"unitPrice":1,
                "totalPrice":2,"createdAt":"2026-01-01T00:00:00Z","lines":{lines}}}"#
        ))
    }

    #[test]
    fn an_order_without_lines_is_one_line() {
        testing::clear_config();
        let outcome = handle(&testing::order("o-1", "CATALOG-0001", 3));
        assert_eq!(
            adjustments(&outcome),
            Some(vec![("CATALOG-0001".to_string(), -3)])
        );
    }

    #[test]
    fn every_line_takes_its_own_stock() {
        testing::clear_config();
        let outcome = handle(&order_with_lines(
            r#"[{"productId":"A","quantity":2},{"productId":"B","quantity":5}]"#,
        ));
        assert_eq!(
            adjustments(&outcome),
            Some(vec![("A".to_string(), -2), ("B".to_string(), -5)])
        );
    }

    #[test]
    fn a_line_over_its_products_cap_rejects_the_whole_order() {
        testing::clear_config();
        testing::set_config("max", "100");
        testing::set_config("max.B", "4");
        let outcome = handle(&order_with_lines(
            r#"[{"productId":"A","quantity":50},{"productId":"B","quantity":5}]"#,
        ));
        testing::clear_config();
        let Err(HandlerError::Rejected(reason)) = outcome else {
            panic!("expected a rejection, got {outcome:?}");
        };
        assert!(
            reason.contains("5 units of B") && reason.contains("at most 4"),
            "{reason}"
        );
    }

    #[test]
    fn the_default_cap_applies_to_products_without_their_own() {
        testing::clear_config();
        testing::set_config("max", "3");
        let outcome = handle(&testing::order("o-1", "A", 4));
        testing::clear_config();
        assert!(
            matches!(outcome, Err(HandlerError::Rejected(_))),
            "{outcome:?}"
        );
    }

    #[test]
    fn a_cap_that_is_not_a_number_is_named() {
        testing::clear_config();
        testing::set_config("max", "lots");
        let outcome = handle(&testing::order("o-1", "A", 1));
        testing::clear_config();
        let Err(HandlerError::InvalidMessage(reason)) = outcome else {
            panic!("expected invalid, got {outcome:?}");
        };
        assert!(reason.contains("`max`"), "{reason}");
    }

    #[test]
    fn bad_lines_are_invalid_and_say_which() {
        testing::clear_config();
        for (lines, words) in [
            ("[]", "1 to 100 lines"),
            (r#"[{"productId":"A","quantity":0}]"#, "lines[0].quantity"),
            (r#"[{"productId":"","quantity":1}]"#, "lines[0].productId"),
            (r#"[{"productId":"A"}]"#, "quantity"),
            (r#"[{"productId":"A","quantity":1,"extra":1}]"#, "extra"),
            (r#""A""#, "lines"),
        ] {
            let outcome = handle(&order_with_lines(lines));
            let Err(HandlerError::InvalidMessage(reason)) = outcome else {
                panic!("{lines}: expected invalid, got {outcome:?}");
            };
            assert!(
                reason.contains(words),
                "{lines}: `{reason}` should say `{words}`"
            );
        }
    }

    #[test]
    fn accepted_orders_are_logged() {
        testing::clear_config();
        testing::clear_logs();
        handle(&testing::order("o-9", "A", 1)).unwrap();
        assert!(
            testing::logs()
                .iter()
                .any(|(level, line)| *level == Level::Info && line.contains("o-9 takes 1 lines")),
            "{:?}",
            testing::logs()
        );
    }

    #[test]
    fn the_self_test_passes() {
        assert_eq!(self_test(), Ok(()));
    }
}
