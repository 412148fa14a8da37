//! The host's integration tests, one module per scenario, against a real PostgreSQL and a real
//! Kafka-protocol broker (see `common`). One test binary rather than one per file: each binary
//! links wasmtime, librdkafka and the whole host, so one saves CI a dozen links. Run one
//! scenario with a nextest filter, e.g. `scripts/test -E 'test(/^crash::/)'`.

mod common;

mod bad_input;
mod broker_faults;
mod contract;
mod crash;
mod database_restart;
mod duplicates;
mod hardening;
mod languages;
mod layers;
mod membership;
mod order_writes;
mod outbox_crash;
mod plugin_kit;
mod plugin_sandbox;
mod plugin_swap;
mod poison;
mod seed_walkthrough;
mod serve_process;
mod start_order;
mod tables;
mod tls;
