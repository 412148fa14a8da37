//! Operability: the Prometheus metrics both flows update, served at `GET /metrics`.
//!
//! One [`Metrics`] per application (tests run several in one process). Every name starts
//! with `sluice_`; counters end in `_total`, durations are in seconds. The README lists them.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// `[(label, value); N]`: label sets without a derive.
pub type Labels<const N: usize> = [(&'static str, String); N];

pub type HistogramFamily<const N: usize> = Family<Labels<N>, Histogram, fn() -> Histogram>;

/// A family of durations: 10 µs … ~5 s (a plugin call takes tens of µs, a batch
/// transaction tens of ms).
pub fn seconds_family<const N: usize>() -> HistogramFamily<N> {
    Family::new_with_constructor(seconds_histogram)
}

pub struct Metrics {
    registry: Registry,
    /// Records decided, by plugin, version and outcome (applied, rejected, dead-lettered,
    /// duplicate, stale).
    pub records: Family<Labels<3>, Counter>,
    /// Plugin calls by plugin and version: how long each took (the sandbox's own family:
    /// every plugin keeps its version's histogram).
    pub plugin_calls: HistogramFamily<2>,
    /// Records per committed batch, by topic.
    pub batch_records: HistogramFamily<1>,
    /// How long a batch's transaction took, by topic.
    pub batch_commit: HistogramFamily<1>,
    /// End offset − committed position, by topic and partition (librdkafka statistics).
    pub consumer_lag: Family<Labels<2>, Gauge>,
    /// Partitions this member of the ingest group owns, by topic.
    pub assigned_partitions: Family<Labels<1>, Gauge>,
    /// Partitions given to or taken from this member, by change (assigned, revoked, lost:
    /// taken without a revocation, e.g. after a session timeout).
    pub partition_changes: Family<Labels<1>, Counter>,
    /// Outbox rows waiting to be published (read at scrape time).
    pub outbox_backlog: Gauge,
    /// From an outbox row's commit to the broker's acknowledgement of its last record.
    pub outbox_publish: Histogram,
    /// HTTP requests by route (the matched path pattern), method and status.
    http_requests: Family<Labels<3>, Counter>,
    /// HTTP request durations by route and method.
    http_request_duration: HistogramFamily<2>,
    /// The request series met so far, found by route without making label strings.
    http_series: RwLock<HashMap<Box<str>, Vec<RequestSeries>>>,
    /// Install attempts by plugin and result (installed, unchanged, refused).
    pub plugin_installs: Family<Labels<2>, Counter>,
    /// Refused components by plugin and reason (too-large, compile, compile-limit, link,
    /// limits, self-test).
    pub plugin_refusals: Family<Labels<2>, Counter>,
    /// Changes of the active version on this instance, by plugin (installs, rollbacks,
    /// promotions, and versions followed from the fleet).
    pub plugin_swaps: Family<Labels<1>, Counter>,
    /// Records plugins emitted (contract 0.2) in committed batches, by topic emitted to.
    pub emitted_records: Family<Labels<1>, Counter>,
    /// Versions the guard rolled back, by plugin.
    pub guard_rollbacks: Family<Labels<1>, Counter>,
    /// Records called a second time in their batch's transaction because their call saw
    /// another state than their key's (keyed state, contract 0.2), by plugin.
    pub called_again: Family<Labels<1>, Counter>,
    /// Rows written to the declared tables in committed batches (contract 0.3), by table and
    /// kind of write.
    pub table_writes: Family<Labels<2>, Counter>,
}

/// Bucket bounds of the duration histograms: 1, 2.5 and 5 of each decade from 10 µs to 5 s,
/// round numbers as Prometheus client libraries use (not powers that print as float noise).
const SECONDS_BUCKETS: [f64; 18] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

fn size_histogram() -> Histogram {
    // 1 … 4096 records.
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// One request series: its method and status, with the handles of its count and of its
/// route and method's durations.
struct RequestSeries {
    method: &'static str,
    status: u16,
    count: Counter,
    duration: Histogram,
}

/// The handles of a route's series with this method and status, if met before.
fn handles(series: &[RequestSeries], method: &str, status: u16) -> Option<(Counter, Histogram)> {
    series
        .iter()
        .find(|s| s.method == method && s.status == status)
        .map(|s| (s.count.clone(), s.duration.clone()))
}

impl Metrics {
    /// Count a request and its duration under its route pattern, method and status. The
    /// labels are made the first time a series is met; later requests only look it up.
    pub fn http_request(&self, route: &str, method: &'static str, status: u16, seconds: f64) {
        let known = self
            .http_series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(route)
            .and_then(|series| handles(series, method, status));
        let (count, duration) = known.unwrap_or_else(|| {
            // A miss: look again under the write lock, so that two requests missing the same
            // series at once leave one entry (the family hands both the same metrics).
            let mut series = self
                .http_series
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let series = series.entry(route.into()).or_default();
            if let Some(known) = handles(series, method, status) {
                return known;
            }
            let count = self
                .http_requests
                .get_or_create(&[
                    ("route", route.to_string()),
                    ("method", method.to_string()),
                    ("status", status.to_string()),
                ])
                .clone();
            let duration = self
                .http_request_duration
                .get_or_create(&[("route", route.to_string()), ("method", method.to_string())])
                .clone();
            series.push(RequestSeries {
                method,
                status,
                count: count.clone(),
                duration: duration.clone(),
            });
            (count, duration)
        });
        count.inc();
        duration.observe(seconds);
    }

    /// `plugin_calls` is the sandbox's family (`Sandbox::call_durations`).
    pub fn new(plugin_calls: HistogramFamily<2>) -> Self {
        let sizes: fn() -> Histogram = size_histogram;
        let mut metrics = Self {
            registry: Registry::with_prefix("sluice"),
            records: Family::default(),
            plugin_calls,
            batch_records: Family::new_with_constructor(sizes),
            batch_commit: seconds_family(),
            consumer_lag: Family::default(),
            assigned_partitions: Family::default(),
            partition_changes: Family::default(),
            outbox_backlog: Gauge::default(),
            outbox_publish: seconds_histogram(),
            http_requests: Family::default(),
            http_request_duration: seconds_family(),
            http_series: RwLock::default(),
            plugin_installs: Family::default(),
            plugin_refusals: Family::default(),
            plugin_swaps: Family::default(),
            emitted_records: Family::default(),
            guard_rollbacks: Family::default(),
            called_again: Family::default(),
            table_writes: Family::default(),
        };
        let r = &mut metrics.registry;
        r.register(
            "records",
            "Records decided, by plugin, version and outcome",
            metrics.records.clone(),
        );
        r.register_with_unit(
            "plugin_call_duration",
            "Plugin calls (one record each), by plugin and version",
            Unit::Seconds,
            metrics.plugin_calls.clone(),
        );
        r.register(
            "batch_records",
            "Records per committed ingest batch, by topic",
            metrics.batch_records.clone(),
        );
        r.register_with_unit(
            "batch_commit_duration",
            "Time to commit an ingest batch's transaction, by topic",
            Unit::Seconds,
            metrics.batch_commit.clone(),
        );
        r.register(
            "consumer_lag_records",
            "End offset minus committed position, by topic and partition",
            metrics.consumer_lag.clone(),
        );
        r.register(
            "assigned_partitions",
            "Partitions of the ingest group this member owns, by topic",
            metrics.assigned_partitions.clone(),
        );
        r.register(
            "partition_changes",
            "Partitions given to or taken from this member (assigned, revoked, lost)",
            metrics.partition_changes.clone(),
        );
        r.register(
            "outbox_backlog_rows",
            "Outbox rows waiting to be published",
            metrics.outbox_backlog.clone(),
        );
        r.register_with_unit(
            "outbox_publish_latency",
            "From an outbox row's commit to the broker's acknowledgement",
            Unit::Seconds,
            metrics.outbox_publish.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests, by route, method and status",
            metrics.http_requests.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "HTTP request durations, by route and method",
            Unit::Seconds,
            metrics.http_request_duration.clone(),
        );
        r.register(
            "plugin_installs",
            "Plugin install attempts, by plugin and result",
            metrics.plugin_installs.clone(),
        );
        r.register(
            "plugin_refusals",
            "Components refused, by plugin and reason",
            metrics.plugin_refusals.clone(),
        );
        r.register(
            "plugin_swaps",
            "Changes of the active plugin version on this instance, by plugin",
            metrics.plugin_swaps.clone(),
        );
        r.register(
            "emitted_records",
            "Records plugins emitted in committed batches, by topic",
            metrics.emitted_records.clone(),
        );
        r.register(
            "records_called_again",
            "Records called again with their key's state in their batch's transaction, by plugin",
            metrics.called_again.clone(),
        );
        r.register(
            "table_writes",
            "Table writes (upsert, delete, add) of committed batches, by table and kind",
            metrics.table_writes.clone(),
        );
        r.register(
            "guard_rollbacks",
            "Versions the guard rolled back on its own, by plugin",
            metrics.guard_rollbacks.clone(),
        );
        metrics
    }

    /// The exposition, in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    pub fn observe_records(&self, plugin: &str, version: &str, outcome: &str, n: usize) {
        if n > 0 {
            let [plugin, version] = plugin_labels(plugin, version);
            self.records
                .get_or_create(&[plugin, version, ("outcome", outcome.to_string())])
                .inc_by(n as u64);
        }
    }

    pub fn observe_table_writes(&self, table: &str, op: &str, n: u64) {
        self.table_writes
            .get_or_create(&[("table", table.to_string()), ("op", op.to_string())])
            .inc_by(n);
    }

    pub fn observe_emitted(&self, topic: &str, n: u64) {
        self.emitted_records
            .get_or_create(&[("topic", topic.to_string())])
            .inc_by(n);
    }

    pub fn called_again(&self, plugin: &str, n: usize) {
        if n > 0 {
            self.called_again
                .get_or_create(&[("plugin", plugin.to_string())])
                .inc_by(n as u64);
        }
    }

    pub fn guard_rolled_back(&self, plugin: &str) {
        self.guard_rollbacks
            .get_or_create(&[("plugin", plugin.to_string())])
            .inc();
    }

    pub fn observe_batch(&self, topic: &str, records: usize, took: Duration) {
        let labels = [("topic", topic.to_string())];
        self.batch_records
            .get_or_create(&labels)
            .observe(records as f64);
        self.batch_commit
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn plugin_installed(&self, plugin: &str, result: &'static str) {
        self.plugin_installs
            .get_or_create(&[
                ("plugin", plugin.to_string()),
                ("result", result.to_string()),
            ])
            .inc();
    }

    pub fn plugin_refused(&self, plugin: &str, reason: &'static str) {
        self.plugin_installed(plugin, "refused");
        self.plugin_refusals
            .get_or_create(&[
                ("plugin", plugin.to_string()),
                ("reason", reason.to_string()),
            ])
            .inc();
    }

    pub fn plugin_swapped(&self, plugin: &str) {
        self.plugin_swaps
            .get_or_create(&[("plugin", plugin.to_string())])
            .inc();
    }
}

/// The labels of one plugin version.
pub fn plugin_labels(plugin: &str, version: &str) -> Labels<2> {
    [
        ("plugin", plugin.to_string()),
        ("version", short_version(version).to_string()),
    ]
}

/// The version label: the first 12 hex digits of the sha256, as in the logs.
pub fn short_version(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_family_with_the_prefix_and_units() {
        let metrics = Metrics::new(seconds_family());
        metrics.observe_records("stock", &"ab".repeat(32), "applied", 3);
        metrics.observe_batch("orders", 3, Duration::from_millis(4));
        metrics.plugin_refused("stock", "link");
        metrics
            .plugin_calls
            .get_or_create(&plugin_labels("stock", "native"))
            .observe(0.000_04);
        let text = metrics.render();
        assert!(
            text.contains(
                r#"sluice_records_total{plugin="stock",version="abababababab",outcome="applied"} 3"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"sluice_plugin_installs_total{plugin="stock",result="refused"} 1"#)
        );
        assert!(text.contains(r#"sluice_plugin_refusals_total{plugin="stock",reason="link"} 1"#));
        assert!(text.contains(
            r#"sluice_plugin_call_duration_seconds_count{plugin="stock",version="native"} 1"#
        ));
        assert!(text.contains(r#"sluice_batch_records_count{topic="orders"} 1"#));
        assert!(text.contains("# TYPE sluice_batch_commit_duration_seconds histogram"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn bucket_bounds_print_as_round_numbers() {
        let metrics = Metrics::new(seconds_family());
        metrics.observe_batch("orders", 3, Duration::from_millis(4));
        let text = metrics.render();
        let bounds: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("sluice_batch_commit_duration_seconds_bucket"))
            .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(bounds.first(), Some(&"0.00001"), "{bounds:?}");
        assert!(
            bounds.contains(&"0.0025") && bounds.contains(&"5.0"),
            "{bounds:?}"
        );
        for bound in &bounds {
            assert!(bound.len() <= 8, "a round bound, not float noise: {bound}");
        }
    }

    #[test]
    fn requests_missing_the_same_series_at_once_leave_one_entry_and_every_count() {
        let metrics = Metrics::new(seconds_family());
        let threads = 4;
        // Each round a series none has met, all threads released on it together.
        let statuses = 100..600u16;
        let round = std::sync::Barrier::new(threads);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for status in statuses.clone() {
                        round.wait();
                        metrics.http_request("/orders", "POST", status, 0.001);
                    }
                });
            }
        });
        let series = metrics
            .http_series
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        assert_eq!(
            series.get("/orders").map(Vec::len),
            Some(statuses.len()),
            "one entry per series"
        );
        let text = metrics.render();
        for status in statuses {
            let line = format!(
                r#"sluice_http_requests_total{{route="/orders",method="POST",status="{status}"}} {threads}"#
            );
            assert!(text.contains(&line), "{line} in {text}");
        }
    }
}
