//! `[media]` settings: where the boot loaders come from and the floppy defaults.
//!
//! The defaults point at Debian's packages (`isolinux`, `syslinux-common`, `grub-efi-amd64-bin`,
//! `grub-common`), so a conductor host with those installed needs no media configuration at all.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::MediaError;
use super::floppy::{FLOPPY_MAX_KIB, FLOPPY_MIN_KIB, check_fat_label};

/// Settings for the virtual media builders (the `[media]` section of the config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSettings {
    /// ISOLINUX boot image for the BIOS El Torito entry (Ironic's `[DEFAULT] isolinux_bin`).
    pub isolinux_bin: PathBuf,
    /// `ldlinux.c32`, which isolinux 6 loads before it reads `isolinux.cfg`.
    pub ldlinux_c32: PathBuf,
    /// isohybrid MBR boot code (432 bytes) for hybrid ISOs that also boot BIOS from a disk.
    pub isohybrid_mbr: PathBuf,
    /// A prebuilt GRUB EFI binary to use as `EFI/BOOT/BOOTX64.EFI`. It must read
    /// `$prefix/grub.cfg` with a prefix of `/EFI/BOOT` on the device it was loaded from, as the
    /// image from `ironboot media grub-efi` does. When unset, ironboot builds that image itself
    /// with `grub_mkimage` from `grub_modules_dir` (once per process).
    pub grub_efi: Option<PathBuf>,
    /// `grub-mkimage`, used when `grub_efi` is unset.
    pub grub_mkimage: PathBuf,
    /// GRUB's x86_64-efi module directory, used when `grub_efi` is unset.
    pub grub_modules_dir: PathBuf,
    /// Default floppy size in KiB (1440 is what Redfish `config_via_removable` uses; 100 is the
    /// legacy iLO size).
    pub floppy_size_kib: u32,
    /// Default floppy volume label; IPA finds the device as `/dev/disk/by-label/ir-vfd-dev`.
    pub floppy_label: String,
    /// Seconds the ISO boot menus (isolinux, GRUB) wait before booting; 0 boots at once.
    pub boot_menu_timeout: u32,
    /// Directory whose `isolinux.cfg.j2` and `grub.cfg.j2` replace the built-in templates
    /// (either may be absent; the built-in one is used for it).
    pub template_dir: Option<PathBuf>,
}

impl Default for MediaSettings {
    fn default() -> Self {
        Self {
            isolinux_bin: PathBuf::from("/usr/lib/ISOLINUX/isolinux.bin"),
            ldlinux_c32: PathBuf::from("/usr/lib/syslinux/modules/bios/ldlinux.c32"),
            isohybrid_mbr: PathBuf::from("/usr/lib/ISOLINUX/isohdpfx.bin"),
            grub_efi: None,
            grub_mkimage: PathBuf::from("/usr/bin/grub-mkimage"),
            grub_modules_dir: PathBuf::from("/usr/lib/grub/x86_64-efi"),
            floppy_size_kib: 1440,
            floppy_label: String::from("ir-vfd-dev"),
            boot_menu_timeout: 0,
            template_dir: None,
        }
    }
}

/// Longest boot menu wait accepted; anything longer is almost certainly a unit mistake.
const MAX_MENU_TIMEOUT: u32 = 600;

impl MediaSettings {
    /// Checks every key without touching the filesystem (the boot loader files are checked when
    /// a build needs them, so a host that only builds floppies needs no isolinux).
    pub fn validate(&self) -> Result<(), MediaError> {
        let paths: [(&'static str, Option<&Path>); 6] = [
            ("isolinux_bin", Some(&self.isolinux_bin)),
            ("ldlinux_c32", Some(&self.ldlinux_c32)),
            ("isohybrid_mbr", Some(&self.isohybrid_mbr)),
            ("grub_efi", self.grub_efi.as_deref()),
            ("grub_mkimage", Some(&self.grub_mkimage)),
            ("grub_modules_dir", Some(&self.grub_modules_dir)),
        ];
        for (key, path) in paths {
            if let Some(path) = path
                && !path.is_absolute()
            {
                return Err(setting(key, path.display(), "must be an absolute path"));
            }
        }
        if let Some(dir) = &self.template_dir
            && !dir.is_absolute()
        {
            return Err(setting(
                "template_dir",
                dir.display(),
                "must be an absolute path",
            ));
        }
        if !(FLOPPY_MIN_KIB..=FLOPPY_MAX_KIB).contains(&self.floppy_size_kib) {
            return Err(setting(
                "floppy_size_kib",
                self.floppy_size_kib,
                format!("must be between {FLOPPY_MIN_KIB} and {FLOPPY_MAX_KIB}"),
            ));
        }
        check_fat_label(&self.floppy_label)
            .map_err(|reason| setting("floppy_label", &self.floppy_label, reason))?;
        if self.boot_menu_timeout > MAX_MENU_TIMEOUT {
            return Err(setting(
                "boot_menu_timeout",
                self.boot_menu_timeout,
                format!("must be at most {MAX_MENU_TIMEOUT} seconds"),
            ));
        }
        Ok(())
    }
}

fn setting(
    key: &'static str,
    value: impl std::fmt::Display,
    reason: impl Into<String>,
) -> MediaError {
    MediaError::Setting {
        key,
        value: value.to_string(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_point_at_debian() {
        let s = MediaSettings::default();
        s.validate().unwrap();
        assert_eq!(s.isolinux_bin, Path::new("/usr/lib/ISOLINUX/isolinux.bin"));
        assert_eq!(s.floppy_size_kib, 1440);
        assert_eq!(s.floppy_label, "ir-vfd-dev");
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases: Vec<(MediaSettings, &str)> = vec![
            (
                MediaSettings {
                    isolinux_bin: "isolinux.bin".into(),
                    ..Default::default()
                },
                "isolinux_bin",
            ),
            (
                MediaSettings {
                    floppy_size_kib: 10,
                    ..Default::default()
                },
                "floppy_size_kib",
            ),
            (
                MediaSettings {
                    floppy_label: "much-too-long-label".into(),
                    ..Default::default()
                },
                "floppy_label",
            ),
            (
                MediaSettings {
                    boot_menu_timeout: 3600,
                    ..Default::default()
                },
                "boot_menu_timeout",
            ),
        ];
        for (settings, key) in cases {
            let err = settings.validate().unwrap_err();
            assert!(
                matches!(&err, MediaError::Setting { key: k, .. } if *k == key),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn parses_from_toml_and_rejects_unknown_keys() {
        let s: MediaSettings =
            toml::from_str("floppy_size_kib = 100\ngrub_efi = \"/srv/grubx64.efi\"\n").unwrap();
        assert_eq!(s.floppy_size_kib, 100);
        assert_eq!(s.grub_efi.as_deref(), Some(Path::new("/srv/grubx64.efi")));
        assert_eq!(s.isolinux_bin, MediaSettings::default().isolinux_bin);
        assert!(toml::from_str::<MediaSettings>("floppy_sise_kib = 100").is_err());
    }
}
