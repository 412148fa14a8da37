//! Orders flow, second half: the relay publishes committed outbox rows to Kafka, and the
//! catalog side's verdicts come back on the status topic to update the orders.

pub mod relay;
pub mod status;

pub use relay::{Relay, RelaySettings, create_producer};
