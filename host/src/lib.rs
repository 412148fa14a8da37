//! Sluice runs business logic on a Kafka stream as sandboxed, hot-swappable WebAssembly
//! plugins. Two flows:
//!
//! - **ingest** ([`ingest`]): a consumer-group member polls a batch from Kafka, the topic's
//!   plugin ([`runtime`]) turns each record into mutations (in parallel), a pure planning step
//!   ([`ingest::plan`]) decides each record's outcome, and one Postgres transaction
//!   ([`ingest::apply`]) writes the mutations, outcomes, dead letters, status events and the
//!   consumer position; only then is the offset copied to Kafka.
//! - **orders** ([`http`], `outbox`, `order_status`): `POST /orders` writes the order and its
//!   event in one statement; the outbox relay publishes the event and deletes it once
//!   acknowledged; the catalog side's verdicts come back on the status topic and update the
//!   order.
//!
//! Around them: [`Application`] (`app`) wires both flows and supervises their tasks;
//! [`control`] installs, rolls back and follows plugin versions fleet-wide; [`db`] holds the
//! SQL; [`domain`] the vocabulary both flows share (no I/O); [`kafka`] the Kafka client
//! configuration and records; [`config`] the settings; `backoff` the one retry schedule;
//! [`dev`] the embedded broker and throwaway PostgreSQL of `sluice dev`; [`bench`]
//! `sluice bench`; [`kit`] the plugin author's `sluice plugin …` commands; [`metrics`] what `GET /metrics` serves; [`shutdown`] and [`telemetry`] signals and logging; [`trace`] the trace context an order carries, and [`otlp`] its spans' export.

mod app;
mod backoff;
pub mod bench;
pub mod config;
pub mod control;
pub mod db;
pub mod dev;
pub mod domain;
pub mod http;
pub mod ingest;
pub mod kafka;
pub mod kit;
pub mod metrics;
mod order_status;
pub mod otlp;
mod outbox;
pub mod runtime;
pub mod shutdown;
pub mod telemetry;
pub mod trace;

pub use app::Application;
