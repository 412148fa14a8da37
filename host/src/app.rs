//! Wires the two flows: builds pool, sandbox, consumer and producer, then runs ingest, the
//! outbox relay and the HTTP API until shutdown, reporting whichever stopped first.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::Settings;
use crate::control::PluginControl;
use crate::db;
use crate::db::tables::Catalog;
use crate::http::{self, AppState, OrderWriter, Shared};
use crate::ingest::{self, Ingest, IngestHealth};
use crate::kafka::membership::GroupProtocolChoice;
use crate::kafka::topics::TopicWatch;
use crate::metrics::Metrics;
use crate::outbox::status::{self, StatusSource};
use crate::outbox::{self, Relay};
use crate::runtime::{Plugin, Registry, Sandbox};
use crate::waiting::Waits;

pub struct Application {
    listener: TcpListener,
    pool: PgPool,
    ingest: Ingest,
    relay: Relay,
    status_source: StatusSource,
    topic_watch: TopicWatch,
    dedupe_retention: std::time::Duration,
    dedupe_sweep_interval: std::time::Duration,
    control: Arc<PluginControl>,
    plugin_dir: Option<std::path::PathBuf>,
    state: AppState,
    http_limits: http::EdgeLimits,
}

impl Application {
    /// Bind the HTTP port (port 0 picks a free one), connect and migrate (waiting for
    /// PostgreSQL while it is unavailable, every request answered 503 meanwhile), load the
    /// plugins. Nothing here waits for Kafka: the group members join when their topics exist.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("binding the HTTP address {}", settings.http_addr))?;
        let pool = wait_for_database(&settings, &listener).await?;

        let sandbox = Sandbox::new(settings.sandbox.clone())?;
        let metrics = Arc::new(Metrics::new(sandbox.call_durations().clone()));
        let registry = Arc::new(Registry::new(
            sandbox,
            settings.plugins.compiler.clone(),
            settings.plugins.compile_limits,
        ));
        // The declared tables, read from the catalog: one Sluice cannot write refuses the
        // start, saying why.
        let declared = settings.kafka.routes.declared_tables();
        let tables = Arc::new(Catalog::default());
        tables
            .load(&pool, &declared)
            .await
            .context("reading the declared tables")?;
        let control = Arc::new(PluginControl::new(
            pool.clone(),
            Arc::clone(&registry),
            settings.plugins.policy.clone(),
            Arc::clone(&metrics),
            (Arc::clone(&tables), declared),
        ));
        let routed: Vec<&str> = settings.kafka.routes.iter().map(|(_, p)| p).collect();
        control
            .load_defaults(&settings.plugins.paths, &routed)
            .await?;
        for (name, handler) in &settings.plugins.native {
            registry.activate(Arc::new(Plugin::native(registry.sandbox(), name, *handler)));
        }
        for (topic, name) in settings.kafka.routes.iter() {
            let plugin = registry.active(name).with_context(|| {
                format!("topic {topic} routes to plugin {name}, which is not loaded (see --plugin)")
            })?;
            tracing::info!(%topic, plugin = name, version = plugin.version(), "route");
        }

        // The members join their groups once their topics exist, whatever started first; `auto`
        // becomes what the brokers support then, once, for both groups.
        let mut watched: Vec<String> = settings.kafka.routes.topics().map(str::to_string).collect();
        watched.push(settings.kafka.status_topic.clone());
        watched.sort();
        watched.dedup();
        let topic_watch = TopicWatch::new(&settings.kafka, watched)?;
        let protocol = Arc::new(GroupProtocolChoice::new(&settings.kafka));
        let waits = Arc::new(Waits::default());
        let fence = Arc::new(tokio::sync::Mutex::new(()));
        let workers = rayon::ThreadPoolBuilder::new()
            .num_threads(settings.ingest.plugin_threads.max(1))
            .thread_name(|i| format!("sluice-plugin-{i}"))
            .build()
            .context("starting the plugin threads")?;
        let producer = outbox::create_producer(&settings.kafka)?;
        let status_source = StatusSource {
            topic: settings.kafka.status_topic.clone(),
            topics: topic_watch.seen(),
            protocol: Arc::clone(&protocol),
            waits: Arc::clone(&waits),
        };

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
            waits: Arc::clone(&waits),
            admin: settings.admin.clone(),
            public_dead_letters: settings.public_dead_letters,
            metrics: Arc::clone(&metrics),
        });
        Ok(Self {
            listener,
            pool: pool.clone(),
            ingest: Ingest {
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
                topics: topic_watch.seen(),
                protocol,
                waits,
                tables,
            },
            relay: Relay {
                pool,
                producer,
                wake: relay_wake,
                metrics,
                settings: settings.relay,
            },
            status_source,
            topic_watch,
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
            self.status_source,
            self.pool.clone(),
            shutdown.child_token(),
        ));
        let topic_watch = tokio::spawn(self.topic_watch.run(shutdown.child_token()));
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
        let http = {
            let (listener, router, token) = (
                self.listener,
                http::router(self.state),
                shutdown.child_token(),
            );
            let limits = self.http_limits;
            // The port closes when serving ends (the listener is dropped with this task).
            tokio::spawn(async move { http::serve(&listener, router, limits, token).await })
        };

        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async move { ("ingest", flatten(ingest.await)) });
        tasks.spawn(async move { ("outbox relay", flatten(relay.await)) });
        tasks.spawn(async move { ("http", flatten(http.await)) });
        tasks.spawn(async move { ("order status consumer", flatten(status.await)) });
        tasks.spawn(async move { ("topic watch", flatten(topic_watch.await)) });
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

/// Connect and migrate, retrying on the one backoff schedule while PostgreSQL is unavailable
/// (one line when the wait begins or its reason changes, one when it ends); meanwhile every
/// HTTP request on `listener` is answered 503 with the reason. Fails at once on what waiting
/// cannot fix (a bad URL, refused credentials, a failed migration).
async fn wait_for_database(settings: &Settings, listener: &TcpListener) -> anyhow::Result<PgPool> {
    let (reason, reasons) = tokio::sync::watch::channel("connecting to PostgreSQL".to_string());
    let answered = CancellationToken::new();
    let connect = async {
        let started = std::time::Instant::now();
        let mut backoff = Backoff::new();
        let mut said: Option<String> = None;
        let connected = loop {
            match db::connect_and_migrate(&settings.database_url, settings.db_max_connections).await
            {
                Ok(pool) => break Ok(pool),
                Err(db::ConnectError::Unavailable(e)) => {
                    let why = format!("waiting for PostgreSQL: {e}");
                    if said.as_ref() != Some(&why) {
                        tracing::warn!("{why}; retrying");
                        said = Some(why.clone());
                    }
                    reason.send_replace(why);
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(refused) => break Err(anyhow::Error::new(refused)),
            }
        };
        if said.is_some() && connected.is_ok() {
            tracing::info!(
                waited_s = started.elapsed().as_secs_f64(),
                "PostgreSQL answered"
            );
        }
        answered.cancel();
        connected
    };
    let answer = http::serve(
        listener,
        http::starting(reasons),
        settings.http_limits,
        answered.clone(),
    );
    let (connected, served) = tokio::join!(connect, answer);
    served?;
    connected
}

fn flatten(joined: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    joined.context("task panicked or was cancelled")?
}
