//! A network boot lab: the real `ironboot serve` configured as QEMU guests see it, nodes
//! enrolled and deployed through its API, and a stand-in for the agent.
//!
//! QEMU's user networking shows the host's loopback to a guest as 10.0.2.2, so the server
//! listens on 127.0.0.1 and is told that nodes reach it there: `[deploy] http_url` and
//! `[api] public_url` (the `ipa-api-url` the deploy ramdisk gets) use 10.0.2.2 and the ports
//! picked before it starts. TFTP is on an ephemeral port: slirp swallows UDP 69.
//!
//! The guests boot the test kit's busybox initramfs (see `guest`), not the ironic-python-agent,
//! so once a guest proved its deploy boot, [`FakeAgent`] plays the agent's side of the deploy:
//! lookup and heartbeats through ironboot's ramdisk API, and the command API the conductor
//! drives (`get_deploy_steps`, `execute_deploy_step`, `get_partition_uuids`, `power_off`).
//! `tests/it/agent_ipa.rs` runs the same deploy against the real agent.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use super::guest::{self, GuestKit, GuestRun};
use super::ipa::tail;
use super::server::Server;
use super::{free_tcp_port, free_udp_port, require_peer, run};

/// The API microversion every call asks for.
const API_VERSION: &str = "1.80";
/// A guest that has not powered off by then is killed and the test fails.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(150);

/// What a node is enrolled with.
pub struct NodeSpec<'a> {
    pub uuid: &'a str,
    pub boot_interface: &'a str,
    /// `bios` or `uefi` (`properties.capabilities`).
    pub boot_mode: &'a str,
    pub mac: &'a str,
    pub instance_info: Value,
}

pub struct NetbootLab {
    pub server: Server,
    pub kit: GuestKit,
    pub api_port: u16,
    pub http_port: u16,
    pub tftp_port: u16,
    pub rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

impl NetbootLab {
    /// Starts `ironboot serve` with `env` added to the lab's own settings. `prepare` runs
    /// with the lab directory and the ports before the server starts (to build loaders that
    /// embed them). `None` when QEMU or the kit are missing and peers are optional.
    pub fn start(
        test: &str,
        env: &[(&str, &str)],
        prepare: impl Fn(&Path, u16, u16) -> Vec<(String, String)>,
    ) -> Option<NetbootLab> {
        if !require_peer(test, &["curl"]) {
            return None;
        }
        let kit = guest::guest_kit(test)?;
        let dir = tempfile::tempdir().unwrap();
        // The guest reaches the host's loopback ports through slirp as 10.0.2.2:<port>, and
        // those URLs (and GRUB's prefix) are configuration: the ports are chosen before the
        // server starts. A port taken in between makes the start fail; then try others.
        let mut attempt = 0;
        let (server, (api_port, http_port, tftp_port)) = loop {
            attempt += 1;
            let ports = (free_tcp_port(), free_tcp_port(), free_udp_port());
            let extra = prepare(dir.path(), ports.1, ports.2);
            let all = Self::settings(ports, &extra, env);
            let env_refs: Vec<(&str, &str)> =
                all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            match Server::try_start(&dir.path().join("data"), ports, &[], &env_refs) {
                Ok(s) => break (s, ports),
                Err(log) if attempt < 3 && log.contains("in use") => continue,
                Err(log) => panic!("ironboot did not start:\n{log}"),
            }
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Some(NetbootLab {
            server,
            kit,
            api_port,
            http_port,
            tftp_port,
            rt,
            client: super::http_client(),
            dir,
        })
    }

    /// The lab's own settings for `ports`, then `extra` (from `prepare`), then the test's.
    fn settings(
        (api_port, http_port, _): (u16, u16, u16),
        extra: &[(String, String)],
        env: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = vec![
            (
                "IRONBOOT_DEPLOY__HTTP_URL".into(),
                format!("http://10.0.2.2:{http_port}"),
            ),
            (
                "IRONBOOT_API__PUBLIC_URL".into(),
                format!("http://10.0.2.2:{api_port}"),
            ),
            // JSON lines: the tests read the access and transfer logs field by field.
            ("IRONBOOT_LOG__FORMAT".into(), "json".into()),
            // The stand-in agent speaks plain HTTP and answers at once.
            ("IRONBOOT_AGENT__REQUIRE_TLS".into(), "false".into()),
            (
                "IRONBOOT_AGENT__POST_DEPLOY_GET_POWER_STATE_RETRIES".into(),
                "1".into(),
            ),
            (
                "IRONBOOT_AGENT__POST_DEPLOY_GET_POWER_STATE_RETRY_INTERVAL".into(),
                "0".into(),
            ),
        ];
        all.extend(extra.iter().cloned());
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        all
    }

    pub fn tftp_root(&self) -> PathBuf {
        self.server.data_dir.join("tftpboot")
    }

    pub fn http_root(&self) -> PathBuf {
        self.server.data_dir.join("httpboot")
    }

    /// `http://10.0.2.2:<http port>`: the http root as a guest reaches it.
    pub fn guest_http(&self) -> String {
        format!("http://10.0.2.2:{}", self.http_port)
    }

    /// `tftp://10.0.2.2:<tftp port>`.
    pub fn guest_tftp(&self) -> String {
        format!("tftp://10.0.2.2:{}", self.tftp_port)
    }

    /// One API call: (status, JSON body).
    pub fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("http://127.0.0.1:{}{path}", self.api_port);
        self.rt.block_on(async {
            let mut req = self
                .client
                .request(method, &url)
                .header("X-OpenStack-Ironic-API-Version", API_VERSION);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
            (status, json)
        })
    }

    pub fn node(&self, uuid: &str) -> Value {
        let (s, n) = self.api(reqwest::Method::GET, &format!("/v1/nodes/{uuid}"), None);
        assert_eq!(s, 200, "{n}");
        n
    }

    /// The kernel parameters every test node gets: the configured ones, the serial console,
    /// and the URL the test kit's `/init` fetches once it runs (served from the http root,
    /// so the guest's wget succeeds and the access log shows it).
    pub fn kernel_append_params(&self, uuid: &str) -> String {
        format!(
            "%default% console=ttyS0 panic=-1 cb={}/{}",
            self.guest_http(),
            callback_path(uuid)
        )
    }

    /// Enrolls a node with `deploy_interface=direct`, `power_interface=fake`, the test kit's
    /// kernel and initramfs as deploy kernel and ramdisk, and one port.
    pub fn enroll(&self, spec: &NodeSpec) {
        std::fs::write(
            self.http_root().join(callback_path(spec.uuid)),
            b"called back\n",
        )
        .unwrap();
        let body = json!({
            "uuid": spec.uuid,
            "driver": "fake-hardware",
            "boot_interface": spec.boot_interface,
            "deploy_interface": "direct",
            "power_interface": "fake",
            "driver_info": {
                "deploy_kernel": format!("file://{}", self.kit.kernel.display()),
                "deploy_ramdisk": format!("file://{}", self.kit.initrd.display()),
                "kernel_append_params": self.kernel_append_params(spec.uuid),
            },
            "properties": {"capabilities": format!("boot_mode:{}", spec.boot_mode)},
            "instance_info": spec.instance_info,
        });
        let (s, n) = self.api(reqwest::Method::POST, "/v1/nodes", Some(body));
        assert_eq!(s, 201, "{n}");
        let (s, p) = self.api(
            reqwest::Method::POST,
            "/v1/ports",
            Some(json!({"address": spec.mac, "node_uuid": spec.uuid})),
        );
        assert_eq!(s, 201, "{p}");
    }

    pub fn provision(&self, uuid: &str, target: &str) {
        let (s, b) = self.api(
            reqwest::Method::PUT,
            &format!("/v1/nodes/{uuid}/states/provision"),
            Some(json!({"target": target})),
        );
        assert_eq!(s, 202, "{target} of {uuid}: {b}");
    }

    /// Waits until the node is in `state` and released; fails early on a failed state.
    pub fn wait_state(&self, uuid: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n = self.node(uuid);
            let now = n["provision_state"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if now == state && n["reservation"].is_null() {
                return n;
            }
            assert!(
                !now.ends_with("failed") || state.ends_with("failed"),
                "node {uuid} is {now} (waiting for {state}): {}\n{}",
                n["last_error"],
                tail(&self.server.log(), 40)
            );
            assert!(
                Instant::now() < deadline,
                "node {uuid} never reached {state:?}: {n}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// enroll → manageable → available → deploy, until the node waits for its agent.
    pub fn deploy_until_wait_call_back(&self, uuid: &str) -> Value {
        self.provision(uuid, "manage");
        self.wait_state(uuid, "manageable");
        self.provision(uuid, "provide");
        self.wait_state(uuid, "available");
        self.provision(uuid, "deploy");
        self.wait_state(uuid, "wait call-back")
    }

    /// Boots a guest (`qemu-system-x86_64 -accel tcg -nographic -no-reboot -m 512 <args>`)
    /// and checks the test kit's `/init` ran and called back through ironboot's HTTP server.
    pub fn boot(&self, what: &str, uuid: &str, args: &[String]) -> GuestRun {
        let run = guest::run_qemu(args, BOOT_TIMEOUT, Some(guest::MARKER));
        let marker = run.assert_marker(what);
        assert!(
            run.output.contains("IRONBOOT-CALLBACK-OK"),
            "{what}: the guest did not call back; console tail:\n{}",
            tail(&run.output, 40)
        );
        eprintln!(
            "{what}: marker after {:.1} s, guest off after {:.1} s (waited {:.1} s for a slot)",
            marker.as_secs_f64(),
            run.elapsed.as_secs_f64(),
            run.queued.as_secs_f64()
        );
        let callback = format!("/{}", callback_path(uuid));
        assert!(
            self.access_log_statuses(&callback).contains(&200),
            "{what}: ironboot's access log has no successful GET {callback}; its requests:\n{:#?}",
            self.log_events("http")
        );
        run
    }

    /// ironboot's log events (JSON lines) with `message`, in order.
    pub fn log_events(&self, message: &str) -> Vec<Value> {
        self.server
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["message"] == message)
            .collect()
    }

    /// Statuses of the HTTP requests for `path` in ironboot's access log.
    pub fn access_log_statuses(&self, path: &str) -> Vec<u16> {
        self.log_events("http")
            .iter()
            .filter(|e| e["target"] == "ironboot::serve::http::access" && e["path"] == path)
            .filter_map(|e| e["status"].as_u64().map(|s| s as u16))
            .collect()
    }

    /// Outcomes (`complete`, `incomplete`) of the TFTP transfers of `file`, as the client
    /// named it.
    pub fn tftp_outcomes(&self, file: &str) -> Vec<String> {
        self.log_events("tftp transfer")
            .iter()
            .filter(|e| e["file"] == file)
            .filter_map(|e| e["outcome"].as_str().map(String::from))
            .collect()
    }

    /// Starts the stand-in agent; `root_uuid` is what it reports as `root uuid`.
    pub fn fake_agent(&self, root_uuid: &str) -> FakeAgent {
        let state = Arc::new(Mutex::new(AgentState {
            root_uuid: root_uuid.to_string(),
            ..AgentState::default()
        }));
        let app = Router::new()
            .route("/v1/commands/", post(agent_post).get(agent_list))
            .with_state(state.clone());
        let url = self.rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(l, app).await });
            format!("http://{addr}")
        });
        FakeAgent { url, state }
    }

    /// Plays the agent through a deploy: lookup by `mac`, a heartbeat (the conductor starts
    /// `write_image`), `write_image` reported done, a heartbeat (the conductor reads the
    /// partition UUIDs, prepares the instance boot, powers the node off and on) → `active`.
    pub fn finish_deploy(&self, uuid: &str, mac: &str, agent: &FakeAgent) -> Value {
        let (s, found) = self.api(
            reqwest::Method::GET,
            &format!("/v1/lookup?addresses={mac}"),
            None,
        );
        assert_eq!(s, 200, "lookup: {found}");
        assert_eq!(found["node"]["uuid"], uuid);
        let token = found["config"]["agent_token"].as_str().unwrap().to_string();
        let heartbeat = || {
            let (s, b) = self.api(
                reqwest::Method::POST,
                &format!("/v1/heartbeat/{uuid}"),
                Some(json!({"callback_url": agent.url, "agent_token": token,
                            "agent_version": "13.0.0"})),
            );
            assert_eq!(s, 202, "heartbeat: {b}");
        };
        heartbeat();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !agent.received("deploy.execute_deploy_step") {
            assert!(
                Instant::now() < deadline,
                "the conductor never started write_image; agent saw {:?}\n{}",
                agent.state.lock().unwrap().posted,
                tail(&self.server.log(), 40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.wait_state(uuid, "wait call-back");
        agent.state.lock().unwrap().write_image_done = true;
        heartbeat();
        self.wait_state(uuid, "active")
    }
}

/// The file the guest's `/init` fetches (`cb=`), relative to the http root.
pub fn callback_path(uuid: &str) -> String {
    format!("booted-{uuid}")
}

#[derive(Default)]
pub struct AgentState {
    root_uuid: String,
    /// Command names in the order the conductor sent them.
    pub posted: Vec<String>,
    write_image_done: bool,
}

/// The stand-in agent's command API (see the module doc).
pub struct FakeAgent {
    pub url: String,
    pub state: Arc<Mutex<AgentState>>,
}

impl FakeAgent {
    pub fn received(&self, command: &str) -> bool {
        self.state
            .lock()
            .unwrap()
            .posted
            .iter()
            .any(|c| c == command)
    }
}

fn command(name: &str, status: &str, result: Value) -> Value {
    json!({"id": format!("id-{name}"), "command_name": name, "command_status": status,
           "command_error": null, "command_result": result})
}

async fn agent_post(
    State(state): State<Arc<Mutex<AgentState>>>,
    axum::Json(cmd): axum::Json<Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let name = cmd["name"].as_str().unwrap_or_default().to_string();
    let mut s = state.lock().unwrap();
    s.posted.push(name.clone());
    let short = name.split('.').nth(1).unwrap_or_default();
    let reply = match name.as_str() {
        "deploy.get_deploy_steps" => command(
            short,
            "SUCCEEDED",
            json!({"deploy_steps": {"GenericHardwareManager": []},
                   "hardware_manager_version": {"generic_hardware_manager": "1.2"}}),
        ),
        "deploy.execute_deploy_step" => command(short, "RUNNING", Value::Null),
        "standby.get_partition_uuids" => {
            command(short, "SUCCEEDED", json!({"root uuid": s.root_uuid}))
        }
        "standby.power_off" => command(short, "SUCCEEDED", Value::Null),
        // Anything else is a command this deploy should not send.
        _ => {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                axum::Json(json!({"faultstring": format!("unexpected command {name}")})),
            )
                .into_response();
        }
    };
    axum::Json(reply).into_response()
}

async fn agent_list(State(state): State<Arc<Mutex<AgentState>>>) -> axum::Json<Value> {
    let s = state.lock().unwrap();
    let mut commands = vec![command("get_deploy_steps", "SUCCEEDED", Value::Null)];
    if s.posted.iter().any(|c| c == "deploy.execute_deploy_step") {
        commands.push(if s.write_image_done {
            command(
                "execute_deploy_step",
                "SUCCEEDED",
                json!({"deploy_result": null,
                       "deploy_step": {"interface": "deploy", "step": "write_image",
                                       "priority": 80, "reboot_requested": false}}),
            )
        } else {
            command("execute_deploy_step", "RUNNING", Value::Null)
        });
    }
    axum::Json(json!({ "commands": commands }))
}

/// A GRUB EFI image whose prefix is `prefix` (e.g. `(tftp,10.0.2.2:6969)/grub`), built with
/// grub-mkimage into `dir`. `None` when grub-mkimage or the x86_64-efi modules are missing
/// and peers are optional.
pub fn grub_efi_image(test: &str, dir: &Path, prefix: &str) -> Option<PathBuf> {
    if !require_peer(test, &["grub-mkimage"])
        || !super::require_condition(
            test,
            Path::new("/usr/lib/grub/x86_64-efi/linux.mod").is_file(),
            "GRUB's x86_64-efi modules are missing (Debian package grub-efi-amd64-bin)",
        )
    {
        return None;
    }
    let out = dir.join("grubx64.efi");
    let (ok, _, err) = run(Command::new("grub-mkimage")
        .args(["-O", "x86_64-efi", "-o"])
        .arg(&out)
        .args(["-p", prefix])
        .args([
            "efinet",
            "tftp",
            "http",
            "net",
            "linux",
            "normal",
            "configfile",
            "echo",
            "serial",
            "terminal",
            "efi_gop",
        ]));
    assert!(ok, "grub-mkimage failed: {err}");
    Some(out)
}
