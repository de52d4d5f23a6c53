//! Black-box tests of the management API against the real `ironboot serve` binary.

use crate::support;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::server::Server;

async fn call(
    c: &reqwest::Client,
    method: Method,
    url: &str,
    body: Option<&str>,
    version: Option<&str>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut req = c.request(method, url);
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(b.to_string());
    }
    // Without a version a request is 1.1, which has no node names: these tests speak the
    // newest version unless they say otherwise.
    req = req.header(
        "X-OpenStack-Ironic-API-Version",
        version.unwrap_or("latest"),
    );
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, json, headers)
}

/// The human message inside either of Ironic's error formats (`faultstring` from a
/// controller, `description` from routing and version negotiation).
fn fault(body: &Value) -> String {
    let inner: Value = serde_json::from_str(
        body["error_message"]
            .as_str()
            .expect("error_message string"),
    )
    .expect("inner JSON");
    inner
        .get("faultstring")
        .or_else(|| inner.get("description"))
        .and_then(Value::as_str)
        .expect("faultstring or description")
        .to_string()
}

async fn wait_state(c: &reqwest::Client, api: &str, node: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, n, _) = call(
            c,
            Method::GET,
            &format!("{api}/v1/nodes/{node}"),
            None,
            None,
        )
        .await;
        if n["provision_state"] == state && n["reservation"].is_null() {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "node {node} never reached {state:?}: {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn provision(
    c: &reqwest::Client,
    api: &str,
    node: &str,
    target: &str,
) -> (StatusCode, Value) {
    let (s, b, _) = call(
        c,
        Method::PUT,
        &format!("{api}/v1/nodes/{node}/states/provision"),
        Some(&json!({"target": target}).to_string()),
        Some("1.80"),
    )
    .await;
    (s, b)
}

/// method, path, body, API version header, expected status, text the message must contain.
type BadRequest = (
    Method,
    String,
    Option<String>,
    Option<&'static str>,
    u16,
    &'static str,
);

#[tokio::test]
async fn bad_requests_get_clear_4xx_and_change_nothing() {
    let srv = Server::start();
    let api = srv.api_url();
    let c = support::http_client();
    let (s, node, _) = call(
        &c,
        Method::POST,
        &format!("{api}/v1/nodes"),
        Some(r#"{"driver": "fake-hardware", "name": "base"}"#),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{node}");
    let (s, _, _) = call(
        &c,
        Method::POST,
        &format!("{api}/v1/ports"),
        Some(&format!(
            r#"{{"address": "52:54:00:00:00:01", "node_uuid": "{}"}}"#,
            node["uuid"].as_str().unwrap()
        )),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let base_uuid = node["uuid"].as_str().unwrap().to_string();
    let snapshot = |c: reqwest::Client, api: String| async move {
        let (_, n, _) = call(
            &c,
            Method::GET,
            &format!("{api}/v1/nodes/detail"),
            None,
            None,
        )
        .await;
        let (_, p, _) = call(
            &c,
            Method::GET,
            &format!("{api}/v1/ports/detail"),
            None,
            None,
        )
        .await;
        (n, p)
    };
    let before = snapshot(c.clone(), api.clone()).await;

    let long_name = "x".repeat(300);
    #[rustfmt::skip]
    let table: Vec<BadRequest> = vec![
        (Method::POST, "/v1/nodes".into(), Some("{not json".into()), None, 400, "invalid request body"),
        (Method::POST, "/v1/nodes".into(), Some("".into()), None, 400, "empty"),
        (Method::POST, "/v1/nodes".into(), Some("[]".into()), None, 400, "not of type 'object'"),
        (Method::POST, "/v1/nodes".into(), Some(r#"{"driver": "fake-hardware", "colour": "red"}"#.into()), None, 400, "colour"),
        (Method::POST, "/v1/nodes".into(), Some(r#"{"driver": 5}"#.into()), None, 400, "not of type 'string'"),
        (Method::POST, "/v1/nodes".into(), Some(r#"{"name": "x"}"#.into()), None, 400, "driver"),
        (Method::POST, "/v1/nodes".into(), Some(r#"{"driver": "ilo"}"#.into()), None, 400, "ilo"),
        (Method::POST, "/v1/nodes".into(), Some(r#"{"driver": "fake-hardware", "name": "has space"}"#.into()), None, 400, "has space"),
        (Method::POST, "/v1/nodes".into(), Some(format!(r#"{{"driver": "fake-hardware", "name": "{long_name}"}}"#)), None, 400, "invalid"),
        (Method::POST, "/v1/nodes".into(), Some(r#"{"driver": "fake-hardware", "name": "base"}"#.into()), None, 409, "base"),
        (Method::POST, "/v1/nodes".into(), Some(r#"{"driver": "fake-hardware", "boot_interface": "warp"}"#.into()), None, 400, "warp"),
        (Method::POST, "/v1/nodes".into(), Some(r#"{"driver": "fake-hardware", "power_interface": "script"}"#.into()), None, 400, "not enabled on this conductor"),
        (Method::PATCH, "/v1/nodes/base".into(), Some(r#"[{"op": "add", "path": "/power_interface", "value": "script"}]"#.into()), None, 400, "not enabled"),
        (Method::POST, "/v1/nodes".into(), Some(r#"{"driver": "fake-hardware", "driver_info": []}"#.into()), None, 400, "object"),
        (Method::POST, "/v1/nodes".into(), Some(r#"{"driver": "fake-hardware", "provision_state": "active"}"#.into()), None, 400, "provision_state"),
        (Method::POST, "/v1/nodes".into(), Some(r#"{"driver": "fake-hardware", "uuid": "nope"}"#.into()), None, 400, "UUID"),
        (Method::GET, "/v1/nodes/doesnotexist".into(), None, None, 404, "doesnotexist"),
        (Method::GET, "/v1/nodes/00000000-0000-4000-8000-000000000000".into(), None, None, 404, "could not be found"),
        (Method::GET, "/v1/nodes?limit=0".into(), None, None, 400, "Limit"),
        (Method::GET, "/v1/nodes?limit=abc".into(), None, None, 400, "limit"),
        (Method::GET, "/v1/nodes?sort_key=power".into(), None, None, 400, "sort_key"),
        (Method::GET, "/v1/nodes?sort_dir=up".into(), None, None, 400, "sort direction"),
        (Method::GET, "/v1/nodes?fields=uuid,bogus".into(), None, None, 400, "bogus"),
        (Method::GET, "/v1/nodes?provision_state=flying".into(), None, None, 400, "flying"),
        (Method::GET, "/v1/nodes?marker=not-a-uuid".into(), None, None, 400, "marker"),
        (Method::GET, "/v1/nodes?colour=red".into(), None, None, 400, "colour"),
        (Method::GET, "/v1/nodes?maintenance=maybe".into(), None, None, 400, "maintenance"),
        (Method::GET, "/v1/nodes".into(), None, Some("1.999"), 406, "1.999"),
        (Method::GET, "/v1/nodes".into(), None, Some("banana"), 406, "Invalid value"),
        (Method::PATCH, "/v1/nodes/base".into(), Some(r#"{"op": "add"}"#.into()), None, 400, "invalid request body"),
        (Method::PATCH, "/v1/nodes/base".into(), Some(r#"[{"op": "add", "path": "/provision_state", "value": "active"}]"#.into()), None, 400, "provision_state"),
        (Method::PATCH, "/v1/nodes/base".into(), Some(r#"[{"op": "add", "path": "/uuid", "value": "x"}]"#.into()), None, 400, "uuid"),
        (Method::PATCH, "/v1/nodes/base".into(), Some(r#"[{"op": "replace", "path": "/driver_info/missing", "value": 1}]"#.into()), None, 400, "missing"),
        (Method::PATCH, "/v1/nodes/base".into(), Some(r#"[{"op": "add", "path": "/driver_info", "value": "str"}]"#.into()), None, 400, "object"),
        (Method::PATCH, "/v1/nodes/base".into(), Some(r#"[{"op": "add", "path": "/name", "value": 7}]"#.into()), None, 400, "string"),
        (Method::PATCH, "/v1/nodes/base".into(), Some(r#"[{"op": "copy", "path": "/name", "value": "x"}]"#.into()), None, 400, "copy"),
        (Method::PATCH, "/v1/nodes/base".into(), Some(r#"[{"op": "remove", "path": "/driver"}]"#.into()), None, 400, "mandatory"),
        (Method::PATCH, "/v1/nodes/base".into(), Some(r#"[{"op": "add", "path": "/extra/k", "value": 1}, {"op": "add", "path": "/power_interface", "value": "ipmi"}]"#.into()), None, 400, "ipmi"),
        (Method::PATCH, "/v1/nodes/nope".into(), Some(r#"[{"op": "add", "path": "/extra/k", "value": 1}]"#.into()), None, 404, "nope"),
        (Method::PUT, "/v1/nodes/base/states/provision".into(), Some(r#"{"target": "fly"}"#.into()), None, 400, "fly"),
        (Method::PUT, "/v1/nodes/base/states/provision".into(), Some(r#"{"target": "active"}"#.into()), None, 400, "enroll"),
        (Method::PUT, "/v1/nodes/base/states/provision".into(), Some(r#"{"target": "provide"}"#.into()), None, 400, "provide"),
        (Method::PUT, "/v1/nodes/base/states/provision".into(), Some(r#"{"target": "deploy"}"#.into()), Some("1.70"), 406, "not acceptable"),
        (Method::PUT, "/v1/nodes/base/states/provision".into(), Some(r#"{"target": "inspect"}"#.into()), None, 400, "\"inspect\" can not be performed"),
        (Method::PUT, "/v1/nodes/base/states/provision".into(), Some(r#"{"target": "manage", "clean_steps": []}"#.into()), None, 400, "clean_steps"),
        (Method::PUT, "/v1/nodes/base/states/provision".into(), Some(r#"{"target": "manage", "configdrive": "x"}"#.into()), None, 400, "configdrive"),
        (Method::PUT, "/v1/nodes/base/states/provision".into(), Some(r#"{"tgt": "manage"}"#.into()), None, 400, "tgt"),
        (Method::PUT, "/v1/nodes/base/states/power".into(), Some(r#"{"target": "on"}"#.into()), None, 400, "power state"),
        (Method::PUT, "/v1/nodes/base/states/power".into(), Some(r#"{"target": "power on", "timeout": 0}"#.into()), None, 400, "timeout"),
        (Method::DELETE, "/v1/nodes/nope".into(), None, None, 404, "nope"),
        (Method::POST, "/v1/ports".into(), Some(format!(r#"{{"address": "52:54:00:00:00:0g", "node_uuid": "{base_uuid}"}}"#)), None, 400, "MAC"),
        (Method::POST, "/v1/ports".into(), Some(format!(r#"{{"address": "52:54:00:00:00:01", "node_uuid": "{base_uuid}"}}"#)), None, 409, "52:54:00:00:00:01"),
        (Method::POST, "/v1/ports".into(), Some(r#"{"address": "52:54:00:00:00:02", "node_uuid": "ghost"}"#.into()), None, 400, "ghost"),
        (Method::POST, "/v1/ports".into(), Some(r#"{"address": "52:54:00:00:00:02"}"#.into()), None, 400, "node_uuid"),
        (Method::POST, "/v1/ports".into(), Some(format!(r#"{{"address": "52:54:00:00:00:02", "node_uuid": "{base_uuid}", "pxe_enabled": "maybe"}}"#)), None, 400, "pxe_enabled"),
        (Method::GET, "/v1/ports/not-a-uuid".into(), None, None, 404, "not-a-uuid"),
        (Method::GET, "/v1/ports?address=zz".into(), None, None, 400, "MAC"),
        (Method::DELETE, "/v1/ports/00000000-0000-4000-8000-000000000000".into(), None, None, 404, "could not be found"),
        (Method::GET, "/v1/nowhere".into(), None, None, 404, ""),
        (Method::DELETE, "/v1/drivers".into(), None, None, 405, ""),
    ];
    for (method, path, body, version, status, needle) in &table {
        let (s, b, h) = call(
            &c,
            method.clone(),
            &format!("{api}{path}"),
            body.as_deref(),
            *version,
        )
        .await;
        assert_eq!(s.as_u16(), *status, "{method} {path} {body:?}: {b}");
        let msg = fault(&b);
        assert!(
            msg.contains(needle),
            "{method} {path}: message {msg:?} should mention {needle:?}"
        );
        // Routing errors carry no version headers (as Ironic's); every other answer does.
        let routed = h.get("x-openstack-ironic-api-maximum-version");
        let expect_headers =
            !matches!(*status, 404 | 405 if needle.is_empty()) && *version != Some("banana");
        assert_eq!(
            routed.map(|v| v.to_str().unwrap()),
            expect_headers.then_some("1.115"),
            "{method} {path}"
        );
    }
    assert_eq!(
        snapshot(c.clone(), api.clone()).await,
        before,
        "a bad request changed something"
    );
    let log = srv.log();
    assert!(!log.contains("panicked"), "server panicked:\n{log}");
}

#[tokio::test]
async fn lifecycle_with_fake_interfaces_and_metrics() {
    let srv = Server::start();
    let api = srv.api_url();
    let c = support::http_client();
    let (s, n, h) = call(&c, Method::POST, &format!("{api}/v1/nodes"), Some(r#"{"driver": "fake-hardware", "name": "n1", "driver_info": {"ipmi_password": "pw", "user": "u"}}"#), Some("1.80")).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(h["x-openstack-ironic-api-version"], "1.80");
    assert_eq!(
        n["driver_info"],
        json!({"ipmi_password": "******", "user": "u"}),
        "secrets are masked"
    );
    let uuid = n["uuid"].as_str().unwrap().to_string();
    let (s, _, _) = call(
        &c,
        Method::POST,
        &format!("{api}/v1/ports"),
        Some(&json!({"address": "52:54:00:AA:BB:01", "node_uuid": uuid}).to_string()),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);

    let (s, b) = provision(&c, &api, "n1", "manage").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    wait_state(&c, &api, "n1", "manageable").await;
    assert_eq!(
        provision(&c, &api, "n1", "provide").await.0,
        StatusCode::ACCEPTED
    );
    wait_state(&c, &api, "n1", "available").await;
    assert_eq!(
        provision(&c, &api, "n1", "deploy").await.0,
        StatusCode::ACCEPTED
    );
    let n = wait_state(&c, &api, "n1", "active").await;
    assert_eq!(n["power_state"], "power on");
    assert!(n["target_provision_state"].is_null());
    let calls: Vec<&str> = n["driver_internal_info"]["fake_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // In Ironic's order: the boot device the boot interface prepared is set before power on.
    let position = |expected: &str| {
        calls
            .iter()
            .rposition(|c| *c == expected)
            .unwrap_or_else(|| panic!("fake interfaces were not asked {expected}: {calls:?}"))
    };
    assert!(calls.contains(&"power.get_power_state"), "{calls:?}");
    let order: Vec<usize> = [
        "deploy.deploy",
        "boot.prepare_instance",
        "management.set_boot_device:disk:persistent",
        "power.set_power_state:power on",
    ]
    .iter()
    .map(|c| position(c))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{calls:?}");
    // Deleting an active node is refused; undeploy first.
    let (s, b, _) = call(
        &c,
        Method::DELETE,
        &format!("{api}/v1/nodes/n1"),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(
        provision(&c, &api, "n1", "undeploy").await.0,
        StatusCode::ACCEPTED
    );
    let n = wait_state(&c, &api, "n1", "available").await;
    assert_eq!(n["power_state"], "power off");

    let (s, _, _) = call(
        &c,
        Method::PUT,
        &format!("{api}/v1/nodes/n1/states/power"),
        Some(r#"{"target": "power on"}"#),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, st, _) = call(
            &c,
            Method::GET,
            &format!("{api}/v1/nodes/n1/states"),
            None,
            None,
        )
        .await;
        if st["power_state"] == "power on" && st["target_power_state"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "{st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // JSON Patch round trip, then maintenance blocks deploys.
    let patch = r#"[{"op": "add", "path": "/instance_info/image_source", "value": "http://x/img"}, {"op": "add", "path": "/name", "value": "renamed"}]"#;
    let (s, n, _) = call(
        &c,
        Method::PATCH,
        &format!("{api}/v1/nodes/n1"),
        Some(patch),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{n}");
    assert_eq!(n["instance_info"]["image_source"], "http://x/img");
    assert_eq!(n["name"], "renamed");
    let (s, _, _) = call(
        &c,
        Method::PUT,
        &format!("{api}/v1/nodes/renamed/maintenance"),
        Some(r#"{"reason": "disk swap"}"#),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, b) = provision(&c, &api, "renamed", "active").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(fault(&b).contains("disk swap"));
    let (s, _, _) = call(
        &c,
        Method::DELETE,
        &format!("{api}/v1/nodes/renamed/maintenance"),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);

    // Listing: summary, fields, paging.
    for i in 0..3 {
        call(
            &c,
            Method::POST,
            &format!("{api}/v1/nodes"),
            Some(&format!(r#"{{"driver": "fake-hardware", "name": "p{i}"}}"#)),
            None,
        )
        .await;
    }
    let (_, page, _) = call(
        &c,
        Method::GET,
        &format!("{api}/v1/nodes?limit=2&fields=uuid,provision_state"),
        None,
        None,
    )
    .await;
    assert_eq!(page["nodes"].as_array().unwrap().len(), 2);
    assert!(page["nodes"][0].get("name").is_none());
    let next = page["next"].as_str().unwrap().to_string();
    let (_, page2, _) = call(&c, Method::GET, &next, None, None).await;
    assert_eq!(page2["nodes"].as_array().unwrap().len(), 2);
    assert_ne!(page["nodes"][0]["uuid"], page2["nodes"][0]["uuid"]);
    let (_, ports, _) = call(
        &c,
        Method::GET,
        &format!("{api}/v1/ports/detail?node=renamed"),
        None,
        None,
    )
    .await;
    assert_eq!(ports["ports"][0]["address"], "52:54:00:aa:bb:01");
    let port_uuid = ports["ports"][0]["uuid"].as_str().unwrap().to_string();
    assert_eq!(
        call(
            &c,
            Method::DELETE,
            &format!("{api}/v1/ports/{port_uuid}"),
            None,
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(
            &c,
            Method::DELETE,
            &format!("{api}/v1/nodes/renamed"),
            None,
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );

    let metrics = c
        .get(format!("{api}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"ironboot_provision_state_transitions_total{from="available",to="deploying"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"route="/v1/nodes/{ident}/states/provision",status="202""#),
        "{metrics}"
    );
    let (s, h, _) = call(&c, Method::GET, &format!("{api}/healthz"), None, None).await;
    assert_eq!((s, h["status"].as_str()), (StatusCode::OK, Some("ok")));
}

#[tokio::test]
async fn http_basic_auth_protects_management_but_not_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("admin:{}\n", bcrypt::hash("pw", 4).unwrap()),
    )
    .unwrap();
    let file = htpasswd.to_str().unwrap();
    let srv = Server::start_with(
        &[],
        &[
            ("IRONBOOT_API__AUTH_STRATEGY", "http_basic"),
            ("IRONBOOT_API__HTTP_BASIC_AUTH_USER_FILE", file),
        ],
    );
    let api = srv.api_url();
    let c = support::http_client();
    assert_eq!(
        c.get(format!("{api}/v1")).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        c.get(format!("{api}/")).send().await.unwrap().status(),
        StatusCode::OK
    );
    let r = c.get(format!("{api}/v1/nodes")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = c
        .get(format!("{api}/v1/nodes"))
        .basic_auth("admin", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(format!("{api}/v1/nodes"))
        .basic_auth("admin", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[test]
fn config_check_refuses_noauth_off_loopback_and_show_prints_defaults() {
    let out = std::process::Command::new(support::ironboot_bin())
        .args(["config", "check", "--api-listen", "0.0.0.0:6385"])
        .env_remove("IRONBOOT_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("api.auth_strategy") && err.contains("noauth") && err.contains("loopback"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(support::ironboot_bin())
        .args(["config", "show", "--data-dir"])
        .arg(dir.path())
        .env_remove("IRONBOOT_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("listen = \"127.0.0.1:6385\"") && shown.contains("tftpboot"),
        "{shown}"
    );
    let f = dir.path().join("shown.toml");
    std::fs::write(&f, shown.as_bytes()).unwrap();
    let out = std::process::Command::new(support::ironboot_bin())
        .args(["config", "check", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let help = std::process::Command::new(support::ironboot_bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--data-dir",
        "--api-listen",
        "--http-listen",
        "--tftp-listen",
        "--config",
    ] {
        assert!(help.contains(flag), "serve --help lacks {flag}:\n{help}");
    }
}

#[test]
fn sigterm_exits_cleanly_and_data_dir_is_exclusive() {
    let mut srv = Server::start();
    let second = std::process::Command::new(support::ironboot_bin())
        .args([
            "serve",
            "--api-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--tftp-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&srv.data_dir)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already using data directory"));
    let status = srv.stop();
    assert!(status.success(), "exit status {status}:\n{}", srv.log());
    assert!(srv.log().contains("SIGTERM received"), "{}", srv.log());
}
