//! The order API: `POST /orders` under closed-loop load, then order → stock latency at a
//! fixed offered rate.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::measure::{self, percentiles};
use super::{Bench, Figure, HTTP_TOPIC, broker, report};
use crate::Application;

impl Bench<'_> {
    /// `POST /orders` under load, then order → stock latency at a fixed offered rate.
    pub(super) async fn http(&self) -> anyhow::Result<(Figure, Figure)> {
        self.clear().await?;
        let settings = self.settings(HTTP_TOPIC)?;
        let group = settings.kafka.group_id.clone();
        let app = Application::build(settings).await?;
        let base = format!("http://{}", app.local_addr()?);
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(self.args.http_connections)
            .build()?;
        let body = |i: u64| {
            serde_json::json!({"userId": format!("bench-{}", i % 100), "productId":
                broker::product(i as usize, self.args.products), "quantity": 1, "unitPrice": 1})
        };

        // Closed loop: every connection posts as fast as it is answered.
        measure::reset_peak_rss();
        let start_cpu = self.processes.cpu();
        let started = Instant::now();
        let until = started + Duration::from_secs(self.args.http_seconds);
        let progress = report::progress("http-post", self.args.http_seconds);
        let workers: Vec<_> = (0..self.args.http_connections as u64)
            .map(|w| {
                let (client, url) = (client.clone(), format!("{base}/orders"));
                let body = body(w);
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut failed = 0u64;
                    while Instant::now() < until {
                        let sent = Instant::now();
                        match client.post(&url).json(&body).send().await {
                            Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                                latencies.push(sent.elapsed())
                            }
                            _ => failed += 1,
                        }
                    }
                    (latencies, failed)
                })
            })
            .collect();
        let ticker = {
            let progress = progress.clone();
            tokio::spawn(async move {
                while Instant::now() < until {
                    progress.set_position(started.elapsed().as_secs());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        let mut latencies = Vec::new();
        let mut failed = 0;
        for worker in workers {
            let (l, f) = worker.await?;
            latencies.extend(l);
            failed += f;
        }
        ticker.await?;
        progress.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        let cpu = self.processes.cpu().since(start_cpu);
        let count = latencies.len() as u64;
        let (p50, p99) = percentiles(&mut latencies);
        let post = Figure {
            scenario: "http-post",
            what: format!(
                "POST /orders, {} connections{}",
                self.args.http_connections,
                if failed > 0 {
                    format!(", {failed} failed")
                } else {
                    String::new()
                }
            ),
            rate: Some(count as f64 / seconds),
            p50_ms: Some(p50.as_secs_f64() * 1e3),
            p99_ms: Some(p99.as_secs_f64() * 1e3),
            count,
            seconds,
            cpu,
            peak_rss_mib: measure::peak_rss_mib(),
            statements: Vec::new(),
        };

        // Let ingest catch up with the load, then offer a steady rate and time each order
        // from its creation to the commit that applied it.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let from = chrono::Utc::now();
        let start_cpu = self.processes.cpu();
        let started = Instant::now();
        let total = self.args.latency_rate * self.args.http_seconds;
        let mut tick =
            tokio::time::interval(Duration::from_secs_f64(1.0 / self.args.latency_rate as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let progress = report::progress("latency", total);
        let mut posts = Vec::with_capacity(total as usize);
        for i in 0..total {
            tick.tick().await;
            let (client, url, body) = (client.clone(), format!("{base}/orders"), body(i));
            posts.push(tokio::spawn(async move {
                client.post(&url).json(&body).send().await
            }));
            progress.set_position(i);
        }
        for post in posts {
            post.await??;
        }
        progress.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        let cpu = self.processes.cpu().since(start_cpu);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rows: Vec<(f64,)> = sqlx::query_as(
            "SELECT extract(epoch FROM p.processed_at - o.created_at)::float8
             FROM orders o JOIN processed_messages p
               ON p.event_id = o.order_id::text AND p.group_id = $1
             WHERE o.created_at >= $2",
        )
        .bind(&group)
        .bind(from)
        .fetch_all(&self.pool)
        .await?;
        let mut delays: Vec<Duration> = rows
            .into_iter()
            .map(|(s,)| Duration::from_secs_f64(s.max(0.0)))
            .collect();
        let decided = delays.len() as u64;
        let (p50, p99) = percentiles(&mut delays);
        let latency = Figure {
            scenario: "latency",
            what: format!(
                "order → stock applied, {} orders/s offered ({decided} of {total} decided)",
                self.args.latency_rate
            ),
            rate: Some(total as f64 / seconds),
            p50_ms: Some(p50.as_secs_f64() * 1e3),
            p99_ms: Some(p99.as_secs_f64() * 1e3),
            count: decided,
            seconds,
            cpu,
            peak_rss_mib: None,
            statements: Vec::new(),
        };
        shutdown.cancel();
        running.await??;
        Ok((post, latency))
    }
}
