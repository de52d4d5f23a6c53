//! The real clients against both servers: python-ironicclient's `baremetal` CLI (steps in
//! `tests/parity/cli.toml`) and openstacksdk (`tests/parity/sdk_flows.py`), plus a forwarding
//! proxy for the pagination-behind-a-proxy flow.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use super::compare::{self, Answer, Diff, Rules};
use super::normalise;

pub const OPENSTACKSDK: &str = "openstacksdk==4.22.0";

/// A plain TCP forwarder on an ephemeral loopback port: the client's `Host` names the proxy,
/// so a server that builds links from `Host` sends the client back through it.
pub struct Proxy {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let connect = tokio::net::TcpStream::connect(("127.0.0.1", upstream));
                    if let Ok(Ok(mut up)) =
                        tokio::time::timeout(Duration::from_secs(5), connect).await
                    {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(120),
                            tokio::io::copy_bidirectional(&mut down, &mut up),
                        )
                        .await;
                    }
                });
            }
        });
        Proxy { port, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs a command with a timeout; (exit code, stdout, stderr). 124 on timeout, as timeout(1).
fn run(cmd: &mut Command, timeout: Duration) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break 124;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (code, read(&out), read(&err))
}

fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CliStep {
    id: String,
    args: Vec<String>,
    /// Append `-f json` and compare the printed document (lists: rows keyed by column).
    #[serde(default)]
    json: bool,
    #[serde(default)]
    loose: Vec<String>,
    #[serde(default)]
    ignore: Vec<String>,
    /// For readers of the steps; not used by the run.
    #[allow(dead_code)]
    note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CliFile {
    step: Vec<CliStep>,
}

/// `baremetal` commands against one server, run one after another in one Python process
/// (`tests/parity/cli_driver.py`: a fresh client application per command, as the `baremetal`
/// program builds; only the seconds of imports per command are saved).
struct CliSession {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
    _home: tempfile::TempDir,
}

impl CliSession {
    fn start(python: &Path, endpoint: &str) -> CliSession {
        let home = tempfile::tempdir().unwrap();
        let mut child = Command::new(python)
            .arg(super::parity_dir().join("cli_driver.py"))
            .env("OS_AUTH_TYPE", "none")
            .env("OS_ENDPOINT", endpoint)
            // The client caches negotiated versions under $HOME: one per server.
            .env("HOME", home.path())
            .env_remove("OS_CLOUD")
            .env_remove("OS_BAREMETAL_API_VERSION")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        CliSession {
            child,
            stdin,
            lines,
            _home: home,
        }
    }

    /// Runs one command; a command that does not finish in time fails the step (124).
    fn run(&mut self, step: &CliStep) -> Answer {
        let mut args = step.args.clone();
        if step.json {
            args.extend(["-f".into(), "json".into()]);
        }
        let sent = std::io::Write::write_all(
            &mut self.stdin,
            format!("{}\n", Value::from(args)).as_bytes(),
        )
        .and_then(|()| std::io::Write::flush(&mut self.stdin));
        let reply = sent
            .ok()
            .and_then(|()| self.lines.recv_timeout(Duration::from_secs(120)).ok())
            .and_then(|l| serde_json::from_str::<Value>(&l).ok());
        let Some(reply) = reply else {
            return Answer {
                status: 124,
                note: "the client did not answer within 120 s".into(),
                ..Default::default()
            };
        };
        let code = reply["code"].as_i64().unwrap_or(-1);
        let out = reply["out"].as_str().unwrap_or_default();
        let body = if step.json && code == 0 {
            serde_json::from_str(out).unwrap_or_else(|_| Value::String(out.to_string()))
        } else {
            Value::Null
        };
        Answer {
            status: code as u16,
            headers: BTreeMap::new(),
            body,
            note: last_line(reply["err"].as_str().unwrap_or_default()),
        }
    }
}

impl Drop for CliSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs every CLI step against both servers (in parallel per step) and compares the outputs.
/// `python` is the python-ironicclient venv's interpreter.
pub fn cli_flows(
    python: &Path,
    ironic: &str,
    ironboot: &str,
    shared: &Rules,
) -> (usize, Vec<Diff>) {
    let path = super::parity_dir().join("cli.toml");
    let file: CliFile = toml::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut a = CliSession::start(python, ironic);
    let mut b = CliSession::start(python, ironboot);
    let none = BTreeMap::new();
    let mut diffs = Vec::new();
    for step in &file.step {
        let (ra, rb) = std::thread::scope(|s| {
            let ra = s.spawn(|| a.run(step));
            let rb = b.run(step);
            (ra.join().unwrap(), rb)
        });
        let rules = shared.merged(&Rules {
            loose: step.loose.clone(),
            ignore: step.ignore.clone(),
        });
        diffs.extend(compare::compare(
            &format!("cli:{}", step.id),
            &normalise(&ra, ironic, &none),
            &normalise(&rb, ironboot, &none),
            &rules,
        ));
    }
    (file.step.len(), diffs)
}

/// The openstacksdk flows against one server: step id → answer, in the order printed.
fn sdk_run(python: &Path, endpoint: &str, proxy: &str) -> Vec<(String, Answer)> {
    let script = super::parity_dir().join("sdk_flows.py");
    let home = tempfile::tempdir().unwrap();
    let (code, out, err) = run(
        Command::new(python)
            .arg(&script)
            .arg(endpoint)
            .arg(proxy)
            .env("HOME", home.path())
            .env_remove("OS_CLOUD"),
        Duration::from_secs(300),
    );
    let mut steps = Vec::new();
    for line in out.lines().filter(|l| l.starts_with('{')) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let id = v["id"].as_str().unwrap_or_default().to_string();
        let ok = v["ok"].as_bool() == Some(true);
        let answer = Answer {
            status: if ok { 0 } else { 1 },
            headers: BTreeMap::new(),
            body: if ok {
                v["result"].clone()
            } else {
                json!({"status": v["status"]})
            },
            note: v["error"].as_str().unwrap_or_default().to_string(),
        };
        steps.push((id, answer));
    }
    if code != 0 {
        steps.push((
            "script-exit".into(),
            Answer {
                status: code as u16,
                note: last_line(&err),
                ..Default::default()
            },
        ));
    }
    steps
}

/// Runs the openstacksdk flows against both servers at once and compares them step by step.
/// `urls` = ((ironic, its proxy), (ironboot, its proxy)).
pub fn sdk_flows(
    python: &Path,
    urls: ((String, String), (String, String)),
    shared: &Rules,
) -> (usize, Vec<Diff>) {
    let ((ia, pa), (ib, pb)) = urls;
    let (ra, rb) = std::thread::scope(|s| {
        let a = s.spawn(|| sdk_run(python, &ia, &pa));
        let b = sdk_run(python, &ib, &pb);
        (a.join().unwrap(), b)
    });
    let none = BTreeMap::new();
    let by_id: BTreeMap<&str, &Answer> = rb.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut diffs = Vec::new();
    let absent = Answer {
        status: 999,
        note: "(the flow printed no line for this step)".into(),
        ..Default::default()
    };
    for (id, a) in &ra {
        let b = by_id.get(id.as_str()).copied().unwrap_or(&absent);
        diffs.extend(compare::compare(
            &format!("sdk:{id}"),
            &normalise(a, &ia, &none),
            &normalise(b, &ib, &none),
            shared,
        ));
    }
    (ra.len(), diffs)
}
