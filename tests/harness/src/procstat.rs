//! A process's footprint from /proc, for benchmarks: resident memory and CPU time.

use std::time::Duration;

/// `VmRSS` of `pid` in KiB (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of `pid` so far, in clock ticks (USER_HZ, 100 per second on Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// CPU time as a percentage of one core, between two [`cpu_ticks`] readings `window` apart.
pub fn cpu_percent_between(t0: u64, t1: u64, window: Duration) -> f64 {
    t1.saturating_sub(t0) as f64 / 100.0 / window.as_secs_f64().max(1e-9) * 100.0
}

/// CPU use of `pid` over the next `window` (blocks), in percent of one core.
pub fn cpu_percent(pid: u32, window: Duration) -> f64 {
    let t0 = cpu_ticks(pid);
    std::thread::sleep(window);
    cpu_percent_between(t0, cpu_ticks(pid), window)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_memory_and_spends_cpu() {
        let me = std::process::id();
        assert!(rss_kib(me) > 0);
        let t0 = cpu_ticks(me);
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(200) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0 && cpu_ticks(me) > t0);
        assert_eq!(cpu_percent_between(0, 100, Duration::from_secs(2)), 50.0);
        assert_eq!(rss_kib(u32::MAX), 0);
    }
}
