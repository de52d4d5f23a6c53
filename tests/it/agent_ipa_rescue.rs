//! Rescue through the REAL ironic-python-agent 13.0.0, sandboxed (tests/it/support/ipa.rs): an
//! active node is rescued (`rescue_interface = agent`): the agent boots, ironboot hands it the
//! SHA-512 crypt hash of the rescue password (`rescue.finalize_rescue`), which the agent writes
//! where a rescue ramdisk's login reads it (checked against openssl's hash of the password),
//! and the node is `rescue`; unrescue boots the instance again → `active` (both through
//! python-ironicclient's `--wait`). Bad requests are refused with nothing changed.

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::ipa::{Lab, LabOptions, sha256_file};

const RESCUE_TIMEOUT: Duration = Duration::from_secs(180);
const PASSWORD: &str = "r3scue-me Now";

/// An `active` node with the agent rescue interface, adopted (no deploy needed: adoption
/// takes the instance as it is).
fn active_node(lab: &Lab) -> String {
    let image = lab.dir().join("adopted.img");
    std::fs::write(&image, vec![7u8; 1 << 20]).unwrap();
    let url = lab.serve_image(&image, "adopted.img");
    let info = json!({"image_source": url, "image_disk_format": "raw",
                      "image_checksum": format!("sha256:{}", sha256_file(&image))});
    let uuid = lab.create_manageable_node("rescue-me", info, None);
    let (s, b) = lab.api(
        "PATCH",
        &format!("/v1/nodes/{uuid}"),
        Some(&json!([{"op": "replace", "path": "/rescue_interface", "value": "agent"}])),
    );
    assert_eq!(s, 200, "{b}");
    lab.provision(&uuid, "adopt");
    lab.wait_state(&uuid, &["active"], Duration::from_secs(30));
    uuid
}

fn openssl_sha512_crypt(password: &str, salt: &str) -> String {
    let (ok, out, err) =
        support::run(Command::new("openssl").args(["passwd", "-6", "-salt", salt, password]));
    assert!(ok, "openssl passwd: {err}");
    out.trim().to_string()
}

#[test]
fn rescue_hands_the_password_hash_to_the_agent_and_unrescue_returns_to_active() {
    if !support::require_peer("agent_ipa_rescue", &["openssl"]) {
        return;
    }
    let Some(cli) = support::pyenv::baremetal_cli("agent_ipa_rescue") else {
        return;
    };
    let Some(lab) = Lab::start("agent_ipa_rescue", LabOptions::default()) else {
        return;
    };
    let uuid = active_node(&lab);
    let path = format!("/v1/nodes/{uuid}/states/provision");

    // Refused before anything moves.
    for (body, says) in [
        (json!({"target": "rescue"}), "rescue_password"),
        (
            json!({"target": "rescue", "rescue_password": ""}),
            "rescue_password",
        ),
        (json!({"target": "unrescue"}), "can not be performed"),
    ] {
        let (s, b) = lab.api("PUT", &path, Some(&body));
        assert_eq!(s, 400, "{body}: {b}");
        assert!(b.to_string().contains(says), "{body}: {b}");
        assert_eq!(lab.node(&uuid)["provision_state"], "active");
    }
    let (s, b) = lab.api(
        "PATCH",
        &format!("/v1/nodes/{uuid}"),
        Some(&json!([{"op": "add", "path": "/driver_info/rescue_kernel", "value": "http://x/k"}])),
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = lab.api(
        "PUT",
        &path,
        Some(&json!({"target": "rescue", "rescue_password": PASSWORD})),
    );
    assert_eq!(s, 400, "{b}");
    assert!(b.to_string().contains("ambiguous"), "{b}");
    let (s, _) = lab.api(
        "PATCH",
        &format!("/v1/nodes/{uuid}"),
        Some(&json!([{"op": "remove", "path": "/driver_info/rescue_kernel"}])),
    );
    assert_eq!(s, 200);
    assert_eq!(lab.node(&uuid)["provision_state"], "active");
    assert_eq!(lab.boots(), 0);

    let started = Instant::now();
    lab.baremetal(
        &cli,
        &[
            "node",
            "rescue",
            &uuid,
            "--rescue-password",
            PASSWORD,
            "--wait",
            "180",
        ],
    );
    let rescued = lab.wait_reached(&uuid, "rescue", &["rescue failed"], RESCUE_TIMEOUT);
    let took = started.elapsed();
    eprintln!("agent_ipa_rescue: active → rescue through the agent: {took:.1?}");
    assert_eq!(lab.boots(), 1, "the agent booted as the rescue ramdisk");
    // What the agent wrote is the SHA-512 crypt hash of the password, never the password.
    let written = lab
        .etc_written("ipa-rescue-config/ipa-rescue-password")
        .unwrap_or_else(|| panic!("no password file written\n{}", lab.log_tails()));
    assert!(written.starts_with("$6$"), "{written}");
    let salt = written.split('$').nth(2).unwrap();
    assert_eq!(written, openssl_sha512_crypt(PASSWORD, salt));
    assert!(!written.contains(PASSWORD));
    assert!(
        lab.etc_written(".rescued").is_some(),
        "the agent's rescue marker"
    );
    assert!(
        !std::path::Path::new("/etc/ipa-rescue-config/ipa-rescue-password").exists(),
        "the host's /etc was written"
    );
    let info = rescued["instance_info"].as_object().unwrap();
    assert!(
        !info.contains_key("rescue_password") && !info.contains_key("hashed_rescue_password"),
        "{info:?}"
    );
    let calls = rescued["driver_internal_info"]["fake_calls"].to_string();
    let order = [
        "boot.clean_up_instance",
        "boot.prepare_ramdisk",
        "boot.clean_up_ramdisk",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|c| {
            calls
                .rfind(c)
                .unwrap_or_else(|| panic!("{c} not in {calls}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{calls}");

    lab.baremetal(&cli, &["node", "unrescue", &uuid, "--wait", "180"]);
    let back = lab.wait_state(&uuid, &["active", "unrescue failed"], RESCUE_TIMEOUT);
    assert_eq!(back["provision_state"], "active", "{}", back["last_error"]);
    assert_eq!(back["power_state"], "power on");
    let calls = back["driver_internal_info"]["fake_calls"].to_string();
    assert!(
        calls.rfind("boot.prepare_instance") > calls.rfind("boot.clean_up_ramdisk"),
        "{calls}"
    );
    let dii: &Value = &back["driver_internal_info"];
    assert!(dii.get("agent_secret_token").is_none(), "{dii}");
}
