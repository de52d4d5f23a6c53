//! Rendering and the validation rules.

use super::context::*;
use super::params::*;
use super::templates::*;
use super::*;
use crate::boot::{Arch, PxeSettings};
use uuid::Uuid;

fn ctx(interface: NetBoot, mode: BootMode, entry: Entry) -> BootContext {
    let mut deploy_params = KernelParams::parse("t", "nofb vga=normal").unwrap();
    deploy_params
        .push("t", "ipa-api-url", Some("http://10.0.2.2:6385"))
        .unwrap();
    BootContext {
        node_uuid: Uuid::parse_str("1be26c0b-03f2-4d2e-ae87-c02d7f33c123").unwrap(),
        interface,
        boot_mode: mode,
        arch: Arch::X86_64,
        entry,
        deploy: Some(ImagePair {
            kernel: "1be26c0b-03f2-4d2e-ae87-c02d7f33c123/deploy_kernel".into(),
            ramdisk: "1be26c0b-03f2-4d2e-ae87-c02d7f33c123/deploy_ramdisk".into(),
        }),
        deploy_params,
        instance: None,
        instance_params: KernelParams::new(),
        root_uuid: None,
        disk_id: None,
    }
}

fn renderer() -> Renderer {
    Renderer::new(&PxeSettings::default()).unwrap()
}

#[test]
fn kernel_params_accept_real_world_values() {
    let p = KernelParams::parse(
        "t",
        "console=ttyS0,115200n8 ipa-api-url=http://192.0.2.1:6385 rd.shell BOOTIF=01-aa-bb \
         ip=10.0.0.2::10.0.0.1:255.255.255.0:host:eth0:off root=UUID=ab-cd",
    )
    .unwrap();
    assert_eq!(p.iter().count(), 6);
    assert_eq!(p.iter().nth(2).unwrap().value(), None);
}

#[test]
fn kernel_params_refuse_injection() {
    for bad in [
        "a=b\ninit=/bin/sh",
        "a=b\rc",
        "a=\"b c\"",
        "a='b'",
        "a=b;reboot",
        "a=${net0/ip}",
        "a={{ x }}",
        "a={%x%}",
        "a=b||chain",
        "a=b#c",
        "a=b\\c",
        "a=b\tc",
        "-n=x",
        "=x",
        "a=",
        "kéy=1",
        "a=\u{0}",
    ] {
        let err = KernelParams::parse("node.kernel_append_params", bad)
            .expect_err(bad)
            .to_string();
        assert!(err.contains("node.kernel_append_params"), "{bad}: {err}");
    }
}

#[test]
fn kernel_params_are_bounded_and_expand_default() {
    let long = format!("a={}", "x".repeat(MAX_CMDLINE));
    assert!(KernelParams::parse("t", &long).is_err());
    let default = KernelParams::parse("t", "nofb vga=normal").unwrap();
    let p = KernelParams::parse_with_default("t", "console=ttyS0 %default% x", &default).unwrap();
    assert_eq!(p.to_cmdline(), "console=ttyS0 nofb vga=normal x");
}

#[test]
fn locations_refuse_syntax_and_options() {
    for bad in [
        "",
        "-n evil",
        "a b",
        "a\nb",
        "http://x/${mac}",
        "x;y",
        "x\"y",
        "{{x}}",
        "a#b",
    ] {
        assert!(validate_location("deploy_kernel", bad).is_err(), "{bad:?}");
    }
    validate_location(
        "deploy_kernel",
        "http://10.0.2.2:8080/v1/AUTH_t/c/k?temp_url_sig=ab&temp_url_expires=1",
    )
    .unwrap();
}

#[test]
fn entry_inputs_are_required() {
    let r = renderer();
    let mut c = ctx(NetBoot::Pxe, BootMode::Bios, Entry::BootPartition);
    let e = r.render_node_config(&c).unwrap_err().to_string();
    assert!(
        e.contains("boot_partition") && e.contains("instance"),
        "{e}"
    );
    c.instance = Some(ImagePair {
        kernel: "k".into(),
        ramdisk: "r".into(),
    });
    let e = r.render_node_config(&c).unwrap_err().to_string();
    assert!(e.contains("root filesystem uuid"), "{e}");
    c.root_uuid = Some("bad uuid".into());
    assert!(r.render_node_config(&c).is_err());
    c.root_uuid = Some("4f0c3a4e-58c6-4b2b-9d5e-0d6f1c2a3b4c".into());
    let out = r.render_node_config(&c).unwrap();
    assert!(
        out.contains("root=UUID=4f0c3a4e-58c6-4b2b-9d5e-0d6f1c2a3b4c"),
        "{out}"
    );
    assert!(out.contains("DEFAULT boot_partition"), "{out}");
}

#[test]
fn format_selection() {
    assert_eq!(
        ConfigFormat::select(NetBoot::Pxe, BootMode::Bios, Arch::X86_64).unwrap(),
        ConfigFormat::Pxelinux
    );
    assert_eq!(
        ConfigFormat::select(NetBoot::Pxe, BootMode::Uefi, Arch::Aarch64).unwrap(),
        ConfigFormat::Grub
    );
    assert_eq!(
        ConfigFormat::select(NetBoot::Ipxe, BootMode::Uefi, Arch::X86_64).unwrap(),
        ConfigFormat::Ipxe
    );
    assert!(ConfigFormat::select(NetBoot::Pxe, BootMode::Bios, Arch::Aarch64).is_err());
}

#[test]
fn ipxe_names_the_initrd_on_the_kernel_line() {
    let r = renderer();
    let mut c = ctx(NetBoot::Ipxe, BootMode::Uefi, Entry::Deploy);
    c.deploy = Some(ImagePair {
        kernel: "http://192.0.2.1:8080/u/deploy_kernel".into(),
        ramdisk: "http://192.0.2.1:8080/u/deploy_ramdisk?sig=1&exp=2".into(),
    });
    let out = r.render_node_config(&c).unwrap();
    let kernel_line = out
        .lines()
        .find(|l| l.starts_with("kernel "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        kernel_line.contains(" initrd=deploy_ramdisk "),
        "{kernel_line}"
    );
}

#[test]
fn overrides_win_by_specificity_and_unknown_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("grub.j2"), "generic {{ entry }}\n").unwrap();
    std::fs::write(
        dir.path().join("grub-aarch64-uefi.j2"),
        "arm {{ entry }} {{ arch }}\n",
    )
    .unwrap();
    let settings = PxeSettings {
        template_dir: Some(dir.path().to_path_buf()),
        ..PxeSettings::default()
    };
    let r = Renderer::new(&settings).unwrap();
    let mut c = ctx(NetBoot::Pxe, BootMode::Uefi, Entry::Deploy);
    assert_eq!(r.render_node_config(&c).unwrap(), "generic deploy\n");
    c.arch = Arch::Aarch64;
    assert_eq!(r.render_node_config(&c).unwrap(), "arm deploy aarch64\n");
    // PXELINUX has no override: the built-in one is used.
    c.boot_mode = BootMode::Bios;
    c.arch = Arch::X86_64;
    assert!(r.render_node_config(&c).unwrap().contains("LABEL deploy"));

    std::fs::write(dir.path().join("grub-x86-64.j2"), "typo\n").unwrap();
    let e = Renderer::new(&settings).unwrap_err().to_string();
    assert!(e.contains("grub-x86-64.j2"), "{e}");
}

#[test]
fn broken_override_fails_at_start_and_undefined_variables_fail_at_render() {
    let dir = tempfile::tempdir().unwrap();
    let settings = PxeSettings {
        template_dir: Some(dir.path().to_path_buf()),
        ..PxeSettings::default()
    };
    std::fs::write(dir.path().join("ipxe.j2"), "{% if %}\n").unwrap();
    let e = Renderer::new(&settings).unwrap_err().to_string();
    assert!(e.contains("ipxe.j2"), "{e}");
    std::fs::write(dir.path().join("ipxe.j2"), "{{ no_such_variable }}\n").unwrap();
    let r = Renderer::new(&settings).unwrap();
    let e = r
        .render_node_config(&ctx(NetBoot::Ipxe, BootMode::Bios, Entry::Deploy))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("override/ipxe.j2") && e.contains("undefined"),
        "{e}"
    );
}

#[test]
fn image_names() {
    assert_eq!(image_name("http://h/a/deploy_ramdisk"), "deploy_ramdisk");
    assert_eq!(image_name("http://h/a/r.img?sig=1/2"), "r.img");
    assert_eq!(image_name("uuid/ramdisk"), "ramdisk");
}
