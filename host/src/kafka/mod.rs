//! Kafka plumbing both flows share: the settings, client configurations, topic names, and the
//! conversion of rdkafka's messages and headers to and from the domain's records.

pub mod membership;
pub mod topics;

use std::fmt;
use std::str::FromStr;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, Headers as _, OwnedHeaders};

use crate::domain::{Consumed, Header, Routes};

#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub group_id: String,
    pub topic: String,
    pub status_topic: String,
    pub dead_letter_suffix: String,
    pub orders_group_id: String,
    /// topic → plugin name; the ingest flow consumes these topics.
    pub routes: Routes,
    /// librdkafka properties applied last, over Sluice's own defaults.
    pub options: Vec<(String, String)>,
    /// How the consumer groups (ingest, order status) share partitions among members.
    pub group_protocol: GroupProtocol,
    /// A member's stable name in its groups (static membership): restarted within the session
    /// timeout, it gets its partitions back without a reassignment.
    pub instance_id: Option<String>,
}

/// How the members of a group share its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupProtocol {
    /// `consumer` where the broker has it, `classic` otherwise (found out once at start).
    #[default]
    Auto,
    /// Kafka's consumer group protocol (KIP-848, Kafka 4.0): the broker assigns, and a change
    /// moves only the partitions that change owner, with no group-wide barrier.
    Consumer,
    /// The classic protocol with the cooperative-sticky assignor (KIP-429): incremental too,
    /// but each change takes a group-wide join round.
    Classic,
}

impl GroupProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Consumer => "consumer",
            Self::Classic => "classic",
        }
    }
}

impl fmt::Display for GroupProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GroupProtocol {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.trim() {
            "auto" => Ok(Self::Auto),
            "consumer" => Ok(Self::Consumer),
            "classic" => Ok(Self::Classic),
            other => Err(format!(
                "unknown group protocol `{other}`: auto, consumer or classic"
            )),
        }
    }
}

/// librdkafka properties that only the classic protocol takes (the consumer protocol's
/// equivalents are broker settings); one of them among the options selects `classic` under
/// `auto`.
pub const CLASSIC_ONLY_OPTIONS: [&str; 4] = [
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "partition.assignment.strategy",
    "group.protocol.type",
];

impl KafkaSettings {
    /// Where poison records of `topic` are copied: `topic` + the dead-letter suffix.
    pub fn dead_letter_topic(&self, topic: &str) -> String {
        format!("{topic}{}", self.dead_letter_suffix)
    }

    /// Every topic Sluice uses: the order and status topics, each routed topic, its
    /// dead-letter topic and the topics its plugin may emit to by name.
    pub fn topics(&self) -> Vec<String> {
        let mut topics = vec![self.topic.clone(), self.status_topic.clone()];
        for topic in self.routes.topics() {
            topics.extend([topic.to_string(), self.dead_letter_topic(topic)]);
            // The topics a route may emit to by name (prefixes name none).
            let allowed = self.routes.allowances(topic).emit_to;
            topics.extend(allowed.into_iter().filter(|t| !t.ends_with('*')));
        }
        topics.sort();
        topics.dedup();
        topics
    }
}

/// The status topic that goes with `topic` where none is configured (tests, the benchmark).
pub fn status_topic_for(topic: &str) -> String {
    format!("{topic}.status")
}

/// How long a fetch may wait at the broker for records: librdkafka's 500 ms would be paid per
/// consumer hop at low rates by brokers that answer only when the wait runs out (the embedded
/// one does; a Kafka broker answers as soon as a record arrives). Under a backlog every fetch
/// returns full at once, so the short wait costs nothing there; an idle consumer asks each
/// broker up to 100 times a second (raise it with `-X fetch.wait.max.ms=…`).
pub const FETCH_WAIT_MAX_MS: &str = "10";

/// A consumer of one of Sluice's groups. Offsets are never committed automatically; where an
/// offset is stored is the caller's decision.
pub fn consumer_config(kafka: &KafkaSettings, group_id: &str, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", group_id)
        .set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS);
    for (key, value) in &kafka.options {
        config.set(key, value);
    }
    config
}

/// A member of one of Sluice's consumer groups: `consumer_config` with the group protocol
/// (`Auto` is resolved before: see `ingest::consumer::resolve_group_protocol`) and the
/// instance id. Under `classic` the assignor is cooperative-sticky unless the options name one.
pub fn member_config(kafka: &KafkaSettings, group_id: &str, client_id: &str) -> ClientConfig {
    let mut config = consumer_config(kafka, group_id, client_id);
    if config.get("group.protocol").is_none() {
        let protocol = match kafka.group_protocol {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Auto | GroupProtocol::Consumer => "consumer",
        };
        config.set("group.protocol", protocol);
    }
    if config.get("group.protocol") == Some("classic")
        && config.get("partition.assignment.strategy").is_none()
    {
        config.set("partition.assignment.strategy", "cooperative-sticky");
    }
    if let Some(id) = &kafka.instance_id {
        config.set("group.instance.id", id);
    }
    config
}

/// A producer: idempotent, batching for a few milliseconds.
pub fn producer_config(kafka: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("client.id", client_id)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    for (key, value) in &kafka.options {
        config.set(key, value);
    }
    config
}

/// A client's fatal error (librdkafka stops it for good), with what to do about it.
pub fn fatal_error<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
) -> Option<String> {
    let (code, reason) = client.fatal_error()?;
    let hint = match code {
        RDKafkaErrorCode::UnsupportedFeature | RDKafkaErrorCode::UnsupportedVersion => {
            " (the broker lacks what the group protocol needs: try --group-protocol classic)"
        }
        RDKafkaErrorCode::UnreleasedInstanceId | RDKafkaErrorCode::FencedInstanceId => {
            " (another process holds this --instance-id, or held it and was killed: the broker \
             frees it after the group's session timeout)"
        }
        _ => "",
    };
    Some(format!("{reason}{hint}"))
}

/// A client's error callback, for every client of Sluice's: errors that librdkafka recovers
/// from by itself while Sluice waits (a broker that does not answer, a topic not there yet)
/// are warnings (readiness says what a flow waits for); the others are errors.
pub fn log_client_error(error: &KafkaError, reason: &str) {
    use RDKafkaErrorCode::*;
    let recovers = matches!(
        error.rdkafka_error_code(),
        Some(
            BrokerTransportFailure
                | AllBrokersDown
                | Resolve
                | BrokerNotAvailable
                | UnknownTopicOrPartition
                | UnknownTopic
                | UnknownPartition
                | OperationTimedOut
                | RequestTimedOut
                | NetworkException
                | CoordinatorNotAvailable
                | NotCoordinator
                | LeaderNotAvailable
                | NotLeaderForPartition
        )
    );
    if recovers {
        tracing::warn!(target: "librdkafka", "{error}: {reason}");
    } else {
        tracing::error!(target: "librdkafka", "{error}: {reason}");
    }
}

/// A client's log callback, for every client of Sluice's: librdkafka's own levels, except that
/// a failed connection (facility `FAIL`, which it logs as an error and retries) is a warning.
pub fn log_client_line(level: RDKafkaLogLevel, facility: &str, line: &str) {
    use RDKafkaLogLevel::*;
    match level {
        Emerg | Alert | Critical | Error if facility != "FAIL" => {
            tracing::error!(target: "librdkafka", "{facility} {line}")
        }
        Emerg | Alert | Critical | Error | Warning => {
            tracing::warn!(target: "librdkafka", "{facility} {line}")
        }
        Notice | Info => tracing::info!(target: "librdkafka", "{facility} {line}"),
        Debug => tracing::debug!(target: "librdkafka", "{facility} {line}"),
    }
}

/// The context of a client that needs nothing but Sluice's logging of its errors.
#[derive(Debug, Default, Clone, Copy)]
pub struct Logged;

impl ClientContext for Logged {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, line: &str) {
        log_client_line(level, facility, line);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(&error, reason);
    }
}

impl ConsumerContext for Logged {}

/// The headers of a consumed message.
pub fn headers_of(message: &impl rdkafka::Message) -> Vec<Header> {
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| Header {
                    key: h.key.to_string(),
                    value: h.value.map(<[u8]>::to_vec),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Headers for a record to produce.
pub fn owned_headers(headers: &[Header]) -> OwnedHeaders {
    headers.iter().fold(
        OwnedHeaders::new_with_capacity(headers.len()),
        |owned, h| {
            owned.insert(KafkaHeader {
                key: &h.key,
                value: h.value.as_deref(),
            })
        },
    )
}

/// A consumed message as Sluice keeps it: for the plugin, the dead-letter table and the DLT.
pub fn consumed(message: &impl rdkafka::Message) -> Consumed {
    Consumed {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec),
        headers: headers_of(message),
        timestamp_ms: message.timestamp().to_millis(),
    }
}
