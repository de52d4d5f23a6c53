//! Master files: names, metadata, the start-up re-index and the directory scan.
//!
//! A master is named by a stable hash of its source, `uuid5(NAMESPACE_URL, href)` as in Ironic,
//! with `.converted` when raw conversion is on. Its metadata (`<name>.meta`, JSON) is written
//! before the master is renamed into place, so the rename is the commit point: a master without
//! metadata, metadata without a master, and temporary files are all leftovers of a crash and are
//! removed by [`reindex`]. Images served with `Cache-Control: no-store` get a one-use name
//! (`<uuid>.nostore-<hex>`) and no metadata; they are evicted as soon as nothing links them.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::checksum::Algo;
use super::evict::{Candidate, last_used};
use super::format::ImageFormat;
use crate::fsutil;

const META_SUFFIX: &str = ".meta";
const CONVERTED_SUFFIX: &str = ".converted";
const NO_STORE_MARK: &str = ".nostore-";

/// The master name for `href`.
pub fn master_name(href: &str, converted: bool) -> String {
    let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, href.as_bytes());
    if converted {
        format!("{id}{CONVERTED_SUFFIX}")
    } else {
        id.to_string()
    }
}

/// A one-use name for an image that must not be cached.
pub fn no_store_name(master: &str) -> io::Result<String> {
    let mut rnd = [0u8; 6];
    getrandom::fill(&mut rnd).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(format!("{master}{NO_STORE_MARK}{}", hex::encode(rnd)))
}

/// What the cache knows about one master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterMeta {
    pub href: String,
    /// Length of the master file in bytes.
    pub size: u64,
    /// Detected format; `None` for boot files, which are not inspected.
    pub format: Option<ImageFormat>,
    /// Format as downloaded, when it was converted.
    pub source_format: Option<ImageFormat>,
    pub digests: BTreeMap<Algo, String>,
    pub downloaded_at: DateTime<Utc>,
    pub last_modified: Option<DateTime<Utc>>,
}

impl MasterMeta {
    pub fn converted(&self) -> bool {
        self.source_format.is_some()
    }

    pub fn downloaded_at(&self) -> SystemTime {
        self.downloaded_at.into()
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Master,
    NoStore,
    Meta(String),
    Temp,
    Foreign,
}

fn classify(file_name: &str) -> Kind {
    if file_name.starts_with(fsutil::TEMP_PREFIX) {
        return Kind::Temp;
    }
    if let Some(master) = file_name.strip_suffix(META_SUFFIX) {
        return match classify(master) {
            Kind::Master => Kind::Meta(master.to_string()),
            _ => Kind::Foreign,
        };
    }
    let (id, rest) = file_name.split_at(file_name.find('.').unwrap_or(file_name.len()));
    if uuid::Uuid::parse_str(id).map(|u| u.hyphenated().to_string()) != Ok(id.to_string()) {
        return Kind::Foreign;
    }
    match rest {
        "" | CONVERTED_SUFFIX => Kind::Master,
        r if r
            .strip_prefix(CONVERTED_SUFFIX)
            .unwrap_or(r)
            .starts_with(NO_STORE_MARK) =>
        {
            Kind::NoStore
        }
        _ => Kind::Foreign,
    }
}

pub fn meta_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{META_SUFFIX}"))
}

pub fn read_meta(dir: &Path, name: &str) -> Option<MasterMeta> {
    let bytes = fs::read(meta_path(dir, name)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn write_meta(dir: &Path, name: &str, meta: &MasterMeta) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(meta).map_err(io::Error::other)?;
    fsutil::write_atomic(&meta_path(dir, name), &json)
}

/// Removes a master and its metadata. The master goes first: metadata without a master is
/// harmless (re-index removes it), a master without metadata would be unusable.
pub fn remove(dir: &Path, name: &str) -> io::Result<()> {
    fsutil::remove_if_exists(&dir.join(name))?;
    fsutil::remove_if_exists(&meta_path(dir, name))
}

/// What the start-up re-index did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reindex {
    pub masters: usize,
    /// Leftovers removed: temporary files, one-use images, orphaned or mismatched metadata.
    pub removed: Vec<String>,
    /// Files the cache did not create; left alone, but they should not be there.
    pub foreign: Vec<String>,
}

/// Makes the directory consistent after a crash (run once at start, before serving).
pub fn reindex(dir: &Path) -> io::Result<Reindex> {
    let mut report = Reindex::default();
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        } else {
            report
                .foreign
                .push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    let present: HashSet<&str> = names.iter().map(String::as_str).collect();
    for name in &names {
        let remove_it = match classify(name) {
            Kind::Temp | Kind::NoStore => true,
            Kind::Meta(master) => !present.contains(master.as_str()),
            Kind::Master => match read_meta(dir, name) {
                Some(meta) => {
                    let ok = fs::metadata(dir.join(name))?.len() == meta.size;
                    if ok {
                        report.masters += 1;
                    }
                    !ok
                }
                None => true,
            },
            Kind::Foreign => {
                report.foreign.push(name.clone());
                false
            }
        };
        if remove_it {
            fsutil::remove_if_exists(&dir.join(name))?;
            if let Kind::Master = classify(name) {
                fsutil::remove_if_exists(&meta_path(dir, name))?;
            }
            report.removed.push(name.clone());
        }
    }
    report.removed.sort();
    Ok(report)
}

/// Every master (and one-use image) in `dir`, for eviction and listing.
pub fn scan(dir: &Path, pinned: &HashSet<String>) -> io::Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = classify(&name);
        if !matches!(kind, Kind::Master | Kind::NoStore) {
            continue;
        }
        let meta = match fs::symlink_metadata(entry.path()) {
            Ok(m) if m.file_type().is_file() => m,
            Ok(_) => continue,
            // Removed while scanning (a concurrent re-download): nothing to evict.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        out.push(Candidate {
            pinned: pinned.contains(&name),
            path: entry.path(),
            disk_bytes: meta.blocks().saturating_mul(512),
            links: meta.nlink(),
            // One-use images are stale the moment nothing links them.
            last_used: if kind == Kind::NoStore {
                SystemTime::UNIX_EPOCH
            } else {
                last_used(&meta)
            },
            name,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64) -> MasterMeta {
        MasterMeta {
            href: "http://h/a".into(),
            size,
            format: Some(ImageFormat::Raw),
            source_format: None,
            digests: BTreeMap::new(),
            downloaded_at: Utc::now(),
            last_modified: None,
        }
    }

    #[test]
    fn names_are_stable_uuid5() {
        // uuid5(NAMESPACE_URL, "http://example.com/image.qcow2"), as Python's uuid module gives.
        assert_eq!(
            master_name("http://example.com/image.qcow2", false),
            "f69a9696-4094-5b80-9151-13f1eeea157d"
        );
        let a = master_name("http://h/a", true);
        assert!(a.ends_with(".converted"));
        assert_eq!(classify(&a), Kind::Master);
        assert_eq!(classify(&no_store_name(&a).unwrap()), Kind::NoStore);
        assert_eq!(classify(&format!("{a}.meta")), Kind::Meta(a.clone()));
        assert_eq!(classify("undionly.kpxe"), Kind::Foreign);
        assert_eq!(classify(&format!("{}tmp", fsutil::TEMP_PREFIX)), Kind::Temp);
    }

    #[test]
    fn reindex_removes_crash_leftovers_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let good = master_name("http://h/good", false);
        fs::write(d.join(&good), b"1234").unwrap();
        write_meta(d, &good, &meta(4)).unwrap();
        let torn = master_name("http://h/torn", false);
        fs::write(d.join(&torn), b"12").unwrap();
        write_meta(d, &torn, &meta(4)).unwrap();
        let bare = master_name("http://h/bare", false);
        fs::write(d.join(&bare), b"x").unwrap();
        write_meta(d, &master_name("http://h/gone", false), &meta(1)).unwrap();
        let tmp = format!("{}abc-{good}", fsutil::TEMP_PREFIX);
        fs::write(d.join(&tmp), b"partial").unwrap();
        fs::write(d.join("undionly.kpxe"), b"boot loader").unwrap();

        let r = reindex(d).unwrap();
        assert_eq!(r.masters, 1);
        assert_eq!(r.foreign, vec!["undionly.kpxe".to_string()]);
        let mut left: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![good.clone(), format!("{good}.meta"), "undionly.kpxe".into()];
        want.sort();
        assert_eq!(left, want);
    }
}
