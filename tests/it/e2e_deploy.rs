//! Full deploys with ironboot's own agent (`ironboot-agent`), driven by the real
//! `ironboot serve` through the `script` power interface — the conductor powers machines on
//! and off, nothing plays the agent:
//! - process machines: the agent runs as a process with a file as its disk (fast; the bad
//!   input cases and the exact bytes on the disk);
//! - QEMU machines (TCG, real SeaBIOS/OVMF, iPXE and GRUB, user networking): the ramdisk
//!   from `ironboot ramdisk build` network-boots from ironboot, writes the image, and the
//!   machine boots its instance — from its own disk (whole-disk image) or over the network
//!   with `root=UUID=` (partition image). At most two guests run at once.

use crate::support;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::deploy_lab::{DeployLab, Machine, Reach};

const MIB: u64 = 1 << 20;
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(120);

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

/// (start, size) in bytes of the MBR's primary partitions.
fn mbr_partitions(disk: &Path) -> Vec<(u8, u64, u64, bool)> {
    let mbr = read_at(disk, 0, 512);
    assert_eq!(&mbr[510..], &[0x55, 0xaa], "no MBR on {}", disk.display());
    (0..4)
        .map(|i| &mbr[446 + 16 * i..462 + 16 * i])
        .filter(|e| e[4] != 0)
        .map(|e| {
            let lba = u32::from_le_bytes([e[8], e[9], e[10], e[11]]);
            let n = u32::from_le_bytes([e[12], e[13], e[14], e[15]]);
            (e[4], u64::from(lba) * 512, u64::from(n) * 512, e[0] == 0x80)
        })
        .collect()
}

fn mbr_disk_id(bytes: &[u8]) -> String {
    format!(
        "0x{:08x}",
        u32::from_le_bytes([bytes[440], bytes[441], bytes[442], bytes[443]])
    )
}

/// The ISO 9660 volume label at `offset`, if there is one.
fn iso_label(disk: &Path, offset: u64) -> Option<String> {
    let pvd = read_at(disk, offset + 32768, 72);
    (&pvd[1..6] == b"CD001").then(|| String::from_utf8_lossy(&pvd[40..72]).trim().to_string())
}

fn sparse_file(path: &Path, size: u64) {
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
}

/// A raw whole-disk image with an MBR and one partition, `size` bytes of pattern after it.
fn mbr_image(dir: &Path, size: u64) -> std::path::PathBuf {
    let path = dir.join("disk-image.raw");
    support::write_pattern_file(&path, size as usize, 11);
    let (ok, _, err) = support::run(std::process::Command::new("parted").args([
        "-s",
        path.to_str().unwrap(),
        "mklabel",
        "msdos",
        "mkpart",
        "primary",
        "ext4",
        "1MiB",
        "100%",
    ]));
    assert!(ok, "parted: {err}");
    path
}

fn wait_active_or_fail(lab: &DeployLab, uuid: &str, m: &Machine, timeout: Duration) -> Value {
    let done = lab.wait_state(uuid, &["active", "deploy failed"], timeout);
    assert_eq!(
        done["provision_state"],
        "active",
        "last_error: {}\n{}",
        done["last_error"],
        support::ipa::tail(&m.all_output(), 60)
    );
    done
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

#[test]
fn process_agent_writes_a_whole_disk_image_with_a_config_drive() {
    let test = "e2e process whole-disk";
    if !support::require_peer(test, &["curl", "parted"]) {
        return;
    }
    let lab = DeployLab::start(Reach::Loopback, &[], |_, _, _| vec![]);
    let image = mbr_image(lab.path(), 24 * MIB);
    let disk = lab.path().join("disk.raw");
    sparse_file(&disk, 256 * MIB);
    let m = lab.process_machine("wd", "52:54:00:e2:00:01", &disk, "");
    let uuid = lab.create_node(
        &m.mac,
        json!({"name": "e2e-wd", "driver_info": m.driver_info(),
               "instance_info": {"image_source": file_url(&image),
                                 "image_checksum": format!("sha256:{}", support::agent_kit::sha256(&image))}}),
    );
    let started = Instant::now();
    lab.provision(
        &uuid,
        json!({"target": "active", "configdrive": {"meta_data": {"hostname": "e2e-wd"}}}),
    );
    let done = wait_active_or_fail(&lab, &uuid, &m, DEPLOY_TIMEOUT);
    eprintln!(
        "{test}: active after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The image, byte for byte, except the partition entry the config drive added.
    let want = std::fs::read(&image).unwrap();
    let got = read_at(&disk, 0, want.len());
    assert!(
        got[..446] == want[..446] && got[512..] == want[512..],
        "the image differs on the disk"
    );
    let parts = mbr_partitions(&disk);
    assert_eq!(parts.len(), 2, "{parts:?}");
    let (_, cd_start, cd_size, _) = parts[1];
    assert_eq!(
        (cd_start + cd_size, cd_size),
        (256 * MIB, 64 * MIB),
        "config drive at the end"
    );
    assert_eq!(iso_label(&disk, cd_start).as_deref(), Some("config-2"));
    let meta = String::from_utf8_lossy(&read_at(&disk, cd_start, MIB as usize)).into_owned();
    assert!(
        meta.contains("e2e-wd"),
        "the hostname is not in the config drive"
    );
    // The agent reported the MBR disk identifier, which the conductor recorded.
    assert_eq!(
        done["driver_internal_info"]["root_uuid_or_disk_id"],
        mbr_disk_id(&want)
    );
    assert_eq!(
        lab.agent_commands(),
        [
            "deploy.get_deploy_steps",
            "deploy.execute_deploy_step",
            "standby.get_partition_uuids",
            "standby.power_off"
        ]
    );
    let calls = lab.ramdisk_calls();
    assert_eq!(
        calls.first().map(|c| (c.path.as_str(), c.status)),
        Some(("/v1/lookup", 200))
    );
    assert!(
        calls
            .iter()
            .any(|c| c.path == format!("/v1/heartbeat/{uuid}") && c.status == 202),
        "{calls:?}"
    );
    // Auto-TLS: the conductor talked https to the agent, pinned to its certificate.
    let log = m.output(1);
    assert!(
        log.contains("command API listening") && log.contains("tls=true"),
        "{log}"
    );
    assert!(
        log.contains("not a ramdisk: the agent process ends"),
        "standby.power_off ended it"
    );
    assert_eq!(
        m.boots(),
        2,
        "the conductor powered the machine off and on again"
    );
}

#[test]
fn process_agent_partitions_the_disk_and_reports_the_root_filesystem_uuid() {
    let test = "e2e process partition";
    if !support::require_peer(test, &["curl", "mkfs.ext4"]) {
        return;
    }
    let lab = DeployLab::start(Reach::Loopback, &[], |_, _, _| vec![]);
    let root_uuid = "6b1e8a5c-2f4d-4c1b-9a7e-3d2c1b0a9f8e";
    let image = support::agent_kit::ext4_image(lab.path(), 40 * MIB, root_uuid, "e2e-root");
    let disk = lab.path().join("disk.raw");
    sparse_file(&disk, 512 * MIB);
    let m = lab.process_machine("part", "52:54:00:e2:00:02", &disk, "");
    let dummy = lab.path().join("instance-kernel");
    std::fs::write(&dummy, b"kernel").unwrap();
    let uuid = lab.create_node(
        &m.mac,
        json!({"driver_info": m.driver_info(),
               "properties": {"capabilities": "boot_mode:bios,disk_label:msdos"},
               "instance_info": {"image_source": file_url(&image), "image_type": "partition",
                                 "image_checksum": format!("sha256:{}", support::agent_kit::sha256(&image)),
                                 "root_mb": 64, "swap_mb": 16,
                                 "kernel": file_url(&dummy), "ramdisk": file_url(&dummy)}}),
    );
    lab.provision(&uuid, json!({"target": "active"}));
    let done = wait_active_or_fail(&lab, &uuid, &m, DEPLOY_TIMEOUT);
    assert_eq!(
        done["driver_internal_info"]["root_uuid_or_disk_id"],
        root_uuid
    );
    // IPA's layout for a BIOS msdos partition image: swap, then root (bootable), 1 MiB aligned.
    let parts = mbr_partitions(&disk);
    assert_eq!(
        parts,
        [
            (0x82, MIB, 16 * MIB, false),
            (0x83, 17 * MIB, 64 * MIB, true)
        ]
    );
    let want = std::fs::read(&image).unwrap();
    assert!(
        read_at(&disk, 17 * MIB, want.len()) == want,
        "root partition != image"
    );
    assert_eq!(&read_at(&disk, MIB + 4086, 10), b"SWAPSPACE2");
}

/// A listener that accepts connections and never answers: a download that hangs.
fn stalled_server() -> (u16, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().take(4) {
            held.push(c);
        }
        std::thread::sleep(Duration::from_secs(600));
    });
    (port, h)
}

/// What a bad-input case must leave on the machine's disk.
#[derive(Debug, Clone, Copy, PartialEq)]
enum After {
    /// Refused before anything was written (no answer, too large, not raw): the old content
    /// is still there.
    Untouched,
    /// Bytes reached the disk before the failure: its metadata was erased.
    Scrubbed,
    /// The machine has no disk.
    NoDisk,
}

struct BadInput {
    name: &'static str,
    url: String,
    disk_format: &'static str,
    sha256: String,
    disk_size: u64,
    says: &'static str,
    after: After,
}

/// A disk file of `size` bytes that starts like an old install.
fn old_install(path: &Path, size: u64) {
    std::fs::write(path, [0xabu8; 4096]).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(size)
        .unwrap();
}

fn bad_inputs(lab: &DeployLab) -> Vec<BadInput> {
    let images = lab.http_root().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let raw = images.join("img.raw");
    support::write_pattern_file(&raw, (16 * MIB) as usize, 5);
    let qcow2 = images.join("img.qcow2");
    let (ok, _, err) = support::run(
        std::process::Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&qcow2),
    );
    assert!(ok, "qemu-img: {err}");
    let sha = support::agent_kit::sha256(&raw);
    let qsha = support::agent_kit::sha256(&qcow2);
    let url = |f: &str| format!("http://127.0.0.1:{}/images/{f}", lab.http_port);
    let closed = format!("http://127.0.0.1:{}/img.raw", support::free_tcp_port());
    let case = |name, url: String, disk_format, sha256: &str, disk_size, says, after| BadInput {
        name,
        url,
        disk_format,
        sha256: sha256.to_string(),
        disk_size,
        says,
        after,
    };
    vec![
        case(
            "checksum",
            url("img.raw"),
            "raw",
            &"0".repeat(64),
            64 * MIB,
            "ImageChecksumError",
            After::Scrubbed,
        ),
        case(
            "unreachable",
            closed,
            "raw",
            &sha,
            64 * MIB,
            "ImageDownloadError",
            After::Untouched,
        ),
        case(
            "full",
            url("img.raw"),
            "raw",
            &sha,
            8 * MIB,
            "does not fit on the disk",
            After::Untouched,
        ),
        case(
            "nodisk",
            url("img.raw"),
            "raw",
            &sha,
            0,
            "DeviceNotFound",
            After::NoDisk,
        ),
        case(
            "qcow2",
            url("img.qcow2"),
            "qcow2",
            &qsha,
            64 * MIB,
            "raw images only",
            After::Untouched,
        ),
        // Declared raw, but the bytes say qcow2: refused as soon as they arrive.
        case(
            "disguised",
            url("img.qcow2"),
            "raw",
            &qsha,
            64 * MIB,
            "is qcow2 (by its header",
            After::Untouched,
        ),
    ]
}

#[test]
fn process_agent_refuses_bad_input_with_ipa_errors_and_never_reports_a_partial_image() {
    let test = "e2e process bad input";
    if !support::require_peer(test, &["curl", "qemu-img"]) {
        return;
    }
    // The agent downloads from the origin, so the checksum it verifies is the one given.
    let lab = DeployLab::start(
        Reach::Loopback,
        &[("IRONBOOT_AGENT__IMAGE_DOWNLOAD_SOURCE", "direct")],
        |_, _, _| vec![],
    );
    let cases = bad_inputs(&lab);
    let mut machines = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let disk = lab.path().join(format!("{}.raw", c.name));
        if c.after != After::NoDisk {
            old_install(&disk, c.disk_size);
        }
        let m = lab.process_machine(
            c.name,
            &format!("52:54:00:e2:01:{i:02x}"),
            &disk,
            "ipa-image-download-connection-retries=1 ipa-image-download-connection-retry-interval=0",
        );
        let uuid = lab.create_node(
            &m.mac,
            json!({"driver_info": m.driver_info(),
                   "instance_info": {"image_source": c.url, "image_disk_format": c.disk_format,
                                     "image_checksum": format!("sha256:{}", c.sha256)}}),
        );
        lab.provision(&uuid, json!({"target": "active"}));
        machines.push((uuid, m, disk));
    }
    for ((uuid, m, disk), c) in machines.iter().zip(&cases) {
        let done = lab.wait_state(uuid, &["active", "deploy failed"], DEPLOY_TIMEOUT);
        let err = done["last_error"].as_str().unwrap_or_default();
        assert_eq!(
            done["provision_state"], "deploy failed",
            "{}: {done}",
            c.name
        );
        assert!(
            err.contains("write_image failed on the agent") && err.contains(c.says),
            "{}: last_error {err:?}\n{}",
            c.name,
            support::ipa::tail(&m.all_output(), 30)
        );
        let start = (c.after != After::NoDisk).then(|| read_at(disk, 0, 4096));
        match c.after {
            After::Scrubbed => assert!(
                start.unwrap().iter().all(|b| *b == 0),
                "{}: not scrubbed",
                c.name
            ),
            After::Untouched => assert!(
                start.unwrap().iter().all(|b| *b == 0xab),
                "{}: touched",
                c.name
            ),
            After::NoDisk => {}
        }
    }
    // A checksum mismatch is retried as IPA does (ipa-image-download-connection-retries=1).
    let checksum = &machines[0].1;
    assert_eq!(
        checksum
            .output(1)
            .matches("downloading the image onto the disk")
            .count(),
        2
    );
}

#[test]
fn process_agent_answers_a_wrong_or_missing_token_with_ipas_401() {
    let test = "e2e process tokens";
    if !support::require_peer(test, &["curl"]) {
        return;
    }
    let lab = DeployLab::start(
        Reach::Loopback,
        &[("IRONBOOT_AGENT__IMAGE_DOWNLOAD_SOURCE", "direct")],
        |_, _, _| vec![],
    );
    let sha = "0".repeat(64);
    // The image download hangs, so the agent stays up, busy with write_image.
    let (stall, _h) = stalled_server();
    let disk = lab.path().join("token.raw");
    sparse_file(&disk, 64 * MIB);
    let m = lab.process_machine("token", "52:54:00:e2:01:10", &disk, "");
    let uuid = lab.create_node(
        &m.mac,
        json!({"driver_info": m.driver_info(),
               "instance_info": {"image_source": format!("http://127.0.0.1:{stall}/img.raw"),
                                 "image_disk_format": "raw", "image_checksum": format!("sha256:{sha}")}}),
    );
    lab.provision(&uuid, json!({"target": "active"}));
    let deadline = Instant::now() + Duration::from_secs(60);
    // write_image was sent (and hangs on the download): the agent is up and busy.
    while lab.node(&uuid)["driver_internal_info"]["deploy_step_index"].is_null() {
        assert!(
            Instant::now() < deadline,
            "write_image never started:\n{}",
            m.all_output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let agent = format!("https://127.0.0.1:{}", m.agent_port);
    for query in ["?agent_token=wrong", ""] {
        for (method, body) in [
            ("GET", None),
            ("POST", Some(r#"{"name":"standby.sync","params":{}}"#)),
        ] {
            let mut c = std::process::Command::new("curl");
            c.args(["-sSk", "-m", "10", "-X", method, "-w", "\n%{http_code}"]);
            if let Some(b) = body {
                c.args(["-H", "Content-Type: application/json", "--data", b]);
            }
            let (ok, out, err) = support::run(c.arg(format!("{agent}/v1/commands/{query}")));
            assert!(ok, "curl: {err}");
            let (body, code) = out.rsplit_once('\n').unwrap();
            assert_eq!(code, "401", "{method} {query}: {body}");
            assert_eq!(
                serde_json::from_str::<Value>(body).unwrap(),
                json!({"faultcode": "Client", "faultstring": "401 Unauthorized: Token invalid."})
            );
        }
    }
    // Plain http to the TLS port is not served.
    let (ok, _, _) = support::run(
        std::process::Command::new("curl")
            .args(["-s", "-m", "5"])
            .arg(format!("http://127.0.0.1:{}/v1/status", m.agent_port)),
    );
    assert!(!ok, "plain http answered on the agent's TLS port");
    lab.provision(&uuid, json!({"target": "abort"}));
    lab.wait_state(&uuid, &["deploy failed"], Duration::from_secs(30));
}

// ---------------------------------------------------------------------------------------
// QEMU machines: real firmware, the real ramdisk, the instance boots.

const QEMU_DEPLOY_TIMEOUT: Duration = Duration::from_secs(300);
const INSTANCE_TIMEOUT: Duration = Duration::from_secs(150);

/// The deploy kernel and ramdisk and the kernel parameters a QEMU machine's agent needs: the
/// conductor reaches the agent through the forwarded port, which it must advertise.
fn deploy_driver_info(m: &Machine, rd: &support::agent_kit::AgentRamdisk) -> Value {
    let mut info = m.driver_info();
    info["deploy_kernel"] = json!(file_url(&rd.kernel));
    info["deploy_ramdisk"] = json!(file_url(&rd.initramfs));
    info["kernel_append_params"] = json!(format!(
        "%default% console=ttyS0 panic=-1 ipa-advertise-host=127.0.0.1 ipa-advertise-port={} \
         ipa-lookup-interval=1 ipa-image-download-connection-retries=1 \
         ipa-image-download-connection-retry-interval=1",
        m.agent_port
    ));
    info
}

/// Lines of `text` after `prefix` (console noise before it ignored).
fn lines_with<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| {
            l.find(prefix)
                .map(|at| l[at + prefix.len()..].trim_end_matches('\r'))
        })
        .collect()
}

/// A random tag, so a test only accepts what this run wrote.
fn tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// Whether the agent's log in a boot shows the step the conductor ran.
fn assert_agent_ran(m: &Machine, boot: u32, commands: &[&str]) {
    let out = m.output(boot);
    for c in commands {
        assert!(
            out.contains(&format!("command=\"{c}\"")),
            "boot {boot} of {}: the agent never ran {c}; console tail:\n{}",
            m.name,
            support::ipa::tail(&out, 40)
        );
    }
}

/// The test kit and the agent ramdisk, or `None` when QEMU or apt are missing (skip).
fn qemu_kits(test: &str) -> Option<(support::guest::GuestKit, support::agent_kit::AgentRamdisk)> {
    if !support::require_peer(test, &["curl", "qemu-system-x86_64"]) {
        return None;
    }
    let kit = support::guest::guest_kit(test)?;
    let rd = support::agent_kit::agent_ramdisk(test)?;
    Some((kit, rd))
}

/// The whole-disk image on the disk byte for byte (but for the partition entry the config
/// drive added) and the config drive at the end; returns the config drive's partition.
fn assert_whole_disk_written(disk: &Path, image: &Path, disk_size: u64) -> (u64, u64) {
    let want = std::fs::read(image).unwrap();
    let got = read_at(disk, 0, want.len());
    assert!(
        got[..446] == want[..446] && got[510..] == want[510..],
        "the image differs on the disk"
    );
    let (_, start, size, _) = *mbr_partitions(disk).last().unwrap();
    assert_eq!(start + size, disk_size, "config drive at the end");
    assert_eq!(iso_label(disk, start).as_deref(), Some("config-2"));
    (start, size)
}

/// Boot `boot` came from the disk (iPXE's sanboot, then isolinux), ran this run's image and
/// found its config drive.
fn assert_instance_booted_from_disk(m: &Machine, boot: u32, tag: &str) -> Duration {
    let booted = m.wait_output(boot, support::agent_kit::INSTANCE_MARKER, INSTANCE_TIMEOUT);
    m.wait_output(boot, "IRONBOOT-INSTANCE-DONE", INSTANCE_TIMEOUT);
    let console = m.output(boot);
    assert!(
        console.contains("Booting from SAN device 0x80") && console.contains("ISOLINUX"),
        "not booted from the disk:\n{}",
        support::ipa::tail(&console, 40)
    );
    let cmdline = lines_with(&console, "IRONBOOT-INSTANCE-CMDLINE: ").join(" ");
    assert!(
        cmdline.contains(&format!("ironboot-instance={tag}")),
        "not this run's image: {cmdline}"
    );
    assert!(
        !cmdline.contains("ipa-api-url"),
        "the deploy ramdisk booted again: {cmdline}"
    );
    let drive = lines_with(&console, "IRONBOOT-INSTANCE-CONFIGDRIVE: ").join(" ");
    assert!(
        drive.starts_with("/dev/vda") && drive.contains(&format!("e2e-{tag}")),
        "config drive: {drive:?}"
    );
    booted
}

#[test]
fn qemu_ipxe_bios_whole_disk_image_boots_from_its_disk_and_undeploy_erases_it() {
    let test = "e2e QEMU iPXE BIOS whole-disk";
    let Some((kit, rd)) = qemu_kits(test) else {
        return;
    };
    let lab = DeployLab::start(
        Reach::Guest,
        &[
            // The deployed node's iPXE script hands the boot to its disk (sanboot 0x80).
            ("IRONBOOT_PXE__ENABLE_NETBOOT_FALLBACK", "true"),
            ("IRONBOOT_AGENT__ERASE_METADATA_ON_UNDEPLOY", "true"),
        ],
        |_, _, _| vec![],
    );
    let tag = tag();
    let append = format!("console=ttyS0 panic=-1 ironboot-instance={tag}");
    let image = support::agent_kit::whole_disk_image(&kit, lab.path(), &append, 64 * MIB);
    let disk = lab.path().join("vda.raw");
    let disk_size = 4 << 30;
    sparse_file(&disk, disk_size);
    let _slot = support::deploy_lab::guest_slot();
    let bootfile = format!("{}/boot.ipxe", lab.http_url_for_machines());
    let m = lab.qemu_machine(
        "bios",
        "52:54:00:e2:0a:01",
        &[],
        &bootfile,
        &[(&disk, "E2E-WD")],
    );
    let uuid = lab.create_node(
        &m.mac,
        json!({"name": "e2e-bios", "boot_interface": "ipxe",
               "driver_info": deploy_driver_info(&m, &rd),
               "properties": {"capabilities": "boot_mode:bios"},
               "instance_info": {"image_source": file_url(&image),
                                 "image_checksum": format!("sha256:{}", support::agent_kit::sha256(&image))}}),
    );
    let started = Instant::now();
    let drive = json!({"meta_data": {"hostname": format!("e2e-{tag}")}});
    lab.provision(&uuid, json!({"target": "active", "configdrive": drive}));
    let done = wait_active_or_fail(&lab, &uuid, &m, QEMU_DEPLOY_TIMEOUT);
    let to_active = started.elapsed();
    let deploy = [
        "deploy.get_deploy_steps",
        "deploy.execute_deploy_step",
        "standby.power_off",
    ];
    assert_agent_ran(&m, 1, &deploy);
    assert!(
        m.output(1).contains("DHCP lease"),
        "the agent's init got no lease"
    );
    let cd = assert_whole_disk_written(&disk, &image, disk_size);
    let want = std::fs::read(&image).unwrap();
    assert_eq!(
        done["driver_internal_info"]["root_uuid_or_disk_id"],
        mbr_disk_id(&want)
    );

    // The conductor powered the machine on again; iPXE handed the boot to the disk.
    let booted = assert_instance_booted_from_disk(&m, 2, &tag);
    eprintln!(
        "{test}: deploy (power on to active) {:.1} s; instance marker {:.1} s after active",
        to_active.as_secs_f64(),
        booted.as_secs_f64()
    );

    // Undeploy: the agent boots once more and erases the disk's metadata.
    let started = Instant::now();
    lab.provision(&uuid, json!({"target": "deleted"}));
    lab.wait_state(&uuid, &["available"], QEMU_DEPLOY_TIMEOUT);
    assert_eq!(m.boots(), 3, "deploy, instance, cleaning");
    assert_agent_ran(
        &m,
        3,
        &["clean.get_clean_steps", "clean.execute_clean_step"],
    );
    // Everything the conductor sent, in order, across the deploy and the cleaning.
    assert_eq!(
        lab.agent_commands(),
        [
            "deploy.get_deploy_steps",
            "deploy.execute_deploy_step",
            "standby.get_partition_uuids",
            "standby.power_off",
            "clean.get_clean_steps",
            "clean.execute_clean_step"
        ]
    );
    let zero = |offset: u64| read_at(&disk, offset, MIB as usize).iter().all(|b| *b == 0);
    assert!(zero(0), "MBR and ISO left");
    assert!(zero(disk_size - MIB), "end of disk left");
    assert_eq!(iso_label(&disk, cd.0), None, "config drive left");
    eprintln!(
        "{test}: undeploy with metadata erase {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// `sfdisk --json` of a disk image: (type, start, size) in bytes, and the label.
fn sfdisk(disk: &Path) -> (String, Vec<(String, u64, u64)>) {
    let (ok, out, err) = support::run(std::process::Command::new("sfdisk").arg("--json").arg(disk));
    assert!(ok, "sfdisk: {err}");
    let t: Value = serde_json::from_str(&out).unwrap();
    let table = &t["partitiontable"];
    let parts = table["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["type"].as_str().unwrap().to_ascii_uppercase(),
                p["start"].as_u64().unwrap() * 512,
                p["size"].as_u64().unwrap() * 512,
            )
        })
        .collect();
    (table["label"].as_str().unwrap().to_string(), parts)
}

/// A lab whose TFTP root serves a GRUB EFI image with its prefix on that TFTP server.
fn grub_tftp_lab(test: &str) -> Option<DeployLab> {
    if !support::require_peer(test, &["mkfs.ext4", "sfdisk"])
        || !support::require_condition(
            test,
            Path::new(support::guest::OVMF).is_file(),
            "OVMF is missing (Debian package ovmf)",
        )
    {
        return None;
    }
    let mut grub_ok = true;
    let lab = DeployLab::start(Reach::Guest, &[], |dir, _http, tftp| {
        let prefix = format!("(tftp,10.0.2.2:{tftp})/grub");
        match support::netboot::grub_efi_image(test, dir, &prefix) {
            Some(image) => vec![(
                "IRONBOOT_PXE__LOADER_FILE_PATHS".into(),
                format!("{{ \"grubx64.efi\" = \"{}\" }}", image.display()),
            )],
            None => {
                grub_ok = false;
                vec![]
            }
        }
    });
    grub_ok.then_some(lab)
}

/// IPA's UEFI partition layout on `target` (ESP, then root holding `image`), nothing on
/// `decoy`.
fn assert_partition_image_written(target: &Path, decoy: &Path, image: &Path) {
    assert!(
        read_at(decoy, 0, MIB as usize).iter().all(|b| *b == 0),
        "the decoy disk was written"
    );
    let (label, parts) = sfdisk(target);
    assert_eq!(label, "gpt");
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!(
        parts[0].0, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        "ESP first"
    );
    assert_eq!((parts[0].1, parts[0].2), (MIB, 550 * MIB));
    assert_eq!(parts[1].2, 64 * MIB);
    let want = std::fs::read(image).unwrap();
    assert!(
        read_at(target, parts[1].1, want.len()) == want,
        "root partition != image"
    );
}

#[test]
fn qemu_uefi_grub_tftp_partition_image_boots_root_uuid_over_the_network() {
    let test = "e2e QEMU UEFI GRUB partition";
    let Some((kit, rd)) = qemu_kits(test) else {
        return;
    };
    let Some(lab) = grub_tftp_lab(test) else {
        return;
    };
    let root_uuid = uuid::Uuid::new_v4().to_string();
    let image = support::agent_kit::ext4_image(lab.path(), 48 * MIB, &root_uuid, "e2e-root");
    let instance_initrd = support::agent_kit::instance_initrd(&kit, lab.path());
    // Two disks: root device hints must send the image to the second.
    let decoy = lab.path().join("vda.raw");
    let target = lab.path().join("vdb.raw");
    sparse_file(&decoy, 4 << 30);
    sparse_file(&target, 4 << 30);
    let _slot = support::deploy_lab::guest_slot();
    let bootfile = format!("tftp://10.0.2.2:{}/grubx64.efi", lab.tftp_port);
    let disks: [(&Path, &str); 2] = [(&decoy, "E2E-DECOY"), (&target, "E2E-TARGET")];
    let m = lab.qemu_machine(
        "uefi",
        "52:54:00:e2:0b:01",
        &["-bios", support::guest::OVMF],
        &bootfile,
        &disks,
    );
    let uuid = lab.create_node(
        &m.mac,
        json!({"name": "e2e-uefi", "boot_interface": "pxe",
               "driver_info": deploy_driver_info(&m, &rd),
               "properties": {"capabilities": "boot_mode:uefi",
                              "root_device": {"serial": "E2E-TARGET"}},
               "instance_info": {"image_source": file_url(&image), "image_type": "partition",
                                 "image_checksum": format!("sha256:{}", support::agent_kit::sha256(&image)),
                                 "root_mb": 64, "kernel": file_url(&kit.kernel),
                                 "ramdisk": file_url(&instance_initrd)}}),
    );
    let started = Instant::now();
    lab.provision(&uuid, json!({"target": "active"}));
    let done = wait_active_or_fail(&lab, &uuid, &m, QEMU_DEPLOY_TIMEOUT);
    let to_active = started.elapsed();
    assert_eq!(
        done["driver_internal_info"]["root_uuid_or_disk_id"],
        root_uuid.as_str()
    );
    assert_partition_image_written(&target, &decoy, &image);

    // The node's GRUB config now boots the instance kernel with the reported root UUID.
    let config = std::fs::read_to_string(lab.tftp_root().join(format!("{}.conf", m.mac))).unwrap();
    assert!(config.contains("set default=boot_partition"), "{config}");
    assert!(
        config.contains(&format!("root=UUID={root_uuid} ro")),
        "{config}"
    );

    let booted = m.wait_output(2, support::agent_kit::INSTANCE_MARKER, INSTANCE_TIMEOUT);
    m.wait_output(2, "IRONBOOT-INSTANCE-DONE", INSTANCE_TIMEOUT);
    let console = m.output(2);
    let cmdline = lines_with(&console, "IRONBOOT-INSTANCE-CMDLINE: ").join(" ");
    assert!(
        cmdline.contains(&format!("root=UUID={root_uuid}")),
        "{cmdline}"
    );
    assert!(!cmdline.contains("ipa-api-url"), "{cmdline}");
    // The root filesystem the agent wrote, found by its UUID on the hinted disk.
    assert_eq!(
        lines_with(&console, "IRONBOOT-INSTANCE-ROOT: "),
        ["/dev/vdb2 e2e-root"]
    );
    eprintln!(
        "{test}: deploy (power on to active) {:.1} s; instance marker {:.1} s after active",
        to_active.as_secs_f64(),
        booted.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------
// Parity with the real ironic-python-agent.

/// The driver's side of a deploy as ironboot logged it: every command it sent to the agent
/// and the status it got back, in order (text or JSON log lines).
fn driver_sequence(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter(|l| l.contains("agent command sent"))
        .filter_map(|l| {
            if let Ok(v) = serde_json::from_str::<Value>(l) {
                return Some((
                    v["command"].as_str()?.to_string(),
                    v["status"].as_str()?.to_string(),
                ));
            }
            let field = |name: &str| {
                let at = l.find(&format!(" {name}="))? + name.len() + 2;
                let rest = &l[at..];
                let end = rest.find(' ').unwrap_or(rest.len());
                Some(rest[..end].trim_matches('"').to_string())
            };
            Some((field("command")?, field("status")?))
        })
        .collect()
}

/// For each lookup ironboot answered: whether it handed out the real token (`first`).
fn lookups(log: &str) -> Vec<bool> {
    log.lines()
        .filter(|l| l.contains("agent lookup"))
        .filter_map(|l| match serde_json::from_str::<Value>(l) {
            Ok(v) => v["first"].as_bool(),
            Err(_) => Some(l.contains("first=true")),
        })
        .collect()
}

#[test]
fn parity_the_driver_sees_the_same_deploy_from_ipa_13_and_from_ironboot_agent() {
    let test = "e2e parity with IPA 13";
    // The real agent, sandboxed with a loop device (root, namespaces, its venv).
    let Some(ipa) = support::ipa::Lab::start(test, support::ipa::LabOptions::default()) else {
        return;
    };
    let images = support::ipa::TestImages::make();
    let wd = images.path("wd.raw");
    let checksum = format!("sha256:{}", support::agent_kit::sha256(&wd));
    let url = ipa.serve_image(&wd, &format!("{}-parity.raw", std::process::id()));
    let ipa_uuid = ipa.create_node(
        "parity-ipa",
        json!({"image_source": url, "image_disk_format": "raw", "image_checksum": checksum}),
        None,
    );
    let started = Instant::now();
    ipa.provision(&ipa_uuid, "active");
    let ipa_done = ipa.wait_state(
        &ipa_uuid,
        &["active", "deploy failed"],
        Duration::from_secs(240),
    );
    let ipa_time = started.elapsed();
    let ipa_log = ipa.ironboot_log();
    drop(ipa);

    // ironboot-agent, the same image through the same conductor code.
    let lab = DeployLab::start(Reach::Loopback, &[], |_, _, _| vec![]);
    let disk = lab.path().join("disk.raw");
    sparse_file(&disk, 2 << 30);
    let m = lab.process_machine("parity", "52:54:00:e2:0c:01", &disk, "");
    let uuid = lab.create_node(
        &m.mac,
        json!({"driver_info": m.driver_info(), "properties": {"capabilities": "boot_mode:bios"},
               "instance_info": {"image_source": file_url(&wd), "image_disk_format": "raw",
                                 "image_checksum": checksum}}),
    );
    let started = Instant::now();
    lab.provision(&uuid, json!({"target": "active"}));
    let done = wait_active_or_fail(&lab, &uuid, &m, DEPLOY_TIMEOUT);
    eprintln!(
        "{test}: 48 MiB raw whole-disk deploy, sandboxed processes: IPA {:.1} s, ironboot-agent {:.1} s",
        ipa_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let log = lab.server.log();

    let expected: Vec<(String, String)> = [
        ("deploy.get_deploy_steps", "Succeeded"),
        ("deploy.execute_deploy_step", "Running"),
        ("standby.get_partition_uuids", "Succeeded"),
        ("standby.power_off", "Running"),
    ]
    .iter()
    .map(|(c, s)| (c.to_string(), s.to_string()))
    .collect();
    assert_eq!(
        driver_sequence(&ipa_log),
        expected,
        "IPA (last_error {})",
        ipa_done["last_error"]
    );
    assert_eq!(driver_sequence(&log), expected, "ironboot-agent");
    // Both looked up once for the token; IPA also refreshes its node by a second lookup
    // (answered with the masked token), ironboot-agent does not need to.
    let (ipa_lookups, our_lookups) = (lookups(&ipa_log), lookups(&log));
    assert_eq!(ipa_lookups.first(), Some(&true), "{ipa_lookups:?}");
    assert_eq!(our_lookups, [true]);
    assert!(
        ipa_lookups[1..].iter().all(|first| !first),
        "{ipa_lookups:?}"
    );
    // What the driver read from get_partition_uuids, and where the deploys ended.
    let image = std::fs::read(&wd).unwrap();
    for (who, node) in [("IPA", &ipa_done), ("ironboot-agent", &done)] {
        assert_eq!(
            node["provision_state"], "active",
            "{who}: {}",
            node["last_error"]
        );
        assert_eq!(node["power_state"], "power on", "{who}");
        assert_eq!(
            node["driver_internal_info"]["root_uuid_or_disk_id"],
            mbr_disk_id(&image),
            "{who}"
        );
    }
    assert!(read_at(&disk, 0, image.len()) == image);
}
