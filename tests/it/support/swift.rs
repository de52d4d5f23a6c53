//! Real OpenStack Swift (and Keystone) on loopback for the publish tests.
//!
//! [`Swift::start`] runs a Swift all-in-one: memcached and the account, container, object and
//! proxy servers, each on its own ephemeral 127.0.0.1 port, rings built on the fly for those
//! ports, a plain directory as the one device. The proxy authenticates with TempAuth
//! (`test:tester` / `testing`) or, with [`Swift::start_with_keystone`], with Keystone through
//! keystonemiddleware. Swift and Keystone come from PyPI into venvs cached under
//! `<target dir>/ironboot-test-cache/` by [`super::pyenv`] (first run: about 40 s each);
//! only `python3` (with venv), `memcached` and `curl` must be installed. Every process is
//! stopped by PID when the handle drops.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::pyenv::venv_tool;
use super::{free_tcp_port, require_peer, run};

const SWIFT_PACKAGES: &[&str] = &["swift==2.38.3", "keystonemiddleware==13.0.1"];
const KEYSTONE_PACKAGES: &[&str] = &["keystone==30.0.0"];

pub const TEMPAUTH_USER: &str = "test:tester";
pub const TEMPAUTH_KEY: &str = "testing";
pub const KEYSTONE_ADMIN: &str = "admin";
pub const KEYSTONE_PASSWORD: &str = "ironboot-admin-pw";
pub const KEYSTONE_PROJECT: &str = "admin";

/// The last `n` lines of a log file.
fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let out = fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

fn stop(child: &mut Child) {
    // SIGKILL: nothing here needs a graceful shutdown, and the tests model crashes with it.
    let _ = child.kill();
    let _ = child.wait();
}

fn wait_port(port: u16, what: &str, logs: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            panic!(
                "{what} did not listen on 127.0.0.1:{port}; logs in {}",
                logs.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A plain HTTP/1.0 GET on loopback; returns the body.
fn http_get_body(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}

/// How the proxy authenticates.
enum ProxyAuth {
    TempAuth,
    Keystone { auth_url: String },
}

/// A running Swift all-in-one.
pub struct Swift {
    work: tempfile::TempDir,
    bin: PathBuf,
    pub proxy_port: u16,
    memcached_port: u16,
    ports: BTreeMap<&'static str, u16>,
    procs: BTreeMap<&'static str, Child>,
}

impl Swift {
    /// A cluster whose proxy uses TempAuth. `None` when peers are missing and optional.
    pub fn start(test: &str) -> Option<Swift> {
        Self::start_inner(test, ProxyAuth::TempAuth)
    }

    /// A cluster whose proxy validates Keystone tokens (operator roles: admin, member).
    pub fn start_with_keystone(test: &str, keystone: &Keystone) -> Option<Swift> {
        Self::start_inner(
            test,
            ProxyAuth::Keystone {
                auth_url: keystone.auth_url(),
            },
        )
    }

    fn start_inner(test: &str, auth: ProxyAuth) -> Option<Swift> {
        if !require_peer(test, &["python3", "memcached", "curl"]) {
            return None;
        }
        let server = venv_tool(test, "swift", SWIFT_PACKAGES, "swift-proxy-server")?;
        let started = Instant::now();
        let work = tempfile::Builder::new()
            .prefix("swift-aio-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let w = work.path();
        for d in ["etc", "srv/d1", "log"] {
            fs::create_dir_all(w.join(d)).unwrap();
        }
        let ports: BTreeMap<&'static str, u16> =
            ["account", "container", "object", "proxy", "memcached"]
                .into_iter()
                .map(|n| (n, free_tcp_port()))
                .collect();
        let mut swift = Swift {
            bin: server.parent().unwrap().to_path_buf(),
            proxy_port: ports["proxy"],
            memcached_port: ports["memcached"],
            ports: ports.clone(),
            procs: BTreeMap::new(),
            work,
        };
        swift.write_configs(&ports, &auth);
        swift.build_rings(&ports);
        swift.start_memcached();
        for server in ["account", "container", "object", "proxy"] {
            swift.start_server(server);
        }
        swift.wait_healthy();
        eprintln!(
            "{test}: Swift all-in-one up on {} in {:.1} s",
            swift.url(),
            started.elapsed().as_secs_f64()
        );
        Some(swift)
    }

    /// `http://127.0.0.1:<proxy port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy_port)
    }

    /// The TempAuth v1 auth URL.
    pub fn tempauth_url(&self) -> String {
        format!("{}/auth/v1.0", self.url())
    }

    /// Bytes a server process has written so far (`wchar` in /proc/<pid>/io). Uploads in
    /// progress are invisible on disk (the object server writes to an O_TMPFILE), so tests
    /// watch this to know an upload is under way.
    pub fn bytes_written_by(&self, server: &str) -> u64 {
        let pid = self.procs[server].id();
        let io = fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
        io.lines()
            .find_map(|l| l.strip_prefix("wchar:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn stop_server(&mut self, server: &'static str) {
        if let Some(mut child) = self.procs.remove(server) {
            stop(&mut child);
        }
    }

    /// Starts a server and waits until it listens.
    pub fn start_server(&mut self, server: &'static str) {
        let w = self.work.path();
        let child = spawn_logged(
            Command::new(self.bin.join(format!("swift-{server}-server")))
                .arg(w.join(format!("etc/{server}-server.conf")))
                .arg("-v"),
            &w.join(format!("log/{server}.log")),
        );
        self.procs.insert(server, child);
        wait_port(self.ports[server], server, &w.join("log"));
    }

    /// Waits until the proxy answers its health check.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get_body(self.proxy_port, "/healthcheck").as_deref() != Some("OK") {
            if Instant::now() > deadline {
                panic!("Swift proxy not healthy:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Restarts memcached: TempAuth keeps tokens only there, so every issued token dies.
    pub fn restart_memcached(&mut self) {
        self.stop_server("memcached");
        self.start_memcached();
        wait_port(
            self.memcached_port,
            "memcached",
            &self.work.path().join("log"),
        );
    }

    fn start_memcached(&mut self) {
        let mut cmd = Command::new("memcached");
        cmd.args(["-l", "127.0.0.1", "-U", "0", "-m", "64", "-p"])
            .arg(self.memcached_port.to_string());
        // memcached refuses to run as root without a user to switch to.
        if unsafe { libc::geteuid() } == 0 {
            cmd.args(["-u", "nobody"]);
        }
        let child = spawn_logged(&mut cmd, &self.work.path().join("log/memcached.log"));
        self.procs.insert("memcached", child);
    }

    /// The tail of every server log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for entry in fs::read_dir(self.work.path().join("log"))
            .unwrap()
            .flatten()
        {
            let tail = tail(&entry.path(), 15);
            out.push_str(&format!("--- {}\n{tail}\n", entry.path().display()));
        }
        out
    }

    fn write_configs(&self, ports: &BTreeMap<&str, u16>, auth: &ProxyAuth) {
        let w = self.work.path();
        let etc = w.join("etc");
        fs::write(
            etc.join("swift.conf"),
            "[swift-hash]\nswift_hash_path_prefix = ironboot-test\nswift_hash_path_suffix = ironboot-test\n\n\
             [storage-policy:0]\nname = gold\ndefault = yes\n",
        )
        .unwrap();
        let common = |server: &str| {
            format!(
                "[DEFAULT]\nbind_ip = 127.0.0.1\nbind_port = {}\nworkers = 0\nswift_dir = {}\n\
                 devices = {}\nmount_check = false\ndisable_fallocate = true\nlog_name = {server}\n\n\
                 [pipeline:main]\npipeline = {server}-server\n\n[app:{server}-server]\nuse = egg:swift#{server}\n",
                ports[server],
                etc.display(),
                w.join("srv").display(),
            )
        };
        for server in ["account", "container", "object"] {
            fs::write(etc.join(format!("{server}-server.conf")), common(server)).unwrap();
        }
        let (auth_filters, auth_sections) = match auth {
            ProxyAuth::TempAuth => (
                "tempauth".to_string(),
                format!(
                    "[filter:tempauth]\nuse = egg:swift#tempauth\nuser_test_tester = {TEMPAUTH_KEY} .admin\n"
                ),
            ),
            ProxyAuth::Keystone { auth_url } => (
                "authtoken keystoneauth".to_string(),
                format!(
                    "[filter:authtoken]\npaste.filter_factory = keystonemiddleware.auth_token:filter_factory\n\
                     www_authenticate_uri = {auth_url}\nauth_url = {auth_url}\nauth_type = password\n\
                     username = {KEYSTONE_ADMIN}\npassword = {KEYSTONE_PASSWORD}\nproject_name = {KEYSTONE_PROJECT}\n\
                     user_domain_name = Default\nproject_domain_name = Default\ndelay_auth_decision = true\n\
                     cache = swift.cache\n\n\
                     [filter:keystoneauth]\nuse = egg:swift#keystoneauth\noperator_roles = admin, member\n",
                ),
            ),
        };
        let mut proxy = format!(
            "[DEFAULT]\nbind_ip = 127.0.0.1\nbind_port = {}\nworkers = 0\nswift_dir = {}\nlog_name = proxy-server\n\n\
             [pipeline:main]\npipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats \
             tempurl {auth_filters} proxy-logging proxy-server\n\n\
             [app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n\n\
             [filter:tempurl]\nuse = egg:swift#tempurl\nallowed_digests = sha1 sha256 sha512\n\n\
             [filter:cache]\nuse = egg:swift#memcache\nmemcache_servers = 127.0.0.1:{}\n\n{auth_sections}\n",
            ports["proxy"],
            etc.display(),
            ports["memcached"],
        );
        for (section, egg) in [
            ("catch_errors", "catch_errors"),
            ("gatekeeper", "gatekeeper"),
            ("healthcheck", "healthcheck"),
            ("proxy-logging", "proxy_logging"),
            ("listing_formats", "listing_formats"),
        ] {
            proxy.push_str(&format!("[filter:{section}]\nuse = egg:swift#{egg}\n"));
        }
        fs::write(etc.join("proxy-server.conf"), proxy).unwrap();
    }

    /// One Python process builds all three rings (the CLI would take one start-up per step).
    fn build_rings(&self, ports: &BTreeMap<&str, u16>) {
        let script = format!(
            "from swift.common.ring import RingBuilder\n\
             for name, port in (('account', {}), ('container', {}), ('object', {})):\n\
             \x20   b = RingBuilder(6, 1, 1)\n\
             \x20   b.add_dev({{'id': 0, 'region': 1, 'zone': 1, 'ip': '127.0.0.1', 'port': port, 'device': 'd1', 'weight': 1.0}})\n\
             \x20   b.rebalance()\n\
             \x20   b.save(name + '.builder')\n\
             \x20   b.get_ring().save(name + '.ring.gz')\n",
            ports["account"], ports["container"], ports["object"]
        );
        let (ok, out, err) = run(Command::new(self.bin.join("python3"))
            .args(["-c", &script])
            .current_dir(self.work.path().join("etc")));
        assert!(ok, "building rings failed: {out}{err}");
    }
}

impl Drop for Swift {
    fn drop(&mut self) {
        for child in self.procs.values_mut() {
            stop(child);
        }
    }
}

/// A running Keystone (sqlite, fernet tokens) served by a small threaded WSGI server.
pub struct Keystone {
    work: tempfile::TempDir,
    pub port: u16,
    server: Child,
}

impl Keystone {
    pub fn start(test: &str) -> Option<Keystone> {
        if !require_peer(test, &["python3", "curl"]) {
            return None;
        }
        let manage = venv_tool(test, "keystone", KEYSTONE_PACKAGES, "keystone-manage")?;
        let bin = manage.parent().unwrap().to_path_buf();
        let started = Instant::now();
        let work = tempfile::Builder::new()
            .prefix("keystone-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let w = work.path();
        let port = free_tcp_port();
        for d in ["fernet", "credential"] {
            fs::create_dir_all(w.join(d)).unwrap();
        }
        let conf = w.join("keystone.conf");
        fs::write(
            &conf,
            format!(
                "[DEFAULT]\nuse_stderr = true\n[database]\nconnection = sqlite:///{db}\n\
                 [token]\nprovider = fernet\n[fernet_tokens]\nkey_repository = {fernet}\n\
                 [fernet_receipts]\nkey_repository = {fernet}\n[credential]\nkey_repository = {cred}\n",
                db = w.join("keystone.db").display(),
                fernet = w.join("fernet").display(),
                cred = w.join("credential").display(),
            ),
        )
        .unwrap();
        let user = whoami(&["-un"]);
        let group = whoami(&["-gn"]);
        let url = format!("http://127.0.0.1:{port}/v3");
        let steps: [Vec<&str>; 4] = [
            vec!["db_sync"],
            vec![
                "fernet_setup",
                "--keystone-user",
                &user,
                "--keystone-group",
                &group,
            ],
            vec![
                "credential_setup",
                "--keystone-user",
                &user,
                "--keystone-group",
                &group,
            ],
            vec![
                "bootstrap",
                "--bootstrap-password",
                KEYSTONE_PASSWORD,
                "--bootstrap-username",
                KEYSTONE_ADMIN,
                "--bootstrap-project-name",
                KEYSTONE_PROJECT,
                "--bootstrap-region-id",
                "RegionOne",
                "--bootstrap-public-url",
                &url,
                // keystonemiddleware (in Swift's proxy) validates tokens on the internal one.
                "--bootstrap-internal-url",
                &url,
            ],
        ];
        for step in steps {
            let (ok, out, err) = run(Command::new(&manage)
                .arg("--config-file")
                .arg(&conf)
                .args(&step));
            assert!(ok, "keystone-manage {step:?} failed: {out}{err}");
        }
        let script = w.join("serve.py");
        fs::write(
            &script,
            "import os, sys\n\
             from socketserver import ThreadingMixIn\n\
             from wsgiref.simple_server import WSGIServer, make_server\n\
             sys.argv = sys.argv[:1]  # keystone parses the command line as oslo.config options\n\
             from keystone.server import wsgi\n\
             class Server(ThreadingMixIn, WSGIServer):\n\
             \x20   daemon_threads = True\n\
             app = wsgi.initialize_public_application()\n\
             make_server('127.0.0.1', int(os.environ['KEYSTONE_PORT']), app, server_class=Server).serve_forever()\n",
        )
        .unwrap();
        let server = spawn_logged(
            Command::new(bin.join("python3"))
                .arg(&script)
                .env("KEYSTONE_PORT", port.to_string())
                .env("OS_KEYSTONE_CONFIG_FILES", &conf),
            &w.join("keystone.log"),
        );
        let ks = Keystone { work, port, server };
        wait_port(port, "keystone", &ks.work.path().join("keystone.log"));
        eprintln!(
            "{test}: Keystone up on {} in {:.1} s",
            ks.auth_url(),
            started.elapsed().as_secs_f64()
        );
        Some(ks)
    }

    /// The identity v3 URL.
    pub fn auth_url(&self) -> String {
        format!("http://127.0.0.1:{}/v3", self.port)
    }

    /// An admin token (project-scoped), through curl.
    pub fn admin_token(&self) -> String {
        let body = serde_json::json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": KEYSTONE_ADMIN, "domain": {"name": "Default"}, "password": KEYSTONE_PASSWORD}}},
            "scope": {"project": {"name": KEYSTONE_PROJECT, "domain": {"name": "Default"}}}}});
        let (ok, out, err) = run(Command::new("curl")
            .args([
                "-sS",
                "-D",
                "-",
                "-o",
                "/dev/null",
                "-H",
                "Content-Type: application/json",
                "-d",
            ])
            .arg(body.to_string())
            .arg(format!("{}/auth/tokens", self.auth_url())));
        assert!(ok, "keystone login failed: {err}");
        out.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("x-subject-token")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no token from keystone: {out}\n{}", self.log()))
    }

    /// Registers an object-store service with one endpoint per `(interface, region, url)`;
    /// `$(project_id)s` in a URL is filled in per token by Keystone.
    pub fn register_object_store(&self, endpoints: &[(&str, &str, &str)]) {
        let token = self.admin_token();
        let post = |path: &str, body: serde_json::Value| -> serde_json::Value {
            let (ok, out, err) = run(Command::new("curl")
                .args(["-sS", "-f", "-H", "Content-Type: application/json", "-H"])
                .arg(format!("X-Auth-Token: {token}"))
                .arg("-d")
                .arg(body.to_string())
                .arg(format!("{}{path}", self.auth_url())));
            assert!(ok, "POST {path} failed: {err}\n{}", self.log());
            serde_json::from_str(&out).unwrap()
        };
        for (_, region, _) in endpoints.iter().filter(|(_, r, _)| *r != "RegionOne") {
            // Regions other than the bootstrap one must exist first; a duplicate (the same
            // region listed twice) is refused, which does not matter.
            let _ = run(Command::new("curl")
                .args(["-sS", "-H", "Content-Type: application/json", "-H"])
                .arg(format!("X-Auth-Token: {token}"))
                .arg("-d")
                .arg(serde_json::json!({"region": {"id": region}}).to_string())
                .arg(format!("{}/regions", self.auth_url())));
        }
        let svc = post(
            "/services",
            serde_json::json!({"service": {"type": "object-store", "name": "swift"}}),
        );
        let service_id = svc["service"]["id"].as_str().unwrap().to_string();
        for (interface, region, url) in endpoints {
            post(
                "/endpoints",
                serde_json::json!({"endpoint": {"service_id": service_id, "interface": interface,
                    "region_id": region, "url": url}}),
            );
        }
    }

    pub fn log(&self) -> String {
        tail(&self.work.path().join("keystone.log"), 30)
    }
}

impl Drop for Keystone {
    fn drop(&mut self) {
        stop(&mut self.server);
    }
}

fn whoami(args: &[&str]) -> String {
    let (ok, out, _) = run(Command::new("id").args(args));
    assert!(ok);
    out.trim().to_string()
}
