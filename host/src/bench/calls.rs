//! The plugin call alone: a fresh instance + call + validation, beside the same logic as
//! native code.

use std::time::Instant;

use super::measure::percentiles;
use super::{Bench, Figure, TOPIC, broker, native_stock};
use crate::runtime::{Plugin, STOCK_PLUGIN, Sandbox, SandboxConfig, bindings, compile};

impl Bench<'_> {
    /// The plugin call alone, in a fresh instance as ingest does it, and the native handler.
    pub(super) fn plugin_calls(&self) -> anyhow::Result<Vec<Figure>> {
        let sandbox = Sandbox::new(SandboxConfig::default())?;
        let component = compile::compile_here(sandbox.engine(), STOCK_PLUGIN)?;
        let wasm = Plugin::load(
            &sandbox,
            "stock",
            crate::runtime::version_of(STOCK_PLUGIN),
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
        let mut figures = Vec::new();
        for (scenario, what, plugin) in [
            (
                "call-wasm",
                "plugin call: fresh instance + call + validate",
                &wasm,
            ),
            ("call-native", "the same logic as native code", &native),
        ] {
            let start = self.processes.cpu();
            let mut samples = Vec::with_capacity(self.args.plugin_calls);
            let started = Instant::now();
            for _ in 0..self.args.plugin_calls {
                let call = Instant::now();
                plugin
                    .handle(&message)
                    .map_err(|e| anyhow::anyhow!("the benchmark call failed: {e}"))?;
                samples.push(call.elapsed());
            }
            let seconds = started.elapsed().as_secs_f64();
            let (p50, p99) = percentiles(&mut samples);
            figures.push(Figure {
                scenario,
                what: what.into(),
                rate: Some(self.args.plugin_calls as f64 / seconds),
                p50_ms: Some(p50.as_secs_f64() * 1e3),
                p99_ms: Some(p99.as_secs_f64() * 1e3),
                count: self.args.plugin_calls as u64,
                seconds,
                cpu: self.processes.cpu().since(start),
                peak_rss_mib: None,
            });
        }
        Ok(figures)
    }
}
