//! Settings, from flags, environment and the `--config` file: the one place configuration is
//! read.

mod file;

pub use file::{Provenance, render as render_effective};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;

use crate::runtime::{CompileLimits, Compiler, Limits, PluginConfig, SandboxConfig};

#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, long_about = LONG_ABOUT)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Where each setting came from (`sluice config`).
    #[arg(skip)]
    pub provenance: Provenance,
}

const LONG_ABOUT: &str = "Sluice consumes order events from Kafka, hands each one to a sandboxed \
WebAssembly plugin, and applies the stock mutations it returns to PostgreSQL. Its HTTP API \
creates orders and publishes their events through a transactional outbox.\n\n\
Every flag can also be set through the environment variable shown with it, or in the TOML \
file of --config under its long name (flag > environment > file > default).";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run ingest, the order relay and the HTTP API against an external Kafka and PostgreSQL.
    Serve(ServeArgs),
    /// Run everything in one process with nothing to install: an embedded Kafka-protocol
    /// broker, a throwaway PostgreSQL (unless DATABASE_URL is set), the bundled stock plugin.
    Dev(DevArgs),
    /// Measure ingest throughput and plugin call cost on this machine, with an embedded broker
    /// and a throwaway PostgreSQL (build with --release for figures that mean something).
    Bench(crate::bench::BenchArgs),
    /// Print the effective configuration of `sluice serve` with these flags (environment and
    /// --config file included), each setting with its source, secrets hidden.
    Config(ServeArgs),
    /// Write, build, check and test plugins: `new`, `build`, `check`, `test`, `replay`.
    Plugin(crate::kit::PluginArgs),
    /// Compile a plugin component read on stdin (run by sluice itself, under limits).
    #[command(hide = true)]
    CompilePlugin(CompilePluginArgs),
    /// The benchmark's broker, in a process of its own (run by `sluice bench`).
    #[command(hide = true)]
    BenchBroker(crate::bench::BrokerArgs),
}

#[derive(Debug, Args)]
pub struct CompilePluginArgs {
    /// The sandbox's memory limit, MiB (part of the compiled code's configuration).
    #[arg(long, default_value_t = 64)]
    pub memory_mib: usize,
}

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
pub struct DevArgs {
    /// Use this PostgreSQL instead of starting a throwaway one.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,

    /// Partitions of the embedded broker's topics.
    #[arg(long, env = "SLUICE_DEV_PARTITIONS", default_value_t = 8)]
    pub partitions: i32,

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

    /// Consumer group of the order side's status consumer.
    #[arg(long, env = "SLUICE_ORDERS_GROUP_ID", default_value = "sluice-orders")]
    pub orders_group_id: String,

    /// How long an event id is remembered for dedupe, hours.
    #[arg(long, env = "SLUICE_DEDUPE_RETENTION_HOURS", default_value_t = 168)]
    pub dedupe_retention_hours: u64,

    /// A librdkafka property for every Kafka client, kcat-style; repeatable
    /// (e.g. -X session.timeout.ms=6000). Wins over SLUICE_KAFKA_OPTIONS.
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
    #[arg(long, env = "SLUICE_PLUGIN_VERSIONS_KEPT", default_value_t = 10)]
    pub plugin_versions_kept: u32,

    /// Threads that run plugin calls in parallel [default: the number of CPUs].
    #[arg(long, env = "SLUICE_PLUGIN_THREADS")]
    pub plugin_threads: Option<usize>,

    /// Most messages handled in one database transaction.
    #[arg(long, env = "SLUICE_BATCH_MAX_MESSAGES", default_value_t = 1000)]
    pub batch_max_messages: usize,

    /// Longest wait to fill a batch, milliseconds.
    #[arg(long, env = "SLUICE_BATCH_MAX_WAIT_MS", default_value_t = 20)]
    pub batch_max_wait_ms: u64,

    /// HTTP connections open at once; more are closed as they arrive.
    #[arg(long, env = "SLUICE_HTTP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub http_max_connections: usize,

    /// Seconds a client has to send a request's headers (and the most an idle connection
    /// stays open) and, separately, between two chunks of its body.
    #[arg(long, env = "SLUICE_HTTP_HEADER_TIMEOUT_S", default_value_t = 10)]
    pub http_header_timeout_s: u64,

    /// Seconds a request may take, from its headers to the response (then 408).
    #[arg(long, env = "SLUICE_HTTP_REQUEST_TIMEOUT_S", default_value_t = 30)]
    pub http_request_timeout_s: u64,

    /// Seconds requests in flight get to finish at shutdown before their connections close.
    #[arg(long, env = "SLUICE_SHUTDOWN_GRACE_S", default_value_t = 5)]
    pub shutdown_grace_s: u64,

    /// Size of the PostgreSQL connection pool.
    #[arg(long, env = "SLUICE_DB_MAX_CONNECTIONS", default_value_t = 10)]
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
    #[arg(long, env = "SLUICE_PLUGIN_MEMORY_MIB", default_value_t = 64)]
    pub plugin_memory_mib: usize,

    /// Wall-clock deadline of one plugin call, milliseconds.
    #[arg(long, env = "SLUICE_PLUGIN_TIMEOUT_MS", default_value_t = 100)]
    pub plugin_timeout_ms: u64,

    /// Largest plugin component accepted (upload or file), MiB.
    #[arg(long, env = "SLUICE_PLUGIN_MAX_MIB", default_value_t = 8)]
    pub plugin_max_mib: usize,

    /// Longest a plugin may take to compile, seconds (compiled in a child process, which is
    /// killed then).
    #[arg(long, env = "SLUICE_PLUGIN_COMPILE_TIMEOUT_S", default_value_t = 30)]
    pub plugin_compile_timeout_s: u64,

    /// Address space the plugin compiler process may use, MiB.
    #[arg(long, env = "SLUICE_PLUGIN_COMPILE_MEMORY_MIB", default_value_t = 2048)]
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
    pub sandbox: SandboxConfig,
    pub plugins: PluginSettings,
    pub admin: AdminAccess,
    /// Dead letters readable without admin access.
    pub public_dead_letters: bool,
    pub http_limits: crate::http::EdgeLimits,
}

/// Who may use the admin endpoints.
#[derive(Debug, Clone)]
pub enum AdminAccess {
    /// `Authorization: Bearer <token>`, from anywhere.
    Token(SecretString),
    /// Clients on loopback whose request was not forwarded by a proxy.
    Loopback,
}

impl AdminAccess {
    fn from_token(token: Option<SecretString>) -> Self {
        token.map_or(Self::Loopback, Self::Token)
    }
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
    /// Versions of each plugin kept besides the active and previous ones.
    pub versions_kept: u32,
    /// Handlers compiled into the host, loaded as plugins of these names (the benchmark's
    /// native baseline).
    pub native: Vec<(String, crate::runtime::NativeHandler)>,
}

#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub group_id: String,
    pub topic: String,
    pub status_topic: String,
    pub dead_letter_suffix: String,
    pub orders_group_id: String,
    /// topic → plugin name; the ingest flow consumes these topics.
    pub routes: Routes,
    /// librdkafka properties applied last, over Sluice's own defaults.
    pub options: Vec<(String, String)>,
    /// Defaults for the consumers only, applied before `options` (e.g. `sluice dev` shortens
    /// `fetch.wait.max.ms` for its embedded broker).
    pub consumer_defaults: Vec<(String, String)>,
}

/// Which plugin handles which topic (`topic=plugin`); the ingest flow consumes these topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes(Vec<(String, String)>);

impl Routes {
    /// Later pairs for the same topic replace earlier ones.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        let mut routes: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        for (topic, plugin) in pairs {
            routes.retain(|(t, _)| *t != topic);
            routes.push((topic, plugin));
        }
        Self(routes)
    }

    /// The one route `topic=plugin`.
    pub fn single(topic: &str, plugin: &str) -> Self {
        Self(vec![(topic.to_string(), plugin.to_string())])
    }

    /// The plugin that handles `topic`.
    pub fn plugin_for(&self, topic: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(t, _)| t == topic)
            .map(|(_, plugin)| plugin.as_str())
    }

    /// The topics ingest consumes.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(topic, _)| topic.as_str())
    }

    /// The topics `plugin` handles.
    pub fn topics_of(&self, plugin: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, p)| p == plugin)
            .map(|(topic, _)| topic.clone())
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(t, p)| (t.as_str(), p.as_str()))
    }
}

impl std::fmt::Display for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pairs: Vec<String> = self.0.iter().map(|(t, p)| format!("{t}={p}")).collect();
        f.write_str(&pairs.join(","))
    }
}

impl KafkaSettings {
    /// Every topic Sluice uses: the order and status topics, each routed topic and its
    /// dead-letter topic.
    pub fn topics(&self) -> Vec<String> {
        let mut topics = vec![self.topic.clone(), self.status_topic.clone()];
        for topic in self.routes.topics() {
            topics.extend([
                topic.to_string(),
                format!("{topic}{}", self.dead_letter_suffix),
            ]);
        }
        topics.sort();
        topics.dedup();
        topics
    }
}

#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub batch_max_messages: usize,
    pub batch_max_wait: Duration,
    pub dedupe_retention: Duration,
    /// How often expired dedupe event ids are removed; the first sweep runs one period
    /// after start.
    pub dedupe_sweep_interval: Duration,
    /// Threads plugin calls run on.
    pub plugin_threads: usize,
}

/// One plugin thread per CPU.
pub fn default_plugin_threads() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// Expired event ids are swept hourly.
pub const DEDUPE_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

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
        );
        settings.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        settings.kafka.topic = topic.to_string();
        settings.kafka.status_topic = format!("{topic}.status");
        settings.kafka.routes = Routes::single(topic, "stock");
        settings.kafka.consumer_defaults = crate::dev::embedded_broker_consumer_defaults();
        Ok(settings)
    }

    pub fn from_args(
        common: CommonArgs,
        database_url: SecretString,
        kafka_brokers: String,
    ) -> Self {
        // Flags win over the environment: apply the env list first.
        let mut options = common.kafka_options;
        options.extend(common.kafka_option);
        Self {
            http_addr: common.http_addr,
            database_url,
            db_max_connections: common.db_max_connections,
            kafka: KafkaSettings {
                brokers: kafka_brokers,
                group_id: common.group_id,
                dead_letter_suffix: common.dead_letter_suffix,
                routes: if common.routes.is_empty() {
                    Routes::new(vec![(common.topic.clone(), "stock".to_string())])
                } else {
                    Routes::new(common.routes)
                },
                topic: common.topic,
                status_topic: common.status_topic,
                orders_group_id: common.orders_group_id,
                options,
                consumer_defaults: Vec::new(),
            },
            ingest: IngestSettings {
                batch_max_messages: common.batch_max_messages.max(1),
                batch_max_wait: Duration::from_millis(common.batch_max_wait_ms),
                dedupe_retention: Duration::from_secs(
                    common.dedupe_retention_hours.saturating_mul(3600),
                ),
                dedupe_sweep_interval: DEDUPE_SWEEP_INTERVAL,
                plugin_threads: common.plugin_threads.unwrap_or_else(default_plugin_threads),
            },
            sandbox: common.sandbox.sandbox_config(),
            plugins: PluginSettings {
                paths: common.plugins,
                dir: common.plugin_dir,
                compiler: Compiler::this_binary(),
                compile_limits: common.sandbox.compile_limits(),
                versions_kept: common.plugin_versions_kept,
                native: Vec::new(),
            },
            admin: AdminAccess::from_token(common.admin_token),
            public_dead_letters: common.public_dead_letters,
            http_limits: crate::http::EdgeLimits {
                max_connections: common.http_max_connections.max(1),
                header_timeout: Duration::from_secs(common.http_header_timeout_s.max(1)),
                body_timeout: Duration::from_secs(common.http_header_timeout_s.max(1)),
                request_timeout: Duration::from_secs(common.http_request_timeout_s.max(1)),
                shutdown_grace: Duration::from_secs(common.shutdown_grace_s),
            },
        }
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
        let settings = Self::from_args(args.common, database_url, args.kafka_brokers);
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
