//! Sluice runs business logic on a Kafka stream as sandboxed, hot-swappable WebAssembly
//! plugins.
//!
//! # The two flows, and where each step lives
//!
//! **ingest** — Kafka record → plugin → mutations → one PostgreSQL transaction → offset:
//! - [`ingest::consumer`]: the group member; polls a batch, resumes from stored positions;
//! - [`runtime`]: the WASM sandbox; the topic's plugin turns each record into mutations;
//! - [`ingest::plan`]: the decision, pure: each record's outcome, the stock, the rows;
//! - [`ingest::apply`]: the one transaction (mutations, outcomes, dead letters, verdicts,
//!   positions); [`ingest::redrive`] takes a dead letter through the same two steps.
//!
//! **orders** — HTTP request → order + outbox row → relay → Kafka event → verdict:
//! - [`http`]: `POST /orders` writes the order and its event in one transaction (the orders
//!   of concurrent requests in one statement);
//! - [`outbox::relay`]: publishes committed rows, deletes them once acknowledged;
//! - [`outbox::status`]: the catalog side's verdicts update the orders.
//!
//! Around them: [`cli`] the command line; [`app`](Application) wires both flows and
//! supervises their tasks; [`control`] installs, rolls back and follows plugin versions
//! fleet-wide; [`dev`], [`bench`] and [`kit`] are the `sluice dev`, `sluice bench` and
//! `sluice plugin …` commands.
//!
//! # Layers
//!
//! Imports point down: a module uses only modules on lines below its own, never one above it
//! or beside it (`tests/integration/layers.rs` holds the code to this picture).
//!
//! ```text
//! cli                          the command line, the --config file, one dispatch
//! bench                        sluice bench
//! dev  kit                     sluice dev (embedded broker, throwaway PostgreSQL); sluice plugin
//! app                          wires the flows, supervises their tasks
//! config                       flags → Settings
//! http                         the API: orders in, the read side, admin
//! control  ingest  outbox      plugin versions fleet-wide; ingest; relay and verdicts
//! runtime                      the WASM sandbox
//! kafka                        client configuration, rdkafka ⇄ domain records
//! db                           SQL
//! otlp                         span export
//! trace                        W3C trace context
//! domain                       vocabulary: ids, orders, mutations, records, routes
//! backoff  metrics  shutdown  telemetry  waiting
//! ```

mod app;
pub mod backoff;
pub mod bench;
pub mod cli;
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
pub mod otlp;
pub mod outbox;
pub mod runtime;
pub mod shutdown;
pub mod telemetry;
pub mod trace;
pub mod waiting;

pub use app::Application;
