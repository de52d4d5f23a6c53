//! What can be checked without a BMC: inputs, builds, publishing and clean up of the record.
//! The BMC side runs against sushy-tools in `tests/it/vmedia.rs`.

use std::io::Read;
use std::path::Path;

use serde_json::json;

use super::record::{MediaKind, MediaRecord};
use super::*;
use crate::media::MediaSettings;
use crate::model::{HardwareType, Node};
use crate::publish::{Backend, PublishMetrics, PublishSettings};

struct Lab {
    dir: tempfile::TempDir,
    boot: VirtualMediaBoot,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let http_root = dir.path().join("httpboot");
        std::fs::create_dir_all(&http_root).unwrap();
        let mut registry = crate::metrics::Registry::default();
        let cache = ImageCache::open(
            Default::default(),
            &dir.path().join("cache"),
            std::slice::from_ref(&http_root),
            &mut registry,
        )
        .unwrap();
        let config = VmediaConfig {
            redfish: Redfish::new(Default::default(), None).unwrap(),
            cache: Arc::new(cache),
            media: Arc::new(MediaBuilder::new(MediaSettings::default()).unwrap()),
            publishers: Publishers::new(
                &PublishSettings::default(),
                &http_root,
                "http://127.0.0.1:8080",
                PublishMetrics::default(),
            )
            .unwrap(),
            work_dir: dir.path().join("vmedia-work"),
            kernel_append_params: "nofb vga=normal".into(),
            default_boot_mode: BootMode::Uefi,
        };
        let boot = VirtualMediaBoot::new(config, BootMetrics::default()).unwrap();
        Lab { dir, boot }
    }

    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    }

    fn ctx(&self, driver_info: serde_json::Value) -> NodeContext {
        let mut n = Node::new(
            Uuid::new_v4(),
            HardwareType::find("redfish").unwrap(),
            crate::model::now(),
        );
        n.driver_info = driver_info.as_object().unwrap().clone();
        NodeContext::new(n, vec![])
    }

    fn published(&self) -> Vec<String> {
        let dir = self.dir.path().join("httpboot/redfish");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

fn agent() -> Vec<(String, String)> {
    vec![
        ("ipa-api-url".into(), "http://127.0.0.1:6385".into()),
        ("ipa-agent-token".into(), "T0ken_-x".into()),
        ("boot_method".into(), "vmedia".into()),
    ]
}

/// `parameters.txt` and the volume label of a FAT image.
fn floppy_contents(path: &Path) -> (String, String) {
    let file = std::fs::File::open(path).unwrap();
    let fs = fatfs::FileSystem::new(file, fatfs::FsOptions::new()).unwrap();
    let mut text = String::new();
    fs.root_dir()
        .open_file("parameters.txt")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    (fs.volume_label(), text)
}

#[tokio::test]
async fn a_prebuilt_deploy_iso_is_kept_as_it_is_and_the_parameters_go_on_a_floppy() {
    let lab = Lab::new();
    let iso = lab.file("ipa.iso", b"an operator's deploy ISO");
    let ctx = lab.ctx(json!({"redfish_address": "http://127.0.0.1:9", "deploy_iso": iso}));
    let inputs = lab.boot.ramdisk_inputs(&ctx).unwrap();
    let record = MediaRecord::fresh().unwrap();
    let (scratch, built) = lab
        .boot
        .build_ramdisk_media(ctx.node.uuid, &inputs, &agent(), &record)
        .await
        .unwrap();
    assert_eq!(built.len(), 2);
    assert_eq!(built[0].kind, MediaKind::DeployIso);
    assert_eq!(
        std::fs::read(&built[0].path).unwrap(),
        b"an operator's deploy ISO"
    );
    assert_eq!(built[1].kind, MediaKind::ConfigFloppy);
    let (label, params) = floppy_contents(&built[1].path);
    assert_eq!(label.trim_end(), "ir-vfd-dev");
    assert_eq!(
        params,
        "ipa-api-url=http://127.0.0.1:6385\nipa-agent-token=T0ken_-x\nboot_method=vmedia"
    );
    // The same inputs give the same floppy.
    let (_again_dir, again) = lab
        .boot
        .build_ramdisk_media(ctx.node.uuid, &inputs, &agent(), &record)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&built[1].path).unwrap(),
        std::fs::read(&again[1].path).unwrap()
    );
    // The scratch directory goes with its handle; the cached ISO stays in the cache.
    let scratch_dir = built[1].path.parent().unwrap().to_path_buf();
    drop(scratch);
    assert!(!scratch_dir.exists());
    assert!(built[0].path.exists());
}

#[tokio::test]
async fn everything_recorded_is_unpublished_and_forgotten() {
    let lab = Lab::new();
    let iso = lab.file("ipa.iso", b"iso bytes");
    let mut ctx = lab.ctx(json!({"redfish_address": "http://127.0.0.1:9", "deploy_iso": iso}));
    let inputs = lab.boot.ramdisk_inputs(&ctx).unwrap();
    let mut record = MediaRecord::fresh().unwrap();
    let (_scratch, built) = lab
        .boot
        .build_ramdisk_media(ctx.node.uuid, &inputs, &agent(), &record)
        .await
        .unwrap();
    let publisher = lab.boot.publisher(&inputs.publishing).unwrap();
    for b in &built {
        let p = crate::publish::Publisher::publish(&publisher, &b.path, &record.name(b.kind))
            .await
            .unwrap();
        assert!(
            p.url.starts_with("http://127.0.0.1:8080/redfish/"),
            "{}",
            p.url
        );
        assert!(!p.url.contains(&ctx.node.uuid.to_string()));
        record.add(b.kind, Backend::Local);
    }
    record.write(&mut ctx.node);
    assert_eq!(lab.published().len(), 2);
    lab.boot.unpublish_recorded(&mut ctx).await.unwrap();
    assert!(lab.published().is_empty());
    assert!(!ctx.node.driver_internal_info.contains_key(record::KEY));
    // Nothing recorded: nothing to do.
    lab.boot.unpublish_recorded(&mut ctx).await.unwrap();
}

#[test]
fn validate_names_what_is_missing_or_unusable() {
    let lab = Lab::new();
    let ok = lab.ctx(json!({"redfish_address": "https://10.0.0.5",
        "deploy_kernel": "http://x/k", "deploy_ramdisk": "http://x/r"}));
    lab.boot.validate(&ok).unwrap();
    for (info, want) in [
        (json!({"deploy_iso": "/x.iso"}), "redfish_address"),
        (
            json!({"redfish_address": "https://10.0.0.5", "deploy_iso": "/x.iso",
                   "vmedia_publisher": "swift"}),
            "[vmedia.swift] is not configured",
        ),
        (
            json!({"redfish_address": "https://10.0.0.5"}),
            "deploy_kernel and deploy_ramdisk",
        ),
    ] {
        let err = lab.boot.validate(&lab.ctx(info.clone())).unwrap_err();
        assert!(err.to_string().contains(want), "{info}: {err}");
    }
    let mut partition = lab.ctx(json!({"redfish_address": "https://10.0.0.5",
        "deploy_iso": "/x.iso"}));
    partition
        .node
        .instance_info
        .insert("image_type".into(), json!("partition"));
    let err = lab.boot.validate(&partition).unwrap_err().to_string();
    assert!(err.contains("instance_info.kernel"), "{err}");
}

#[test]
fn a_node_being_rescued_boots_its_rescue_media_when_given() {
    use crate::model::ProvisionState;
    let node = |info: serde_json::Value, state: ProvisionState| {
        let mut n = Node::new(
            Uuid::new_v4(),
            HardwareType::find("redfish").unwrap(),
            crate::model::now(),
        );
        n.driver_info = info.as_object().unwrap().clone();
        n.provision_state = state;
        n
    };
    let deploy = json!({"deploy_kernel": "http://x/dk", "deploy_ramdisk": "http://x/dr"});
    let built = |k: &str, r: &str| DeployMedia::Built {
        kernel: k.into(),
        ramdisk: r.into(),
    };
    let mut with_rescue = deploy.clone();
    with_rescue["rescue_kernel"] = json!("http://x/rk");
    with_rescue["rescue_ramdisk"] = json!("http://x/rr");
    let mut with_rescue_iso = deploy.clone();
    with_rescue_iso["rescue_iso"] = json!("http://x/rescue.iso");
    for state in [ProvisionState::Rescuing, ProvisionState::RescueWait] {
        let media = |info: &serde_json::Value| inputs::deploy_media(&node(info.clone(), state));
        assert_eq!(
            media(&with_rescue).unwrap(),
            built("http://x/rk", "http://x/rr")
        );
        assert_eq!(
            media(&with_rescue_iso).unwrap(),
            DeployMedia::Prebuilt {
                iso: "http://x/rescue.iso".into()
            }
        );
        // Without rescue media the deploy agent rescues.
        assert_eq!(media(&deploy).unwrap(), built("http://x/dk", "http://x/dr"));
        // A half-given rescue pair is named, not silently replaced.
        let err = media(&json!({"rescue_kernel": "http://x/rk"})).unwrap_err();
        assert!(err.to_string().contains("rescue_ramdisk"), "{err}");
    }
    // Outside rescue the deploy media boot even when rescue media are given.
    let n = node(with_rescue.clone(), ProvisionState::DeployWait);
    assert_eq!(
        inputs::deploy_media(&n).unwrap(),
        built("http://x/dk", "http://x/dr")
    );
}

#[test]
fn instance_command_lines() {
    let lab = Lab::new();
    let mut ctx = lab.ctx(json!({"redfish_address": "https://10.0.0.5",
        "deploy_iso": "/x.iso", "kernel_append_params": "console=ttyS0"}));
    let info = &mut ctx.node.instance_info;
    info.insert("kernel".into(), json!("http://x/vmlinuz"));
    info.insert("ramdisk".into(), json!("http://x/initrd"));
    info.insert("image_type".into(), json!("partition"));
    ctx.node
        .driver_internal_info
        .insert("is_whole_disk_image".into(), json!(false));
    let err = lab
        .boot
        .instance_inputs(&ctx.node)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("root_uuid_or_disk_id"), "{err}");
    ctx.node
        .driver_internal_info
        .insert("root_uuid_or_disk_id".into(), json!("1b2c-uuid"));
    let i = lab.boot.instance_inputs(&ctx.node).unwrap().unwrap();
    assert_eq!(i.iso.cmdline, "console=ttyS0 root=UUID=1b2c-uuid");
    assert_eq!(i.iso.kernel, "http://x/vmlinuz");
    ctx.node
        .instance_info
        .insert("capabilities".into(), json!("boot_option:ramdisk"));
    ctx.node
        .instance_info
        .insert("ramdisk_kernel_arguments".into(), json!("rd.shell"));
    let i = lab.boot.instance_inputs(&ctx.node).unwrap().unwrap();
    assert_eq!(i.iso.cmdline, "root=/dev/ram0 text rd.shell");
    ctx.node.instance_info.clear();
    ctx.node
        .driver_internal_info
        .insert("is_whole_disk_image".into(), json!(true));
    assert!(lab.boot.instance_inputs(&ctx.node).unwrap().is_none());
}

#[test]
fn leftover_builds_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("vmedia-work");
    std::fs::create_dir_all(work.join("crashed-build")).unwrap();
    std::fs::write(work.join("crashed-build/deploy.iso"), b"half").unwrap();
    let lab = Lab::new();
    let config = VmediaConfig {
        work_dir: work.clone(),
        redfish: lab.boot.config.redfish.clone(),
        cache: lab.boot.config.cache.clone(),
        media: lab.boot.config.media.clone(),
        publishers: lab.boot.config.publishers.clone(),
        kernel_append_params: "nofb".into(),
        default_boot_mode: BootMode::Bios,
    };
    VirtualMediaBoot::new(config, BootMetrics::default()).unwrap();
    assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0);
}
