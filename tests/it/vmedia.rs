//! Virtual media deploys through the real `ironboot serve` and its API, with sushy-tools as the
//! BMC: the `redfish` hardware type, the `redfish-virtual-media` boot interface, both
//! publishers. sushy's InsertMedia downloads what ironboot published, so every test compares
//! the bytes the BMC fetched with what ironboot built, reads them back with xorriso and
//! mtools, and plays the agent from what it finds there (lookup and heartbeats against the
//! API, commands answered by `support::fake_agent`). Fault cases: `vmedia_faults.rs`; take
//! over: `vmedia_take_over.rs`; the real agent: `agent_ipa.rs`.

use crate::support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::fake_agent::FakeAgent;
use support::sushy::{Options, Sushy};
use support::swift::{Swift, TEMPAUTH_KEY, TEMPAUTH_USER};
use support::vmedia_lab::{
    AgentSide, MAC, VmediaLab, assert_slots_empty, basename, cd_url, fetched, floppy_parameters,
    iso_cmdline, iso_file, param, system,
};

const STATE_TIMEOUT: Duration = Duration::from_secs(60);

fn quick() -> Options {
    Options {
        quick_power: true,
        ..Options::default()
    }
}

/// The deploy kernel and ramdisk (pattern bytes: nothing boots them) and a whole-disk image.
struct Inputs {
    kernel: Vec<u8>,
    ramdisk: Vec<u8>,
    driver_info: Value,
    instance_info: Value,
}

fn inputs(lab: &VmediaLab) -> Inputs {
    let kernel = lab.file("deploy.kernel", 64 * 1024, 1);
    let ramdisk = lab.file("deploy.ramdisk", 300 * 1024, 2);
    let image = lab.file("disk.img", 1024 * 1024, 3);
    Inputs {
        kernel: std::fs::read(&kernel).unwrap(),
        ramdisk: std::fs::read(&ramdisk).unwrap(),
        driver_info: lab.driver_info(
            system(),
            json!({"deploy_kernel": kernel, "deploy_ramdisk": ramdisk}),
        ),
        instance_info: json!({"image_source": image}),
    }
}

async fn system_doc(sushy: &Sushy) -> Value {
    sushy.get(&sushy.system_path()).await
}

/// Checks the deploy ISO the BMC fetched (the CD of system node-0): its bytes are what
/// ironboot published, it holds the deploy kernel and ramdisk, and its command line carries
/// the agent's parameters. Returns the token.
async fn check_deploy_iso(lab: &VmediaLab, inputs: &Inputs, iso: &[u8], uefi: bool) -> String {
    assert_eq!(iso_file(iso, "/vmlinuz"), inputs.kernel);
    assert_eq!(iso_file(iso, "/initrd"), inputs.ramdisk);
    let params = iso_cmdline(iso, uefi);
    assert_eq!(
        param(&params, "ipa-api-url"),
        Some(lab.server.api_url().as_str())
    );
    assert_eq!(param(&params, "boot_method"), Some("vmedia"));
    assert_eq!(param(&params, "BOOTIF"), Some(MAC));
    assert!(param(&params, "ir_pub_id").is_some(), "{params:?}");
    let token = param(&params, "ipa-agent-token")
        .expect("ipa-agent-token on the command line")
        .to_string();
    assert_eq!(token.len(), 43, "{token}");
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_nodes_are_listed_enrolled_and_powered_through_the_bmc() {
    let Some(lab) = VmediaLab::start("vmedia redfish node", quick(), "", &[]) else {
        return;
    };
    let (s, drivers) = lab.api(Method::GET, "/v1/drivers", None).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = drivers["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert!(
        names.contains(&"redfish") && names.contains(&"fake-hardware"),
        "{drivers}"
    );
    let uuid = lab
        .enroll("rf", lab.driver_info(system(), json!({})), json!({}), MAC)
        .await;
    let n = lab.node(&uuid).await;
    for (field, want) in [
        ("boot_interface", "redfish-virtual-media"),
        ("deploy_interface", "direct"),
        ("power_interface", "redfish"),
    ] {
        assert_eq!(n[field], want, "{field}");
    }
    assert_eq!(n["driver_info"]["redfish_password"], "******");
    // manage read the power state from the BMC.
    assert_eq!(n["power_state"], "power off");
    for (target, seen) in [("power on", "On"), ("power off", "Off")] {
        let (s, body) = lab
            .api(
                Method::PUT,
                &format!("/v1/nodes/{uuid}/states/power"),
                Some(json!({"target": target})),
            )
            .await;
        assert_eq!(s, 202, "{body}");
        let deadline = std::time::Instant::now() + STATE_TIMEOUT;
        loop {
            let n = lab.node(&uuid).await;
            if n["power_state"] == target && n["target_power_state"].is_null() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{n}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(system_doc(&lab.sushy).await["PowerState"], seen);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_deploy_iso_boots_the_agent_and_a_whole_disk_node_ends_on_its_disk() {
    let test = "vmedia built ISO whole disk";
    let Some(lab) = VmediaLab::start(test, quick(), "", &[]) else {
        return;
    };
    let inputs = inputs(&lab);
    let uuid = lab
        .enroll(
            "wd",
            inputs.driver_info.clone(),
            inputs.instance_info.clone(),
            MAC,
        )
        .await;
    let (s, body) = lab.provision(&uuid, "active").await;
    assert_eq!(s, 202, "{body}");
    let waiting = lab
        .wait_state(&uuid, &["wait call-back"], STATE_TIMEOUT)
        .await;

    // What the BMC was given: one opaque URL under ironboot's HTTP root, in the CD slot.
    let url = cd_url(&lab.sushy, system()).await;
    let published = lab.published();
    assert_eq!(published.len(), 1, "{:?}", published.iter().map(|p| &p.0));
    let (name, bytes) = &published[0];
    assert_eq!(url, format!("{}/redfish/{name}", lab.server.http_url()));
    assert!(
        name.starts_with("deploy-") && !name.contains(&uuid),
        "{name}"
    );
    assert_eq!(
        &fetched(&lab.sushy, &url),
        bytes,
        "the BMC fetched other bytes"
    );
    let token = check_deploy_iso(&lab, &inputs, bytes, true).await;
    assert!(!url.contains(&token));
    // One-time CD boot in the node's boot mode, then power on.
    let doc = system_doc(&lab.sushy).await;
    assert_eq!(doc["Boot"]["BootSourceOverrideTarget"], "Cd");
    assert_eq!(doc["Boot"]["BootSourceOverrideMode"], "UEFI");
    assert_eq!(doc["PowerState"], "On");
    // The API shows the token pregenerated, and masks it and the media names.
    let dii = &waiting["driver_internal_info"];
    assert_eq!(dii["agent_secret_token"], "******");
    // (ironboot masks every key naming a secret, the flag too.)
    assert!(!dii["agent_secret_token_pregenerated"].is_null(), "{dii}");
    assert_eq!(dii["vmedia"]["name_secret"], "******");

    // The agent: lookup gives no token (it has its own from the media), heartbeats with it.
    let agent = FakeAgent::start(&token, "").await;
    let side = AgentSide {
        http: &lab.http,
        api: lab.server.api_url(),
        node: uuid.clone(),
        mac: MAC.into(),
        token: token.clone(),
    };
    let (s, looked_up) = side.lookup().await;
    assert_eq!(s, 200, "{looked_up}");
    assert_eq!(looked_up["config"]["agent_token"], "******");
    let wrong = AgentSide {
        token: "not-the-token".into(),
        ..side
    };
    assert_eq!(wrong.heartbeat(&agent.url).await.0, 400);
    let side = AgentSide { token, ..wrong };
    let done = side.heartbeat_until_done(&agent.url, STATE_TIMEOUT).await;
    assert_eq!(done["provision_state"], "active", "{done}");
    assert_eq!(agent.refused(), 0);
    let received = agent.received();
    for cmd in [
        "deploy.get_deploy_steps",
        "deploy.execute_deploy_step",
        "standby.power_off",
    ] {
        assert!(received.iter().any(|c| c == cmd), "{received:?}");
    }

    // The instance boots from its disk: nothing inserted, nothing published.
    assert_slots_empty(&lab.sushy, system()).await;
    assert!(lab.published().is_empty());
    assert!(
        lab.sushy.downloaded().is_empty(),
        "eject deletes the copies"
    );
    let doc = system_doc(&lab.sushy).await;
    assert_eq!(doc["Boot"]["BootSourceOverrideTarget"], "Hdd");
    assert_eq!(doc["PowerState"], "On");

    let (s, body) = lab.provision(&uuid, "deleted").await;
    assert_eq!(s, 202, "{body}");
    lab.wait_state(&uuid, &["available"], STATE_TIMEOUT).await;
    assert_slots_empty(&lab.sushy, system()).await;
    assert!(lab.published().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ilo_way_deploy_iso_unmodified_with_a_parameters_floppy_then_abort() {
    let test = "vmedia deploy_iso + floppy";
    let Some(lab) = VmediaLab::start(test, quick(), "", &[]) else {
        return;
    };
    let iso = lab.file("operator-ipa.iso", 512 * 1024, 7);
    let iso_bytes = std::fs::read(&iso).unwrap();
    let image = lab.file("disk.img", 64 * 1024, 8);
    let uuid = lab
        .enroll(
            "ilo",
            lab.driver_info(system(), json!({"deploy_iso": iso})),
            json!({"image_source": image}),
            MAC,
        )
        .await;
    let (s, body) = lab.provision(&uuid, "active").await;
    assert_eq!(s, 202, "{body}");
    lab.wait_state(&uuid, &["wait call-back"], STATE_TIMEOUT)
        .await;

    let slots = lab.sushy.slots(system()).await;
    let (cd, floppy) = (&slots[0], &slots[1]);
    assert!(cd.2 && floppy.2, "{slots:?}");
    assert_eq!(
        fetched(&lab.sushy, &cd.1),
        iso_bytes,
        "deploy_iso is inserted unmodified"
    );
    let (label, text) = floppy_parameters(&fetched(&lab.sushy, &floppy.1));
    assert_eq!(label, "ir-vfd-dev");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], format!("ipa-api-url={}", lab.server.api_url()));
    let token = lines[1].strip_prefix("ipa-agent-token=").unwrap();
    assert_eq!(token.len(), 43);
    assert_eq!(lines[2], "boot_method=vmedia");
    assert_eq!(lines[3], format!("BOOTIF={MAC}"));
    for url in [&cd.1, &floppy.1] {
        assert!(!url.contains(token) && !url.contains(&uuid), "{url}");
    }
    assert_eq!(lab.published().len(), 2);

    // The operator gives up: the media are ejected and unpublished.
    let (s, body) = lab.provision(&uuid, "abort").await;
    assert_eq!(s, 202, "{body}");
    let failed = lab
        .wait_state(&uuid, &["deploy failed"], STATE_TIMEOUT)
        .await;
    assert_eq!(failed["last_error"], "deploy aborted by request");
    assert_slots_empty(&lab.sushy, system()).await;
    assert!(lab.published().is_empty());
    assert!(lab.sushy.downloaded().is_empty());
    assert!(failed["driver_internal_info"].get("vmedia").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swift_temp_urls_carry_the_media_and_clean_up_deletes_the_objects() {
    let test = "vmedia swift";
    let Some(swift) = Swift::start(test) else {
        return;
    };
    let config = format!(
        "[vmedia]\npublisher = \"swift\"\n[vmedia.swift]\nauth_version = \"tempauth\"\n\
         auth_url = \"{}\"\nuser = \"{TEMPAUTH_USER}\"\nkey = \"{TEMPAUTH_KEY}\"\n\
         container = \"ironboot_vmedia_test\"\n",
        swift.tempauth_url()
    );
    let Some(lab) = VmediaLab::start(test, quick(), &config, &[]) else {
        return;
    };
    let inputs = inputs(&lab);
    // A built ISO and, asked for, the parameters floppy too (config_via_removable).
    let mut driver_info = inputs.driver_info.clone();
    driver_info["config_via_removable"] = json!("true");
    let uuid = lab
        .enroll("sw", driver_info, inputs.instance_info.clone(), MAC)
        .await;
    let (s, body) = lab.provision(&uuid, "active").await;
    assert_eq!(s, 202, "{body}");
    lab.wait_state(&uuid, &["wait call-back"], STATE_TIMEOUT)
        .await;
    let url = cd_url(&lab.sushy, system()).await;
    assert!(
        url.starts_with(&swift.url())
            && url.contains("temp_url_sig=")
            && url.contains(&format!("filename={}", basename(&url))),
        "{url}"
    );
    assert!(lab.published().is_empty(), "nothing under the local root");
    let from_swift = lab.http.get(&url).send().await.unwrap();
    assert_eq!(from_swift.status(), 200);
    let object = from_swift.bytes().await.unwrap().to_vec();
    assert_eq!(
        fetched(&lab.sushy, &url),
        object,
        "the BMC fetched other bytes"
    );
    let token = check_deploy_iso(&lab, &inputs, &object, true).await;
    let floppy_url = lab.sushy.slots(system()).await[1].1.clone();
    assert!(floppy_url.contains("temp_url_sig="), "{floppy_url}");
    let (label, params) = floppy_parameters(&fetched(&lab.sushy, &floppy_url));
    assert_eq!(label, "ir-vfd-dev");
    assert!(
        params.contains(&format!("ipa-agent-token={token}")),
        "{params}"
    );

    let (s, body) = lab.provision(&uuid, "abort").await;
    assert_eq!(s, 202, "{body}");
    lab.wait_state(&uuid, &["deploy failed"], STATE_TIMEOUT)
        .await;
    assert_slots_empty(&lab.sushy, system()).await;
    for url in [&url, &floppy_url] {
        let gone = lab.http.get(url).send().await.unwrap().status();
        assert_eq!(gone, 404, "the object was deleted from Swift: {url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baremetal_cli_enrolls_a_redfish_node_and_deploys_it_with_wait() {
    let test = "vmedia baremetal";
    let Some(cli) = support::pyenv::baremetal_cli(test) else {
        return;
    };
    let Some(lab) = VmediaLab::start(test, quick(), "", &[]) else {
        return;
    };
    let inputs = inputs(&lab);
    let home = tempfile::tempdir().unwrap();
    let endpoint = lab.server.api_url();
    let bm = move |args: Vec<String>| {
        let (ok, out, err) = support::run(
            std::process::Command::new(&cli)
                .args(&args)
                .env("OS_AUTH_TYPE", "none")
                .env("OS_ENDPOINT", &endpoint)
                .env("HOME", home.path())
                .env_remove("OS_CLOUD"),
        );
        assert!(ok, "baremetal {args:?}:\n{out}\n{err}");
        out
    };
    let info = &inputs.driver_info;
    let mut args: Vec<String> = [
        "node",
        "create",
        "--driver",
        "redfish",
        "--boot-interface",
        "redfish-virtual-media",
        "--name",
        "cli-node",
        "-f",
        "value",
        "-c",
        "uuid",
    ]
    .map(String::from)
    .to_vec();
    for key in [
        "redfish_address",
        "redfish_system_id",
        "redfish_username",
        "redfish_password",
        "deploy_kernel",
        "deploy_ramdisk",
    ] {
        args.push("--driver-info".into());
        args.push(format!("{key}={}", info[key].as_str().unwrap()));
    }
    let uuid = bm(args.clone()).trim().to_string();
    let bm = std::sync::Arc::new(bm);
    let run = |a: &[&str]| bm(a.iter().map(|s| s.to_string()).collect());
    run(&["port", "create", MAC, "--node", &uuid]);
    run(&[
        "node",
        "set",
        &uuid,
        "--instance-info",
        &format!(
            "image_source={}",
            inputs.instance_info["image_source"].as_str().unwrap()
        ),
    ]);
    run(&["node", "manage", &uuid, "--wait", "60"]);
    run(&["node", "provide", &uuid, "--wait", "60"]);

    // `deploy --wait` blocks until active; the test plays the agent meanwhile.
    let waiter = {
        let bm = bm.clone();
        let uuid = uuid.clone();
        std::thread::spawn(move || {
            bm(["node", "deploy", &uuid, "--wait", "120"]
                .map(String::from)
                .to_vec())
        })
    };
    lab.wait_state(&uuid, &["wait call-back"], STATE_TIMEOUT)
        .await;
    let url = cd_url(&lab.sushy, system()).await;
    let token = check_deploy_iso(&lab, &inputs, &fetched(&lab.sushy, &url), true).await;
    let agent = FakeAgent::start(&token, "").await;
    let side = AgentSide {
        http: &lab.http,
        api: lab.server.api_url(),
        node: uuid.clone(),
        mac: MAC.into(),
        token,
    };
    let done = side.heartbeat_until_done(&agent.url, STATE_TIMEOUT).await;
    assert_eq!(done["provision_state"], "active", "{done}");
    tokio::task::spawn_blocking(move || waiter.join())
        .await
        .unwrap()
        .expect("baremetal node deploy --wait returned once the node was active");
    let shown = run(&["node", "show", &uuid, "-f", "json"]);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["provision_state"], "active");
    assert_eq!(shown["driver"], "redfish");
    assert_eq!(shown["driver_info"]["redfish_password"], "******");
}
