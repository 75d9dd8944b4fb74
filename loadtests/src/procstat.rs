//! A server process's CPU time and resident memory, read from `/proc/<pid>` (Linux), and
//! finding that process by the port it listens on.

use serde::{Deserialize, Serialize};

/// One reading of a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// user + system CPU seconds since the process started
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

/// Reads `/proc/<pid>/stat` (utime, stime) and `/proc/<pid>/status` (VmRSS).
pub fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the name: state is field 3 of stat(5), utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(Sample {
        cpu_seconds: (utime + stime) as f64 / ticks,
        rss_bytes: rss_kib * 1024,
    })
}

/// What a process used during one scenario.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Usage {
    pub cpu_seconds: f64,
    /// CPU seconds per wall second (1.0 = one core busy)
    pub cpu_cores: f64,
    pub rss_before_mb: f64,
    pub rss_after_mb: f64,
    pub rss_peak_mb: f64,
}

pub fn usage(before: Sample, after: Sample, peak_rss: u64, wall_seconds: f64) -> Usage {
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    let cpu = (after.cpu_seconds - before.cpu_seconds).max(0.0);
    Usage {
        cpu_seconds: cpu,
        cpu_cores: cpu / wall_seconds.max(1e-9),
        rss_before_mb: mb(before.rss_bytes),
        rss_after_mb: mb(after.rss_bytes),
        rss_peak_mb: mb(peak_rss.max(after.rss_bytes).max(before.rss_bytes)),
    }
}

/// The process listening on TCP `port` (IPv4 or IPv6), from `/proc/net/tcp*` and the
/// socket links under `/proc/*/fd`.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is "HEXIP:HEXPORT", state 0A is LISTEN, inode is field 9.
            let Some(local) = f.get(1) else { continue };
            let listening = f.get(3) == Some(&"0A");
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if listening && local_port == Some(port) {
                inodes.extend(f.get(9).map(|i| format!("socket:[{i}]")));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| link.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// The soft open-file limit of process `pid` (`Max open files` in `/proc/<pid>/limits`).
pub fn open_files_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let value = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if value == "unlimited" {
        return Some(u64::MAX);
    }
    value.parse().ok()
}

/// Raises this process's open-file limit to `wanted` (or as far as allowed); returns it.
pub fn raise_nofile(wanted: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur >= wanted {
            return limit.rlim_cur;
        }
        // Root may raise the hard limit too; otherwise settle for the hard limit.
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: limit.rlim_max.max(wanted),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return wanted;
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            return limit.rlim_cur;
        }
        limit.rlim_cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample(std::process::id()).expect("a Linux /proc");
        assert!(s.rss_bytes > 0);
    }

    #[test]
    fn the_open_file_limit_of_a_process_is_read() {
        assert!(open_files_limit(std::process::id()).is_some_and(|n| n > 0));
    }

    #[test]
    fn a_listening_port_leads_to_its_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(pid_listening_on(port), Some(std::process::id()));
    }
}
