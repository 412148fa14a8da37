//! Orders flow, first half, and the read side: the HTTP API (axum, JSON, camelCase), its
//! OpenAPI description and the web console.

mod admin;
mod catalogs;
mod console;
mod dead_letters;
mod error;
mod metrics;
mod openapi;
mod order_writer;
mod orders;
mod plugins;
mod server;
mod starting;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::{Router, middleware};
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::control::PluginControl;
use crate::domain::Routes;
use crate::ingest::IngestHealth;
use crate::waiting::Waits;

pub use admin::AdminAccess;
pub use error::{ApiError, ApiJson, ApiPath, ApiQuery};
pub use order_writer::{OrderWriter, WriteError};
pub use server::{EdgeLimits, serve};
pub use starting::starting;

/// What every request may reach. Behind one `Arc` in [`AppState`]: axum clones the state for
/// every extractor and middleware of every request, and one reference count is all that costs.
pub struct Shared {
    pub pool: PgPool,
    /// The topic order events are published to.
    pub topic: Arc<str>,
    /// Writes orders with their events, many requests' in one statement.
    pub orders: OrderWriter,
    /// Where redrive verdicts are reported.
    pub status_topic: Arc<str>,
    /// Plugin installs, rollbacks and the active versions (dead letters are redriven
    /// through the version active now).
    pub control: Arc<PluginControl>,
    /// topic → plugin name, and what each route allows.
    pub routes: Routes,
    pub ingest_health: Arc<IngestHealth>,
    /// What the group members wait for (a topic, the brokers, partitions).
    pub waits: Arc<Waits>,
    pub admin: AdminAccess,
    /// Dead letters readable without admin access.
    pub public_dead_letters: bool,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The request state: cloned per extractor and middleware, so one pointer.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The API, described as it is routed: each operation's OpenAPI entry comes from its
/// handler's annotation, and admin ones are marked by the admin router they sit in.
pub fn router(state: AppState) -> Router {
    let (router, mut doc) = api(&state).split_for_parts();
    openapi::add_common_responses(&mut doc);
    // Rendered once, at start (not on a request path): the routes are fixed for the router's
    // life. Cannot fail: the document is plain structs and string-keyed maps, which
    // serde_json always serialises.
    let document = bytes::Bytes::from(
        doc.to_pretty_json()
            .expect("the OpenAPI document serialises"),
    );
    router
        .route(
            "/openapi.json",
            get(move || async move { ([(CONTENT_TYPE, "application/json")], document) }),
        )
        .route("/api", get(openapi::browser))
        .merge(console::routes())
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

fn api(state: &AppState) -> OpenApiRouter<AppState> {
    let dead_letters = OpenApiRouter::new()
        .routes(routes!(dead_letters::list))
        .routes(routes!(dead_letters::get));
    let (public_dead_letters, admin_dead_letters) = if state.public_dead_letters {
        (dead_letters, OpenApiRouter::new())
    } else {
        (OpenApiRouter::new(), dead_letters)
    };
    let body_limit = DefaultBodyLimit::max(
        state
            .control
            .registry()
            .compile_limits()
            .max_component_bytes,
    );
    let (schemas, paths, plugin) = routes!(plugins::get, plugins::put, plugins::delete);
    let mut admin = OpenApiRouter::new()
        .merge(admin_dead_letters)
        .routes(routes!(plugins::list))
        .routes((schemas, paths, plugin.layer(body_limit)))
        .routes(routes!(plugins::rollback))
        .routes(routes!(plugins::shadow, plugins::discard))
        .routes(routes!(plugins::promote))
        .routes(routes!(plugins::set_guard))
        .routes(routes!(plugins::get_state))
        .routes(routes!(catalogs::put))
        .routes(routes!(dead_letters::redrive))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            admin::require_admin,
        ));
    openapi::require_admin(admin.get_openapi_mut());
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics::render))
        .routes(routes!(orders::create, orders::list))
        .routes(routes!(orders::get))
        .routes(routes!(orders::list_for_user))
        .routes(routes!(catalogs::list))
        .routes(routes!(catalogs::get))
        .merge(public_dead_letters)
        .merge(admin)
}

/// A JSON integer as JSON Schema defines one: `3` or `3.0` (a number with no fraction), within
/// `i64`. serde alone refuses `3.0`, which a client's JSON library may well write.
fn json_integer<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let number = <serde_json::Number as serde::Deserialize>::deserialize(deserializer)?;
    if let Some(n) = number.as_i64() {
        return Ok(n);
    }
    number
        .as_f64()
        .filter(|f| f.fract() == 0.0 && *f >= i64::MIN as f64 && *f < i64::MAX as f64)
        .map(|f| f as i64)
        .ok_or_else(|| serde::de::Error::custom(format!("expected an integer (i64), got {number}")))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`.
    status: &'static str,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ok`: requests are served (orders are taken even while a flow waits).
    status: &'static str,
    /// Each flow that waits (`ingest`, `orderStatus`), with what for and since how long: a
    /// topic that does not exist yet, the Kafka brokers, partitions not assigned to this
    /// member. Absent when none waits.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    waiting: std::collections::BTreeMap<&'static str, String>,
}

/// Ready to take traffic: the database answers, ingest is not stuck and no plugin call is
/// past its deadline. A flow that waits for Kafka (a topic not created yet, the brokers, its
/// partitions) is reported under `waiting` without making the answer 503: the orders API works
/// meanwhile, and the first order is what creates the order topic in many deployments.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "ready",
    responses((status = 200, description = "Ready (see `waiting`)", body = Readiness))
)]
async fn readyz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<axum::Json<Readiness>, ApiError> {
    if let Some(stuck) = state.ingest_health.stuck() {
        return Err(ApiError::Unavailable(stuck));
    }
    if let Some(over) = state.control.registry().sandbox().overdue() {
        return Err(ApiError::Unavailable(format!(
            "a plugin call is running {:.1} s past its deadline",
            over.as_secs_f64()
        )));
    }
    database_answers(&state.pool).await?;
    Ok(axum::Json(Readiness {
        status: "ok",
        waiting: state.waits.all(),
    }))
}

/// Alive: the database answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "health",
    responses((status = 200, description = "Alive", body = Health))
)]
async fn healthz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<axum::Json<Health>, ApiError> {
    database_answers(&state.pool).await?;
    Ok(axum::Json(Health { status: "ok" }))
}

async fn database_answers(pool: &PgPool) -> Result<(), ApiError> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map(drop)
        .map_err(|e| ApiError::Unavailable(format!("database unreachable: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Integer(#[serde(deserialize_with = "json_integer")] i64);

    fn integer(json: &str) -> Result<i64, String> {
        serde_json::from_str::<Integer>(json)
            .map(|i| i.0)
            .map_err(|e| e.to_string())
    }

    /// JSON Schema's integers: a number without a fraction, however it is written.
    #[test]
    fn integers_may_be_written_with_a_zero_fraction() {
        assert_eq!(integer("3"), Ok(3));
        assert_eq!(integer("-3"), Ok(-3));
        assert_eq!(integer("3.0"), Ok(3));
        assert_eq!(integer("3e2"), Ok(300));
        assert_eq!(integer("9223372036854775807"), Ok(i64::MAX));
        for refused in ["3.5", "1e300", "18446744073709551615", "\"3\"", "null"] {
            assert!(integer(refused).is_err(), "{refused}");
        }
    }
}
