//! Take over of virtual media nodes (seed 004): conductor A deploys one node to `wait call-back`
//! (its deploy ISO inserted) and a partition-image node to `active` (its boot ISO, with the
//! root UUID, inserted), then stops. Conductor B — another host name, its own data directory
//! and HTTP root, the same SQLite database, the same `[api] public_url` (the address agents
//! reach whichever conductor serves them by) — takes both over at start: it rebuilds each ISO,
//! byte for byte the same, publishes it on its own server and inserts it again (the BMC's
//! Image URL changes). The waiting node's agent then finishes its deploy against B with the
//! token it booted with.

use crate::support;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use support::fake_agent::FakeAgent;
use support::server::Server;
use support::sushy::{Options, SECOND_SYSTEM_UUID, SYSTEM_UUID};
use support::vmedia_lab::{
    AgentSide, MAC, VmediaLab, api_call, basename, cd_url, fetched, iso_cmdline, iso_file, param,
    published_in, wait_state,
};

const TIMEOUT: Duration = Duration::from_secs(60);
const SECOND_MAC: &str = "52:54:00:12:34:57";
const ROOT_UUID: &str = "6e0f3b2a-7c41-4d59-9b8e-2a1c5d7e9f10";

/// The node as conductor `api` shows it once `host` took it over.
async fn wait_taken_over(http: &reqwest::Client, api: &str, uuid: &str, host: &str) -> Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (_, n) = api_call(http, api, Method::GET, &format!("/v1/nodes/{uuid}"), None).await;
        if n["conductor"] == host && n["reservation"].is_null() {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "{host} did not take {uuid} over: {n}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_conductor_rebuilds_republishes_and_reinserts_the_same_media() {
    let test = "vmedia take over";
    let opts = Options {
        quick_power: true,
        two_systems: true,
        ..Options::default()
    };
    let Some(mut lab) = VmediaLab::start(test, opts, "", &[]) else {
        return;
    };
    let api_a = lab.server.api_url();
    let kernel = lab.file("deploy.kernel", 32 * 1024, 11);
    let ramdisk = lab.file("deploy.ramdisk", 128 * 1024, 12);
    let os_kernel = lab.file("os.vmlinuz", 48 * 1024, 13);
    let os_initrd = lab.file("os.initrd", 96 * 1024, 14);
    let root_fs = lab.file("root.img", 256 * 1024, 15);
    let media = json!({"deploy_kernel": kernel, "deploy_ramdisk": ramdisk});

    // A: a node left waiting for its agent, and a partition-image node deployed to active.
    let waiting = lab
        .enroll(
            "waiting",
            lab.driver_info(SYSTEM_UUID, media.clone()),
            json!({"image_source": lab.file("disk.img", 65536, 16)}),
            MAC,
        )
        .await;
    let active = lab
        .enroll(
            "partition",
            lab.driver_info(SECOND_SYSTEM_UUID, media.clone()),
            json!({"image_source": root_fs, "kernel": os_kernel, "ramdisk": os_initrd,
                   "image_type": "partition", "root_gb": 1}),
            SECOND_MAC,
        )
        .await;
    for uuid in [&waiting, &active] {
        let (s, body) = lab.provision(uuid, "active").await;
        assert_eq!(s, 202, "{body}");
        lab.wait_state(uuid, &["wait call-back"], TIMEOUT).await;
    }
    let deploy_url_a = cd_url(&lab.sushy, SYSTEM_UUID).await;
    let deploy_iso = fetched(&lab.sushy, &deploy_url_a);
    let token = param(&iso_cmdline(&deploy_iso, true), "ipa-agent-token")
        .unwrap()
        .to_string();
    // The partition node's agent finishes on A: the instance boots its own ISO.
    let partition_iso = fetched(&lab.sushy, &cd_url(&lab.sushy, SECOND_SYSTEM_UUID).await);
    let partition_token = param(&iso_cmdline(&partition_iso, true), "ipa-agent-token")
        .unwrap()
        .to_string();
    let agent = FakeAgent::start(&partition_token, ROOT_UUID).await;
    let side = AgentSide {
        http: &lab.http,
        api: api_a.clone(),
        node: active.clone(),
        mac: SECOND_MAC.into(),
        token: partition_token,
    };
    let done = side.heartbeat_until_done(&agent.url, TIMEOUT).await;
    assert_eq!(done["provision_state"], "active", "{done}");
    let boot_url_a = cd_url(&lab.sushy, SECOND_SYSTEM_UUID).await;
    assert!(basename(&boot_url_a).starts_with("boot-"), "{boot_url_a}");
    let boot_iso = fetched(&lab.sushy, &boot_url_a);
    let cmdline = iso_cmdline(&boot_iso, true);
    assert_eq!(
        param(&cmdline, "root"),
        Some(format!("UUID={ROOT_UUID}").as_str())
    );
    assert_eq!(param(&cmdline, "ipa-agent-token"), None, "{cmdline:?}");
    assert_eq!(
        iso_file(&boot_iso, "/vmlinuz"),
        std::fs::read(&os_kernel).unwrap()
    );
    let doc = lab
        .sushy
        .get(&format!("/redfish/v1/Systems/{SECOND_SYSTEM_UUID}"))
        .await;
    assert_eq!(doc["Boot"]["BootSourceOverrideTarget"], "Cd");
    let published_a = published_in(&lab.server.data_dir.join("httpboot"));
    assert_eq!(
        published_a.len(),
        2,
        "the deploy ISO of one node, the boot ISO of the other"
    );

    // While A runs, its database is its own: B is refused.
    let db = lab.server.data_dir.join("ironboot.sqlite");
    let db_url = format!("sqlite://{}", db.display());
    let early = support::run(
        std::process::Command::new(support::ironboot_bin())
            .args([
                "serve",
                "--api-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .args(["--tftp-listen", "127.0.0.1:0", "--data-dir"])
            .arg(lab.dir.path().join("data-early"))
            .env("IRONBOOT_DATABASE__URL", &db_url),
    );
    assert!(!early.0, "a second ironboot started on A's database");
    assert!(early.2.contains("already using database"), "{}", early.2);

    // A stops (as a dead conductor would leave its nodes), B starts on the same database.
    let status = lab.server.stop();
    assert!(status.success(), "{status}");
    let b = Server::start_in(
        &lab.dir.path().join("data-b"),
        &["--config", lab.config.to_str().unwrap()],
        &[
            ("IRONBOOT_HOST", "conductor-b"),
            (
                "IRONBOOT_DATABASE__URL",
                &format!("sqlite://{}", db.display()),
            ),
            ("IRONBOOT_API__PUBLIC_URL", &api_a),
        ],
    );
    let api_b = b.api_url();
    for uuid in [&waiting, &active] {
        wait_taken_over(&lab.http, &api_b, uuid, "conductor-b").await;
    }
    // The ring names B at once; the media are B's once both take overs are done.
    let deadline = Instant::now() + TIMEOUT;
    while b.metric("ironboot_conductor_take_overs_total{outcome=\"succeeded\"}") < 2.0 {
        assert!(Instant::now() < deadline, "B did not take both nodes over");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let published_b = published_in(&b.data_dir.join("httpboot"));
    assert_eq!(
        published_b, published_a,
        "B publishes the same names with the same bytes"
    );
    for (system, before) in [
        (SYSTEM_UUID, &deploy_url_a),
        (SECOND_SYSTEM_UUID, &boot_url_a),
    ] {
        let url = cd_url(&lab.sushy, system).await;
        assert_ne!(&url, before, "the BMC was given B's URL");
        assert!(
            url.starts_with(&format!("{}/redfish/", b.http_url())),
            "{url}"
        );
        assert_eq!(basename(&url), basename(before));
        let bytes = fetched(&lab.sushy, &url);
        let want = if system == SYSTEM_UUID {
            &deploy_iso
        } else {
            &boot_iso
        };
        assert!(&bytes == want, "{system}: the rebuilt medium differs");
    }
    let n = wait_state(&lab.http, &api_b, &active, &["active"], TIMEOUT).await;
    assert_eq!(n["last_error"], Value::Null);

    // The waiting node's agent, booted from the media A built, finishes against B.
    let agent = FakeAgent::start(&token, "").await;
    let side = AgentSide {
        http: &lab.http,
        api: api_b.clone(),
        node: waiting.clone(),
        mac: MAC.into(),
        token,
    };
    let done = side.heartbeat_until_done(&agent.url, TIMEOUT).await;
    assert_eq!(done["provision_state"], "active", "{done}");
    assert_eq!(done["conductor"], "conductor-b");
    assert!(
        published_in(&b.data_dir.join("httpboot"))
            .iter()
            .all(|(name, _)| !name.starts_with("deploy-"))
    );
}
