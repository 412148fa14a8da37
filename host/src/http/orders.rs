//! `POST /orders` writes the order and its event in one transaction (the outbox);
//! the relay publishes it. Reads serve the order's current status.

use std::time::SystemTime;

use axum::Json;
use axum::extract::FromRequestParts;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::ErrorBody;
use super::openapi::Identifier;
use super::{ApiError, ApiJson, ApiPath, ApiQuery, AppState};
use crate::db;
use crate::db::orders::OrderRow;
use crate::domain::{
    EVENT_ID_HEADER, Header, NewOrder, OrderEvent, OrderStatus, Record, format_time, parse_user_id,
};
use crate::otlp;
use crate::trace::{TRACEPARENT, TraceParent};

/// An order to place.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"userId": "user-1", "productId": "CATALOG-0001", "quantity": 2, "unitPrice": 1500}))]
pub struct CreateOrder {
    #[schema(value_type = Identifier)]
    user_id: String,
    #[schema(value_type = Identifier)]
    product_id: String,
    /// At most `MAX_QUANTITY`.
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(deserialize_with = "super::json_integer")]
    quantity: i64,
    /// In minor units (cents); at most `MAX_UNIT_PRICE`, so that every total fits.
    #[schema(minimum = 0, maximum = 9_223_372_036_854_i64)]
    #[serde(deserialize_with = "super::json_integer")]
    unit_price: i64,
}

/// An order and where it stands.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderResponse {
    order_id: Uuid,
    user_id: String,
    product_id: String,
    quantity: i32,
    unit_price: i64,
    total_price: i64,
    /// RFC 3339, UTC.
    #[schema(format = DateTime)]
    created_at: String,
    /// `PENDING` until the catalog side decides, then `APPLIED` or `REJECTED`.
    #[schema(value_type = OrderStatus)]
    status: String,
    /// Why it was rejected, when it was.
    status_reason: Option<String>,
    /// The plugin and version that decided the order (provenance), once known.
    handled_by: Option<HandledBy>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandledBy {
    plugin: String,
    /// sha256 of the plugin component, hex.
    version: String,
}

impl From<OrderRow> for OrderResponse {
    fn from(row: OrderRow) -> Self {
        Self {
            order_id: row.order_id,
            user_id: row.user_id,
            product_id: row.product_id,
            quantity: row.quantity,
            unit_price: row.unit_price,
            total_price: row.total_price,
            created_at: format_time(row.created_at),
            status: row.status,
            status_reason: row.status_reason,
            handled_by: row
                .plugin
                .zip(row.plugin_version)
                .map(|(plugin, version)| HandledBy { plugin, version }),
        }
    }
}

/// The caller's `traceparent`, when it sent a valid one (read in place: the `HeaderMap`
/// extractor would copy every header of every order).
pub struct CallerTrace(Option<TraceParent>);

impl<S: Send + Sync> FromRequestParts<S> for CallerTrace {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .headers
                .get(TRACEPARENT)
                .and_then(|v| v.to_str().ok())
                .and_then(TraceParent::parse),
        ))
    }
}

/// The response's `traceparent`.
type TraceHeader = [(HeaderName, String); 1];

/// Place an order.
///
/// The order and its event are written in one transaction; the event is published to Kafka
/// and the order's status follows the plugin's verdict. The order's trace continues the
/// caller's `traceparent` (or starts one): it travels with the event, and the response's
/// `traceparent` names the order's span.
#[utoipa::path(
    post,
    path = "/orders",
    tag = "orders",
    operation_id = "createOrder",
    request_body = CreateOrder,
    params(("traceparent" = Option<String>, Header, description = "W3C trace context to continue")),
    responses(
        (status = 201, description = "The order, `PENDING`", body = OrderResponse,
            headers(("traceparent" = String, description = "W3C trace context naming the order's span")),
            links(("GetOrderByOrderId" = (
                operation_id = "getOrder",
                parameters(("order_id" = "$response.body#/orderId")),
                description = "The order just placed, with its status",
            )))),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "A field is missing or not acceptable", body = ErrorBody),
    )
)]
// A debug span: at the default level a span per order (made, its fields formatted twice) cost
// more than the rest of the handler's own work, for the one debug line inside it.
#[tracing::instrument(level = "debug", skip_all, fields(order_id, trace_id))]
pub async fn create(
    State(state): State<AppState>,
    CallerTrace(caller): CallerTrace,
    ApiJson(body): ApiJson<CreateOrder>,
) -> Result<(StatusCode, TraceHeader, Json<OrderResponse>), ApiError> {
    let started = SystemTime::now();
    let trace = caller.map_or_else(TraceParent::root, |caller| caller.child());
    tracing::Span::current().record("trace_id", trace.trace_id());
    let order = NewOrder::parse(
        &body.user_id,
        &body.product_id,
        body.quantity,
        body.unit_price,
    )?;
    // Time-ordered (UUIDv7): orders and their dedupe keys land on neighbouring index pages.
    let order_id = Uuid::now_v7();
    tracing::Span::current().record("order_id", tracing::field::display(order_id));
    // Postgres keeps microseconds: truncate so the response equals what a later GET returns.
    let created_at = truncate_to_micros(Utc::now());
    let row = OrderRow {
        order_id,
        user_id: order.user_id.clone(),
        product_id: order.product_id.to_string(),
        quantity: order.quantity,
        unit_price: order.unit_price,
        total_price: order.total_price()?,
        status: OrderStatus::Pending.as_str().to_string(),
        status_reason: None,
        created_at,
        plugin: None,
        plugin_version: None,
    };
    let event = OrderEvent {
        order_id,
        user_id: row.user_id.clone(),
        product_id: row.product_id.clone(),
        quantity: row.quantity,
        unit_price: row.unit_price,
        total_price: row.total_price,
        created_at: format_time(created_at),
    };
    let payload = serde_json::to_vec(&event).map_err(anyhow::Error::from)?;

    let record = Record {
        topic: state.topic.to_string(),
        key: Some(row.product_id.clone().into_bytes()),
        payload: Some(payload),
        headers: vec![
            Header::text(EVENT_ID_HEADER, order_id.to_string()),
            trace.header(),
        ],
    };
    state.orders.write(row.clone(), record).await?;
    tracing::debug!("order created");
    if otlp::enabled() {
        otlp::export(otlp::Span {
            context: trace,
            parent: caller,
            name: "POST /orders".into(),
            kind: otlp::Kind::Server,
            start: started,
            end: SystemTime::now(),
            attributes: vec![
                ("http.request.method", "POST".into()),
                ("http.route", "/orders".into()),
                ("http.response.status_code", 201.into()),
                ("sluice.order_id", order_id.to_string().into()),
                ("sluice.product_id", row.product_id.clone().into()),
            ],
            error: None,
        });
    }

    Ok((
        StatusCode::CREATED,
        [(HeaderName::from_static(TRACEPARENT), trace.to_string())],
        Json(row.into()),
    ))
}

/// One order, with its status and the plugin version that decided it.
#[utoipa::path(
    get,
    path = "/orders/{order_id}",
    tag = "orders",
    operation_id = "getOrder",
    params(("order_id" = Uuid, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order", body = OrderResponse),
        (status = 400, description = "`order_id` is not a UUID", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<OrderResponse>, ApiError> {
    let order_id = Uuid::parse_str(&raw)
        .map_err(|_| ApiError::BadRequest(format!("orderId must be a UUID, got `{raw}`")))?;
    let row = db::orders::get(&state.pool, order_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no order {order_id}")))?;
    Ok(Json(row.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// How many orders, newest first (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

impl ListParams {
    fn limit(&self) -> Result<i64, ApiError> {
        let limit = self.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::BadRequest(format!(
                "limit must be between 1 and 1000, got {limit}"
            )));
        }
        Ok(limit)
    }
}

/// The newest orders of all users.
#[utoipa::path(
    get,
    path = "/orders",
    tag = "orders",
    operation_id = "listOrders",
    params(ListParams),
    responses(
        (status = 200, description = "Orders, newest first", body = Vec<OrderResponse>),
        (status = 400, description = "`limit` out of range", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<Vec<OrderResponse>>, ApiError> {
    let rows = db::orders::list_recent(&state.pool, params.limit()?).await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// One user's orders.
#[utoipa::path(
    get,
    path = "/users/{user_id}/orders",
    tag = "orders",
    operation_id = "listUserOrders",
    params(("user_id" = inline(Identifier), Path, description = "The user's id"), ListParams),
    responses(
        (status = 200, description = "The user's orders, newest first", body = Vec<OrderResponse>),
        (status = 400, description = "`limit` out of range", body = ErrorBody),
        (status = 422, description = "`user_id` is not an acceptable id", body = ErrorBody),
    )
)]
pub async fn list_for_user(
    State(state): State<AppState>,
    ApiPath(user_id): ApiPath<String>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<Vec<OrderResponse>>, ApiError> {
    let user_id = parse_user_id(&user_id)?;
    let rows = db::orders::list_by_user(&state.pool, &user_id, params.limit()?).await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

fn truncate_to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time)
}
