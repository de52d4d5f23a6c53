//! The agent client against fake agents, for the error paths the real agent cannot be made to
//! produce on demand: busy (409), refused token (401), failed commands, lost answers, timeouts,
//! and a TLS peer whose certificate is not the pinned one (rustls in the test, certificates
//! made by `openssl`).

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ironboot::agent::{AgentClient, AgentError, ClientOptions, CommandStatus};
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Fake {
    posts: Arc<AtomicU32>,
    lists: Arc<AtomicU32>,
    /// What POST does: "busy", "unauthorized", "slow", "ok".
    post_mode: Arc<std::sync::Mutex<&'static str>>,
    /// Commands GET returns.
    listed: Arc<std::sync::Mutex<Value>>,
    queries: Arc<std::sync::Mutex<Vec<String>>>,
}

async fn post_command(State(f): State<Fake>, RawQuery(q): RawQuery, body: String) -> Response {
    f.posts.fetch_add(1, Ordering::SeqCst);
    f.queries.lock().unwrap().push(q.unwrap_or_default());
    let mode = *f.post_mode.lock().unwrap();
    let cmd: Value = serde_json::from_str(&body).unwrap();
    let short = cmd["name"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap()
        .to_string();
    match mode {
        "busy" => (
            StatusCode::CONFLICT,
            axum::Json(json!({"faultcode": "Client", "faultstring": "Agent is busy: executing command execute_deploy_step"})),
        )
            .into_response(),
        "unauthorized" => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"faultcode": "Client", "faultstring": "401 Unauthorized: Token invalid."})),
        )
            .into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK.into_response()
        }
        _ => axum::Json(json!({"id": "1", "command_name": short, "command_status": "RUNNING",
                               "command_error": null, "command_result": null}))
        .into_response(),
    }
}

async fn list_commands(State(f): State<Fake>, RawQuery(q): RawQuery) -> Response {
    let n = f.lists.fetch_add(1, Ordering::SeqCst);
    f.queries.lock().unwrap().push(q.unwrap_or_default());
    let mut listed = f.listed.lock().unwrap().clone();
    // The third and later polls see the command finished.
    if n >= 2
        && let Some(last) = listed.as_array_mut().and_then(|a| a.last_mut())
        && last["command_status"] == "RUNNING"
        && last["command_name"] == "install_bootloader"
    {
        last["command_status"] = json!("SUCCEEDED");
    }
    axum::Json(json!({ "commands": listed })).into_response()
}

async fn start_fake(f: Fake) -> String {
    let app = Router::new()
        .route("/v1/commands/", post(post_command).get(list_commands))
        .with_state(f);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}")
}

fn opts() -> ClientOptions {
    ClientOptions {
        command_timeout: Duration::from_secs(1),
        max_attempts: 3,
        retry_delay: Duration::from_millis(50),
        require_tls: false,
    }
}

const TOKEN: &str = "sekrit-token-0123456789-abcdefghijklmnop";

#[tokio::test]
async fn busy_unauthorized_and_failed_commands_are_told_apart() {
    let f = Fake::default();
    let url = start_fake(f.clone()).await;
    let c = AgentClient::new(&url, TOKEN, None, opts(), None).unwrap();

    *f.post_mode.lock().unwrap() = "busy";
    let e = c
        .execute("standby.sync", json!({}), true)
        .await
        .unwrap_err();
    assert!(matches!(e, AgentError::Busy { .. }), "{e}");
    assert!(e.to_string().contains("Agent is busy"), "{e}");

    *f.post_mode.lock().unwrap() = "unauthorized";
    let e = c
        .execute("standby.sync", json!({}), true)
        .await
        .unwrap_err();
    assert!(matches!(e, AgentError::Unauthorized { .. }), "{e}");
    assert!(
        !e.to_string().contains(TOKEN),
        "the token never appears in errors: {e}"
    );

    *f.listed.lock().unwrap() = json!([
        {"id": "a", "command_name": "get_deploy_steps", "command_status": "SUCCEEDED", "command_result": {}},
        {"id": "b", "command_name": "execute_deploy_step", "command_status": "FAILED",
         "command_error": {"type": "ImageDownloadError", "code": 500, "message": "Error downloading image",
                           "details": "Download of image x failed: 404 Not Found"},
         "command_result": null},
    ]);
    let list = c.list_commands().await.unwrap();
    assert_eq!(list.len(), 2);
    let last = list.last().unwrap();
    assert_eq!(last.command_status, CommandStatus::Failed);
    assert_eq!(
        last.error_text(),
        "ImageDownloadError: Download of image x failed: 404 Not Found"
    );
    // Every request carried the token in the query string, url-encoded.
    let queries = f.queries.lock().unwrap().clone();
    assert!(
        queries
            .iter()
            .all(|q| q.contains(&format!("agent_token={TOKEN}"))),
        "{queries:?}"
    );
    assert!(
        queries.iter().any(|q| q.starts_with("wait=true&")),
        "{queries:?}"
    );
}

#[tokio::test]
async fn a_lost_answer_counts_when_the_agent_lists_the_command_running() {
    let f = Fake::default();
    let url = start_fake(f.clone()).await;
    let c = AgentClient::new(&url, TOKEN, None, opts(), None).unwrap();
    *f.post_mode.lock().unwrap() = "slow";
    *f.listed.lock().unwrap() = json!([
        {"id": "b", "command_name": "execute_deploy_step", "command_status": "RUNNING"},
    ]);
    let r = c
        .execute("deploy.execute_deploy_step", json!({}), false)
        .await
        .unwrap();
    assert_eq!(r.command_status, CommandStatus::Running);
    assert_eq!(f.posts.load(Ordering::SeqCst), 1, "not sent twice");
}

#[tokio::test]
async fn unreachable_and_silent_agents_fail_after_bounded_attempts() {
    // A port held by a socket that does not listen: connection refused (and nobody else can
    // take the port meanwhile), three attempts.
    let closed = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    closed
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let port = closed.local_addr().unwrap().as_socket().unwrap().port();
    let c = AgentClient::new(
        &format!("http://127.0.0.1:{port}"),
        TOKEN,
        None,
        opts(),
        None,
    )
    .unwrap();
    let e = c
        .execute("standby.sync", json!({}), true)
        .await
        .unwrap_err();
    match &e {
        AgentError::Connection { attempts, .. } => {
            assert_eq!(*attempts, 3, "{e}");
            assert!(e.to_string().contains("refused"), "the cause is kept: {e}");
        }
        other => panic!("{other}"),
    }
    // An agent that never answers (and lists nothing running): timeouts, then an error.
    let f = Fake::default();
    let url = start_fake(f.clone()).await;
    *f.post_mode.lock().unwrap() = "slow";
    *f.listed.lock().unwrap() = json!([]);
    let c = AgentClient::new(&url, TOKEN, None, opts(), None).unwrap();
    let started = std::time::Instant::now();
    let e = c
        .execute("standby.sync", json!({}), true)
        .await
        .unwrap_err();
    assert!(
        matches!(e, AgentError::Connection { attempts: 3, .. }),
        "{e}"
    );
    assert_eq!(f.posts.load(Ordering::SeqCst), 3);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn polling_waits_until_the_command_is_done_and_gives_up_in_time() {
    let f = Fake::default();
    let url = start_fake(f.clone()).await;
    let c = AgentClient::new(&url, TOKEN, None, opts(), None).unwrap();
    *f.listed.lock().unwrap() = json!([
        {"id": "c", "command_name": "install_bootloader", "command_status": "RUNNING"},
    ]);
    let done = c
        .wait_for("install_bootloader", Duration::from_millis(20), 10)
        .await
        .unwrap();
    assert_eq!(done.command_status, CommandStatus::Succeeded);
    assert_eq!(f.lists.load(Ordering::SeqCst), 3);
    let e = c
        .wait_for("never_listed", Duration::from_millis(10), 3)
        .await
        .unwrap_err();
    assert!(matches!(e, AgentError::Timeout { .. }), "{e}");
}

/// A self-signed P-384 certificate for 127.0.0.1, as the agent's auto-TLS makes.
fn make_cert(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let (ok, _, err) = support::run(std::process::Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-nodes",
        "-subj",
        "/CN=agent",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-days",
        "1",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        crt.to_str().unwrap(),
    ]));
    assert!(ok, "openssl req: {err}");
    (crt, key)
}

/// A TLS server (rustls, in a thread) presenting `crt`: it records each handshake's outcome and
/// answers a completed one with an empty command list, as an agent with no commands would.
struct TlsAgent {
    url: String,
    handshakes: Arc<std::sync::Mutex<Vec<Result<(), String>>>>,
}

fn tls_agent(crt: &std::path::Path, key: &std::path::Path) -> TlsAgent {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{Read, Write};
    let cert = CertificateDer::from_pem_slice(&std::fs::read(crt).unwrap()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(&std::fs::read(key).unwrap()).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let handshakes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&handshakes);
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(mut tcp) = tcp else { continue };
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = tcp.set_write_timeout(Some(Duration::from_secs(5)));
            let mut conn = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
            let mut outcome = Ok(());
            while conn.is_handshaking() {
                if let Err(e) = conn.complete_io(&mut tcp) {
                    outcome = Err(e.to_string());
                    break;
                }
            }
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(outcome.clone());
            if outcome.is_err() {
                continue;
            }
            let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let body = br#"{"commands": []}"#;
            let _ = write!(
                tls,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                body.len()
            );
            let _ = tls.write_all(body);
            conn.send_close_notify();
            let _ = conn.complete_io(&mut tcp);
        }
    });
    TlsAgent { url, handshakes }
}

impl TlsAgent {
    /// The outcomes of the first `n` handshakes, once the server has seen them end.
    async fn handshakes(&self, n: usize) -> Vec<Result<(), String>> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.handshakes.lock().unwrap().clone();
            if seen.len() >= n || std::time::Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn tls_is_pinned_to_the_certificate_the_agent_sent() {
    if !support::require_peer("agent_client tls", &["openssl"]) {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (served_crt, served_key) = make_cert(dir.path(), "served");
    let (other_crt, _) = make_cert(dir.path(), "other");
    let agent = tls_agent(&served_crt, &served_key);
    let strict = ClientOptions {
        require_tls: true,
        max_attempts: 1,
        ..opts()
    };
    // Pinned to another certificate: the agent is reached and presents its certificate, the
    // client refuses it in the handshake (and says so), nothing is sent.
    let other = std::fs::read_to_string(&other_crt).unwrap();
    let c = AgentClient::new(&agent.url, TOKEN, Some(&other), strict.clone(), None).unwrap();
    let e = c.list_commands().await.unwrap_err();
    match &e {
        AgentError::Connection { source, .. } => assert!(
            ironboot::error_chain::chain(source).contains("invalid peer certificate"),
            "a certificate error, not any connection error: {e}"
        ),
        other => panic!("{other}"),
    }
    let seen = agent.handshakes(1).await;
    assert_eq!(seen.len(), 1, "the server was reached once: {seen:?}");
    let refused = seen[0].as_ref().unwrap_err();
    assert!(
        refused.contains("received fatal alert"),
        "the client aborted the handshake with an alert: {refused}"
    );
    // Pinned to the served certificate: the handshake completes and the request is answered.
    let served = std::fs::read_to_string(&served_crt).unwrap();
    let c = AgentClient::new(&agent.url, TOKEN, Some(&served), strict, None).unwrap();
    let listed = c.list_commands().await.unwrap();
    assert!(listed.is_empty());
    let seen = agent.handshakes(2).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[1].is_ok(), "{seen:?}");
}
