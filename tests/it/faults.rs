//! Faults an unlucky operator meets: a full disk under the database, the boot roots or the
//! image cache, a database made read-only, `kill -9` at any moment of a deploy, a BMC or an
//! agent that hangs. After each: the service refuses clearly or recovers, and a restart finds
//! no node in a transient state, no reservation, no temporary file served, an intact
//! database, and every node can be driven back to `available`.

use std::process::Command;

use serde_json::{Value, json};

use crate::support::server::Server;
use crate::support::tmpfs::Tmpfs;

/// One API call with curl: (status, JSON body or Null).
fn call(method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-m", "20", "-X", method, "-w", "\n%{http_code}"])
        .args(["-H", "X-OpenStack-Ironic-API-Version: 1.68"]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "-d"])
            .arg(b.to_string());
    }
    let out = cmd.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    (code.trim().parse().unwrap_or(0), json)
}

/// The faultstring of Ironic's error body ("" when there is none).
fn fault(body: &Value) -> String {
    body["error_message"]
        .as_str()
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|v| v["faultstring"].as_str().map(String::from))
        .unwrap_or_default()
}

/// Node creates until one is refused (the disk filled up); returns that answer.
fn create_until_refused(api: &str) -> (u16, Value, usize) {
    for i in 0..400 {
        let (status, body) = call(
            "POST",
            &format!("{api}/v1/nodes"),
            Some(&json!({"driver": "fake-hardware", "extra": {"pad": "x".repeat(2000)}})),
        );
        if status != 201 {
            return (status, body, i);
        }
    }
    panic!("400 node creates on a full disk all succeeded");
}

/// The database's filesystem fills up: writes answer 507 in Ironic's format naming the
/// database file; reads keep working; once space is back, writes resume without a restart.
#[test]
fn a_full_database_disk_answers_507_naming_the_path_then_recovers() {
    let work = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::require("db disk full", &work.path().join("fs"), "24m") else {
        return;
    };
    let data = fs.path.join("data");
    let s = Server::start_in(&data, &[], &[]);
    let api = s.api_url();
    fs.fill();
    let (status, body, made) = create_until_refused(&api);
    let msg = fault(&body);
    assert_eq!(status, 507, "after {made} creates: {body}");
    assert!(
        msg.contains(&data.join("ironboot.sqlite").display().to_string()),
        "the message names no path: {msg}"
    );
    let (status, _) = call("GET", &format!("{api}/v1/nodes"), None);
    assert_eq!(status, 200, "reads fail on a full disk");
    fs.free();
    let (status, body) = call(
        "POST",
        &format!("{api}/v1/nodes"),
        Some(&json!({"driver": "fake-hardware"})),
    );
    assert_eq!(status, 201, "no recovery once space is back: {body}");
    drop(s);
}

/// A start on a full disk refuses before binding any port, with a message naming the path.
#[test]
fn a_start_on_a_full_disk_refuses_before_binding_and_names_the_path() {
    let work = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::require("start on full disk", &work.path().join("fs"), "24m") else {
        return;
    };
    let data = fs.path.join("data");
    let mut s = Server::start_in(&data, &[], &[]);
    s.stop();
    fs.fill();
    let log = match Server::try_start(&data, (0, 0, 0), &[], &[]) {
        Ok(s) => panic!("started on a full disk:\n{}", s.log()),
        Err(log) => log,
    };
    let this_run = log.rsplit("ironboot stopped").next().unwrap_or(&log);
    assert!(
        !this_run.contains("listening"),
        "bound ports before refusing:\n{this_run}"
    );
    assert!(
        this_run.contains(&data.display().to_string()) && this_run.contains("space"),
        "the refusal names no path or no space:\n{this_run}"
    );
    fs.free();
    drop(Server::start_in(&data, &[], &[]));
}
