//! The FAT12 floppy that hands the ramdisk its parameters (Ironic's `create_vfat_image`):
//! volume label `ir-vfd-dev`, `parameters.txt` at the root with one `key=value` per line, and
//! optional extra files.

use std::collections::HashSet;

use fatfs::{FatType, FormatVolumeOptions};

use super::fat::{FatContent, FatFile, build_image, check_fat_name, label_field, volume_id};
use super::{FileSource, MediaError, MediaFile, MediaSettings, check_media_path, host_file_len};

/// The parameters file IPA reads from the floppy's root.
pub const PARAMETERS_FILE: &str = "parameters.txt";

/// Smallest floppy accepted: FAT12 still has room for its tables and a few files.
pub(crate) const FLOPPY_MIN_KIB: u32 = 64;
/// Largest "floppy" accepted (a small vfat image; beyond this nobody means a floppy).
pub(crate) const FLOPPY_MAX_KIB: u32 = 32 * 1024;

/// What goes on a floppy. Unset size and label take the [`MediaSettings`] defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FloppySpec {
    /// `parameters.txt` lines in order; no parameters file is written when empty.
    pub params: Vec<(String, String)>,
    /// Extra files (e.g. `openstack/latest/network_data.json`).
    pub files: Vec<MediaFile>,
    pub size_kib: Option<u32>,
    pub label: Option<String>,
}

/// The `parameters.txt` body: `key=value` lines joined by `\n`, without a trailing newline (as
/// Ironic writes it). Keys must be non-empty without `=` or whitespace; neither keys nor values
/// may contain line breaks or NUL.
pub fn render_parameters(params: &[(String, String)]) -> Result<String, MediaError> {
    let mut seen = HashSet::new();
    let mut lines = Vec::with_capacity(params.len());
    for (key, value) in params {
        if key.is_empty() {
            return Err(MediaError::invalid("parameter key", key, "is empty"));
        }
        if let Some(c) = key
            .chars()
            .find(|c| *c == '=' || c.is_whitespace() || c.is_control())
        {
            return Err(MediaError::invalid(
                "parameter key",
                key,
                format!("must not contain {c:?}"),
            ));
        }
        if let Some(c) = value.chars().find(|c| matches!(c, '\n' | '\r' | '\0')) {
            return Err(MediaError::invalid(
                "parameter value",
                format!("{key}={value}"),
                format!("must not contain {c:?}"),
            ));
        }
        if !seen.insert(key.as_str()) {
            return Err(MediaError::invalid("parameter key", key, "is given twice"));
        }
        lines.push(format!("{key}={value}"));
    }
    Ok(lines.join("\n"))
}

/// Checks a FAT volume label: 1 to 11 bytes of printable ASCII without the characters FAT
/// forbids. Lowercase is kept as given (Ironic's `mkfs -n ir-vfd-dev` does the same).
pub(crate) fn check_fat_label(label: &str) -> Result<(), String> {
    if label.is_empty() || label.len() > 11 {
        return Err(format!("must be 1 to 11 bytes, not {}", label.len()));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !c.is_ascii_graphic() && *c != ' ' || "\"*+,./:;<=>?[\\]|".contains(*c))
    {
        return Err(format!("{c:?} is not allowed in a FAT label"));
    }
    Ok(())
}

/// Builds the image bytes (the caller writes them atomically).
pub(crate) fn build(spec: &FloppySpec, settings: &MediaSettings) -> Result<Vec<u8>, MediaError> {
    let size_kib = spec.size_kib.unwrap_or(settings.floppy_size_kib);
    if !(FLOPPY_MIN_KIB..=FLOPPY_MAX_KIB).contains(&size_kib) {
        return Err(MediaError::invalid(
            "floppy size (KiB)",
            size_kib.to_string(),
            format!("must be between {FLOPPY_MIN_KIB} and {FLOPPY_MAX_KIB}"),
        ));
    }
    let label = spec.label.as_deref().unwrap_or(&settings.floppy_label);
    check_fat_label(label).map_err(|reason| MediaError::invalid("floppy label", label, reason))?;
    let parameters = render_parameters(&spec.params)?;

    let mut names = HashSet::new();
    let mut files = Vec::with_capacity(spec.files.len() + 1);
    if !spec.params.is_empty() {
        names.insert(PARAMETERS_FILE.to_ascii_lowercase());
        files.push(FatFile {
            path: PARAMETERS_FILE,
            len: parameters.len() as u64,
            content: FatContent::Bytes(parameters.as_bytes()),
        });
    }
    for file in &spec.files {
        check_media_path("floppy file", &file.dest)?;
        check_fat_name("floppy file", &file.dest)?;
        // FAT names are case-insensitive: `A.txt` and `a.TXT` are the same file.
        if !names.insert(file.dest.to_lowercase()) {
            return Err(MediaError::invalid(
                "floppy file",
                &file.dest,
                "is given twice",
            ));
        }
        let (len, content) = match &file.source {
            FileSource::Host(path) => (host_file_len("floppy file", path)?, FatContent::Host(path)),
            FileSource::Bytes(bytes) => (bytes.len() as u64, FatContent::Bytes(bytes)),
        };
        files.push(FatFile {
            path: &file.dest,
            len,
            content,
        });
    }

    let dests: Vec<&[u8]> = spec.files.iter().map(|f| f.dest.as_bytes()).collect();
    let id = volume_id(&[label.as_bytes(), parameters.as_bytes(), &dests.concat()]);
    let format = format_options(size_kib, label, id);
    build_image("floppy", size_kib as usize * 1024, format, &files)
}

/// Geometry per size: the real 1.44 MB and 2.88 MB floppies get the BPB `mkfs.msdos -C`
/// writes for them (media 0xF0, 18/36 sectors per track, 2 heads); other sizes get FAT12 with
/// 512-byte clusters while that fits, else fatfs's choice.
fn format_options(size_kib: u32, label: &str, id: u32) -> FormatVolumeOptions {
    let base = FormatVolumeOptions::new()
        .total_sectors(size_kib * 2)
        .volume_label(label_field(label))
        .volume_id(id)
        .drive_num(0);
    match size_kib {
        1440 => base
            .fat_type(FatType::Fat12)
            .bytes_per_cluster(512)
            .max_root_dir_entries(224)
            .media(0xF0)
            .sectors_per_track(18)
            .heads(2),
        2880 => base
            .fat_type(FatType::Fat12)
            .bytes_per_cluster(1024)
            .max_root_dir_entries(240)
            .media(0xF0)
            .sectors_per_track(36)
            .heads(2),
        0..360 => base
            .fat_type(FatType::Fat12)
            .bytes_per_cluster(512)
            .max_root_dir_entries(64),
        360..2000 => base
            .fat_type(FatType::Fat12)
            .bytes_per_cluster(512)
            .max_root_dir_entries(224),
        _ => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Read};

    fn spec(params: &[(&str, &str)]) -> FloppySpec {
        FloppySpec {
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn read_back(image: Vec<u8>, path: &str) -> (String, String, FatType) {
        let mut disk = Cursor::new(image);
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new()).unwrap();
        let mut body = String::new();
        fs.root_dir()
            .open_file(path)
            .unwrap()
            .read_to_string(&mut body)
            .unwrap();
        (body, fs.volume_label(), fs.fat_type())
    }

    #[test]
    fn parameters_are_lines_without_trailing_newline() {
        let text = render_parameters(
            &spec(&[
                ("ipa-api-url", "http://10.0.2.2:6385"),
                ("boot_method", "vmedia"),
            ])
            .params,
        )
        .unwrap();
        assert_eq!(text, "ipa-api-url=http://10.0.2.2:6385\nboot_method=vmedia");
        assert_eq!(render_parameters(&[]).unwrap(), "");
    }

    #[test]
    fn bad_parameters_are_refused() {
        for (k, v) in [
            ("a=b", "c"),
            ("", "x"),
            ("key", "two\nlines"),
            ("sp ace", "x"),
            ("k", "nul\0"),
        ] {
            let err = render_parameters(&spec(&[(k, v)]).params).unwrap_err();
            assert!(
                matches!(err, MediaError::InvalidInput { .. }),
                "{k:?}={v:?}: {err}"
            );
        }
        assert!(render_parameters(&spec(&[("a", "1"), ("a", "2")]).params).is_err());
    }

    #[test]
    fn every_size_formats_and_reads_back() {
        let settings = MediaSettings::default();
        for size in [64, 100, 720, 1440, 1999, 2880, 4096, 32 * 1024] {
            let mut s = spec(&[("boot_method", "vmedia")]);
            s.size_kib = Some(size);
            s.files
                .push(MediaFile::bytes("openstack/latest/network_data.json", "{}"));
            let image = build(&s, &settings).unwrap();
            assert_eq!(image.len(), size as usize * 1024);
            let (body, label, fat) = read_back(image.clone(), PARAMETERS_FILE);
            assert_eq!(body, "boot_method=vmedia");
            assert_eq!(label, "ir-vfd-dev");
            if size <= 2880 {
                assert_eq!(fat, FatType::Fat12, "{size} KiB");
            }
            assert_eq!(
                read_back(image, "openstack/latest/network_data.json").0,
                "{}"
            );
        }
    }

    #[test]
    fn standard_floppy_geometry() {
        let image = build(&spec(&[("a", "b")]), &MediaSettings::default()).unwrap();
        let u16_at = |o: usize| u16::from_le_bytes([image[o], image[o + 1]]);
        assert_eq!(u16_at(11), 512); // bytes per sector
        assert_eq!(image[13], 1); // sectors per cluster
        assert_eq!(u16_at(17), 224); // root entries
        assert_eq!(u16_at(19), 2880); // sectors
        assert_eq!(image[21], 0xF0); // media
        assert_eq!(u16_at(22), 9); // sectors per FAT
        assert_eq!(u16_at(24), 18); // sectors per track
        assert_eq!(u16_at(26), 2); // heads
        assert_eq!(&image[43..54], b"ir-vfd-dev ");
    }

    #[test]
    fn refuses_bad_input() {
        let settings = MediaSettings::default();
        let mut s = spec(&[("a", "b")]);
        s.label = Some("label-too-long".into());
        assert!(build(&s, &settings).is_err());
        let mut s = spec(&[("a", "b")]);
        s.files.push(MediaFile::bytes("PARAMETERS.TXT", "x"));
        assert!(build(&s, &settings).is_err());
        let mut s = spec(&[]);
        s.files.push(MediaFile::bytes("../escape", "x"));
        assert!(build(&s, &settings).is_err());
        let mut s = spec(&[]);
        s.size_kib = Some(100);
        s.files
            .push(MediaFile::bytes("big.bin", vec![0u8; 200 * 1024]));
        assert!(matches!(
            build(&s, &settings),
            Err(MediaError::TooLarge { .. })
        ));
        let mut s = spec(&[]);
        s.files.push(MediaFile::host("x", "/nonexistent/file"));
        assert!(matches!(
            build(&s, &settings),
            Err(MediaError::Input { .. })
        ));
    }

    #[test]
    fn same_input_same_bytes_and_different_input_different_serial() {
        let settings = MediaSettings::default();
        let a = build(&spec(&[("k", "v")]), &settings).unwrap();
        assert_eq!(a, build(&spec(&[("k", "v")]), &settings).unwrap());
        let b = build(&spec(&[("k", "w")]), &settings).unwrap();
        assert_ne!(a[39..43], b[39..43]);
    }
}
