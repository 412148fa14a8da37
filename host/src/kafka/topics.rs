//! Which of the consumed topics exist: the brokers are asked every half second while one is
//! missing (every few seconds once all exist), so that a group member subscribes to a topic as
//! soon as it exists, whatever was started first, and readiness can say what a flow waits for.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{KafkaSettings, Logged, consumer_config};

/// How often the brokers are asked while a watched topic is missing: a topic is consumed
/// within this (and a group join) of its creation.
pub const WHILE_MISSING: Duration = Duration::from_millis(500);
/// How often once every watched topic exists (partitions added, the brokers still answering).
const ALL_THERE: Duration = Duration::from_secs(5);
/// The longest a metadata request may take.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the brokers last said about the watched topics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Whether the brokers answered the last time they were asked.
    pub brokers: Brokers,
    /// Each watched topic that exists, with its partition count (from the last answer).
    pub partitions: BTreeMap<String, usize>,
}

/// Whether the brokers answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Brokers {
    /// Not asked yet.
    #[default]
    Unknown,
    Answering,
    /// The last request failed, with why.
    Silent(String),
}

impl Seen {
    /// The topics of `wanted` that exist, in the order of `wanted`.
    pub fn existing<'a>(&self, wanted: &'a [String]) -> Vec<&'a str> {
        wanted
            .iter()
            .filter(|t| self.partitions.contains_key(*t))
            .map(String::as_str)
            .collect()
    }

    /// The topics of `wanted` that do not exist (as far as the brokers said).
    pub fn missing<'a>(&self, wanted: &'a [String]) -> Vec<&'a str> {
        wanted
            .iter()
            .filter(|t| !self.partitions.contains_key(*t))
            .map(String::as_str)
            .collect()
    }
}

/// Asks the brokers about a fixed set of topics; flows read the answers from `seen()`.
pub struct TopicWatch {
    topics: Vec<String>,
    client: Arc<BaseConsumer<Logged>>,
    sender: watch::Sender<Seen>,
}

impl TopicWatch {
    /// A watch of `topics` (it asks nothing until it runs).
    pub fn new(kafka: &KafkaSettings, topics: Vec<String>) -> anyhow::Result<Self> {
        // A consumer that joins no group: metadata requests only, which never create a topic
        // (a consumer's `allow.auto.create.topics` is off).
        let group = format!("{}.topic-watch", kafka.group_id);
        let client: BaseConsumer<Logged> = consumer_config(kafka, &group, "sluice-topic-watch")
            .create_with_context(Logged)
            .context("creating the topic watch's Kafka client")?;
        Ok(Self {
            topics,
            client: Arc::new(client),
            sender: watch::Sender::new(Seen::default()),
        })
    }

    /// The latest answers, updated as they change.
    pub fn seen(&self) -> watch::Receiver<Seen> {
        self.sender.subscribe()
    }

    /// Ask until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            let (client, topics) = (Arc::clone(&self.client), self.topics.clone());
            let asked = tokio::task::spawn_blocking(move || ask(&client, &topics))
                .await
                .context("asking the brokers about topics")?;
            let all_there = asked.partitions.len() == self.topics.len();
            self.sender.send_if_modified(|seen| {
                let mut next = asked;
                if matches!(next.brokers, Brokers::Silent(_)) {
                    // Silent brokers say nothing about topics: keep what they said last.
                    next.partitions = std::mem::take(&mut seen.partitions);
                }
                let changed = *seen != next;
                *seen = next;
                changed
            });
            let pause = if all_there { ALL_THERE } else { WHILE_MISSING };
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// One round of questions: each topic's partition count, or why the brokers did not answer.
fn ask(client: &BaseConsumer<Logged>, topics: &[String]) -> Seen {
    let mut partitions = BTreeMap::new();
    for topic in topics {
        match client.fetch_metadata(Some(topic), ASK_TIMEOUT) {
            Ok(metadata) => {
                let count = metadata
                    .topics()
                    .iter()
                    .filter(|t| t.name() == topic)
                    // A topic being created answers "leader not available" for a moment, with
                    // its partitions: it exists.
                    .filter(|t| {
                        t.error().is_none_or(|e| {
                            RDKafkaErrorCode::from(e) == RDKafkaErrorCode::LeaderNotAvailable
                        })
                    })
                    .map(|t| t.partitions().len())
                    .sum::<usize>();
                if count > 0 {
                    partitions.insert(topic.clone(), count);
                }
            }
            Err(e) => {
                return Seen {
                    brokers: Brokers::Silent(e.to_string()),
                    partitions,
                };
            }
        }
    }
    Seen {
        brokers: Brokers::Answering,
        partitions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_and_missing_keep_the_order_asked_for() {
        let seen = Seen {
            brokers: Brokers::Answering,
            partitions: BTreeMap::from([("b".to_string(), 4), ("c".to_string(), 1)]),
        };
        let wanted = ["c", "a", "b"].map(String::from);
        assert_eq!(seen.existing(&wanted), ["c", "b"]);
        assert_eq!(seen.missing(&wanted), ["a"]);
    }
}
