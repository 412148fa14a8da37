//! Group commit for `POST /orders`: the orders of concurrent requests reach PostgreSQL in one
//! statement and one transaction, their events in one outbox row.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

use crate::db;
use crate::db::orders::OrderRow;
use crate::domain::Record;

/// Most orders in one statement.
const MAX_BATCH: usize = 256;
/// Statements in flight at once: while they run, the next requests queue and go together.
const IN_FLIGHT: usize = 1;

/// Why an order was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The statement failed: the error is shared by the orders of a group when the database
    /// could not be used at all (it is down, the pool timed out), and the order's own otherwise.
    #[error(transparent)]
    Database(Arc<sqlx::Error>),
    #[error("the order writer has stopped")]
    Stopped,
}

type Written = Result<(), Arc<sqlx::Error>>;

struct Pending {
    row: OrderRow,
    event: Record,
    done: oneshot::Sender<Written>,
}

/// Hands orders to the writer task. Cloned into every request's state.
#[derive(Clone)]
pub struct OrderWriter {
    queue: mpsc::Sender<Pending>,
}

impl OrderWriter {
    /// Starts the writer task; it ends when the last `OrderWriter` is dropped, after writing
    /// what was queued. Each commit wakes the relay.
    pub fn start(pool: PgPool, relay_wake: Arc<Notify>) -> Self {
        let (queue, requests) = mpsc::channel(MAX_BATCH * 8);
        tokio::spawn(run(pool, requests, relay_wake));
        Self { queue }
    }

    /// Writes the order and queues its event; returns once both are committed.
    pub async fn write(&self, row: OrderRow, event: Record) -> Result<(), WriteError> {
        let (done, written) = oneshot::channel();
        self.queue
            .send(Pending { row, event, done })
            .await
            .map_err(|_| WriteError::Stopped)?;
        written
            .await
            .map_err(|_| WriteError::Stopped)?
            .map_err(WriteError::Database)
    }
}

async fn run(pool: PgPool, mut requests: mpsc::Receiver<Pending>, relay_wake: Arc<Notify>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Closed only when the semaphore is dropped, which happens after this loop.
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            break;
        };
        // What arrived while the earlier statements ran goes in this one.
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        let batch = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        let (pool, relay_wake) = (pool.clone(), Arc::clone(&relay_wake));
        tokio::spawn(async move {
            write(&pool, batch).await;
            relay_wake.notify_one();
            drop(permit);
        });
    }
    // Let the last statements finish before the pool may close.
    let _ = in_flight.acquire_many(IN_FLIGHT as u32).await;
}

/// One statement for the batch. If the database refused it (a constraint, a value), each order
/// alone, so that one order's error is that order's answer and the others are written; if the
/// database could not be used, every order of the batch gets that answer at once (trying them
/// one by one would hold the next batches for as many timeouts).
async fn write(pool: &PgPool, batch: Vec<Pending>) {
    let orders: Vec<(&OrderRow, &Record)> = batch.iter().map(|p| (&p.row, &p.event)).collect();
    let result = db::orders::insert_with_events(pool, &orders).await;
    drop(orders);
    let answer = |batch: Vec<Pending>, result: Written| {
        for pending in batch {
            // The request may have gone (client disconnected): its order stands.
            let _ = pending.done.send(result.clone());
        }
    };
    match result {
        Ok(()) => answer(batch, Ok(())),
        Err(error @ sqlx::Error::Database(_)) if batch.len() > 1 => {
            tracing::debug!(%error, orders = batch.len(), "batched order insert refused; writing one by one");
            for pending in batch {
                let result =
                    db::orders::insert_with_events(pool, &[(&pending.row, &pending.event)]).await;
                let _ = pending.done.send(result.map_err(Arc::new));
            }
        }
        Err(error) => answer(batch, Err(Arc::new(error))),
    }
}
