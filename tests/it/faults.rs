//! Faults an unlucky operator meets: a full disk under the database, the boot roots or the
//! image cache, a database made read-only, `kill -9` at any moment of a deploy, a BMC or an
//! agent that hangs. After each: the service refuses clearly or recovers, and a restart finds
//! no node in a transient state, no reservation, no temporary file served, an intact
//! database, and every node can be driven back to `available`.

use std::process::Command;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::faultlab::{Dice, FaultLab, StandIn, temp_file_under};
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

/// 20 `kill -9` at random moments of deploys (`pxe` and `ipxe` boot, `direct` deploy, the
/// agent played alongside): after each, the database is intact, the restart fails what it
/// cannot resume and releases every node, no temporary or partial file is left to serve,
/// and every node goes back to `available`; at the end a deploy runs to `active`.
#[test]
fn kill_9_at_random_moments_of_deploys_then_every_node_recovers() {
    if !crate::support::require_peer("kill -9 matrix", &["curl"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let mut lab = FaultLab::new(&work.path().join("data"), &work.path().join("src"), &[]);
    lab.start();
    let nodes = [
        lab.enroll("pxe", None),
        lab.enroll("ipxe", None),
        lab.enroll("pxe", None),
    ];
    let agents: Vec<StandIn> = nodes.iter().map(|_| lab.stand_in(false)).collect();
    let mut dice = Dice::from_env();
    let started = Instant::now();
    let mut states_at_kill = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..20 {
        for n in &nodes {
            assert_eq!(lab.provision(&n.uuid, "active"), 202, "round {round}");
        }
        let stop = AtomicBool::new(false);
        let delay = Duration::from_millis(dice.below(700));
        std::thread::scope(|sc| {
            for (n, a) in nodes.iter().zip(&agents) {
                let (lab, stop) = (&lab, &stop);
                sc.spawn(move || lab.play_agent(n, a, stop));
            }
            std::thread::sleep(delay);
            for n in &nodes {
                let (_, v) = lab.api("GET", &format!("/v1/nodes/{}", n.uuid), None);
                let st = v["provision_state"].as_str().unwrap_or("?").to_string();
                *states_at_kill.entry(st).or_default() += 1;
            }
            lab.sigkill();
            stop.store(true, Ordering::Relaxed);
        });
        lab.kill9();
        lab.integrity_check();
        lab.start();
        lab.check_recovered();
        for n in &nodes {
            lab.drive_to_available(&n.uuid, Duration::from_secs(30));
        }
    }
    // Work goes on: a full deploy to active, then back.
    let stop = AtomicBool::new(false);
    assert_eq!(lab.provision(&nodes[1].uuid, "active"), 202);
    lab.play_agent(&nodes[1], &agents[1], &stop);
    lab.wait_state(&nodes[1].uuid, "active", Duration::from_secs(30))
        .unwrap_or_else(|n| panic!("no deploy after the kills: {n}"));
    lab.drive_to_available(&nodes[1].uuid, Duration::from_secs(30));
    eprintln!(
        "kill -9 matrix: 20 kills survived in {:?}; node states at the kills: {states_at_kill:?}",
        started.elapsed()
    );
}

/// The boot roots, the image cache and the temporary directory share a filesystem that
/// fills up (the database lives elsewhere, so each failure is recorded): writing a node's
/// config, downloading an instance image and building a config drive each fail the deploy
/// with a message naming the path, leave nothing half-made to serve, and once space is back
/// the node deploys again without a restart.
#[test]
fn disk_full_during_config_write_image_download_and_media_build() {
    let work = tempfile::tempdir().unwrap();
    // The data directory is the tmpfs itself: the log (beside it) and the database (told
    // where) stay on a filesystem with room.
    let Some(fs) = Tmpfs::require("disk full matrix", &work.path().join("data"), "48m") else {
        return;
    };
    let db = work.path().join("db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::create_dir_all(fs.path.join("tmp")).unwrap();
    let db_url = format!("sqlite://{}", db.join("ironboot.sqlite").display());
    let tmpdir = fs.path.join("tmp").display().to_string();
    let env = [
        ("IRONBOOT_DATABASE__URL", db_url.as_str()),
        ("TMPDIR", tmpdir.as_str()),
    ];
    let data = fs.path.clone();
    let mut lab = FaultLab::new(&data, &work.path().join("src"), &env);
    lab.start();
    let node = lab.enroll("pxe", None);
    let agent = lab.stand_in(false);
    let stop = AtomicBool::new(false);
    let deploy_with = |lab: &FaultLab, configdrive: Option<&Value>| {
        assert_eq!(lab.provision_with(&node.uuid, "active", configdrive), 202);
        lab.play_agent(&node, &agent, &stop);
        lab.wait_settled(
            &node.uuid,
            &["active", "deploy failed"],
            Duration::from_secs(30),
        )
        .unwrap_or_else(|n| {
            panic!(
                "deploy neither finished nor failed: {n}\n{}",
                crate::support::ipa::tail(&lab.server().log(), 40)
            )
        })
    };
    let deploy = |lab: &FaultLab| deploy_with(lab, None);
    // A first deploy fills the cache with the deploy kernel and ramdisk.
    assert_eq!(deploy(&lab)["provision_state"], "active");
    lab.drive_to_available(&node.uuid, Duration::from_secs(30));

    // 1. Config write: the images are hard links (no space needed), the config is not.
    fs.fill();
    let failed = deploy(&lab);
    let error = failed["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(failed["provision_state"], "deploy failed", "{failed}");
    assert!(
        error.contains(&data.join("tftpboot").display().to_string()) && error.contains("space"),
        "config write failure names no path or cause: {error}"
    );
    let node_dir = data.join("tftpboot").join(&node.uuid);
    assert!(
        !node_dir.join("deploy_kernel").exists() && !node_dir.join("deploy_ramdisk").exists(),
        "the failed deploy left its images linked"
    );
    fs.free();
    lab.drive_to_available(&node.uuid, Duration::from_secs(30));

    // 2. Image download: a new instance image that does not fit.
    crate::support::write_pattern_file(&work.path().join("src/big.raw"), 8 << 20, 9);
    let big = format!("file://{}", work.path().join("src/big.raw").display());
    patch(&lab, &node.uuid, "/instance_info/image_source", json!(big));
    fs.fill_leaving(2 << 20);
    let failed = deploy(&lab);
    let error = failed["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(failed["provision_state"], "deploy failed", "{failed}");
    assert!(
        error.contains(&data.join("cache").display().to_string()) && error.contains("space"),
        "image download failure names no path or space: {error}"
    );
    fs.free();
    lab.drive_to_available(&node.uuid, Duration::from_secs(30));

    // 3. Media build: a JSON config drive built in TMPDIR, on the full filesystem. A
    // deploy first brings every image back into the cache (step 2 evicted them).
    let cached = format!("file://{}", work.path().join("src/disk.raw").display());
    patch(
        &lab,
        &node.uuid,
        "/instance_info/image_source",
        json!(cached),
    );
    assert_eq!(deploy(&lab)["provision_state"], "active");
    lab.drive_to_available(&node.uuid, Duration::from_secs(30));
    let drive = json!({"meta_data": {"hostname": "fault"}, "user_data": "x".repeat(3 << 20)});
    fs.fill_leaving(1 << 20);
    let failed = deploy_with(&lab, Some(&drive));
    let error = failed["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(failed["provision_state"], "deploy failed", "{failed}");
    assert!(
        error.contains("config drive") && error.contains(&tmpdir),
        "media build failure names no path: {error}"
    );
    fs.free();
    for dir in ["tftpboot", "httpboot", "cache"] {
        assert_eq!(temp_file_under(&data.join(dir)), None);
    }
    lab.drive_to_available(&node.uuid, Duration::from_secs(30));
    // Space is back: the same node deploys, no restart needed.
    assert_eq!(deploy(&lab)["provision_state"], "active");
    lab.kill9();
    lab.integrity_check();
    lab.start();
    lab.check_recovered();
    lab.drive_to_available(&node.uuid, Duration::from_secs(30));
}

fn patch(lab: &FaultLab, uuid: &str, path: &str, value: Value) {
    let (s, b) = lab.api(
        "PATCH",
        &format!("/v1/nodes/{uuid}"),
        Some(&json!([{"op": "add", "path": path, "value": value}])),
    );
    assert_eq!(s, 200, "{b}");
}

/// The database's filesystem turned read-only between runs: the start refuses, naming the
/// directory, before binding anything; made writable again, the service starts and
/// recovers. (A running SQLite keeps writing through the descriptors it has, so the kernel
/// refuses to remount under it: between runs is where this fault happens.)
#[test]
fn a_read_only_database_is_refused_at_start_naming_it_then_recovers() {
    let work = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::require("read-only database", &work.path().join("db"), "32m") else {
        return;
    };
    let db_url = format!("sqlite://{}", fs.path.join("ironboot.sqlite").display());
    let env = [("IRONBOOT_DATABASE__URL", db_url.as_str())];
    let data = work.path().join("data");
    let mut lab = FaultLab::new(&data, &work.path().join("src"), &env);
    lab.start();
    let node = lab.enroll("ipxe", None);
    lab.stop();
    assert!(fs.set_read_only(true), "cannot remount read-only");
    let log = match Server::try_start(&data, (0, 0, 0), &[], &env) {
        Ok(s) => panic!("started on a read-only database:\n{}", s.log()),
        Err(log) => log,
    };
    assert!(fs.set_read_only(false));
    let this_run = log.rsplit("ironboot stopped").next().unwrap_or(&log);
    assert!(
        !this_run.contains("listening"),
        "bound before refusing:\n{this_run}"
    );
    assert!(
        this_run.contains(&fs.path.display().to_string()),
        "the refusal names no path:\n{this_run}"
    );
    lab.integrity_check();
    lab.start();
    lab.check_recovered();
    lab.drive_to_available(&node.uuid, Duration::from_secs(30));
}

/// A BMC whose every command hangs and an agent that never answers: each deploy fails
/// within its timeout with a message saying what hung, the node is released, and once the
/// BMC is fixed every node goes back to `available`, also after a `kill -9`.
#[test]
fn a_hanging_bmc_or_agent_fails_the_deploy_and_releases_the_node() {
    if !crate::support::require_peer("hanging peers", &["curl", "sleep"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    // One attempt per agent command: a hang then costs command_timeout (3 s) plus the
    // check whether the command runs anyway (3 s), not three rounds of both.
    let env = [("IRONBOOT_AGENT__MAX_COMMAND_ATTEMPTS", "1")];
    let mut lab = FaultLab::new(&work.path().join("data"), &work.path().join("src"), &env);
    lab.start();
    let hang = json!(["sleep", "1000"]);
    let bmc_node = lab.enroll(
        "pxe",
        Some(
            json!({"script_power_on": ["true"], "script_power_off": ["true"],
                    "script_power_status": ["echo", "off"], "script_timeout": 2}),
        ),
    );
    for key in ["script_power_on", "script_power_off", "script_power_status"] {
        patch(
            &lab,
            &bmc_node.uuid,
            &format!("/driver_info/{key}"),
            hang.clone(),
        );
    }
    let agent_node = lab.enroll("ipxe", None);
    let hanging_agent = lab.stand_in(true);
    let started = Instant::now();
    assert_eq!(lab.provision(&bmc_node.uuid, "active"), 202);
    assert_eq!(lab.provision(&agent_node.uuid, "active"), 202);
    let stop = AtomicBool::new(false);
    std::thread::scope(|sc| {
        sc.spawn(|| lab.play_agent(&agent_node, &hanging_agent, &stop));
        for (n, what) in [(&bmc_node, "script_timeout"), (&agent_node, "agent")] {
            let failed = lab
                .wait_state(&n.uuid, "deploy failed", Duration::from_secs(40))
                .unwrap_or_else(|n| {
                    panic!(
                        "the hang did not fail the deploy: {n}\n{}",
                        crate::support::ipa::tail(&lab.server().log(), 40)
                    )
                });
            let error = failed["last_error"].as_str().unwrap_or_default();
            assert!(error.contains(what), "{what}: {error}");
        }
        stop.store(true, Ordering::Relaxed);
    });
    eprintln!(
        "hanging BMC and agent: both deploys failed within {:?}",
        started.elapsed()
    );
    for (key, value) in [
        ("script_power_on", json!(["true"])),
        ("script_power_off", json!(["true"])),
        ("script_power_status", json!(["echo", "off"])),
    ] {
        patch(&lab, &bmc_node.uuid, &format!("/driver_info/{key}"), value);
    }
    lab.kill9();
    lab.integrity_check();
    lab.start();
    lab.check_recovered();
    for n in [&bmc_node, &agent_node] {
        lab.drive_to_available(&n.uuid, Duration::from_secs(40));
    }
}
