//! What the servers cost: CPU time (user + system) and resident memory of the server
//! processes and all their children (nginx's workers, tftpd-hpa's per-client forks).
//!
//! CPU time comes from a cgroup-v1 `cpuacct` group holding the servers when storm.sh could
//! make one: it counts every task that ever ran in it. Without one it comes from /proc: the
//! roots, their live descendants and, through `cutime`/`cstime`, children the roots waited
//! for; that misses children reaped automatically (tftpd-hpa ignores SIGCHLD, so its forks'
//! time is lost), hence the cgroup. Resident memory is sampled from /proc either way.

use std::collections::HashMap;

/// Clock ticks per second of /proc/<pid>/stat times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// (pid, ppid, utime+stime, cutime+cstime) of every process.
fn all_stats() -> Vec<(u32, u32, u64, u64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // After ')': state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let ppid = u32::try_from(num(1)).unwrap_or(0);
        out.push((pid, ppid, num(11) + num(12), num(13) + num(14)));
    }
    out
}

/// The roots and all their live descendants.
fn tree(roots: &[u32], stats: &[(u32, u32, u64, u64)]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for &(pid, ppid, _, _) in stats {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut todo: Vec<u32> = roots.to_vec();
    while let Some(p) = todo.pop() {
        out.push(p);
        if let Some(c) = children.get(&p) {
            todo.extend(c);
        }
    }
    out
}

/// Where the servers' costs are read.
#[derive(Debug, Clone)]
pub enum Accounting {
    /// A cpuacct cgroup directory holding them.
    Cgroup(std::path::PathBuf),
    /// Their root processes.
    Tree(Vec<u32>),
}

impl Accounting {
    /// CPU seconds (user + system) used so far.
    pub fn cpu_seconds(&self) -> f64 {
        match self {
            Accounting::Cgroup(dir) => {
                let ns = |f: &str| {
                    std::fs::read_to_string(dir.join(f))
                        .ok()
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(0)
                };
                (ns("cpuacct.usage_user") + ns("cpuacct.usage_sys")) as f64 / 1e9
            }
            Accounting::Tree(roots) => cpu_seconds(roots),
        }
    }

    /// Resident KiB of the processes now.
    pub fn rss_kib(&self) -> u64 {
        match self {
            Accounting::Cgroup(dir) => {
                let pids: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect();
                pids.iter().map(|&p| rss_of(p)).sum()
            }
            Accounting::Tree(roots) => rss_kib(roots),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Accounting::Cgroup(_) => "cgroup",
            Accounting::Tree(_) => "proc",
        }
    }
}

/// CPU seconds used so far by the tree under `roots` (live processes and reaped children).
fn cpu_seconds(roots: &[u32]) -> f64 {
    let stats = all_stats();
    let members = tree(roots, &stats);
    let ticks: u64 = stats
        .iter()
        .filter(|s| members.contains(&s.0))
        .map(|&(_, _, own, reaped)| own + reaped)
        .sum();
    ticks as f64 / ticks_per_second()
}

/// Resident KiB of the tree under `roots` now.
fn rss_kib(roots: &[u32]) -> u64 {
    let stats = all_stats();
    tree(roots, &stats).iter().map(|&p| rss_of(p)).sum()
}

/// Resident KiB of one process (0 once it is gone).
fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
}
