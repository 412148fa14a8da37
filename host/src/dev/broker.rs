//! An embedded Kafka-protocol broker: librdkafka's mock cluster, listening on loopback TCP,
//! so that other processes (and `sluice serve`) can connect to it.

use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, DefaultProducerContext, Producer as _};

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
        // The mock cluster delays a group's first rebalance by 3 s, like a real broker's
        // group.initial.rebalance.delay.ms; a dev broker has no reason to wait.
        // SAFETY: the handle is a live client created above with a mock cluster attached.
        unsafe {
            let cluster = rdkafka_sys::rd_kafka_handle_mock_cluster(owner.client().native_ptr());
            if !cluster.is_null() {
                rdkafka_sys::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0);
            }
        }
        Ok(Self {
            owner,
            bootstrap_servers,
        })
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
