//! The differential test of the Ironic-compatible API: the same requests, client commands and
//! openstacksdk flows against the real OpenStack Ironic 39.0.0 (the oracle, see
//! [`support::ironic`]) and against the real `ironboot serve`, compared answer by answer.
//!
//! Data lives in `tests/parity/`: the request corpus (`corpus/*.toml`), the CLI steps
//! (`cli.toml`), the openstacksdk flows (`sdk_flows.py`), the comparison rules every step shares
//! (`rules.toml`) and the reviewed list of intentional differences (`differences.toml`). A test
//! fails on any difference that is not listed, and on any listed difference that no longer
//! occurs, so the list stays honest. Each test prints its full report (and writes it to
//! `<target>/ironic-parity-<test>.txt`).
//!
//! Run: `cargo test --test it ironic_parity::` (first run builds three venvs, ~2 min).

use crate::support;

mod clients;
mod compare;
mod corpus;
mod openapi;

use std::path::{Path, PathBuf};

use compare::{Answer, Diff, DifferencesFile, Kind, Normaliser, Rules};
use support::ironic::{CONDUCTOR_HOST, Ironic};
use support::server::Server;

/// `tests/parity/`
pub fn parity_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity")
}

/// Starts Ironic and ironboot side by side (in parallel: Ironic takes a few seconds).
/// `None` when a peer is missing and peers are optional (already reported).
fn start_pair(test: &str) -> Option<(Ironic, Server)> {
    if !support::require_peer(test, &["curl", "python3"]) {
        return None;
    }
    std::thread::scope(|s| {
        let ironboot = s.spawn(|| Server::start_with(&[], &[("IRONBOOT_HOST", CONDUCTOR_HOST)]));
        let ironic = Ironic::start(test);
        let ironboot = ironboot.join().expect("ironboot start");
        ironic.map(|i| (i, ironboot))
    })
}

/// The rules every step shares (`tests/parity/rules.toml`).
fn shared_rules() -> Rules {
    let path = parity_dir().join("rules.toml");
    toml::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Normalises a raw answer for comparison (see [`Normaliser`]).
fn normalise(a: &Answer, base: &str, vars: &std::collections::BTreeMap<String, String>) -> Answer {
    let n = Normaliser { base, vars };
    Answer {
        status: a.status,
        headers: a
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), n.string(v)))
            .collect(),
        body: n.value(&a.body),
        note: a.note.clone(),
    }
}

/// Judges `diffs` against the listed differences of `scope`, prints and saves the report, and
/// fails on anything unlisted or stale.
fn finish(title: &str, file: &str, steps: usize, diffs: &[Diff], scope: &str) {
    let path = parity_dir().join("differences.toml");
    let listed: DifferencesFile = toml::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let verdict = compare::judge(diffs, &listed.difference, scope);
    let report = compare::report(title, steps, &verdict);
    let out = support::pyenv::cache_dir()
        .parent()
        .unwrap()
        .join(format!("ironic-parity-{file}.txt"));
    let _ = std::fs::write(&out, &report);
    eprintln!("{report}");
    assert!(
        verdict.unlisted.is_empty() && verdict.stale.is_empty(),
        "{title}: {} difference(s) from Ironic 39 not in tests/parity/differences.toml and {} \
         listed difference(s) that no longer occur; the report above is also in {}",
        verdict.unlisted.len(),
        verdict.stale.len(),
        out.display()
    );
}

/// A wait that timed out on one server only is itself a difference.
fn wait_diff(
    request: &str,
    ironic: &Result<(), String>,
    ironboot: &Result<(), String>,
) -> Option<Diff> {
    let show = |r: &Result<(), String>| match r {
        Ok(()) => "stable".to_string(),
        Err(last) => format!("not stable in time: {last}"),
    };
    (ironic.is_err() || ironboot.is_err()).then(|| Diff {
        request: request.to_string(),
        pointer: "wait".into(),
        kind: Kind::Wait,
        ironic: show(ironic),
        ironboot: show(ironboot),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_corpus_matches_ironic() {
    let test = "ironic_parity::api_corpus_matches_ironic";
    let started = tokio::task::spawn_blocking(move || start_pair(test))
        .await
        .unwrap();
    let Some((ironic, ironboot)) = started else {
        return;
    };
    let steps = corpus::load(&parity_dir().join("corpus"));
    let shared = shared_rules();
    let mut a = corpus::Target::new(ironic.url());
    let mut b = corpus::Target::new(ironboot.api_url());
    let mut diffs = Vec::new();
    for step in &steps {
        let (ra, rb) = tokio::join!(a.send(step), b.send(step));
        a.capture(step, &ra);
        b.capture(step, &rb);
        let id = format!("api:{}", step.id);
        if let Some(w) = &step.wait {
            let (wa, wb) = tokio::join!(a.wait(step, w), b.wait(step, w));
            diffs.extend(wait_diff(&id, &wa, &wb));
        }
        let na = normalise(&ra, &a.base, &a.vars);
        let nb = normalise(&rb, &b.base, &b.vars);
        diffs.extend(compare::compare(
            &id,
            &na,
            &nb,
            &shared.merged(&step.rules()),
        ));
    }
    drop(ironic);
    finish(
        "Ironic API parity (corpus)",
        "api",
        steps.len(),
        &diffs,
        "api:",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baremetal_cli_matches_ironic() {
    let test = "ironic_parity::baremetal_cli_matches_ironic";
    // The venv the other client test uses; its `python` runs the `baremetal` application.
    let Some(baremetal) = support::pyenv::baremetal_cli(test) else {
        return;
    };
    let python = baremetal.with_file_name("python");
    let started = tokio::task::spawn_blocking(move || start_pair(test))
        .await
        .unwrap();
    let Some((ironic, ironboot)) = started else {
        return;
    };
    let (steps, diffs) = tokio::task::spawn_blocking(move || {
        let r = clients::cli_flows(&python, &ironic.url(), &ironboot.api_url(), &shared_rules());
        drop((ironic, ironboot));
        r
    })
    .await
    .unwrap();
    finish(
        "python-ironicclient 6.3.0 parity",
        "cli",
        steps,
        &diffs,
        "cli:",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openstacksdk_flows_match_ironic() {
    let test = "ironic_parity::openstacksdk_flows_match_ironic";
    let Some(python) =
        support::pyenv::venv_tool(test, "openstacksdk", &[clients::OPENSTACKSDK], "python")
    else {
        return;
    };
    let started = tokio::task::spawn_blocking(move || start_pair(test))
        .await
        .unwrap();
    let Some((ironic, ironboot)) = started else {
        return;
    };
    // Each server sits behind its own forwarding proxy too, for the pagination-through-a-proxy
    // flow: links must lead back through the proxy the client used.
    let proxy_a = clients::Proxy::start(ironic.port).await;
    let proxy_b = clients::Proxy::start(ironboot.api_port).await;
    let urls = (
        (ironic.url(), proxy_a.url()),
        (ironboot.api_url(), proxy_b.url()),
    );
    let (steps, diffs) =
        tokio::task::spawn_blocking(move || clients::sdk_flows(&python, urls, &shared_rules()))
            .await
            .unwrap();
    drop((ironic, ironboot));
    finish("openstacksdk 4.22 parity", "sdk", steps, &diffs, "sdk:");
}

/// ironboot's OpenAPI document describes every answer it gives to the corpus (see
/// [`openapi`]). Needs no peer: ironboot alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_describes_live_answers() {
    let ironboot = tokio::task::spawn_blocking(|| {
        Server::start_with(&[], &[("IRONBOOT_HOST", CONDUCTOR_HOST)])
    })
    .await
    .unwrap();
    let client = support::http_client();
    let doc: serde_json::Value = client
        .get(format!("{}/v1/openapi.json", ironboot.api_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let steps = corpus::load(&parity_dir().join("corpus"));
    let mut target = corpus::Target::new(ironboot.api_url());
    let mut problems = Vec::new();
    for step in &steps {
        let answer = target.send(step).await;
        target.capture(step, &answer);
        if let Some(w) = &step.wait {
            let _ = target.wait(step, w).await;
        }
        let path = target.substitute(&step.path);
        // Ironic's error bodies nest their fault as JSON text; the document describes the
        // outer object.
        for p in openapi::conforms(&doc, &step.method, &path, answer.status, &answer.body) {
            problems.push(format!("{}: {p}", step.id));
        }
    }
    assert!(
        problems.is_empty(),
        "{} answer(s) of ironboot are not what /v1/openapi.json says:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
