//! What a `direct` deploy will write: the node's `instance_info` checked and turned into the
//! agent's `image_info` (Ironic's keys, so the unmodified agent understands it).

use serde_json::{Map, Value, json};

use crate::config::{AgentSettings, BootMode};
use crate::model::Node;

/// A problem with the node's deploy input, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instance_info.{field}: {reason}")]
pub struct PlanError {
    pub field: &'static str,
    pub reason: String,
}

fn err(field: &'static str, reason: impl Into<String>) -> PlanError {
    PlanError {
        field,
        reason: reason.into(),
    }
}

/// How a partition image is laid out on the disk (sizes in MiB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLayout {
    pub root_mb: u64,
    pub swap_mb: u64,
    pub ephemeral_mb: u64,
    pub ephemeral_format: Option<String>,
    pub preserve_ephemeral: bool,
    pub disk_label: String,
    pub kernel: String,
    pub ramdisk: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageKind {
    WholeDisk,
    Partition(PartitionLayout),
}

/// The checked deploy input of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployPlan {
    pub image_source: String,
    pub kind: ImageKind,
    pub boot_mode: BootMode,
    /// Ask the agent to install a boot loader once the image is written.
    pub install_bootloader: bool,
}

impl DeployPlan {
    pub fn is_whole_disk(&self) -> bool {
        self.kind == ImageKind::WholeDisk
    }
}

/// How the agent checks what it downloads: `os_hash_algo` + `os_hash_value`, or `checksum`
/// (a plain hash or a checksum-file URL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checksum {
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    pub checksum: Option<String>,
}

/// Where the agent downloads the image from and how it checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSource {
    pub url: String,
    pub disk_format: String,
    pub checksum: Checksum,
}

fn text<'a>(info: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    info.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A size given as a JSON number or a numeric string (clients send either).
fn size(info: &Map<String, Value>, field: &'static str) -> Result<Option<u64>, PlanError> {
    match info.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| err(field, format!("{n} is not a whole number of MiB/GiB >= 0"))),
        Some(Value::String(s)) => s
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| err(field, format!("{s:?} is not a whole number"))),
        Some(other) => Err(err(field, format!("{other} is not a number"))),
    }
}

fn flag(info: &Map<String, Value>, field: &'static str) -> Result<bool, PlanError> {
    match info.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(err(field, format!("{s:?} is not a boolean"))),
        },
        Some(other) => Err(err(field, format!("{other} is not a boolean"))),
    }
}

/// Checks the node's `instance_info` for a `direct` deploy.
pub fn plan(node: &Node, settings: &AgentSettings) -> Result<DeployPlan, PlanError> {
    let info = &node.instance_info;
    let image_source = text(info, "image_source")
        .ok_or_else(|| {
            err(
                "image_source",
                "is required (URL or file:// path of the image)",
            )
        })?
        .to_string();
    let boot_mode = node
        .boot_mode(settings.default_boot_mode)
        .map_err(|e| err("deploy_boot_mode", e.to_string()))?;
    let kernel = text(info, "kernel");
    let ramdisk = text(info, "ramdisk");
    let partition = match text(info, "image_type") {
        Some("partition") => true,
        Some("whole-disk") => false,
        Some(other) => {
            return Err(err(
                "image_type",
                format!("{other:?} must be partition or whole-disk"),
            ));
        }
        None => kernel.is_some() && ramdisk.is_some(),
    };
    let swap_mb = size(info, "swap_mb")?.unwrap_or(0);
    let ephemeral_mb = match size(info, "ephemeral_mb")? {
        Some(mb) => mb,
        None => size(info, "ephemeral_gb")?.unwrap_or(0) * 1024,
    };
    let kind = if partition {
        let root_mb = match size(info, "root_mb")? {
            Some(mb) => mb,
            None => size(info, "root_gb")?.unwrap_or(0) * 1024,
        };
        if root_mb == 0 {
            return Err(err(
                "root_gb",
                "a partition image needs root_gb (or root_mb) > 0",
            ));
        }
        let (Some(kernel), Some(ramdisk)) = (kernel, ramdisk) else {
            return Err(err(
                "kernel",
                "a partition image boots through its own kernel and ramdisk: set kernel and ramdisk",
            ));
        };
        let disk_label = text(info, "disk_label")
            .map(String::from)
            .or_else(|| node.capability("disk_label"))
            .unwrap_or_else(|| match boot_mode {
                BootMode::Uefi => "gpt".into(),
                BootMode::Bios => "msdos".into(),
            });
        if disk_label != "msdos" && disk_label != "gpt" {
            return Err(err(
                "disk_label",
                format!("{disk_label:?} must be msdos or gpt"),
            ));
        }
        ImageKind::Partition(PartitionLayout {
            root_mb,
            swap_mb,
            ephemeral_mb,
            ephemeral_format: (ephemeral_mb > 0)
                .then(|| text(info, "ephemeral_format").unwrap_or("ext4").to_string()),
            preserve_ephemeral: flag(info, "preserve_ephemeral")?,
            disk_label,
            kernel: kernel.to_string(),
            ramdisk: ramdisk.to_string(),
        })
    } else {
        if swap_mb > 0 || ephemeral_mb > 0 {
            return Err(err(
                if swap_mb > 0 {
                    "swap_mb"
                } else {
                    "ephemeral_mb"
                },
                "only partition images can have swap or ephemeral partitions",
            ));
        }
        ImageKind::WholeDisk
    };
    Ok(DeployPlan {
        image_source,
        kind,
        boot_mode,
        install_bootloader: flag(info, "install_bootloader")?,
    })
}

/// The checksum the node's `instance_info` gives for `image_source`: `image_os_hash_algo` +
/// `image_os_hash_value`, or `image_checksum` (`algo:value`, a bare hash, or a checksum-file
/// URL). Used when the agent downloads the image from its origin.
pub fn declared_checksum(node: &Node) -> Result<Checksum, PlanError> {
    let info = &node.instance_info;
    if let (Some(a), Some(v)) = (
        text(info, "image_os_hash_algo"),
        text(info, "image_os_hash_value"),
    ) {
        return Ok(Checksum {
            os_hash_algo: Some(a.to_string()),
            os_hash_value: Some(v.to_string()),
            checksum: None,
        });
    }
    match text(info, "image_checksum") {
        Some(c) if c.starts_with("http://") || c.starts_with("https://") => Ok(Checksum {
            checksum: Some(c.to_string()),
            ..Default::default()
        }),
        Some(c) => Ok(match c.split_once(':') {
            Some((algo, value)) => Checksum {
                os_hash_algo: Some(algo.to_string()),
                os_hash_value: Some(value.to_string()),
                checksum: None,
            },
            None => Checksum {
                checksum: Some(c.to_string()),
                ..Default::default()
            },
        }),
        None => Err(err(
            "image_checksum",
            "the agent verifies what it downloads: set image_checksum \
             (or image_os_hash_algo and image_os_hash_value)",
        )),
    }
}

/// The agent's `image_info` for `write_image` (Ironic's keys).
pub fn image_info(
    node: &Node,
    plan: &DeployPlan,
    source: &ImageSource,
    settings: &AgentSettings,
) -> Value {
    // The agent skips writing an image id it already wrote in the same process (fast track,
    // a redeploy without a reboot): the id names the source *and* its content, so a changed
    // image behind the same URL is written again.
    let content = source
        .checksum
        .os_hash_value
        .as_deref()
        .or(source.checksum.checksum.as_deref())
        .unwrap_or_default();
    let id_key = format!("{}\n{content}", plan.image_source);
    let mut ii = json!({
        "id": uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, id_key.as_bytes()).to_string(),
        "urls": [source.url],
        "disk_format": source.disk_format,
        "container_format": "bare",
        "stream_raw_images": settings.stream_raw_images,
        "node_uuid": node.uuid.to_string(),
    });
    let m = ii
        .as_object_mut()
        .unwrap_or_else(|| unreachable!("built as an object above"));
    if let (Some(a), Some(v)) = (
        &source.checksum.os_hash_algo,
        &source.checksum.os_hash_value,
    ) {
        m.insert("os_hash_algo".into(), json!(a));
        m.insert("os_hash_value".into(), json!(v));
    }
    if let Some(c) = &source.checksum.checksum {
        m.insert("checksum".into(), json!(c));
    }
    if let ImageKind::Partition(p) = &plan.kind {
        m.insert("image_type".into(), json!("partition"));
        m.insert("root_mb".into(), json!(p.root_mb));
        m.insert("root_gb".into(), json!(p.root_mb.div_ceil(1024)));
        m.insert("swap_mb".into(), json!(p.swap_mb));
        m.insert("ephemeral_mb".into(), json!(p.ephemeral_mb));
        m.insert("ephemeral_format".into(), json!(p.ephemeral_format));
        m.insert("preserve_ephemeral".into(), json!(p.preserve_ephemeral));
        m.insert("disk_label".into(), json!(p.disk_label));
        m.insert("deploy_boot_mode".into(), json!(plan.boot_mode.as_str()));
        m.insert("boot_option".into(), json!("local"));
        m.insert("kernel".into(), json!(p.kernel));
        m.insert("ramdisk".into(), json!(p.ramdisk));
    }
    ii
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HardwareType;

    fn node(info: Value) -> Node {
        let mut n = Node::new(
            uuid::Uuid::new_v4(),
            HardwareType::find("fake-hardware").unwrap(),
            crate::model::now(),
        );
        n.instance_info = info.as_object().unwrap().clone();
        n
    }

    #[test]
    fn whole_disk_by_default_and_partition_with_kernel_and_ramdisk() {
        let s = AgentSettings::default();
        let wd = plan(&node(json!({"image_source": "http://x/disk.img"})), &s).unwrap();
        assert!(wd.is_whole_disk());
        assert_eq!(wd.boot_mode, BootMode::Uefi);
        let mut n = node(
            json!({"image_source": "http://x/root.img", "kernel": "http://x/k",
            "ramdisk": "http://x/r", "root_gb": 1, "swap_mb": "64"}),
        );
        n.properties.insert(
            "capabilities".into(),
            json!("boot_mode:bios,disk_label:msdos"),
        );
        let p = plan(&n, &s).unwrap();
        let ImageKind::Partition(layout) = &p.kind else {
            panic!("{p:?}")
        };
        assert_eq!((layout.root_mb, layout.swap_mb), (1024, 64));
        assert_eq!(layout.disk_label, "msdos");
        assert_eq!(p.boot_mode, BootMode::Bios);
        let source = ImageSource {
            url: "http://h/agent_images/n".into(),
            disk_format: "raw".into(),
            checksum: Checksum {
                os_hash_algo: Some("sha256".into()),
                os_hash_value: Some("ab".into()),
                checksum: None,
            },
        };
        let ii = image_info(&n, &p, &source, &s);
        assert_eq!(ii["image_type"], "partition");
        assert_eq!(ii["root_mb"], 1024);
        assert_eq!(ii["deploy_boot_mode"], "bios");
        assert_eq!(ii["urls"][0], "http://h/agent_images/n");
        assert_eq!(ii["ephemeral_format"], Value::Null);
        // Same source, same content: same id; new content behind the same URL: a new id.
        assert_eq!(image_info(&n, &p, &source, &s)["id"], ii["id"]);
        let mut changed = source.clone();
        changed.checksum.os_hash_value = Some("cd".into());
        assert_ne!(image_info(&n, &p, &changed, &s)["id"], ii["id"]);
    }

    #[test]
    fn bad_input_names_the_field() {
        let s = AgentSettings::default();
        for (info, field) in [
            (json!({}), "image_source"),
            (json!({"image_source": "x", "swap_mb": 10}), "swap_mb"),
            (
                json!({"image_source": "x", "image_type": "partition", "root_gb": 1}),
                "kernel",
            ),
            (
                json!({"image_source": "x", "image_type": "partition", "kernel": "k", "ramdisk": "r"}),
                "root_gb",
            ),
            (
                json!({"image_source": "x", "image_type": "tarball"}),
                "image_type",
            ),
            (
                json!({"image_source": "x", "deploy_boot_mode": "efi"}),
                "deploy_boot_mode",
            ),
            (
                json!({"image_source": "x", "kernel": "k", "ramdisk": "r", "root_mb": "lots"}),
                "root_mb",
            ),
        ] {
            let e = plan(&node(info.clone()), &s).unwrap_err();
            assert_eq!(e.field, field, "{info}: {e}");
        }
    }

    #[test]
    fn checksums_in_every_spelling() {
        let c = |v: Value| {
            declared_checksum(&node(v)).map(|c| (c.os_hash_algo, c.os_hash_value, c.checksum))
        };
        assert_eq!(
            c(json!({"image_checksum": "sha256:abc"})).unwrap(),
            (Some("sha256".into()), Some("abc".into()), None)
        );
        assert_eq!(
            c(json!({"image_checksum": "http://x/SHA256SUMS"})).unwrap(),
            (None, None, Some("http://x/SHA256SUMS".into()))
        );
        assert_eq!(
            c(json!({"image_os_hash_algo": "sha512", "image_os_hash_value": "f", "image_checksum": "x"})).unwrap(),
            (Some("sha512".into()), Some("f".into()), None)
        );
        assert_eq!(c(json!({})).unwrap_err().field, "image_checksum");
    }
}
