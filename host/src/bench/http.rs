//! The order API: `POST /orders` under closed-loop load, then order → stock latency at a
//! fixed offered rate.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use anyhow::Context as _;
use secrecy::ExposeSecret as _;

use super::measure::{self, percentiles};
use super::{Bench, Figure, HTTP_TOPIC, broker, report};
use crate::Application;
use crate::domain::{EVENT_ID_HEADER, Header, Record};
use crate::trace::{TRACEPARENT, TraceParent};

impl Bench<'_> {
    /// `POST /orders` under load, then order → stock applied and order → verdict (the
    /// order's status updated from the status topic) at a fixed offered rate.
    pub(super) async fn http(&self) -> anyhow::Result<[Figure; 3]> {
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

        // Closed loop: every connection posts as fast as it is answered. wrk, where installed,
        // is the load (a process of its own, so that its CPU is not counted as sluice's).
        measure::reset_peak_rss();
        measure::statements_reset(&self.pool).await;
        let start_cpu = self.processes.cpu();
        let started = Instant::now();
        let load = match which("wrk") {
            Some(wrk) => self.wrk(&wrk, &base).await?,
            None => self.post_in_process(&client, &base, &body).await?,
        };
        let seconds = started.elapsed().as_secs_f64();
        let cpu = self.processes.cpu().since(start_cpu);
        let Load {
            p50,
            p99,
            count,
            failed,
            client: load_client,
        } = load;
        let post = Figure {
            scenario: "http-post",
            what: format!(
                "POST /orders, {} connections, {load_client}{}",
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
            statements: measure::statements(&self.pool).await,
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
        let delays = |query: &'static str| {
            let pool = self.pool.clone();
            let group = group.clone();
            async move {
                let rows: Vec<(f64,)> = sqlx::query_as(query)
                    .bind(group)
                    .bind(from)
                    .fetch_all(&pool)
                    .await?;
                anyhow::Ok(
                    rows.into_iter()
                        .map(|(s,)| Duration::from_secs_f64(s.max(0.0)))
                        .collect::<Vec<_>>(),
                )
            }
        };
        let figure = |scenario, what: &str, mut delays: Vec<Duration>| {
            let decided = delays.len() as u64;
            let (p50, p99) = percentiles(&mut delays);
            Figure {
                scenario,
                what: format!(
                    "{what}, {} orders/s offered ({decided} of {total} decided)",
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
            }
        };
        let applied = delays(
            "SELECT extract(epoch FROM p.processed_at - o.created_at)::float8
             FROM orders o JOIN processed_messages p
               ON p.event_id = o.order_id::text AND p.group_id = $1
             WHERE o.created_at >= $2",
        )
        .await?;
        let verdict = delays(
            "SELECT extract(epoch FROM o.status_updated_at - o.created_at)::float8
             FROM orders o JOIN processed_messages p
               ON p.event_id = o.order_id::text AND p.group_id = $1
             WHERE o.created_at >= $2 AND o.status_updated_at IS NOT NULL",
        )
        .await?;
        let applied = figure("latency", "order → stock applied", applied);
        let verdict = figure(
            "latency-verdict",
            "order → verdict in the order's status",
            verdict,
        );
        shutdown.cancel();
        running.await??;
        Ok([post, applied, verdict])
    }
}

/// What a closed-loop `POST /orders` load measured.
struct Load {
    p50: Duration,
    p99: Duration,
    /// Requests answered `201`.
    count: u64,
    failed: u64,
    /// Which client, and its CPU when it is a process of its own.
    client: String,
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|path| path.is_file())
}

impl Bench<'_> {
    /// `wrk` posting orders on every connection for the scenario's seconds.
    async fn wrk(&self, wrk: &std::path::Path, base: &str) -> anyhow::Result<Load> {
        let dir = tempfile::tempdir()?;
        let script = dir.path().join("orders.lua");
        std::fs::write(
            &script,
            format!(
                r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local body = string.format('{{"userId":"bench-%d","productId":"P-%04d","quantity":1,"unitPrice":1}}',
    math.random(0, 99), math.random(0, {last}))
  return wrk.format(nil, nil, nil, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d\n", summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"#,
                last = self.args.products - 1
            ),
        )?;
        let client_start = measure::children_cpu();
        let output = tokio::process::Command::new(wrk)
            .args(["--threads", "2", "--timeout", "10s"])
            .args(["--connections", &self.args.http_connections.to_string()])
            .args(["--duration", &format!("{}s", self.args.http_seconds)])
            .arg("--script")
            .arg(&script)
            .arg(format!("{base}/orders"))
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("running {}", wrk.display()))?;
        let client_cpu = measure::children_cpu() - client_start;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let fields: Vec<u64> = stdout
            .lines()
            .find_map(|line| line.strip_prefix("RESULT "))
            .with_context(|| {
                format!(
                    "wrk printed no result: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                )
            })?
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let [requests, failed, p50_us, p99_us] = fields[..] else {
            anyhow::bail!("wrk's result line does not parse: {stdout}");
        };
        let count = requests.saturating_sub(failed);
        Ok(Load {
            p50: Duration::from_micros(p50_us),
            p99: Duration::from_micros(p99_us),
            count,
            failed,
            client: format!(
                "wrk ({:.0} µs of CPU per request)",
                client_cpu * 1e6 / count.max(1) as f64
            ),
        })
    }

    /// The same load from this process (where wrk is not installed): its CPU counts as the
    /// host's.
    async fn post_in_process(
        &self,
        client: &reqwest::Client,
        base: &str,
        body: &impl Fn(u64) -> serde_json::Value,
    ) -> anyhow::Result<Load> {
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
        let (p50, p99) = percentiles(&mut latencies);
        Ok(Load {
            count: latencies.len() as u64,
            p50,
            p99,
            failed,
            client: "an in-process client (its CPU in the host's; install wrk to separate it)"
                .into(),
        })
    }

    /// pgbench running the transaction one `POST /orders` needs (its order row and its event's
    /// outbox row), with as many clients as the HTTP load has connections, for as long: what
    /// PostgreSQL alone sustains on this machine, the bound for the order API.
    pub(super) async fn pgbench(&self) -> anyhow::Result<Figure> {
        self.clear().await?;
        let pgbench = crate::dev::postgres_program("pgbench")?;
        let dir = tempfile::tempdir()?;
        let event = Record {
            topic: HTTP_TOPIC.to_string(),
            key: Some(broker::product(0, self.args.products).into_bytes()),
            payload: Some(broker::event(0, self.args.products).into_bytes()),
            headers: vec![
                Header::text(EVENT_ID_HEADER, uuid::Uuid::now_v7().to_string()),
                Header::text(TRACEPARENT, TraceParent::root().to_string()),
            ],
        };
        let outbox_row = hex::encode(crate::domain::encode_records(&[event]));
        // The order id is time-ordered like the service's (UUIDv7): milliseconds, then random.
        let script = format!(
            "\\set user random(0, 99)
\\set product random(0, {last})
WITH inserted AS (
  INSERT INTO orders (order_id, user_id, product_id, quantity, unit_price, total_price,
                      status, created_at)
  VALUES ((lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
           || substr(md5(random()::text), 1, 20))::uuid,
          'bench-' || :user, 'P-' || lpad(CAST(:product AS text), 4, '0'), 1, 1, 1,
          'PENDING', now())
)
INSERT INTO outbox (records) VALUES ('\\x{outbox_row}'::bytea);
",
            last = self.args.products - 1
        );
        let script_path = dir.path().join("order.sql");
        std::fs::write(&script_path, script)?;
        let clients = self.args.http_connections.to_string();
        measure::statements_reset(&self.pool).await;
        let start_cpu = self.processes.cpu();
        let client_start = measure::children_cpu();
        let started = Instant::now();
        let output = tokio::process::Command::new(&pgbench)
            .args(["--no-vacuum", "--protocol=prepared", "--log"])
            .arg(format!("--log-prefix={}", dir.path().join("tx").display()))
            .args(["--client", &clients, "--jobs", "2"])
            .args(["--time", &self.args.http_seconds.to_string()])
            .arg("--file")
            .arg(&script_path)
            .arg(self.url.expose_secret())
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("running {}", pgbench.display()))?;
        let seconds = started.elapsed().as_secs_f64();
        let mut cpu = self.processes.cpu().since(start_cpu);
        // The client's CPU in the host's place: pgbench plays the HTTP clients and the service.
        cpu.host_s = measure::children_cpu() - client_start;
        anyhow::ensure!(
            output.status.success(),
            "pgbench failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        // Per-transaction log lines: client, transaction, latency in µs, …
        let mut latencies = Vec::new();
        for entry in std::fs::read_dir(dir.path())? {
            let path = entry?.path();
            if !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("tx"))
            {
                continue;
            }
            for line in std::fs::read_to_string(&path)?.lines() {
                if let Some(us) = line
                    .split_whitespace()
                    .nth(2)
                    .and_then(|f| f.parse::<u64>().ok())
                {
                    latencies.push(Duration::from_micros(us));
                }
            }
        }
        let count = latencies.len() as u64;
        let (p50, p99) = percentiles(&mut latencies);
        Ok(Figure {
            scenario: "pgbench",
            what: format!(
                "pgbench, the order transaction, {clients} clients (client CPU in the sluice column)"
            ),
            rate: Some(count as f64 / seconds),
            p50_ms: Some(p50.as_secs_f64() * 1e3),
            p99_ms: Some(p99.as_secs_f64() * 1e3),
            count,
            seconds,
            cpu,
            peak_rss_mib: None,
            statements: measure::statements(&self.pool).await,
        })
    }
}
