//! Real firmware network-boots through what `ironboot serve` renders and serves, for nodes
//! enrolled and deployed through its API: QEMU (TCG) with SeaBIOS and the iPXE ROM, or OVMF,
//! user networking only (10.0.2.2 is the host's loopback), the test kit's Debian kernel and
//! busybox initramfs as deploy ramdisk (see `support::guest`; at most two guests at once).
//!
//! Each test: enroll a node with a MAC (`deploy_interface=direct`, `power_interface=fake`),
//! deploy it to `wait call-back` (the fake power interface does nothing, so the test starts
//! QEMU itself as "power on"), boot it through the interface's firmware path and check the
//! kernel command line the guest saw, then play the agent to the end of the deploy so the
//! boot interface switches the node to its instance entry (or removes its files), and check
//! that clean-up leaves the roots exactly as they were before the node.

use crate::support;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::json;
use support::guest::GuestRun;
use support::netboot::{NetbootLab, NodeSpec, grub_efi_image};

/// What the stand-in agent reports as the root partition's filesystem UUID.
const ROOT_UUID: &str = "4f0c3a4e-58c6-4b2b-9d5e-0d6f1c2a3b4c";
/// What it reports for a whole-disk image (the MBR signature).
const DISK_ID: &str = "0x1234abcd";

/// Lines of `after` that `before` does not have, and the other way round.
fn diff(before: &str, after: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let b: BTreeSet<String> = before.lines().map(String::from).collect();
    let a: BTreeSet<String> = after.lines().map(String::from).collect();
    (
        a.difference(&b).cloned().collect(),
        b.difference(&a).cloned().collect(),
    )
}

/// Checks that `root` now has exactly the lines `expected` more than `before`, and lost none.
fn assert_added(before: &str, root: &Path, expected: &[String]) {
    let (added, removed) = diff(before, &support::tree(root, false));
    assert!(removed.is_empty(), "files disappeared: {removed:?}");
    assert_eq!(added, expected.iter().cloned().collect::<BTreeSet<_>>());
}

/// A small raw "disk image" for `instance_info.image_source` (the stand-in agent does not
/// write it; the cache still fetches and serves it).
fn instance_image(dir: &Path) -> String {
    let path = dir.join("disk.raw");
    support::write_pattern_file(&path, 1024 * 1024, 7);
    format!("file://{}", path.display())
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

/// One NIC with `mac` on QEMU's user network, whose DHCP hands out `bootfile`; OVMF for UEFI.
fn netboot_args(bootfile: &str, mac: &str, uefi: bool) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    if uefi {
        args.extend(["-bios".into(), support::guest::OVMF.into()]);
    }
    args.extend([
        "-netdev".into(),
        format!("user,id=n0,bootfile={bootfile}"),
        "-device".into(),
        format!("virtio-net-pci,netdev=n0,mac={mac}"),
        "-boot".into(),
        "n".into(),
    ]);
    args
}

/// Checks the guest's `/proc/cmdline` has `ipa-api-url` pointing at the lab's API and `wants`.
fn assert_deploy_cmdline(lab: &NetbootLab, run: &GuestRun, wants: &[&str]) {
    let cmdline = run.cmdline().expect("no IRONBOOT-CMDLINE line");
    let api = format!("ipa-api-url=http://10.0.2.2:{}", lab.api_port);
    for want in wants.iter().copied().chain([api.as_str()]) {
        assert!(cmdline.contains(want), "{want:?} not in {cmdline:?}");
    }
}

/// Checks ironboot's log shows a complete TFTP transfer of each file (as the client named it).
fn assert_tftp_complete(lab: &NetbootLab, files: &[String]) {
    for file in files {
        let outcomes = lab.tftp_outcomes(file);
        assert!(
            outcomes.iter().any(|o| o == "complete"),
            "no complete TFTP transfer of {file}: {outcomes:?}"
        );
    }
}

#[test]
fn ipxe_bios_chains_past_net0_to_the_deploy_ramdisk_then_boots_the_partition_instance() {
    let test = "iPXE BIOS over HTTP";
    let Some(lab) = NetbootLab::start(test, &[], |_, _, _| vec![]) else {
        return;
    };
    let uuid = "7d9c2f0e-1a2b-4c3d-8e4f-5a6b7c8d9e01";
    let mac = "52:54:00:1b:0a:01";
    let net0 = "52:54:00:1b:0a:99";
    lab.enroll(&NodeSpec {
        uuid,
        boot_interface: "ipxe",
        boot_mode: "bios",
        mac,
        instance_info: json!({
            "image_source": instance_image(lab.dir.path()),
            "kernel": format!("file://{}", lab.kit.kernel.display()),
            "ramdisk": format!("file://{}", lab.kit.initrd.display()),
            "root_gb": 1,
        }),
    });
    let root = lab.http_root();
    // The agent image directory appears with the first deploy that serves an image, and stays.
    std::fs::create_dir_all(root.join("agent_images")).unwrap();
    let before = support::tree(&root, false);

    lab.deploy_until_wait_call_back(uuid);
    assert_added(
        &before,
        &root,
        &[
            format!("{uuid}/"),
            format!("{uuid}/config"),
            format!("{uuid}/deploy_kernel"),
            format!("{uuid}/deploy_ramdisk"),
            format!("agent_images/{uuid}"),
            format!("pxelinux.cfg/52-54-00-1b-0a-01 -> ../{uuid}/config"),
        ],
    );
    let script = read(root.join("pxelinux.cfg/52-54-00-1b-0a-01"));
    assert!(script.contains("goto deploy\n"), "{script}");

    // Two NICs: net0 is not enrolled, the node's port is net1. DHCP (on net0) hands out
    // boot.ipxe, which tries net0's script (404), then net1's.
    let run = lab.boot(
        "iPXE BIOS deploy",
        uuid,
        &[
            netboot_args(&format!("{}/boot.ipxe", lab.guest_http()), net0, false),
            vec![
                "-netdev".into(),
                "user,id=n1".into(),
                "-device".into(),
                format!("virtio-net-pci,netdev=n1,mac={mac}"),
            ],
        ]
        .concat(),
    );
    assert_deploy_cmdline(
        &lab,
        &run,
        &[
            "nofb vga=normal console=ttyS0 panic=-1",
            "BOOTIF=01-52-54-00-1b-0a-01",
            "initrd=deploy_ramdisk",
        ],
    );
    assert!(
        run.output
            .contains("ironboot: trying the boot script of net1 (52-54-00-1b-0a-01)"),
        "boot.ipxe did not reach net1"
    );
    assert_eq!(lab.access_log_statuses("/boot.ipxe"), [200]);
    assert_eq!(
        lab.access_log_statuses("/pxelinux.cfg/52-54-00-1b-0a-99"),
        [404]
    );
    assert_eq!(
        lab.access_log_statuses("/pxelinux.cfg/52-54-00-1b-0a-01"),
        [200]
    );
    for file in ["deploy_kernel", "deploy_ramdisk"] {
        assert_eq!(lab.access_log_statuses(&format!("/{uuid}/{file}")), [200]);
    }

    // The agent's part: write_image done, the root partition's UUID reported. The boot
    // interface switches the node's script to the instance's own kernel.
    let agent = lab.fake_agent(ROOT_UUID);
    lab.finish_deploy(uuid, mac, &agent);
    let script = read(root.join("pxelinux.cfg/52-54-00-1b-0a-01"));
    assert!(script.contains("goto boot_partition\n"), "{script}");
    assert!(
        script.contains(&format!(
            "kernel {}/{uuid}/kernel root=UUID={ROOT_UUID} ro nofb vga=normal",
            lab.guest_http()
        )),
        "{script}"
    );
    assert_added(
        &before,
        &root,
        &[
            format!("{uuid}/"),
            format!("{uuid}/config"),
            format!("{uuid}/kernel"),
            format!("{uuid}/ramdisk"),
            format!("pxelinux.cfg/52-54-00-1b-0a-01 -> ../{uuid}/config"),
        ],
    );

    // The active node boots its instance kernel through the same chain.
    let run = lab.boot(
        "iPXE BIOS partition instance",
        uuid,
        &netboot_args(&format!("{}/boot.ipxe", lab.guest_http()), mac, false),
    );
    let cmdline = run.cmdline().expect("no IRONBOOT-CMDLINE line");
    assert!(
        cmdline.contains(&format!("root=UUID={ROOT_UUID} ro")),
        "{cmdline}"
    );
    assert!(!cmdline.contains("ipa-api-url"), "{cmdline}");
    assert_eq!(lab.access_log_statuses(&format!("/{uuid}/kernel")), [200]);

    lab.provision(uuid, "undeploy");
    lab.wait_state(uuid, "available");
    assert_eq!(
        support::tree(&root, false),
        before,
        "undeploy left files behind"
    );
}

#[test]
fn pxelinux_over_tftp_boots_the_deploy_ramdisk_and_a_whole_disk_instance_drops_the_files() {
    let test = "PXELINUX over TFTP";
    let Some(lab) = NetbootLab::start(test, &[], |_, _, _| vec![]) else {
        return;
    };
    let tftp_root = lab.tftp_root();
    if !support::require_condition(
        test,
        tftp_root.join("pxelinux.0").is_file() && tftp_root.join("ldlinux.c32").is_file(),
        "pxelinux.0/ldlinux.c32 were not installed into the tftp root (Debian packages pxelinux, syslinux-common)",
    ) {
        return;
    }
    let uuid = "7d9c2f0e-1a2b-4c3d-8e4f-5a6b7c8d9e02";
    let mac = "52:54:00:1b:0b:01";
    lab.enroll(&NodeSpec {
        uuid,
        boot_interface: "pxe",
        boot_mode: "bios",
        mac,
        instance_info: json!({"image_source": instance_image(lab.dir.path())}),
    });
    let before = support::tree(&tftp_root, false);
    lab.deploy_until_wait_call_back(uuid);
    assert_added(
        &before,
        &tftp_root,
        &[
            format!("{uuid}/"),
            format!("{uuid}/config"),
            format!("{uuid}/deploy_kernel"),
            format!("{uuid}/deploy_ramdisk"),
            format!("pxelinux.cfg/01-52-54-00-1b-0b-01 -> ../{uuid}/config"),
            format!("grub.cfg-01-52-54-00-1b-0b-01 -> {uuid}/config"),
            format!("{mac}.conf -> {uuid}/config"),
        ],
    );

    // SeaBIOS + iPXE ROM load pxelinux.0 from ironboot's TFTP server; PXELINUX takes its
    // prefix from that URL and reads ldlinux.c32, its config and the deploy files over TFTP.
    let run = lab.boot(
        "PXELINUX deploy",
        uuid,
        &netboot_args(&format!("{}/pxelinux.0", lab.guest_tftp()), mac, false),
    );
    // PXELINUX's IPAPPEND 2 adds BOOTIF.
    assert_deploy_cmdline(&lab, &run, &["BOOTIF=01-52-54-00-1b-0b-01"]);
    assert_tftp_complete(
        &lab,
        &[
            "pxelinux.0".into(),
            "ldlinux.c32".into(),
            "pxelinux.cfg/01-52-54-00-1b-0b-01".into(),
            format!("{uuid}/deploy_kernel"),
            format!("{uuid}/deploy_ramdisk"),
        ],
    );

    // A whole-disk instance boots from its disk: without netboot fallback (the default) the
    // node's boot files go once it is deployed.
    let agent = lab.fake_agent(DISK_ID);
    lab.finish_deploy(uuid, mac, &agent);
    assert_eq!(
        support::tree(&tftp_root, false),
        before,
        "the deployed node kept boot files"
    );
}

#[test]
fn grub_efi_over_tftp_boots_the_deploy_ramdisk_and_netboot_fallback_keeps_a_disk_entry() {
    let test = "GRUB EFI over TFTP";
    if !support::require_condition(
        test,
        Path::new(support::guest::OVMF).is_file(),
        "OVMF is missing (Debian package ovmf)",
    ) {
        return;
    }
    let grub_ok = std::cell::Cell::new(true);
    let Some(lab) = NetbootLab::start(
        test,
        &[("IRONBOOT_PXE__ENABLE_NETBOOT_FALLBACK", "true")],
        |dir, _http, tftp| {
            // GRUB looks for its config under its prefix on ironboot's TFTP server:
            // grub/grub.cfg (the common config) sends it on to /<mac>.conf.
            match grub_efi_image(test, dir, &format!("(tftp,10.0.2.2:{tftp})/grub")) {
                Some(image) => vec![(
                    "IRONBOOT_PXE__LOADER_FILE_PATHS".into(),
                    format!("{{ \"grubx64.efi\" = \"{}\" }}", image.display()),
                )],
                None => {
                    grub_ok.set(false);
                    vec![]
                }
            }
        },
    ) else {
        return;
    };
    if !grub_ok.get() {
        return;
    }
    let tftp_root = lab.tftp_root();
    assert!(tftp_root.join("grubx64.efi").is_file());
    let uuid = "7d9c2f0e-1a2b-4c3d-8e4f-5a6b7c8d9e03";
    let mac = "52:54:00:1b:0c:01";
    lab.enroll(&NodeSpec {
        uuid,
        boot_interface: "pxe",
        boot_mode: "uefi",
        mac,
        instance_info: json!({"image_source": instance_image(lab.dir.path())}),
    });
    let before = support::tree(&tftp_root, false);
    lab.deploy_until_wait_call_back(uuid);
    let config = read(tftp_root.join(format!("{mac}.conf")));
    assert!(config.contains("set default=deploy"), "{config}");

    let run = lab.boot(
        "GRUB EFI deploy",
        uuid,
        &netboot_args(&format!("{}/grubx64.efi", lab.guest_tftp()), mac, true),
    );
    // GRUB's ${net_default_mac} is colon-separated.
    assert_deploy_cmdline(&lab, &run, &[&format!("BOOTIF=01-{mac}")]);
    // GRUB sends absolute names.
    assert_tftp_complete(
        &lab,
        &[
            "/grub/grub.cfg".into(),
            format!("/{mac}.conf"),
            format!("/{uuid}/deploy_kernel"),
            format!("/{uuid}/deploy_ramdisk"),
        ],
    );

    // With enable_netboot_fallback the deployed whole-disk node keeps a config that hands
    // the boot to its disk; the deploy kernel and ramdisk are gone.
    let agent = lab.fake_agent(DISK_ID);
    lab.finish_deploy(uuid, mac, &agent);
    let config = read(tftp_root.join(format!("{mac}.conf")));
    assert!(config.contains("set default=boot_whole_disk"), "{config}");
    assert!(!config.contains("deploy_kernel"), "{config}");
    assert_added(
        &before,
        &tftp_root,
        &[
            format!("{uuid}/"),
            format!("{uuid}/config"),
            format!("pxelinux.cfg/01-52-54-00-1b-0c-01 -> ../{uuid}/config"),
            format!("grub.cfg-01-52-54-00-1b-0c-01 -> {uuid}/config"),
            format!("{mac}.conf -> {uuid}/config"),
        ],
    );
    lab.provision(uuid, "undeploy");
    lab.wait_state(uuid, "available");
    assert_eq!(
        support::tree(&tftp_root, false),
        before,
        "undeploy left files behind"
    );
}

#[test]
fn ipxe_under_uefi_boots_the_deploy_ramdisk_and_abort_removes_its_files() {
    let test = "iPXE UEFI over HTTP";
    if !support::require_condition(
        test,
        Path::new(support::guest::OVMF).is_file(),
        "OVMF is missing (Debian package ovmf)",
    ) {
        return;
    }
    let Some(lab) = NetbootLab::start(test, &[], |_, _, _| vec![]) else {
        return;
    };
    let uuid = "7d9c2f0e-1a2b-4c3d-8e4f-5a6b7c8d9e04";
    let mac = "52:54:00:1b:0d:01";
    lab.enroll(&NodeSpec {
        uuid,
        boot_interface: "ipxe",
        boot_mode: "uefi",
        mac,
        instance_info: json!({"image_source": instance_image(lab.dir.path())}),
    });
    let root = lab.http_root();
    std::fs::create_dir_all(root.join("agent_images")).unwrap();
    let before = support::tree(&root, false);
    lab.deploy_until_wait_call_back(uuid);
    // OVMF runs the iPXE EFI ROM of the NIC; under UEFI the kernel's EFI stub finds the
    // initrd only through initrd=<name> on the command line, which the script adds.
    let run = lab.boot(
        "iPXE UEFI deploy",
        uuid,
        &netboot_args(&format!("{}/boot.ipxe", lab.guest_http()), mac, true),
    );
    assert_deploy_cmdline(
        &lab,
        &run,
        &["BOOTIF=01-52-54-00-1b-0d-01", "initrd=deploy_ramdisk"],
    );
    // The operator gives up on the deploy: the ramdisk boot is undone.
    lab.provision(uuid, "abort");
    lab.wait_state(uuid, "deploy failed");
    let (added, removed) = diff(&before, &support::tree(&root, false));
    assert!(removed.is_empty(), "{removed:?}");
    // The agent image stays until the node is undeployed or deployed again.
    assert!(
        added.iter().all(|l| l.starts_with("agent_images/")),
        "abort left boot files: {added:?}"
    );
}
