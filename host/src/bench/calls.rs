//! The plugin call alone, as ingest makes it: in a fresh instance per record, or in one
//! instance per batch; beside the same logic as native code.

use std::time::Instant;

use anyhow::Context as _;

use super::measure::percentiles;
use super::{Bench, Figure, TOPIC, broker, native_stock};
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
        let component = compile::compile_here(sandbox.engine(), &bytes)?;
        let wasm = Plugin::load(
            &sandbox,
            "stock",
            crate::runtime::version_of(&bytes),
            &component,
        )?;
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
            let start = self.processes.cpu();
            let mut samples = Vec::with_capacity(self.args.plugin_calls);
            let started = Instant::now();
            let mut calls = plugin.calls_in(isolation);
            for i in 0..self.args.plugin_calls {
                if i % batch == 0 {
                    calls = plugin.calls_in(isolation); // the next batch's instance
                }
                let call = Instant::now();
                calls
                    .handle(&message)
                    .map_err(|e| anyhow::anyhow!("the benchmark call failed: {e}"))?;
                samples.push(call.elapsed());
            }
            drop(calls);
            let seconds = started.elapsed().as_secs_f64();
            let (p50, p99) = percentiles(&mut samples);
            figures.push(Figure {
                scenario,
                what,
                rate: Some(self.args.plugin_calls as f64 / seconds),
                p50_ms: Some(p50.as_secs_f64() * 1e3),
                p99_ms: Some(p99.as_secs_f64() * 1e3),
                count: self.args.plugin_calls as u64,
                seconds,
                cpu: self.processes.cpu().since(start),
                peak_rss_mib: None,
                statements: Vec::new(),
            });
        }
        Ok(figures)
    }
}
