//! The EFI system partition image: `EFI/BOOT/BOOTX64.EFI` (GRUB) and `EFI/BOOT/grub.cfg`, and
//! the GRUB image itself.
//!
//! The GRUB image is made with `grub-mkimage` from Debian's grub-efi-amd64-bin modules: about
//! 0.75 MB, built in ~20 ms, byte-identical on every run. It has the modules below built in, no
//! embedded config and the device-less prefix [`GRUB_PREFIX`]. GRUB completes such a prefix
//! with the device it was loaded from, then its normal mode reads `$prefix/grub.cfg`:
//! - booted from the El Torito UEFI entry, that device is the CD (`cd0`), so it reads the
//!   ISO 9660 tree's `/EFI/BOOT/grub.cfg` (GRUB never sees inside the FAT image then);
//! - booted from a hybrid image's GPT EFI partition, it is that partition, so it reads the
//!   ESP's own `EFI/BOOT/grub.cfg`.
//!
//! Both files hold the same rendered text, which then points `root` at the ISO 9660 volume.

use std::path::Path;
use std::process::Command;

use super::fat::{FatContent, FatFile, build_image, label_field, volume_id};
use super::{MediaError, MediaSettings, output_error};

/// Where GRUB looks for its config, relative to the device it was loaded from.
pub const GRUB_PREFIX: &str = "/EFI/BOOT";

/// Modules built into the GRUB image: partition tables and the two file systems it meets,
/// normal mode with the script commands `grub.cfg` uses, the Linux loader, and console and video
/// drivers.
pub const GRUB_MODULES: &[&str] = &[
    "part_gpt",
    "part_msdos",
    "fat",
    "iso9660",
    "normal",
    "configfile",
    "test",
    "regexp",
    "search",
    "echo",
    "linux",
    "serial",
    "terminal",
    "efi_gop",
];

/// The ESP's paths, as UEFI firmware and Ironic (`[DEFAULT] grub_config_path`) expect them.
const BOOT_EFI: &str = "EFI/BOOT/BOOTX64.EFI";
const GRUB_CFG: &str = "EFI/BOOT/grub.cfg";

/// Builds the ESP image in memory, sized to its content.
pub(crate) fn build_esp(grub_efi: &[u8], grub_cfg: &str) -> Result<Vec<u8>, MediaError> {
    let payload = grub_efi.len() + grub_cfg.len();
    // FAT tables, directories and cluster slack stay well under a quarter of the payload plus
    // 128 KiB at these sizes; round to 64 KiB so the size is not a prime number of sectors.
    let size = (payload + payload / 4 + 128 * 1024).next_multiple_of(64 * 1024);
    let format = fatfs::FormatVolumeOptions::new()
        .volume_label(label_field("EFIBOOT"))
        .volume_id(volume_id(&[grub_efi, grub_cfg.as_bytes()]));
    let files = [
        FatFile {
            path: BOOT_EFI,
            len: grub_efi.len() as u64,
            content: FatContent::Bytes(grub_efi),
        },
        FatFile {
            path: GRUB_CFG,
            len: grub_cfg.len() as u64,
            content: FatContent::Bytes(grub_cfg.as_bytes()),
        },
    ];
    build_image("EFI system partition", size, format, &files)
}

/// Runs `grub-mkimage` and returns the EFI binary.
pub(crate) fn make_grub_efi(settings: &MediaSettings) -> Result<Vec<u8>, MediaError> {
    let tool = &settings.grub_mkimage;
    let grub_err = |detail: String| MediaError::Grub {
        tool: tool.clone(),
        detail,
    };
    if !settings.grub_modules_dir.join("linux.mod").is_file() {
        return Err(grub_err(format!(
            "{} has no linux.mod (install grub-efi-amd64-bin or set media setting grub_efi)",
            settings.grub_modules_dir.display()
        )));
    }
    let dir = tempfile::tempdir()
        .map_err(|e| grub_err(format!("cannot create a temporary directory: {e}")))?;
    let out = dir.path().join("grubx64.efi");
    let result = Command::new(tool)
        .args(["-O", "x86_64-efi", "-p", GRUB_PREFIX, "-d"])
        .arg(&settings.grub_modules_dir)
        .arg("-o")
        .arg(&out)
        .args(GRUB_MODULES)
        .output()
        .map_err(|e| grub_err(format!("cannot run it: {e}")))?;
    if !result.status.success() {
        return Err(grub_err(format!(
            "{}: {}",
            result.status,
            String::from_utf8_lossy(&result.stderr).trim()
        )));
    }
    std::fs::read(&out).map_err(|e| grub_err(format!("cannot read its output: {e}")))
}

/// Writes the GRUB EFI image to `out` atomically (for `ironboot media grub-efi`, so operators
/// can build it once and point the `grub_efi` setting at it).
pub fn write_grub_efi(settings: &MediaSettings, out: &Path) -> Result<u64, MediaError> {
    let bytes = make_grub_efi(settings)?;
    crate::fsutil::write_atomic(out, &bytes).map_err(|e| output_error(out, e))?;
    Ok(bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Read};

    #[test]
    fn esp_holds_grub_and_its_config() {
        for efi_len in [700 * 1024, 3_400_000] {
            let efi = vec![0x4Du8; efi_len];
            let esp = build_esp(&efi, "set timeout=0\n").unwrap();
            assert!(esp.len() < efi_len + efi_len / 4 + 256 * 1024);
            let mut disk = Cursor::new(esp);
            let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new()).unwrap();
            let mut got = Vec::new();
            fs.root_dir()
                .open_file(BOOT_EFI)
                .unwrap()
                .read_to_end(&mut got)
                .unwrap();
            assert_eq!(got, efi);
            let mut cfg = String::new();
            fs.root_dir()
                .open_file(GRUB_CFG)
                .unwrap()
                .read_to_string(&mut cfg)
                .unwrap();
            assert_eq!(cfg, "set timeout=0\n");
        }
    }

    #[test]
    fn missing_grub_modules_are_reported() {
        let settings = MediaSettings {
            grub_modules_dir: "/nonexistent/x86_64-efi".into(),
            ..Default::default()
        };
        let err = make_grub_efi(&settings).unwrap_err();
        assert!(err.to_string().contains("grub-efi-amd64-bin"), "{err}");
    }
}
