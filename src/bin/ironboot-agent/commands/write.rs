//! Writing an instance image: `image_info` checked as IPA checks it, the install target
//! chosen by root device hints, then either a whole-disk image streamed onto the disk (its
//! GPT backup moved to the end of the disk, a `config-2` partition added at the end for a
//! config drive) or a partition image written into the root partition of a new table (with
//! the EFI system, BIOS boot, ephemeral, swap and config drive partitions IPA makes).
//!
//! A deploy never reports success for an image it did not write completely and verify; when
//! writing fails after the disk was touched, the disk's metadata is erased so that nothing
//! half-written can boot.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value, json};

use super::{RestError, blocking};
use crate::agent::Agent;
use crate::disk::{self, BlockDevice, DiskError, erase, fs, table};
use crate::download::{self, Target};

const MIB: u64 = 1 << 20;
/// IPA's default sizes (`efi_system_partition_size`, `bios_boot_partition_size`).
const ESP_MIB: u64 = 550;
const BIOS_BOOT_MIB: u64 = 1;

/// A partition image's layout (`image_type` = `partition`).
#[derive(Debug, Clone)]
pub struct PartitionSpec {
    pub root_mb: u64,
    pub swap_mb: u64,
    pub ephemeral_mb: u64,
    pub ephemeral_format: Option<String>,
    pub preserve_ephemeral: bool,
    pub boot_mode: String,
    pub local_boot: bool,
    pub disk_label: String,
}

/// The `image_info` of `write_image` / `prepare_image`.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub id: String,
    pub urls: Vec<String>,
    pub disk_format: Option<String>,
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    pub partition: Option<PartitionSpec>,
    pub configdrive: Option<Value>,
    pub basic_auth: Option<(String, String)>,
    /// `Authorization` header value (decoded `image_request_authorization`).
    pub authorization: Option<String>,
    pub proxies: Vec<(String, String)>,
    pub no_proxy: Option<String>,
}

fn text(m: &Map<String, Value>, k: &str) -> Option<String> {
    m.get(k)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

fn mb(m: &Map<String, Value>, k: &str) -> Result<u64, RestError> {
    match m.get(k) {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(Value::Null) => Some(0),
        _ => {
            return Err(RestError::invalid_params(format!(
                "Image is missing '{k}' field (partition images need it)."
            )));
        }
    }
    .ok_or_else(|| {
        RestError::invalid_params(format!("image_info.{k} must be a whole number of MiB"))
    })
}

impl PartitionSpec {
    /// `Some` for `image_type` = `partition` (IPA reads these keys directly: required).
    fn parse(m: &Map<String, Value>) -> Result<Option<PartitionSpec>, RestError> {
        if text(m, "image_type").as_deref() != Some("partition") {
            return Ok(None);
        }
        let spec = PartitionSpec {
            root_mb: mb(m, "root_mb")?,
            swap_mb: mb(m, "swap_mb")?,
            ephemeral_mb: mb(m, "ephemeral_mb")?,
            ephemeral_format: text(m, "ephemeral_format"),
            preserve_ephemeral: m
                .get("preserve_ephemeral")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            boot_mode: text(m, "deploy_boot_mode").unwrap_or_else(|| "bios".into()),
            local_boot: text(m, "boot_option").as_deref() != Some("netboot"),
            disk_label: text(m, "disk_label").unwrap_or_else(|| "msdos".into()),
        };
        if spec.root_mb == 0 {
            return Err(RestError::invalid_params("image_info.root_mb must be > 0"));
        }
        Ok(Some(spec))
    }
}

/// HTTP basic credentials (`image_server_auth_strategy` = `http_basic`) and the
/// `Authorization` header (base64 in `image_request_authorization`).
#[allow(clippy::type_complexity)]
fn auth(m: &Map<String, Value>) -> Result<(Option<(String, String)>, Option<String>), RestError> {
    let basic =
        (text(m, "image_server_auth_strategy").as_deref() == Some("http_basic")).then(|| {
            (
                text(m, "image_server_user").unwrap_or_default(),
                text(m, "image_server_password").unwrap_or_default(),
            )
        });
    let header = match text(m, "image_request_authorization") {
        Some(b64) => Some(
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &b64)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    RestError::invalid_params("image_request_authorization is not base64 text")
                })?,
        ),
        None => None,
    };
    Ok((basic, header))
}

impl ImageInfo {
    pub fn parse(v: Option<&Value>) -> Result<ImageInfo, RestError> {
        let m = v
            .and_then(Value::as_object)
            .ok_or_else(|| RestError::invalid_params("image_info must be an object"))?;
        for field in ["id", "urls"] {
            if !m.contains_key(field) {
                return Err(RestError::invalid_params(format!(
                    "Image is missing '{field}' field."
                )));
            }
        }
        let id = text(m, "id")
            .ok_or_else(|| RestError::invalid_params("image_info.id must be a non-empty string"))?;
        let urls: Vec<String> = m["urls"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        if urls.is_empty() || Some(urls.len()) != m["urls"].as_array().map(Vec::len) {
            return Err(RestError::invalid_params(
                "Image 'urls' must be a list with at least one element, all strings.",
            ));
        }
        let (checksum, algo, value) = (
            text(m, "checksum"),
            text(m, "os_hash_algo"),
            text(m, "os_hash_value"),
        );
        if checksum.is_none() && (algo.is_none() || value.is_none()) {
            return Err(RestError::invalid_params(
                "Image checksum is not available, either the 'checksum' field or the \
                 'os_hash_algo' field and 'os_hash_value' field must be provided in image_info",
            ));
        }
        let partition = PartitionSpec::parse(m)?;
        let (basic_auth, authorization) = auth(m)?;
        let proxies = m
            .get("proxies")
            .and_then(Value::as_object)
            .map(|p| {
                p.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(ImageInfo {
            id,
            urls,
            disk_format: text(m, "disk_format"),
            checksum,
            os_hash_algo: algo,
            os_hash_value: value,
            partition,
            configdrive: m.get("configdrive").filter(|v| !v.is_null()).cloned(),
            basic_auth,
            authorization,
            proxies,
            no_proxy: text(m, "no_proxy"),
        })
    }

    /// Refuses formats that are not written byte for byte (IPA converts them with qemu-img,
    /// which this ramdisk does not have).
    fn check_format(&self) -> Result<(), RestError> {
        match self
            .disk_format
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("raw") | Some("gpt") | Some("iso") => Ok(()),
            Some(other) => Err(RestError::invalid_image(format!(
                "image {} has disk_format {other}; ironboot-agent writes raw images only \
                 (no qemu-img in its ramdisk): let ironboot convert it ([agent] \
                 image_download_source = http, the default) or provide a raw image",
                self.id
            ))),
        }
    }
}

fn disk_error(e: DiskError) -> RestError {
    match e {
        DiskError::BadHints(_) => RestError::deployment(e.to_string()),
        _ => RestError::device_not_found(e.to_string()),
    }
}

/// `/dev/vda` + 2 → `/dev/vda2`; `/dev/nvme0n1` + 2 → `/dev/nvme0n1p2` (the kernel's names).
fn partition_path(dev: &Path, n: u32) -> String {
    let d = dev.display().to_string();
    if d.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{d}p{n}")
    } else {
        format!("{d}{n}")
    }
}

/// Best-effort clean-up after a failed write: nothing half-written may boot.
async fn scrub(file: &Arc<File>, dev: &BlockDevice) {
    let (f, size, sector) = (file.clone(), dev.size, dev.sector);
    let done = tokio::task::spawn_blocking(move || erase::erase_metadata(&f, size, sector)).await;
    match done {
        Ok(Ok(())) => {
            tracing::warn!(device = %dev.path.display(), "disk metadata erased after the failed write")
        }
        Ok(Err(e)) => {
            tracing::error!(device = %dev.path.display(), error = %e, "cannot erase the disk after a failed write")
        }
        Err(e) => tracing::error!(error = %e, "the clean-up after a failed write did not run"),
    }
}

/// Writes the image described by `info`; returns IPA's result text
/// (`image (<id>) written to device <dev> root_uuid=<uuid>`).
pub async fn prepare_image(
    agent: &Arc<Agent>,
    info: Option<&Value>,
    configdrive: Option<Value>,
) -> Result<String, RestError> {
    let info = ImageInfo::parse(info)?;
    info.check_format()?;
    let hints = disk::node_hints(agent.node().as_ref());
    let scope = agent.settings.disks.clone();
    let dev = blocking("choosing the install disk", move || {
        disk::install_device(&scope, &hints).map_err(disk_error)
    })
    .await?;
    tracing::info!(device = %dev.path.display(), size = dev.size, image = %info.id, "install target chosen");
    let expected = download::resolve_checksum(agent, &info).await?;
    let drive = match configdrive.as_ref().or(info.configdrive.as_ref()) {
        Some(v) => download::configdrive(agent, v).await?,
        None => None,
    };
    let path = dev.path.clone();
    let file = Arc::new(
        blocking("opening the install disk", move || {
            disk::open_rw(&path).map_err(disk_error)
        })
        .await?,
    );
    let touched = AtomicBool::new(false);
    let w = Writing {
        agent,
        info: &info,
        dev: &dev,
        file: &file,
        expected: &expected,
        touched: &touched,
    };
    let outcome = match &info.partition {
        Some(p) => write_partition_image(&w, p, drive).await,
        None => write_whole_disk(&w, drive).await,
    };
    match outcome {
        Ok((uuids, message)) => {
            agent.set_partition_uuids(uuids);
            Ok(message)
        }
        // Nothing written yet: the disk stays as it was.
        Err(e) if !touched.load(Ordering::SeqCst) => Err(e),
        Err(e) => {
            scrub(&file, &dev).await;
            Err(e)
        }
    }
}

type Written = (Map<String, Value>, String);

/// One image being written.
struct Writing<'a> {
    agent: &'a Agent,
    info: &'a ImageInfo,
    dev: &'a BlockDevice,
    file: &'a Arc<File>,
    expected: &'a ironboot::images::checksum::Expected,
    /// Set once the disk was written to: a failure after it erases the metadata.
    touched: &'a AtomicBool,
}

async fn write_whole_disk(w: &Writing<'_>, drive: Option<Vec<u8>>) -> Result<Written, RestError> {
    let Writing {
        agent,
        info,
        dev,
        file,
        expected,
        touched,
    } = *w;
    let device = dev.path.display().to_string();
    let (size, sector) = (dev.size, dev.sector);
    let target = Target {
        file: file.clone(),
        device: device.clone(),
        offset: 0,
        limit: dev.size,
        too_large: |image, room| {
            RestError::image_write(
                "the install disk",
                format!("the image ({image} bytes) does not fit on the disk ({room} bytes)"),
            )
        },
        erase_first: Some((size, sector)),
        erased: Default::default(),
    };
    let streamed = download::stream_to(agent, info, expected, &target).await;
    touched.store(target.erased.load(Ordering::SeqCst), Ordering::SeqCst);
    streamed?;
    let (f, d) = (file.clone(), device.clone());
    let disk_id = blocking("finishing the disk", move || {
        let fail = |e: &dyn std::fmt::Display| RestError::image_write(&d, e);
        table::relocate_gpt_backup(&f, size, sector).map_err(|e| fail(&e))?;
        if let Some(data) = drive {
            write_configdrive_at_end(&f, size, sector, &data).map_err(|e| fail(&e))?;
        }
        f.sync_all().map_err(|e| fail(&e))?;
        disk::reread_partitions(&f);
        table::mbr_disk_id(&f).map_err(|e| fail(&e))
    })
    .await?;
    let root = format!("0x{disk_id:08x}");
    let mut uuids = Map::new();
    uuids.insert("root uuid".into(), json!(root));
    Ok((
        uuids,
        format!(
            "image ({}) written to device {device} root_uuid={root}",
            info.id
        ),
    ))
}

/// A config drive on a whole-disk image: into an existing `config-2` partition, else a new
/// partition at the end of the disk (IPA's 64 MiB).
fn write_configdrive_at_end(f: &File, size: u64, sector: u64, data: &[u8]) -> Result<(), String> {
    let existing = table::read(f, sector)
        .map_err(|e| e.to_string())?
        .and_then(|t| {
            t.partitions.into_iter().find(|p| {
                fs::probe(f, p.start, p.size)
                    .ok()
                    .flatten()
                    .and_then(|i| i.label)
                    .is_some_and(|l| l.eq_ignore_ascii_case("config-2"))
            })
        });
    let part = match existing {
        Some(p) => p,
        None => table::add_at_end(f, size, sector, download::MAX_CONFIGDRIVE_BYTES, "config-2")
            .map_err(|e| format!("cannot create the config drive partition: {e}"))?,
    };
    if data.len() as u64 > part.size {
        return Err(format!(
            "the config drive ({} bytes) does not fit its partition ({} bytes)",
            data.len(),
            part.size
        ));
    }
    f.write_all_at(data, part.start)
        .map_err(|e| format!("writing the config drive: {e}"))?;
    tracing::info!(
        partition = part.number,
        bytes = data.len(),
        "config drive written"
    );
    Ok(())
}

/// The partitions of a partition image, in IPA's order (root last, so it can grow).
fn layout(
    p: &PartitionSpec,
    drive: Option<&[u8]>,
) -> Result<(Vec<table::NewPartition>, Vec<&'static str>), RestError> {
    use table::{NewPartition, Role};
    if p.preserve_ephemeral {
        return Err(RestError::invalid_params(
            "preserve_ephemeral is not supported by ironboot-agent (it always writes a new partition table)",
        ));
    }
    let fmt = p.ephemeral_format.as_deref().unwrap_or("vfat");
    if p.ephemeral_mb > 0 && fmt != "vfat" {
        return Err(RestError::invalid_params(format!(
            "ephemeral_format {fmt}: ironboot-agent can only make vfat ephemeral partitions (no mkfs.{fmt} in its ramdisk)"
        )));
    }
    let gpt = match p.disk_label.as_str() {
        "gpt" => true,
        "msdos" => false,
        other => {
            return Err(RestError::invalid_params(format!(
                "disk_label {other:?} must be msdos or gpt"
            )));
        }
    };
    let uefi = p.boot_mode == "uefi";
    let mut parts = Vec::new();
    let mut names = Vec::new();
    let mut add = |role, mib: u64, bootable, name: &'static str| {
        parts.push(NewPartition {
            role,
            size: mib * MIB,
            bootable,
            name,
        });
        names.push(name);
    };
    if uefi && p.local_boot {
        add(Role::Efi, ESP_MIB, false, "efi system partition");
    }
    if !uefi && p.local_boot && gpt {
        add(Role::BiosBoot, BIOS_BOOT_MIB, false, "BIOS Boot partition");
    }
    if p.ephemeral_mb > 0 {
        add(Role::Linux, p.ephemeral_mb, false, "ephemeral");
    }
    if p.swap_mb > 0 {
        add(Role::Swap, p.swap_mb, false, "swap");
    }
    if let Some(d) = drive {
        add(
            Role::Linux,
            (d.len() as u64).div_ceil(MIB).max(1),
            false,
            "configdrive",
        );
    }
    add(
        Role::Linux,
        p.root_mb,
        !uefi && p.local_boot && !gpt,
        "root",
    );
    Ok((parts, names))
}

/// The filesystems around the root partition (ESP, swap, ephemeral) and the config drive;
/// returns the ESP's UUID.
fn format_partitions(
    f: &File,
    t: &table::Table,
    names: &[&'static str],
    drive: Option<&[u8]>,
) -> std::io::Result<Option<String>> {
    let mut efi = None;
    for (p, name) in t.partitions.iter().zip(names) {
        match *name {
            "efi system partition" => efi = Some(fs::make_vfat(f, p.start, p.size, "efi-part")?),
            "swap" => {
                fs::make_swap(f, p.start, p.size, "swap1")?;
            }
            "ephemeral" => {
                fs::make_vfat(f, p.start, p.size, "ephemeral0")?;
            }
            "configdrive" => f.write_all_at(drive.unwrap_or_default(), p.start)?,
            _ => {}
        }
    }
    f.sync_all()?;
    disk::reread_partitions(f);
    Ok(efi)
}

async fn write_partition_image(
    w: &Writing<'_>,
    spec: &PartitionSpec,
    drive: Option<Vec<u8>>,
) -> Result<Written, RestError> {
    let Writing {
        agent,
        info,
        dev,
        file,
        expected,
        touched,
    } = *w;
    let (new_parts, names) = layout(spec, drive.as_deref())?;
    let device = dev.path.display().to_string();
    let gpt = spec.disk_label == "gpt";
    let (f, size, sector, d) = (file.clone(), dev.size, dev.sector, device.clone());
    touched.store(true, Ordering::SeqCst);
    let made = blocking("partitioning the disk", move || {
        let fail = |e: &dyn std::fmt::Display| RestError::image_write(&d, e);
        erase::erase_metadata(&f, size, sector).map_err(|e| fail(&e))?;
        let t = if gpt {
            table::write_gpt(&f, size, sector, &new_parts)
        } else {
            table::write_msdos(&f, size, sector, &new_parts)
        }
        .map_err(|e| fail(&e))?;
        f.sync_all().map_err(|e| fail(&e))?;
        disk::reread_partitions(&f);
        Ok(t)
    })
    .await?;
    let part = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .map(|i| made.partitions[i].clone())
    };
    let root =
        part("root").ok_or_else(|| RestError::execution("the root partition was not made"))?;
    tracing::info!(device, partitions = ?names, "partition table written");
    let target = Target {
        file: file.clone(),
        device: partition_path(&dev.path, root.number),
        offset: root.start,
        limit: root.size,
        too_large: |image, room| {
            RestError::invalid_params(format!(
                "Root partition is too small for requested image. Image size: {} MB, Root size: {} MB",
                image.div_ceil(MIB),
                room / MIB
            ))
        },
        // The new partition table already replaced the old metadata.
        erase_first: None,
        erased: Default::default(),
    };
    download::stream_to(agent, info, expected, &target).await?;
    let (f, d, t, nm) = (file.clone(), device.clone(), made.clone(), names.clone());
    let efi_uuid = blocking("formatting the partitions", move || {
        format_partitions(&f, &t, &nm, drive.as_deref()).map_err(|e| RestError::image_write(&d, e))
    })
    .await?;
    let (f, t, r) = (file.clone(), made.clone(), root.clone());
    let root_uuid = blocking("reading the root filesystem", move || {
        let found = fs::probe(&f, r.start, r.size).ok().flatten();
        Ok(found.and_then(|i| i.uuid).unwrap_or_else(|| t.partuuid(&r)))
    })
    .await?;
    Ok(partition_result(
        info, dev, &made, &names, root_uuid, efi_uuid,
    ))
}

/// What `get_partition_uuids` reports and the command's result text, for a partition image.
fn partition_result(
    info: &ImageInfo,
    dev: &BlockDevice,
    made: &table::Table,
    names: &[&'static str],
    root_uuid: String,
    efi_uuid: Option<String>,
) -> Written {
    let device = dev.path.display();
    let mut partitions = Map::new();
    for (p, name) in made.partitions.iter().zip(names) {
        partitions.insert(name.to_string(), json!(partition_path(&dev.path, p.number)));
    }
    let mut message = format!(
        "image ({}) written to device {device} root_uuid={root_uuid}",
        info.id
    );
    if let Some(efi) = &efi_uuid {
        message.push_str(&format!(" efi_system_partition_uuid={efi}"));
    }
    let mut uuids = Map::new();
    uuids.insert("partitions".into(), Value::Object(partitions));
    uuids.insert("root uuid".into(), json!(root_uuid));
    uuids.insert("efi system partition uuid".into(), json!(efi_uuid));
    (uuids, message)
}

/// `erase_devices_metadata` (or `erase_devices`, every byte) on every install candidate.
pub async fn erase_devices(agent: &Arc<Agent>, metadata_only: bool) -> Result<Value, RestError> {
    let scope = agent.settings.disks.clone();
    blocking("erasing the disks", move || {
        let devices =
            disk::list(&scope).map_err(|e| RestError::block_device_erase(e.to_string()))?;
        let mut done = Map::new();
        for dev in devices {
            let name = dev.path.display().to_string();
            let f = disk::open_rw(&dev.path)
                .map_err(|e| RestError::block_device_erase(e.to_string()))?;
            let outcome = if metadata_only {
                erase::erase_metadata(&f, dev.size, dev.sector)
            } else {
                erase::erase_all(&f, dev.size)
            };
            outcome.map_err(|e| RestError::block_device_erase(format!("{name}: {e}")))?;
            tracing::info!(device = %name, metadata_only, "disk erased");
            done.insert(
                name,
                json!(if metadata_only {
                    "metadata erased"
                } else {
                    "erased"
                }),
            );
        }
        Ok(Value::Object(done))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(v: Value) -> Result<ImageInfo, RestError> {
        ImageInfo::parse(Some(&v))
    }

    #[test]
    fn image_info_is_checked_as_ipa_checks_it() {
        let ok = json!({"id": "i", "urls": ["http://x/i"], "os_hash_algo": "sha256",
                        "os_hash_value": "ab"});
        assert!(info(ok).unwrap().partition.is_none());
        for (bad, says) in [
            (json!({"urls": ["u"], "checksum": "c"}), "'id'"),
            (json!({"id": "i", "checksum": "c"}), "'urls'"),
            (json!({"id": "i", "urls": [], "checksum": "c"}), "urls"),
            (
                json!({"id": "i", "urls": ["u"]}),
                "checksum is not available",
            ),
            (
                json!({"id": "i", "urls": ["u"], "os_hash_algo": "sha256"}),
                "checksum",
            ),
            (
                json!({"id": "i", "urls": ["u"], "checksum": "c", "image_type": "partition"}),
                "root_mb",
            ),
        ] {
            let e = info(bad.clone()).unwrap_err();
            assert_eq!(e.kind, "InvalidCommandParamsError");
            assert!(e.details.contains(says), "{bad}: {e}");
        }
        let p = info(
            json!({"id": "i", "urls": ["u"], "checksum": "c", "image_type": "partition",
            "root_mb": 100, "swap_mb": "8", "ephemeral_mb": 0, "ephemeral_format": null,
            "preserve_ephemeral": false, "deploy_boot_mode": "uefi", "disk_label": "gpt",
            "boot_option": "local"}),
        )
        .unwrap();
        let spec = p.partition.unwrap();
        assert_eq!((spec.root_mb, spec.swap_mb), (100, 8));
        let (parts, names) = layout(&spec, Some(&[0u8; 10])).unwrap();
        assert_eq!(
            names,
            ["efi system partition", "swap", "configdrive", "root"]
        );
        assert_eq!(parts[0].size, ESP_MIB * MIB);
        assert_eq!(parts[2].size, MIB);
    }

    #[test]
    fn qcow2_is_refused_clearly() {
        let i = info(json!({"id": "i", "urls": ["u"], "checksum": "c", "disk_format": "qcow2"}))
            .unwrap();
        let e = i.check_format().unwrap_err();
        assert_eq!(e.kind, "InvalidImage");
        assert!(e.details.contains("raw images only"), "{e}");
    }

    #[test]
    fn partition_names_follow_the_kernel() {
        assert_eq!(partition_path(Path::new("/dev/vda"), 2), "/dev/vda2");
        assert_eq!(
            partition_path(Path::new("/dev/nvme0n1"), 1),
            "/dev/nvme0n1p1"
        );
    }
}
