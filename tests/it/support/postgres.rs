//! A throwaway PostgreSQL server on loopback for the multi-conductor tests.
//!
//! [`Postgres::start`] creates a cluster in a temporary directory with the installed server
//! (Debian's `postgresql`, `/usr/lib/postgresql/<version>/bin`), runs it as the `postgres`
//! system user (initdb refuses root), on 127.0.0.1 only with trust authentication and its
//! socket in the data directory, and creates one database. The server is stopped (fast
//! shutdown, then SIGKILL) and the directory removed when the handle drops.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_tcp_port, require_condition, run};

pub struct Postgres {
    child: Option<Child>,
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// The newest installed server's bin directory.
fn server_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("postgres").is_file() && b.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

/// The `postgres` system user's uid and gid.
fn postgres_ids() -> Option<(u32, u32)> {
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// `tool` of the server run as the `postgres` user (exec'd directly, so signals reach it).
fn as_postgres(bin: &Path, tool: &str) -> Command {
    let mut c = Command::new(bin.join(tool));
    if let Some((uid, gid)) = postgres_ids() {
        c.uid(uid).gid(gid);
    }
    c
}

impl Postgres {
    /// A running server with database `db`, or `None` (after the loud skip) when PostgreSQL is
    /// not installed and peers are optional.
    pub fn start(test: &str, db: &str) -> Option<Postgres> {
        let root = unsafe { libc::geteuid() } == 0;
        let bin = server_bin();
        let have_user = postgres_ids().is_some();
        if !require_condition(
            test,
            root,
            "needs root (runs PostgreSQL as the postgres user)",
        ) || !require_condition(
            test,
            bin.is_some() && have_user,
            "PostgreSQL server is not installed (Debian package postgresql)",
        ) {
            return None;
        }
        let bin = bin?;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let data = dir.path().join("data");
        let (ok, out, err) = run(as_postgres(&bin, "initdb").arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "ironboot",
            "-E",
            "UTF8",
            "--no-sync",
        ]));
        assert!(ok, "initdb failed:\n{out}\n{err}");
        for attempt in 0.. {
            let port = free_tcp_port();
            let log = std::fs::File::create(dir.path().join("postgres.log")).unwrap();
            let mut child = as_postgres(&bin, "postgres")
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(&data)
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn postgres");
            match wait_ready(&bin, &data, port, &mut child) {
                Ok(()) => {
                    let pg = Postgres {
                        child: Some(child),
                        bin,
                        data,
                        port,
                        _dir: dir,
                    };
                    pg.create_db(db);
                    return Some(pg);
                }
                // The port was taken between picking and binding: try another.
                Err(log) if attempt < 3 && log.contains("in use") => continue,
                Err(log) => panic!("postgres did not start:\n{log}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// `postgres://` URL of database `db` for ironboot's `[database] url`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://ironboot@127.0.0.1:{}/{db}", self.port)
    }

    fn create_db(&self, db: &str) {
        let (ok, out, err) = run(as_postgres(&self.bin, "createdb").args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "ironboot",
            db,
        ]));
        assert!(ok, "createdb {db}: {out}{err}");
    }

    /// Runs SQL through psql and returns its unaligned, tuples-only output.
    pub fn query(&self, db: &str, sql: &str) -> String {
        let (ok, out, err) = run(as_postgres(&self.bin, "psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "ironboot",
            ])
            .args([
                "-d",
                db,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ]));
        assert!(ok, "psql {sql:?}: {err}");
        out
    }
}

fn wait_ready(bin: &Path, data: &Path, port: u16, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let log = || std::fs::read_to_string(data.with_file_name("postgres.log")).unwrap_or_default();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited ({status}):\n{}", log()));
        }
        let ready = as_postgres(bin, "pg_isready")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("not ready after 60 s:\n{}", log()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: a signal to our own child (fast shutdown: no checkpoint wait).
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while !matches!(child.try_wait(), Ok(Some(_))) {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
