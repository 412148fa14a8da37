//! Members join and leave a group under a steady feed without stopping it: one member becomes
//! three and then one again (one started, one restarted with its instance id, one stopped with
//! SIGTERM, one killed with -9), every order is decided exactly once, and the partitions that
//! keep their owner never stop. The figures (time to a first record, gaps, order → decided)
//! are printed; run it with `SLUICE_GROUP_PROTOCOL=classic` (and
//! `SLUICE_KAFKA_OPTIONS=partition.assignment.strategy=range` for the eager assignor) to
//! measure another protocol: then only exactly-once is asserted.

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use common::process::{Serve, ServeConfig};
use common::{Broker, Stack, workload};
use sluice::dev::{GROUP_HEARTBEAT_INTERVAL_MS, GROUP_SESSION_TIMEOUT_MS};
use sluice::kafka::GroupProtocol;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Orders per second of the feed.
const RATE: u64 = 300;
/// Time between two changes of membership.
const SETTLE: Duration = Duration::from_secs(4);
/// The longest a partition that keeps its owner may go without a decided record.
const MAX_GAP: Duration = Duration::from_secs(1);
/// The longest from a member's start to its first decided record.
const MAX_FIRST_RECORD: Duration = Duration::from_secs(5);

/// One incarnation of a member: its process, log and start time.
struct Incarnation {
    name: String,
    started: SystemTime,
    process: Serve,
}

impl Incarnation {
    fn spawn(config: &ServeConfig, name: &str, instance_id: Option<&str>) -> Self {
        let mut config = config.clone().env("SLUICE_LOG_FORMAT", "json");
        if let Some(id) = instance_id {
            config = config.env("SLUICE_INSTANCE_ID", id);
        }
        let started = SystemTime::now();
        Self {
            name: name.to_string(),
            started,
            process: Serve::spawn(&config, name),
        }
    }

    /// SIGTERM, and a clean exit.
    async fn stop(&mut self) {
        let status = self.process.terminate().await;
        assert!(
            status.success(),
            "{} stops cleanly: {status}\n{}",
            self.name,
            self.process.log_tail()
        );
    }

    /// What its log says about its partitions and batches.
    fn events(&self) -> Vec<Event> {
        let text = std::fs::read_to_string(&self.process.log).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|line| {
                let at: DateTime<Utc> = line["timestamp"].as_str()?.parse().ok()?;
                let fields = &line["fields"];
                let kind = match fields["message"].as_str()? {
                    "partitions assigned" => Kind::Assigned(partitions(&fields["partitions"])),
                    "partitions revoked" => Kind::Revoked(partitions(&fields["partitions"])),
                    "batch committed" => Kind::Committed,
                    _ => return None,
                };
                Some(Event {
                    at: SystemTime::from(at),
                    kind,
                })
            })
            .collect()
    }

    /// From its start to its first partition and to its first decided record.
    fn first(&self) -> (Option<Duration>, Option<Duration>) {
        let events = self.events();
        let since = |at: SystemTime| at.duration_since(self.started).unwrap_or_default();
        let assigned = events
            .iter()
            .find(|e| matches!(&e.kind, Kind::Assigned(p) if !p.is_empty()))
            .map(|e| since(e.at));
        let decided = events
            .iter()
            .find(|e| matches!(e.kind, Kind::Committed))
            .map(|e| since(e.at));
        (assigned, decided)
    }
}

#[derive(Debug)]
struct Event {
    at: SystemTime,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Assigned(BTreeSet<i32>),
    Revoked(BTreeSet<i32>),
    Committed,
}

/// What a member held just before `until`, from its assignments and revocations.
fn held_before(events: &[Event], until: SystemTime) -> BTreeSet<i32> {
    let mut held = BTreeSet::new();
    for e in events.iter().filter(|e| e.at < until) {
        match &e.kind {
            Kind::Assigned(p) => held.extend(p.iter().copied()),
            Kind::Revoked(p) => held.retain(|x| !p.contains(x)),
            Kind::Committed => {}
        }
    }
    held
}

/// The partitions of a logged list: `t[0-2,5]` or, at debug level, `t[0]@12,t[1]@40`.
fn partitions(field: &serde_json::Value) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    let text = field.as_str().unwrap_or_default();
    for part in text.split('[').skip(1) {
        let inside = part.split(']').next().unwrap_or_default();
        for item in inside.split(',').filter(|s| !s.is_empty()) {
            match item.split_once('-') {
                Some((a, b)) => {
                    if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                        out.extend(a..=b);
                    }
                }
                None => out.extend(item.parse::<i32>()),
            }
        }
    }
    out
}

/// A steady feed of orders until `stop`; returns each order with the time it was sent.
async fn feed(
    broker: &Broker,
    topic: &str,
    orders: Vec<workload::Order>,
    stop: CancellationToken,
) -> Vec<(workload::Order, SystemTime)> {
    let producer = broker.producer();
    let per_tick = (RATE / 20) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut sent = Vec::new();
    for chunk in orders.chunks(per_tick) {
        tick.tick().await;
        if stop.is_cancelled() {
            break;
        }
        let at = SystemTime::now();
        workload::produce(&producer, topic, chunk).await;
        sent.extend(chunk.iter().cloned().map(|o| (o, at)));
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_leave_crash_and_restart_under_load_without_stopping_the_group() {
    let protocol: GroupProtocol = std::env::var("SLUICE_GROUP_PROTOCOL")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or_default();
    let measuring_only = protocol == GroupProtocol::Classic;
    let (broker, topic, db_url, pool) = Stack::start(8).await.into_parts();
    // The embedded broker's defaults, as `sluice dev` has them.
    if let Some(kafka) = broker.embedded() {
        kafka.set_group_timeouts(GROUP_SESSION_TIMEOUT_MS, GROUP_HEARTBEAT_INTERVAL_MS);
    }
    let initial = workload::add_products(&pool, 40, 1_000_000).await;
    let orders = workload::orders(RATE as usize * 120, &initial, rand::random());
    let group = format!("group-{}", Uuid::new_v4().simple());
    let config = ServeConfig::new(&db_url, broker.bootstrap(), &topic, &group)
        .env("SLUICE_BATCH_MAX_MESSAGES", 200);
    let run_started = Instant::now();

    // One member, then the feed.
    let mut incarnations: Vec<Incarnation> = Vec::new();
    let mut a = Incarnation::spawn(&config, "a", None);
    a.process.wait_healthy().await;
    let stop = CancellationToken::new();
    let feeding = {
        let (broker, topic, stop) = (&broker, topic.clone(), stop.clone());
        let orders = orders.clone();
        async move { feed(broker, &topic, orders, stop).await }
    };
    let changes = async {
        let mut log: Vec<(&str, SystemTime)> = vec![("a alone", SystemTime::now())];
        tokio::time::sleep(SETTLE).await;
        // 1 → 2: a static member joins.
        log.push(("b joins", SystemTime::now()));
        let mut b = Incarnation::spawn(&config, "b", Some("member-b"));
        tokio::time::sleep(SETTLE).await;
        // 2 → 3.
        log.push(("c joins", SystemTime::now()));
        let mut c = Incarnation::spawn(&config, "c", None);
        tokio::time::sleep(SETTLE).await;
        // A rolling restart of b: SIGTERM, then the same instance id again.
        log.push(("b restarts", SystemTime::now()));
        b.stop().await;
        let b2 = Incarnation::spawn(&config, "b-again", Some("member-b"));
        tokio::time::sleep(SETTLE).await;
        // 3 → 2: c leaves with SIGTERM.
        log.push(("c leaves", SystemTime::now()));
        c.stop().await;
        tokio::time::sleep(SETTLE).await;
        // 2 → 1: b crashes.
        log.push(("b killed", SystemTime::now()));
        let mut b2 = b2;
        b2.process.kill9();
        tokio::time::sleep(Duration::from_millis(GROUP_SESSION_TIMEOUT_MS as u64) + SETTLE).await;
        log.push(("end", SystemTime::now()));
        stop.cancel();
        (log, vec![b, c, b2])
    };
    let (sent, (log, others)) = tokio::join!(feeding, changes);
    incarnations.extend(others);
    let n = sent.len() as i64;
    workload::wait_processed(&pool, &group, n, Duration::from_secs(120)).await;
    // What a's metrics say it went through: alone again, it owns all 8 partitions.
    let exposition = reqwest::get(a.process.url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the exposition");
    let gauge = |name: &str, labels: &[(&str, &str)]| common::metric(&exposition, name, labels);
    let owned = gauge("sluice_assigned_partitions", &[("topic", topic.as_str())]);
    let revoked = gauge("sluice_partition_changes_total", &[("change", "revoked")]);
    a.stop().await;
    incarnations.insert(0, a);

    // Exactly once, stock exact.
    let sent_orders: Vec<workload::Order> = sent.iter().map(|(o, _)| o.clone()).collect();
    let tally = workload::check_exactly_once(&pool, &group, &initial, &sent_orders).await;

    // When each record was decided, per partition.
    let rows: Vec<(String, i32, DateTime<Utc>)> = sqlx::query_as(
        "SELECT event_id, partition, processed_at FROM processed_messages
         WHERE group_id = $1 AND event_id IS NOT NULL",
    )
    .bind(&group)
    .fetch_all(&pool)
    .await
    .expect("reading decisions");
    let sent_at: HashMap<String, SystemTime> =
        sent.iter().map(|(o, at)| (o.id.to_string(), *at)).collect();
    let mut latencies: Vec<Duration> = Vec::new();
    // Per change, from it to the next: the orders sent then.
    let mut by_phase: Vec<Vec<Duration>> = vec![Vec::new(); log.len()];
    let mut by_partition: BTreeMap<i32, Vec<SystemTime>> = BTreeMap::new();
    for (event_id, partition, at) in rows {
        let at = SystemTime::from(at);
        if let Some(sent) = sent_at.get(&event_id) {
            let latency = at.duration_since(*sent).unwrap_or_default();
            latencies.push(latency);
            if let Some(phase) = log.iter().rposition(|(_, change)| change <= sent) {
                by_phase[phase].push(latency);
            }
        }
        by_partition.entry(partition).or_default().push(at);
    }
    latencies.sort();
    let quantile = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let phases: Vec<String> = log
        .iter()
        .zip(&mut by_phase)
        .filter(|(_, l)| !l.is_empty())
        .map(|((what, _), l)| {
            l.sort();
            format!(
                "after {what}: p99 {:.0?} max {:.0?}",
                l[(l.len() - 1) * 99 / 100],
                l[l.len() - 1]
            )
        })
        .collect();

    // Where partitions changed owner: every assignment and revocation, of every member.
    let moves: Vec<(SystemTime, i32)> = incarnations
        .iter()
        .flat_map(|i| i.events())
        .flat_map(|e| match e.kind {
            Kind::Assigned(p) | Kind::Revoked(p) => p.into_iter().map(|p| (e.at, p)).collect(),
            Kind::Committed => Vec::new(),
        })
        .collect();
    // A gap of a partition that moved neither in it nor within half a second of its ends.
    let slack = Duration::from_millis(500);
    let mut longest_kept = Duration::ZERO;
    let mut stalls = Vec::new();
    for (partition, times) in &mut by_partition {
        times.sort();
        for pair in times.windows(2) {
            let gap = pair[1].duration_since(pair[0]).unwrap_or_default();
            let moved = moves
                .iter()
                .any(|(at, p)| p == partition && *at + slack >= pair[0] && *at <= pair[1] + slack);
            if !moved {
                longest_kept = longest_kept.max(gap);
                if gap > MAX_GAP {
                    stalls.push((*partition, gap, pair[0]));
                }
            }
        }
    }

    // The static restart moved nothing between the others: no assignment or revocation in
    // a, c while b was away, and b came back to the partitions it had.
    let restart_at = log
        .iter()
        .find(|(what, _)| *what == "b restarts")
        .map(|(_, at)| *at);
    let leave_at = log
        .iter()
        .find(|(what, _)| *what == "c leaves")
        .map(|(_, at)| *at);
    let (Some(restart_at), Some(leave_at)) = (restart_at, leave_at) else {
        unreachable!("both changes are logged above")
    };
    let moved_by_restart: Vec<String> = incarnations
        .iter()
        .filter(|i| i.name == "a" || i.name == "c")
        .flat_map(|i| {
            i.events()
                .into_iter()
                .filter(|e| e.at >= restart_at && e.at < leave_at)
                .filter(|e| !matches!(e.kind, Kind::Committed))
                .map(|e| format!("{}: {:?}", i.name, e.kind))
                .collect::<Vec<_>>()
        })
        .collect();
    let b_before = incarnations
        .iter()
        .find(|i| i.name == "b")
        .map(|i| held_before(&i.events(), restart_at));
    let b_after_first_assignment =
        incarnations
            .iter()
            .find(|i| i.name == "b-again")
            .and_then(|i| {
                i.events().into_iter().find_map(|e| match e.kind {
                    Kind::Assigned(p) if !p.is_empty() => Some(p),
                    _ => None,
                })
            });

    // The figures.
    let firsts: Vec<String> = incarnations
        .iter()
        .map(|i| {
            let (assigned, decided) = i.first();
            format!(
                "{}: first partition {assigned:.2?}, first decided record {decided:.2?}",
                i.name
            )
        })
        .collect();
    eprintln!(
        "membership ({protocol}): {n} orders at {RATE}/s over {:.0} s, {} applied, {} rejected; \
         changes {:?}; \n  start → {}\n  longest gap of a partition that kept its owner {:.2?}; \
         stalls over {MAX_GAP:?}: {stalls:?}\n  order → decided p50 {:.0?} p99 {:.0?} max {:.0?}; \
         {}\n  \
         b's partitions before its restart {b_before:?}, after {b_after_first_assignment:?}; \
         others' moves during it: {moved_by_restart:?}",
        run_started.elapsed().as_secs_f64(),
        tally.applied,
        tally.rejected,
        log.iter().map(|(what, _)| *what).collect::<Vec<_>>(),
        firsts.join("; "),
        longest_kept,
        quantile(0.5),
        quantile(0.99),
        quantile(1.0),
        phases.join("; "),
    );
    if measuring_only {
        return;
    }
    assert_eq!(owned, Some(8.0), "a owns every partition at the end");
    assert!(
        revoked.is_some_and(|n| n >= 1.0),
        "a counted the partitions it gave up: {revoked:?}"
    );
    assert!(
        stalls.is_empty(),
        "partitions that kept their owner stopped: {stalls:?}"
    );
    for i in &incarnations {
        let (_, decided) = i.first();
        let decided = decided
            .unwrap_or_else(|| panic!("{} decided nothing\n{}", i.name, i.process.log_tail()));
        assert!(
            decided <= MAX_FIRST_RECORD,
            "{} decided its first record {decided:?} after its start",
            i.name
        );
    }
    assert!(
        moved_by_restart.is_empty(),
        "the static member's restart moved partitions of the others: {moved_by_restart:?}"
    );
    assert!(
        b_before.is_some() && b_before == b_after_first_assignment,
        "the restarted static member gets back what it had: {b_before:?} → {b_after_first_assignment:?}"
    );
}

/// Against a broker without the consumer group protocol (Kafka before 4.0), `auto` finds out
/// at start and the group works with the classic protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_to_the_classic_protocol_on_a_broker_without_the_new_one() {
    let (broker, topic, db_url, pool) = Stack::start_embedded(4).await.into_parts();
    let kafka = broker.embedded().expect("an embedded broker");
    let mut settings = common::settings(&db_url, &broker, &topic, "probe");
    let resolve = |kafka: &sluice::kafka::KafkaSettings| {
        sluice::kafka::membership::resolve_group_protocol(kafka, &topic)
    };
    assert_eq!(
        resolve(&settings.kafka),
        GroupProtocol::Consumer,
        "the embedded broker has the consumer group protocol"
    );
    settings.kafka.options = vec![("session.timeout.ms".into(), "6000".into())];
    assert_eq!(
        resolve(&settings.kafka),
        GroupProtocol::Classic,
        "a classic-only property selects the classic protocol"
    );
    kafka.deny_consumer_group_protocol();
    settings.kafka.options.clear();
    let started = Instant::now();
    assert_eq!(
        resolve(&settings.kafka),
        GroupProtocol::Classic,
        "a broker that refuses the consumer group protocol gets the classic one"
    );
    eprintln!("fallback found in {:.2?}", started.elapsed());

    // A member started with the defaults consumes in the classic protocol.
    let initial = workload::add_products(&pool, 4, 1000).await;
    let orders = workload::orders(200, &initial, 7);
    let group = format!("group-{}", Uuid::new_v4().simple());
    let config = ServeConfig::new(&db_url, broker.bootstrap(), &topic, &group);
    let mut member = Serve::spawn(&config, "fallback");
    member.wait_healthy().await;
    workload::produce(&broker.producer(), &topic, &orders).await;
    workload::wait_processed(&pool, &group, orders.len() as i64, Duration::from_secs(60)).await;
    let status = member.terminate().await;
    assert!(
        status.success(),
        "clean exit: {status}\n{}",
        member.log_tail()
    );
    workload::check_exactly_once(&pool, &group, &initial, &orders).await;
    let log = std::fs::read_to_string(&member.log).unwrap_or_default();
    assert!(
        log.contains("protocol=classic"),
        "the member says which protocol it uses\n{}",
        member.log_tail()
    );
}

/// A member the broker refuses for good (on Kafka: a static member restarted after a kill -9
/// while the broker still counts the old process, `UNRELEASED_INSTANCE_ID`) stops with the
/// reason instead of polling a dead consumer, and `serve` exits non-zero for its supervisor to
/// start it again; what it decided stays decided once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_the_broker_refuses_stops_with_the_reason() {
    let (broker, topic, db_url, pool) = Stack::start_embedded(4).await.into_parts();
    let kafka = broker.embedded().expect("an embedded broker");
    let initial = workload::add_products(&pool, 4, 1000).await;
    let orders = workload::orders(100, &initial, 11);
    let group = format!("group-{}", Uuid::new_v4().simple());
    let config = ServeConfig::new(&db_url, broker.bootstrap(), &topic, &group)
        .env("SLUICE_INSTANCE_ID", "member-1");
    let mut member = Serve::spawn(&config, "refused");
    member.wait_healthy().await;
    workload::produce(&broker.producer(), &topic, &orders).await;
    workload::wait_processed(&pool, &group, orders.len() as i64, Duration::from_secs(60)).await;

    kafka.fail_heartbeats(
        rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNRELEASED_INSTANCE_ID,
        4,
    );
    let status = member.wait_exit(Duration::from_secs(30)).await;
    let status = status.unwrap_or_else(|| {
        panic!(
            "sluice serve went on with a refused consumer\n{}",
            member.log_tail()
        )
    });
    assert!(!status.success(), "a non-zero exit: {status}");
    let log = std::fs::read_to_string(&member.log).unwrap_or_default();
    assert!(
        log.contains("consumer stopped")
            && log.contains("another process holds this --instance-id"),
        "the log says why\n{}",
        member.log_tail()
    );
    workload::check_exactly_once(&pool, &group, &initial, &orders).await;
}
