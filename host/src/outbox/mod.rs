//! Orders flow, second half: the relay publishes committed outbox rows to Kafka.

pub mod relay;

pub use relay::{Relay, create_producer};
