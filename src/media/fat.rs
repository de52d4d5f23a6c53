//! Small FAT images built in memory with fatfs, shared by the floppy and the ESP.
//!
//! The image is formatted and filled in a `Vec` (a few MiB at most), so fatfs's many small
//! unbuffered reads and writes never reach the disk; the caller writes the finished bytes once.
//! Timestamps come from a fixed clock, and the fatfs `.`/`..` bug is repaired afterwards.

use std::io::{Cursor, Read, Write};
use std::path::Path;

use fatfs::{FileSystem, FormatVolumeOptions, FsOptions, TimeProvider};

use super::fat_fixup::fix_dot_entries;
use super::{MEDIA_EPOCH, MediaError};

/// One file to place in a FAT image.
pub(crate) struct FatFile<'a> {
    /// `/`-separated path from the root; parents are created as needed.
    pub path: &'a str,
    pub len: u64,
    pub content: FatContent<'a>,
}

pub(crate) enum FatContent<'a> {
    Bytes(&'a [u8]),
    Host(&'a Path),
}

/// fatfs's clock: always [`MEDIA_EPOCH`], which is 1980-01-01 00:00:00.
#[derive(Debug)]
struct FixedClock;

const _: () = assert!(
    MEDIA_EPOCH == 315_532_800,
    "FixedClock spells out MEDIA_EPOCH"
);

impl TimeProvider for FixedClock {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date {
            year: 1980,
            month: 1,
            day: 1,
        }
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.get_current_date(),
            time: fatfs::Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

static FIXED_CLOCK: FixedClock = FixedClock;

/// Pads a label to the 11 bytes FAT stores (the caller has checked it is at most 11 bytes).
pub(crate) fn label_field(label: &str) -> [u8; 11] {
    let mut field = [b' '; 11];
    for (dst, src) in field.iter_mut().zip(label.bytes()) {
        *dst = src;
    }
    field
}

/// A volume serial derived from the content, so equal inputs give equal images.
pub(crate) fn volume_id(parts: &[&[u8]]) -> u32 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize();
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

/// Formats a `size`-byte image with `format` and writes `files` into it.
pub(crate) fn build_image(
    what: &'static str,
    size: usize,
    format: FormatVolumeOptions,
    files: &[FatFile<'_>],
) -> Result<Vec<u8>, MediaError> {
    let fat_err = |source| MediaError::Fat { what, source };
    let mut disk = Cursor::new(vec![0u8; size]);
    fatfs::format_volume(&mut disk, format).map_err(fat_err)?;
    disk.set_position(0);
    {
        let fs = FileSystem::new(&mut disk, FsOptions::new().time_provider(&FIXED_CLOCK))
            .map_err(fat_err)?;
        check_room(what, &fs, files)?;
        write_files(what, &fs, files)?;
        fs.unmount().map_err(fat_err)?;
    }
    let mut image = disk.into_inner();
    fix_dot_entries(&mut image).map_err(|source| MediaError::FatFixup { what, source })?;
    Ok(image)
}

fn write_files<T: fatfs::ReadWriteSeek>(
    what: &'static str,
    fs: &FileSystem<T>,
    files: &[FatFile<'_>],
) -> Result<(), MediaError> {
    let fat_err = |source| MediaError::Fat { what, source };
    let root = fs.root_dir();
    for file in files {
        let mut parent = String::new();
        let parts: Vec<&str> = file.path.split('/').collect();
        for dir in &parts[..parts.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(dir);
            root.create_dir(&parent).map_err(fat_err)?;
        }
        let mut out = root.create_file(file.path).map_err(fat_err)?;
        out.truncate().map_err(fat_err)?;
        match file.content {
            FatContent::Bytes(bytes) => out.write_all(bytes).map_err(fat_err)?,
            FatContent::Host(path) => {
                let input_err = |source| MediaError::Input {
                    what: "file",
                    path: path.to_path_buf(),
                    source,
                };
                let mut input = std::fs::File::open(path).map_err(input_err)?;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = input.read(&mut buf).map_err(input_err)?;
                    if n == 0 {
                        break;
                    }
                    out.write_all(&buf[..n]).map_err(fat_err)?;
                }
            }
        }
        out.flush().map_err(fat_err)?;
    }
    Ok(())
}

/// Refuses content that cannot fit before anything is written, naming the sizes involved.
fn check_room<T: fatfs::ReadWriteSeek>(
    what: &'static str,
    fs: &FileSystem<T>,
    files: &[FatFile<'_>],
) -> Result<(), MediaError> {
    let stats = fs
        .stats()
        .map_err(|source| MediaError::Fat { what, source })?;
    let cluster = u64::from(stats.cluster_size());
    let mut dirs = std::collections::BTreeSet::new();
    let mut clusters: u64 = 0;
    for file in files {
        clusters += file.len.div_ceil(cluster);
        let mut prefix = file.path;
        while let Some((parent, _)) = prefix.rsplit_once('/') {
            dirs.insert(parent.to_ascii_uppercase());
            prefix = parent;
        }
    }
    clusters += dirs.len() as u64;
    let free = u64::from(stats.free_clusters());
    if clusters > free {
        return Err(MediaError::TooLarge {
            what,
            needed: clusters * cluster,
            capacity: free * cluster,
        });
    }
    Ok(())
}

/// Checks every component of a path against what FAT long names allow.
pub(crate) fn check_fat_name(what: &'static str, path: &str) -> Result<(), MediaError> {
    for part in path.split('/') {
        if part.chars().count() > 255 {
            return Err(MediaError::invalid(
                what,
                path,
                "a name is longer than 255 characters",
            ));
        }
        if let Some(c) = part
            .chars()
            .find(|c| "\"*:<>?\\|".contains(*c) || c.is_control())
        {
            return Err(MediaError::invalid(
                what,
                path,
                format!("{c:?} is not allowed in FAT file names"),
            ));
        }
        if part.ends_with('.') || part.ends_with(' ') {
            return Err(MediaError::invalid(
                what,
                path,
                "FAT names cannot end with '.' or a space",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_nested_files_with_fixed_times() {
        let files = [
            FatFile {
                path: "EFI/BOOT/BOOTX64.EFI",
                len: 3000,
                content: FatContent::Bytes(&[7u8; 3000]),
            },
            FatFile {
                path: "EFI/BOOT/grub.cfg",
                len: 4,
                content: FatContent::Bytes(b"boot"),
            },
        ];
        let image = build_image("test", 1 << 20, FormatVolumeOptions::new(), &files).unwrap();
        let again = build_image("test", 1 << 20, FormatVolumeOptions::new(), &files).unwrap();
        assert_eq!(image, again);
        let mut disk = Cursor::new(image);
        let fs = FileSystem::new(&mut disk, FsOptions::new()).unwrap();
        let mut cfg = String::new();
        fs.root_dir()
            .open_file("EFI/BOOT/grub.cfg")
            .unwrap()
            .read_to_string(&mut cfg)
            .unwrap();
        assert_eq!(cfg, "boot");
        let entry = fs.root_dir().iter().next().unwrap().unwrap();
        assert_eq!(entry.modified().date.year, 1980);
    }

    #[test]
    fn refuses_content_that_does_not_fit() {
        let big = vec![0u8; 200 * 1024];
        let files = [FatFile {
            path: "big.bin",
            len: big.len() as u64,
            content: FatContent::Bytes(&big),
        }];
        let opts = FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat12)
            .max_root_dir_entries(64);
        let err = build_image("floppy", 100 * 1024, opts, &files).unwrap_err();
        assert!(
            matches!(err, MediaError::TooLarge { needed, .. } if needed >= 200 * 1024),
            "{err}"
        );
    }

    #[test]
    fn fat_names() {
        check_fat_name("file", "openstack/latest/meta_data.json").unwrap();
        check_fat_name("file", "a b.txt").unwrap();
        for bad in ["a:b", "x/y?", "trailing.", "star*"] {
            assert!(check_fat_name("file", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volume_ids_follow_content() {
        assert_eq!(volume_id(&[b"a", b"b"]), volume_id(&[b"a", b"b"]));
        assert_ne!(volume_id(&[b"a", b"b"]), volume_id(&[b"ab"]));
    }
}
