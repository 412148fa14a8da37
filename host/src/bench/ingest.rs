//! Catch-up ingest of the backlog: the wasm plugin, the native handler, one transaction per
//! message, hot swaps every two seconds, emitted records with state, and table writes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::measure::{self, Cpu};
use super::{Bench, Figure, TOPIC, native_stock, report};
use crate::Application;
use crate::domain::Routes;
use crate::runtime::{Isolation, STOCK_PLUGIN};

/// What an ingest scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Load {
    /// The stock plugin in this isolation.
    Wasm(Isolation),
    Native,
    PerMessage,
    Swaps,
    /// Contract 0.2 on every record: the velocity example with a rate of one order per
    /// window of no time, so that each order takes stock, sets its key's state and emits an
    /// alert record (the heaviest output a record can have but for its size).
    EmitAndState,
    /// Contract 0.3 on every record: the read-model example keeping one counter, so that each
    /// order takes stock, upserts its row in `user_orders` and adds to its product's row in
    /// `product_sales`.
    Tables,
}

/// The read-model example (`plugins/read-model`), built by host/build.rs.
const READ_MODEL_PLUGIN: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sluice_plugin_read_model.wasm"));

/// The tables the read-model scenario writes, as the README's walkthrough creates them.
const READ_SIDE: &str = include_str!("../../../plugins/read-model/tables.sql");

/// The velocity example (`plugins/velocity`), built by host/build.rs.
const VELOCITY_PLUGIN: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sluice_plugin_velocity.wasm"));

/// Where the contract scenario's alerts go (`Bench::topics` creates it).
pub(super) const ALERTS_TOPIC: &str = "bench-alerts";

impl Bench<'_> {
    /// Catch up with the backlog in a fresh consumer group; the rate is counted from the first
    /// commit to the last record.
    pub(super) async fn ingest(
        &self,
        scenario: &'static str,
        what: &str,
        load: Load,
    ) -> anyhow::Result<Figure> {
        self.clear().await?;
        let target = match load {
            Load::PerMessage => self.args.per_message_events.min(self.args.events),
            Load::Swaps => self.args.events / 2,
            Load::Wasm(_) | Load::Native | Load::EmitAndState | Load::Tables => self.args.events,
        } as u64;
        let mut settings = self.settings(TOPIC)?;
        // Where the scenario's plugin file is, removed when the scenario ends.
        let mut plugin_dir = None;
        match load {
            Load::Native => {
                settings.plugins.native = vec![("stock-native".into(), native_stock)];
                settings.kafka.routes = Routes::single(TOPIC, "stock-native");
            }
            Load::PerMessage => settings.ingest.batch_max_messages = 1,
            Load::Wasm(isolation) => settings.sandbox.isolation.default = isolation,
            Load::Swaps => {}
            Load::EmitAndState => {
                let dir = plugin_dir.insert(tempfile::tempdir()?);
                let path = dir.path().join("velocity.wasm");
                std::fs::write(&path, VELOCITY_PLUGIN)?;
                settings.plugins.paths = vec![path];
                settings.kafka.routes = Routes::single(TOPIC, "velocity")
                    .allow(&[TOPIC.to_string()], &[(TOPIC.into(), ALERTS_TOPIC.into())])
                    .map_err(anyhow::Error::msg)?;
                settings.sandbox.plugin_config = crate::runtime::PluginConfig::from_pairs([
                    ("velocity:max-orders".to_string(), "1".to_string()),
                    ("velocity:window-seconds".to_string(), "0".to_string()),
                    ("velocity:alert-topic".to_string(), ALERTS_TOPIC.to_string()),
                ]);
            }
            Load::Tables => {
                sqlx::raw_sql("DROP TABLE IF EXISTS user_orders, product_sales")
                    .execute(&self.pool)
                    .await?;
                sqlx::raw_sql(READ_SIDE).execute(&self.pool).await?;
                let dir = plugin_dir.insert(tempfile::tempdir()?);
                let path = dir.path().join("read-model.wasm");
                std::fs::write(&path, READ_MODEL_PLUGIN)?;
                settings.plugins.paths = vec![path];
                settings.kafka.routes = Routes::single(TOPIC, "read-model")
                    .allow_tables(&[
                        (TOPIC.into(), "user_orders:upsert".into()),
                        (TOPIC.into(), "product_sales:add".into()),
                    ])
                    .map_err(anyhow::Error::msg)?;
                settings.sandbox.plugin_config = crate::runtime::PluginConfig::from_pairs([(
                    "read-model:counters".to_string(),
                    "units".to_string(),
                )]);
            }
        }
        let app = Application::build(settings).await?;
        measure::statements_reset(&self.pool).await;
        let health = app.ingest_health();
        let control = app.plugin_control();
        let shutdown = CancellationToken::new();
        measure::reset_peak_rss();
        let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        let progress = report::progress(scenario, target);
        let swapper = (load == Load::Swaps).then(|| {
            let token = shutdown.clone();
            tokio::spawn(async move {
                let padded = Arc::new(with_custom_section(STOCK_PLUGIN, "bench-swap"));
                let mut swaps = 0u32;
                loop {
                    tokio::select! {
                        () = token.cancelled() => return swaps,
                        () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                    let bytes = if swaps.is_multiple_of(2) {
                        bytes::Bytes::from(padded.to_vec())
                    } else {
                        bytes::Bytes::from_static(STOCK_PLUGIN)
                    };
                    match control.install("stock", bytes, "bench").await {
                        Ok(_) => swaps += 1,
                        Err(e) => tracing::warn!(error = %e, "benchmark swap failed"),
                    }
                }
            })
        });
        let mut first: Option<(Instant, Cpu, u64)> = None;
        loop {
            let decided = health.decided();
            progress.set_position(decided.min(target));
            if decided > 0 && first.is_none() {
                first = Some((Instant::now(), self.processes.cpu(), decided));
            }
            if decided >= target {
                break;
            }
            if running.is_finished() {
                anyhow::bail!("{scenario}: the app stopped after {decided} of {target} records");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (started, cpu_start, decided_at_start) =
            first.unwrap_or((Instant::now(), Cpu::default(), 0));
        let seconds = started.elapsed().as_secs_f64();
        let cpu = self.processes.cpu().since(cpu_start);
        let peak = measure::peak_rss_mib();
        progress.finish_and_clear();
        shutdown.cancel();
        running.await??;
        let swaps = match swapper {
            Some(task) => Some(task.await?),
            None => None,
        };
        let counted = target - decided_at_start;
        let what = match swaps {
            Some(n) => format!("{what} ({n} swaps)"),
            None => what.to_string(),
        };
        Ok(Figure {
            scenario,
            what,
            rate: Some(counted as f64 / seconds.max(1e-9)),
            p50_ms: None,
            p99_ms: None,
            count: counted,
            seconds,
            cpu,
            peak_rss_mib: peak,
            statements: measure::statements(&self.pool).await,
        })
    }
}

/// `component` with a custom section appended: another version (another hash) of the same
/// plugin, for swapping back and forth.
fn with_custom_section(component: &[u8], name: &str) -> Vec<u8> {
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name.as_bytes());
    let mut out = component.to_vec();
    out.push(0); // custom section id
    out.push(section.len() as u8); // fits one LEB128 byte: names are short
    out.extend_from_slice(&section);
    out
}
