//! `log.collect_system_logs`: a gzipped tar (base64 in `system_logs`) of what the conductor
//! keeps after a failed deploy: the agent's log, the kernel log, and the state of disks,
//! mounts, modules and network as the agent saw them.

use std::io::Write;
use std::sync::Arc;

use base64::Engine;
use futures_util::FutureExt;
use serde_json::{Value, json};

use super::{Kind, RestError, Spec, no_validation};
use crate::agent::Agent;

pub static SPECS: &[Spec] = &[Spec {
    extension: "log",
    name: "collect_system_logs",
    kind: Kind::Sync,
    required: &[],
    optional: Some(&[]),
    validate: no_validation,
    run: |agent, _| collect(agent).boxed(),
}];

async fn collect(agent: Arc<Agent>) -> Result<Value, RestError> {
    let files = gather(&agent);
    super::blocking("collecting the logs", move || {
        let tgz = tar_gz(&files)
            .map_err(|e| RestError::execution(format!("cannot pack the logs: {e}")))?;
        Ok(json!({"system_logs": base64::engine::general_purpose::STANDARD.encode(tgz)}))
    })
    .await
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| format!("cannot read {path}: {e}\n").into_bytes())
}

/// The kernel's log buffer (syslog(2) "read all").
fn dmesg() -> Vec<u8> {
    let mut buf = vec![0u8; 1 << 20];
    // SAFETY: SYSLOG_ACTION_READ_ALL (3) copies at most `len` bytes into the buffer.
    let n = unsafe { libc::klogctl(3, buf.as_mut_ptr().cast(), buf.len() as libc::c_int) };
    if n < 0 {
        return format!("klogctl: {}\n", std::io::Error::last_os_error()).into_bytes();
    }
    buf.truncate(n as usize);
    buf
}

fn gather(agent: &Agent) -> Vec<(String, Vec<u8>)> {
    let disks = match crate::disk::list(&agent.settings.disks) {
        Ok(d) => json!(d.iter().map(|d| d.to_json()).collect::<Vec<_>>()),
        Err(e) => json!({"error": e.to_string()}),
    };
    let text = |v: Value| serde_json::to_vec_pretty(&v).unwrap_or_default();
    vec![
        ("ironboot-agent.log".into(), agent.logs.snapshot()),
        ("dmesg".into(), dmesg()),
        ("cmdline".into(), read("/proc/cmdline")),
        ("partitions".into(), read("/proc/partitions")),
        ("mounts".into(), read("/proc/mounts")),
        ("modules".into(), read("/proc/modules")),
        ("net-route".into(), read("/proc/net/route")),
        (
            "net-interfaces.json".into(),
            text(json!(crate::agent::interfaces())),
        ),
        ("block-devices.json".into(), text(disks)),
        (
            "commands.json".into(),
            text(json!(agent.commands.to_json())),
        ),
    ]
}

/// A ustar header for a regular file.
fn header(name: &str, size: usize, mtime: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    let put = |h: &mut [u8; 512], at: usize, s: &[u8]| h[at..at + s.len()].copy_from_slice(s);
    put(&mut h, 0, &name.as_bytes()[..name.len().min(99)]);
    put(&mut h, 100, b"0000644\0");
    put(&mut h, 108, b"0000000\0");
    put(&mut h, 116, b"0000000\0");
    put(&mut h, 124, format!("{size:011o}\0").as_bytes());
    put(&mut h, 136, format!("{mtime:011o}\0").as_bytes());
    put(&mut h, 148, b"        ");
    h[156] = b'0';
    put(&mut h, 257, b"ustar\0");
    put(&mut h, 263, b"00");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    h
}

pub fn tar_gz(files: &[(String, Vec<u8>)]) -> std::io::Result<Vec<u8>> {
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for (name, data) in files {
        gz.write_all(&header(name, data.len(), mtime))?;
        gz.write_all(data)?;
        gz.write_all(&vec![0u8; data.len().next_multiple_of(512) - data.len()])?;
    }
    gz.write_all(&[0u8; 1024])?;
    gz.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_is_a_tar_gz_that_tar_reads() {
        let tgz = tar_gz(&[
            ("a.log".into(), b"hello\n".to_vec()),
            ("empty".into(), vec![]),
        ])
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.tar.gz");
        std::fs::write(&path, tgz).unwrap();
        let Ok(out) = std::process::Command::new("tar")
            .arg("-xzf")
            .arg(&path)
            .arg("-C")
            .arg(dir.path())
            .output()
        else {
            eprintln!("no tar: skipped");
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(dir.path().join("a.log")).unwrap(), b"hello\n");
        assert!(dir.path().join("empty").is_file());
    }
}
