//! sushy-tools' Redfish emulator (`sushy-emulator`, fake driver: no hypervisor) for the Redfish
//! client tests, one per test: a fresh work directory (config, sqlite state, the images it
//! downloads on InsertMedia), bound by sushy itself to an ephemeral 127.0.0.1 port that it
//! reports in its log. sushy-tools comes from PyPI into a venv cached by [`super::pyenv`]
//! (first run: about 10 s); only `python3` with venv is needed. Stopped by PID on drop.
//!
//! Quirks that tests rely on (see ../shared/reference/real-peers.md §4): InsertMedia downloads
//! the image inside the POST into `$TMPDIR/tmpXXXX/<name>` and EjectMedia deletes it; power
//! changes land 0–11 s after the reset (random); `BootSourceOverrideEnabled` always reads back
//! `Continuous`; only HTTP basic authentication (no SessionService).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::pyenv::venv_tool;
use super::{require_peer, run};

const PACKAGES: &[&str] = &["sushy-tools==2.2.0"];
pub const USER: &str = "admin";
pub const PASSWORD: &str = "s3cret-bmc-pw";
pub const SYSTEM_UUID: &str = "27946b59-9e44-4fa7-8e91-f3527a1ef094";
pub const SECOND_SYSTEM_UUID: &str = "5c0f6a4c-3c43-4f7e-9a57-8f8fbbd56f0a";

/// How to run the emulator.
#[derive(Clone, Debug)]
pub struct Options {
    /// Require basic authentication ([`USER`] / [`PASSWORD`]).
    pub auth: bool,
    /// Also emulate a second system.
    pub two_systems: bool,
    /// Serve HTTPS with this certificate and key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `SUSHY_EMULATOR_VMEDIA_DEVICES` as a Python literal (sushy's default: Cd and Floppy).
    pub vmedia_devices: Option<String>,
    /// The systems start powered on (else off).
    pub power_on: bool,
    /// Power changes land at the next read instead of 1–11 s later (random): the fake
    /// driver's delay only costs time in tests that are about what follows a power change.
    pub quick_power: bool,
    /// More systems besides `node-0` (and `node-1`): `node-2`... with [`extra_system_uuid`]s.
    pub extra_systems: usize,
    /// Run in this network namespace (`/proc/<pid>/ns/net`), e.g. the IPA lab's sandbox, where
    /// the emulator reaches the ironboot that runs there (then [`Sushy::get`] cannot reach it).
    pub netns: Option<String>,
}

/// The uuid of extra system `i` (0-based), see [`Options::extra_systems`].
pub fn extra_system_uuid(i: usize) -> String {
    format!("00000000-0000-4000-8000-{:012x}", i + 1)
}

impl Default for Options {
    fn default() -> Self {
        Self {
            auth: true,
            two_systems: false,
            tls: None,
            vmedia_devices: None,
            power_on: false,
            quick_power: false,
            extra_systems: 0,
            netns: None,
        }
    }
}

pub struct Sushy {
    work: tempfile::TempDir,
    child: Child,
    pub port: u16,
    scheme: &'static str,
}

impl Sushy {
    /// `None` (after a loud message) when python3 or PyPI is missing and peers are optional.
    pub fn start(test: &str, opts: Options) -> Option<Sushy> {
        if !require_peer(test, &["python3"]) {
            return None;
        }
        let emulator = venv_tool(test, "sushy", PACKAGES, "sushy-emulator")?;
        let started = Instant::now();
        let work = tempfile::Builder::new()
            .prefix("sushy-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let w = work.path();
        fs::create_dir_all(w.join("state")).unwrap();
        fs::create_dir_all(w.join("tmp")).unwrap();
        fs::write(w.join("sushy.conf"), config(w, &opts)).unwrap();
        if opts.auth {
            write_htpasswd(&emulator, &w.join("htpasswd"));
        }
        let log = fs::File::create(w.join("sushy.log")).unwrap();
        let mut cmd = match &opts.netns {
            Some(ns) => {
                // nsenter execs the emulator: the child is the emulator itself.
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={ns}")).arg(&emulator);
                c
            }
            None => Command::new(&emulator),
        };
        cmd.arg("--config").arg(w.join("sushy.conf"));
        if let Some((cert, key)) = &opts.tls {
            cmd.arg("--ssl-certificate")
                .arg(cert)
                .arg("--ssl-key")
                .arg(key);
        }
        let child = cmd
            // InsertMedia downloads 127.0.0.1 URLs: keep proxies away. Its copies go to TMPDIR.
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env("TMPDIR", w.join("tmp"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", emulator.display()));
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        let mut sushy = Sushy {
            work,
            child,
            port: 0,
            scheme,
        };
        sushy.port = sushy.wait_for_port();
        eprintln!(
            "{test}: sushy-emulator up on {} in {:.1} s",
            sushy.url(),
            started.elapsed().as_secs_f64()
        );
        Some(sushy)
    }

    /// Reads the port sushy bound (it was given port 0) from its start-up line.
    fn wait_for_port(&mut self) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(60);
        let marker = format!("Running on {}://127.0.0.1:", self.scheme);
        loop {
            let log = self.log();
            if let Some(rest) = log.split(&marker).nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(port) = digits.parse() {
                    return port;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sushy-emulator exited ({status}) at start:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "sushy-emulator did not report its port within 60 s:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:<port>` (or https).
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    pub fn system_path(&self) -> String {
        format!("/redfish/v1/Systems/{SYSTEM_UUID}")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.work.path().join("sushy.log")).unwrap_or_default()
    }

    /// A document of the emulator, read with the test credentials.
    pub async fn get(&self, path: &str) -> serde_json::Value {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .no_proxy()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let resp = client
            .get(format!("{}{path}", self.url()))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} from sushy: {e}"));
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    /// `(Image, Inserted)` of the `Cd` and `Floppy` slots of system `uuid`.
    pub async fn slots(&self, uuid: &str) -> Vec<(String, String, bool)> {
        let mut out = Vec::new();
        for slot in ["Cd", "Floppy"] {
            let doc = self
                .get(&format!("/redfish/v1/Systems/{uuid}/VirtualMedia/{slot}"))
                .await;
            out.push((
                slot.to_string(),
                doc["Image"].as_str().unwrap_or_default().to_string(),
                doc["Inserted"].as_bool().unwrap_or(false),
            ));
        }
        out
    }

    /// The copies of inserted images sushy holds now (`name -> bytes`), from its TMPDIR.
    pub fn downloaded(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for dir in fs::read_dir(self.work.path().join("tmp"))
            .unwrap()
            .flatten()
        {
            if !dir.path().is_dir() {
                continue;
            }
            for f in fs::read_dir(dir.path()).unwrap().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                out.push((name, fs::read(f.path()).unwrap()));
            }
        }
        out.sort();
        out
    }
}

impl Drop for Sushy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(w: &Path, opts: &Options) -> String {
    let power = if opts.power_on { "On" } else { "Off" };
    let system = |uuid: &str, name: &str, mac: &str| {
        format!(
            "    {{'uuid': '{uuid}', 'name': '{name}', 'power_state': '{power}', \
             'external_notifier': False, 'nics': [{{'mac': '{mac}', 'ip': '127.0.0.1'}}]}},\n"
        )
    };
    let mut systems = system(SYSTEM_UUID, "node-0", "52:54:00:12:34:56");
    if opts.two_systems {
        systems.push_str(&system(SECOND_SYSTEM_UUID, "node-1", "52:54:00:12:34:57"));
    }
    for i in 0..opts.extra_systems {
        let mac = format!("52:54:01:00:{:02x}:{:02x}", i / 256, i % 256);
        systems.push_str(&system(
            &extra_system_uuid(i),
            &format!("node-{}", i + 2),
            &mac,
        ));
    }
    let mut conf = format!(
        "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
         SUSHY_EMULATOR_LISTEN_PORT = 0\n\
         SUSHY_EMULATOR_FAKE_DRIVER = True\n\
         SUSHY_EMULATOR_STATE_DIR = '{}'\n\
         SUSHY_EMULATOR_FAKE_SYSTEMS = [\n{systems}]\n",
        w.join("state").display()
    );
    if opts.auth {
        conf.push_str(&format!(
            "SUSHY_EMULATOR_AUTH_FILE = '{}'\n",
            w.join("htpasswd").display()
        ));
    }
    if let Some(devices) = &opts.vmedia_devices {
        conf.push_str(&format!("SUSHY_EMULATOR_VMEDIA_DEVICES = {devices}\n"));
    }
    if opts.quick_power {
        // The config file is Python run by the emulator at start: give the fake driver a
        // random source whose delay is always 0, so a change is seen at the next read.
        conf.push_str(
            "import types as _types\n\
             import sushy_tools.emulator.resources.systems.fakedriver as _fakedriver\n\
             _fakedriver.random = _types.SimpleNamespace(randint=lambda low, high: 0)\n",
        );
    }
    conf
}

/// A bcrypt htpasswd with cost 4: sushy checks it on every request (cost 12 costs 0.25 s each).
fn write_htpasswd(emulator: &Path, path: &Path) {
    let python = emulator.parent().unwrap().join("python");
    let (ok, out, err) = run(Command::new(python).args([
        "-c",
        &format!(
            "import bcrypt; print('{USER}:' + bcrypt.hashpw(b'{PASSWORD}', bcrypt.gensalt(rounds=4)).decode())"
        ),
    ]));
    assert!(ok, "making the htpasswd failed: {err}");
    fs::write(path, out).unwrap();
}

/// A test CA and two server certificates it signed, made with openssl: `server` for
/// IP 127.0.0.1 and `other` for `bmc.example` only (a certificate that does not match).
pub struct TestCa {
    pub dir: tempfile::TempDir,
}

impl TestCa {
    /// `None` when openssl is missing and peers are optional.
    pub fn create(test: &str) -> Option<TestCa> {
        if !require_peer(test, &["openssl"]) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("redfish-ca-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let script = "set -e
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 \
                -subj /CN=ironboot-redfish-test-ca 2>/dev/null
            for n in server:IP:127.0.0.1 other:DNS:bmc.example; do
                name=${n%%:*}; san=${n#*:}
                openssl req -newkey rsa:2048 -nodes -keyout $name.key -out $name.csr \
                    -subj /CN=$name 2>/dev/null
                printf 'subjectAltName=%s\\n' \"$san\" > $name.ext
                openssl x509 -req -in $name.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                    -out $name.pem -days 2 -extfile $name.ext 2>/dev/null
            done";
        let (ok, _, err) = run(Command::new("sh")
            .args(["-c", script])
            .current_dir(dir.path()));
        assert!(ok, "making test certificates failed: {err}");
        Some(TestCa { dir })
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// `(certificate, key)` of `server` (127.0.0.1) or `other` (bmc.example).
    pub fn pair(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join(format!("{name}.pem")),
            self.dir.path().join(format!("{name}.key")),
        )
    }
}
