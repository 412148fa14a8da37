//! The dead-letter API: inspect poison records and redrive them through the current plugin.

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::{ApiError, ApiPath, ApiQuery, AppState};
use crate::db;
use crate::db::dead_letters::DeadLetter;
use crate::domain::{ErrorKind, Outcome, format_time};
use crate::ingest::redrive;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// How many, newest first (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// Only dead letters older than this id: the previous page's `nextBefore`.
    before: Option<i64>,
}

/// A page of dead letters, newest first (without payloads: open one to see it).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = DeadLetterPage)]
pub struct Page {
    items: Vec<DeadLetterView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<i64>,
}

/// Bytes as text when they are UTF-8, else base64.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Data)]
pub struct Bytes {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
}

impl Bytes {
    fn of(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self {
                text: Some(text.to_string()),
                base64: None,
            },
            Err(_) => Self {
                text: None,
                base64: Some(STANDARD.encode(bytes)),
            },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = RecordHeader)]
pub struct HeaderView {
    key: String,
    value: Option<Bytes>,
}

/// A record no plugin could handle, where it came from, why, and its redrives.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = DeadLetter)]
pub struct DeadLetterView {
    id: i64,
    group_id: String,
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Bytes>,
    event_id: Option<String>,
    error_kind: ErrorKind,
    error: String,
    plugin: String,
    plugin_version: String,
    created_at: String,
    redrive_count: i32,
    last_redrive_at: Option<String>,
    last_redrive_outcome: Option<Outcome>,
    last_redrive_reason: Option<String>,
    resolved_at: Option<String>,
    /// The record's value and headers: only when one dead letter is read.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    contents: Option<Contents>,
}

/// A dead letter's record, as read alone.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Contents {
    /// The record's value (`null` for a tombstone).
    payload: Option<Bytes>,
    headers: Vec<HeaderView>,
}

impl DeadLetterView {
    fn new(row: DeadLetter, full: bool) -> Self {
        let contents = full.then(|| Contents {
            payload: row.payload.as_deref().map(Bytes::of),
            headers: row
                .headers
                .0
                .iter()
                .map(|h| HeaderView {
                    key: h.key.clone(),
                    value: h.value.as_deref().map(Bytes::of),
                })
                .collect(),
        });
        Self {
            id: row.id,
            group_id: row.group_id,
            topic: row.topic,
            partition: row.partition,
            offset: row.offset,
            key: row.key.as_deref().map(Bytes::of),
            event_id: row.event_id,
            error_kind: row.error_kind,
            error: row.error,
            plugin: row.plugin,
            plugin_version: row.plugin_version,
            created_at: format_time(row.created_at),
            redrive_count: row.redrive_count,
            last_redrive_at: row.last_redrive_at.map(format_time),
            // Written by `Outcome::as_str` only.
            last_redrive_outcome: row.last_redrive_outcome.as_deref().and_then(Outcome::parse),
            last_redrive_reason: row.last_redrive_reason,
            resolved_at: row.resolved_at.map(format_time),
            contents,
        }
    }
}

/// Dead letters, newest first.
#[utoipa::path(
    get,
    path = "/dead-letters",
    tag = "dead letters",
    operation_id = "listDeadLetters",
    params(ListParams),
    responses(
        (status = 200, description = "A page of dead letters", body = Page,
            links(
                ("GetNewestDeadLetter" = (operation_id = "getDeadLetter",
                    parameters(("id" = "$response.body#/items/0/id")),
                    description = "The newest dead letter of the page, with its payload")),
                ("RedriveNewestDeadLetter" = (operation_id = "redriveDeadLetter",
                    parameters(("id" = "$response.body#/items/0/id")),
                    description = "Redrive the newest dead letter of the page")),
            )),
        (status = 400, description = "`limit` or `before` not acceptable", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<Page>, ApiError> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and 500, got {limit}"
        )));
    }
    let rows = db::dead_letters::list(&state.pool, limit, params.before).await?;
    let next_before = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(Json(Page {
        items: rows
            .into_iter()
            .map(|r| DeadLetterView::new(r, false))
            .collect(),
        next_before,
    }))
}

/// One dead letter with its payload and headers.
#[utoipa::path(
    get,
    path = "/dead-letters/{id}",
    tag = "dead letters",
    operation_id = "getDeadLetter",
    params(("id" = i64, Path, description = "The dead letter's id")),
    responses(
        (status = 200, description = "The dead letter", body = DeadLetterView),
        (status = 400, description = "`id` is not an integer", body = ErrorBody),
        (status = 404, description = "No such dead letter", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<DeadLetterView>, ApiError> {
    let row = db::dead_letters::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no dead letter {id}")))?;
    Ok(Json(DeadLetterView::new(row, true)))
}

/// What the redrive made of the record.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedriveResponse {
    id: i64,
    /// `DEAD_LETTER` if it failed again.
    outcome: Outcome,
    reason: Option<String>,
    plugin: String,
    plugin_version: String,
}

/// Run a dead letter through the plugin active now; applied if it succeeds this time.
#[utoipa::path(
    post,
    path = "/dead-letters/{id}/redrive",
    tag = "dead letters",
    operation_id = "redriveDeadLetter",
    params(("id" = i64, Path, description = "The dead letter's id")),
    responses(
        (status = 200, description = "The outcome", body = RedriveResponse),
        (status = 400, description = "`id` is not an integer", body = ErrorBody),
        (status = 404, description = "No such dead letter", body = ErrorBody),
        (status = 409, description = "Already resolved, or no plugin handles its topic now", body = ErrorBody),
    )
)]
pub async fn redrive(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<RedriveResponse>, ApiError> {
    let plugin_for = |topic: &str| super::plugins::plugin_for(&state, topic);
    let tables = state.control.tables().current();
    let done = redrive::redrive(
        &state.pool,
        plugin_for,
        (Some(&state.status_topic), tables),
        id,
    )
    .await?;
    Ok(Json(RedriveResponse {
        id,
        outcome: done.outcome,
        reason: done.reason,
        plugin: done.plugin,
        plugin_version: done.plugin_version,
    }))
}
