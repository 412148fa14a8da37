//! What the processes of a benchmark run cost: CPU time of the host, of PostgreSQL and of the
//! broker, read from `/proc` (nothing is asked of the system under test), the host's peak
//! memory, and PostgreSQL's own account of the statements it ran (`pg_stat_statements`, read
//! between scenarios).

use std::time::Duration;

/// CPU time used so far by each party.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Cpu {
    pub host_s: f64,
    pub postgres_s: Option<f64>,
    pub broker_s: Option<f64>,
}

impl Cpu {
    /// Both parts' CPU together (a party neither knows stays unknown).
    pub fn plus(self, other: Cpu) -> Cpu {
        let sum = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or_default() + b.unwrap_or_default()),
        };
        Cpu {
            host_s: self.host_s + other.host_s,
            postgres_s: sum(self.postgres_s, other.postgres_s),
            broker_s: sum(self.broker_s, other.broker_s),
        }
    }

    pub fn since(self, start: Cpu) -> Cpu {
        Cpu {
            host_s: self.host_s - start.host_s,
            postgres_s: self.postgres_s.zip(start.postgres_s).map(|(a, b)| a - b),
            broker_s: self.broker_s.zip(start.broker_s).map(|(a, b)| a - b),
        }
    }
}

/// The processes to watch.
#[derive(Debug, Clone, Default)]
pub struct Processes {
    /// The PostgreSQL server's main process (its children are counted with it).
    pub postmaster: Option<u32>,
    pub broker: Option<u32>,
}

impl Processes {
    pub fn cpu(&self) -> Cpu {
        Cpu {
            host_s: cpu_of(std::process::id(), false).unwrap_or_default(),
            // The server: its own time, that of the backends it has reaped, and that of the
            // live ones.
            postgres_s: self.postmaster.map(|pid| {
                cpu_of(pid, true).unwrap_or_default()
                    + children_of(pid)
                        .into_iter()
                        .filter_map(|child| cpu_of(child, false))
                        .sum::<f64>()
            }),
            broker_s: self.broker.and_then(|pid| cpu_of(pid, false)),
        }
    }
}

/// User + system CPU seconds of a process (its threads included), with its reaped children's
/// when `reaped`.
fn cpu_of(pid: u32, reaped: bool) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), 1-based: utime is 14, stime 15,
    // cutime 16, cstime 17.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    let mut ticks = field(11)? + field(12)?;
    if reaped {
        ticks += field(13)? + field(14)?;
    }
    Some(ticks / ticks_per_second())
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let after = stat.rsplit_once(')')?.1.to_string();
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// What PostgreSQL spent on one statement during a scenario.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Statement {
    /// The statement's text, whitespace folded, cut to 120 characters.
    pub query: String,
    pub calls: i64,
    pub rows: i64,
    pub total_ms: f64,
}

/// Start counting statements afresh; `false` when PostgreSQL has no `pg_stat_statements`.
pub async fn statements_reset(pool: &sqlx::PgPool) -> bool {
    let created = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(pool)
        .await;
    created.is_ok()
        && sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(pool)
            .await
            .is_ok()
}

/// The statements counted since the reset, most time first (the benchmark's own queries left
/// out: those of the statistics, and those marked `/* bench */`).
pub async fn statements(pool: &sqlx::PgPool) -> Vec<Statement> {
    let rows: Result<Vec<(String, i64, i64, f64)>, _> = sqlx::query_as(
        "SELECT query, calls, rows, total_exec_time FROM pg_stat_statements
         WHERE query NOT ILIKE '%pg_stat_statements%' AND query NOT LIKE '%/* bench */%'
         ORDER BY total_exec_time DESC",
    )
    .fetch_all(pool)
    .await;
    rows.unwrap_or_default()
        .into_iter()
        .map(|(query, calls, rows, total_ms)| {
            let folded = query.split_whitespace().collect::<Vec<_>>().join(" ");
            Statement {
                query: folded.chars().take(120).collect(),
                calls,
                rows,
                total_ms,
            }
        })
        .collect()
}

/// Forget this process's peak memory, so the next reading covers what follows.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// This process's peak resident memory since the last reset, MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The median and the 99th percentile of `samples`.
pub fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    if samples.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    samples.sort_unstable();
    let at = |q: usize| samples[(samples.len() * q / 100).min(samples.len() - 1)];
    (at(50), at(99))
}

/// CPU seconds of this process's children that have ended (e.g. a finished `pgbench`).
pub fn children_cpu() -> f64 {
    // SAFETY: getrusage writes only into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
