//! Settings: the flags (and their environment variables) of `serve` and `dev`, and the
//! `Settings` the application is built from. Each part of the application owns its own
//! settings type and its defaults; this module reads the flags into them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};
use secrecy::SecretString;

use crate::control::{GuardPolicy, Policy};
use crate::db;
use crate::domain::tables::TableLimits;
use crate::domain::{OutputLimits, Routes};
use crate::http::{AdminAccess, EdgeLimits};
use crate::ingest::IngestSettings;
use crate::kafka::{self, GroupProtocol, KafkaSettings};
use crate::outbox::RelaySettings;
use crate::runtime::{
    CompileLimits, Compiler, Isolation, IsolationConfig, Limits, NativeHandler, PluginConfig,
    SandboxConfig,
};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// PostgreSQL connection URL (required). `?sslmode=verify-full&sslrootcert=ca.pem` for TLS.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,

    /// Kafka bootstrap servers, comma separated.
    #[arg(long, env = "SLUICE_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Without SLUICE_ADMIN_TOKEN, let clients on loopback use the admin endpoints (for a
    /// local setup: a reverse proxy on the same host would open them to everyone it forwards).
    #[arg(long, env = "SLUICE_ADMIN_OPEN_ON_LOOPBACK")]
    pub admin_open_on_loopback: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct CommonArgs {
    /// A TOML file of settings, keyed by long flag name (`http-addr = "0.0.0.0:8080"`);
    /// flags and environment win over it.
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address the HTTP API listens on (port 0 picks a free one).
    #[arg(long, env = "SLUICE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Kafka consumer group of the ingest flow.
    #[arg(long, env = "SLUICE_GROUP_ID", default_value = "sluice-catalog")]
    pub group_id: String,

    /// Topic the order flow publishes to and the ingest flow consumes.
    #[arg(long, env = "SLUICE_TOPIC", default_value = "example-order-topic")]
    pub topic: String,

    /// Topic the catalog side reports each order's outcome on; the order side consumes it.
    #[arg(
        long,
        env = "SLUICE_STATUS_TOPIC",
        default_value = "order-status-topic"
    )]
    pub status_topic: String,

    /// Poison records of topic T are copied to T + this suffix (Spring Kafka's convention).
    #[arg(long, env = "SLUICE_DEAD_LETTER_SUFFIX", default_value = ".DLT")]
    pub dead_letter_suffix: String,

    /// Which plugin handles which topic, as `topic=plugin`; repeatable or comma separated
    /// [default: <topic>=stock].
    #[arg(long = "route", env = "SLUICE_ROUTES", value_name = "TOPIC=PLUGIN",
          value_delimiter = ',', value_parser = parse_key_value)]
    pub routes: Vec<(String, String)>,

    /// Topics whose route keeps keyed state (contract 0.2): each call gets the state of its
    /// record's key, and may set or clear it in the batch's transaction; repeatable or comma
    /// separated.
    #[arg(
        long = "state",
        env = "SLUICE_STATE",
        value_name = "TOPIC",
        value_delimiter = ','
    )]
    pub state: Vec<String>,

    /// Where the route of TOPIC may emit records (contract 0.2): a topic, or a prefix ending in
    /// `*`; repeatable or comma separated (`orders=alerts,orders=audit.*`). A record emitted
    /// anywhere else makes its message a dead letter.
    #[arg(long = "emit", env = "SLUICE_EMIT", value_name = "TOPIC=ALLOWED",
          value_delimiter = ',', value_parser = parse_key_value)]
    pub emit: Vec<(String, String)>,

    /// Tables the route of TOPIC may write (contract 0.3): `TOPIC=TABLE`, or `TOPIC=TABLE:OPS`
    /// with OPS some of `upsert`, `delete`, `add` joined by `+` (all three by default);
    /// repeatable or comma separated. TABLE is the name the plugin writes (`schema.table`, or a
    /// table on the search path). Sluice reads each one's shape from PostgreSQL's catalog at
    /// start and at every install, and never creates or changes a table.
    #[arg(long = "table", env = "SLUICE_TABLES", value_name = "TOPIC=TABLE[:OPS]",
          value_delimiter = ',', value_parser = parse_key_value)]
    pub tables: Vec<(String, String)>,

    /// Table writes (upserts, deletes, adds) one message may make.
    #[arg(long, env = "SLUICE_TABLE_MAX_WRITES",
          default_value_t = TableLimits::default().writes)]
    pub table_max_writes: usize,

    /// Bytes of one table write's values, KiB.
    #[arg(long, env = "SLUICE_TABLE_MAX_ROW_KIB",
          default_value_t = TableLimits::default().row_bytes >> 10)]
    pub table_max_row_kib: usize,

    /// Bytes of all of one message's table writes' values, KiB.
    #[arg(long, env = "SLUICE_TABLE_MAX_KIB",
          default_value_t = TableLimits::default().bytes >> 10)]
    pub table_max_kib: usize,

    /// Records one message may emit.
    #[arg(long, env = "SLUICE_EMIT_MAX_RECORDS",
          default_value_t = OutputLimits::default().emit_records)]
    pub emit_max_records: usize,

    /// Bytes one message may emit, in all (keys, values, headers), KiB.
    #[arg(long, env = "SLUICE_EMIT_MAX_KIB",
          default_value_t = OutputLimits::default().emit_bytes >> 10)]
    pub emit_max_kib: usize,

    /// Bytes of one key's state, KiB.
    #[arg(long, env = "SLUICE_STATE_MAX_KIB",
          default_value_t = OutputLimits::default().state_bytes >> 10)]
    pub state_max_kib: usize,

    /// Records a newly installed or promoted version decides (fleet-wide) before the guard
    /// judges it.
    #[arg(long, env = "SLUICE_GUARD_RECORDS",
          default_value_t = GuardPolicy::default().window)]
    pub guard_records: u64,

    /// The guard rolls a new version back when its failure rate (dead letters) is more than
    /// this many percentage points above its predecessor's...
    #[arg(long, env = "SLUICE_GUARD_POINTS",
          default_value_t = GuardPolicy::default().points)]
    pub guard_points: f64,

    /// ...and also more than this many times its predecessor's.
    #[arg(long, env = "SLUICE_GUARD_FACTOR",
          default_value_t = GuardPolicy::default().factor)]
    pub guard_factor: f64,

    /// Records a shadow candidate must have been compared on, with no difference, before it
    /// may be promoted (unless forced).
    #[arg(long, env = "SLUICE_SHADOW_MIN_COMPARED",
          default_value_t = Policy::default().shadow_min_compared)]
    pub shadow_min_compared: u64,

    /// Directory watched for `<plugin>.wasm` files: dropping or replacing one installs it as
    /// the fleet's active version of that plugin.
    #[arg(long, env = "SLUICE_PLUGIN_DIR")]
    pub plugin_dir: Option<PathBuf>,

    /// Bearer token for the admin endpoints (plugins, catalog upserts, dead letters). Required
    /// by `serve` (see --admin-open-on-loopback); without it `dev` answers them on loopback.
    #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<SecretString>,

    /// Let anyone read dead letters (`GET /dead-letters[/{id}]`); they hold whole records,
    /// which may carry personal data, so by default reading them is admin.
    #[arg(long, env = "SLUICE_PUBLIC_DEAD_LETTERS")]
    pub public_dead_letters: bool,

    /// How the members of a group share its partitions: `consumer` (Kafka's consumer group
    /// protocol, KIP-848: the broker moves only the partitions that change owner), `classic`
    /// (the cooperative-sticky assignor), or `auto`: `consumer` where the broker supports it
    /// and no classic-only property (`-X session.timeout.ms=…`) is set.
    #[arg(long, env = "SLUICE_GROUP_PROTOCOL", default_value = "auto",
          value_parser = parse_group_protocol)]
    pub group_protocol: GroupProtocol,

    /// This member's stable name in its groups (static membership; e.g. the pod or host
    /// name): restarted within the group's session timeout, it gets its partitions back with
    /// no reassignment. Unique per member.
    #[arg(long, env = "SLUICE_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Consumer group of the order side's status consumer.
    #[arg(long, env = "SLUICE_ORDERS_GROUP_ID", default_value = "sluice-orders")]
    pub orders_group_id: String,

    /// How long an event id is remembered for dedupe, hours.
    #[arg(long, env = "SLUICE_DEDUPE_RETENTION_HOURS",
          default_value_t = IngestSettings::default().dedupe_retention.as_secs() / 3600)]
    pub dedupe_retention_hours: u64,

    /// A librdkafka property for every Kafka client, kcat-style; repeatable
    /// (e.g. -X fetch.wait.max.ms=100). Wins over SLUICE_KAFKA_OPTIONS.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub kafka_option: Vec<(String, String)>,

    /// librdkafka properties as `key=value,key=value`.
    #[arg(long, env = "SLUICE_KAFKA_OPTIONS", value_name = "KEY=VALUE,...",
          value_delimiter = ',', value_parser = parse_key_value)]
    pub kafka_options: Vec<(String, String)>,

    /// A handler component (.wasm) to load at start, named after its file (`my_rules.wasm` is
    /// plugin `my_rules`); repeatable. The bundled `stock` plugin is always there. The fleet's
    /// active versions in PostgreSQL, once any were installed, take precedence.
    #[arg(long = "plugin", env = "SLUICE_PLUGINS", value_delimiter = ',')]
    pub plugins: Vec<PathBuf>,

    #[command(flatten)]
    pub sandbox: SandboxArgs,

    /// Versions of each plugin kept in the database, besides the active and previous ones.
    #[arg(long, env = "SLUICE_PLUGIN_VERSIONS_KEPT",
          default_value_t = Policy::default().versions_kept)]
    pub plugin_versions_kept: u32,

    /// Threads that run plugin calls in parallel [default: the number of CPUs].
    #[arg(long, env = "SLUICE_PLUGIN_THREADS")]
    pub plugin_threads: Option<usize>,

    /// Most messages handled in one database transaction.
    #[arg(long, env = "SLUICE_BATCH_MAX_MESSAGES",
          default_value_t = IngestSettings::default().batch_max_messages)]
    pub batch_max_messages: usize,

    /// Longest wait to fill a batch, milliseconds.
    #[arg(long, env = "SLUICE_BATCH_MAX_WAIT_MS",
          default_value_t = millis(IngestSettings::default().batch_max_wait))]
    pub batch_max_wait_ms: u64,

    /// Longest the outbox relay waits between rounds while busy, so that each carries more
    /// records (fewer, larger produce requests), milliseconds; 0: it never waits.
    #[arg(long, env = "SLUICE_RELAY_MAX_LINGER_MS",
          default_value_t = millis(RelaySettings::default().max_linger))]
    pub relay_max_linger_ms: u64,

    /// HTTP connections open at once; more are closed as they arrive.
    #[arg(long, env = "SLUICE_HTTP_MAX_CONNECTIONS",
          default_value_t = EdgeLimits::default().max_connections)]
    pub http_max_connections: usize,

    /// Seconds a client has to send a request's headers (and the most an idle connection
    /// stays open) and, separately, between two chunks of its body.
    #[arg(long, env = "SLUICE_HTTP_HEADER_TIMEOUT_S",
          default_value_t = EdgeLimits::default().header_timeout.as_secs())]
    pub http_header_timeout_s: u64,

    /// Seconds a request may take, from its headers to the response (then 408).
    #[arg(long, env = "SLUICE_HTTP_REQUEST_TIMEOUT_S",
          default_value_t = EdgeLimits::default().request_timeout.as_secs())]
    pub http_request_timeout_s: u64,

    /// Seconds requests in flight get to finish at shutdown before their connections close.
    #[arg(long, env = "SLUICE_SHUTDOWN_GRACE_S",
          default_value_t = EdgeLimits::default().shutdown_grace.as_secs())]
    pub shutdown_grace_s: u64,

    /// Size of the PostgreSQL connection pool.
    #[arg(long, env = "SLUICE_DB_MAX_CONNECTIONS",
          default_value_t = db::DEFAULT_MAX_CONNECTIONS)]
    pub db_max_connections: u32,
}

/// The sandbox's limits and the plugins' configuration: `serve`, `dev` and the plugin kit
/// (`sluice plugin check|test`) read the same flags.
#[derive(Debug, Clone, Args)]
pub struct SandboxArgs {
    /// Values plugins read with `host.get-config`: `key=value` for every plugin, or
    /// `plugin:key=value` for one (which wins); repeatable or comma separated.
    #[arg(long, env = "SLUICE_PLUGIN_CONFIG", value_name = "KEY=VALUE,...",
          value_delimiter = ',', value_parser = parse_key_value)]
    pub plugin_config: Vec<(String, String)>,

    /// Linear memory one plugin call may use, MiB.
    #[arg(long, env = "SLUICE_PLUGIN_MEMORY_MIB",
          default_value_t = Limits::default().memory_bytes >> 20)]
    pub plugin_memory_mib: usize,

    /// Wall-clock deadline of one plugin call, milliseconds.
    #[arg(long, env = "SLUICE_PLUGIN_TIMEOUT_MS",
          default_value_t = millis(SandboxConfig::default().timeout))]
    pub plugin_timeout_ms: u64,

    /// How much of an instance a plugin's calls share: `batch` (a fresh instance per batch
    /// and plugin thread; the default) or `record` (a fresh instance per record), for every
    /// plugin, or `PLUGIN=batch|record` for one (which wins); repeatable or comma separated.
    #[arg(long, env = "SLUICE_PLUGIN_ISOLATION", value_name = "ISOLATION,...",
          value_delimiter = ',', value_parser = parse_isolation,
          default_value = Isolation::default().as_str())]
    pub plugin_isolation: Vec<String>,

    /// Largest plugin component accepted (upload or file), MiB.
    #[arg(long, env = "SLUICE_PLUGIN_MAX_MIB",
          default_value_t = CompileLimits::default().max_component_bytes >> 20)]
    pub plugin_max_mib: usize,

    /// Longest a plugin may take to compile, seconds (compiled in a child process, which is
    /// killed then).
    #[arg(long, env = "SLUICE_PLUGIN_COMPILE_TIMEOUT_S",
          default_value_t = CompileLimits::default().timeout.as_secs())]
    pub plugin_compile_timeout_s: u64,

    /// Address space the plugin compiler process may use, MiB.
    #[arg(long, env = "SLUICE_PLUGIN_COMPILE_MEMORY_MIB",
          default_value_t = CompileLimits::default().memory_bytes >> 20)]
    pub plugin_compile_memory_mib: u64,
}

impl SandboxArgs {
    pub fn sandbox_config(&self) -> SandboxConfig {
        SandboxConfig {
            limits: Limits {
                memory_bytes: self.plugin_memory_mib.saturating_mul(1 << 20),
                ..Limits::default()
            },
            timeout: Duration::from_millis(self.plugin_timeout_ms),
            plugin_config: PluginConfig::from_pairs(self.plugin_config.clone()),
            // Each value was checked by `parse_isolation` as the flags were read.
            isolation: IsolationConfig::parse(self.plugin_isolation.iter().map(String::as_str))
                .unwrap_or_default(),
            ..SandboxConfig::default()
        }
    }

    pub fn compile_limits(&self) -> CompileLimits {
        CompileLimits {
            max_component_bytes: self.plugin_max_mib.saturating_mul(1 << 20),
            timeout: Duration::from_secs(self.plugin_compile_timeout_s.max(1)),
            memory_bytes: self.plugin_compile_memory_mib.saturating_mul(1 << 20),
            ..CompileLimits::default()
        }
    }
}

/// A duration in the milliseconds a flag takes.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn parse_group_protocol(raw: &str) -> Result<GroupProtocol, String> {
    raw.parse()
}

fn parse_isolation(raw: &str) -> Result<String, String> {
    IsolationConfig::parse([raw]).map(|_| raw.trim().to_string())
}

pub(crate) fn parse_key_value(raw: &str) -> Result<(String, String), String> {
    let (key, value) = raw
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got `{raw}`"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("empty key in `{raw}`"));
    }
    Ok((key.to_string(), value.trim().to_string()))
}

/// Everything the application needs to start, resolved from the CLI (or built by tests).
#[derive(Debug, Clone)]
pub struct Settings {
    pub http_addr: SocketAddr,
    pub database_url: SecretString,
    pub db_max_connections: u32,
    pub kafka: KafkaSettings,
    pub ingest: IngestSettings,
    pub relay: RelaySettings,
    pub sandbox: SandboxConfig,
    pub plugins: PluginSettings,
    pub admin: AdminAccess,
    /// Dead letters readable without admin access.
    pub public_dead_letters: bool,
    pub http_limits: EdgeLimits,
}

#[derive(Debug, Clone)]
pub struct PluginSettings {
    /// Components loaded at start, besides the bundled stock plugin.
    pub paths: Vec<PathBuf>,
    /// Watched for `<plugin>.wasm` drops.
    pub dir: Option<PathBuf>,
    /// Where uploaded and dropped components are compiled.
    pub compiler: Compiler,
    pub compile_limits: CompileLimits,
    /// Versions kept, the guard, the bar for shadow promotions.
    pub policy: Policy,
    /// Handlers compiled into the host, loaded as plugins of these names (the benchmark's
    /// native baseline).
    pub native: Vec<(String, NativeHandler)>,
}

/// The command line's defaults, parsed as `sluice` would (environment included).
#[derive(Debug, Parser)]
struct Defaults {
    #[command(flatten)]
    common: CommonArgs,
}

impl Settings {
    /// The command line's defaults, against a database and brokers of the caller's, with `topic`
    /// routed to the stock plugin and its status topic at `<topic>.status`, listening on any free
    /// port: tests and the benchmark start here and change what they need.
    pub fn local(database_url: &str, brokers: &str, topic: &str) -> anyhow::Result<Self> {
        let Defaults { common } = Defaults::try_parse_from(["sluice"])?;
        let mut settings = Self::from_args(
            common,
            SecretString::from(database_url.to_string()),
            brokers.to_string(),
        )?;
        settings.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        settings.kafka.topic = topic.to_string();
        settings.kafka.status_topic = kafka::status_topic_for(topic);
        settings.kafka.routes = Routes::single(topic, "stock");
        Ok(settings)
    }

    /// Settings from the flags; an allowance (`--state`, `--emit`) for a topic with no route is
    /// an error.
    pub fn from_args(
        common: CommonArgs,
        database_url: SecretString,
        kafka_brokers: String,
    ) -> anyhow::Result<Self> {
        // Flags win over the environment: apply the env list first.
        let mut options = common.kafka_options;
        options.extend(common.kafka_option);
        let routes = if common.routes.is_empty() {
            Routes::new(vec![(common.topic.clone(), "stock".to_string())])
        } else {
            Routes::new(common.routes)
        };
        let routes = routes
            .allow(&common.state, &common.emit)
            .and_then(|routes| routes.allow_tables(&common.tables))
            .map_err(anyhow::Error::msg)?;
        // A plugin that could write the status topic could forge any order's verdict.
        for topic in routes.topics() {
            if routes.allowances(topic).may_emit_to(&common.status_topic) {
                anyhow::bail!(
                    "--emit lets the route of {topic} emit to the status topic {}: refused",
                    common.status_topic
                );
            }
        }
        let mut sandbox = common.sandbox.sandbox_config();
        sandbox.output = OutputLimits {
            emit_records: common.emit_max_records,
            emit_bytes: common.emit_max_kib.saturating_mul(1 << 10),
            state_bytes: common.state_max_kib.saturating_mul(1 << 10),
            tables: TableLimits {
                writes: common.table_max_writes,
                row_bytes: common.table_max_row_kib.saturating_mul(1 << 10),
                bytes: common.table_max_kib.saturating_mul(1 << 10),
            },
        };
        Ok(Self {
            http_addr: common.http_addr,
            database_url,
            db_max_connections: common.db_max_connections,
            kafka: KafkaSettings {
                brokers: kafka_brokers,
                group_id: common.group_id,
                dead_letter_suffix: common.dead_letter_suffix,
                routes,
                topic: common.topic,
                status_topic: common.status_topic,
                orders_group_id: common.orders_group_id,
                options,
                group_protocol: common.group_protocol,
                instance_id: common.instance_id.filter(|id| !id.trim().is_empty()),
            },
            ingest: IngestSettings {
                batch_max_messages: common.batch_max_messages.max(1),
                batch_max_wait: Duration::from_millis(common.batch_max_wait_ms),
                dedupe_retention: Duration::from_secs(
                    common.dedupe_retention_hours.saturating_mul(3600),
                ),
                plugin_threads: common
                    .plugin_threads
                    .unwrap_or_else(|| IngestSettings::default().plugin_threads),
                ..IngestSettings::default()
            },
            relay: RelaySettings {
                max_linger: Duration::from_millis(common.relay_max_linger_ms),
            },
            sandbox,
            plugins: PluginSettings {
                paths: common.plugins,
                dir: common.plugin_dir,
                compiler: Compiler::this_binary(),
                compile_limits: common.sandbox.compile_limits(),
                policy: Policy {
                    versions_kept: common.plugin_versions_kept,
                    guard: GuardPolicy {
                        window: common.guard_records.max(1),
                        points: common.guard_points,
                        factor: common.guard_factor,
                        ..GuardPolicy::default()
                    },
                    shadow_min_compared: common.shadow_min_compared,
                },
                native: Vec::new(),
            },
            admin: AdminAccess::from_token(common.admin_token),
            public_dead_letters: common.public_dead_letters,
            http_limits: EdgeLimits {
                max_connections: common.http_max_connections.max(1),
                header_timeout: Duration::from_secs(common.http_header_timeout_s.max(1)),
                body_timeout: Duration::from_secs(common.http_header_timeout_s.max(1)),
                request_timeout: Duration::from_secs(common.http_request_timeout_s.max(1)),
                shutdown_grace: Duration::from_secs(common.shutdown_grace_s),
            },
        })
    }

    /// The settings of `sluice serve`: as `from_args`, and an admin token unless the operator
    /// opened the admin endpoints on loopback explicitly.
    pub fn for_serve(args: ServeArgs) -> anyhow::Result<Self> {
        let database_url = args.database_url.ok_or_else(|| {
            anyhow::anyhow!(
                "sluice serve needs a PostgreSQL URL: set DATABASE_URL, --database-url or \
                 `database-url` in the --config file"
            )
        })?;
        let settings = Self::from_args(args.common, database_url, args.kafka_brokers)?;
        if let AdminAccess::Loopback = settings.admin {
            if !args.admin_open_on_loopback {
                anyhow::bail!(
                    "sluice serve needs an admin token for its admin endpoints: set \
                     SLUICE_ADMIN_TOKEN (or --admin-token), or pass --admin-open-on-loopback \
                     for a local setup"
                );
            }
            tracing::warn!(
                "admin endpoints are open to every client on loopback (--admin-open-on-loopback): \
                 a reverse proxy on this host must not forward to them"
            );
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn key_values_parse() {
        assert_eq!(
            parse_key_value("session.timeout.ms=6000"),
            Ok(("session.timeout.ms".into(), "6000".into()))
        );
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    #[test]
    fn flags_win_over_the_environment_list() {
        let cli = Cli::try_parse_from([
            "sluice",
            "serve",
            "--database-url",
            "postgres://x",
            "--kafka-options",
            "acks=1,linger.ms=5",
            "-X",
            "acks=all",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve")
        };
        let settings = Settings::for_serve(ServeArgs {
            admin_open_on_loopback: true,
            ..args
        })
        .unwrap();
        assert_eq!(
            settings.kafka.options,
            vec![
                ("acks".to_string(), "1".to_string()),
                ("linger.ms".to_string(), "5".to_string()),
                ("acks".to_string(), "all".to_string()),
            ]
        );
    }
}
