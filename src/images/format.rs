//! Image format detection from headers, the qcow2 safety check, and conversion to raw.
//!
//! Detection reads only the first 64 KiB. A qcow2 image with a backing file or an external data
//! file is refused: either lets the image make `qemu-img` (or the agent) read a host file.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Raw,
    Gpt,
    Qcow2,
    Iso,
    Vmdk,
    Vhdx,
    Vdi,
    Luks,
}

impl ImageFormat {
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Gpt => "gpt",
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Iso => "iso",
            ImageFormat::Vmdk => "vmdk",
            ImageFormat::Vhdx => "vhdx",
            ImageFormat::Vdi => "vdi",
            ImageFormat::Luks => "luks",
        }
    }

    /// Raw and GPT disks are written to disk as they are; ISOs are never converted.
    pub fn needs_conversion(self) -> bool {
        !matches!(self, ImageFormat::Raw | ImageFormat::Gpt | ImageFormat::Iso)
    }

    /// Whether an image detected as `self` satisfies a request for `expected`
    /// (a GPT disk is a raw disk to everyone downstream).
    pub fn satisfies(self, expected: ImageFormat) -> bool {
        self == expected || matches!((self, expected), (ImageFormat::Gpt, ImageFormat::Raw))
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ImageFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "raw" => ImageFormat::Raw,
            "gpt" => ImageFormat::Gpt,
            "qcow2" => ImageFormat::Qcow2,
            "iso" => ImageFormat::Iso,
            "vmdk" => ImageFormat::Vmdk,
            "vhdx" => ImageFormat::Vhdx,
            "vdi" => ImageFormat::Vdi,
            "luks" => ImageFormat::Luks,
            other => return Err(format!("unknown image format {other:?}")),
        })
    }
}

/// What the headers say about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub format: ImageFormat,
    /// The disk size a conversion to raw produces (qcow2 only).
    pub virtual_size: Option<u64>,
    /// Why the image is unsafe to use, if it is.
    pub unsafe_reason: Option<String>,
}

const HEAD_LEN: usize = 64 * 1024;
const QCOW2_INCOMPAT_DATA_FILE: u64 = 1 << 2;

/// Inspects the file at `path` (blocking; call from `spawn_blocking`).
pub fn inspect_file(path: &Path) -> std::io::Result<Inspection> {
    let mut head = Vec::with_capacity(HEAD_LEN);
    std::fs::File::open(path)?
        .take(HEAD_LEN as u64)
        .read_to_end(&mut head)?;
    Ok(inspect(&head))
}

/// Inspects the first bytes of an image (64 KiB is enough for every format detected here).
pub fn inspect(head: &[u8]) -> Inspection {
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    let plain = |format| Inspection {
        format,
        virtual_size: None,
        unsafe_reason: None,
    };
    if at(0, b"QFI\xfb") {
        return inspect_qcow2(head);
    }
    if at(0, b"KDMV") || at(0, b"# Disk DescriptorFile") {
        return plain(ImageFormat::Vmdk);
    }
    if at(0, b"vhdxfile") {
        return plain(ImageFormat::Vhdx);
    }
    if at(0x40, &0xbeda_107f_u32.to_le_bytes()) {
        return plain(ImageFormat::Vdi);
    }
    if at(0, b"LUKS\xba\xbe") {
        return plain(ImageFormat::Luks);
    }
    // ISO before GPT: a hybrid ISO carries both and is an ISO (as in Ironic).
    if at(0x8001, b"CD001") {
        return plain(ImageFormat::Iso);
    }
    if at(510, &[0x55, 0xaa]) && (at(512, b"EFI PART") || at(4096, b"EFI PART")) {
        return plain(ImageFormat::Gpt);
    }
    plain(ImageFormat::Raw)
}

fn be_u32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn be_u64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

fn inspect_qcow2(head: &[u8]) -> Inspection {
    let version = be_u32(head, 4).unwrap_or(0);
    let backing_offset = be_u64(head, 8).unwrap_or(0);
    let backing_len = be_u32(head, 16).unwrap_or(0) as usize;
    let mut reasons = Vec::new();
    if backing_offset != 0 {
        let name = usize::try_from(backing_offset)
            .ok()
            .and_then(|o| head.get(o..o.checked_add(backing_len)?))
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_else(|| "<beyond the header>".into());
        reasons.push(format!("it has a backing file ({name})"));
    }
    if version >= 3 && be_u64(head, 72).unwrap_or(0) & QCOW2_INCOMPAT_DATA_FILE != 0 {
        reasons.push("it has an external data file".to_string());
    }
    if !(2..=3).contains(&version) {
        reasons.push(format!("unsupported qcow2 version {version}"));
    }
    Inspection {
        format: ImageFormat::Qcow2,
        virtual_size: be_u64(head, 24),
        unsafe_reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
    }
}

/// Converts `src` (in `format`) to a raw image at `dest` with `qemu-img convert`.
pub async fn convert_to_raw(
    qemu_img: &Path,
    format: ImageFormat,
    src: &Path,
    dest: &Path,
) -> Result<(), String> {
    let out = tokio::process::Command::new(qemu_img)
        .args(["convert", "-f", format.name(), "-O", "raw"])
        .arg(src)
        .arg(dest)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", qemu_img.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} convert exited with {}: {}",
            qemu_img.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qcow2(version: u32, backing: Option<&str>, incompat: u64) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&version.to_be_bytes());
        if let Some(name) = backing {
            h[8..16].copy_from_slice(&512u64.to_be_bytes());
            h[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
            h[512..512 + name.len()].copy_from_slice(name.as_bytes());
        }
        h[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        h[72..80].copy_from_slice(&incompat.to_be_bytes());
        h
    }

    #[test]
    fn qcow2_safety() {
        let ok = inspect(&qcow2(3, None, 0));
        assert_eq!(ok.format, ImageFormat::Qcow2);
        assert_eq!(ok.virtual_size, Some(1 << 30));
        assert_eq!(ok.unsafe_reason, None);
        let r = inspect(&qcow2(3, Some("/etc/shadow"), 0))
            .unsafe_reason
            .unwrap();
        assert!(r.contains("backing file (/etc/shadow)"), "{r}");
        let r = inspect(&qcow2(3, None, QCOW2_INCOMPAT_DATA_FILE))
            .unsafe_reason
            .unwrap();
        assert!(r.contains("data file"), "{r}");
        assert!(
            inspect(&qcow2(2, None, QCOW2_INCOMPAT_DATA_FILE))
                .unsafe_reason
                .is_none()
        );
    }

    #[test]
    fn iso_gpt_raw() {
        let mut img = vec![0u8; HEAD_LEN];
        assert_eq!(inspect(&img).format, ImageFormat::Raw);
        img[510] = 0x55;
        img[511] = 0xaa;
        img[512..520].copy_from_slice(b"EFI PART");
        assert_eq!(inspect(&img).format, ImageFormat::Gpt);
        img[0x8001..0x8006].copy_from_slice(b"CD001");
        assert_eq!(inspect(&img).format, ImageFormat::Iso);
        assert!(ImageFormat::Gpt.satisfies(ImageFormat::Raw));
        assert!(!ImageFormat::Qcow2.satisfies(ImageFormat::Raw));
        assert_eq!(inspect(b"short").format, ImageFormat::Raw);
    }
}
