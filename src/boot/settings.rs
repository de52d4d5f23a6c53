//! `[pxe]` settings: templates, boot loader files and the kernel parameters every node gets.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::BootFilesError;
use super::render::{KernelParams, validate_location};

/// The `[pxe]` section of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PxeSettings {
    /// Root served over TFTP; default `<data_dir>/tftpboot` (resolved by `config`).
    pub tftp_root: Option<PathBuf>,
    /// Deprecated alias of `[deploy] http_root` (Ironic kept both HTTP keys under `[pxe]`
    /// before Liberty); moved there with a warning when the configuration loads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_root: Option<PathBuf>,
    /// Deprecated alias of `[deploy] http_url`, handled like `http_root`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_url: Option<String>,
    /// Directory whose `*.j2` files replace the compiled-in templates of the same name (see
    /// `render`); unset = compiled-in templates only.
    pub template_dir: Option<PathBuf>,
    /// Boot loader files copied into the tftp and http roots at start: destination file name
    /// (a bare name) -> source path on this host. Missing sources are a warning.
    pub loader_file_paths: BTreeMap<String, PathBuf>,
    /// Kernel parameters every deploy ramdisk gets before the node's own (Ironic's
    /// `[pxe] kernel_append_params`); a node value may embed them with `%default%`.
    pub kernel_append_params: String,
    /// Per-download timeout iPXE applies to kernel and initrd fetches, in seconds (0 = none).
    pub ipxe_timeout_secs: u32,
    /// How often the per-node iPXE script retries a failed download or boot, waiting one more
    /// second before each retry (1 s, 2 s, ...).
    pub ipxe_retries: u32,
    /// Script `boot.ipxe` chains when no per-MAC script matches any NIC (URL, or a path
    /// relative to `boot.ipxe`); unset = hand the boot back to the firmware.
    pub ipxe_fallback_script: Option<String>,
    /// Keep a whole-disk node's network boot config after deploy, switched to
    /// `boot_whole_disk` (hand the boot to the local disk), so a node whose boot order puts
    /// the network first still boots its instance. Off (Ironic's default): the node's boot
    /// files are removed once the instance is deployed.
    pub enable_netboot_fallback: bool,
}

impl Default for PxeSettings {
    fn default() -> Self {
        Self {
            tftp_root: None,
            http_root: None,
            http_url: None,
            template_dir: None,
            loader_file_paths: default_loader_file_paths(),
            kernel_append_params: "nofb vga=normal".to_string(),
            ipxe_timeout_secs: 0,
            ipxe_retries: 10,
            ipxe_fallback_script: None,
            enable_netboot_fallback: false,
        }
    }
}

/// Where Debian 12 packages put the loaders (pxelinux, syslinux-common, ipxe, shim-signed,
/// grub-efi-amd64-signed).
fn default_loader_file_paths() -> BTreeMap<String, PathBuf> {
    const BIOS_MODULES: &str = "/usr/lib/syslinux/modules/bios";
    let mut m = BTreeMap::new();
    m.insert("pxelinux.0".into(), "/usr/lib/PXELINUX/pxelinux.0".into());
    for module in ["ldlinux.c32", "chain.c32", "libcom32.c32", "libutil.c32"] {
        m.insert(module.into(), PathBuf::from(BIOS_MODULES).join(module));
    }
    m.insert("undionly.kpxe".into(), "/usr/lib/ipxe/undionly.kpxe".into());
    m.insert("ipxe.efi".into(), "/usr/lib/ipxe/ipxe.efi".into());
    m.insert("snponly.efi".into(), "/usr/lib/ipxe/snponly.efi".into());
    m.insert(
        "bootx64.efi".into(),
        "/usr/lib/shim/shimx64.efi.signed".into(),
    );
    m.insert(
        "grubx64.efi".into(),
        "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed".into(),
    );
    m
}

/// Longest `ipxe_timeout_secs` accepted: beyond an hour a stuck download is not a timeout.
const MAX_IPXE_TIMEOUT_SECS: u32 = 3600;
/// Most retries accepted: with linear back-off, 100 retries already wait 84 minutes.
const MAX_IPXE_RETRIES: u32 = 100;

impl PxeSettings {
    /// Checks every key; the error names the key, the value and the reason.
    pub fn validate(&self) -> Result<(), BootFilesError> {
        if let Some(dir) = &self.template_dir
            && !dir.is_dir()
        {
            return Err(BootFilesError::invalid(
                "pxe.template_dir",
                &dir.display().to_string(),
                "is not a directory",
            ));
        }
        for (dest, src) in &self.loader_file_paths {
            validate_loader_name(dest)?;
            if !src.is_absolute() {
                return Err(BootFilesError::invalid(
                    &format!("pxe.loader_file_paths.{dest:?}"),
                    &src.display().to_string(),
                    "the source must be an absolute path",
                ));
            }
        }
        KernelParams::parse("pxe.kernel_append_params", &self.kernel_append_params)?;
        if self.ipxe_timeout_secs > MAX_IPXE_TIMEOUT_SECS {
            return Err(BootFilesError::invalid(
                "pxe.ipxe_timeout_secs",
                &self.ipxe_timeout_secs.to_string(),
                format!("must be at most {MAX_IPXE_TIMEOUT_SECS}"),
            ));
        }
        if !(1..=MAX_IPXE_RETRIES).contains(&self.ipxe_retries) {
            return Err(BootFilesError::invalid(
                "pxe.ipxe_retries",
                &self.ipxe_retries.to_string(),
                format!("must be between 1 and {MAX_IPXE_RETRIES}"),
            ));
        }
        if let Some(script) = &self.ipxe_fallback_script {
            validate_location("pxe.ipxe_fallback_script", script)?;
        }
        Ok(())
    }

    /// The parsed `kernel_append_params` (valid once [`PxeSettings::validate`] passed).
    pub fn default_kernel_params(&self) -> Result<KernelParams, BootFilesError> {
        KernelParams::parse("pxe.kernel_append_params", &self.kernel_append_params)
    }
}

/// A loader destination is a bare file name in the root: no directories, no dot names.
fn validate_loader_name(dest: &str) -> Result<(), BootFilesError> {
    let ok = !dest.is_empty()
        && dest != "."
        && dest != ".."
        && !dest.starts_with('.')
        && dest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(BootFilesError::invalid(
            "pxe.loader_file_paths key",
            dest,
            "must be a bare file name (letters, digits, '.', '_', '-', '+'; not starting with '.')",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_parse_from_empty_toml() {
        let s: PxeSettings = toml::from_str("").unwrap();
        assert_eq!(s, PxeSettings::default());
        s.validate().unwrap();
        assert_eq!(
            s.default_kernel_params().unwrap().to_cmdline(),
            "nofb vga=normal"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<PxeSettings>("template_directory = \"/x\"").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn bad_values_name_key_value_and_reason() {
        let mut s = PxeSettings::default();
        s.loader_file_paths
            .insert("../evil".into(), "/usr/lib/PXELINUX/pxelinux.0".into());
        let e = s.validate().unwrap_err().to_string();
        assert!(
            e.contains("loader_file_paths") && e.contains("../evil"),
            "{e}"
        );

        let s = PxeSettings {
            kernel_append_params: "nofb\ninit=/bin/sh".into(),
            ..PxeSettings::default()
        };
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("pxe.kernel_append_params"), "{e}");

        let s = PxeSettings {
            ipxe_retries: 0,
            ..PxeSettings::default()
        };
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("pxe.ipxe_retries") && e.contains("\"0\""), "{e}");

        let s = PxeSettings {
            template_dir: Some("/nonexistent/templates".into()),
            ..PxeSettings::default()
        };
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("not a directory")
        );
    }
}
