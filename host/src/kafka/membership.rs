//! Joining a consumer group in any start order: wait until one of the member's topics exists,
//! decide the group protocol (once, for both of Sluice's groups), subscribe to the topics that
//! exist, and add the others as they appear.
//!
//! Subscribing only to topics that exist is what makes a late topic work everywhere: a group
//! coordinator assigns a new topic when a member's subscription changes, while a topic created
//! under an unchanged subscription waits for the coordinator to notice (librdkafka's mock
//! cluster never does under the consumer protocol; the classic protocol's client notices at its
//! next metadata refresh, seconds later).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{OnceCell, watch};
use tokio_util::sync::CancellationToken;

use super::topics::{ASK_TIMEOUT, Brokers, Seen, WHILE_MISSING};
use super::{
    CLASSIC_ONLY_OPTIONS, GroupProtocol, KafkaSettings, consumer_config, log_client_error,
    log_client_line,
};
use crate::waiting::{Flow, Wait, Waits};

/// The group protocol of both groups (ingest, order status), decided once: by the first member
/// whose topic exists.
pub struct GroupProtocolChoice {
    kafka: KafkaSettings,
    chosen: OnceCell<GroupProtocol>,
}

impl GroupProtocolChoice {
    pub fn new(kafka: &KafkaSettings) -> Self {
        Self {
            kafka: kafka.clone(),
            chosen: OnceCell::new(),
        }
    }

    /// The protocol: the configured one, or under `auto` what the brokers support, asked once
    /// with `topic` (which exists).
    pub async fn decide(&self, topic: &str) -> GroupProtocol {
        *self
            .chosen
            .get_or_init(|| {
                let (kafka, topic) = (self.kafka.clone(), topic.to_string());
                async move {
                    tokio::task::spawn_blocking(move || resolve_group_protocol(&kafka, &topic))
                        .await
                        .unwrap_or(GroupProtocol::Consumer)
                }
            })
            .await
    }
}

/// Wait until one of `wanted` exists (telling `waits` what `flow` waits for), then decide the
/// group protocol. Returns the member's settings, with the protocol decided; `None` if
/// `shutdown` came first.
pub async fn ready_to_join(
    choice: &GroupProtocolChoice,
    seen: &mut watch::Receiver<Seen>,
    wanted: &[String],
    (waits, flow): (&Waits, Flow),
    shutdown: &CancellationToken,
) -> Option<KafkaSettings> {
    let first = loop {
        let now = seen.borrow_and_update().clone();
        if let Some(topic) = now.existing(wanted).first() {
            break topic.to_string();
        }
        waits.set(flow, wait_for(&now, wanted, None));
        tokio::select! {
            () = shutdown.cancelled() => return None,
            changed = seen.changed() => changed.ok()?,
        }
    };
    let mut kafka = choice.kafka.clone();
    kafka.group_protocol = choice.decide(&first).await;
    Some(kafka)
}

/// A member's subscription: the topics of `wanted` that exist, kept up as more appear; and
/// what the member waits for, told to `waits`.
pub struct Subscription {
    wanted: Vec<String>,
    subscribed: Vec<String>,
    seen: watch::Receiver<Seen>,
    flow: Flow,
    tended: Option<Instant>,
}

impl Subscription {
    pub fn new(wanted: Vec<String>, seen: watch::Receiver<Seen>, flow: Flow) -> Self {
        Self {
            wanted,
            subscribed: Vec::new(),
            seen,
            flow,
            tended: None,
        }
    }

    /// At most every half second: subscribe `consumer` to the wanted topics that exist (again
    /// when more exist than it is subscribed to), then tell `waits` what it waits for.
    pub fn tend<C: ConsumerContext>(
        &mut self,
        consumer: &impl Consumer<C>,
        waits: &Waits,
    ) -> KafkaResult<()> {
        if self.tended.is_some_and(|at| at.elapsed() < WHILE_MISSING) {
            return Ok(());
        }
        self.tended = Some(Instant::now());
        let seen = self.seen.borrow_and_update().clone();
        let existing: Vec<String> = seen
            .existing(&self.wanted)
            .into_iter()
            .map(str::to_string)
            .collect();
        if !existing.is_empty() && existing != self.subscribed {
            let topics: Vec<&str> = existing.iter().map(String::as_str).collect();
            consumer.subscribe(&topics)?;
            let new: Vec<&str> = topics
                .iter()
                .copied()
                .filter(|t| !self.subscribed.iter().any(|s| s == t))
                .collect();
            if !self.subscribed.is_empty() {
                tracing::info!(flow = self.flow.as_str(), topics = ?new,
                               "topics created after the start: subscribed to them too");
                // The classic protocol's client rejoins for a new topic once its own metadata
                // has it: ask now rather than at its next refresh (minutes away).
                for topic in new {
                    if let Err(e) = consumer.fetch_metadata(Some(topic), ASK_TIMEOUT) {
                        tracing::debug!(topic, error = %e, "asking for a new topic's metadata");
                    }
                }
            }
            self.subscribed = existing;
        }
        let mut owned: BTreeMap<String, usize> = BTreeMap::new();
        if let Ok(assignment) = consumer.assignment() {
            for element in assignment.elements() {
                *owned.entry(element.topic().to_string()).or_default() += 1;
            }
        }
        waits.set(self.flow, wait_for(&seen, &self.wanted, Some(&owned)));
        Ok(())
    }
}

/// What a member of `wanted` waits for, given what the brokers said and the partitions it owns
/// (`None`: it has not joined yet). `None` if nothing.
fn wait_for(
    seen: &Seen,
    wanted: &[String],
    owned: Option<&BTreeMap<String, usize>>,
) -> Option<Wait> {
    match &seen.brokers {
        Brokers::Silent(why) => {
            return Some(Wait::Outage(format!(
                "the Kafka brokers do not answer ({why})"
            )));
        }
        Brokers::Unknown => {
            return Some(Wait::Expected(
                "asking the Kafka brokers which topics exist".into(),
            ));
        }
        Brokers::Answering => {}
    }
    let missing = seen.missing(wanted).join(", ");
    let existing = seen.existing(wanted);
    if existing.is_empty() {
        return Some(Wait::Expected(format!(
            "topic {missing} does not exist yet"
        )));
    }
    match owned {
        None => Some(Wait::Expected(format!(
            "joining the group for {}",
            existing.join(", ")
        ))),
        Some(owned) if existing.iter().any(|t| !owned.contains_key(*t)) => {
            let with_partitions: Vec<String> = existing
                .iter()
                .filter(|t| !owned.contains_key(**t))
                .map(|t| format!("{t} ({} partitions)", seen.partitions[*t]))
                .collect();
            Some(Wait::Expected(format!(
                "no partition of {} assigned to this member (yet: the group coordinator has \
                 not assigned them, or the group has more members than partitions)",
                with_partitions.join(", ")
            )))
        }
        Some(_) if !missing.is_empty() => Some(Wait::Expected(format!(
            "topic {missing} does not exist yet (consuming the others)"
        ))),
        Some(_) => None,
    }
}

/// What `GroupProtocol::Auto` means for these settings and brokers: `classic` if the options
/// set a classic-only property (`session.timeout.ms`, …) or the broker refuses the consumer
/// group protocol, `consumer` otherwise. A throwaway member of a group of its own
/// (`<group>.protocol-probe`, subscribed to `topic`, which exists, reading nothing) asks the
/// group coordinator; it blocks for one heartbeat round trip (`PROBE_TIMEOUT` against a broker
/// without the protocol).
pub fn resolve_group_protocol(settings: &KafkaSettings, topic: &str) -> GroupProtocol {
    if settings.group_protocol != GroupProtocol::Auto {
        return settings.group_protocol;
    }
    if let Some((_, value)) = settings.options.iter().find(|(k, _)| k == "group.protocol") {
        return value.parse().unwrap_or(GroupProtocol::Consumer);
    }
    if let Some((key, _)) = settings
        .options
        .iter()
        .find(|(k, _)| CLASSIC_ONLY_OPTIONS.contains(&k.as_str()))
    {
        tracing::info!(option = %key, "a classic-protocol property is set: the consumer groups \
                       use the classic protocol (cooperative-sticky)");
        return GroupProtocol::Classic;
    }
    match probe_consumer_protocol(settings, topic) {
        Ok(true) => {
            tracing::info!("the consumer groups use the consumer group protocol (KIP-848)");
            GroupProtocol::Consumer
        }
        Ok(false) => {
            tracing::info!(
                "the broker does not support the consumer group protocol (KIP-848): \
                            the consumer groups use the classic protocol (cooperative-sticky)"
            );
            GroupProtocol::Classic
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot tell whether the broker supports \
                           the consumer group protocol; using it (--group-protocol classic if not)");
            GroupProtocol::Consumer
        }
    }
}

/// Long enough for a coordinator lookup and one heartbeat on a loaded broker.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// `Ok(true)` once a consumer-protocol member is in its group, `Ok(false)` if the broker
/// refused the protocol or answers everything but that.
fn probe_consumer_protocol(settings: &KafkaSettings, topic: &str) -> anyhow::Result<bool> {
    let group = format!("{}.protocol-probe", settings.group_id);
    let mut config = consumer_config(settings, &group, "sluice-protocol-probe");
    // It reads nothing: from the end, and only until its first assignment.
    config
        .set("group.protocol", "consumer")
        .set("auto.offset.reset", "latest");
    for key in CLASSIC_ONLY_OPTIONS {
        config.remove(key);
    }
    let probe: BaseConsumer<ProbeContext> = config
        .create_with_context(ProbeContext::default())
        .context("creating the group protocol probe")?;
    probe
        .subscribe(&[topic])
        .context("subscribing the group protocol probe")?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    while Instant::now() < deadline {
        // Its records and errors do not matter; only whether it gets into its group.
        let _ = probe.poll(Duration::from_millis(20));
        if let Some((code, reason)) = probe.client().fatal_error() {
            return match code {
                RDKafkaErrorCode::UnsupportedFeature | RDKafkaErrorCode::UnsupportedVersion => {
                    Ok(false)
                }
                _ => Err(anyhow::anyhow!("the probe failed: {reason}")),
            };
        }
        if probe.context().joined.load(Ordering::Relaxed) {
            return Ok(true);
        }
    }
    // librdkafka reports no error for a broker without the protocol: it finds no coordinator
    // to ask and keeps looking. A broker that answers a metadata request, has the topic, but
    // gave the member no group is such a broker.
    let metadata = probe
        .fetch_metadata(Some(topic), Duration::from_secs(2))
        .context("the brokers do not answer")?;
    let topic_exists = metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
    anyhow::ensure!(topic_exists, "topic {topic} does not exist (any more)");
    Ok(false)
}

/// Notes the probe's first assignment: it is in its group.
#[derive(Default)]
struct ProbeContext {
    joined: AtomicBool,
}

impl ClientContext for ProbeContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, line: &str) {
        log_client_line(level, facility, line);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(&error, reason);
    }
}

impl ConsumerContext for ProbeContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Assign(_)) {
            self.joined.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(brokers: Brokers, topics: &[(&str, usize)]) -> Seen {
        Seen {
            brokers,
            partitions: topics.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
        }
    }

    fn reason(wait: Option<Wait>) -> String {
        wait.map_or_else(|| "-".into(), |w| w.reason().to_string())
    }

    #[test]
    fn a_member_says_what_it_waits_for_first_things_first() {
        let wanted = ["a", "b"].map(String::from);
        let silent = seen(Brokers::Silent("timed out".into()), &[("a", 4)]);
        assert!(matches!(
            wait_for(&silent, &wanted, None),
            Some(Wait::Outage(_))
        ));
        assert_eq!(
            reason(wait_for(&seen(Brokers::Answering, &[]), &wanted, None)),
            "topic a, b does not exist yet"
        );
        let half = seen(Brokers::Answering, &[("b", 4)]);
        assert_eq!(
            reason(wait_for(&half, &wanted, None)),
            "joining the group for b"
        );
        let none_owned = BTreeMap::new();
        assert!(
            reason(wait_for(&half, &wanted, Some(&none_owned)))
                .starts_with("no partition of b (4 partitions) assigned")
        );
        let owned = BTreeMap::from([("b".to_string(), 2)]);
        assert_eq!(
            reason(wait_for(&half, &wanted, Some(&owned))),
            "topic a does not exist yet (consuming the others)"
        );
        let all = seen(Brokers::Answering, &[("a", 1), ("b", 4)]);
        assert!(
            reason(wait_for(&all, &wanted, Some(&owned)))
                .starts_with("no partition of a (1 partitions)")
        );
        let both = BTreeMap::from([("a".to_string(), 1), ("b".to_string(), 2)]);
        assert_eq!(wait_for(&all, &wanted, Some(&both)), None);
    }
}
