//! `sluice plugin replay`: real messages out of production as fixtures — dead letters from the
//! database, or a range of one topic partition read from Kafka (no group, nothing committed) —
//! so a failure seen live becomes a failing test in one command.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::postgres::PgPoolOptions;

use super::fixtures::{Bytes, Expect, Fixture, Header};
use crate::config::Settings;
use crate::domain::Consumed;
use crate::kafka;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A dead letter by id (repeatable).
    #[arg(long = "dead-letter", value_name = "ID")]
    pub dead_letters: Vec<i64>,
    /// Every unresolved dead letter (newest first, at most --count).
    #[arg(long)]
    pub all_dead_letters: bool,
    /// The database holding the dead letters.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,

    /// Or messages of this topic ...
    #[arg(long, conflicts_with_all = ["dead_letters", "all_dead_letters"])]
    pub topic: Option<String>,
    /// ... from this partition ...
    #[arg(long, default_value_t = 0)]
    pub partition: i32,
    /// ... from this offset on.
    #[arg(long, default_value_t = 0)]
    pub from: i64,
    /// Kafka bootstrap servers for --topic.
    #[arg(long, env = "SLUICE_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// The most fixtures to write.
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// The fixture file to write (default: standard output).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let fixtures = if let Some(topic) = &args.topic {
        let (brokers, topic, partition, from, count) = (
            args.kafka_brokers.clone(),
            topic.clone(),
            args.partition,
            args.from,
            args.count,
        );
        tokio::task::spawn_blocking(move || from_topic(&brokers, &topic, partition, from, count))
            .await
            .context("the topic read failed")??
    } else if args.all_dead_letters || !args.dead_letters.is_empty() {
        from_dead_letters(&args).await?
    } else {
        bail!("say what to replay: --dead-letter ID, --all-dead-letters, or --topic NAME");
    };
    let mut text = String::new();
    for fixture in &fixtures {
        text.push_str(&serde_json::to_string(fixture)?);
        text.push('\n');
    }
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {} fixtures to {}", fixtures.len(), path.display());
        }
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    Ok(())
}

/// A consumed record as a fixture; `expect` says what it should become: by default any
/// mutations and no error (a dead letter's fixture fails until the plugin is fixed).
fn fixture(record: &Consumed, name: String, recorded: serde_json::Value) -> Fixture {
    Fixture {
        name: Some(name),
        topic: record.topic.clone(),
        partition: record.partition,
        offset: record.offset,
        key: record.key.as_deref().map(Bytes::of),
        headers: record
            .headers
            .iter()
            .map(|h| Header {
                key: h.key.clone(),
                value: h.value.as_deref().map(Bytes::of),
            })
            .collect(),
        payload: record.payload.as_deref().map(Bytes::of),
        state: None,
        config: Default::default(),
        expect: Expect::Ok { ok: true },
        recorded: Some(recorded),
    }
}

async fn from_dead_letters(args: &ReplayArgs) -> anyhow::Result<Vec<Fixture>> {
    let url = args
        .database_url
        .as_ref()
        .context("dead letters are in the database: give --database-url or DATABASE_URL")?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url.expose_secret())
        .await
        .context("connecting to the database")?;
    let mut letters = Vec::new();
    for id in &args.dead_letters {
        letters.push(
            crate::db::dead_letters::get(&pool, *id)
                .await?
                .with_context(|| format!("no dead letter {id}"))?,
        );
    }
    if args.all_dead_letters {
        let count = i64::try_from(args.count).unwrap_or(i64::MAX);
        letters.extend(
            crate::db::dead_letters::list(&pool, count, None)
                .await?
                .into_iter()
                .filter(|letter| letter.resolved_at.is_none()),
        );
    }
    letters.truncate(args.count);
    let mut fixtures = Vec::with_capacity(letters.len());
    for letter in letters {
        let record = letter.record();
        // The state the record's key has now, as a redrive would give the call (none where the
        // plugin keeps none for it).
        let state = match &record.key {
            Some(key) => crate::db::state::get(&pool, &letter.plugin, key).await?,
            None => None,
        };
        fixtures.push(Fixture {
            state: state.map(|(value, _)| Bytes::of(&value)),
            ..fixture(
                &record,
                format!("dead letter {}", letter.id),
                serde_json::json!({
                    "deadLetter": letter.id,
                    "errorKind": letter.error_kind,
                    "error": letter.error,
                    "plugin": letter.plugin,
                    "pluginVersion": letter.plugin_version,
                    "at": letter.created_at,
                }),
            )
        });
    }
    Ok(fixtures)
}

/// Up to `count` records of `topic`/`partition` from offset `from`, read by assignment (no
/// group membership, no offsets committed); stops at the partition's end.
fn from_topic(
    brokers: &str,
    topic: &str,
    partition: i32,
    from: i64,
    count: usize,
) -> anyhow::Result<Vec<Fixture>> {
    let settings = Settings::local("", brokers, topic)?;
    let consumer: BaseConsumer = crate::kafka::consumer_config(
        &settings.kafka,
        "sluice-plugin-replay",
        "sluice-plugin-replay",
    )
    .create()
    .context("creating a Kafka consumer")?;
    let (_, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .with_context(|| format!("reading {topic}[{partition}]'s end"))?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(from))?;
    consumer.assign(&assignment)?;
    let mut fixtures = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut next = from;
    while fixtures.len() < count && next < high {
        if Instant::now() > deadline {
            bail!("read {} records in 30 s, wanted more", fixtures.len());
        }
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.with_context(|| format!("reading {topic}[{partition}]"))?;
        let record = kafka::consumed(&message);
        next = record.offset + 1;
        fixtures.push(fixture(
            &record,
            format!("{topic}[{partition}]@{}", record.offset),
            serde_json::json!({ "timestampMs": record.timestamp_ms }),
        ));
    }
    Ok(fixtures)
}
