//! A lab for virtual media through the real `ironboot serve`: sushy-tools (fake driver) as the
//! BMC, nodes enrolled and driven through the API, and the tools that read what ironboot
//! published (xorriso for ISOs, mtools for the floppy). The test plays the agent with
//! [`super::fake_agent`] (lookup and heartbeats against the API), or `agent_ipa` runs the
//! real one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::server::Server;
use super::sushy::{Options, PASSWORD, SYSTEM_UUID, Sushy, USER};
use super::{require_peer, run, write_pattern_file};

/// The MAC of the node's port (sushy's `node-0` NIC).
pub const MAC: &str = "52:54:00:12:34:56";
pub const API_VERSION: &str = "1.80";

/// Settings every lab server gets: small Redfish retries and timeouts (fault tests stay
/// short), plain-http agent callbacks (the fake agent), quick post-deploy power checks.
const BASE_CONFIG: &str = "\
[agent]
require_tls = false
post_deploy_get_power_state_retries = 1
post_deploy_get_power_state_retry_interval = 1
[redfish]
connection_attempts = 2
connection_retry_interval_ms = 100
connect_timeout_secs = 3
request_timeout_secs = 10
power_state_change_timeout_secs = 15
power_state_poll_interval_ms = 100
";

pub struct VmediaLab {
    pub sushy: Sushy,
    pub server: Server,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    /// The config file the server runs with (for a second server taking over).
    pub config: PathBuf,
}

impl VmediaLab {
    /// `None` (after a loud message) when a peer is missing and peers are optional.
    /// `extra_config` is appended to the server's TOML configuration; `env` overrides it
    /// (`IRONBOOT_<SECTION>__<KEY>`).
    pub fn start(
        test: &str,
        sushy: Options,
        extra_config: &str,
        env: &[(&str, &str)],
    ) -> Option<VmediaLab> {
        if !require_peer(test, &["xorriso", "mtype", "mlabel"]) {
            return None;
        }
        let sushy = Sushy::start(test, sushy)?;
        let dir = tempfile::Builder::new()
            .prefix("vmedia-lab-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let config = dir.path().join("ironboot.toml");
        std::fs::write(&config, format!("{BASE_CONFIG}{extra_config}")).unwrap();
        let mut all_env = vec![("IRONBOOT_HOST", "conductor-a")];
        all_env.extend_from_slice(env);
        let server = Server::start_in(
            &dir.path().join("data"),
            &["--config", config.to_str().unwrap()],
            &all_env,
        );
        Some(VmediaLab {
            sushy,
            server,
            dir,
            http: super::http_client(),
            config,
        })
    }

    /// A file of `len` pattern bytes in the lab (deploy kernels, ramdisks, images).
    pub fn file(&self, name: &str, len: usize, seed: u64) -> PathBuf {
        let p = self.dir.path().join(name);
        write_pattern_file(&p, len, seed);
        p
    }

    /// driver_info for sushy's system `uuid`, plus `extra`.
    pub fn driver_info(&self, uuid: &str, extra: Value) -> Value {
        let mut info = json!({
            "redfish_address": self.sushy.url(),
            "redfish_system_id": format!("/redfish/v1/Systems/{uuid}"),
            "redfish_username": USER,
            "redfish_password": PASSWORD,
        });
        for (k, v) in extra.as_object().unwrap() {
            info[k] = v.clone();
        }
        info
    }

    pub async fn api(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        api_call(&self.http, &self.server.api_url(), method, path, body).await
    }

    /// Creates a `redfish` node with a port for `mac`, and makes it available.
    pub async fn enroll(
        &self,
        name: &str,
        driver_info: Value,
        instance_info: Value,
        mac: &str,
    ) -> String {
        let (s, node) = self
            .api(
                Method::POST,
                "/v1/nodes",
                Some(
                    json!({"name": name, "driver": "redfish", "driver_info": driver_info,
                    "instance_info": instance_info}),
                ),
            )
            .await;
        assert_eq!(s, 201, "{node}");
        let uuid = node["uuid"].as_str().unwrap().to_string();
        let (s, port) = self
            .api(
                Method::POST,
                "/v1/ports",
                Some(json!({"address": mac, "node_uuid": uuid})),
            )
            .await;
        assert_eq!(s, 201, "{port}");
        for (verb, state) in [("manage", "manageable"), ("provide", "available")] {
            let (s, body) = self.provision(&uuid, verb).await;
            assert_eq!(s, 202, "{verb}: {body}");
            self.wait_state(&uuid, &[state], Duration::from_secs(30))
                .await;
        }
        uuid
    }

    pub async fn provision(&self, uuid: &str, target: &str) -> (u16, Value) {
        self.api(
            Method::PUT,
            &format!("/v1/nodes/{uuid}/states/provision"),
            Some(json!({"target": target})),
        )
        .await
    }

    pub async fn node(&self, uuid: &str) -> Value {
        let (s, n) = self
            .api(Method::GET, &format!("/v1/nodes/{uuid}"), None)
            .await;
        assert_eq!(s, 200, "{n}");
        n
    }

    /// Waits until the node is in one of `states` and not reserved.
    pub async fn wait_state(&self, uuid: &str, states: &[&str], timeout: Duration) -> Value {
        wait_state(&self.http, &self.server.api_url(), uuid, states, timeout).await
    }

    /// `name -> bytes` of every medium published under the server's HTTP root.
    pub fn published(&self) -> Vec<(String, Vec<u8>)> {
        published_in(&self.server.data_dir.join("httpboot"))
    }
}

pub async fn api_call(
    http: &reqwest::Client,
    api: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http
        .request(method, format!("{api}{path}"))
        .header("X-OpenStack-Ironic-API-Version", API_VERSION);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

pub async fn wait_state(
    http: &reqwest::Client,
    api: &str,
    uuid: &str,
    states: &[&str],
    timeout: Duration,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, n) = api_call(http, api, Method::GET, &format!("/v1/nodes/{uuid}"), None).await;
        let state = n["provision_state"].as_str().unwrap_or_default();
        if states.contains(&state) && n["reservation"].is_null() {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "node {uuid} did not reach {states:?} within {timeout:?}: {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `name -> bytes` of the media under `<http_root>/redfish`.
pub fn published_in(http_root: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = http_root.join("redfish");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// One file of an ISO image, read with xorriso.
pub fn iso_file(iso: &[u8], inner: &str) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image.iso");
    std::fs::write(&image, iso).unwrap();
    let out = tmp.path().join("out");
    let (ok, _, err) = run(Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(&image)
        .args(["-extract", inner])
        .arg(&out));
    assert!(ok, "xorriso cannot extract {inner}: {err}");
    std::fs::read(&out).unwrap()
}

/// The `key=value` words of the kernel command line of an ironboot ISO (its GRUB config for
/// UEFI, its isolinux config for BIOS).
pub fn iso_cmdline(iso: &[u8], uefi: bool) -> Vec<(String, String)> {
    let (path, keyword) = if uefi {
        ("/EFI/BOOT/grub.cfg", "linux")
    } else {
        ("/isolinux/isolinux.cfg", "APPEND")
    };
    let text = String::from_utf8(iso_file(iso, path)).unwrap();
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(keyword))
        .unwrap_or_else(|| panic!("no {keyword} line in {path}:\n{text}"));
    line.split_whitespace()
        .skip(1)
        .map(|w| w.trim_matches('\''))
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `parameters.txt` and the volume label of a floppy image, read with mtools.
pub fn floppy_parameters(image: &[u8]) -> (String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("floppy.img");
    std::fs::write(&path, image).unwrap();
    let p = path.to_str().unwrap();
    let (ok, text, err) = run(Command::new("mtype")
        .args(["-i", p, "::parameters.txt"])
        .env("MTOOLS_SKIP_CHECK", "1"));
    assert!(ok, "mtype: {err}");
    let (ok, label, err) = run(Command::new("mlabel")
        .args(["-s", "-i", p, "::"])
        .env("MTOOLS_SKIP_CHECK", "1"));
    assert!(ok, "mlabel: {err}");
    let label = label.trim();
    (
        label
            .strip_prefix("Volume label is ")
            .unwrap_or(label)
            .to_string(),
        text,
    )
}

/// The value of `key` among `params`.
pub fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The ramdisk side of the agent protocol against ironboot's API: the lookup, and heartbeats
/// until the node leaves `wait call-back`.
pub struct AgentSide<'a> {
    pub http: &'a reqwest::Client,
    pub api: String,
    pub node: String,
    pub mac: String,
    pub token: String,
}

impl AgentSide<'_> {
    /// `GET /v1/lookup` by MAC: the node and the token it hands out.
    pub async fn lookup(&self) -> (u16, Value) {
        api_call(
            self.http,
            &self.api,
            Method::GET,
            &format!("/v1/lookup?addresses={}&node_uuid={}", self.mac, self.node),
            None,
        )
        .await
    }

    pub async fn heartbeat(&self, callback_url: &str) -> (u16, Value) {
        api_call(
            self.http,
            &self.api,
            Method::POST,
            &format!("/v1/heartbeat/{}", self.node),
            Some(
                json!({"callback_url": callback_url, "agent_token": self.token,
                "agent_version": "13.0.0"}),
            ),
        )
        .await
    }

    /// Heartbeats every half second until the node is out of `wait call-back` and
    /// `deploying`; returns it.
    pub async fn heartbeat_until_done(&self, callback_url: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (s, body) = self.heartbeat(callback_url).await;
            assert!(s == 202 || s == 409, "heartbeat: {s} {body}");
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (_, n) = api_call(
                self.http,
                &self.api,
                Method::GET,
                &format!("/v1/nodes/{}", self.node),
                None,
            )
            .await;
            let state = n["provision_state"].as_str().unwrap_or_default();
            if !["wait call-back", "deploying"].contains(&state) && n["reservation"].is_null() {
                return n;
            }
            assert!(Instant::now() < deadline, "deploy did not finish: {n}");
        }
    }
}

/// sushy's default system.
pub fn system() -> &'static str {
    SYSTEM_UUID
}

/// The file name a URL names (its last path segment, query dropped).
pub fn basename(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    path.rsplit('/').next().unwrap_or_default().to_string()
}

/// The bytes sushy downloaded when `url` was inserted.
pub fn fetched(sushy: &Sushy, url: &str) -> Vec<u8> {
    let name = basename(url);
    let copies = sushy.downloaded();
    copies
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| b.clone())
        .unwrap_or_else(|| {
            let names: Vec<&String> = copies.iter().map(|(n, _)| n).collect();
            panic!("sushy holds no copy of {name} (it holds {names:?})")
        })
}

/// The image URL in the `Cd` slot of system `uuid` (panics when the slot is empty).
pub async fn cd_url(sushy: &Sushy, uuid: &str) -> String {
    let slots = sushy.slots(uuid).await;
    let (_, image, inserted) = &slots[0];
    assert!(*inserted && !image.is_empty(), "no CD inserted: {slots:?}");
    image.clone()
}

/// Both slots of system `uuid` are empty.
pub async fn assert_slots_empty(sushy: &Sushy, uuid: &str) {
    for (slot, image, inserted) in sushy.slots(uuid).await {
        assert!(
            image.is_empty() && !inserted,
            "{slot} of {uuid} still holds {image:?} (inserted: {inserted})"
        );
    }
}
