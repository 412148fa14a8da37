//! The plugin admin API: list, inspect, install (validated), roll back.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use super::{ApiError, AppState};
use crate::config::Routes;
use crate::control::InstallError;
use crate::domain::format_time;
use crate::runtime::{Plugin, Slot};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginView {
    name: String,
    /// sha256 of the component, hex.
    version: String,
    state: &'static str,
    loaded_at: String,
    activated_at: String,
    messages_handled: u64,
    errors: u64,
    previous_version: Option<String>,
    /// Topics routed to this plugin.
    topics: Vec<String>,
}

impl PluginView {
    fn new(name: &str, slot: &Slot, routes: &Routes) -> Self {
        let (handled, errors) = slot.active.counts();
        Self {
            name: name.to_string(),
            version: slot.active.version().to_string(),
            state: "active",
            loaded_at: format_time(slot.active.loaded_at()),
            activated_at: format_time(slot.activated_at),
            messages_handled: handled,
            errors,
            previous_version: slot.previous.as_deref().map(|p| p.version().to_string()),
            topics: routes.topics_of(name),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallView {
    name: String,
    version: String,
    previous_version: Option<String>,
    /// `false` when this exact version was already active.
    changed: bool,
}

pub async fn list(State(state): State<AppState>) -> Json<Vec<PluginView>> {
    let views = state
        .control
        .registry()
        .slots()
        .iter()
        .map(|(name, slot)| PluginView::new(name, slot, &state.routes))
        .collect();
    Json(views)
}

pub async fn get(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<PluginView>, ApiError> {
    let Path(name) = name?;
    let slot = state
        .control
        .registry()
        .slot(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no plugin {name}")))?;
    Ok(Json(PluginView::new(&name, &slot, &state.routes)))
}

/// `PUT /plugins/{name}` with the component bytes as the body.
pub async fn put(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<InstallView>), ApiError> {
    let Path(name) = name?;
    let body = body.map_err(|e| match e.status() {
        _ if super::error::body_timed_out(&e) => {
            ApiError::Timeout("the component did not arrive in time".into())
        }
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(format!(
            "the component is larger than the limit of {} bytes (SLUICE_PLUGIN_MAX_MIB)",
            state
                .control
                .registry()
                .compile_limits()
                .max_component_bytes
        )),
        _ => ApiError::BadRequest(format!("reading the component: {}", e.body_text())),
    })?;
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "the body must be the plugin component (.wasm bytes)".into(),
        ));
    }
    let installed = state
        .control
        .install(&name, body, "api")
        .await
        .map_err(install_error)?;
    Ok((
        StatusCode::OK,
        Json(InstallView {
            name: installed.name,
            version: installed.version,
            previous_version: installed.previous_version,
            changed: installed.changed,
        }),
    ))
}

pub async fn rollback(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<InstallView>, ApiError> {
    let Path(name) = name?;
    let installed = state.control.rollback(&name).await.map_err(install_error)?;
    Ok(Json(InstallView {
        name: installed.name,
        version: installed.version,
        previous_version: installed.previous_version,
        changed: installed.changed,
    }))
}

fn install_error(e: InstallError) -> ApiError {
    match e {
        InstallError::Invalid(_) | InstallError::BadName(_) => {
            ApiError::Unprocessable(e.to_string())
        }
        InstallError::Unknown(_) => ApiError::NotFound(e.to_string()),
        InstallError::NoPrevious(_) => ApiError::Conflict(e.to_string()),
        InstallError::Database(e) => e.into(),
    }
}

/// The plugin routed to `topic`, as active now.
pub fn plugin_for(state: &AppState, topic: &str) -> Option<Arc<Plugin>> {
    let name = state.routes.plugin_for(topic)?;
    state.control.registry().active(name)
}
