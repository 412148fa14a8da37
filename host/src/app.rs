//! Wires the two flows: builds pool, sandbox, consumer and producer, then runs ingest, the
//! outbox relay and the HTTP API until shutdown, reporting whichever stopped first.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::control::PluginControl;
use crate::db;
use crate::http::{self, AppState, OrderWriter, Shared};
use crate::ingest::{self, Ingest, IngestHealth};
use crate::metrics::Metrics;
use crate::outbox::{self, Relay, status};
use crate::runtime::{Plugin, Registry, Sandbox};

pub struct Application {
    listener: TcpListener,
    pool: PgPool,
    ingest: Ingest,
    relay: Relay,
    status_consumer: rdkafka::consumer::StreamConsumer,
    dedupe_retention: std::time::Duration,
    dedupe_sweep_interval: std::time::Duration,
    control: Arc<PluginControl>,
    plugin_dir: Option<std::path::PathBuf>,
    state: AppState,
    http_limits: http::EdgeLimits,
}

impl Application {
    /// Connect, migrate, load the plugin and bind the HTTP port (port 0 picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool =
            db::connect_and_migrate(&settings.database_url, settings.db_max_connections).await?;

        let sandbox = Sandbox::new(settings.sandbox.clone())?;
        let metrics = Arc::new(Metrics::new(sandbox.call_durations().clone()));
        let registry = Arc::new(Registry::new(
            sandbox,
            settings.plugins.compiler.clone(),
            settings.plugins.compile_limits,
        ));
        let control = Arc::new(PluginControl::new(
            pool.clone(),
            Arc::clone(&registry),
            settings.plugins.policy.clone(),
            Arc::clone(&metrics),
        ));
        control.load_defaults(&settings.plugins.paths).await?;
        for (name, handler) in &settings.plugins.native {
            registry.activate(Arc::new(Plugin::native(registry.sandbox(), name, *handler)));
        }
        for (topic, name) in settings.kafka.routes.iter() {
            let plugin = registry.active(name).with_context(|| {
                format!("topic {topic} routes to plugin {name}, which is not loaded (see --plugin)")
            })?;
            tracing::info!(%topic, plugin = name, version = plugin.version(), "route");
        }

        // `auto` becomes what the brokers support, once, for both groups.
        let mut settings = settings;
        settings.kafka.group_protocol = {
            let kafka = settings.kafka.clone();
            tokio::task::spawn_blocking(move || ingest::consumer::resolve_group_protocol(&kafka))
                .await
                .context("resolving the group protocol")?
        };
        let fence = Arc::new(tokio::sync::Mutex::new(()));
        let consumer = ingest::consumer::create(
            &settings.kafka,
            pool.clone(),
            tokio::runtime::Handle::current(),
            Arc::clone(&fence),
            Arc::clone(&metrics),
        )?;
        let workers = rayon::ThreadPoolBuilder::new()
            .num_threads(settings.ingest.plugin_threads.max(1))
            .thread_name(|i| format!("sluice-plugin-{i}"))
            .build()
            .context("starting the plugin threads")?;
        let producer = outbox::create_producer(&settings.kafka)?;
        let status_consumer = status::create_consumer(&settings.kafka)?;

        let listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("binding the HTTP address {}", settings.http_addr))?;

        let relay_wake = Arc::new(Notify::new());
        let ingest_health = Arc::new(IngestHealth::default());
        let state = AppState::new(Shared {
            pool: pool.clone(),
            topic: settings.kafka.topic.as_str().into(),
            orders: OrderWriter::start(pool.clone(), Arc::clone(&relay_wake)),
            status_topic: settings.kafka.status_topic.as_str().into(),
            control: Arc::clone(&control),
            routes: settings.kafka.routes.clone(),
            ingest_health: Arc::clone(&ingest_health),
            admin: settings.admin.clone(),
            public_dead_letters: settings.public_dead_letters,
            metrics: Arc::clone(&metrics),
        });
        Ok(Self {
            listener,
            pool: pool.clone(),
            ingest: Ingest {
                consumer,
                pool: pool.clone(),
                runtime: tokio::runtime::Handle::current(),
                registry,
                kafka: settings.kafka.clone(),
                routes: settings.kafka.routes.clone(),
                settings: settings.ingest.clone(),
                health: ingest_health,
                relay_wake: Arc::clone(&relay_wake),
                workers: Arc::new(workers),
                fence,
                metrics: Arc::clone(&metrics),
                keeps_state: settings
                    .kafka
                    .routes
                    .topics()
                    .any(|t| settings.kafka.routes.allowances(t).state),
            },
            relay: Relay {
                pool,
                producer,
                wake: relay_wake,
                metrics,
                settings: settings.relay,
            },
            status_consumer,
            dedupe_retention: settings.ingest.dedupe_retention,
            dedupe_sweep_interval: settings.ingest.dedupe_sweep_interval,
            control,
            plugin_dir: settings.plugins.dir.clone(),
            state,
            http_limits: settings.http_limits,
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener
            .local_addr()
            .context("reading the bound address")
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether ingest makes progress, and how many records it decided.
    pub fn ingest_health(&self) -> Arc<IngestHealth> {
        Arc::clone(&self.ingest.health)
    }

    /// Plugin installs and rollbacks, and the active versions.
    pub fn plugin_control(&self) -> Arc<PluginControl> {
        Arc::clone(&self.control)
    }

    /// The relay's wake-up: notified after each order commit.
    pub fn relay_wake(&self) -> Arc<Notify> {
        Arc::clone(&self.relay.wake)
    }

    /// Run until `shutdown` is cancelled or one of the tasks stops; then stop the others,
    /// letting each finish what it holds.
    ///
    /// Dropping the returned future (its runtime shutting down, a test failing) cancels
    /// `shutdown` as well, so the ingest thread, which runs outside the runtime's tasks,
    /// stops instead of polling on forever.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let _stop_everything_if_dropped = shutdown.clone().drop_guard();
        let ingest_token = shutdown.child_token();
        // On shutdown, plugin calls in flight end at once instead of at their deadline.
        {
            let sandbox = Arc::clone(self.control.registry().sandbox());
            let token = shutdown.clone();
            tokio::spawn(async move {
                token.cancelled().await;
                sandbox.interrupt_all();
            });
        }
        let ingest = {
            let token = ingest_token.clone();
            let ingest = self.ingest;
            tokio::task::spawn_blocking(move || ingest.run(token))
        };
        let relay = tokio::spawn(self.relay.run(shutdown.child_token()));
        let status = tokio::spawn(status::run(
            self.status_consumer,
            self.pool.clone(),
            shutdown.child_token(),
        ));
        let follow = tokio::spawn(Arc::clone(&self.control).follow(shutdown.child_token()));
        let guard = tokio::spawn(Arc::clone(&self.control).guard(shutdown.child_token()));
        let watch = self.plugin_dir.map(|dir| {
            tokio::spawn(Arc::clone(&self.control).watch_dir(dir, shutdown.child_token()))
        });
        let retention = tokio::spawn(ingest::forget_old_events(
            self.pool.clone(),
            self.dedupe_retention,
            self.dedupe_sweep_interval,
            shutdown.child_token(),
        ));
        let http = tokio::spawn(http::serve(
            self.listener,
            http::router(self.state),
            self.http_limits,
            shutdown.child_token(),
        ));

        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async move { ("ingest", flatten(ingest.await)) });
        tasks.spawn(async move { ("outbox relay", flatten(relay.await)) });
        tasks.spawn(async move { ("http", flatten(http.await)) });
        tasks.spawn(async move { ("order status consumer", flatten(status.await)) });
        tasks.spawn(async move { ("dedupe retention", flatten(retention.await)) });
        tasks.spawn(async move { ("plugin follower", flatten(follow.await)) });
        tasks.spawn(async move { ("plugin guard", flatten(guard.await)) });
        if let Some(watch) = watch {
            tasks.spawn(async move { ("plugin directory watcher", flatten(watch.await)) });
        }

        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let (task, result) = match joined {
                Ok(outcome) => outcome,
                Err(e) => ("task", Err(anyhow::Error::new(e))),
            };
            if !shutdown.is_cancelled() {
                // One task stopping on its own is fatal: stop the rest.
                match &result {
                    Ok(()) => tracing::error!(task, "task stopped unexpectedly; shutting down"),
                    Err(e) => {
                        tracing::error!(task, error = %format!("{e:#}"), "task failed; shutting down")
                    }
                }
                shutdown.cancel();
            }
            if let Err(e) = result {
                first_error.get_or_insert(e.context(format!("{task} failed")));
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn flatten(joined: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    joined.context("task panicked or was cancelled")?
}
