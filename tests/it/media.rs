//! Virtual media, checked by the tools and firmware that consume them: dosfstools and mtools
//! read the floppy, xorriso and isoinfo read the ISO, our own El Torito parser checks the boot
//! catalog and isolinux's boot info table byte for byte, and QEMU boots the ISO under SeaBIOS
//! and OVMF (as a CD and, hybrid, as a disk) while a Linux guest mounts the floppy and ISOs.
//! All QEMU boots of the media builders live in this binary.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ironboot::media::{
    BootSpec, BuildOptions, FloppySpec, IsoSpec, MediaBuilder, MediaError, MediaFile, MediaSettings,
};
use sha2::{Digest, Sha256};
use support::guest::{GuestKit, MARKER, OVMF, guest_kit, run_qemu};
use support::{require_condition, require_peer, run};

const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const PARAMS: &[(&str, &str)] = &[
    ("ipa-api-url", "http://10.0.2.2:6385"),
    ("ipa-agent-token", "tok3n-_value"),
    ("boot_method", "vmedia"),
    ("BOOTIF", "52:54:00:12:34:56"),
];

fn params() -> Vec<(String, String)> {
    PARAMS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn builder() -> MediaBuilder {
    MediaBuilder::new(MediaSettings::default()).unwrap()
}

fn ironboot(args: &[&str]) -> (bool, String, String) {
    run(Command::new(support::ironboot_bin()).args(args))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The Debian boot loader files the BIOS entry and the ESP need.
fn boot_loaders(test: &str) -> bool {
    let s = MediaSettings::default();
    let present = [&s.isolinux_bin, &s.ldlinux_c32, &s.isohybrid_mbr]
        .iter()
        .all(|p| p.is_file())
        && s.grub_modules_dir.join("linux.mod").is_file()
        && s.grub_mkimage.is_file();
    require_condition(
        test,
        present,
        "isolinux, syslinux-common, grub-common and grub-efi-amd64-bin must be installed",
    )
}

/// A boot spec over small stand-in kernel and ramdisk files (for tests that boot nothing).
fn fake_boot(dir: &Path, bios: bool, uefi: bool, hybrid: bool) -> BootSpec {
    let kernel = dir.join("vmlinuz-fake");
    let ramdisk = dir.join("initrd-fake");
    if !kernel.exists() {
        support::write_pattern_file(&kernel, 3 * 1024 * 1024 + 17, 1);
        support::write_pattern_file(&ramdisk, 5 * 1024 * 1024 + 3, 2);
    }
    BootSpec {
        kernel,
        ramdisk,
        cmdline: "console=ttyS0 ipa-api-url=http://10.0.2.2:6385 boot_method=vmedia".into(),
        bios,
        uefi,
        hybrid,
    }
}

fn build_iso(spec: &IsoSpec, out: &Path) {
    builder()
        .build_iso(spec, out, BuildOptions::default())
        .unwrap_or_else(|e| panic!("build {}: {e}", out.display()));
}

// ---------------------------------------------------------------------------------------------
// Floppy

#[test]
fn floppy_is_fsck_clean_and_mtools_read_it_back() {
    let test = "floppy_is_fsck_clean_and_mtools_read_it_back";
    if !require_peer(test, &["fsck.fat", "mdir", "mtype", "mlabel", "minfo"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let extra = dir.path().join("network_data.json");
    std::fs::write(&extra, br#"{"links": []}"#).unwrap();
    for size in ["1440", "100"] {
        let img = dir.path().join(format!("floppy-{size}.img"));
        let mut args = vec![
            "media",
            "floppy",
            "--size-kib",
            size,
            "-o",
            img.to_str().unwrap(),
        ];
        let param_args: Vec<String> = PARAMS.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for p in &param_args {
            args.extend(["--param", p]);
        }
        let file_arg = format!("{}:openstack/latest/network_data.json", extra.display());
        args.extend(["--file", &file_arg]);
        let (ok, out, err) = ironboot(&args);
        assert!(ok, "{out}{err}");
        assert_eq!(read(&img).len(), size.parse::<usize>().unwrap() * 1024);

        let (ok, out, err) = run(Command::new("fsck.fat").arg("-n").arg("-v").arg(&img));
        assert!(ok, "fsck.fat -n {size} KiB:\n{out}{err}");
        let i = img.to_str().unwrap();
        let (ok, listing, err) = run(Command::new("mdir").args(["-i", i, "::/"]));
        assert!(ok, "{err}");
        // mdir shows the long name next to the 8.3 alias only when the LFN entry is valid.
        assert!(listing.contains("parameters.txt"), "{listing}");
        assert!(listing.contains("openstack"), "{listing}");
        let (ok, body, err) = run(Command::new("mtype").args(["-i", i, "::/parameters.txt"]));
        assert!(ok, "{err}");
        let expected: Vec<String> = PARAMS.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(body, expected.join("\n"));
        let (ok, nested, _) =
            run(Command::new("mtype").args(["-i", i, "::/openstack/latest/network_data.json"]));
        assert!(ok);
        assert_eq!(nested, r#"{"links": []}"#);
        let (ok, label, _) = run(Command::new("mlabel").args(["-s", "-i", i, "::"]));
        assert!(ok);
        assert_eq!(label.trim(), "Volume label is ir-vfd-dev");
        let (ok, info, _) = run(Command::new("minfo").args(["-i", i, "::"]));
        assert!(ok);
        assert!(info.contains("disk type=\"FAT12"), "{info}");
        if size == "1440" {
            assert!(info.contains("media descriptor byte: 0xf0"), "{info}");
            assert!(info.contains("sectors per track: 18"), "{info}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ISO structure

#[test]
fn boot_iso_structure_as_xorriso_and_isoinfo_see_it() {
    let test = "boot_iso_structure_as_xorriso_and_isoinfo_see_it";
    if !require_peer(test, &["xorriso", "isoinfo", "fsck.fat", "mtype"]) || !boot_loaders(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("boot.iso");
    let spec = IsoSpec {
        boot: Some(fake_boot(dir.path(), true, true, false)),
        files: vec![MediaFile::bytes(
            "etc/ironic-python-agent.d/A Long Mixed Case Name.conf",
            "[DEFAULT]\n",
        )],
        publisher_id: Some("5d6a7e3c-1b2a-4c5d-9e8f-0123456789ab".into()),
        label: None,
    };
    build_iso(&spec, &iso);
    let i = iso.to_str().unwrap();

    let (ok, report, err) = run(Command::new("xorriso").args([
        "-indev",
        i,
        "-report_el_torito",
        "plain",
        "-report_system_area",
        "plain",
    ]));
    assert!(ok, "{err}");
    // xorriso prints part of its report (the volume id) on stderr.
    let report = format!("{report}\n{err}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(report.contains("Volume id : 'VMEDIA_BOOT_ISO'"), "{report}");
    assert!(
        report.contains("El Torito cat path : /isolinux/boot.cat"),
        "{report}"
    );
    assert!(
        report.contains("El Torito boot img : 1 BIOS y none 0x0000 0x00 4"),
        "{report}"
    );
    assert!(
        report.contains("El Torito boot img : 2 UEFI y none 0x0000 0x00"),
        "{report}"
    );
    assert!(
        report.contains("El Torito img path : 1 /isolinux/isolinux.bin"),
        "{report}"
    );
    assert!(
        report.contains("El Torito img opts : 1 boot-info-table"),
        "{report}"
    );
    assert!(
        report.contains("El Torito img path : 2 /boot/grub/efiboot.img"),
        "{report}"
    );

    let (ok, pvd, _) = run(Command::new("isoinfo").args(["-d", "-i", i]));
    assert!(ok);
    assert!(pvd.contains("Volume id: VMEDIA_BOOT_ISO"), "{pvd}");
    assert!(
        pvd.contains("Publisher id: 5d6a7e3c-1b2a-4c5d-9e8f-0123456789ab"),
        "{pvd}"
    );
    assert!(pvd.contains("Joliet with UCS level 3 found"), "{pvd}");
    assert!(
        pvd.contains("Rock Ridge signatures version 1 found"),
        "{pvd}"
    );
    assert!(pvd.contains("El Torito VD version 1 found"), "{pvd}");

    let expected = [
        "/vmlinuz",
        "/initrd",
        "/isolinux/isolinux.bin",
        "/isolinux/ldlinux.c32",
        "/isolinux/isolinux.cfg",
        "/isolinux/boot.cat",
        "/boot/grub/efiboot.img",
        "/EFI/BOOT/grub.cfg",
        "/etc/ironic-python-agent.d/A Long Mixed Case Name.conf",
    ];
    for tree in ["-R", "-J"] {
        let (ok, list, _) = run(Command::new("isoinfo").args([tree, "-f", "-i", i]));
        assert!(ok);
        let names: Vec<&str> = list.lines().collect();
        for path in expected {
            assert!(
                names.contains(&path),
                "isoinfo {tree} -f lacks {path}: {names:?}"
            );
        }
    }

    let extract = |path: &str| {
        let out = Command::new("isoinfo")
            .args(["-R", "-i", i, "-x", path])
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    };
    let boot = spec.boot.as_ref().unwrap();
    assert_eq!(extract("/vmlinuz"), read(&boot.kernel));
    assert_eq!(extract("/initrd"), read(&boot.ramdisk));
    let isolinux_cfg = String::from_utf8(extract("/isolinux/isolinux.cfg")).unwrap();
    let expected_line = format!(
        "{} ir_pub_id=5d6a7e3c-1b2a-4c5d-9e8f-0123456789ab",
        boot.cmdline
    );
    assert!(
        isolinux_cfg.contains(&format!("APPEND {expected_line}\n")),
        "{isolinux_cfg}"
    );
    let grub_cfg = String::from_utf8(extract("/EFI/BOOT/grub.cfg")).unwrap();
    assert!(
        grub_cfg.contains(&format!("linux /vmlinuz {expected_line}\n")),
        "{grub_cfg}"
    );

    // The ESP: fsck-clean FAT with GRUB and the same grub.cfg as the ISO tree.
    let esp = dir.path().join("efiboot.img");
    std::fs::write(&esp, extract("/boot/grub/efiboot.img")).unwrap();
    let (ok, out, err) = run(Command::new("fsck.fat").arg("-n").arg(&esp));
    assert!(ok, "fsck.fat -n efiboot.img:\n{out}{err}");
    let e = esp.to_str().unwrap();
    let (ok, esp_cfg, _) = run(Command::new("mtype").args(["-i", e, "::/EFI/BOOT/grub.cfg"]));
    assert!(ok);
    assert_eq!(esp_cfg, grub_cfg);
    let efi = Command::new("mtype")
        .args(["-i", e, "::/EFI/BOOT/BOOTX64.EFI"])
        .output()
        .unwrap();
    assert!(efi.status.success());
    assert_eq!(&efi.stdout[..2], b"MZ", "BOOTX64.EFI is a PE image");
}

#[test]
fn hybrid_and_data_only_isos_as_xorriso_sees_them() {
    let test = "hybrid_and_data_only_isos_as_xorriso_sees_them";
    if !require_peer(test, &["xorriso", "isoinfo"]) || !boot_loaders(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let report = |iso: &Path| {
        let (ok, out, err) = run(Command::new("xorriso").args([
            "-indev",
            iso.to_str().unwrap(),
            "-report_el_torito",
            "plain",
            "-report_system_area",
            "plain",
        ]));
        assert!(ok, "{err}");
        format!("{out}\n{err}")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };

    let hybrid = dir.path().join("hybrid.iso");
    build_iso(
        &IsoSpec {
            boot: Some(fake_boot(dir.path(), true, true, true)),
            ..Default::default()
        },
        &hybrid,
    );
    let r = report(&hybrid);
    assert!(
        r.contains("System area summary: MBR isohybrid cyl-align-off GPT"),
        "{r}"
    );
    assert!(
        r.contains("GPT partname local : 2 EFI System Partition"),
        "{r}"
    );
    assert!(
        r.contains("El Torito boot img : 1 BIOS y none 0x0000 0x00 4"),
        "{r}"
    );
    assert!(r.contains("El Torito boot img : 2 UEFI y none"), "{r}");
    let mbr = read(&hybrid);
    assert_eq!(&mbr[510..512], &[0x55, 0xAA]);
    // isohdpfx's boot code, up to the LBA hadris patches at 432.
    let isohdpfx = read(&MediaSettings::default().isohybrid_mbr);
    assert_eq!(&mbr[..432], &isohdpfx[..432]);

    let bios_hybrid = dir.path().join("bios-hybrid.iso");
    build_iso(
        &IsoSpec {
            boot: Some(fake_boot(dir.path(), true, false, true)),
            ..Default::default()
        },
        &bios_hybrid,
    );
    let r = report(&bios_hybrid);
    assert!(r.contains("System area summary: MBR isohybrid"), "{r}");
    assert!(!r.contains("UEFI"), "{r}");

    // UEFI only: the EFI entry is the default one; hybrid adds a GPT without MBR boot code.
    for hybrid in [false, true] {
        let iso = dir.path().join(format!("uefi-{hybrid}.iso"));
        build_iso(
            &IsoSpec {
                boot: Some(fake_boot(dir.path(), false, true, hybrid)),
                ..Default::default()
            },
            &iso,
        );
        let r = report(&iso);
        assert!(r.contains("El Torito boot img : 1 UEFI y none"), "{r}");
        assert!(!r.contains("BIOS"), "{r}");
        if hybrid {
            assert!(
                r.contains("GPT partname local : 2 EFI System Partition"),
                "{r}"
            );
        } else {
            assert!(r.contains("El Torito cat path : /boot.catalog"), "{r}");
            assert!(
                r.contains("El Torito img path : 1 /boot/grub/efiboot.img"),
                "{r}"
            );
        }
    }

    // A config drive: no boot record at all, label config-2.
    let cd = dir.path().join("configdrive.iso");
    build_iso(
        &IsoSpec {
            files: vec![
                MediaFile::bytes("openstack/latest/meta_data.json", r#"{"uuid": "n1"}"#),
                MediaFile::bytes("openstack/latest/user_data", "#cloud-config\n"),
                MediaFile::bytes("openstack/latest/network_data.json", "{}"),
            ],
            ..Default::default()
        },
        &cd,
    );
    let (ok, pvd, _) = run(Command::new("isoinfo").args(["-d", "-i", cd.to_str().unwrap()]));
    assert!(ok);
    assert!(pvd.contains("Volume id: config-2"), "{pvd}");
    assert!(!pvd.contains("El Torito"), "{pvd}");
    let (ok, list, _) = run(Command::new("isoinfo").args(["-R", "-f", "-i", cd.to_str().unwrap()]));
    assert!(ok);
    assert!(list.contains("/openstack/latest/meta_data.json"), "{list}");
}

// ---------------------------------------------------------------------------------------------
// El Torito catalog and boot info table, parsed here

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

struct CatalogEntry {
    platform: u8,
    bootable: bool,
    media: u8,
    load_sectors: u16,
    lba: u32,
}

/// Parses the El Torito catalog: validation entry, default entry, then section entries.
fn el_torito_entries(image: &[u8]) -> Vec<CatalogEntry> {
    let record = &image[17 * 2048..18 * 2048];
    assert_eq!(record[0], 0, "boot record volume descriptor type");
    assert_eq!(&record[1..6], b"CD001");
    assert_eq!(&record[7..30], b"EL TORITO SPECIFICATION");
    let catalog_lba = le32(record, 0x47) as usize;
    let cat = &image[catalog_lba * 2048..catalog_lba * 2048 + 2048];
    assert_eq!(cat[0], 1, "validation entry header id");
    assert_eq!(&cat[30..32], &[0x55, 0xAA], "validation entry key bytes");
    let sum = (0..16).fold(0u16, |s, i| s.wrapping_add(le16(cat, i * 2)));
    assert_eq!(sum, 0, "validation entry checksum");
    let entry = |at: usize, platform: u8| CatalogEntry {
        platform,
        bootable: cat[at] == 0x88,
        media: cat[at + 1],
        load_sectors: le16(cat, at + 6),
        lba: le32(cat, at + 8),
    };
    let mut entries = vec![entry(32, cat[1])];
    let mut at = 64;
    loop {
        let header = cat[at];
        if header != 0x90 && header != 0x91 {
            break;
        }
        let platform = cat[at + 1];
        let count = le16(cat, at + 2) as usize;
        for i in 0..count {
            entries.push(entry(at + 32 * (i + 1), platform));
        }
        at += 32 * (count + 1);
        if header == 0x91 {
            break;
        }
    }
    entries
}

#[test]
fn el_torito_catalog_and_boot_info_table_byte_for_byte() {
    let test = "el_torito_catalog_and_boot_info_table_byte_for_byte";
    if !boot_loaders(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let settings = MediaSettings::default();
    let isolinux = read(&settings.isolinux_bin);
    for hybrid in [false, true] {
        let iso = dir.path().join(format!("bit-{hybrid}.iso"));
        build_iso(
            &IsoSpec {
                boot: Some(fake_boot(dir.path(), true, true, hybrid)),
                ..Default::default()
            },
            &iso,
        );
        let image = read(&iso);
        let entries = el_torito_entries(&image);
        assert_eq!(entries.len(), 2);
        let (bios, uefi) = (&entries[0], &entries[1]);
        assert_eq!(
            (bios.platform, bios.bootable, bios.media, bios.load_sectors),
            (0, true, 0, 4)
        );
        assert_eq!((uefi.platform, uefi.bootable, uefi.media), (0xEF, true, 0));

        // isolinux.bin at the default entry's LBA, with the 56-byte boot info table patched in.
        let at = bios.lba as usize * 2048;
        let patched = &image[at..at + isolinux.len()];
        assert_eq!(
            &patched[..8],
            &isolinux[..8],
            "bytes before the table are untouched"
        );
        assert_eq!(le32(patched, 8), 16, "primary volume descriptor LBA");
        assert_eq!(le32(patched, 12), bios.lba, "boot file LBA");
        assert_eq!(
            le32(patched, 16) as usize,
            isolinux.len(),
            "boot file length"
        );
        let checksum = isolinux[64..]
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(w)
            })
            .fold(0u32, u32::wrapping_add);
        assert_eq!(
            le32(patched, 20),
            checksum,
            "checksum of the file from byte 64"
        );
        assert!(
            patched[24..64].iter().all(|b| *b == 0),
            "reserved bytes are zero"
        );
        assert_eq!(
            &patched[64..],
            &isolinux[64..],
            "bytes after the table are untouched"
        );

        // The UEFI entry points at a FAT image whose size its load count covers.
        let esp = &image[uefi.lba as usize * 2048..];
        assert_eq!(&esp[510..512], &[0x55, 0xAA], "ESP boot sector signature");
        let esp_sectors = match le16(esp, 19) {
            0 => le32(esp, 32),
            n => u32::from(n),
        };
        assert_eq!(
            u32::from(uefi.load_sectors),
            esp_sectors.min(0xFFFF),
            "hybrid={hybrid}"
        );
        if hybrid {
            // The MBR points isohdpfx at isolinux.bin in 512-byte sectors.
            assert_eq!(le32(&image, 432), bios.lba * 4);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reproducibility and failure behaviour

#[test]
fn same_inputs_give_the_same_bytes() {
    let test = "same_inputs_give_the_same_bytes";
    if !boot_loaders(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = IsoSpec {
        boot: Some(fake_boot(dir.path(), true, true, true)),
        files: vec![MediaFile::host(
            "openstack/latest/network_data.json",
            dir.path().join("vmlinuz-fake"),
        )],
        publisher_id: Some("pub-1".into()),
        label: None,
    };
    let a = dir.path().join("a.iso");
    let b = dir.path().join("b.iso");
    let report = builder()
        .build_iso(
            &spec,
            &a,
            BuildOptions {
                sha256: true,
                progress: None,
            },
        )
        .unwrap();
    // Host metadata must not leak in: change the inputs' times and build again with a new builder.
    let boot = spec.boot.as_ref().unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    for p in [&boot.kernel, &boot.ramdisk] {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(later)
            .unwrap();
    }
    build_iso(&spec, &b);
    let bytes = read(&a);
    assert!(bytes == read(&b), "two builds of the same ISO differ");
    assert_eq!(report.sha256.unwrap(), hex::encode(Sha256::digest(&bytes)));
    assert_eq!(report.size, bytes.len() as u64);

    let fa = dir.path().join("a.img");
    let fb = dir.path().join("b.img");
    let floppy = FloppySpec {
        params: params(),
        files: vec![MediaFile::bytes("openstack/latest/network_data.json", "{}")],
        ..Default::default()
    };
    builder().build_floppy(&floppy, &fa).unwrap();
    builder().build_floppy(&floppy, &fb).unwrap();
    assert!(
        read(&fa) == read(&fb),
        "two builds of the same floppy differ"
    );
}

#[test]
fn a_failed_build_leaves_no_file_and_keeps_the_old_one() {
    let test = "a_failed_build_leaves_no_file_and_keeps_the_old_one";
    if !boot_loaders(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut boot = fake_boot(dir.path(), true, true, false);
    boot.ramdisk = dir.path().join("no-such-ramdisk");
    let spec = IsoSpec {
        boot: Some(boot),
        ..Default::default()
    };
    let out = dir.path().join("boot.iso");
    let err = builder()
        .build_iso(&spec, &out, BuildOptions::default())
        .unwrap_err();
    assert!(
        matches!(&err, MediaError::Input { path, .. } if path.ends_with("no-such-ramdisk")),
        "{err}"
    );
    assert!(!out.exists());

    std::fs::write(&out, b"previous image").unwrap();
    builder()
        .build_iso(&spec, &out, BuildOptions::default())
        .unwrap_err();
    assert_eq!(read(&out), b"previous image");

    // A source that shrinks after planning fails while writing, still without leftovers.
    let mut boot = fake_boot(dir.path(), true, false, false);
    let shrinking = dir.path().join("shrinking");
    support::write_pattern_file(&shrinking, 64 << 20, 3);
    boot.ramdisk = shrinking.clone();
    let spec = IsoSpec {
        boot: Some(boot),
        ..Default::default()
    };
    let shrink_after_start = |done: u64, _total: u64| {
        if done > 0 {
            let _ = std::fs::File::options()
                .write(true)
                .open(&shrinking)
                .and_then(|f| f.set_len(1));
        }
    };
    let err = builder()
        .build_iso(
            &spec,
            &out,
            BuildOptions {
                sha256: false,
                progress: Some(&shrink_after_start),
            },
        )
        .unwrap_err();
    assert!(matches!(err, MediaError::Iso { .. }), "{err}");
    assert_eq!(read(&out), b"previous image");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with(ironboot::fsutil::TEMP_PREFIX)),
        "{names:?}"
    );
}

#[test]
fn bad_inputs_are_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    let big = dir.path().join("big.bin");
    support::write_pattern_file(&big, 200 * 1024, 4);
    let big_arg = format!("{}:big.bin", big.display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "iso",
                "--kernel",
                "/nonexistent/vmlinuz",
                "--ramdisk",
                "/etc/hostname",
                "-o",
                o,
            ],
            "cannot read kernel /nonexistent/vmlinuz",
        ),
        (
            vec![
                "iso",
                "--inject",
                "/etc/hostname:hostname",
                "--label",
                "A_LABEL_MUCH_LONGER_THAN_32_BYTES",
                "-o",
                o,
            ],
            "ISO volume label",
        ),
        (
            vec!["floppy", "--param", "key=two\nlines", "-o", o],
            "parameter value",
        ),
        (
            vec!["floppy", "--param", "=value", "-o", o],
            "parameter key \"\"",
        ),
        (
            vec!["floppy", "--label", "label-too-long", "-o", o],
            "floppy label",
        ),
        (
            vec!["floppy", "--size-kib", "100", "--file", &big_arg, "-o", o],
            "needs 204800 bytes",
        ),
    ];
    for (args, expected) in cases {
        let mut argv = vec!["media"];
        argv.extend(&args);
        let (ok, stdout, stderr) = ironboot(&argv);
        assert!(!ok, "{args:?} succeeded: {stdout}");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in\n{stderr}"
        );
        assert!(!out.exists(), "{args:?} left {o}");
    }
    // A key containing '=' can only come through the library (the CLI splits at the first '=').
    let spec = FloppySpec {
        params: vec![("a=b".into(), "c".into())],
        ..Default::default()
    };
    let err = builder().build_floppy(&spec, &out).unwrap_err();
    assert!(err.to_string().contains("must not contain '='"), "{err}");
    assert!(!out.exists());
}

#[test]
fn cli_iso_prints_the_sha256_of_what_it_wrote() {
    let test = "cli_iso_prints_the_sha256_of_what_it_wrote";
    if !boot_loaders(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let boot = fake_boot(dir.path(), true, true, false);
    let iso = dir.path().join("cli.iso");
    let (ok, stdout, stderr) = ironboot(&[
        "media",
        "iso",
        "--kernel",
        boot.kernel.to_str().unwrap(),
        "--ramdisk",
        boot.ramdisk.to_str().unwrap(),
        "--append",
        "console=ttyS0",
        "--publisher-id",
        "abc",
        "--sha256",
        "-o",
        iso.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}{stderr}");
    let digest = hex::encode(Sha256::digest(read(&iso)));
    assert!(stdout.contains(&format!("sha256 {digest}")), "{stdout}");
}

#[test]
fn a_large_ramdisk_is_streamed_not_held_in_memory() {
    let test = "a_large_ramdisk_is_streamed_not_held_in_memory";
    if !boot_loaders(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let boot = fake_boot(dir.path(), true, false, false);
    let ramdisk = dir.path().join("ramdisk-300m");
    std::fs::File::create(&ramdisk)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    let iso = dir.path().join("large.iso");
    // 200 MiB of address space: enough for the program, not for a copy of the ramdisk.
    let script = format!(
        "ulimit -v 204800 && exec '{}' media iso --bios --kernel '{}' --ramdisk '{}' -o '{}'",
        support::ironboot_bin().display(),
        boot.kernel.display(),
        ramdisk.display(),
        iso.display()
    );
    let (ok, out, err) = run(Command::new("sh").arg("-c").arg(&script));
    assert!(ok, "{out}{err}");
    assert!(read_len(&iso) > 300 << 20);
}

fn read_len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

// ---------------------------------------------------------------------------------------------
// QEMU: firmware boots the ISO, Linux reads the media

struct BootFixture {
    _dir: tempfile::TempDir,
    kit: GuestKit,
    iso: PathBuf,
    hybrid: PathBuf,
    /// What the guest must see in /proc/cmdline.
    cmdline: String,
}

/// Kernel command line with characters GRUB would mangle if they were not quoted.
const BOOT_CMDLINE: &str = "console=ttyS0 panic=-1 quiet ironboot.check=a;b$c&d|e";

fn boot_fixture(test: &str) -> Option<BootFixture> {
    if !boot_loaders(test)
        || !require_condition(test, Path::new(OVMF).is_file(), "ovmf is not installed")
    {
        return None;
    }
    let kit = guest_kit(test)?;
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str, hybrid: bool| {
        let path = dir.path().join(name);
        build_iso(
            &IsoSpec {
                boot: Some(BootSpec {
                    kernel: kit.kernel.clone(),
                    ramdisk: kit.initrd.clone(),
                    cmdline: BOOT_CMDLINE.into(),
                    bios: true,
                    uefi: true,
                    hybrid,
                }),
                publisher_id: Some("0f1e2d3c".into()),
                ..Default::default()
            },
            &path,
        );
        path
    };
    let iso = make("boot.iso", false);
    let hybrid = make("hybrid.iso", true);
    Some(BootFixture {
        _dir: dir,
        kit,
        iso,
        hybrid,
        cmdline: format!("{BOOT_CMDLINE} ir_pub_id=0f1e2d3c"),
    })
}

fn assert_booted(what: &str, run: &support::guest::GuestRun, cmdline: &str) {
    let t = run.assert_marker(what);
    let seen = run.cmdline().unwrap_or_default();
    assert!(
        seen.contains(cmdline),
        "{what}: /proc/cmdline is {seen:?}, expected it to contain {cmdline:?}"
    );
    eprintln!(
        "{what}: marker after {:.1} s, QEMU exited after {:.1} s (queued {:.1} s)",
        t.as_secs_f64(),
        run.elapsed.as_secs_f64(),
        run.queued.as_secs_f64()
    );
}

#[test]
fn qemu_boots_the_iso_under_seabios_and_ovmf() {
    let test = "qemu_boots_the_iso_under_seabios_and_ovmf";
    let Some(f) = boot_fixture(test) else { return };
    let iso = f.iso.to_str().unwrap();
    let bios = run_qemu(
        ["-cdrom", iso, "-boot", "d", "-net", "none"],
        BOOT_TIMEOUT,
        Some(MARKER),
    );
    assert_booted("SeaBIOS, CD", &bios, &f.cmdline);
    assert!(bios.output.contains("ISOLINUX"), "isolinux did the booting");

    let uefi = run_qemu(
        ["-bios", OVMF, "-cdrom", iso, "-net", "none"],
        BOOT_TIMEOUT,
        Some(MARKER),
    );
    assert_booted("OVMF, CD", &uefi, &f.cmdline);
    assert!(
        !uefi.output.contains("ISOLINUX"),
        "GRUB, not isolinux, booted under OVMF"
    );
}

#[test]
fn qemu_boots_the_hybrid_iso_as_a_disk() {
    let test = "qemu_boots_the_hybrid_iso_as_a_disk";
    let Some(f) = boot_fixture(test) else { return };
    let disk = format!(
        "file={},format=raw,if=virtio,snapshot=on",
        f.hybrid.display()
    );
    let bios = run_qemu(
        ["-drive", &disk, "-net", "none"],
        BOOT_TIMEOUT,
        Some(MARKER),
    );
    assert_booted("SeaBIOS, hybrid disk", &bios, &f.cmdline);
    assert!(
        bios.output.contains("ISOLINUX") && bios.output.contains("EHDD"),
        "isohybrid MBR path"
    );

    let uefi = run_qemu(
        ["-bios", OVMF, "-drive", &disk, "-net", "none"],
        BOOT_TIMEOUT,
        Some(MARKER),
    );
    assert_booted("OVMF, hybrid disk", &uefi, &f.cmdline);
    // Firmware booted the GPT EFI partition as a disk, not the El Torito image.
    assert!(uefi.output.contains("UEFI Misc Device"), "{}", uefi.output);
}

#[test]
fn linux_guest_mounts_the_floppy_and_the_isos() {
    let test = "linux_guest_mounts_the_floppy_and_the_isos";
    let Some(f) = boot_fixture(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let floppy = dir.path().join("floppy.img");
    builder()
        .build_floppy(
            &FloppySpec {
                params: params(),
                files: vec![MediaFile::bytes("openstack/latest/network_data.json", "{}")],
                ..Default::default()
            },
            &floppy,
        )
        .unwrap();
    let config_drive = dir.path().join("config-drive.iso");
    build_iso(
        &IsoSpec {
            files: vec![
                MediaFile::bytes("openstack/latest/meta_data.json", "{}"),
                MediaFile::bytes("openstack/latest/user_data", "#!/bin/sh\n"),
            ],
            ..Default::default()
        },
        &config_drive,
    );
    let cd = format!(
        "file={},if=virtio,format=raw,readonly=on",
        config_drive.display()
    );
    let fda = format!("file={},if=floppy,format=raw,snapshot=on", floppy.display());
    let guest = run_qemu(
        [
            "-kernel",
            f.kit.kernel.to_str().unwrap(),
            "-initrd",
            f.kit.initrd.to_str().unwrap(),
            "-append",
            "console=ttyS0 panic=-1 inspect=1",
            "-drive",
            &cd,
            "-drive",
            &fda,
            "-cdrom",
            f.iso.to_str().unwrap(),
            "-net",
            "none",
        ],
        BOOT_TIMEOUT,
        Some("INSPECT-DONE"),
    );
    guest.assert_marker("inspect guest");
    let devices = guest.lines_with("INSPECT-DEVICE ");
    assert!(
        devices.contains(&"/dev/vda iso9660"),
        "{devices:?}\n{}",
        guest.output
    );
    assert!(devices.contains(&"/dev/sr0 iso9660"), "{devices:?}");
    assert!(devices.contains(&"/dev/fd0 vfat"), "{devices:?}");
    let files = guest.lines_with("INSPECT-FILE ");
    for expected in [
        "/dev/fd0 /parameters.txt",
        "/dev/fd0 /openstack/latest/network_data.json",
        "/dev/vda /openstack/latest/meta_data.json",
        "/dev/vda /openstack/latest/user_data",
        "/dev/sr0 /isolinux/ldlinux.c32",
        "/dev/sr0 /EFI/BOOT/grub.cfg",
        "/dev/sr0 /vmlinuz",
    ] {
        assert!(
            files.contains(&expected),
            "guest did not list {expected}: {files:?}"
        );
    }
    let expected: Vec<String> = PARAMS.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(guest.lines_with("INSPECT-PARAM "), expected);
}
