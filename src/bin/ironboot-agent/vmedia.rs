//! Parameters from virtual media: with `boot_method=vmedia` the conductor attaches a FAT
//! floppy labelled `ir-vfd-dev` holding `parameters.txt` (`key=value` lines). The device is
//! found by its label and read without mounting (no vfat module or mount point needed).

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

/// The label Ironic (and ironboot) give the parameters floppy.
pub const FLOPPY_LABEL: &str = "ir-vfd-dev";
const PARAMETERS_FILE: &str = "parameters.txt";
/// Larger devices are not parameter floppies (and are not read into memory).
const MAX_FLOPPY_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum VmediaError {
    #[error("no block device labelled {FLOPPY_LABEL} (looked at {looked_at:?})")]
    NotFound { looked_at: Vec<PathBuf> },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is labelled {FLOPPY_LABEL} but has no {PARAMETERS_FILE}")]
    NoParameters { path: PathBuf },
}

/// What the floppy said, and where it was.
#[derive(Debug)]
pub struct VmediaParams {
    pub device: PathBuf,
    pub params: BTreeMap<String, String>,
}

/// Block devices (and their partitions) that could be the floppy: `/dev/<name>` for every
/// entry of `/sys/block`, then partitions, smallest names first.
fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return out;
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("loop") && !n.starts_with("ram") && !n.starts_with("zram"))
        .collect();
    names.sort();
    for name in names {
        out.push(PathBuf::from("/dev").join(&name));
        if let Ok(parts) = std::fs::read_dir(Path::new("/sys/block").join(&name)) {
            let mut parts: Vec<String> = parts
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|p| p.starts_with(&name))
                .collect();
            parts.sort();
            out.extend(parts.into_iter().map(|p| PathBuf::from("/dev").join(p)));
        }
    }
    out
}

/// Finds the floppy and reads its `parameters.txt`.
pub fn read_parameters() -> Result<VmediaParams, VmediaError> {
    let looked_at = candidates();
    for dev in &looked_at {
        match read_from_device(dev) {
            Ok(Some(params)) => {
                return Ok(VmediaParams {
                    device: dev.clone(),
                    params,
                });
            }
            Ok(None) => {}
            Err(e @ VmediaError::NoParameters { .. }) => return Err(e),
            // Unreadable devices (an empty CD drive, ...) are simply not the floppy.
            Err(e) => tracing::debug!(error = %e, "skipping device"),
        }
    }
    Err(VmediaError::NotFound { looked_at })
}

/// The parameters of `dev` if it is a FAT volume labelled `ir-vfd-dev`.
pub fn read_from_device(dev: &Path) -> Result<Option<BTreeMap<String, String>>, VmediaError> {
    let read_err = |source| VmediaError::Read {
        path: dev.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(dev).map_err(read_err)?;
    let mut boot = [0u8; 512];
    f.read_exact(&mut boot).map_err(read_err)?;
    if !bpb_label(&boot).is_some_and(|l| l.eq_ignore_ascii_case(FLOPPY_LABEL)) {
        return Ok(None);
    }
    let size = std::fs::metadata(dev)
        .map(|m| m.len())
        .ok()
        .filter(|s| *s > 0)
        .or_else(|| crate::disk::device_size(&f).ok())
        .unwrap_or(0);
    if size > MAX_FLOPPY_BYTES {
        return Ok(None);
    }
    let mut image = boot.to_vec();
    f.take(MAX_FLOPPY_BYTES)
        .read_to_end(&mut image)
        .map_err(read_err)?;
    parameters_in_fat(image)
        .map_err(read_err)?
        .map(Some)
        .ok_or(VmediaError::NoParameters {
            path: dev.to_path_buf(),
        })
}

/// The volume label in a FAT boot sector (FAT12/16 or FAT32 layout), if it has one.
pub fn bpb_label(boot: &[u8; 512]) -> Option<String> {
    if boot[510..512] != [0x55, 0xAA] {
        return None;
    }
    let sectors_per_fat16 = u16::from_le_bytes([boot[22], boot[23]]);
    let (sig, label) = if sectors_per_fat16 == 0 {
        (66, 71)
    } else {
        (38, 43)
    };
    (boot[sig] == 0x29 || boot[sig] == 0x28).then(|| {
        String::from_utf8_lossy(&boot[label..label + 11])
            .trim()
            .to_string()
    })
}

/// `parameters.txt` of a FAT image in memory, parsed; `None` when the file is missing.
pub fn parameters_in_fat(image: Vec<u8>) -> std::io::Result<Option<BTreeMap<String, String>>> {
    let fs = fatfs::FileSystem::new(Cursor::new(image), fatfs::FsOptions::new())?;
    for entry in fs.root_dir().iter() {
        let entry = entry?;
        if entry.is_file() && entry.file_name().eq_ignore_ascii_case(PARAMETERS_FILE) {
            let mut text = String::new();
            entry.to_file().read_to_string(&mut text)?;
            return Ok(Some(parse_parameters(&text)));
        }
    }
    Ok(None)
}

/// `key=value` lines (blank lines and lines without `=` ignored, whitespace trimmed).
pub fn parse_parameters(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floppy(label: &str, files: &[(&str, &str)]) -> Vec<u8> {
        let mut img = Cursor::new(vec![0u8; 1440 * 1024]);
        let mut l = [b' '; 11];
        l[..label.len()].copy_from_slice(label.as_bytes());
        fatfs::format_volume(
            &mut img,
            fatfs::FormatVolumeOptions::new()
                .volume_label(l)
                .fat_type(fatfs::FatType::Fat12),
        )
        .unwrap();
        {
            let fs = fatfs::FileSystem::new(&mut img, fatfs::FsOptions::new()).unwrap();
            for (name, text) in files {
                let mut f = fs.root_dir().create_file(name).unwrap();
                std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
            }
        }
        img.into_inner()
    }

    #[test]
    fn the_floppy_is_found_by_label_and_its_parameters_read() {
        let img = floppy(
            "IR-VFD-DEV",
            &[
                ("readme.txt", "x"),
                (
                    "parameters.txt",
                    "ipa-api-url=http://10.0.2.2:6385\n\nboot_method = vmedia\nnoise\n",
                ),
            ],
        );
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("fd0");
        std::fs::write(&dev, &img).unwrap();
        let params = read_from_device(&dev).unwrap().unwrap();
        assert_eq!(params["ipa-api-url"], "http://10.0.2.2:6385");
        assert_eq!(params["boot_method"], "vmedia");
        assert_eq!(params.len(), 2);

        let other = dir.path().join("fd1");
        std::fs::write(&other, floppy("DATA", &[("parameters.txt", "a=b")])).unwrap();
        assert!(read_from_device(&other).unwrap().is_none());

        let empty = dir.path().join("fd2");
        std::fs::write(&empty, floppy("ir-vfd-dev", &[])).unwrap();
        assert!(matches!(
            read_from_device(&empty),
            Err(VmediaError::NoParameters { .. })
        ));
    }

    #[test]
    fn the_floppy_ironboot_builds_for_vmedia_is_read() {
        let builder =
            ironboot::media::MediaBuilder::new(ironboot::media::MediaSettings::default()).unwrap();
        let token = "t".repeat(43);
        let spec = ironboot::media::FloppySpec {
            params: vec![
                ("ipa-api-url".into(), "http://10.0.2.2:6385".into()),
                ("boot_method".into(), "vmedia".into()),
                ("ipa-agent-token".into(), token.clone()),
            ],
            files: vec![],
            size_kib: None,
            label: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("fd0");
        builder.build_floppy(&spec, &dev).unwrap();
        let params = read_from_device(&dev).unwrap().unwrap();
        assert_eq!(params["ipa-agent-token"], token);
        assert_eq!(params["ipa-api-url"], "http://10.0.2.2:6385");
    }
}
