//! Redrive: run a dead letter through the current plugin again and apply the outcome in one
//! transaction, as ingest would have.

use std::collections::BTreeSet;
use std::sync::Arc;

use sqlx::PgPool;

use super::apply::{Decision, apply_in_memory, status_record};
use crate::db;
use crate::domain::{Mutation, StatusEvent};
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
    let message = bindings::Message {
        topic: letter.topic.clone(),
        partition: letter.partition,
        offset: letter.offset,
        key: letter.key.clone(),
        payload: letter.payload.clone().unwrap_or_default(),
        headers: letter
            .headers
            .iter()
            .map(|h| bindings::Header {
                key: h.key.clone(),
                value: h.value.clone(),
            })
            .collect(),
        timestamp_ms: None,
    };
    let runner = Arc::clone(&plugin);
    // Plugin calls are CPU work bounded by the sandbox deadline: off the async workers.
    let result = tokio::task::spawn_blocking(move || runner.handle(&message)).await?;

    let mut tx = pool.begin().await?;
    let letter = db::dead_letters::lock(&mut tx, id)
        .await?
        .ok_or(RedriveError::NotFound(id))?;
    if letter.resolved_at.is_some() {
        return Err(RedriveError::AlreadyResolved(id));
    }
    let decision = match result {
        Err(error) => Decision::from_error(&error),
        Ok(mutations) => {
            let touched: Vec<String> = mutations
                .iter()
                .map(|Mutation::StockAdjustment { product_id, .. }| product_id.to_string())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut stock = db::catalog::lock_stock(&mut tx, &touched).await?;
            match apply_in_memory(&mut stock, &mutations) {
                Ok(changed) => {
                    let values: Vec<i64> = changed
                        .iter()
                        .filter_map(|id| stock.get(id).copied())
                        .collect();
                    db::catalog::set_stock(&mut tx, &changed, &values).await?;
                    Decision::Applied
                }
                Err(refusal) => refusal,
            }
        }
    };
    let (outcome, reason, resolved) = match &decision {
        Decision::Applied => ("APPLIED", None, true),
        Decision::Rejected { reason, .. } => ("REJECTED", Some(reason.clone()), true),
        Decision::DeadLetter { reason, .. } => ("DEAD_LETTER", Some(reason.clone()), false),
        Decision::Duplicate => ("DUPLICATE", None, true),
    };
    db::dead_letters::record_redrive(&mut tx, id, outcome, reason.as_deref(), resolved).await?;
    if let (Some(topic), Some(event_id), true) = (status_topic, &letter.event_id, resolved) {
        let event = StatusEvent {
            order_id: event_id.clone(),
            status: decision.order_status(),
            reason: reason.clone(),
            error_kind: None,
            plugin: plugin.name().to_string(),
            plugin_version: plugin.version().to_string(),
            topic: letter.topic.clone(),
            partition: letter.partition,
            offset: letter.offset,
            redriven: true,
        };
        let dedupe_id = format!("{event_id}/redrive/{}", letter.redrive_count + 1);
        let record = status_record(topic, &event, dedupe_id);
        db::outbox::enqueue(&mut tx, &[record]).await?;
    }
    tx.commit().await?;
    tracing::info!(
        dead_letter = id,
        outcome,
        reason = reason.as_deref().unwrap_or(""),
        "dead letter redriven"
    );
    Ok(Redriven {
        outcome,
        reason,
        plugin: plugin.name().to_string(),
        plugin_version: plugin.version().to_string(),
    })
}
