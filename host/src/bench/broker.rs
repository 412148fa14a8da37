//! The benchmark's broker: the embedded mock cluster in a process of its own (so that its
//! memory and CPU are not counted as the host's), its topics filled with order events before
//! the clock starts.

use std::io::{BufRead as _, Write as _};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};

use crate::dev::EmbeddedKafka;
use crate::domain::{EVENT_ID_HEADER, Header};
use crate::kafka::owned_headers;

#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Partitions of every topic.
    #[arg(long)]
    pub partitions: i32,
    /// Topics to create.
    #[arg(long, value_delimiter = ',')]
    pub topics: Vec<String>,
    /// The topic to fill with order events.
    #[arg(long)]
    pub fill: String,
    /// How many events.
    #[arg(long)]
    pub events: usize,
    /// Over how many products.
    #[arg(long)]
    pub products: usize,
}

/// The product of event `i`.
pub fn product(i: usize, products: usize) -> String {
    format!("P-{:04}", i % products)
}

/// Order event `i`, in the order service's format (quantity 1 to 5).
pub fn event(i: usize, products: usize) -> String {
    let quantity = 1 + i % 5;
    format!(
        r#"{{"orderId":"bench-{i}","userId":"bench","productId":"{}","quantity":{quantity},"unitPrice":1,"totalPrice":{quantity},"createdAt":"2026-11-30T00:00:00.000Z"}}"#,
        product(i, products)
    )
}

/// Produce `events` order events to `topic` and wait until all are acknowledged.
pub fn fill(brokers: &str, topic: &str, events: usize, products: usize) -> anyhow::Result<()> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    for i in 0..events {
        let payload = event(i, products);
        let key = product(i, products);
        let headers = owned_headers(&[Header::text(EVENT_ID_HEADER, format!("bench-{i}"))]);
        let mut record = BaseRecord::to(topic)
            .key(key.as_str())
            .payload(payload.as_str())
            .headers(headers);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, returned)) => {
                    if !matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ) {
                        anyhow::bail!("producing a benchmark event: {e}");
                    }
                    record = returned;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        if i % 10_000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(())
}

/// `sluice bench-broker`: start the broker, create and fill the topics, print
/// `READY <bootstrap servers>`, and run until standard input closes (the parent is gone).
pub fn broker_main(args: &BrokerArgs) -> ExitCode {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let result = (|| -> anyhow::Result<EmbeddedKafka> {
        let kafka = EmbeddedKafka::start(1)?;
        for topic in &args.topics {
            kafka.create_topic(topic, args.partitions)?;
        }
        let started = Instant::now();
        fill(
            kafka.bootstrap_servers(),
            &args.fill,
            args.events,
            args.products,
        )?;
        eprintln!(
            "bench broker: {} events produced in {:.1} s",
            args.events,
            started.elapsed().as_secs_f64()
        );
        Ok(kafka)
    })();
    match result {
        Ok(kafka) => {
            println!("READY {}", kafka.bootstrap_servers());
            let _ = std::io::stdout().flush();
            for _ in std::io::stdin().lock().lines() {}
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench broker: {e:#}");
            ExitCode::FAILURE
        }
    }
}
