//! The original tutorial, end to end: HTTP → outbox → Kafka → stock plugin → Postgres → HTTP.

mod common;

use std::time::Duration;

use common::{TestApp, eventually, read_topic, wait_for_order};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_takes_its_quantity_out_of_stock() {
    // Arrange
    let app = TestApp::spawn().await;
    let before = app.stock().await;
    assert_eq!(before["CATALOG-0001"], 100);
    assert_eq!(before["CATALOG-0002"], 110);
    assert_eq!(before["CATALOG-0003"], 120);

    // Act
    let response = app
        .post_order(json!({"userId": "user-1", "productId": "CATALOG-0001",
                           "quantity": 10, "unitPrice": 1500}))
        .await;

    // Assert
    assert_eq!(response.status().as_u16(), 201);
    let order: serde_json::Value = response.json().await.unwrap();
    assert_eq!(order["userId"], "user-1");
    assert_eq!(order["productId"], "CATALOG-0001");
    assert_eq!(order["quantity"], 10);
    assert_eq!(order["unitPrice"], 1500);
    assert_eq!(order["totalPrice"], 15000);
    assert_eq!(order["status"], "PENDING");
    assert!(order["createdAt"].as_str().unwrap().ends_with('Z'));
    let order_id = order["orderId"].as_str().unwrap().to_string();

    eventually(
        Duration::from_secs(10),
        "stock of CATALOG-0001 to reach 90",
        || async { (app.stock().await["CATALOG-0001"] == 90).then_some(()) },
    )
    .await;
    let after = app.stock().await;
    assert_eq!(after["CATALOG-0002"], 110, "other products untouched");

    let (status, fetched) = app.get_json(&format!("/orders/{order_id}")).await;
    assert_eq!(status, 200);
    for field in [
        "orderId",
        "userId",
        "productId",
        "quantity",
        "unitPrice",
        "totalPrice",
        "createdAt",
    ] {
        assert_eq!(
            fetched[field], order[field],
            "GET returns what POST returned: {field}"
        );
    }
    let (status, listed) = app.get_json("/users/user-1/orders").await;
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["orderId"], order_id.as_str());

    // The event was published keyed by product, with the order id as event id, and the
    // ingest flow recorded it as applied under that event id.
    let records = read_topic(app.broker.bootstrap(), &app.topic, 1).await;
    let record = records.first().expect("the order's event on the topic");
    assert_eq!(record.key.as_deref(), Some(&b"CATALOG-0001"[..]));
    assert_eq!(record.event_id().as_deref(), Some(order_id.as_str()));
    let event: serde_json::Value =
        serde_json::from_slice(record.payload.as_deref().unwrap_or_default()).unwrap();
    assert_eq!(event["orderId"], order_id.as_str());
    assert_eq!(event["quantity"], 10);
    assert_eq!(event["totalPrice"], 15000);
    let (outcome, plugin): (String, String) =
        sqlx::query_as("SELECT outcome, plugin FROM processed_messages WHERE event_id = $1")
            .bind(&order_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((outcome.as_str(), plugin.as_str()), ("APPLIED", "stock"));
    let (_, decided) = app.get_json(&format!("/orders/{order_id}")).await;
    assert_eq!(
        decided["status"], "APPLIED",
        "the catalog's verdict came back: {decided}"
    );
    assert_eq!(decided["handledBy"]["plugin"], "stock");

    // An order the catalog cannot serve is accepted, then reported rejected with the reason.
    let too_many: serde_json::Value = app
        .post_order(json!({"userId": "user-1", "productId": "CATALOG-0001",
                           "quantity": 5000, "unitPrice": 1500}))
        .await
        .json()
        .await
        .unwrap();
    let path = app.url(&format!(
        "/orders/{}",
        too_many["orderId"].as_str().unwrap()
    ));
    let rejected = wait_for_order(&app.http, &path, "REJECTED").await;
    assert!(
        rejected["statusReason"]
            .as_str()
            .unwrap()
            .contains("insufficient stock for CATALOG-0001"),
        "{rejected}"
    );
    assert_eq!(
        app.stock().await["CATALOG-0001"],
        90,
        "nothing of it was applied"
    );

    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(outbox, 0, "published events leave the outbox");

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_upsert_creates_and_replaces_products() {
    let app = TestApp::spawn().await;
    let client = &app.http;

    let created = client
        .put(app.url("/catalogs/CATALOG-0004"))
        .json(&json!({"productName": "Lisbon", "stock": 5, "unitPrice": 900}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let replaced = client
        .put(app.url("/catalogs/CATALOG-0004"))
        .json(&json!({"productName": "Lisbon", "stock": 7, "unitPrice": 950}))
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status().as_u16(), 200);
    let (status, product) = app.get_json("/catalogs/CATALOG-0004").await;
    assert_eq!(status, 200);
    assert_eq!(
        product,
        json!({"productId": "CATALOG-0004", "productName": "Lisbon", "stock": 7, "unitPrice": 950})
    );
    let (status, _) = app.get_json("/catalogs/CATALOG-9999").await;
    assert_eq!(status, 404);
    let (status, health) = app.get_json("/healthz").await;
    assert_eq!((status, health), (200, json!({"status": "ok"})));

    app.stop().await;
}
