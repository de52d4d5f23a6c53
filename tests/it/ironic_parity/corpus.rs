//! The request corpus (`tests/parity/corpus/*.toml`, replayed in file-name order) and its
//! replay against one server.
//!
//! A step names its method, path, API version header, other headers and raw body; `${name}` in
//! any of them is replaced by a value captured earlier from the same server (`capture`: JSON
//! pointers into the body, or `header:<name>`). `wait` polls a resource until it is stable (the
//! fake interfaces of Ironic finish provisioning actions on a worker thread).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use super::compare::{Answer, COMPARED_HEADERS, Rules};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub id: String,
    #[serde(default = "get")]
    pub method: String,
    /// Path (or absolute URL, e.g. a captured `next` link).
    pub path: String,
    /// `X-OpenStack-Ironic-API-Version`; absent means no header.
    pub version: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The raw request body (sent as `application/json` unless `headers` say otherwise).
    pub body: Option<String>,
    #[serde(default)]
    pub capture: BTreeMap<String, String>,
    /// Pointer globs compared by JSON type only (see [`Rules`]).
    #[serde(default)]
    pub loose: Vec<String>,
    /// Pointer globs not compared.
    #[serde(default)]
    pub ignore: Vec<String>,
    pub wait: Option<Wait>,
    /// Why the step is there (for readers of the corpus; not used by the replay).
    #[allow(dead_code)]
    pub note: Option<String>,
}

impl Step {
    pub fn rules(&self) -> Rules {
        Rules {
            loose: self.loose.clone(),
            ignore: self.ignore.clone(),
        }
    }
}

fn get() -> String {
    "GET".into()
}

/// Poll `path` until every pointer in `until_null` is null (or absent) and every pointer in
/// `until_not` differs from the given value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wait {
    pub path: String,
    #[serde(default)]
    pub until_null: Vec<String>,
    #[serde(default)]
    pub until_not: BTreeMap<String, String>,
    #[serde(default = "wait_secs")]
    pub timeout_secs: u64,
}

fn wait_secs() -> u64 {
    30
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CorpusFile {
    #[serde(default)]
    request: Vec<Step>,
}

/// Every step of every corpus file, in order; ids must be unique.
pub fn load(dir: &Path) -> Vec<Step> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut steps = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let parsed: CorpusFile =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        steps.extend(parsed.request);
    }
    let mut seen = std::collections::BTreeSet::new();
    for s in &steps {
        assert!(seen.insert(s.id.clone()), "duplicate corpus id {}", s.id);
    }
    steps
}

/// One server under test, with the values captured from its answers.
pub struct Target {
    pub base: String,
    pub vars: BTreeMap<String, String>,
    pub client: reqwest::Client,
}

impl Target {
    pub fn new(base: String) -> Target {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Target {
            base,
            vars: BTreeMap::new(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// Replaces `${name}` with captured values; an unknown name becomes a value no server
    /// knows, so the step still runs and its difference shows.
    pub fn substitute(&self, s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let name = &after[..end];
            match self.vars.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&format!("uncaptured-{name}")),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn url(&self, path: &str) -> String {
        let path = self.substitute(path);
        if path.starts_with("http://") || path.starts_with("https://") {
            path
        } else if !path.starts_with('/') {
            // An uncaptured link (`${next}` the server never gave): a path no server has.
            format!("{}/{path}", self.base)
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// Sends one request and returns the raw (not yet normalised) answer. A request that fails
    /// before any answer is sent once more: a server may close a kept-alive connection after
    /// an error (Ironic does after some of its 500s), which says nothing about the next step.
    pub async fn send(&self, step: &Step) -> Answer {
        let first = self.send_once(step).await;
        if first.status == 599 {
            return self.send_once(step).await;
        }
        first
    }

    async fn send_once(&self, step: &Step) -> Answer {
        let method = reqwest::Method::from_bytes(step.method.as_bytes()).unwrap();
        let mut req = self.client.request(method, self.url(&step.path));
        if let Some(v) = &step.version {
            req = req.header("X-OpenStack-Ironic-API-Version", v);
        }
        if let Some(b) = &step.body {
            if !step
                .headers
                .keys()
                .any(|k| k.eq_ignore_ascii_case("content-type"))
            {
                req = req.header("Content-Type", "application/json");
            }
            req = req.body(self.substitute(b));
        }
        for (k, v) in &step.headers {
            req = req.header(k, self.substitute(v));
        }
        match req.send().await {
            Ok(resp) => answer(resp).await,
            Err(e) => Answer {
                status: 599,
                note: format!("request failed: {e}"),
                ..Default::default()
            },
        }
    }

    /// Stores the step's captures from a raw answer.
    pub fn capture(&mut self, step: &Step, raw: &Answer) {
        for (name, pointer) in &step.capture {
            let v = match pointer.strip_prefix("header:") {
                Some(h) => raw.headers.get(h).cloned(),
                None => raw.body.pointer(pointer).and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => None,
                    other => Some(other.to_string()),
                }),
            };
            if let Some(v) = v {
                self.vars.insert(name.clone(), v);
            }
        }
    }

    /// Polls until the step's wait condition holds. `Err` with the last answer when it did not
    /// within the timeout; `Ok` also when the resource cannot be read (the difference shows in
    /// the steps that follow).
    pub async fn wait(&self, step: &Step, wait: &Wait) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(wait.timeout_secs);
        let poll = Step {
            id: format!("{}-wait", step.id),
            method: "GET".into(),
            path: wait.path.clone(),
            version: step.version.clone(),
            headers: BTreeMap::new(),
            body: None,
            capture: BTreeMap::new(),
            loose: vec![],
            ignore: vec![],
            wait: None,
            note: None,
        };
        loop {
            let a = self.send(&poll).await;
            if a.status != 200 {
                return Ok(());
            }
            let nulls = wait
                .until_null
                .iter()
                .all(|p| a.body.pointer(p).is_none_or(Value::is_null));
            let nots = wait
                .until_not
                .iter()
                .all(|(p, v)| a.body.pointer(p).and_then(Value::as_str) != Some(v.as_str()));
            if nulls && nots {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(super::compare::show(&a.body));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let headers = COMPARED_HEADERS
        .iter()
        .filter_map(|h| {
            resp.headers()
                .get(*h)
                .and_then(|v| v.to_str().ok())
                .map(|v| (h.to_string(), v.to_string()))
        })
        .collect();
    let text = resp.text().await.unwrap_or_default();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    let note = if status >= 400 {
        fault_text(&body)
    } else {
        String::new()
    };
    Answer {
        status,
        headers,
        body,
        note,
    }
}

/// The message of an error body in either of Ironic's shapes, for the report.
fn fault_text(body: &Value) -> String {
    let inner = body
        .get("error_message")
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<Value>(s).ok());
    let msg = inner
        .as_ref()
        .and_then(|i| i.get("faultstring").or_else(|| i.get("description")))
        .or_else(|| body.get("description"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let msg: String = msg.chars().take(140).collect();
    if msg.is_empty() {
        String::new()
    } else {
        format!("({msg})")
    }
}
