//! Sluice runs business logic on a Kafka stream as sandboxed, hot-swappable WebAssembly
//! plugins. Two flows:
//!
//! - **ingest** ([`ingest`]): a consumer-group member polls a batch from Kafka, the topic's
//!   plugin ([`runtime`]) turns each message into mutations, and one Postgres transaction
//!   ([`ingest::apply`]) applies them together with each message's outcome and the consumer
//!   position; only then is the offset copied to Kafka.
//! - **orders** ([`http`], [`outbox`]): `POST /orders` writes the order and its event in one
//!   transaction; the outbox relay publishes the event and deletes it once acknowledged.
//!
//! [`app`] wires both; [`dev`] embeds a broker and a throwaway PostgreSQL for `sluice dev`.

pub mod app;
pub mod backoff;
pub mod bench;
pub mod config;
pub mod control;
pub mod db;
pub mod dev;
pub mod domain;
pub mod http;
pub mod ingest;
pub mod kafka;
pub mod order_status;
pub mod outbox;
pub mod runtime;
pub mod shutdown;
pub mod telemetry;

pub use app::Application;
