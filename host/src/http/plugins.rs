//! The plugin admin API: list, inspect, install (validated, or as a shadow candidate),
//! compare a shadow run, promote or discard it, roll back, delete.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::config::Routes;
use crate::control::{InstallError, Installed};
use crate::db;
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
    /// Calls that failed: invalid input, trap, deadline, refused output.
    errors: u64,
    /// Records the plugin refused on business grounds.
    rejections: u64,
    previous_version: Option<String>,
    /// Topics routed to this plugin.
    topics: Vec<String>,
    /// What it reads with `host.get-config`.
    config: BTreeMap<String, String>,
    /// The candidate running in its shadow, if any.
    shadow_version: Option<String>,
}

impl PluginView {
    fn new(name: &str, slot: &Slot, routes: &Routes) -> Self {
        let counts = slot.active.counts();
        Self {
            name: name.to_string(),
            version: slot.active.version().to_string(),
            state: "active",
            loaded_at: format_time(slot.active.loaded_at()),
            activated_at: format_time(slot.activated_at),
            messages_handled: counts.handled,
            errors: counts.failed,
            rejections: counts.rejected,
            previous_version: slot.previous.as_deref().map(|p| p.version().to_string()),
            topics: routes.topics_of(name),
            config: slot.active.config().clone().into_iter().collect(),
            shadow_version: slot.shadow.as_deref().map(|p| p.version().to_string()),
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
    /// `active` or `shadow`.
    mode: &'static str,
    /// Topics routed to the plugin: none means it handles nothing until a route names it.
    topics: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

impl InstallView {
    fn new(installed: Installed, mode: &'static str, routes: &Routes) -> Self {
        let topics = routes.topics_of(&installed.name);
        let note = topics.is_empty().then(|| {
            format!(
                "no topic routes to plugin {0}: it handles no records until a route names it \
                 (--route <topic>={0})",
                installed.name
            )
        });
        Self {
            name: installed.name,
            version: installed.version,
            previous_version: installed.previous_version,
            changed: installed.changed,
            mode,
            topics,
            note,
        }
    }
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

fn slot_of(state: &AppState, name: &str) -> Result<Slot, ApiError> {
    state
        .control
        .registry()
        .slot(name)
        .ok_or_else(|| ApiError::NotFound(format!("no plugin {name}")))
}

pub async fn get(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<PluginView>, ApiError> {
    let Path(name) = name?;
    let slot = slot_of(&state, &name)?;
    Ok(Json(PluginView::new(&name, &slot, &state.routes)))
}

#[derive(Debug, Deserialize)]
pub struct InstallParams {
    /// `active` (default) or `shadow`.
    mode: Option<String>,
}

/// `PUT /plugins/{name}[?mode=shadow]` with the component bytes as the body.
pub async fn put(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    params: Result<Query<InstallParams>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<InstallView>), ApiError> {
    let Path(name) = name?;
    let Query(params) = params?;
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
    let (installed, mode) = match params.mode.as_deref() {
        None | Some("active") => (state.control.install(&name, body, "api").await, "active"),
        Some("shadow") => (state.control.install_shadow(&name, body).await, "shadow"),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "mode must be `active` or `shadow`, got `{other}`"
            )));
        }
    };
    let installed = installed.map_err(install_error)?;
    Ok((
        StatusCode::OK,
        Json(InstallView::new(installed, mode, &state.routes)),
    ))
}

pub async fn rollback(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<InstallView>, ApiError> {
    let Path(name) = name?;
    activated(&state, state.control.rollback(&name).await)
}

/// `DELETE /plugins/{name}`: a plugin no route uses, fleet-wide.
pub async fn delete(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(name) = name?;
    done(state.control.delete(&name, &state.routes).await)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowView {
    name: String,
    active_version: String,
    shadow_version: String,
    /// Records both versions handled, fleet-wide.
    compared: i64,
    /// Records on which they agreed (the same mutations, or a failure of the same kind).
    agreements: i64,
    /// The first differences: where, and what each version made of the record.
    differences: Vec<DifferenceView>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DifferenceView {
    topic: String,
    partition: i32,
    offset: i64,
    active: serde_json::Value,
    shadow: serde_json::Value,
    noted_at: String,
}

/// `GET /plugins/{name}/shadow`: how the shadow candidate compares.
pub async fn shadow(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<ShadowView>, ApiError> {
    let Path(name) = name?;
    let slot = slot_of(&state, &name)?;
    let candidate = slot
        .shadow
        .ok_or_else(|| ApiError::NotFound(format!("plugin {name} has no shadow run")))?;
    let (stats, differences) =
        db::plugins::shadow_report(&state.pool, &name, candidate.version()).await?;
    Ok(Json(ShadowView {
        name,
        active_version: slot.active.version().to_string(),
        shadow_version: candidate.version().to_string(),
        compared: stats.compared,
        agreements: stats.agreed,
        differences: differences
            .into_iter()
            .map(|d| DifferenceView {
                topic: d.topic,
                partition: d.partition,
                offset: d.offset,
                active: d.active.0,
                shadow: d.shadow.0,
                noted_at: format_time(d.noted_at),
            })
            .collect(),
    }))
}

/// `POST /plugins/{name}/shadow/promote`: the candidate becomes the active version.
pub async fn promote(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<InstallView>, ApiError> {
    let Path(name) = name?;
    activated(&state, state.control.promote_shadow(&name).await)
}

/// `DELETE /plugins/{name}/shadow`: stop the shadow run.
pub async fn discard(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(name) = name?;
    done(state.control.discard_shadow(&name).await)
}

/// The answer to a change that made a version active.
fn activated(
    state: &AppState,
    installed: Result<Installed, InstallError>,
) -> Result<Json<InstallView>, ApiError> {
    let installed = installed.map_err(install_error)?;
    Ok(Json(InstallView::new(installed, "active", &state.routes)))
}

/// The answer to a change with nothing to show.
fn done(result: Result<(), InstallError>) -> Result<StatusCode, ApiError> {
    result.map_err(install_error)?;
    Ok(StatusCode::NO_CONTENT)
}

fn install_error(e: InstallError) -> ApiError {
    match e {
        InstallError::Invalid(_) | InstallError::BadName(_) => {
            ApiError::Unprocessable(e.to_string())
        }
        InstallError::Unknown(_) => ApiError::NotFound(e.to_string()),
        InstallError::NoPrevious(_) | InstallError::NoShadow(_) | InstallError::Routed(..) => {
            ApiError::Conflict(e.to_string())
        }
        InstallError::Database(e) => e.into(),
    }
}

/// The plugin routed to `topic`, as active now.
pub fn plugin_for(state: &AppState, topic: &str) -> Option<Arc<Plugin>> {
    let name = state.routes.plugin_for(topic)?;
    state.control.registry().active(name)
}
