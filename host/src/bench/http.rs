//! The order API: `POST /orders` under closed-loop load, then order → stock latency at a
//! fixed offered rate.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use anyhow::Context as _;
use secrecy::ExposeSecret as _;

use super::measure::{self, Cpu, percentiles};
use super::{Bench, Figure, HTTP_TOPIC, broker, report};
use crate::Application;
use crate::domain::{EVENT_ID_HEADER, Header, Record};
use crate::trace::{TRACEPARENT, TraceParent};

impl Bench<'_> {
    /// `POST /orders` under load and pgbench running the same transaction, taking turns in
    /// the same run (a turn of each, `http_rounds` times: the machine's drift from minute to
    /// minute falls on both alike); then order → stock applied and order → verdict (the
    /// order's status updated from the status topic) at a fixed offered rate.
    pub(super) async fn http(&self) -> anyhow::Result<[Figure; 4]> {
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
        let pgbench = Pgbench::prepare(self).await?;

        // Closed loop: every connection posts as fast as it is answered. wrk, where installed,
        // is the load (a process of its own, so that its CPU is not counted as sluice's).
        let wrk = which("wrk");
        let turn = Duration::from_secs((self.args.http_seconds / self.args.http_rounds).max(1));
        measure::reset_peak_rss();
        measure::statements_reset(&self.pool).await;
        let (mut posted, mut benched) = (Load::default(), Load::default());
        for round in 0..self.args.http_rounds {
            let start_cpu = self.processes.cpu();
            let mut load = match &wrk {
                Some(wrk) => self.wrk(wrk, &base, turn).await?,
                None => self.post_in_process(&client, &base, &body, turn).await?,
            };
            load.cpu = self.processes.cpu().since(start_cpu);
            posted.add(load);
            // The turn's orders decided (ingest, relay and status consumer done with them),
            // so that none of its work falls in pgbench's turn.
            self.settle().await?;

            let start_cpu = self.processes.cpu();
            let mut load = pgbench.run(round, turn).await?;
            load.cpu = self.processes.cpu().since(start_cpu);
            // pgbench plays the HTTP clients and the service: its CPU in the host's place.
            load.cpu.host_s = load.client_s.unwrap_or_default();
            benched.add(load);
        }
        let (pgbench_statements, post_statements) = measure::statements(&self.pool)
            .await
            .into_iter()
            .partition(|s| s.query.contains(Pgbench::ORDERS));
        pgbench.remove().await?;
        let turns = format!("{} turns of {} s", self.args.http_rounds, turn.as_secs());
        let load_client = match (&wrk, posted.client_s) {
            (Some(_), Some(client)) => format!(
                "wrk ({:.0} µs of CPU per request)",
                client * 1e6 / posted.count.max(1) as f64
            ),
            _ => "an in-process client (its CPU in the host's; install wrk to separate it)"
                .to_string(),
        };
        let post = posted.figure(
            "http-post",
            format!(
                "POST /orders, {} connections, {load_client}, {turns}",
                self.args.http_connections,
            ),
            measure::peak_rss_mib(),
            post_statements,
        );
        let bench = benched.figure(
            "pgbench",
            format!(
                "pgbench, the order transaction, {} clients, {turns} alternating with POST /orders (client CPU in the sluice column)",
                self.args.http_connections
            ),
            None,
            pgbench_statements,
        );

        // Every order of the load is decided (the last turn was pgbench's, after a settle):
        // offer a steady rate and time each order from its creation to the commit that
        // applied it.
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
        Ok([post, bench, applied, verdict])
    }

    /// Until no order waits for its verdict (at most a minute).
    async fn settle(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let pending: bool = sqlx::query_scalar(
                "/* bench */ SELECT EXISTS (SELECT 1 FROM orders WHERE status = 'PENDING')",
            )
            .fetch_one(&self.pool)
            .await?;
            if !pending {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "orders still wait for their verdict a minute after the load stopped"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What closed-loop turns of a load measured, summed over the turns.
#[derive(Default)]
struct Load {
    /// Requests answered `201` (transactions committed, for pgbench).
    count: u64,
    failed: u64,
    /// From the first request sent to the last answered, summed over the turns (the client's
    /// start-up and connections left out, on either side).
    seconds: f64,
    latencies: Vec<Duration>,
    cpu: Cpu,
    /// The client's CPU seconds when it is a process of its own.
    client_s: Option<f64>,
}

impl Load {
    fn add(&mut self, turn: Load) {
        self.count += turn.count;
        self.failed += turn.failed;
        self.seconds += turn.seconds;
        self.latencies.extend(turn.latencies);
        self.cpu = self.cpu.plus(turn.cpu);
        self.client_s = match (self.client_s, turn.client_s) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or_default() + b.unwrap_or_default()),
        };
    }

    fn figure(
        mut self,
        scenario: &'static str,
        what: String,
        peak_rss_mib: Option<f64>,
        statements: Vec<measure::Statement>,
    ) -> Figure {
        let (p50, p99) = percentiles(&mut self.latencies);
        Figure {
            scenario,
            what: if self.failed > 0 {
                format!("{what}, {} failed", self.failed)
            } else {
                what
            },
            rate: Some(self.count as f64 / self.seconds.max(f64::EPSILON)),
            p50_ms: Some(p50.as_secs_f64() * 1e3),
            p99_ms: Some(p99.as_secs_f64() * 1e3),
            count: self.count,
            seconds: self.seconds,
            cpu: self.cpu,
            peak_rss_mib,
            statements,
        }
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|path| path.is_file())
}

impl Bench<'_> {
    /// A turn of `wrk` posting orders on every connection.
    async fn wrk(&self, wrk: &std::path::Path, base: &str, turn: Duration) -> anyhow::Result<Load> {
        let dir = tempfile::tempdir()?;
        let script = dir.path().join("orders.lua");
        // The result line, then the latency histogram (`latency(i)` is the i-th distinct
        // latency in µs and how many requests took it), so that the turns' latencies add up
        // exactly.
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
  io.write(string.format("RESULT %d %d %d\n", summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout, summary.duration))
  for i = 1, #latency do
    local us, n = latency(i)
    io.write(string.format("H %d %d\n", us, n))
  end
end
"#,
                last = self.args.products - 1
            ),
        )?;
        let client_start = measure::children_cpu();
        let output = tokio::process::Command::new(wrk)
            .args(["--threads", "2", "--timeout", "10s"])
            .args(["--connections", &self.args.http_connections.to_string()])
            .args(["--duration", &format!("{}s", turn.as_secs())])
            .arg("--script")
            .arg(&script)
            .arg(format!("{base}/orders"))
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("running {}", wrk.display()))?;
        let client_s = measure::children_cpu() - client_start;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let numbers = |prefix: &'static str| {
            stdout
                .lines()
                .filter_map(move |line| line.strip_prefix(prefix))
                .map(|rest| {
                    rest.split_whitespace()
                        .filter_map(|f| f.parse::<u64>().ok())
                        .collect::<Vec<_>>()
                })
        };
        let Some([requests, failed, duration_us]) = numbers("RESULT ")
            .next()
            .and_then(|fields| <[u64; 3]>::try_from(fields).ok())
        else {
            anyhow::bail!(
                "wrk printed no result line: {stdout}{}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        };
        let mut latencies = Vec::with_capacity(requests as usize);
        for bucket in numbers("H ") {
            if let [us, n] = bucket[..] {
                latencies.extend(std::iter::repeat_n(Duration::from_micros(us), n as usize));
            }
        }
        Ok(Load {
            count: requests.saturating_sub(failed),
            failed,
            seconds: duration_us as f64 / 1e6,
            latencies,
            cpu: Cpu::default(),
            client_s: Some(client_s),
        })
    }

    /// A turn of the same load from this process (where wrk is not installed): its CPU counts
    /// as the host's.
    async fn post_in_process(
        &self,
        client: &reqwest::Client,
        base: &str,
        body: &impl Fn(u64) -> serde_json::Value,
        turn: Duration,
    ) -> anyhow::Result<Load> {
        let started = Instant::now();
        let until = started + turn;
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
        let mut load = Load::default();
        for worker in workers {
            let (latencies, failed) = worker.await?;
            load.count += latencies.len() as u64;
            load.latencies.extend(latencies);
            load.failed += failed;
        }
        load.seconds = started.elapsed().as_secs_f64();
        Ok(load)
    }
}

/// pgbench running the transaction one `POST /orders` needs (its order row and its event's
/// outbox row), with as many clients as the HTTP load has connections: what PostgreSQL alone
/// sustains on this machine, the bound for the order API. It writes to copies of the two
/// tables (same columns, constraints, indexes and storage parameters), so that the running
/// service's relay does not publish its rows.
struct Pgbench {
    program: std::path::PathBuf,
    dir: tempfile::TempDir,
    script: std::path::PathBuf,
    clients: String,
    url: String,
    pool: sqlx::PgPool,
}

impl Pgbench {
    const ORDERS: &str = "bench_orders";
    const OUTBOX: &str = "bench_outbox";

    async fn prepare(bench: &Bench<'_>) -> anyhow::Result<Self> {
        let program = crate::dev::postgres_program("pgbench")?;
        let pool = bench.pool.clone();
        for (copy, table) in [(Self::ORDERS, "orders"), (Self::OUTBOX, "outbox")] {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {copy}")))
                .execute(&pool)
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE TABLE {copy} (LIKE {table} INCLUDING ALL)"
            )))
            .execute(&pool)
            .await?;
            let options: Option<String> = sqlx::query_scalar(
                "SELECT array_to_string(reloptions, ', ') FROM pg_class
                 WHERE oid = $1::regclass AND reloptions IS NOT NULL",
            )
            .bind(table)
            .fetch_optional(&pool)
            .await?;
            if let Some(options) = options {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "ALTER TABLE {copy} SET ({options})"
                )))
                .execute(&pool)
                .await?;
            }
        }
        let event = Record {
            topic: HTTP_TOPIC.to_string(),
            key: Some(broker::product(0, bench.args.products).into_bytes()),
            payload: Some(broker::event(0, bench.args.products).into_bytes()),
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
  INSERT INTO {orders} (order_id, user_id, product_id, quantity, unit_price, total_price,
                      status, created_at)
  VALUES ((lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
           || substr(md5(random()::text), 1, 20))::uuid,
          'bench-' || :user, 'P-' || lpad(CAST(:product AS text), 4, '0'), 1, 1, 1,
          'PENDING', now())
)
INSERT INTO {outbox} (records) VALUES ('\\x{outbox_row}'::bytea);
",
            last = bench.args.products - 1,
            orders = Self::ORDERS,
            outbox = Self::OUTBOX,
        );
        let dir = tempfile::tempdir()?;
        let script_path = dir.path().join("order.sql");
        std::fs::write(&script_path, script)?;
        Ok(Self {
            program,
            dir,
            script: script_path,
            clients: bench.args.http_connections.to_string(),
            url: bench.url.expose_secret().to_string(),
            pool,
        })
    }

    /// One turn; the transactions' latencies and window from its per-transaction log.
    async fn run(&self, round: u64, turn: Duration) -> anyhow::Result<Load> {
        let prefix = format!("tx{round}");
        let client_start = measure::children_cpu();
        let output = tokio::process::Command::new(&self.program)
            .args(["--no-vacuum", "--protocol=prepared", "--log"])
            .arg(format!(
                "--log-prefix={}",
                self.dir.path().join(&prefix).display()
            ))
            .args(["--client", &self.clients, "--jobs", "2"])
            .args(["--time", &turn.as_secs().to_string()])
            .arg("--file")
            .arg(&self.script)
            .arg(&self.url)
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("running {}", self.program.display()))?;
        let client_s = measure::children_cpu() - client_start;
        anyhow::ensure!(
            output.status.success(),
            "pgbench failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        // Per-transaction log lines: client, transaction, latency µs, script, end s, end µs.
        let mut latencies = Vec::new();
        let (mut first_start, mut last_end) = (f64::MAX, f64::MIN);
        for entry in std::fs::read_dir(self.dir.path())? {
            let path = entry?.path();
            if !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            {
                continue;
            }
            for line in std::fs::read_to_string(&path)?.lines() {
                let fields: Vec<u64> = line
                    .split_whitespace()
                    .filter_map(|f| f.parse().ok())
                    .collect();
                if let [_, _, latency_us, _, end_s, end_us, ..] = fields[..] {
                    let end = end_s as f64 + end_us as f64 / 1e6;
                    first_start = first_start.min(end - latency_us as f64 / 1e6);
                    last_end = last_end.max(end);
                    latencies.push(Duration::from_micros(latency_us));
                }
            }
            std::fs::remove_file(&path)?;
        }
        Ok(Load {
            count: latencies.len() as u64,
            failed: 0,
            seconds: (last_end - first_start).max(0.0),
            latencies,
            cpu: Cpu::default(),
            client_s: Some(client_s),
        })
    }

    async fn remove(self) -> anyhow::Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP TABLE {}, {}",
            Self::ORDERS,
            Self::OUTBOX
        )))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
