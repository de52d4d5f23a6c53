//! ISO images with hadris-iso: boot ISOs (El Torito BIOS isolinux and/or UEFI GRUB, optionally
//! hybrid for disks and USB sticks) and data-only ISOs such as config drives.
//!
//! Layout of a boot ISO (ISO 9660 level 3 with Rock Ridge and Joliet names):
//! - `/vmlinuz`, `/initrd`: the kernel and ramdisk, streamed from the host files;
//! - BIOS: `/isolinux/isolinux.bin` (default El Torito entry, no emulation, load size 4, boot
//!   info table), `/isolinux/ldlinux.c32`, `/isolinux/isolinux.cfg`, catalog `/isolinux/boot.cat`;
//! - UEFI: `/boot/grub/efiboot.img` (the ESP, a no-emulation EFI entry; on hybrid images it is
//!   instead stored once as the GPT EFI partition) and `/EFI/BOOT/grub.cfg` (see `esp.rs`);
//!   the catalog is `/boot.catalog` when there is no BIOS entry;
//! - injected files anywhere else.
//!
//! Nothing depends on the clock or on host metadata (host files contribute only their bytes),
//! so the same inputs give the same image.

use std::path::Path;
use std::time::Instant;

use hadris_fs::{Content, DateTime, Node, Tree};
use hadris_iso::{
    AppendedPartition, BootEntry, BootInfo, ElTorito, Hybrid, IsoId, IsoLevel, IsoOptions,
};
use hadris_storage::host::FileDevice;
use sha2::{Digest, Sha256};

use super::cmdline;
use super::direct::{self, Payloads};
use super::esp::build_esp;
use super::templates::BootContext;
use super::tracked::TrackedDevice;
use super::{
    BuildOptions, BuildReport, FileSource, MEDIA_EPOCH, MediaBuilder, MediaError, MediaFile,
    check_media_path, create_output, host_file_len, output_error,
};

/// Volume label of boot ISOs (Ironic's choice; some BMCs show it).
pub const BOOT_ISO_LABEL: &str = "VMEDIA_BOOT_ISO";
/// Volume label of config drives; used whenever a file under `openstack/` is injected.
pub const CONFIG_DRIVE_LABEL: &str = "config-2";
/// Where the kernel and ramdisk go on the ISO.
pub const KERNEL_PATH: &str = "/vmlinuz";
pub const RAMDISK_PATH: &str = "/initrd";
/// The ESP image (Ironic's place for it) and the GRUB config read when booted as a CD.
pub const ESP_PATH: &str = "boot/grub/efiboot.img";
pub const GRUB_CFG_PATH: &str = "EFI/BOOT/grub.cfg";

const ISOLINUX_BIN: &str = "isolinux/isolinux.bin";
const LDLINUX_C32: &str = "isolinux/ldlinux.c32";
const ISOLINUX_CFG: &str = "isolinux/isolinux.cfg";
const BIOS_CATALOG: &str = "isolinux/boot.cat";
/// mkisofs's default name and place, used when there is no isolinux directory.
const UEFI_CATALOG: &str = "boot.catalog";
/// isolinux loads 4 × 512 bytes and reads the rest itself, as with `-boot-load-size 4`.
const ISOLINUX_LOAD_SECTORS: u16 = 4;
const APPLICATION_ID: &str = "IRONBOOT";

/// What goes on an ISO.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IsoSpec {
    /// Makes the ISO bootable; `None` builds a data-only ISO (e.g. a config drive).
    pub boot: Option<BootSpec>,
    /// Injected files, e.g. `openstack/latest/network_data.json`.
    pub files: Vec<MediaFile>,
    /// ISO publisher; on boot ISOs also `ir_pub_id=<id>` on the kernel command line.
    pub publisher_id: Option<String>,
    /// Volume label override; by default [`CONFIG_DRIVE_LABEL`] when a file under
    /// `openstack/` is injected, else [`BOOT_ISO_LABEL`].
    pub label: Option<String>,
}

/// The boot part of an [`IsoSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSpec {
    pub kernel: std::path::PathBuf,
    pub ramdisk: std::path::PathBuf,
    /// The whole kernel command line (agent parameters, or `root=UUID=...` for instances).
    pub cmdline: String,
    /// BIOS El Torito entry (isolinux).
    pub bios: bool,
    /// UEFI El Torito entry (ESP with GRUB).
    pub uefi: bool,
    /// Also write an MBR (BIOS) and/or GPT (UEFI) so the image boots as a disk.
    pub hybrid: bool,
}

impl IsoSpec {
    /// The volume label this spec gets.
    pub fn label(&self) -> &str {
        match &self.label {
            Some(label) => label,
            None if self.files.iter().any(|f| f.dest.starts_with("openstack/")) => {
                CONFIG_DRIVE_LABEL
            }
            None => BOOT_ISO_LABEL,
        }
    }
}

pub(crate) fn build(
    builder: &MediaBuilder,
    spec: &IsoSpec,
    out: &Path,
    options: BuildOptions<'_>,
) -> Result<BuildReport, MediaError> {
    build_with(builder, spec, out, options, Payloads::default())
}

/// [`build`], with the host files `payloads` takes copied in the kernel.
fn build_with(
    builder: &MediaBuilder,
    spec: &IsoSpec,
    out: &Path,
    options: BuildOptions<'_>,
    mut payloads: Payloads,
) -> Result<BuildReport, MediaError> {
    let started = Instant::now();
    let (tree, iso_options) = plan_inputs(builder, spec, &mut payloads)?;
    let iso_err = |source| MediaError::Iso {
        path: out.to_path_buf(),
        source: Box::new(source),
    };
    let plan = hadris_iso::plan(&tree, &iso_options).map_err(iso_err)?;
    let size = plan.size();
    let directs = payloads.extents(&plan, out)?;

    let mut file = create_output(out)?;
    let handle = file.file().try_clone().map_err(|e| output_error(out, e))?;
    let device = FileDevice::new(handle).map_err(|e| output_error(out, e))?;
    let block = u64::from(hadris_storage::sync::BlockDevice::block_size(&device).get());
    if !super::direct::SECTOR.is_multiple_of(block) {
        return Err(output_error(
            out,
            std::io::Error::other("the output's block size does not divide an ISO sector"),
        ));
    }
    let mut tracked =
        TrackedDevice::new(device, size, options.progress, options.sha256).skipping(directs);
    let report = hadris_iso::sync::write(&mut tracked, &tree, &iso_options).map_err(iso_err)?;
    if !payloads.check_written(&plan, &report) {
        return Err(output_error(
            out,
            std::io::Error::other("the ISO writer placed a file elsewhere than planned"),
        ));
    }
    direct::copy_all(tracked.skipped(), file.file(), out)?;
    let streamed_hash = tracked.finish();
    file.commit().map_err(|e| output_error(out, e))?;

    let sha256 = match (options.sha256, streamed_hash) {
        (false, _) => None,
        (true, Some(hash)) => Some(hash),
        (true, None) => Some(hash_file(out)?),
    };
    let warnings: Vec<String> = report.warnings().iter().map(|w| w.to_string()).collect();
    for warning in &warnings {
        tracing::warn!(path = %out.display(), %warning, "ISO writer warning");
    }
    Ok(BuildReport {
        path: out.to_path_buf(),
        size: report.size(),
        sha256,
        elapsed: started.elapsed(),
        warnings,
    })
}

/// Validates the spec and turns it into the hadris tree and options; reads only small inputs
/// (boot loaders), measures the large ones.
/// Large host files become placeholders recorded in `payloads` (see [`direct`]).
fn plan_inputs(
    builder: &MediaBuilder,
    spec: &IsoSpec,
    payloads: &mut Payloads,
) -> Result<(Tree, IsoOptions), MediaError> {
    let label = spec.label();
    check_identifier("ISO volume label", label, 32)?;
    if let Some(id) = &spec.publisher_id {
        check_identifier("ISO publisher id", id, 128)?;
        if id.contains(' ') {
            return Err(MediaError::invalid(
                "ISO publisher id",
                id,
                "must not contain spaces",
            ));
        }
    }

    let mut tree = Tree::new();
    let mut iso_options = IsoOptions::new()
        .with_level(IsoLevel::L3)
        .with_joliet()
        .with_rock_ridge()
        .with_id(IsoId::Volume, label)
        .with_id(IsoId::Application, APPLICATION_ID)
        .with_time(media_time());
    if let Some(id) = &spec.publisher_id {
        iso_options = iso_options.with_id(IsoId::Publisher, id);
    }
    if let Some(boot) = &spec.boot {
        iso_options = add_boot(
            builder,
            boot,
            spec.publisher_id.as_deref(),
            (&mut tree, payloads),
            iso_options,
        )?;
    }
    for file in &spec.files {
        check_media_path("injected ISO file", &file.dest)?;
        let content = match &file.source {
            FileSource::Host(path) => payload(payloads, &file.dest, "injected file", path)?,
            FileSource::Bytes(bytes) => Content::bytes(bytes.clone()),
        };
        tree.insert(&file.dest, Node::file(content)).map_err(|e| {
            MediaError::invalid(
                "injected ISO file",
                &file.dest,
                format!("collides with another file or directory on the ISO ({e})"),
            )
        })?;
    }
    Ok((tree, iso_options))
}

fn add_boot(
    builder: &MediaBuilder,
    boot: &BootSpec,
    publisher_id: Option<&str>,
    (tree, payloads): (&mut Tree, &mut Payloads),
    mut iso_options: IsoOptions,
) -> Result<IsoOptions, MediaError> {
    if !boot.bios && !boot.uefi {
        return Err(MediaError::invalid(
            "boot ISO",
            "neither BIOS nor UEFI",
            "choose at least one boot mode, or build a data-only ISO",
        ));
    }
    let settings = builder.settings();
    let line = cmdline::prepare(&boot.cmdline, publisher_id)?;
    let grub_args = cmdline::grub_args(&line);
    let ctx = BootContext {
        kernel: KERNEL_PATH,
        ramdisk: RAMDISK_PATH,
        cmdline: &line,
        grub_args: &grub_args,
        timeout: settings.boot_menu_timeout,
    };
    let kernel = payload(payloads, KERNEL_PATH, "kernel", &boot.kernel)?;
    insert(tree, KERNEL_PATH, kernel)?;
    let ramdisk = payload(payloads, RAMDISK_PATH, "ramdisk", &boot.ramdisk)?;
    insert(tree, RAMDISK_PATH, ramdisk)?;

    let mut el_torito = ElTorito::new();
    if boot.bios {
        insert(
            tree,
            ISOLINUX_BIN,
            host_content(
                "isolinux.bin (media setting isolinux_bin)",
                &settings.isolinux_bin,
            )?,
        )?;
        insert(
            tree,
            LDLINUX_C32,
            host_content(
                "ldlinux.c32 (media setting ldlinux_c32)",
                &settings.ldlinux_c32,
            )?,
        )?;
        insert(
            tree,
            ISOLINUX_CFG,
            Content::bytes(builder.templates().isolinux_cfg(&ctx)?),
        )?;
        el_torito = el_torito
            .with_entry(
                BootEntry::bios(ISOLINUX_BIN)
                    .with_load_size(ISOLINUX_LOAD_SECTORS)
                    .with_boot_info(BootInfo::Table),
            )
            .with_catalog_path(BIOS_CATALOG);
    }
    let mut esp = None;
    if boot.uefi {
        let grub_cfg = builder.templates().grub_cfg(&ctx)?;
        let image = Content::bytes(build_esp(&builder.grub_efi()?, &grub_cfg)?);
        insert(tree, GRUB_CFG_PATH, Content::bytes(grub_cfg))?;
        if boot.hybrid {
            // Stored once after the files, as the GPT's EFI partition and the El Torito image.
            el_torito = el_torito.with_entry(BootEntry::uefi_appended(0));
            esp = Some(AppendedPartition::esp(image));
        } else {
            insert(tree, ESP_PATH, image)?;
            el_torito = el_torito.with_entry(BootEntry::uefi(ESP_PATH));
        }
        if !boot.bios {
            el_torito = el_torito.with_catalog_path(UEFI_CATALOG);
        }
    }
    iso_options = iso_options.with_el_torito(el_torito);

    if boot.hybrid {
        let mut hybrid = match (boot.bios, esp) {
            (true, Some(esp)) => Hybrid::gpt_hybrid_mbr().with_appended(esp),
            (false, Some(esp)) => Hybrid::gpt().with_appended(esp),
            (_, None) => Hybrid::mbr(),
        };
        if boot.bios {
            let mbr =
                std::fs::read(&settings.isohybrid_mbr).map_err(|source| MediaError::Input {
                    what: "isohybrid MBR (media setting isohybrid_mbr)",
                    path: settings.isohybrid_mbr.clone(),
                    source,
                })?;
            hybrid = hybrid.with_bootstrap(&mbr);
        }
        iso_options = iso_options.with_hybrid(hybrid);
    }
    Ok(iso_options)
}

fn insert(tree: &mut Tree, path: &str, content: Content) -> Result<(), MediaError> {
    let path = path.trim_start_matches('/');
    // Only generated paths come here, into a tree that starts empty: a clash is a bug.
    tree.insert(path, Node::file(content))
        .map_err(|e| MediaError::invalid("ISO path", path, e.to_string()))
}

/// A host file that may be copied in the kernel; it must be a non-empty regular file.
fn payload(
    payloads: &mut Payloads,
    iso_path: &str,
    what: &'static str,
    path: &Path,
) -> Result<Content, MediaError> {
    match host_file_len(what, path)? {
        0 => Err(empty_file(what, path)),
        len => payloads.content(iso_path, what, path, len),
    }
}

/// A host file as streamed content; it must be a non-empty regular file.
fn host_content(what: &'static str, path: &Path) -> Result<Content, MediaError> {
    if host_file_len(what, path)? == 0 {
        return Err(empty_file(what, path));
    }
    host_file(what, path)
}

/// The refusal of an empty input file.
fn empty_file(what: &'static str, path: &Path) -> MediaError {
    MediaError::Input {
        what,
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "file is empty"),
    }
}

/// A host file as the tree's streamed content (its size already checked).
pub(super) fn host_file(what: &'static str, path: &Path) -> Result<Content, MediaError> {
    hadris_fs::host::file(path).map_err(|e| MediaError::Input {
        what,
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// ISO descriptor identifiers: printable ASCII, no padding spaces at the ends, at most `max`.
fn check_identifier(what: &'static str, value: &str, max: usize) -> Result<(), MediaError> {
    let reason = if value.is_empty() || value.len() > max {
        Some(format!("must be 1 to {max} bytes, not {}", value.len()))
    } else if !value.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        Some("must be printable ASCII".to_owned())
    } else if value.starts_with(' ') || value.ends_with(' ') {
        Some("must not start or end with a space".to_owned())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(MediaError::invalid(what, value, reason)),
        None => Ok(()),
    }
}

fn media_time() -> DateTime {
    // MEDIA_EPOCH is a valid constant Unix time; from_unix_seconds only rejects values beyond
    // year 9999, so this cannot fail.
    DateTime::from_unix_seconds(MEDIA_EPOCH).unwrap_or(DateTime::UNIX_EPOCH)
}

fn hash_file(path: &Path) -> Result<String, MediaError> {
    let mut file = std::fs::File::open(path).map_err(|e| output_error(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match std::io::Read::read(&mut file, &mut buf).map_err(|e| output_error(path, e))? {
            0 => return Ok(hex::encode(hasher.finalize())),
            n => hasher.update(&buf[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::MediaSettings;

    fn data_spec(files: Vec<MediaFile>) -> IsoSpec {
        IsoSpec {
            files,
            ..Default::default()
        }
    }

    #[test]
    fn labels_follow_ironic() {
        assert_eq!(data_spec(vec![]).label(), BOOT_ISO_LABEL);
        let cd = data_spec(vec![MediaFile::bytes(
            "openstack/latest/meta_data.json",
            "{}",
        )]);
        assert_eq!(cd.label(), CONFIG_DRIVE_LABEL);
        let custom = IsoSpec {
            label: Some("X".into()),
            ..cd
        };
        assert_eq!(custom.label(), "X");
    }

    #[test]
    fn data_only_iso_is_reproducible_and_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let builder = MediaBuilder::new(MediaSettings::default()).unwrap();
        let spec = data_spec(vec![
            MediaFile::bytes("openstack/latest/meta_data.json", r#"{"uuid": "x"}"#),
            MediaFile::bytes("openstack/latest/user_data", "#!/bin/sh\n"),
        ]);
        let a = dir.path().join("a.iso");
        let b = dir.path().join("b.iso");
        let ra = builder
            .build_iso(
                &spec,
                &a,
                BuildOptions {
                    sha256: true,
                    progress: None,
                },
            )
            .unwrap();
        builder
            .build_iso(&spec, &b, BuildOptions::default())
            .unwrap();
        let bytes = std::fs::read(&a).unwrap();
        assert_eq!(bytes, std::fs::read(&b).unwrap());
        assert_eq!(ra.size, bytes.len() as u64);
        assert_eq!(ra.sha256.unwrap(), hex::encode(Sha256::digest(&bytes)));
        // The primary volume descriptor carries the config-drive label.
        assert_eq!(&bytes[16 * 2048 + 40..16 * 2048 + 48], b"config-2");
    }

    #[test]
    fn kernel_copies_give_the_bytes_hadris_writes_itself() {
        let dir = tempfile::tempdir().unwrap();
        let builder = MediaBuilder::new(MediaSettings::default()).unwrap();
        let host = |name: &str, len: usize, seed: u8| {
            let path = dir.path().join(name);
            let data: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect();
            std::fs::write(&path, data).unwrap();
            MediaFile::host(name, path)
        };
        // Odd lengths (not whole sectors) next to a small file and in-memory bytes.
        let spec = data_spec(vec![
            host("a.bin", (3 << 20) + 17, 1),
            MediaFile::bytes("b.txt", "between"),
            host("c.bin", 5000, 2),
            host("d.bin", (2 << 20) + 2047, 3),
        ]);
        let (direct, plain) = (dir.path().join("direct.iso"), dir.path().join("plain.iso"));
        let hashed = BuildOptions {
            sha256: true,
            progress: None,
        };
        let with = build_with(&builder, &spec, &direct, hashed, Payloads::new(4096)).unwrap();
        let without = build_with(&builder, &spec, &plain, hashed, Payloads::new(u64::MAX)).unwrap();
        let bytes = std::fs::read(&direct).unwrap();
        assert!(bytes == std::fs::read(&plain).unwrap(), "the images differ");
        assert_eq!(with.sha256, without.sha256);
        assert_eq!(with.sha256.unwrap(), hex::encode(Sha256::digest(&bytes)));
    }

    #[test]
    fn bad_specs_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let builder = MediaBuilder::new(MediaSettings::default()).unwrap();
        let out = dir.path().join("x.iso");
        let kernel = dir.path().join("k");
        std::fs::write(&kernel, b"kernel").unwrap();
        let boot = BootSpec {
            kernel: kernel.clone(),
            ramdisk: dir.path().join("missing-ramdisk"),
            cmdline: String::new(),
            bios: false,
            uefi: false,
            hybrid: false,
        };
        let cases = [
            IsoSpec {
                label: Some("L".repeat(33)),
                ..Default::default()
            },
            IsoSpec {
                publisher_id: Some("has space".into()),
                ..Default::default()
            },
            data_spec(vec![MediaFile::bytes("../x", "")]),
            data_spec(vec![MediaFile::host("x", dir.path().join("nope"))]),
            data_spec(vec![MediaFile::bytes("a", ""), MediaFile::bytes("a/b", "")]),
            IsoSpec {
                boot: Some(boot.clone()),
                ..Default::default()
            },
            IsoSpec {
                boot: Some(BootSpec {
                    bios: true,
                    ..boot.clone()
                }),
                ..Default::default()
            },
        ];
        for spec in cases {
            let err = builder
                .build_iso(&spec, &out, BuildOptions::default())
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    MediaError::InvalidInput { .. } | MediaError::Input { .. }
                ),
                "{spec:?}: {err}"
            );
            assert_eq!(
                std::fs::read_dir(dir.path()).unwrap().count(),
                1,
                "{spec:?}"
            );
        }
    }
}
