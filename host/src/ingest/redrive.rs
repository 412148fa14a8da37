//! Redrive: run a dead letter through the current plugin again and apply the outcome in one
//! transaction, decided and written as ingest would.

use std::sync::Arc;

use sqlx::PgPool;

use super::apply;
use super::plan::{BatchContext, Decision, Handled, Mode};
use crate::db;
use crate::runtime::{Plugin, bindings};

#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("no dead letter {0}")]
    NotFound(i64),
    #[error("dead letter {0} is already resolved")]
    AlreadyResolved(i64),
    #[error("no plugin is routed to topic {0} any more")]
    NoPlugin(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("the plugin call could not be run: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What a redrive did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redriven {
    pub outcome: &'static str,
    pub reason: Option<String>,
    pub plugin: String,
    pub plugin_version: String,
}

/// Redrive dead letter `id` through `plugin_for(its topic)`, the version active now.
pub async fn redrive(
    pool: &PgPool,
    plugin_for: impl Fn(&str) -> Option<Arc<Plugin>>,
    status_topic: Option<&str>,
    id: i64,
) -> Result<Redriven, RedriveError> {
    let letter = db::dead_letters::get(pool, id)
        .await?
        .ok_or(RedriveError::NotFound(id))?;
    if letter.resolved_at.is_some() {
        return Err(RedriveError::AlreadyResolved(id));
    }
    let plugin =
        plugin_for(&letter.topic).ok_or_else(|| RedriveError::NoPlugin(letter.topic.clone()))?;
    let record = letter.record();
    let runner = Arc::clone(&plugin);
    // Plugin calls are CPU work bounded by the sandbox deadline: off the async workers.
    let handled = tokio::task::spawn_blocking(move || {
        let result = runner.handle(&bindings::Message::from(&record));
        Handled {
            record,
            // The dead letter's event id, as ingest read it.
            event_id: letter.event_id.clone(),
            result,
            shadow: None,
        }
    })
    .await?;

    let mut tx = pool.begin().await?;
    let letter = db::dead_letters::lock(&mut tx, id)
        .await?
        .ok_or(RedriveError::NotFound(id))?;
    if letter.resolved_at.is_some() {
        return Err(RedriveError::AlreadyResolved(id));
    }
    let cx = BatchContext {
        group_id: letter.group_id.clone(),
        topic: letter.topic.clone(),
        plugin: plugin.name().to_string(),
        plugin_version: plugin.version().to_string(),
        status_topic: status_topic.map(str::to_string),
        dead_letter_topic: None,
        shadow_version: None,
    };
    let mode = Mode::Redrive {
        attempt: letter.redrive_count + 1,
    };
    let plan = apply::decide_and_write(&mut tx, &cx, mode, &[&handled]).await?;
    let decision = plan
        .decisions
        .first()
        .cloned()
        .unwrap_or(Decision::Duplicate);
    let (_, reason) = decision.kind_and_reason();
    let reason = reason.map(str::to_string);
    let resolved = !matches!(decision, Decision::DeadLetter { .. });
    db::dead_letters::record_redrive(&mut tx, id, decision.outcome(), reason.as_deref(), resolved)
        .await?;
    tx.commit().await?;
    tracing::info!(
        dead_letter = id,
        outcome = decision.outcome(),
        reason = reason.as_deref().unwrap_or(""),
        "dead letter redriven"
    );
    Ok(Redriven {
        outcome: decision.outcome(),
        reason,
        plugin: cx.plugin,
        plugin_version: cx.plugin_version,
    })
}
