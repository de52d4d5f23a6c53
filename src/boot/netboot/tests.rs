//! The `pxe` and `ipxe` interfaces against a real store, image cache and roots in a temporary
//! directory: what validate refuses, and the exact files each operation leaves behind.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;
use crate::boot::ipxe::IpxeBoot;
use crate::boot::pxe::PxeBoot;
use crate::model::{HardwareType, Port};

const ROOT_UUID: &str = "4f0c3a4e-58c6-4b2b-9d5e-0d6f1c2a3b4c";

struct Lab {
    dir: tempfile::TempDir,
    layout: Layout,
    config: NetBootConfig,
    registry: crate::metrics::Registry,
    metrics: BootMetrics,
    /// Last octet of the next node's MAC (MACs are unique across nodes).
    next_mac: std::sync::atomic::AtomicU8,
}

impl Lab {
    async fn new(settings: PxeSettings) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::in_data_dir(dir.path());
        layout.create_roots().unwrap();
        let mut registry = crate::metrics::Registry::default();
        let cache = ImageCache::open(
            Default::default(),
            &dir.path().join("cache"),
            &[
                layout.tftp_root().to_path_buf(),
                layout.http_root().to_path_buf(),
            ],
            &mut registry,
        )
        .unwrap();
        for (name, bytes) in [
            ("ipa.kernel", &b"deploy kernel"[..]),
            ("ipa.initramfs", b"deploy ramdisk"),
            ("os.vmlinuz", b"instance kernel"),
            ("os.initrd", b"instance ramdisk"),
        ] {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let config = NetBootConfig {
            renderer: Arc::new(Renderer::new(&settings).unwrap()),
            settings,
            layout: layout.clone(),
            cache: Arc::new(cache),
            http_url: "http://192.0.2.1:8080".into(),
            default_boot_mode: BootMode::Uefi,
        };
        let metrics = BootMetrics::register(&mut registry);
        Lab {
            dir,
            layout,
            config,
            registry,
            metrics,
            next_mac: std::sync::atomic::AtomicU8::new(0x56),
        }
    }

    fn pxe(&self) -> PxeBoot {
        PxeBoot::new(self.config.clone(), self.metrics.clone()).unwrap()
    }

    fn ipxe(&self) -> IpxeBoot {
        IpxeBoot::new(self.config.clone(), self.metrics.clone()).unwrap()
    }

    fn file_url(&self, name: &str) -> String {
        format!("file://{}", self.dir.path().join(name).display())
    }

    /// A node with deploy kernel/ramdisk and one pxe-enabled port, `52:54:00:12:34:xx`
    /// (`xx` = 56, 57, ... in creation order), plus a port with pxe disabled.
    async fn task(&self, boot_interface: &str, edit: impl FnOnce(&mut Node)) -> NodeContext {
        let mut node = Node::new(
            Uuid::new_v4(),
            HardwareType::find("fake-hardware").unwrap(),
            crate::model::now(),
        );
        node.boot_interface = boot_interface.into();
        node.driver_info
            .insert("deploy_kernel".into(), json!(self.file_url("ipa.kernel")));
        node.driver_info.insert(
            "deploy_ramdisk".into(),
            json!(self.dir.path().join("ipa.initramfs")),
        );
        edit(&mut node);
        let n = self
            .next_mac
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ports = [
            (format!("52:54:00:12:34:{n:02x}"), true),
            (format!("52:54:00:00:99:{n:02x}"), false),
        ]
        .into_iter()
        .map(|(mac, pxe_enabled)| Port {
            pxe_enabled,
            ..Port::new(
                Uuid::new_v4(),
                node.uuid,
                MacAddress::parse(&mac).unwrap(),
                crate::model::now(),
            )
        })
        .collect();
        NodeContext::new(node, ports)
    }

    /// Every path under `root` (relative), links shown with their target.
    fn tree(&self, root: &Path) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let path = e.unwrap().path();
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                if meta.file_type().is_symlink() {
                    out.push(format!(
                        "{rel} -> {}",
                        std::fs::read_link(&path).unwrap().display()
                    ));
                } else if meta.is_dir() {
                    walk(root, &path, out);
                } else {
                    out.push(rel);
                }
            }
        }
        let mut out = Vec::new();
        walk(root, root, &mut out);
        out.sort();
        out
    }

    fn config_text(&self, iface: NetBoot, node: Uuid) -> String {
        std::fs::read_to_string(self.layout.node_file(iface, node, NodeFile::Config)).unwrap()
    }
}

fn ipa_params() -> Vec<(String, String)> {
    vec![("ipa-api-url".into(), "http://192.0.2.1:6385".into())]
}

fn err_text<T: std::fmt::Debug>(r: Result<T, BootError>) -> String {
    r.expect_err("expected an error").to_string()
}

#[tokio::test]
async fn validate_names_what_is_missing_or_invalid() {
    let lab = Lab::new(PxeSettings::default()).await;
    let pxe = lab.pxe();
    let ok = lab.task("pxe", |_| {}).await;
    pxe.validate(&ok).unwrap();
    // What the previous deploy recorded (a partition image) does not make a whole-disk
    // redeploy need an instance kernel.
    let rebuilt = lab
        .task("pxe", |n| {
            n.driver_internal_info
                .insert("is_whole_disk_image".into(), json!(false));
        })
        .await;
    pxe.validate(&rebuilt).unwrap();

    type Edit = Box<dyn FnOnce(&mut Node)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|n| {
                n.driver_info.remove("deploy_kernel");
            }),
            "deploy_kernel is required",
        ),
        (
            Box::new(|n| {
                n.driver_info
                    .insert("deploy_ramdisk".into(), json!("ftp://x/ramdisk"));
            }),
            "deploy_ramdisk",
        ),
        (
            Box::new(|n| {
                n.driver_info.insert(
                    "kernel_append_params".into(),
                    json!("%default% console=ttyS0\ninit=/bin/sh"),
                );
            }),
            "driver_info.kernel_append_params",
        ),
        (
            Box::new(|n| {
                n.instance_info
                    .insert("kernel_append_params".into(), json!("a=${x}"));
            }),
            "instance_info.kernel_append_params",
        ),
        (
            Box::new(|n| {
                n.properties
                    .insert("capabilities".into(), json!("boot_mode:efi"));
            }),
            "capabilities boot_mode",
        ),
        (
            Box::new(|n| {
                n.properties.insert("cpu_arch".into(), json!("aarch64"));
                n.instance_info
                    .insert("deploy_boot_mode".into(), json!("bios"));
            }),
            "aarch64 boots UEFI only",
        ),
        (
            Box::new(|n| {
                n.properties.insert("cpu_arch".into(), json!("ppc64le"));
            }),
            "properties.cpu_arch",
        ),
        (
            Box::new(|n| {
                n.instance_info
                    .insert("capabilities".into(), json!({"boot_option": "ramdisk"}));
            }),
            "instance_info.kernel is required",
        ),
    ];
    for (edit, expected) in cases {
        let task = lab.task("pxe", edit).await;
        let e = err_text(pxe.validate(&task));
        assert!(e.contains(expected), "{expected:?} not in {e:?}");
    }

    // Only pxe-disabled ports: nothing for firmware to find the config by.
    let mut task = lab.task("pxe", |_| {}).await;
    task.ports.retain(|p| !p.pxe_enabled);
    let e = err_text(pxe.validate(&task));
    assert!(e.contains("pxe_enabled=true"), "{e}");
    // Validation writes nothing.
    assert!(
        lab.tree(lab.layout.tftp_root())
            .iter()
            .all(|p| !p.contains("01-52-54"))
    );
}

#[tokio::test]
async fn prepare_ramdisk_lays_out_the_deploy_files_of_each_interface() {
    let lab = Lab::new(PxeSettings::default()).await;
    let (pxe, ipxe) = (lab.pxe(), lab.ipxe());
    let bios = |n: &mut Node| {
        n.properties
            .insert("capabilities".into(), json!("boot_mode:bios,foo:bar"));
        n.driver_info.insert(
            "kernel_append_params".into(),
            json!("console=ttyS0 %default%"),
        );
    };

    // pxe + BIOS: PXELINUX under the tftp root.
    let mut task = lab.task("pxe", bios).await;
    let u = task.node.uuid;
    pxe.prepare_ramdisk(&mut task, &ipa_params()).await.unwrap();
    let cfg = lab.config_text(NetBoot::Pxe, u);
    assert!(cfg.contains("DEFAULT deploy"), "{cfg}");
    assert!(cfg.contains(&format!("KERNEL {u}/deploy_kernel")), "{cfg}");
    assert!(
        cfg.contains("APPEND console=ttyS0 nofb vga=normal ipa-api-url=http://192.0.2.1:6385"),
        "{cfg}"
    );
    assert!(cfg.contains("IPAPPEND 2"), "{cfg}");
    let tree = lab.tree(lab.layout.tftp_root());
    for want in [
        format!("{u}/config"),
        format!("{u}/deploy_kernel"),
        format!("{u}/deploy_ramdisk"),
        format!("pxelinux.cfg/01-52-54-00-12-34-56 -> ../{u}/config"),
        format!("grub.cfg-01-52-54-00-12-34-56 -> {u}/config"),
        format!("52:54:00:12:34:56.conf -> {u}/config"),
        "grub/grub.cfg".to_string(),
    ] {
        assert!(tree.contains(&want), "{want} not in {tree:#?}");
    }
    // Only the pxe-enabled port is linked.
    assert!(!tree.iter().any(|p| p.contains("00-99")), "{tree:#?}");
    // The deploy files are hard links to the cache's masters.
    let kernel = lab
        .layout
        .node_file(NetBoot::Pxe, u, NodeFile::DeployKernel);
    assert_eq!(std::fs::read(&kernel).unwrap(), b"deploy kernel");
    assert_eq!(std::fs::metadata(&kernel).unwrap().nlink(), 2);

    // pxe + UEFI (the default mode): GRUB, absolute paths.
    let mut task = lab.task("pxe", |_| {}).await;
    let u = task.node.uuid;
    pxe.prepare_ramdisk(&mut task, &ipa_params()).await.unwrap();
    let cfg = lab.config_text(NetBoot::Pxe, u);
    assert!(cfg.contains("set default=deploy"), "{cfg}");
    assert!(
        cfg.contains(&format!(
            "linux /{u}/deploy_kernel nofb vga=normal ipa-api-url=http://192.0.2.1:6385 BOOTIF=01-${{net_default_mac}}"
        )),
        "{cfg}"
    );

    // ipxe: the http root, URLs under http_url, boot.ipxe refreshed.
    std::fs::remove_file(lab.layout.http_root().join("boot.ipxe")).ok();
    let mut task = lab
        .task("ipxe", |n| {
            n.instance_info
                .insert("kernel_append_params".into(), json!("quiet"));
        })
        .await;
    let u = task.node.uuid;
    ipxe.prepare_ramdisk(&mut task, &ipa_params())
        .await
        .unwrap();
    let cfg = lab.config_text(NetBoot::Ipxe, u);
    assert!(
        cfg.contains(&format!(
            "kernel http://192.0.2.1:8080/{u}/deploy_kernel quiet ipa-api-url=http://192.0.2.1:6385 BOOTIF=01-${{ironboot-mac}} initrd=deploy_ramdisk"
        )),
        "{cfg}"
    );
    let tree = lab.tree(lab.layout.http_root());
    assert!(tree.contains(&"boot.ipxe".to_string()), "{tree:#?}");
    assert!(
        tree.contains(&format!("pxelinux.cfg/52-54-00-12-34-58 -> ../{u}/config")),
        "{tree:#?}"
    );
    let metrics = crate::metrics::encode(&lab.registry);
    assert!(
        metrics.contains(
            "ironboot_boot_operations_total{interface=\"pxe\",operation=\"prepare_ramdisk\",outcome=\"ok\"} 2"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_failed_fetch_or_bad_parameter_leaves_no_config() {
    let lab = Lab::new(PxeSettings::default()).await;
    let pxe = lab.pxe();
    let missing = lab.dir.path().join("no-such-kernel");
    let mut task = lab
        .task("pxe", |n| {
            n.driver_info
                .insert("deploy_kernel".into(), json!(missing.clone()));
        })
        .await;
    let e = err_text(pxe.prepare_ramdisk(&mut task, &ipa_params()).await);
    assert!(e.contains("no-such-kernel"), "{e}");
    let mut task = lab.task("pxe", |_| {}).await;
    let bad = vec![("ipa-api-url".to_string(), "http://x/;reboot".to_string())];
    let e = err_text(pxe.prepare_ramdisk(&mut task, &bad).await);
    assert!(e.contains("ramdisk parameters"), "{e}");
    let tree = lab.tree(lab.layout.tftp_root());
    assert!(tree.is_empty(), "{tree:#?}");
    let metrics = crate::metrics::encode(&lab.registry);
    assert!(metrics.contains("outcome=\"error\"} 2"), "{metrics}");
}

/// Makes the node's config impossible to write: a non-empty directory where it goes.
fn block_config(lab: &Lab, iface: NetBoot, node: Uuid) {
    let config = lab.layout.node_file(iface, node, NodeFile::Config);
    let _ = std::fs::remove_file(&config);
    std::fs::create_dir_all(config.join("blocker")).unwrap();
}

#[tokio::test]
async fn a_prepare_that_cannot_write_its_config_removes_the_images_it_linked() {
    let lab = Lab::new(PxeSettings::default()).await;
    let pxe = lab.pxe();
    let mut task = lab.task("pxe", |_| {}).await;
    block_config(&lab, NetBoot::Pxe, task.node.uuid);
    let e = err_text(pxe.prepare_ramdisk(&mut task, &ipa_params()).await);
    assert!(e.contains("config"), "{e}");
    let tree = lab.tree(lab.layout.tftp_root());
    assert!(
        !tree
            .iter()
            .any(|p| p.contains("deploy_") || p.contains("pxelinux.cfg")),
        "a failed prepare_ramdisk left files to serve: {tree:#?}"
    );

    let ipxe = lab.ipxe();
    let (k, r) = (lab.file_url("os.vmlinuz"), lab.file_url("os.initrd"));
    let mut task = deployed(&lab, &ipxe, |n| {
        n.instance_info.insert("kernel".into(), json!(k));
        n.instance_info.insert("ramdisk".into(), json!(r));
    })
    .await;
    let u = task.node.uuid;
    task.node
        .driver_internal_info
        .insert("is_whole_disk_image".into(), json!(false));
    task.node
        .driver_internal_info
        .insert("root_uuid_or_disk_id".into(), json!(ROOT_UUID));
    block_config(&lab, NetBoot::Ipxe, u);
    err_text(ipxe.prepare_instance(&mut task).await);
    let dir = lab.layout.node_dir(NetBoot::Ipxe, u);
    assert!(
        !dir.join("kernel").exists() && !dir.join("ramdisk").exists(),
        "a failed prepare_instance left the instance kernel and ramdisk to serve"
    );
}

/// A node that went through prepare_ramdisk and then had its deploy recorded.
async fn deployed(
    lab: &Lab,
    iface: &impl BootInterface,
    edit: impl FnOnce(&mut Node),
) -> NodeContext {
    let mut task = lab.task(iface.name(), edit).await;
    let target = iface
        .prepare_ramdisk(&mut task, &ipa_params())
        .await
        .unwrap();
    assert_eq!(target, BootTarget::once(BootDevice::Pxe));
    task
}

#[tokio::test]
async fn whole_disk_instances_drop_their_files_unless_netboot_fallback_is_on() {
    let lab = Lab::new(PxeSettings::default()).await;
    let pxe = lab.pxe();
    let mut task = deployed(&lab, &pxe, |_| {}).await;
    task.node
        .driver_internal_info
        .insert("is_whole_disk_image".into(), json!(true));
    let target = pxe.prepare_instance(&mut task).await.unwrap();
    assert_eq!(target, BootTarget::persistent(BootDevice::Disk));
    assert_eq!(lab.tree(lab.layout.tftp_root()), ["grub/grub.cfg"]);

    let lab = Lab::new(PxeSettings {
        enable_netboot_fallback: true,
        ..PxeSettings::default()
    })
    .await;
    let pxe = lab.pxe();
    let mut task = deployed(&lab, &pxe, |n| {
        n.properties
            .insert("capabilities".into(), json!({"boot_mode": "bios"}));
    })
    .await;
    let u = task.node.uuid;
    task.node
        .driver_internal_info
        .insert("root_uuid_or_disk_id".into(), json!("0x1234abcd"));
    let target = pxe.prepare_instance(&mut task).await.unwrap();
    // The fallback config hands the boot to the disk, so the node keeps booting from the network.
    assert_eq!(target, BootTarget::persistent(BootDevice::Pxe));
    let cfg = lab.config_text(NetBoot::Pxe, u);
    assert!(cfg.contains("DEFAULT boot_whole_disk"), "{cfg}");
    assert!(cfg.contains("APPEND mbr:0x1234abcd"), "{cfg}");
    assert!(!cfg.contains("deploy_kernel"), "{cfg}");
    let tree = lab.tree(lab.layout.tftp_root());
    assert!(!tree.iter().any(|p| p.contains("deploy_")), "{tree:#?}");
    assert!(tree.contains(&format!(
        "pxelinux.cfg/01-52-54-00-12-34-56 -> ../{u}/config"
    )));
}

#[tokio::test]
async fn partition_and_ramdisk_instances_boot_their_own_kernel() {
    let lab = Lab::new(PxeSettings::default()).await;
    let ipxe = lab.ipxe();
    let (k, r) = (lab.file_url("os.vmlinuz"), lab.file_url("os.initrd"));
    let mut task = deployed(&lab, &ipxe, |n| {
        n.instance_info.insert("kernel".into(), json!(k));
        n.instance_info.insert("ramdisk".into(), json!(r));
        n.instance_info
            .insert("kernel_append_params".into(), json!("console=ttyS0"));
    })
    .await;
    let u = task.node.uuid;
    task.node
        .driver_internal_info
        .insert("is_whole_disk_image".into(), json!(false));

    // No root uuid recorded: refused, the deploy config stays as it was.
    let before = lab.config_text(NetBoot::Ipxe, u);
    let e = err_text(ipxe.prepare_instance(&mut task).await);
    assert!(e.contains("root_uuid_or_disk_id"), "{e}");
    assert_eq!(lab.config_text(NetBoot::Ipxe, u), before);

    task.node
        .driver_internal_info
        .insert("root_uuid_or_disk_id".into(), json!(ROOT_UUID));
    ipxe.prepare_instance(&mut task).await.unwrap();
    let cfg = lab.config_text(NetBoot::Ipxe, u);
    assert!(cfg.contains("goto boot_partition\n"), "{cfg}");
    assert!(
        cfg.contains(&format!(
            "kernel http://192.0.2.1:8080/{u}/kernel root=UUID={ROOT_UUID} ro console=ttyS0 initrd=ramdisk"
        )),
        "{cfg}"
    );
    let dir = lab.layout.node_dir(NetBoot::Ipxe, u);
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["config", "kernel", "ramdisk"]);
    assert_eq!(
        std::fs::read(dir.join("kernel")).unwrap(),
        b"instance kernel"
    );

    // A ramdisk boot: boot_ramdisk with the node's ramdisk arguments.
    let pxe = lab.pxe();
    let (k, r) = (lab.file_url("os.vmlinuz"), lab.file_url("os.initrd"));
    let mut task = deployed(&lab, &pxe, |n| {
        n.instance_info.insert("kernel".into(), json!(k));
        n.instance_info.insert("ramdisk".into(), json!(r));
        n.instance_info
            .insert("capabilities".into(), json!("boot_option:ramdisk"));
        n.instance_info
            .insert("ramdisk_kernel_arguments".into(), json!("rd.shell"));
        n.properties
            .insert("capabilities".into(), json!("boot_mode:bios"));
    })
    .await;
    let u = task.node.uuid;
    pxe.prepare_instance(&mut task).await.unwrap();
    let cfg = lab.config_text(NetBoot::Pxe, u);
    assert!(cfg.contains("DEFAULT boot_ramdisk"), "{cfg}");
    assert!(
        cfg.contains("APPEND root=/dev/ram0 nofb vga=normal rd.shell"),
        "{cfg}"
    );
    assert!(cfg.contains(&format!("KERNEL {u}/kernel")), "{cfg}");
}

#[tokio::test]
async fn take_over_regenerates_active_nodes_and_clean_up_removes_only_the_node() {
    let lab = Lab::new(PxeSettings::default()).await;
    let pxe = lab.pxe();
    let (k, r) = (lab.file_url("os.vmlinuz"), lab.file_url("os.initrd"));
    let partition = move |n: &mut Node| {
        n.instance_info.insert("kernel".into(), json!(k));
        n.instance_info.insert("ramdisk".into(), json!(r));
        n.instance_info
            .insert("image_type".into(), json!("partition"));
        n.driver_internal_info
            .insert("root_uuid_or_disk_id".into(), json!(ROOT_UUID));
    };
    // Another conductor deployed this node; this one has no files for it.
    let mut active = lab
        .task("pxe", |n| {
            partition(n);
            n.provision_state = ProvisionState::Active;
        })
        .await;
    let mut waiting = lab
        .task("pxe", |n| n.provision_state = ProvisionState::DeployWait)
        .await;
    // The waiting node's ramdisk config comes back as its deploy wrote it.
    pxe.prepare_ramdisk(&mut waiting, &ipa_params())
        .await
        .unwrap();
    let deployed = lab.tree(lab.layout.tftp_root());
    let config = lab.config_text(NetBoot::Pxe, waiting.node.uuid);
    pxe.clean_up_ramdisk(&mut waiting).await.unwrap();
    assert_ne!(lab.tree(lab.layout.tftp_root()), deployed);
    pxe.take_over(&mut waiting, &ipa_params()).await.unwrap();
    assert_eq!(lab.tree(lab.layout.tftp_root()), deployed);
    assert_eq!(lab.config_text(NetBoot::Pxe, waiting.node.uuid), config);
    pxe.clean_up_ramdisk(&mut waiting).await.unwrap();
    pxe.take_over(&mut active, &ipa_params()).await.unwrap();
    let u = active.node.uuid;
    let cfg = lab.config_text(NetBoot::Pxe, u);
    assert!(
        cfg.contains(&format!(
            "linux /{u}/kernel root=UUID={ROOT_UUID} ro nofb vga=normal"
        )),
        "{cfg}"
    );
    let with_active = lab.tree(lab.layout.tftp_root());

    // A second node's deploy, then its clean-up, leaves the first node's files as they were.
    let mut other = lab.task("pxe", |_| {}).await;
    pxe.prepare_ramdisk(&mut other, &ipa_params())
        .await
        .unwrap();
    assert_ne!(lab.tree(lab.layout.tftp_root()), with_active);
    pxe.clean_up_ramdisk(&mut other).await.unwrap();
    assert_eq!(lab.tree(lab.layout.tftp_root()), with_active);
    pxe.clean_up_instance(&mut active).await.unwrap();
    assert_eq!(lab.tree(lab.layout.tftp_root()), ["grub/grub.cfg"]);
    // The cache keeps its masters; only the links went.
    let masters: Vec<PathBuf> = std::fs::read_dir(lab.config.cache.dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!masters.is_empty());
}

#[tokio::test]
async fn a_node_being_rescued_boots_its_rescue_kernel_and_ramdisk() {
    let lab = Lab::new(PxeSettings::default()).await;
    let pxe = lab.pxe();
    std::fs::write(lab.dir.path().join("rescue.kernel"), b"rescue kernel").unwrap();
    std::fs::write(lab.dir.path().join("rescue.initramfs"), b"rescue ramdisk").unwrap();
    let rescue = |n: &mut Node| {
        n.provision_state = crate::model::ProvisionState::Rescuing;
        n.driver_info
            .insert("rescue_kernel".into(), json!(lab.file_url("rescue.kernel")));
        n.driver_info.insert(
            "rescue_ramdisk".into(),
            json!(lab.dir.path().join("rescue.initramfs")),
        );
    };
    let mut task = lab.task("pxe", rescue).await;
    let u = task.node.uuid;
    pxe.prepare_ramdisk(&mut task, &ipa_params()).await.unwrap();
    let file = |f| std::fs::read(lab.layout.node_file(NetBoot::Pxe, u, f)).unwrap();
    assert_eq!(file(NodeFile::DeployKernel), b"rescue kernel");
    assert_eq!(file(NodeFile::DeployRamdisk), b"rescue ramdisk");

    // Without rescue images, and outside the rescue states, the deploy ramdisk boots.
    let mut task = lab
        .task("pxe", |n| {
            n.provision_state = crate::model::ProvisionState::Rescuing
        })
        .await;
    let u = task.node.uuid;
    pxe.prepare_ramdisk(&mut task, &ipa_params()).await.unwrap();
    let file = |f| std::fs::read(lab.layout.node_file(NetBoot::Pxe, u, f)).unwrap();
    assert_eq!(file(NodeFile::DeployKernel), b"deploy kernel");
    let mut task = lab
        .task("pxe", |n| {
            n.driver_info
                .insert("rescue_kernel".into(), json!("file:///nonexistent"));
        })
        .await;
    let u = task.node.uuid;
    pxe.prepare_ramdisk(&mut task, &ipa_params()).await.unwrap();
    let file = |f| std::fs::read(lab.layout.node_file(NetBoot::Pxe, u, f)).unwrap();
    assert_eq!(file(NodeFile::DeployKernel), b"deploy kernel");
}
