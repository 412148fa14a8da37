//! Redrive: run a dead letter through the current plugin again and apply the outcome in one
//! transaction, decided and written as ingest would.

use std::sync::Arc;

use sqlx::PgPool;

use super::apply;
use super::keyed::Caller;
use super::plan::{BatchContext, Decision, Mode};
use crate::db;
use crate::domain::tables::Tables;
use crate::domain::{Allowances, Outcome};
use crate::runtime::Plugin;

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
}

/// What a redrive did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redriven {
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub plugin: String,
    pub plugin_version: String,
}

/// Redrive dead letter `id` through `plugin_for(its topic)`, the version active now, with what
/// its route allows (on a route that keeps state, with its key's state now).
pub async fn redrive(
    pool: &PgPool,
    plugin_for: impl Fn(&str) -> Option<(Arc<Plugin>, Allowances)>,
    (status_topic, tables): (Option<&str>, Arc<Tables>),
    id: i64,
) -> Result<Redriven, RedriveError> {
    let letter = db::dead_letters::get(pool, id)
        .await?
        .ok_or(RedriveError::NotFound(id))?;
    if letter.resolved_at.is_some() {
        return Err(RedriveError::AlreadyResolved(id));
    }
    let (plugin, mut allowed) =
        plugin_for(&letter.topic).ok_or_else(|| RedriveError::NoPlugin(letter.topic.clone()))?;
    tables.grant(&mut allowed.tables);
    let record = letter.record();
    let state = match (&record.key, allowed.state) {
        (Some(key), true) => db::state::load(pool, plugin.name(), &[key.as_slice()])
            .await?
            .remove(key.as_slice()),
        _ => None,
    };
    let caller = Arc::new(Caller {
        plugin: Arc::clone(&plugin),
        shadow: None,
        allowed,
    });
    // Plugin calls are CPU work bounded by the sandbox deadline: off the async workers.
    let mut handled = caller.call_blocking(record, state).await;
    // The dead letter's event id, as ingest read it.
    handled.event_id = letter.event_id.clone();

    let mut tx = pool.begin().await?;
    let letter = db::dead_letters::lock(&mut tx, id)
        .await?
        .ok_or(RedriveError::NotFound(id))?;
    if letter.resolved_at.is_some() {
        return Err(RedriveError::AlreadyResolved(id));
    }
    let batch = BatchContext {
        group_id: letter.group_id.clone(),
        topic: letter.topic.clone(),
        plugin: plugin.name().to_string(),
        plugin_version: plugin.version().to_string(),
        status_topic: status_topic.map(str::to_string),
        dead_letter_topic: None,
        shadow_version: None,
        tables,
    };
    let mode = Mode::Redrive {
        attempt: letter.redrive_count + 1,
    };
    let keyed = caller.allowed.state.then_some(&caller);
    let plan = apply::decide_and_write(&mut tx, &batch, mode, &[&handled], keyed).await?;
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
        outcome = %decision.outcome(),
        reason = reason.as_deref().unwrap_or(""),
        "dead letter redriven"
    );
    Ok(Redriven {
        outcome: decision.outcome(),
        reason,
        plugin: batch.plugin,
        plugin_version: batch.plugin_version,
    })
}
