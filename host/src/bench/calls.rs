//! The plugin call alone, as ingest makes it: in a fresh instance per record, or in one
//! instance per batch; beside the same logic as native code.

use std::time::Instant;

use anyhow::Context as _;

use super::measure::percentiles;
use super::{Bench, Figure, TOPIC, broker, native_stock};
use crate::domain::Allowances;
use crate::runtime::{Isolation, Plugin, STOCK_PLUGIN, Sandbox, SandboxConfig, bindings, compile};

impl Bench<'_> {
    /// The bundled stock plugin (or `--component`) per record and per batch, and the native
    /// handler.
    pub(super) fn plugin_calls(&self) -> anyhow::Result<Vec<Figure>> {
        let sandbox = Sandbox::new(SandboxConfig::default())?;
        let bytes = match &self.args.component {
            Some(path) => {
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
            }
            None => STOCK_PLUGIN.to_vec(),
        };
        let wasm = load(&sandbox, &bytes)?;
        let native = Plugin::native(&sandbox, "native", native_stock);
        let message = bindings::Message {
            topic: TOPIC.into(),
            partition: 0,
            offset: 0,
            key: Some(b"P-0001".to_vec()),
            payload: broker::event(1, self.args.products).into_bytes(),
            headers: Vec::new(),
            timestamp_ms: None,
        };
        let batch = self.args.batch.max(1);
        let mut figures = Vec::new();
        for (scenario, what, plugin, isolation) in [
            (
                "call-wasm",
                "plugin call, record isolation: fresh instance + call + validate".to_string(),
                &wasm,
                Isolation::Record,
            ),
            (
                "call-wasm-batch",
                format!("plugin call, batch isolation: {batch} calls per instance"),
                &wasm,
                Isolation::Batch,
            ),
            (
                "call-native",
                "the same logic as native code".to_string(),
                &native,
                Isolation::Record,
            ),
        ] {
            let calls = self.args.plugin_calls;
            figures.push(self.time_calls(scenario, what, plugin, isolation, &message, calls)?);
        }
        // The stock plugin in Python and JavaScript, when built (`sluice plugin build`).
        for (scenario, lang, path) in [
            ("call-python", "Python", &self.args.python_component),
            ("call-js", "JavaScript", &self.args.js_component),
        ] {
            let Ok(bytes) = std::fs::read(path) else {
                eprintln!(
                    "{scenario}: {} is not built (sluice plugin build {}); not measured",
                    path.display(),
                    path.parent()
                        .and_then(|build| build.parent())
                        .unwrap_or(path)
                        .display()
                );
                continue;
            };
            let plugin = load(&sandbox, &bytes)?;
            // An interpreter's call costs a thousand Rust ones: fewer calls give the figure.
            let calls = (self.args.plugin_calls / 10).max(100);
            figures.push(self.time_calls(
                scenario,
                format!("{lang} stock plugin, record isolation: fresh instance + call"),
                &plugin,
                Isolation::Record,
                &message,
                calls / 4,
            )?);
            let batched: &'static str = if scenario == "call-python" {
                "call-python-batch"
            } else {
                "call-js-batch"
            };
            figures.push(self.time_calls(
                batched,
                format!("{lang} stock plugin, batch isolation: {batch} calls per instance"),
                &plugin,
                Isolation::Batch,
                &message,
                calls,
            )?);
        }
        Ok(figures)
    }

    /// `calls` calls of `plugin` in `isolation`, each timed (a fresh instance every
    /// `--batch` calls in batch isolation).
    fn time_calls(
        &self,
        scenario: &'static str,
        what: String,
        plugin: &Plugin,
        isolation: Isolation,
        message: &bindings::Message,
        calls: usize,
    ) -> anyhow::Result<Figure> {
        let batch = self.args.batch.max(1);
        let start = self.processes.cpu();
        let mut samples = Vec::with_capacity(calls);
        let started = Instant::now();
        let route = Allowances::default();
        let mut instance = plugin.calls_in(isolation, &route);
        for i in 0..calls {
            if i % batch == 0 {
                instance = plugin.calls_in(isolation, &route); // the next batch's instance
            }
            let call = Instant::now();
            instance
                .handle(message, None)
                .map_err(|e| anyhow::anyhow!("the benchmark call failed: {e}"))?;
            samples.push(call.elapsed());
        }
        drop(instance);
        let seconds = started.elapsed().as_secs_f64();
        let (p50, p99) = percentiles(&mut samples);
        Ok(Figure {
            scenario,
            what,
            rate: Some(calls as f64 / seconds),
            p50_ms: Some(p50.as_secs_f64() * 1e3),
            p99_ms: Some(p99.as_secs_f64() * 1e3),
            count: calls as u64,
            seconds,
            cpu: self.processes.cpu().since(start),
            peak_rss_mib: None,
            statements: Vec::new(),
        })
    }
}

/// `bytes` compiled here and loaded as the plugin `stock`.
fn load(sandbox: &std::sync::Arc<Sandbox>, bytes: &[u8]) -> anyhow::Result<Plugin> {
    let component = compile::compile_here(sandbox.engine(), bytes)?;
    Plugin::load(
        sandbox,
        "stock",
        crate::runtime::version_of(bytes),
        &component,
    )
    .map_err(anyhow::Error::from)
}
