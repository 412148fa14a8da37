//! `sluice serve` as a real process the test starts, kills (`kill -9`) and restarts.

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::eventually;

/// What every incarnation of a process is started with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub db_url: String,
    pub brokers: String,
    pub topic: String,
    pub group: String,
    /// Extra environment, e.g. batch sizes.
    pub env: Vec<(String, String)>,
}

impl ServeConfig {
    pub fn new(db_url: &str, brokers: &str, topic: &str, group: &str) -> Self {
        Self {
            db_url: db_url.to_string(),
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            group: group.to_string(),
            env: Vec::new(),
        }
    }

    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

/// One `sluice serve` process; killed when dropped.
pub struct Serve {
    child: Option<Child>,
    pub base: String,
    pub log: PathBuf,
}

impl Serve {
    /// Start a process on a free port. Its log goes to a file under the target dir.
    pub fn spawn(config: &ServeConfig, name: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{}.log", uuid::Uuid::new_v4().simple()));
        let log_file = File::create(&log).expect("creating the process log");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .env("DATABASE_URL", &config.db_url)
            .env("SLUICE_KAFKA_BROKERS", &config.brokers)
            .env("SLUICE_TOPIC", &config.topic)
            .env("SLUICE_STATUS_TOPIC", format!("{}.status", config.topic))
            .env("SLUICE_GROUP_ID", &config.group)
            .env("SLUICE_ORDERS_GROUP_ID", format!("{}-orders", config.group))
            .env("SLUICE_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info,sluice=debug")
            // A local setup: the tests call the admin endpoints from loopback.
            .env("SLUICE_ADMIN_OPEN_ON_LOOPBACK", "true")
            .envs(config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("starting sluice serve");
        Self {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Wait until `/healthz` answers. A process that exits first fails at once, with its log;
    /// the limit is generous because a start may compile an interpreted plugin (≈ 10 s in a
    /// debug build, several times that on a loaded 2-core machine).
    pub async fn wait_healthy(&self) {
        let client = reqwest::Client::new();
        let url = self.url("/healthz");
        let pid = self.child.as_ref().map(Child::id);
        eventually(
            Duration::from_secs(120),
            "sluice serve to answer /healthz",
            || async {
                if let Some(pid) = pid {
                    assert!(
                        is_running(pid),
                        "sluice serve exited before it answered /healthz; its log ends:\n{}",
                        self.log_tail()
                    );
                }
                let response = client.get(&url).send().await.ok()?;
                response.status().is_success().then_some(())
            },
        )
        .await;
    }

    /// `kill -9`: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("process is running");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("sending SIGTERM");
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("joining")
            .expect("waiting for sluice")
    }

    /// Wait up to `timeout` for the process to exit on its own.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let started = std::time::Instant::now();
        while started.elapsed() < timeout {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// Whether `pid` is a live process (not gone, not a zombie waiting to be reaped).
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill9();
    }
}
