//! A throwaway PostgreSQL cluster from the local installation, in a temp dir, removed on drop.
//!
//! Works as root: PostgreSQL refuses to run as root, so the server runs as the `postgres`
//! user. The server is started from a dedicated thread with a parent-death signal, so it
//! goes down with this process even when the process is killed.
//!
//! Other local users get nothing: the superuser has a random password (scram-sha-256, also on
//! loopback TCP), and the socket lives in a directory only the server's user can enter.

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User, getuid};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// `pg_stat_statements`, where the installation has it: `sluice bench` counts and times the
/// statements of each scenario with it, and a developer can ask `sluice dev`'s database.
fn statement_statistics(bin: &Path) -> &'static [&'static str] {
    let library = bin.join("../lib/pg_stat_statements.so");
    if library.exists() {
        &[
            "shared_preload_libraries=pg_stat_statements",
            "pg_stat_statements.track=all",
        ]
    } else {
        &[]
    }
}
const MARKER: &str = "sluice-owner.pid";

pub struct EmbeddedPostgres {
    port: u16,
    password: String,
    bin: PathBuf,
    control: Option<mpsc::Sender<Control>>,
    server: Option<JoinHandle<()>>,
    dir: Option<tempfile::TempDir>,
}

/// Requests to the thread that owns the server process.
enum Control {
    Start(mpsc::Sender<std::io::Result<u32>>),
    Stop(mpsc::Sender<()>),
}

/// Own the server process: start and stop it on request, stop it when the handle is dropped.
fn supervise(command: impl Fn() -> std::io::Result<Command>, requests: mpsc::Receiver<Control>) {
    let mut child: Option<Child> = None;
    for request in requests {
        match request {
            Control::Start(reply) => {
                if let Some(running) = child.take() {
                    stop_server(running);
                }
                let spawned = command().and_then(|mut c| c.spawn());
                let _ = reply.send(spawned.map(|c| {
                    let pid = c.id();
                    child = Some(c);
                    pid
                }));
            }
            Control::Stop(reply) => {
                if let Some(running) = child.take() {
                    stop_server(running);
                }
                let _ = reply.send(());
            }
        }
    }
    if let Some(running) = child {
        stop_server(running);
    }
}

impl EmbeddedPostgres {
    /// initdb + start on a free loopback port. Blocks until the server accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_tls(None)
    }

    /// The same, serving TLS with this PEM certificate and key (`ssl=on`; clients may still
    /// connect without TLS unless they ask for it with `sslmode`).
    pub fn start_with_tls(tls: Option<(&Path, &Path)>) -> anyhow::Result<Self> {
        let bin = find_bin_dir()?;
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix("sluice-pg-")
            .tempdir()
            .context("creating a temp dir for PostgreSQL")?;
        std::fs::write(dir.path().join(MARKER), std::process::id().to_string())
            .context("writing the owner marker")?;
        let run_as = server_user()?;
        if let Some(user) = &run_as {
            std::os::unix::fs::chown(dir.path(), Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .context("handing the temp dir to the postgres user")?;
        }
        let data = dir.path().join("data");
        let password = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, &password).context("writing the password file")?;
        if let Some(user) = &run_as {
            std::os::unix::fs::chown(&pwfile, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .context("handing the password file to the postgres user")?;
        }

        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .arg("--pwfile")
            .arg(&pwfile)
            .args([
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ]);
        let output = as_user(&mut initdb, run_as.as_ref(), dir.path())
            .output()
            .context("running initdb")?;
        let _ = std::fs::remove_file(&pwfile);
        if !output.status.success() {
            bail!(
                "initdb failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }

        let port = free_port()?;
        File::create(dir.path().join("postgres.log")).context("creating the server log")?;
        if let Some(user) = &run_as {
            std::os::unix::fs::chown(
                dir.path().join("postgres.log"),
                Some(user.uid.as_raw()),
                Some(user.gid.as_raw()),
            )
            .context("handing the log to the postgres user")?;
        }
        let log_path = dir.path().join("postgres.log");
        let mut tls_settings = Vec::new();
        if let Some((cert, key)) = tls {
            for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
                let to = dir.path().join(name);
                std::fs::copy(from, &to)
                    .with_context(|| format!("copying {} for PostgreSQL", from.display()))?;
                // The server refuses a key others can read.
                std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .context("restricting the TLS key")?;
                if let Some(user) = &run_as {
                    std::os::unix::fs::chown(&to, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                        .context("handing the TLS files to the postgres user")?;
                }
            }
            tls_settings = vec![
                "ssl=on".to_string(),
                format!("ssl_cert_file={}", dir.path().join("server.crt").display()),
                format!("ssl_key_file={}", dir.path().join("server.key").display()),
            ];
        }
        let server_command = {
            let (bin, data, sockets) = (bin.clone(), data.clone(), dir.path().to_path_buf());
            move || -> std::io::Result<Command> {
                let log = std::fs::OpenOptions::new().append(true).open(&log_path)?;
                let mut postgres = Command::new(bin.join("postgres"));
                postgres
                    .arg("-D")
                    .arg(&data)
                    .arg("-p")
                    .arg(port.to_string())
                    .arg("-k")
                    .arg(&sockets)
                    // Throwaway data: durability buys nothing here.
                    .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
                    .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
                    .args(["-c", "max_connections=300"])
                    // Room for a benchmark's tables in memory, and no WAL beyond recovery.
                    .args(["-c", "shared_buffers=1GB", "-c", "wal_level=minimal"])
                    .args(["-c", "max_wal_senders=0", "-c", "max_wal_size=4GB"])
                    .args(["-c", "unix_socket_permissions=0700"])
                    .args(tls_settings.iter().flat_map(|s| ["-c", s.as_str()]))
                    .args(statement_statistics(&bin).iter().flat_map(|s| ["-c", *s]))
                    .stdout(Stdio::null())
                    .stderr(Stdio::from(log));
                as_user(&mut postgres, run_as.as_ref(), &sockets);
                // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
                unsafe {
                    postgres.pre_exec(|| {
                        nix::sys::prctl::set_pdeathsig(Signal::SIGQUIT)
                            .map_err(std::io::Error::from)
                    });
                }
                Ok(postgres)
            }
        };

        let (control, requests) = mpsc::channel::<Control>();
        // The parent-death signal fires when the *thread* that forked exits, so the server is
        // forked from a thread that lives exactly as long as this value.
        let server = std::thread::Builder::new()
            .name("sluice-postgres".into())
            .spawn(move || supervise(server_command, requests))
            .context("starting the PostgreSQL supervisor thread")?;
        let mut embedded = Self {
            port,
            password,
            bin,
            control: Some(control),
            server: Some(server),
            dir: Some(dir),
        };
        embedded.start_server()?;
        Ok(embedded)
    }

    /// Start the server (again) on the same port and data; blocks until it accepts connections.
    pub fn start_server(&mut self) -> anyhow::Result<()> {
        let (reply, started) = mpsc::channel();
        self.send(Control::Start(reply))?;
        let pid = started
            .recv()
            .context("PostgreSQL supervisor thread died")?
            .context("spawning postgres")?;
        self.wait_ready(pid)
    }

    /// Stop the server (fast shutdown), keeping its data: clients see the database go away.
    pub fn stop_server(&mut self) -> anyhow::Result<()> {
        let (reply, stopped) = mpsc::channel();
        self.send(Control::Stop(reply))?;
        stopped.recv().context("PostgreSQL supervisor thread died")
    }

    fn send(&self, control: Control) -> anyhow::Result<()> {
        self.control
            .as_ref()
            .context("PostgreSQL is shut down")?
            .send(control)
            .ok()
            .context("PostgreSQL supervisor thread died")
    }

    /// URL of the `postgres` database as the `postgres` superuser (with its password).
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/postgres",
            self.password, self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's main process, while it runs.
    pub fn server_pid(&self) -> Option<u32> {
        let pid_file = self
            .dir
            .as_ref()?
            .path()
            .join("data")
            .join("postmaster.pid");
        std::fs::read_to_string(pid_file)
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    fn wait_ready(&mut self, pid: u32) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-U", "postgres", "-q", "-p"])
                .arg(self.port.to_string())
                .status()
                .context("running pg_isready")?;
            if ready.success() {
                return Ok(());
            }
            let alive = kill(Pid::from_raw(pid as i32), None).is_ok();
            if !alive || started.elapsed() > STARTUP_TIMEOUT {
                let log = self
                    .dir
                    .as_ref()
                    .and_then(|d| std::fs::read_to_string(d.path().join("postgres.log")).ok())
                    .unwrap_or_default();
                bail!("PostgreSQL did not start: {log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        drop(self.control.take());
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
        // TempDir removes the data directory.
        drop(self.dir.take());
    }
}

/// Fast shutdown (SIGINT), then SIGKILL if the server lingers.
fn stop_server(mut child: Child) {
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Run `command` as `user` (when we are root), from a directory that user can enter.
fn as_user<'c>(command: &'c mut Command, user: Option<&User>, cwd: &Path) -> &'c mut Command {
    command.current_dir(cwd);
    if let Some(user) = user {
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    command
}

/// PostgreSQL will not run as root: use the `postgres` account then.
fn server_user() -> anyhow::Result<Option<User>> {
    if !getuid().is_root() {
        return Ok(None);
    }
    let user = User::from_name("postgres")
        .context("looking up the postgres user")?
        .context("running as root needs a `postgres` user to run the server (apt-get install postgresql)")?;
    Ok(Some(user))
}

/// One of PostgreSQL's programs (e.g. `pgbench`), from where the server's are.
pub fn postgres_program(name: &str) -> anyhow::Result<PathBuf> {
    let program = find_bin_dir()?.join(name);
    anyhow::ensure!(program.exists(), "{} is not installed", program.display());
    Ok(program)
}

/// Where initdb and postgres live: `SLUICE_PG_BIN`, the newest `/usr/lib/postgresql/*/bin`,
/// or `pg_config --bindir`.
fn find_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    bail!("no PostgreSQL server installation found (install postgresql, or set SLUICE_PG_BIN)")
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Remove temp clusters whose owning process died without cleaning up (e.g. killed).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("sluice-pg-"));
        if !is_ours {
            continue;
        }
        let owner = std::fs::read_to_string(path.join(MARKER))
            .ok()
            .and_then(|pid| pid.trim().parse::<i32>().ok());
        let owner_alive = owner.is_some_and(|pid| kill(Pid::from_raw(pid), None).is_ok());
        let server_alive = std::fs::read_to_string(path.join("data").join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
            .is_some_and(|pid| kill(Pid::from_raw(pid), None).is_ok());
        if owner.is_some() && !owner_alive && !server_alive {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}
