//! A handler plugin: an order event takes its quantity out of the product's stock, unless it
//! is larger than the `max-quantity` configured for this plugin (then it is rejected).

use sluice_plugin::prelude::*;

pub fn handle(message: &Message) -> Outcome {
    let order = message.order()?;
    let max: i64 = config_or("max-quantity", 1_000)?;
    if order.quantity > max {
        return Err(rejected(format!(
            "{} units of {} ordered, at most {max} per order",
            order.quantity, order.product_id
        )));
    }
    debug(format!(
        "order {} takes {} x {}",
        order.order_id, order.quantity, order.product_id
    ));
    Ok(vec![stock(order.product_id, -order.quantity)])
}

/// Run by the host before it activates a version.
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
    use sluice_plugin::testing;

    #[test]
    fn an_order_takes_its_quantity_out_of_stock() {
        let outcome = handle(&testing::order("o-1", "CATALOG-0001", 3));
        assert_eq!(
            testing::adjustments(&outcome),
            Some(vec![("CATALOG-0001".to_string(), -3)])
        );
    }

    #[test]
    fn an_order_over_the_configured_maximum_is_rejected_and_logged_nothing() {
        testing::set_config("max-quantity", "5");
        let outcome = handle(&testing::order("o-2", "CATALOG-0001", 6));
        testing::clear_config();
        let Err(HandlerError::Rejected(reason)) = outcome else {
            panic!("expected a rejection, got {outcome:?}");
        };
        assert!(reason.contains("at most 5"), "{reason}");
    }

    #[test]
    fn accepted_orders_are_logged() {
        testing::clear_logs();
        handle(&testing::order("o-3", "CATALOG-0002", 1)).unwrap();
        let logs = testing::logs();
        assert!(
            logs.iter().any(|(_, line)| line.contains("o-3")),
            "{logs:?}"
        );
    }

    #[test]
    fn a_message_that_is_not_an_order_is_invalid() {
        let outcome = handle(&testing::message("hello"));
        assert!(
            matches!(outcome, Err(HandlerError::InvalidMessage(_))),
            "{outcome:?}"
        );
    }

    #[test]
    fn the_self_test_passes() {
        assert_eq!(self_test(), Ok(()));
    }
}
