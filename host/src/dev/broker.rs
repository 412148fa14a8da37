//! An embedded Kafka-protocol broker: librdkafka's mock cluster, listening on loopback TCP,
//! so that other processes (and `sluice serve`) can connect to it.

use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, DefaultProducerContext, Producer as _};

/// The consumer groups' session timeout on the embedded broker (a Kafka broker's
/// `group.consumer.session.timeout.ms`, 45 s by default): how long the partitions of a member
/// that vanished without leaving (kill -9) wait for it, and how long a static member has to
/// come back.
pub const GROUP_SESSION_TIMEOUT_MS: i32 = 10_000;
/// How often its members heartbeat (a Kafka broker's 5 s): a change of members reaches them
/// within this.
pub const GROUP_HEARTBEAT_INTERVAL_MS: i32 = 500;

/// ConsumerGroupHeartbeat's API key (KIP-848).
const CONSUMER_GROUP_HEARTBEAT: i16 = 68;

/// A mock cluster that lives as long as this value.
pub struct EmbeddedKafka {
    /// The client that owns the mock cluster; dropping it stops the brokers.
    owner: BaseProducer,
    bootstrap_servers: String,
}

impl EmbeddedKafka {
    pub fn start(brokers: i32) -> anyhow::Result<Self> {
        let owner: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", brokers.to_string())
            .set("client.id", "sluice-embedded-broker")
            .create()
            .context("starting the embedded Kafka broker")?;
        let bootstrap_servers = owner
            .client()
            .mock_cluster()
            .context("the embedded broker did not start")?
            .bootstrap_servers();
        let kafka = Self {
            owner,
            bootstrap_servers,
        };
        // The mock cluster delays a group's first rebalance by 3 s, like a real broker's
        // group.initial.rebalance.delay.ms; a dev broker has no reason to wait.
        // SAFETY: `cluster` is the live mock cluster (see `with_cluster`).
        kafka.with_cluster(|cluster| unsafe {
            rdkafka_sys::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0);
        });
        kafka.set_group_timeouts(GROUP_SESSION_TIMEOUT_MS, GROUP_HEARTBEAT_INTERVAL_MS);
        Ok(kafka)
    }

    /// The consumer group protocol's session timeout and heartbeat interval, for groups
    /// created from now on (a Kafka broker's `group.consumer.session.timeout.ms` and
    /// `group.consumer.heartbeat.interval.ms`).
    pub fn set_group_timeouts(&self, session_ms: i32, heartbeat_ms: i32) {
        // SAFETY: `cluster` is the live mock cluster (see `with_cluster`).
        self.with_cluster(|cluster| unsafe {
            rdkafka_sys::rd_kafka_mock_set_group_consumer_session_timeout_ms(cluster, session_ms);
            rdkafka_sys::rd_kafka_mock_set_group_consumer_heartbeat_interval_ms(
                cluster,
                heartbeat_ms,
            );
        });
    }

    /// Answer the next `count` consumer-group heartbeats with `error` (for tests of what a
    /// member does when the broker refuses it).
    pub fn fail_heartbeats(&self, error: rdkafka::types::RDKafkaRespErr, count: usize) {
        let errors = vec![error; count];
        // SAFETY: as above; `errors` outlives the call, which copies it.
        self.with_cluster(|cluster| unsafe {
            rdkafka_sys::rd_kafka_mock_push_request_errors_array(
                cluster,
                CONSUMER_GROUP_HEARTBEAT,
                errors.len(),
                errors.as_ptr(),
            );
        });
    }

    /// Make the broker deny the consumer group protocol, as a Kafka broker before 4.0 does
    /// (for tests of the fallback).
    pub fn deny_consumer_group_protocol(&self) {
        // SAFETY: as above.
        self.with_cluster(|cluster| unsafe {
            rdkafka_sys::rd_kafka_mock_set_apiversion(cluster, CONSUMER_GROUP_HEARTBEAT, -1, -1);
        });
    }

    /// Run `f` on the mock cluster's native handle, which lives as long as `owner`.
    fn with_cluster(&self, f: impl FnOnce(*mut rdkafka_sys::rd_kafka_mock_cluster_t)) {
        // SAFETY: `owner` is the live client the mock cluster was created with.
        let cluster =
            unsafe { rdkafka_sys::rd_kafka_handle_mock_cluster(self.owner.client().native_ptr()) };
        if !cluster.is_null() {
            f(cluster);
        }
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// The mock cluster, for creating topics and injecting faults.
    pub fn cluster(&self) -> anyhow::Result<MockCluster<'_, DefaultProducerContext>> {
        self.owner
            .client()
            .mock_cluster()
            .context("the embedded broker is gone")
    }

    /// The mock cluster does not implement CreateTopics: topics are made here.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        self.cluster()?
            .create_topic(topic, partitions, 1)
            .with_context(|| format!("creating topic {topic}"))
    }
}
