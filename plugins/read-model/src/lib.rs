//! Example (contract 0.3): the catalog's logic (an order takes its quantity out of stock) and
//! the seed's read side in the team's own tables, in the same transaction as the stock and the
//! consumer position, exactly once:
//!
//! - `user_orders`: one row per applied order (`order_id` its key), with its user, product,
//!   quantity, prices, status and time: what the seed's user service lists;
//! - `product_sales`: per product (`product_id` its key), `orders`, `units` and `revenue`,
//!   counters kept by `add` (an upsert could not keep them; an `add` applied twice would show).
//!
//! An order refused for stock writes neither: its mutations apply together or not at all.
//! The tables are the team's (Sluice never creates them): README "Writing your own tables"
//! creates them with `psql`. Configuration: `orders-table` and `sales-table` rename them;
//! `counters` (`orders units revenue`, the default) names the counters kept.

use sluice_plugin::prelude::*;

/// What the row needs besides what the strict parser returns (it checked these fields too).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Details {
    user_id: String,
    unit_price: i64,
    total_price: i64,
    created_at: String,
}

/// The handler.
pub fn handle(message: &Message) -> Outcome {
    let order = message.order()?;
    let details: Details = message.json()?;
    let orders = config("orders-table").unwrap_or_else(|| "user_orders".into());
    let sales = config("sales-table").unwrap_or_else(|| "product_sales".into());
    let product = || [cell("product_id", order.product_id.as_str())];
    let counters = config("counters").unwrap_or_else(|| "orders units revenue".into());
    let mut out = vec![
        stock(order.product_id.clone(), -order.quantity),
        upsert(
            orders,
            [
                cell("order_id", order.order_id.as_str()),
                cell("user_id", details.user_id),
                cell("product_id", order.product_id.as_str()),
                cell("quantity", order.quantity),
                cell("unit_price", details.unit_price),
                cell("total_price", details.total_price),
                cell("status", "APPLIED"),
                cell("created_at", timestamp(details.created_at)),
            ],
        ),
    ];
    for counter in counters.split_whitespace() {
        let delta = match counter {
            "orders" => 1,
            "units" => order.quantity,
            "revenue" => details.total_price,
            other => {
                return Err(invalid(format!(
                    "configuration `counters`: `{other}` is not one of orders, units, revenue"
                )));
            }
        };
        out.push(add(sales.as_str(), product(), counter, delta));
    }
    Ok(out)
}

/// Run by the host before this version becomes active: with the example's own configuration
/// (whatever the operator's is), a 2-unit order writes its row and three counters.
fn self_test() -> Result<(), String> {
    use sluice_plugin::testing;
    testing::set_config("orders-table", "user_orders");
    testing::set_config("sales-table", "product_sales");
    testing::set_config("counters", "orders units revenue");
    let outcome = handle(&testing::order("self-test", "P-1", 2));
    testing::clear_config();
    match testing::table_writes(&outcome).len() {
        4 => Ok(()),
        n => Err(format!(
            "a 2-unit order made {n} table writes, not 4: {outcome:?}"
        )),
    }
}

sluice_plugin::export!(handle, self_test = self_test);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin::testing::{self, adjustments, table_writes, upserted};

    #[test]
    fn an_order_takes_stock_and_writes_its_row_and_the_product_s_counters() {
        let outcome = handle(&testing::order("o-1", "P-1", 3));
        assert_eq!(adjustments(&outcome), Some(vec![("P-1".to_string(), -3)]));
        assert_eq!(
            upserted(&outcome, "user_orders", "order_id"),
            Some(Value::Text("o-1".into()))
        );
        assert_eq!(
            upserted(&outcome, "user_orders", "quantity"),
            Some(Value::Int(3))
        );
        assert_eq!(
            upserted(&outcome, "user_orders", "status"),
            Some(Value::Text("APPLIED".into()))
        );
        let adds: Vec<(String, Value)> = table_writes(&outcome)
            .into_iter()
            .filter_map(|m| match m {
                Mutation::Add(a) => Some((a.column, a.delta)),
                _ => None,
            })
            .collect();
        assert_eq!(
            adds,
            [
                ("orders".into(), Value::Int(1)),
                ("units".into(), Value::Int(3)),
                ("revenue".into(), Value::Int(300))
            ]
        );
    }

    #[test]
    fn the_tables_can_be_renamed() {
        testing::set_config("orders-table", "audit.orders");
        let outcome = handle(&testing::order("o-2", "P-1", 1));
        testing::clear_config();
        assert!(upserted(&outcome, "audit.orders", "order_id").is_some());
    }

    #[test]
    fn what_is_not_an_order_is_invalid() {
        let outcome = handle(&testing::message("hello"));
        assert!(matches!(outcome, Err(HandlerError::InvalidMessage(_))));
    }

    #[test]
    fn the_self_test_passes() {
        assert_eq!(self_test(), Ok(()));
    }
}
