//! Eviction: which masters go, and free-space measurement.
//!
//! Only unused masters (link count 1: no node directory links them, and no in-process request
//! holds them) are candidates, and only files directly inside the cache's own directory whose
//! names the cache gave them. Stage 1 removes candidates unused for longer than the TTL; stage 2
//! removes the oldest until the directory is under the size cap (as Ironic's `clean_up` does,
//! last used = max(atime, mtime, ctime)). A `reclaim` amount keeps both stages going until that
//! many bytes are freed.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// The clock eviction reads; tests substitute their own.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> SystemTime;
}

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// One master file as eviction sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub path: PathBuf,
    /// Bytes allocated on disk (sparse raw images use less than their length).
    pub disk_bytes: u64,
    pub links: u64,
    pub last_used: SystemTime,
    /// Held by a request in this process (fetched, not yet linked).
    pub pinned: bool,
}

impl Candidate {
    fn evictable(&self) -> bool {
        self.links == 1 && !self.pinned
    }
}

/// What to evict, given every master of the directory.
pub fn plan(
    entries: &[Candidate],
    now: SystemTime,
    ttl: Duration,
    size_cap: u64,
    reclaim: Option<u64>,
) -> Vec<usize> {
    let mut total: u64 = entries.iter().map(|e| e.disk_bytes).sum();
    let mut freed = 0u64;
    let mut chosen = Vec::new();
    let mut rest: Vec<usize> = Vec::new();
    let threshold = now.checked_sub(ttl).unwrap_or(SystemTime::UNIX_EPOCH);
    let satisfied = |freed: u64| reclaim.is_some_and(|r| freed >= r);
    for (i, e) in entries.iter().enumerate() {
        if !e.evictable() {
            continue;
        }
        if e.last_used < threshold && !satisfied(freed) {
            chosen.push(i);
            freed += e.disk_bytes;
            total -= e.disk_bytes;
        } else {
            rest.push(i);
        }
    }
    rest.sort_by_key(|&i| entries[i].last_used);
    for i in rest {
        let over_cap = total > size_cap;
        let still_needed = reclaim.is_some_and(|r| freed < r);
        if !over_cap && !still_needed {
            break;
        }
        chosen.push(i);
        freed += entries[i].disk_bytes;
        total -= entries[i].disk_bytes;
    }
    chosen
}

/// Last use as Ironic counts it: linking changes ctime, reading atime, writing mtime.
pub fn last_used(meta: &std::fs::Metadata) -> SystemTime {
    use std::os::unix::fs::MetadataExt;
    let at = |secs: i64, nsecs: i64| {
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(secs.max(0) as u64)
            + Duration::from_nanos(nsecs.clamp(0, 999_999_999) as u64)
    };
    at(meta.atime(), meta.atime_nsec())
        .max(at(meta.mtime(), meta.mtime_nsec()))
        .max(at(meta.ctime(), meta.ctime_nsec()))
}

pub use crate::fsutil::free_bytes;

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn c(name: &str, size: u64, links: u64, age_h: u64, now: SystemTime) -> Candidate {
        Candidate {
            name: name.into(),
            path: PathBuf::from(name),
            disk_bytes: size,
            links,
            last_used: now - HOUR * age_h as u32,
            pinned: false,
        }
    }

    #[test]
    fn ttl_then_oldest_first_skipping_linked() {
        let now = SystemTime::now();
        let e = vec![
            c("old-linked", 100, 2, 500, now),
            c("old", 10, 1, 300, now),
            c("mid", 10, 1, 20, now),
            c("new", 10, 1, 1, now),
        ];
        // TTL 200 h removes "old" only; everything fits under a cap of 1000.
        assert_eq!(plan(&e, now, HOUR * 200, 1000, None), vec![1]);
        // Cap 115: after the TTL stage 120 remain, so the oldest unused ("mid") goes too.
        assert_eq!(plan(&e, now, HOUR * 200, 115, None), vec![1, 2]);
        // Cap below the linked master's size: every unused one goes, the linked one never.
        assert_eq!(plan(&e, now, HOUR * 200, 50, None), vec![1, 2, 3]);
        // Reclaim 15 bytes under a generous cap and TTL: the two oldest unused ones.
        assert_eq!(plan(&e, now, HOUR * 1000, 10_000, Some(15)), vec![1, 2]);
    }

    #[test]
    fn pinned_masters_stay() {
        let now = SystemTime::now();
        let mut e = vec![c("a", 10, 1, 300, now)];
        e[0].pinned = true;
        assert!(plan(&e, now, HOUR, 0, Some(100)).is_empty());
    }

    #[test]
    fn free_space_of_tmp() {
        assert!(free_bytes(std::path::Path::new("/tmp")).unwrap() > 0);
        assert!(free_bytes(std::path::Path::new("/nonexistent/dir")).is_err());
    }
}
