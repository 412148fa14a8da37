//! Span export over OTLP/HTTP (JSON) when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: one span per hop of an order's path — the
//! `POST /orders` request, each record's processing in ingest, the verdict's arrival on the
//! order side — under the W3C trace context the headers carry (see `trace`).
//!
//! Export never stalls a flow: spans go into a bounded queue (full: the span is dropped and
//! counted) that one background task sends in batches; a collector that is down or slow costs
//! dropped spans, never latency.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::trace::TraceParent;

/// Spans waiting to be sent; beyond this they are dropped (and counted).
const QUEUE: usize = 8192;
/// Spans per request.
const BATCH: usize = 512;
/// The longest a finished span waits for its batch.
const LINGER: Duration = Duration::from_secs(1);

/// Where and how to send spans: the standard `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The traces URL: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`.
    pub traces_url: String,
    /// `OTEL_EXPORTER_OTLP_HEADERS` (`key=value,...`, values percent-decoded), e.g. an API key.
    pub headers: Vec<(String, String)>,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds; default 10 s).
    pub timeout: Duration,
    /// `OTEL_SERVICE_NAME` (default `sluice`).
    pub service_name: String,
}

impl OtlpConfig {
    /// From the environment; `Ok(None)` when no endpoint is set (export off).
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        Self::from_vars(|key| std::env::var(key).ok().filter(|v| !v.trim().is_empty()))
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        let traces_url = match (
            var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(url), _) => url,
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        if let Some(protocol) = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .filter(|p| p != "http/json")
        {
            anyhow::bail!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: sluice exports spans as http/json only \
                 (every OpenTelemetry Collector, Jaeger and Tempo accept it on port 4318)"
            );
        }
        let headers = var("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
            .or_else(|| var("OTEL_EXPORTER_OTLP_HEADERS"))
            .map(|raw| parse_headers(&raw))
            .transpose()?
            .unwrap_or_default();
        let timeout = match var("OTEL_EXPORTER_OTLP_TIMEOUT") {
            Some(ms) => Duration::from_millis(ms.trim().parse().map_err(|e| {
                anyhow::anyhow!("OTEL_EXPORTER_OTLP_TIMEOUT must be milliseconds, got `{ms}`: {e}")
            })?),
            None => Duration::from_secs(10),
        };
        Ok(Some(Self {
            traces_url,
            headers,
            timeout,
            service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| "sluice".into()),
        }))
    }
}

/// `key=value,key2=value2`, values percent-encoded (the OTLP exporter specification).
fn parse_headers(raw: &str) -> anyhow::Result<Vec<(String, String)>> {
    raw.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("OTEL_EXPORTER_OTLP_HEADERS: `{pair}` is not key=value")
            })?;
            Ok((key.trim().to_string(), percent_decode(value.trim())))
        })
        .collect()
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(Some(h)), Some(Some(l))) = (
                bytes.get(i + 1).map(|b| hex(*b)),
                bytes.get(i + 2).map(|b| hex(*b)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a span is to its trace (OTLP `SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Server = 2,
    Consumer = 5,
}

/// A finished span.
#[derive(Debug, Clone)]
pub struct Span {
    /// Its own context (trace id and span id).
    pub context: TraceParent,
    /// The span it descends from, if any (another process's, usually).
    pub parent: Option<TraceParent>,
    pub name: String,
    pub kind: Kind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, Value)>,
    /// An error span (a refused or failed record, a 5xx).
    pub error: Option<String>,
}

impl Span {
    /// A consumer's span for processing one Kafka record (OpenTelemetry's messaging
    /// conventions), under `parent`; `attributes` are added to the messaging ones.
    pub fn kafka_process(
        context: TraceParent,
        parent: TraceParent,
        (topic, partition, offset): (&str, i32, i64),
        (start, end): (SystemTime, SystemTime),
        attributes: impl IntoIterator<Item = (&'static str, Value)>,
    ) -> Self {
        let mut all = vec![
            ("messaging.system", "kafka".into()),
            ("messaging.operation.type", "process".into()),
            ("messaging.destination.name", topic.into()),
            (
                "messaging.destination.partition.id",
                partition.to_string().into(),
            ),
            ("messaging.kafka.offset", offset.into()),
        ];
        all.extend(attributes);
        Self {
            context,
            parent: Some(parent),
            name: format!("{topic} process"),
            kind: Kind::Consumer,
            start,
            end,
            attributes: all,
            error: None,
        }
    }
}

struct Exporter {
    queue: mpsc::Sender<Span>,
    dropped: AtomicU64,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Whether spans are exported (callers skip building them otherwise).
pub fn enabled() -> bool {
    EXPORTER.get().is_some()
}

/// Queue a finished span; never waits. A no-op when export is off.
pub fn export(span: Span) {
    let Some(exporter) = EXPORTER.get() else {
        return;
    };
    if exporter.queue.try_send(span).is_err() {
        let dropped = exporter.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if dropped.is_power_of_two() {
            tracing::warn!(dropped, "span export queue full: spans dropped");
        }
    }
}

/// Start exporting (once per process; a second call is ignored). Needs a Tokio runtime.
pub fn init(config: OtlpConfig) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(config.timeout).build()?;
    let (queue, mut receiver) = mpsc::channel(QUEUE);
    if EXPORTER
        .set(Exporter {
            queue,
            dropped: AtomicU64::new(0),
        })
        .is_err()
    {
        return Ok(());
    }
    tracing::info!(url = %config.traces_url, service = %config.service_name, "exporting spans over OTLP/HTTP (JSON)");
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        let mut failures = 0u64;
        loop {
            // Wait for the first span, then up to LINGER for the batch to fill.
            match receiver.recv().await {
                Some(span) => batch.push(span),
                None => return,
            }
            let deadline = tokio::time::Instant::now() + LINGER;
            while batch.len() < BATCH {
                match tokio::time::timeout_at(deadline, receiver.recv()).await {
                    Ok(Some(span)) => batch.push(span),
                    Ok(None) | Err(_) => break,
                }
            }
            let body = encode(&config.service_name, &batch);
            let mut request = client.post(&config.traces_url).json(&body);
            for (key, value) in &config.headers {
                request = request.header(key, value);
            }
            let result = request.send().await.and_then(|r| r.error_for_status());
            if let Err(e) = result {
                failures += 1;
                // A collector that is down is worth one line, not one per batch.
                if failures.is_power_of_two() {
                    tracing::warn!(error = %e, spans = batch.len(), failures, "span export failed; spans dropped");
                }
            }
            batch.clear();
        }
    });
    Ok(())
}

/// The OTLP/JSON request body (`ExportTraceServiceRequest`).
fn encode(service_name: &str, spans: &[Span]) -> Value {
    let nanos = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_string()
    };
    let spans: Vec<Value> = spans
        .iter()
        .map(|span| {
            let attributes: Vec<Value> = span
                .attributes
                .iter()
                .map(|(key, value)| json!({ "key": key, "value": any_value(value) }))
                .collect();
            let mut out = json!({
                "traceId": span.context.trace_id(),
                "spanId": span.context.span_id(),
                "name": span.name,
                "kind": span.kind as u8,
                "startTimeUnixNano": nanos(span.start),
                "endTimeUnixNano": nanos(span.end.max(span.start)),
                "attributes": attributes,
                "status": match &span.error {
                    Some(message) => json!({ "code": 2, "message": message }),
                    None => json!({ "code": 0 }),
                },
            });
            if let Some(parent) = span.parent {
                out["parentSpanId"] = json!(parent.span_id());
            }
            out
        })
        .collect();
    json!({
        "resourceSpans": [{
            "resource": { "attributes": [
                { "key": "service.name", "value": { "stringValue": service_name } },
                { "key": "service.version", "value": { "stringValue": env!("CARGO_PKG_VERSION") } },
            ]},
            "scopeSpans": [{
                "scope": { "name": "sluice", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans,
            }],
        }],
    })
}

/// An OTLP `AnyValue` (64-bit integers are strings in OTLP/JSON).
fn any_value(value: &Value) -> Value {
    match value {
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({ "intValue": n.to_string() }),
        Value::Number(n) => json!({ "doubleValue": n.as_f64() }),
        Value::String(s) => json!({ "stringValue": s }),
        other => json!({ "stringValue": other.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> anyhow::Result<Option<OtlpConfig>> {
        OtlpConfig::from_vars(|key| {
            vars.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn the_standard_variables_configure_export() {
        assert_eq!(config(&[]).unwrap(), None, "off without an endpoint");
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=s%3Dcret, x-team=orders",
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_SERVICE_NAME", "sluice-eu"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.traces_url, "http://collector:4318/v1/traces");
        assert_eq!(
            c.headers,
            [
                ("api-key".to_string(), "s=cret".to_string()),
                ("x-team".to_string(), "orders".to_string())
            ]
        );
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.service_name, "sluice-eu");
        let traces = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4318/custom"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            traces.traces_url, "http://b:4318/custom",
            "the signal's own wins"
        );
        let grpc = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]);
        assert!(grpc.unwrap_err().to_string().contains("http/json"));
    }

    #[test]
    fn spans_encode_as_otlp_json() {
        let parent =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let context = parent.child();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
        let body = encode(
            "sluice",
            &[Span {
                context,
                parent: Some(parent),
                name: "POST /orders".into(),
                kind: Kind::Server,
                start,
                end: start + Duration::from_millis(3),
                attributes: vec![("http.response.status_code", json!(201))],
                error: None,
            }],
        );
        let span = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span["parentSpanId"], "00f067aa0ba902b7");
        assert_eq!(span["spanId"], context.span_id());
        assert_eq!(span["kind"], 2);
        assert_eq!(span["startTimeUnixNano"], "1000000000");
        assert_eq!(span["endTimeUnixNano"], "1003000000");
        assert_eq!(span["attributes"][0]["value"]["intValue"], "201");
    }
}
