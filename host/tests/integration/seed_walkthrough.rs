//! The original tutorial, end to end: HTTP → outbox → Kafka → stock plugin → Postgres → HTTP.

use crate::common;

use std::time::Duration;

use common::{TestApp, eventually, metric, read_topic, wait_for_order};
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

    // The recent orders of all users, newest first; `3.0` is an integer as JSON Schema has it.
    let response = app
        .post_order(json!({"userId": "user-2", "productId": "CATALOG-0002", "quantity": 3.0, "unitPrice": 1000}))
        .await;
    assert_eq!(response.status(), 201);
    let second: serde_json::Value = response.json().await.unwrap();
    assert_eq!(second["quantity"], 3);
    let (status, recent) = app.get_json("/orders?limit=2").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = recent
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["orderId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            second["orderId"].as_str().unwrap(),
            too_many["orderId"].as_str().unwrap()
        ]
    );
    let (_, newest) = app.get_json("/orders?limit=1").await;
    assert_eq!(newest.as_array().unwrap().len(), 1);

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_and_the_trace_show_what_an_order_went_through() {
    let app = TestApp::spawn_with(|settings| {
        // librdkafka's statistics (the consumer lag) every half second instead of 5 s.
        settings
            .kafka
            .options
            .push(("statistics.interval.ms".into(), "500".into()));
    })
    .await;
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = app
        .http
        .post(app.url("/orders"))
        .header("traceparent", caller)
        .json(&json!({"userId": "user-1", "productId": "CATALOG-0001",
                      "quantity": 10, "unitPrice": 1500}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let answered = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        answered.starts_with(&format!("00-{trace_id}-")),
        "{answered}"
    );
    assert_ne!(
        answered, caller,
        "the order's own span, a child of the caller's"
    );
    let refused = app
        .post_order(json!({"userId": "user-1", "productId": "CATALOG-0001",
                           "quantity": 0, "unitPrice": 1500}))
        .await;
    assert_eq!(refused.status().as_u16(), 422);
    let order: serde_json::Value = response.json().await.unwrap();
    let order_id = order["orderId"].as_str().unwrap().to_string();
    let (_, ok) = app.get_json(&format!("/orders/{order_id}")).await;
    assert_eq!(ok["orderId"], order_id.as_str());

    let topic = app.topic.clone();
    let labels_ok = |exposition: &str| {
        let applied = metric(
            exposition,
            "sluice_records_total",
            &[("plugin", "stock"), ("outcome", "applied")],
        )?;
        // Every partition of the topic is reported, and none is behind.
        let caught_up = (0..common::PARTITIONS).all(|partition| {
            let partition = partition.to_string();
            let labels = [("topic", topic.as_str()), ("partition", partition.as_str())];
            metric(exposition, "sluice_consumer_lag_records", &labels) == Some(0.0)
        });
        let published = metric(
            exposition,
            "sluice_outbox_publish_latency_seconds_count",
            &[],
        )?;
        // The order's event and its verdict both published (the verdict is queued by the
        // batch that applied the order, and published a moment later).
        let backlog = metric(exposition, "sluice_outbox_backlog_rows", &[])?;
        (applied == 1.0 && caught_up && published >= 1.0 && backlog == 0.0).then_some(())
    };
    let exposition = eventually(
        Duration::from_secs(15),
        "the applied record, the outbox published and a zero lag in /metrics",
        || async {
            let response = app.http.get(app.url("/metrics")).send().await.ok()?;
            assert_eq!(response.status().as_u16(), 200);
            let content_type = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_string();
            assert!(
                content_type.starts_with("application/openmetrics-text"),
                "{content_type}"
            );
            let text = response.text().await.ok()?;
            labels_ok(&text).map(|()| text)
        },
    )
    .await;

    let get_order = [
        ("route", "/orders/{order_id}"),
        ("method", "GET"),
        ("status", "200"),
    ];
    assert_eq!(
        metric(&exposition, "sluice_http_requests_total", &get_order),
        Some(1.0)
    );
    let created = [("route", "/orders"), ("method", "POST"), ("status", "201")];
    assert_eq!(
        metric(&exposition, "sluice_http_requests_total", &created),
        Some(1.0)
    );
    let refused = [("route", "/orders"), ("method", "POST"), ("status", "422")];
    assert_eq!(
        metric(&exposition, "sluice_http_requests_total", &refused),
        Some(1.0)
    );
    let calls = metric(
        &exposition,
        "sluice_plugin_call_duration_seconds_count",
        &[("plugin", "stock")],
    );
    assert!(calls >= Some(1.0), "{exposition}");
    let batch = [("topic", app.topic.as_str())];
    assert!(metric(&exposition, "sluice_batch_records_sum", &batch) >= Some(1.0));
    assert!(
        metric(
            &exposition,
            "sluice_batch_commit_duration_seconds_count",
            &batch
        ) >= Some(1.0)
    );
    assert_eq!(
        metric(&exposition, "sluice_outbox_backlog_rows", &[]),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &exposition,
            "sluice_plugin_swaps_total",
            &[("plugin", "stock")]
        ),
        Some(1.0),
        "the bundled plugin's first load"
    );
    assert!(exposition.ends_with("# EOF\n"));

    // The trace went with the event to Kafka, and on with the verdict to the status topic.
    let traceparent = |record: &sluice::domain::Consumed| {
        sluice::trace::TraceParent::from_headers(&record.headers).map(|t| t.trace_id())
    };
    let event = read_topic(app.broker.bootstrap(), &app.topic, 1).await;
    assert_eq!(traceparent(&event[0]).as_deref(), Some(trace_id));
    let verdict = read_topic(app.broker.bootstrap(), &format!("{}.status", app.topic), 1).await;
    assert_eq!(traceparent(&verdict[0]).as_deref(), Some(trace_id));
    app.stop().await;
}

/// With an OTLP endpoint configured, one order's path is one trace at the collector: the
/// `POST /orders` span under the caller's, the record's processing under it, the verdict's
/// arrival under that, each with its parent in the trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_orders_spans_reach_an_otlp_collector_as_one_trace() {
    use std::sync::{Arc, Mutex};

    // A collector: the OTLP/HTTP JSON traces endpoint, keeping what it receives.
    /// Each request's `x-api-key` header and body.
    type Requests = Arc<Mutex<Vec<(Option<String>, serde_json::Value)>>>;
    let received: Requests = Arc::default();
    let store = Arc::clone(&received);
    let collector = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::Json<serde_json::Value>| {
                let store = Arc::clone(&store);
                async move {
                    let key = headers
                        .get("x-api-key")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    store.lock().unwrap().push((key, body.0));
                    "{}"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, collector).await });
    sluice::otlp::init(sluice::otlp::OtlpConfig {
        traces_url: format!("http://{collector_addr}/v1/traces"),
        headers: vec![("x-api-key".into(), "k3y".into())],
        timeout: Duration::from_secs(5),
        service_name: "sluice-test".into(),
    })
    .unwrap();

    let app = TestApp::spawn().await;
    let caller_span = "00f067aa0ba902b7";
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = app
        .http
        .post(app.url("/orders"))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({"userId": "user-1", "productId": "CATALOG-0001",
                      "quantity": 1, "unitPrice": 1500}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let order_span = response.headers()["traceparent"].to_str().unwrap()[36..52].to_string();
    let order: serde_json::Value = response.json().await.unwrap();
    let order_id = order["orderId"].as_str().unwrap().to_string();
    wait_for_order(
        &app.http,
        &app.url(&format!("/orders/{order_id}")),
        "APPLIED",
    )
    .await;

    // span name → (span id, parent span id), for this trace.
    let spans = eventually(
        Duration::from_secs(20),
        "three spans at the collector",
        || {
            let received = received.lock().unwrap().clone();
            async move {
                let mut spans = std::collections::HashMap::new();
                for (key, body) in &received {
                    assert_eq!(
                        key.as_deref(),
                        Some("k3y"),
                        "OTEL_EXPORTER_OTLP_HEADERS sent"
                    );
                    let resource = &body["resourceSpans"][0];
                    assert_eq!(
                        resource["resource"]["attributes"][0]["value"]["stringValue"],
                        "sluice-test"
                    );
                    for span in resource["scopeSpans"][0]["spans"].as_array().unwrap() {
                        if span["traceId"] == trace_id {
                            spans.insert(
                                span["name"].as_str().unwrap().to_string(),
                                (
                                    span["spanId"].as_str().unwrap().to_string(),
                                    span["parentSpanId"].as_str().unwrap_or("").to_string(),
                                ),
                            );
                        }
                    }
                }
                (spans.len() >= 3).then_some(spans)
            }
        },
    )
    .await;
    let post = &spans["POST /orders"];
    assert_eq!(
        post,
        &(order_span.clone(), caller_span.to_string()),
        "{spans:?}"
    );
    let process = &spans[&format!("{} process", app.topic)];
    assert_eq!(
        process.1, order_span,
        "the record's processing under the order: {spans:?}"
    );
    let verdict = spans
        .iter()
        .find(|(name, (_, parent))| name.ends_with(" process") && parent == &process.0)
        .unwrap_or_else(|| panic!("the verdict's span under the processing: {spans:?}"));
    assert_ne!(verdict.1.0, process.0);
    app.stop().await;
}
