//! The acceptance test of the management API: the real python-ironicclient 6.3.0 `baremetal`
//! CLI drives ironboot through a whole node lifecycle with the fake interfaces.

use crate::support;

use std::process::Command;

use serde_json::Value;
use support::server::Server;

struct Baremetal {
    bin: std::path::PathBuf,
    endpoint: String,
    home: tempfile::TempDir,
}

impl Baremetal {
    /// Runs `baremetal <args>`; panics with the output when it fails.
    fn run(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.try_run(args);
        assert!(
            ok,
            "baremetal {} failed:\nstdout: {out}\nstderr: {err}",
            args.join(" ")
        );
        out
    }

    fn try_run(&self, args: &[&str]) -> (bool, String, String) {
        support::run(
            Command::new(&self.bin)
                .args(args)
                .env("OS_AUTH_TYPE", "none")
                .env("OS_ENDPOINT", &self.endpoint)
                // The client caches negotiated versions under $HOME; keep each run separate.
                .env("HOME", self.home.path())
                .env_remove("OS_CLOUD"),
        )
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-f", "json"]);
        let out = self.run(&all);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("baremetal {args:?} printed non-JSON ({e}): {out}"))
    }
}

/// A column of a `-f json` list row: the CLI names them by label or by field depending on the
/// command, so accept either.
fn col<'a>(row: &'a Value, names: &[&str]) -> &'a Value {
    names
        .iter()
        .find_map(|n| row.get(*n))
        .unwrap_or_else(|| panic!("none of {names:?} in {row}"))
}

#[test]
fn baremetal_cli_drives_a_node_lifecycle() {
    let Some(bin) = support::pyenv::baremetal_cli("ironicclient") else {
        return;
    };
    let srv = Server::start();
    let bm = Baremetal {
        bin,
        endpoint: srv.api_url(),
        home: tempfile::tempdir().unwrap(),
    };

    let created = bm.json(&[
        "node",
        "create",
        "--driver",
        "fake-hardware",
        "--name",
        "cli-node-1",
        "--property",
        "cpus=4",
    ]);
    assert_eq!(created["provision_state"], "enroll");
    assert_eq!(created["name"], "cli-node-1");
    assert_eq!(
        created["properties"]["cpus"], 4,
        "the client sends JSON-looking values as JSON"
    );
    let uuid = created["uuid"].as_str().unwrap().to_string();

    let port = bm.json(&["port", "create", "52:54:00:12:34:56", "--node", &uuid]);
    assert_eq!(port["address"], "52:54:00:12:34:56");
    let ports = bm.json(&["port", "list"]);
    assert_eq!(
        col(&ports[0], &["Address", "address"]),
        "52:54:00:12:34:56",
        "{ports}"
    );
    let node_ports = bm.json(&["port", "list", "--node", "cli-node-1", "--long"]);
    assert_eq!(node_ports.as_array().unwrap().len(), 1, "{node_ports}");

    bm.run(&[
        "node",
        "set",
        "cli-node-1",
        "--driver-info",
        "deploy_kernel=file:///srv/ipa.kernel",
        "--driver-info",
        "deploy_ramdisk=file:///srv/ipa.initramfs",
        "--instance-info",
        "image_source=http://images.example/disk.img",
        "--instance-info",
        "image_checksum=sha256:0123",
    ]);
    let shown = bm.json(&["node", "show", "cli-node-1"]);
    assert_eq!(
        shown["driver_info"]["deploy_kernel"],
        "file:///srv/ipa.kernel"
    );
    assert_eq!(
        shown["instance_info"]["image_source"],
        "http://images.example/disk.img"
    );

    bm.run(&["node", "manage", "cli-node-1", "--wait", "30"]);
    assert_eq!(
        bm.json(&["node", "show", "cli-node-1"])["provision_state"],
        "manageable"
    );
    bm.run(&["node", "provide", "cli-node-1", "--wait", "30"]);
    assert_eq!(
        bm.json(&["node", "show", "cli-node-1"])["provision_state"],
        "available"
    );

    let listed = bm.json(&["node", "list"]);
    let row = &listed[0];
    assert_eq!(col(row, &["UUID", "uuid"]), uuid.as_str(), "{listed}");
    assert_eq!(
        col(row, &["Provisioning State", "provision_state"]),
        "available"
    );
    let long = bm.json(&["node", "list", "--long"]);
    assert_eq!(
        col(&long[0], &["Driver", "driver"]),
        "fake-hardware",
        "{long}"
    );
    let filtered = bm.json(&["node", "list", "--provision-state", "active"]);
    assert_eq!(filtered.as_array().unwrap().len(), 0);

    bm.run(&["node", "deploy", "cli-node-1", "--wait", "30"]);
    let active = bm.json(&["node", "show", "cli-node-1"]);
    assert_eq!(active["provision_state"], "active");
    assert_eq!(active["power_state"], "power on");
    let calls = active["driver_internal_info"]["fake_calls"].to_string();
    assert!(
        calls.contains("deploy.deploy") && calls.contains("boot.prepare_instance"),
        "{calls}"
    );

    // A refused action reaches the operator as Ironic's error text.
    let (ok, _, err) = bm.try_run(&["node", "delete", "cli-node-1"]);
    assert!(
        !ok && err.contains("cannot be deleted while it is active"),
        "{err}"
    );

    bm.run(&["node", "undeploy", "cli-node-1", "--wait", "30"]);
    assert_eq!(
        bm.json(&["node", "show", "cli-node-1"])["provision_state"],
        "available"
    );
    bm.run(&["node", "power", "on", "cli-node-1"]);
    bm.run(&["node", "delete", "cli-node-1"]);
    assert_eq!(bm.json(&["node", "list"]).as_array().unwrap().len(), 0);
    assert_eq!(
        bm.json(&["port", "list"]).as_array().unwrap().len(),
        0,
        "ports go with their node"
    );

    let (ok, _, err) = bm.try_run(&["node", "show", "cli-node-1"]);
    assert!(!ok && err.contains("could not be found"), "{err}");
}
