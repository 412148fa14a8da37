//! What the processes of a benchmark run cost: CPU time of the host, of PostgreSQL and of the
//! broker, read from `/proc` (nothing is asked of the system under test), and the host's peak
//! memory.

use std::time::Duration;

/// CPU time used so far by each party.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Cpu {
    pub host_s: f64,
    pub postgres_s: Option<f64>,
    pub broker_s: Option<f64>,
}

impl Cpu {
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
            host_s: cpu_of(std::process::id()).unwrap_or_default(),
            postgres_s: self.postmaster.map(|pid| {
                cpu_of(pid).unwrap_or_default()
                    + children_of(pid).into_iter().filter_map(cpu_of).sum::<f64>()
            }),
            broker_s: self.broker.and_then(cpu_of),
        }
    }
}

/// User + system CPU seconds of a process (its threads included).
fn cpu_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), 1-based: utime is 14, stime 15.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
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
