//! A deploy lab: the real `ironboot serve`, and machines it powers through the `script` power
//! interface — so the conductor, not the test, switches them on and off:
//! - a process machine: "power on" starts `ironboot-agent` as a process whose disk is a file
//!   (only that file: outside a ramdisk the agent touches nothing else), "power off" kills it;
//! - a QEMU machine: "power on" starts `qemu-system-x86_64` (TCG, user networking, real
//!   firmware) on its disk files, "power off" kills it; every boot's serial console goes to
//!   its own file. The agent's command API is forwarded from 127.0.0.1:<port> on the host
//!   (`hostfwd`), which the agent advertises (`ipa-advertise-host`/`-port`).
//!
//! Machines reach the server as 127.0.0.1 (processes) or 10.0.2.2 (QEMU guests).

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::guest::cache_root;
use super::server::Server;
use super::{free_tcp_port, free_udp_port};

const API_VERSION: &str = "1.80";

/// How machines reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    Loopback,
    Guest,
}

impl Reach {
    fn host(self) -> &'static str {
        match self {
            Reach::Loopback => "127.0.0.1",
            Reach::Guest => "10.0.2.2",
        }
    }
}

pub struct DeployLab {
    pub server: Server,
    pub dir: tempfile::TempDir,
    pub api_port: u16,
    pub http_port: u16,
    pub tftp_port: u16,
    pub reach: Reach,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

/// One API call's outcome as ironboot logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub status: u16,
}

impl DeployLab {
    /// Starts `ironboot serve` with the lab's settings plus `env`; `prepare` gets the lab
    /// directory and the HTTP and TFTP ports first (for loaders that embed them).
    pub fn start(
        reach: Reach,
        env: &[(&str, &str)],
        prepare: impl FnOnce(&Path, u16, u16) -> Vec<(String, String)>,
    ) -> DeployLab {
        let dir = tempfile::Builder::new()
            .prefix("ironboot-deploy-lab")
            .tempdir()
            .unwrap();
        let (api_port, http_port, tftp_port) = (free_tcp_port(), free_tcp_port(), free_udp_port());
        let host = reach.host();
        let mut all: Vec<(String, String)> = [
            (
                "IRONBOOT_DEPLOY__HTTP_URL",
                format!("http://{host}:{http_port}"),
            ),
            (
                "IRONBOOT_API__PUBLIC_URL",
                format!("http://{host}:{api_port}"),
            ),
            ("IRONBOOT_LOG__FORMAT", "json".into()),
            (
                "RUST_LOG",
                "info,ironboot::agent=debug,tower_http=debug".into(),
            ),
            ("IRONBOOT_CONDUCTOR__ENABLE_SCRIPT_POWER", "true".into()),
            ("IRONBOOT_API__RAMDISK_HEARTBEAT_TIMEOUT", "20".into()),
            (
                "IRONBOOT_CONDUCTOR__CHECK_PROVISION_STATE_INTERVAL",
                "2".into(),
            ),
            ("IRONBOOT_CONDUCTOR__DEPLOY_CALLBACK_TIMEOUT", "600".into()),
            (
                "IRONBOOT_AGENT__POST_DEPLOY_GET_POWER_STATE_RETRIES",
                "30".into(),
            ),
            (
                "IRONBOOT_AGENT__POST_DEPLOY_GET_POWER_STATE_RETRY_INTERVAL",
                "1".into(),
            ),
            ("IRONBOOT_AGENT__COMMAND_WAIT_INTERVAL", "1".into()),
            ("IRONBOOT_AGENT__DEFAULT_BOOT_MODE", "bios".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        all.extend(prepare(dir.path(), http_port, tftp_port));
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let env_refs: Vec<(&str, &str)> =
            all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let server = Server::start_in_on_ports(
            &dir.path().join("data"),
            (api_port, http_port, tftp_port),
            &[],
            &env_refs,
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        DeployLab {
            server,
            dir,
            api_port,
            http_port,
            tftp_port,
            reach,
            rt,
            client: super::http_client(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn http_root(&self) -> PathBuf {
        self.server.data_dir.join("httpboot")
    }

    pub fn tftp_root(&self) -> PathBuf {
        self.server.data_dir.join("tftpboot")
    }

    /// `http://<host>:<port>` of the API as machines reach it.
    pub fn api_url_for_machines(&self) -> String {
        format!("http://{}:{}", self.reach.host(), self.api_port)
    }

    /// `http://<host>:<port>` of the boot HTTP server as machines reach it.
    pub fn http_url_for_machines(&self) -> String {
        format!("http://{}:{}", self.reach.host(), self.http_port)
    }

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
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        })
    }

    pub fn node(&self, uuid: &str) -> Value {
        let (s, n) = self.api(reqwest::Method::GET, &format!("/v1/nodes/{uuid}"), None);
        assert_eq!(s, 200, "{n}");
        n
    }

    /// Creates a node (`driver: fake-hardware`, `direct` deploy, `script` power) with `fields`
    /// merged in, and its port; brings it to `available`.
    pub fn create_node(&self, mac: &str, fields: Value) -> String {
        let mut body = json!({"driver": "fake-hardware", "deploy_interface": "direct",
                              "power_interface": "script", "boot_interface": "fake"});
        for (k, v) in fields.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, n) = self.api(reqwest::Method::POST, "/v1/nodes", Some(body));
        assert_eq!(s, 201, "{n}");
        let uuid = n["uuid"].as_str().unwrap().to_string();
        let (s, p) = self.api(
            reqwest::Method::POST,
            "/v1/ports",
            Some(json!({"address": mac, "node_uuid": uuid})),
        );
        assert_eq!(s, 201, "{p}");
        for (verb, state) in [("manage", "manageable"), ("provide", "available")] {
            self.provision(&uuid, json!({ "target": verb }));
            self.wait_state(&uuid, &[state], Duration::from_secs(30));
        }
        uuid
    }

    pub fn provision(&self, uuid: &str, body: Value) {
        let (s, b) = self.api(
            reqwest::Method::PUT,
            &format!("/v1/nodes/{uuid}/states/provision"),
            Some(body.clone()),
        );
        assert_eq!(s, 202, "{body}: {b}");
    }

    /// Waits until the node is in one of `states` and unreserved; panics with the logs.
    pub fn wait_state(&self, uuid: &str, states: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.node(uuid);
            let state = n["provision_state"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if states.contains(&state.as_str()) && n["reservation"].is_null() {
                return n;
            }
            assert!(
                Instant::now() < deadline,
                "node {uuid} is {state:?} (last_error {}), not one of {states:?} after {timeout:?}\n\
                 --- ironboot log (tail) ---\n{}",
                n["last_error"],
                super::ipa::tail(&self.server.log(), 40)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn log_events(&self) -> Vec<Value> {
        self.server
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    /// The commands the conductor sent to agents, in order (`deploy.get_deploy_steps`, ...).
    pub fn agent_commands(&self) -> Vec<String> {
        self.log_events()
            .iter()
            .filter(|e| {
                e["fields"]["message"] == "agent command sent"
                    || e["message"] == "agent command sent"
            })
            .filter_map(|e| {
                e["fields"]["command"]
                    .as_str()
                    .or_else(|| e["command"].as_str())
                    .map(String::from)
            })
            .collect()
    }

    /// The ramdisk API calls machines made (`GET /v1/lookup`, `POST /v1/heartbeat/...`).
    pub fn ramdisk_calls(&self) -> Vec<Call> {
        self.log_events()
            .iter()
            .filter(|e| {
                let m = e["fields"]["message"]
                    .as_str()
                    .or_else(|| e["message"].as_str());
                m == Some("finished processing request")
            })
            .filter_map(|e| {
                let span = &e["span"];
                let uri = span["uri"].as_str()?;
                let path = uri.split('?').next()?.to_string();
                if !(path.starts_with("/v1/lookup") || path.starts_with("/v1/heartbeat")) {
                    return None;
                }
                let status = e["fields"]["status"]
                    .as_u64()
                    .or_else(|| e["status"].as_u64())?;
                Some(Call {
                    method: span["method"].as_str().unwrap_or_default().to_string(),
                    path,
                    status: status as u16,
                })
            })
            .collect()
    }

    /// `driver_info` for a machine whose power script is `script`.
    pub fn script_power(script: &Path) -> Value {
        let s = script.display().to_string();
        json!({"script_power_on": [s, "on"], "script_power_off": [s, "off"],
               "script_power_status": [s, "status"], "script_timeout": 30})
    }
}

impl Drop for DeployLab {
    fn drop(&mut self) {
        // IRONBOOT_KEEP_LAB=1 keeps the consoles, logs and disks for a look afterwards.
        if std::env::var_os("IRONBOOT_KEEP_LAB").is_some() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
            eprintln!("deploy lab kept in {}", kept.display());
        }
    }
}

fn write_exec(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The power script: `on` runs `start` (a bash fragment that starts the machine in the
/// background and leaves its pid in $!), `off` kills it, `status` reports it.
fn power_script(dir: &Path, name: &str, start: &str) -> PathBuf {
    let path = dir.join(format!("{name}-power.sh"));
    let text = format!(
        r#"#!/bin/bash
# Lab power control of machine {name}: on | off | status
set -u
D={dir}
PIDF="$D/{name}.pid"
alive() {{
  [ -s "$PIDF" ] || return 1
  local s
  s=$(ps -o stat= -p "$(cat "$PIDF")" 2>/dev/null) || return 1
  [ -n "$s" ] && [[ "$s" != Z* ]]
}}
case "$1" in
  on)
    if alive; then exit 0; fi
    n=$(( $(cat "$D/{name}.boots" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$D/{name}.boots"
    {start}
    echo $! > "$PIDF"
    ;;
  off)
    if [ -s "$PIDF" ]; then
      kill -KILL "$(cat "$PIDF")" 2>/dev/null
      for _ in $(seq 100); do alive || break; sleep 0.1; done
    fi
    rm -f "$PIDF"
    ;;
  status) if alive; then echo on; else echo off; fi ;;
  *) echo "usage: $0 on|off|status" >&2; exit 2 ;;
esac
"#,
        dir = dir.display()
    );
    write_exec(&path, &text);
    path
}

/// A machine the lab's power scripts control.
pub struct Machine {
    pub name: String,
    pub mac: String,
    pub dir: PathBuf,
    pub power_script: PathBuf,
    /// Host port of the agent's command API.
    pub agent_port: u16,
}

impl Machine {
    /// How many times it was powered on.
    pub fn boots(&self) -> u32 {
        std::fs::read_to_string(self.dir.join(format!("{}.boots", self.name)))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The output of boot `n` (1-based): the agent's log, or the serial console.
    pub fn output(&self, n: u32) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}-{n}.log", self.name))).unwrap_or_default()
    }

    pub fn all_output(&self) -> String {
        (1..=self.boots())
            .map(|n| format!("===== {} boot {n} =====\n{}", self.name, self.output(n)))
            .collect()
    }

    /// Waits until boot `n`'s output contains `marker`.
    pub fn wait_output(&self, n: u32, marker: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.output(n).contains(marker) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "{}: no {marker:?} in boot {n} within {timeout:?}; output:\n{}",
                self.name,
                super::ipa::tail(&self.all_output(), 60)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn driver_info(&self) -> Value {
        DeployLab::script_power(&self.power_script)
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.power_script)
            .arg("off")
            .output();
    }
}

impl DeployLab {
    /// A machine that is an `ironboot-agent` process with `disk` as its only disk.
    /// `params` are extra kernel-style parameters (`ipa-...`).
    pub fn process_machine(&self, name: &str, mac: &str, disk: &Path, params: &str) -> Machine {
        let port = free_tcp_port();
        let cmdline = self.path().join(format!("{name}.cmdline"));
        std::fs::write(
            &cmdline,
            format!("ipa-lookup-interval=1 ipa-lookup-timeout=60 {params}\n"),
        )
        .unwrap();
        let start = format!(
            "setsid {agent} --cmdline-file {cmdline} --api-url {api} --disk {disk} --mac {mac} \
             --listen 127.0.0.1:{port} --advertise-host 127.0.0.1 --advertise-port {port} \
             </dev/null >\"$D/{name}-$n.log\" 2>&1 &",
            agent = env!("CARGO_BIN_EXE_ironboot-agent"),
            cmdline = cmdline.display(),
            api = self.api_url_for_machines(),
            disk = disk.display(),
        );
        Machine {
            name: name.into(),
            mac: mac.into(),
            dir: self.path().to_path_buf(),
            power_script: power_script(self.path(), name, &start),
            agent_port: port,
        }
    }

    /// A QEMU guest: `firmware_args` (e.g. `-bios OVMF.fd`), one virtio NIC with `mac` whose
    /// DHCP hands out `bootfile`, and `disks` (file, serial) as virtio disks in that order.
    pub fn qemu_machine(
        &self,
        name: &str,
        mac: &str,
        firmware_args: &[&str],
        bootfile: &str,
        disks: &[(&Path, &str)],
    ) -> Machine {
        let port = free_tcp_port();
        let mut args: Vec<String> = ["-accel", "tcg", "-nographic", "-no-reboot", "-m", "512"]
            .iter()
            .chain(firmware_args)
            .map(|s| s.to_string())
            .collect();
        args.extend([
            // Entropy for the agent's TLS key without waiting for the kernel's own.
            "-device".into(),
            "virtio-rng-pci".into(),
            "-netdev".into(),
            format!("user,id=n0,bootfile={bootfile},hostfwd=tcp:127.0.0.1:{port}-:9999"),
            "-device".into(),
            format!("virtio-net-pci,netdev=n0,mac={mac}"),
        ]);
        for (i, (file, serial)) in disks.iter().enumerate() {
            args.extend([
                "-drive".into(),
                format!("file={},if=none,id=d{i},format=raw", file.display()),
                "-device".into(),
                format!("virtio-blk-pci,drive=d{i},serial={serial}"),
            ]);
        }
        args.extend(["-boot".into(), "n".into()]);
        let args_file = self.path().join(format!("{name}.qemu"));
        std::fs::write(&args_file, args.join("\n") + "\n").unwrap();
        let start = format!(
            "mapfile -t ARGS < {args}\n    setsid qemu-system-x86_64 \"${{ARGS[@]}}\" </dev/null >\"$D/{name}-$n.log\" 2>&1 &",
            args = args_file.display()
        );
        Machine {
            name: name.into(),
            mac: mac.into(),
            dir: self.path().to_path_buf(),
            power_script: power_script(self.path(), name, &start),
            agent_port: port,
        }
    }
}

/// One of the machine-wide guest slots (the same lock files as `support::guest`), held while
/// a test's QEMU machines may run: TCG needs a core per guest.
pub struct GuestSlot(std::fs::File);

pub fn guest_slot() -> GuestSlot {
    let dir = cache_root().join("guest");
    std::fs::create_dir_all(&dir).unwrap();
    loop {
        for slot in 0..2 {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(format!("slot-{slot}.lock")))
                .unwrap();
            // SAFETY: flock on an open descriptor; LOCK_NB returns at once.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return GuestSlot(f);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
