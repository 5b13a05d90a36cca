//! Host memory of this process, for the soak benchmark's samples.

/// Resident set size in bytes (Linux: /proc/self/statm); None elsewhere.
pub fn host_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
