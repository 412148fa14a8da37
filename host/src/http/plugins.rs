//! The plugin admin API: list, inspect, install (validated, or as a shadow candidate),
//! compare a shadow run, promote or discard it, roll back, delete.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::openapi::PluginName;
use super::{ApiError, ApiPath, ApiQuery, AppState};
use crate::control::{InstallError, Installed};
use crate::db;
use crate::domain::Routes;
use crate::domain::format_time;
use crate::runtime::{Plugin, Slot};

/// A plugin as this instance runs it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Plugin)]
pub struct PluginView {
    name: String,
    /// sha256 of the component, hex.
    version: String,
    /// `active`.
    #[schema(value_type = String)]
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
    /// `batch`: a fresh instance per batch and plugin thread, the batch's records called in
    /// order in it; `record`: a fresh instance per record.
    #[schema(value_type = String, example = "batch")]
    isolation: &'static str,
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
            isolation: slot.active.isolation().as_str(),
        }
    }
}

/// What an install, promotion or rollback made active.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Installed)]
pub struct InstallView {
    name: String,
    version: String,
    previous_version: Option<String>,
    /// `false` when this exact version was already active.
    changed: bool,
    /// `active` or `shadow`.
    #[schema(value_type = String)]
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

/// The plugins this instance runs, with their versions and counts.
#[utoipa::path(
    get,
    path = "/plugins",
    tag = "plugins",
    operation_id = "listPlugins",
    responses((status = 200, description = "Plugins by name", body = Vec<PluginView>))
)]
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

/// One plugin.
#[utoipa::path(
    get,
    path = "/plugins/{name}",
    tag = "plugins",
    operation_id = "getPlugin",
    params(("name" = inline(PluginName), Path, description = "The plugin's name")),
    responses(
        (status = 200, description = "The plugin", body = PluginView),
        (status = 404, description = "No plugin of that name", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<PluginView>, ApiError> {
    let slot = slot_of(&state, &name)?;
    Ok(Json(PluginView::new(&name, &slot, &state.routes)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InstallParams {
    /// `active` (default): validate and activate fleet-wide; `shadow`: run it beside the
    /// active version on live traffic, compared and never applied.
    #[param(pattern = "^(active|shadow)$")]
    mode: Option<String>,
}

/// Install a plugin version, fleet-wide: the component is validated first, and a refused one
/// leaves the running version active.
#[utoipa::path(
    put,
    path = "/plugins/{name}",
    tag = "plugins",
    operation_id = "installPlugin",
    params(("name" = inline(PluginName), Path, description = "The plugin's name"), InstallParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The WebAssembly component (`.wasm`), at most `SLUICE_PLUGIN_MAX_MIB`"),
    responses(
        (status = 200, description = "Installed (or already active)", body = InstallView,
            links(
                ("GetInstalledPlugin" = (operation_id = "getPlugin",
                    parameters(("name" = "$request.path.name")),
                    description = "The plugin as it runs now")),
                ("GetShadowRun" = (operation_id = "getShadowRun",
                    parameters(("name" = "$request.path.name")),
                    description = "With `mode=shadow`: how the candidate compares")),
            )),
        (status = 400, description = "No body, or `mode` is neither `active` nor `shadow`", body = ErrorBody),
        (status = 404, description = "`mode=shadow` with no active plugin of that name", body = ErrorBody),
        (status = 408, description = "The component did not arrive in time", body = ErrorBody),
        (status = 413, description = "The component is larger than the limit", body = ErrorBody),
        (status = 422, description = "Refused: not a valid plugin component, or a bad name; says what is wrong", body = ErrorBody),
    )
)]
pub async fn put(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(params): ApiQuery<InstallParams>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<InstallView>), ApiError> {
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
    let installed = installed?;
    Ok((
        StatusCode::OK,
        Json(InstallView::new(installed, mode, &state.routes)),
    ))
}

/// Make the previous version active again, fleet-wide.
#[utoipa::path(
    post,
    path = "/plugins/{name}/rollback",
    tag = "plugins",
    operation_id = "rollbackPlugin",
    params(("name" = inline(PluginName), Path, description = "The plugin's name")),
    responses(
        (status = 200, description = "The version now active", body = InstallView),
        (status = 404, description = "No plugin of that name", body = ErrorBody),
        (status = 409, description = "No previous version", body = ErrorBody),
    )
)]
pub async fn rollback(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<InstallView>, ApiError> {
    activated(&state, state.control.rollback(&name).await)
}

/// Remove a plugin no route uses, fleet-wide.
#[utoipa::path(
    delete,
    path = "/plugins/{name}",
    tag = "plugins",
    operation_id = "deletePlugin",
    params(("name" = inline(PluginName), Path, description = "The plugin's name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No plugin of that name", body = ErrorBody),
        (status = 409, description = "A route uses it", body = ErrorBody),
        (status = 422, description = "Not a plugin name", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    done(state.control.delete(&name, &state.routes).await)
}

/// How a shadow candidate compares with the active version, fleet-wide.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ShadowRun)]
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

/// A record on which the two versions disagreed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ShadowDifference)]
pub struct DifferenceView {
    topic: String,
    partition: i32,
    offset: i64,
    active: serde_json::Value,
    shadow: serde_json::Value,
    noted_at: String,
}

/// How the shadow candidate compares with the active version.
#[utoipa::path(
    get,
    path = "/plugins/{name}/shadow",
    tag = "plugins",
    operation_id = "getShadowRun",
    params(("name" = inline(PluginName), Path, description = "The plugin's name")),
    responses(
        (status = 200, description = "The comparison so far", body = ShadowView),
        (status = 404, description = "No plugin of that name, or no shadow run", body = ErrorBody),
    )
)]
pub async fn shadow(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ShadowView>, ApiError> {
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

/// The shadow candidate becomes the active version, fleet-wide.
#[utoipa::path(
    post,
    path = "/plugins/{name}/shadow/promote",
    tag = "plugins",
    operation_id = "promoteShadow",
    params(("name" = inline(PluginName), Path, description = "The plugin's name")),
    responses(
        (status = 200, description = "The version now active", body = InstallView),
        (status = 404, description = "No plugin of that name", body = ErrorBody),
        (status = 409, description = "No shadow run", body = ErrorBody),
    )
)]
pub async fn promote(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<InstallView>, ApiError> {
    activated(&state, state.control.promote_shadow(&name).await)
}

/// Stop the shadow run, fleet-wide.
#[utoipa::path(
    delete,
    path = "/plugins/{name}/shadow",
    tag = "plugins",
    operation_id = "discardShadow",
    params(("name" = inline(PluginName), Path, description = "The plugin's name")),
    responses(
        (status = 204, description = "Stopped"),
        (status = 404, description = "No plugin of that name", body = ErrorBody),
        (status = 409, description = "No shadow run", body = ErrorBody),
    )
)]
pub async fn discard(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    done(state.control.discard_shadow(&name).await)
}

/// The answer to a change that made a version active.
fn activated(
    state: &AppState,
    installed: Result<Installed, InstallError>,
) -> Result<Json<InstallView>, ApiError> {
    let installed = installed?;
    Ok(Json(InstallView::new(installed, "active", &state.routes)))
}

/// The answer to a change with nothing to show.
fn done(result: Result<(), InstallError>) -> Result<StatusCode, ApiError> {
    result?;
    Ok(StatusCode::NO_CONTENT)
}

/// The plugin routed to `topic`, as active now.
pub fn plugin_for(state: &AppState, topic: &str) -> Option<Arc<Plugin>> {
    let name = state.routes.plugin_for(topic)?;
    state.control.registry().active(name)
}
