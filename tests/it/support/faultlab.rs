//! A lab for fault tests: the real `ironboot serve` on one data directory that survives
//! kills and restarts, nodes with fake power and `pxe`/`ipxe` boot and the `direct` deploy,
//! stand-in agents (answering, or hanging), and the checks every restart must pass.
//!
//! No QEMU: nothing here boots; the deploy runs as far as the conductor, the boot roots, the
//! image cache and the agent protocol take it, which is where a crash can leave debris.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use super::server::Server;

/// What the lab's server is told besides its data directory.
pub const LAB_ENV: &[(&str, &str)] = &[
    ("IRONBOOT_AGENT__REQUIRE_TLS", "false"),
    ("IRONBOOT_AGENT__POST_DEPLOY_GET_POWER_STATE_RETRIES", "1"),
    (
        "IRONBOOT_AGENT__POST_DEPLOY_GET_POWER_STATE_RETRY_INTERVAL",
        "0",
    ),
    ("IRONBOOT_AGENT__COMMAND_TIMEOUT", "3"),
    ("IRONBOOT_CONDUCTOR__ENABLE_SCRIPT_POWER", "true"),
];

/// A node of the lab: its uuid, boot interface and the MAC of its one port.
#[derive(Debug, Clone)]
pub struct LabNode {
    pub uuid: String,
    pub boot: &'static str,
    pub mac: String,
}

pub struct FaultLab {
    pub data: PathBuf,
    pub server: Option<Server>,
    pub rt: tokio::runtime::Runtime,
    /// Deploy kernel, deploy ramdisk and instance image the nodes name (`file://`).
    pub sources: PathBuf,
    pub nodes: Vec<LabNode>,
    env: Vec<(String, String)>,
}

impl FaultLab {
    /// A lab on `data` (created if missing) with its image sources in `sources`.
    pub fn new(data: &Path, sources: &Path, env: &[(&str, &str)]) -> FaultLab {
        std::fs::create_dir_all(sources).unwrap();
        for (name, len, seed) in [
            ("deploy.kernel", 300_000, 1),
            ("deploy.initramfs", 700_000, 2),
            ("disk.raw", 2 << 20, 3),
        ] {
            let path = sources.join(name);
            if !path.exists() {
                super::write_pattern_file(&path, len, seed);
            }
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut all: Vec<(String, String)> = LAB_ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        FaultLab {
            data: data.to_path_buf(),
            server: None,
            rt,
            sources: sources.to_path_buf(),
            nodes: Vec::new(),
            env: all,
        }
    }

    /// Starts the server (again) on the lab's data directory.
    pub fn start(&mut self) {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.server = Some(Server::start_in(&self.data, &[], &env));
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("lab server not running")
    }

    /// SIGKILL without reaping (callable while other threads use the lab); [`kill9`] reaps.
    pub fn sigkill(&self) {
        if let Some(s) = self.server.as_ref() {
            // SAFETY: sending a signal to our own child process.
            unsafe { libc::kill(s.pid() as i32, libc::SIGKILL) };
        }
    }

    pub fn kill9(&mut self) {
        if let Some(s) = self.server.as_mut() {
            s.kill9();
        }
        self.server = None;
    }

    pub fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.stop();
        }
    }

    /// One API call (curl): (status, JSON body or Null). Status 0 when the server is gone.
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.server().api_url());
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-m", "20", "-X", method, "-w", "\n%{http_code}"])
            .args(["-H", "X-OpenStack-Ironic-API-Version: 1.80"]);
        if body.is_some() {
            // Through stdin: a body can be larger than an argument may be.
            cmd.args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                "@-",
            ]);
        }
        let mut child = cmd
            .arg(url)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if let (Some(b), Some(mut stdin)) = (body, child.stdin.take()) {
            use std::io::Write;
            let _ = stdin.write_all(b.to_string().as_bytes());
        }
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let json = serde_json::from_str(body).unwrap_or(Value::Null);
        (code.trim().parse().unwrap_or(0), json)
    }

    fn file_url(&self, name: &str) -> String {
        format!("file://{}", self.sources.join(name).display())
    }

    /// Waits until the node is in `state` and released; `Err(node)` on timeout.
    pub fn wait_state(&self, uuid: &str, state: &str, timeout: Duration) -> Result<Value, Value> {
        self.wait_settled(uuid, &[state], timeout)
    }

    /// Waits until the node is in one of `states` and released; `Err(node)` on timeout.
    pub fn wait_settled(
        &self,
        uuid: &str,
        states: &[&str],
        timeout: Duration,
    ) -> Result<Value, Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.node(uuid);
            let state = n["provision_state"].as_str().unwrap_or_default();
            if states.contains(&state) && n["reservation"].is_null() {
                return Ok(n);
            }
            if Instant::now() > deadline {
                return Err(n);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Enrolls a node (fake power unless `power` says otherwise) and makes it available.
    pub fn enroll(&mut self, boot: &'static str, power: Option<Value>) -> LabNode {
        let n = self.nodes.len() + 1;
        let mac = format!("52:54:00:fa:17:{n:02x}");
        let mut driver_info = json!({
            "deploy_kernel": self.file_url("deploy.kernel"),
            "deploy_ramdisk": self.file_url("deploy.initramfs"),
        });
        let power_interface = match power {
            Some(Value::Object(extra)) => {
                for (k, v) in extra {
                    driver_info[k] = v;
                }
                "script"
            }
            _ => "fake",
        };
        let body = json!({
            "name": format!("fault-{n}"),
            "driver": "fake-hardware",
            "boot_interface": boot,
            "deploy_interface": "direct",
            "power_interface": power_interface,
            "driver_info": driver_info,
            "properties": {"capabilities": "boot_mode:uefi"},
            "instance_info": {"image_source": self.file_url("disk.raw")},
        });
        let (s, created) = self.api("POST", "/v1/nodes", Some(&body));
        assert_eq!(s, 201, "{created}");
        let uuid = created["uuid"].as_str().unwrap().to_string();
        let (s, p) = self.api(
            "POST",
            "/v1/ports",
            Some(&json!({"address": mac, "node_uuid": uuid})),
        );
        assert_eq!(s, 201, "{p}");
        let node = LabNode { uuid, boot, mac };
        self.nodes.push(node.clone());
        self.drive_to_available(&node.uuid, Duration::from_secs(30));
        node
    }

    pub fn node(&self, uuid: &str) -> Value {
        let (s, n) = self.api("GET", &format!("/v1/nodes/{uuid}"), None);
        assert_eq!(s, 200, "{n}");
        n
    }

    /// Asks for a provision state change; the answer's status.
    pub fn provision(&self, uuid: &str, target: &str) -> u16 {
        self.provision_with(uuid, target, None)
    }

    /// [`FaultLab::provision`] with a config drive.
    pub fn provision_with(&self, uuid: &str, target: &str, configdrive: Option<&Value>) -> u16 {
        let mut body = json!({"target": target});
        if let Some(cd) = configdrive {
            body["configdrive"] = cd.clone();
        }
        self.api(
            "PUT",
            &format!("/v1/nodes/{uuid}/states/provision"),
            Some(&body),
        )
        .0
    }

    /// Undeploys, cleans, manages and provides as the node's state asks, until it is
    /// `available` and released.
    pub fn drive_to_available(&self, uuid: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.node(uuid);
            let state = n["provision_state"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let free = n["reservation"].is_null();
            if state == "available" && free {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {uuid} not back to available in {timeout:?}: {state}, {}\n{}",
                n["last_error"],
                super::ipa::tail(&self.server().log(), 30)
            );
            if free {
                let _ = match state.as_str() {
                    "enroll" => self.provision(uuid, "manage"),
                    "manageable" => self.provision(uuid, "provide"),
                    "clean failed" => self.provision(uuid, "manage"),
                    "active" | "deploy failed" | "error" | "wait call-back" => {
                        self.provision(uuid, "deleted")
                    }
                    _ => 0,
                };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The checks after a restart: no node in a state a restart cannot resume, no
    /// reservation, no temporary file in the roots or the cache, every placed image whole.
    pub fn check_recovered(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (s, list) = self.api("GET", "/v1/nodes/detail", None);
            assert_eq!(s, 200, "{list}");
            let nodes = list["nodes"].as_array().cloned().unwrap_or_default();
            let stuck: Vec<String> = nodes
                .iter()
                .filter(|n| {
                    let st = n["provision_state"].as_str().unwrap_or_default();
                    (st.ends_with("ing") && st != "wait call-back") || !n["reservation"].is_null()
                })
                .map(|n| {
                    format!(
                        "{} {} {}",
                        n["uuid"], n["provision_state"], n["reservation"]
                    )
                })
                .collect();
            if stuck.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "after restart: {stuck:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        for dir in ["tftpboot", "httpboot", "cache"] {
            if let Some(t) = temp_file_under(&self.data.join(dir)) {
                panic!("temporary file after restart: {}", t.display());
            }
        }
        self.check_placed_images_whole();
    }

    /// Every kernel, ramdisk and agent image in the roots has its source's exact bytes.
    fn check_placed_images_whole(&self) {
        let expect = |name: &str| std::fs::read(self.sources.join(name)).unwrap();
        let (kernel, ramdisk, disk) = (
            expect("deploy.kernel"),
            expect("deploy.initramfs"),
            expect("disk.raw"),
        );
        for root in ["tftpboot", "httpboot"] {
            for node in &self.nodes {
                let dir = self.data.join(root).join(&node.uuid);
                for (file, want) in [("deploy_kernel", &kernel), ("deploy_ramdisk", &ramdisk)] {
                    if let Ok(got) = std::fs::read(dir.join(file)) {
                        assert!(&got == want, "{}/{file} is not whole", dir.display());
                    }
                }
            }
        }
        let images = self.data.join("httpboot/agent_images");
        for e in std::fs::read_dir(&images).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                let got = std::fs::read(f.path()).unwrap();
                assert!(got == disk, "{} is not whole", f.path().display());
            }
        }
    }

    /// SQLite's own check of the database file (the server must not be running).
    pub fn integrity_check(&self) {
        let path = self
            .env
            .iter()
            .find(|(k, _)| k == "IRONBOOT_DATABASE__URL")
            .and_then(|(_, v)| v.strip_prefix("sqlite://"))
            .map_or_else(|| self.data.join("ironboot.sqlite"), PathBuf::from);
        let result: String = self.rt.block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            sqlx::query_scalar("PRAGMA integrity_check")
                .fetch_one(&mut c)
                .await
                .unwrap()
        });
        assert_eq!(result, "ok", "integrity_check of {}", path.display());
    }

    /// A stand-in agent for `node` on 127.0.0.1 (see [`StandIn`]).
    pub fn stand_in(&self, hang: bool) -> StandIn {
        let hanging = Arc::new(AtomicBool::new(hang));
        let app = Router::new()
            .route("/v1/commands/", post(agent_post).get(agent_list))
            .with_state(hanging.clone());
        let url = self.rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(l, app).await });
            format!("http://{addr}")
        });
        StandIn { url }
    }

    /// Plays the agent's side of `node`'s deploy (lookup, heartbeats) against `agent` until
    /// the node is active, or gives up quietly when the server goes away or `stop` is set.
    pub fn play_agent(&self, node: &LabNode, agent: &StandIn, stop: &AtomicBool) {
        let mut token: Option<String> = None;
        while !stop.load(Ordering::Relaxed) {
            let (s, n) = self.api("GET", &format!("/v1/nodes/{}", node.uuid), None);
            if s == 0 {
                return;
            }
            match n["provision_state"].as_str().unwrap_or_default() {
                "active" | "deploy failed" => return,
                "wait call-back" => {}
                _ => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            }
            if token.is_none() {
                let (s, found) =
                    self.api("GET", &format!("/v1/lookup?addresses={}", node.mac), None);
                match found["config"]["agent_token"].as_str() {
                    Some(t) if s == 200 && t != "******" => token = Some(t.to_string()),
                    // Issued to a lookup a kill interrupted: this deploy cannot be finished.
                    Some(_) => return,
                    None => {}
                }
            }
            if let Some(t) = &token {
                let _ = self.api(
                    "POST",
                    &format!("/v1/heartbeat/{}", node.uuid),
                    Some(&json!({"callback_url": agent.url, "agent_token": t,
                                 "agent_version": "13.0.0"})),
                );
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }
}

impl Drop for FaultLab {
    fn drop(&mut self) {
        // Never panics: a server that will not stop is killed.
        self.kill9();
    }
}

/// A stand-in agent: answers the deploy's commands at once (write_image reported done at the
/// first poll), or never answers anything (`hang`).
pub struct StandIn {
    pub url: String,
}

fn command(name: &str, status: &str, result: Value) -> Value {
    json!({"id": format!("id-{name}"), "command_name": name, "command_status": status,
           "command_error": null, "command_result": result})
}

async fn agent_post(
    State(hang): State<Arc<AtomicBool>>,
    axum::Json(cmd): axum::Json<Value>,
) -> axum::Json<Value> {
    if hang.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
    }
    let name = cmd["name"].as_str().unwrap_or_default();
    let short = name.split('.').nth(1).unwrap_or_default();
    axum::Json(match name {
        "deploy.get_deploy_steps" => command(
            short,
            "SUCCEEDED",
            json!({"deploy_steps": {"GenericHardwareManager": []},
                   "hardware_manager_version": {"generic_hardware_manager": "1.2"}}),
        ),
        "deploy.execute_deploy_step" => command(short, "RUNNING", Value::Null),
        "standby.get_partition_uuids" => command(
            short,
            "SUCCEEDED",
            json!({"root uuid": "4f0c3a4e-58c6-4b2b-9d5e-0d6f1c2a3b4c"}),
        ),
        _ => command(short, "SUCCEEDED", Value::Null),
    })
}

async fn agent_list(State(hang): State<Arc<AtomicBool>>) -> axum::Json<Value> {
    if hang.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
    }
    axum::Json(json!({"commands": [
        command("get_deploy_steps", "SUCCEEDED", Value::Null),
        command("execute_deploy_step", "SUCCEEDED",
            json!({"deploy_result": null,
                   "deploy_step": {"interface": "deploy", "step": "write_image",
                                   "priority": 80, "reboot_requested": false}})),
    ]}))
}

/// The first file under `root` with a temporary name, if any.
pub fn temp_file_under(root: &Path) -> Option<PathBuf> {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(".ironboot-tmp-")
            {
                return Some(e.path());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path());
            }
        }
    }
    None
}

/// A tiny xorshift for the kill schedule; the seed is printed so a failure can be replayed
/// (`IRONBOOT_FAULT_SEED`).
pub struct Dice(u64);

impl Dice {
    pub fn from_env() -> Dice {
        let seed = std::env::var("IRONBOOT_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(7, |d| d.as_nanos() as u64)
            });
        eprintln!("fault schedule seed: IRONBOOT_FAULT_SEED={seed}");
        Dice(seed | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
