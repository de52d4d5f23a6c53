//! Eviction (TTL, then oldest first down to the size cap) under the linking lock.

use std::collections::HashSet;

use crate::images::error::{IoContext, Result};
use crate::images::evict;
use crate::images::master;

use super::*;

impl Inner {
    pub(super) async fn clean_up(&self, reclaim: Option<u64>) -> Result<CleanReport> {
        let _evicting = self.links.write().await;
        let pinned: HashSet<String> = lock(&self.pins).keys().cloned().collect();
        let (dir, now) = (self.dir.clone(), self.clock.now());
        let (ttl, cap) = (self.settings.ttl(), self.settings.size_cap_bytes());
        let report = blocking(move || {
            let entries = master::scan(&dir, &pinned).ctx("scanning", &dir)?;
            let mut report = CleanReport {
                remaining_bytes: entries.iter().map(|e| e.disk_bytes).sum(),
                ..CleanReport::default()
            };
            for i in evict::plan(&entries, now, ttl, cap, reclaim) {
                let e = &entries[i];
                // Re-check: a link made by another process since the scan keeps it.
                match std::fs::symlink_metadata(&e.path) {
                    Ok(m) if std::os::unix::fs::MetadataExt::nlink(&m) == 1 => {}
                    _ => continue,
                }
                master::remove(&dir, &e.name).ctx("evicting", &e.path)?;
                report.removed.push(e.name.clone());
                report.freed_bytes += e.disk_bytes;
                report.remaining_bytes -= e.disk_bytes;
            }
            Ok(report)
        })
        .await?;
        if !report.removed.is_empty() {
            self.metrics.evictions.inc_by(report.removed.len() as u64);
            self.metrics.evicted_bytes.inc_by(report.freed_bytes);
            tracing::info!(removed = ?report.removed, freed = report.freed_bytes, "evicted unused images");
        }
        if let Some(r) = reclaim
            && report.freed_bytes < r
        {
            tracing::warn!(
                wanted = r,
                freed = report.freed_bytes,
                "could not reclaim the space asked for: the rest is in use"
            );
        }
        if report.remaining_bytes > cap {
            tracing::info!(
                remaining = report.remaining_bytes,
                cap,
                "image cache is above its size cap; what remains is in use"
            );
        }
        Ok(report)
    }
}
