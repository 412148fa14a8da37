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
use super::{ApiError, ApiPath, ApiQuery, AppState};
use crate::control::{GuardStatus, InstallError, Installed};
use crate::db;
use crate::domain::{Allowances, PluginName, Routes, format_time};
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
    /// The contract version the component targets.
    #[schema(value_type = String, example = "sluice:handler@0.2.0")]
    contract: &'static str,
    /// What the guard does after a version becomes active.
    guard: GuardView,
}

/// The guard of a plugin: after an install or a promotion it watches the new version's first
/// records and rolls it back fleet-wide if their failure rate is far above its predecessor's.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Guard)]
pub struct GuardView {
    enabled: bool,
    /// `watching`, `passed`, `rolled-back`; absent when there is nothing to watch (a default
    /// version, a rollback).
    #[schema(example = "rolled-back")]
    state: Option<String>,
    /// The version it is about (after a rollback: the one rolled back).
    version: Option<String>,
    /// Why it passed or rolled back, with the figures.
    reason: Option<String>,
    changed_at: Option<String>,
}

impl PluginView {
    fn new(name: &str, slot: &Slot, routes: &Routes, guard: GuardStatus) -> Self {
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
            contract: slot.active.contract(),
            guard: GuardView {
                enabled: guard.enabled,
                state: guard.state,
                version: guard.version,
                reason: guard.reason,
                changed_at: guard.changed_at.map(format_time),
            },
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
    mode: InstallMode,
    /// Topics routed to the plugin: none means it handles nothing until a route names it.
    topics: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

impl InstallView {
    fn new(installed: Installed, mode: InstallMode, routes: &Routes) -> Self {
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
        .map(|(name, slot)| {
            PluginView::new(name, slot, &state.routes, state.control.guard_status(name))
        })
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
    let guard = state.control.guard_status(&name);
    Ok(Json(PluginView::new(&name, &slot, &state.routes, guard)))
}

/// What an install does with the version: `active` validates and activates it fleet-wide;
/// `shadow` runs it beside the active version on live traffic, compared and never applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InstallMode {
    #[default]
    Active,
    Shadow,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InstallParams {
    /// `active` (the default) or `shadow`.
    #[param(inline)]
    mode: Option<InstallMode>,
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
    let mode = params.mode.unwrap_or_default();
    let installed = match mode {
        InstallMode::Active => state.control.install(&name, body, "api").await,
        InstallMode::Shadow => state.control.install_shadow(&name, body).await,
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PromoteParams {
    /// Promote even if the candidate was compared on fewer records than required
    /// (`--shadow-min-compared`) or differed from the active version.
    force: Option<bool>,
}

/// The shadow candidate becomes the active version, fleet-wide, once it was compared on
/// enough records (`--shadow-min-compared`) and agreed on all of them.
#[utoipa::path(
    post,
    path = "/plugins/{name}/shadow/promote",
    tag = "plugins",
    operation_id = "promoteShadow",
    params(("name" = inline(PluginName), Path, description = "The plugin's name"), PromoteParams),
    responses(
        (status = 200, description = "The version now active", body = InstallView),
        (status = 400, description = "`force` is not a boolean", body = ErrorBody),
        (status = 404, description = "No plugin of that name", body = ErrorBody),
        (status = 409, description = "No shadow run, or a candidate not compared on enough records or with differences (without force)", body = ErrorBody),
    )
)]
pub async fn promote(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(params): ApiQuery<PromoteParams>,
) -> Result<Json<InstallView>, ApiError> {
    let force = params.force.unwrap_or(false);
    activated(&state, state.control.promote_shadow(&name, force).await)
}

/// Whether the guard watches the plugin's new versions.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = GuardSetting)]
pub struct GuardSetting {
    enabled: bool,
}

/// Turn the plugin's guard on or off, fleet-wide.
#[utoipa::path(
    put,
    path = "/plugins/{name}/guard",
    tag = "plugins",
    operation_id = "setPluginGuard",
    params(("name" = inline(PluginName), Path, description = "The plugin's name")),
    request_body = GuardSetting,
    responses(
        (status = 204, description = "Set"),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 404, description = "No plugin of that name", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "Not a guard setting (`{\"enabled\": bool}`)", body = ErrorBody),
    )
)]
pub async fn set_guard(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    super::ApiJson(setting): super::ApiJson<GuardSetting>,
) -> Result<StatusCode, ApiError> {
    done(state.control.set_guard(&name, setting.enabled).await)
}

/// How a record key is written in a URL path: `text`, the segment's text; `base64url`, the
/// key's bytes in unpadded base64url (for keys that are not UTF-8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyEncoding {
    #[default]
    Text,
    Base64url,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StateParams {
    /// `text` (the default) or `base64url`.
    #[param(inline)]
    encoding: Option<KeyEncoding>,
}

/// The state a plugin keeps for one record key.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = PluginState)]
pub struct StateView {
    plugin: String,
    /// The key as text (lossy where it is not UTF-8).
    key: String,
    /// The value as text, when it is UTF-8.
    value: Option<String>,
    /// The value's bytes, base64.
    value_base64: String,
    bytes: usize,
    updated_at: String,
}

/// The state plugin `name` keeps for record key `key` (routes with `--state`).
#[utoipa::path(
    get,
    path = "/plugins/{name}/state/{key}",
    tag = "plugins",
    operation_id = "getPluginState",
    params(
        ("name" = inline(PluginName), Path, description = "The plugin's name"),
        ("key" = String, Path, description = "The record key"),
        StateParams,
    ),
    responses(
        (status = 200, description = "The key's state", body = StateView),
        (status = 400, description = "`encoding` is neither `text` nor `base64url`", body = ErrorBody),
        (status = 404, description = "No plugin of that name, or no state for that key (with `encoding=base64url`: a key that is not base64url names none)", body = ErrorBody),
    )
)]
pub async fn get_state(
    State(state): State<AppState>,
    ApiPath((name, key)): ApiPath<(String, String)>,
    ApiQuery(params): ApiQuery<StateParams>,
) -> Result<Json<StateView>, ApiError> {
    use base64::Engine as _;
    slot_of(&state, &name)?;
    let bytes = match params.encoding.unwrap_or_default() {
        KeyEncoding::Text => key.into_bytes(),
        // A key that does not decode names no state: not found, saying why.
        KeyEncoding::Base64url => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(key.trim_end_matches('='))
            .map_err(|e| {
                ApiError::NotFound(format!(
                    "plugin {name} keeps no state for that key: it is not base64url ({e})"
                ))
            })?,
    };
    let (value, updated_at) = db::state::get(&state.pool, &name, &bytes)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("plugin {name} keeps no state for that key")))?;
    Ok(Json(StateView {
        plugin: name,
        key: String::from_utf8_lossy(&bytes).into_owned(),
        bytes: value.len(),
        value_base64: base64::engine::general_purpose::STANDARD.encode(&value),
        value: String::from_utf8(value).ok(),
        updated_at: format_time(updated_at),
    }))
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
    Ok(Json(InstallView::new(
        installed,
        InstallMode::Active,
        &state.routes,
    )))
}

/// The answer to a change with nothing to show.
fn done(result: Result<(), InstallError>) -> Result<StatusCode, ApiError> {
    result?;
    Ok(StatusCode::NO_CONTENT)
}

/// The plugin routed to `topic`, as active now.
pub fn plugin_for(state: &AppState, topic: &str) -> Option<(Arc<Plugin>, Allowances)> {
    let name = state.routes.plugin_for(topic)?;
    let plugin = state.control.registry().active(name)?;
    Some((plugin, state.routes.allowances(topic)))
}
