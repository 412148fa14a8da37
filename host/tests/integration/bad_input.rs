//! Bad input costs only itself: a clear error, a recorded rejection or a dead letter;
//! nothing valid is lost.

use crate::common;

use std::time::Duration;

use common::{TestApp, produce};
use serde_json::json;

fn order(product: &str, quantity: i64) -> Vec<u8> {
    json!({"orderId": uuid::Uuid::new_v4(), "userId": "user-1", "productId": product,
           "quantity": quantity, "unitPrice": 1000, "totalPrice": quantity * 1000,
           "createdAt": "2026-11-25T07:00:00.000Z"})
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_bad_messages_is_refused_while_valid_ones_apply() {
    // Arrange: one key, so every record lands on one partition in this order.
    let app = TestApp::spawn().await;
    let producer = app.broker.producer();
    let missing_product = br#"{"orderId":"x","userId":"u","quantity":1,"unitPrice":1,"totalPrice":1,"createdAt":"t"}"#;
    let burst: Vec<(&str, Vec<u8>)> = vec![
        ("valid", order("CATALOG-0002", 5)),
        ("not json", b"this is not an order".to_vec()),
        ("missing productId", missing_product.to_vec()),
        ("unknown product", order("CATALOG-9999", 1)),
        ("zero quantity", order("CATALOG-0002", 0)),
        ("more than in stock", order("CATALOG-0002", 1000)),
        ("empty", Vec::new()),
        ("not utf-8", vec![0xff, 0xfe, 0xfd]),
        ("valid", order("CATALOG-0002", 3)),
    ];

    // Act
    for (_, payload) in &burst {
        produce(&producer, &app.topic, "burst", payload, None).await;
    }
    app.wait_processed(burst.len() as i64, Duration::from_secs(15))
        .await;

    // Assert: each record has the outcome it deserves, in offset order.
    let rows: Vec<(i64, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT \"offset\", outcome, error_kind, reason FROM processed_messages ORDER BY \"offset\"",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let summary: Vec<(&str, Option<&str>)> = rows
        .iter()
        .map(|(_, outcome, kind, _)| (outcome.as_str(), kind.as_deref()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("APPLIED", None),
            ("DEAD_LETTER", Some("invalid-message")),
            ("DEAD_LETTER", Some("invalid-message")),
            ("REJECTED", Some("unknown-product")),
            ("DEAD_LETTER", Some("invalid-message")),
            ("REJECTED", Some("insufficient-stock")),
            ("DEAD_LETTER", Some("invalid-message")),
            ("DEAD_LETTER", Some("invalid-message")),
            ("APPLIED", None),
        ],
        "outcomes in offset order for {:?}",
        burst.iter().map(|(what, _)| *what).collect::<Vec<_>>()
    );
    let reasons: Vec<&str> = rows.iter().filter_map(|r| r.3.as_deref()).collect();
    assert!(reasons[0].contains("not JSON"), "{reasons:?}");
    assert!(
        reasons[1].contains("missing field `productId`"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].contains("unknown product CATALOG-9999"),
        "{reasons:?}"
    );
    assert!(
        reasons[3].contains("`quantity` must be positive"),
        "{reasons:?}"
    );
    assert!(
        reasons[4].contains("insufficient stock for CATALOG-0002"),
        "{reasons:?}"
    );
    assert!(reasons[5].contains("empty payload"), "{reasons:?}");
    assert!(reasons[6].contains("not UTF-8"), "{reasons:?}");

    assert_eq!(app.stock().await["CATALOG-0002"], 110 - 5 - 3);
    let position: i64 =
        sqlx::query_scalar("SELECT max(next_offset) FROM consumer_positions WHERE group_id = $1")
            .bind(&app.group)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        position,
        burst.len() as i64,
        "the position covers every record"
    );

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_http_requests_get_a_clear_error_and_change_nothing() {
    let app = TestApp::spawn().await;
    let client = &app.http;
    let post_raw = |body: &'static str, content_type: &'static str| {
        client
            .post(app.url("/orders"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    let cases: Vec<(&str, reqwest::Response, u16, &str)> = vec![
        ("not JSON", post_raw("{not json", "application/json").await.unwrap(), 400, ""),
        ("no content type", post_raw("{}", "text/plain").await.unwrap(), 415, ""),
        ("missing productId", app.post_order(json!({"userId": "u", "quantity": 1, "unitPrice": 1})).await, 422, "productId"),
        ("quantity as string", app.post_order(json!({"userId": "u", "productId": "CATALOG-0001", "quantity": "10", "unitPrice": 1})).await, 422, "quantity"),
        ("zero quantity", app.post_order(json!({"userId": "u", "productId": "CATALOG-0001", "quantity": 0, "unitPrice": 1})).await, 422, "quantity"),
        ("negative price", app.post_order(json!({"userId": "u", "productId": "CATALOG-0001", "quantity": 1, "unitPrice": -5})).await, 422, "unitPrice"),
        ("empty user", app.post_order(json!({"userId": " ", "productId": "CATALOG-0001", "quantity": 1, "unitPrice": 1})).await, 422, "userId"),
        ("price too high", app.post_order(json!({"userId": "u", "productId": "CATALOG-0001", "quantity": 1000, "unitPrice": i64::MAX})).await, 422, "must be at most"),
        ("order id not a uuid", client.get(app.url("/orders/42")).send().await.unwrap(), 400, "UUID"),
        ("unknown order", client.get(app.url(&format!("/orders/{}", uuid::Uuid::new_v4()))).send().await.unwrap(), 404, "no order"),
        ("unknown route", client.get(app.url("/nope")).send().await.unwrap(), 404, "no such endpoint"),
        ("negative stock", client.put(app.url("/catalogs/CATALOG-0001")).json(&json!({"productName": "Berlin", "stock": -1, "unitPrice": 1})).send().await.unwrap(), 422, "stock"),
        ("bad limit", client.get(app.url("/users/u/orders?limit=0")).send().await.unwrap(), 400, "limit"),
    ];
    for (what, response, status, mentions) in cases {
        assert_eq!(response.status().as_u16(), status, "{what}");
        let body: serde_json::Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{what}: JSON error body: {e}"));
        let message = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error field in {body}"));
        assert!(
            message.contains(mentions),
            "{what}: `{message}` should mention `{mentions}`"
        );
    }

    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!((orders, outbox), (0, 0), "no bad request wrote anything");
    assert_eq!(app.stock().await["CATALOG-0001"], 100);

    app.stop().await;
}
