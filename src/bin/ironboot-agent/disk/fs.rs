//! Filesystems, read and made without any external tool: the UUID and label of what lies at
//! an offset (how `root uuid` is found, as `blkid` would report it; the ramdisk has no udev
//! database), a swap signature (`mkswap`) and a FAT filesystem (the EFI system partition).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use uuid::Uuid;

use super::region::Region;

/// What a filesystem probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    pub kind: &'static str,
    /// As `blkid` prints it (`UUID=`).
    pub uuid: Option<String>,
    pub label: Option<String>,
}

/// Bytes read for a probe: btrfs keeps its superblock at 64 KiB.
const PROBE_BYTES: u64 = 68 * 1024;

fn text(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn uuid(b: &[u8]) -> Option<String> {
    let u = Uuid::from_slice(b).ok()?;
    (!u.is_nil()).then(|| u.to_string())
}

/// The filesystem in `len` bytes at `offset`, if it is one of ext2/3/4, XFS, btrfs, swap,
/// ISO 9660 or FAT.
pub fn probe(f: &File, offset: u64, len: u64) -> io::Result<Option<FsInfo>> {
    let n = PROBE_BYTES.min(len) as usize;
    let mut b = vec![0u8; PROBE_BYTES as usize];
    let got = f.read_at(&mut b[..n], offset)?;
    Ok(identify(&b[..got]))
}

fn has(b: &[u8], at: usize, magic: &[u8]) -> bool {
    b.len() >= at + magic.len() && &b[at..at + magic.len()] == magic
}

fn ext(b: &[u8]) -> Option<FsInfo> {
    if !has(b, 1024 + 56, &[0x53, 0xef]) {
        return None;
    }
    let sb = &b[1024..];
    let compat = u32::from_le_bytes([sb[92], sb[93], sb[94], sb[95]]);
    let incompat = u32::from_le_bytes([sb[96], sb[97], sb[98], sb[99]]);
    let kind = if incompat & 0x40 != 0 {
        "ext4"
    } else if compat & 0x4 != 0 {
        "ext3"
    } else {
        "ext2"
    };
    Some(FsInfo {
        kind,
        uuid: uuid(&sb[104..120]),
        label: text(&sb[120..136]),
    })
}

fn iso9660(b: &[u8]) -> Option<FsInfo> {
    if !has(b, 32768 + 1, b"CD001") {
        return None;
    }
    let pvd = &b[32768..];
    // blkid's UUID for ISO 9660: the volume creation time, YYYY-MM-DD-HH-MM-SS-cc.
    let t = &pvd[813..829];
    let uuid = t.iter().all(u8::is_ascii_digit).then(|| {
        let s = String::from_utf8_lossy(t);
        let parts = [
            &s[0..4],
            &s[4..6],
            &s[6..8],
            &s[8..10],
            &s[10..12],
            &s[12..14],
            &s[14..16],
        ];
        parts.join("-")
    });
    Some(FsInfo {
        kind: "iso9660",
        uuid,
        label: text(&pvd[40..72]),
    })
}

fn vfat(b: &[u8]) -> Option<FsInfo> {
    if !has(b, 510, &[0x55, 0xaa]) {
        return None;
    }
    let (serial_at, label_at) = if has(b, 82, b"FAT32") {
        (67, 71)
    } else if has(b, 54, b"FAT1") {
        (39, 43)
    } else {
        return None;
    };
    let serial = u32::from_le_bytes([
        b[serial_at],
        b[serial_at + 1],
        b[serial_at + 2],
        b[serial_at + 3],
    ]);
    Some(FsInfo {
        kind: "vfat",
        uuid: Some(format!("{:04X}-{:04X}", serial >> 16, serial & 0xffff)),
        label: text(&b[label_at..label_at + 11]).filter(|l| l != "NO NAME"),
    })
}

fn identify(b: &[u8]) -> Option<FsInfo> {
    if let Some(found) = ext(b) {
        return Some(found);
    }
    if has(b, 0, b"XFSB") {
        return Some(FsInfo {
            kind: "xfs",
            uuid: uuid(&b[32..48]),
            label: text(&b[108..120]),
        });
    }
    if has(b, 65536 + 64, b"_BHRfS_M") {
        let sb = &b[65536..];
        return Some(FsInfo {
            kind: "btrfs",
            uuid: uuid(&sb[32..48]),
            label: text(&sb[299..299 + 256]),
        });
    }
    if has(b, 4096 - 10, b"SWAPSPACE2") {
        return Some(FsInfo {
            kind: "swap",
            uuid: uuid(&b[1024 + 12..1024 + 28]),
            label: text(&b[1024 + 28..1024 + 44]),
        });
    }
    iso9660(b).or_else(|| vfat(b))
}

/// Writes a Linux swap signature (version 1, 4 KiB pages) over `len` bytes at `offset`.
pub fn make_swap(f: &File, offset: u64, len: u64, label: &str) -> io::Result<Uuid> {
    const PAGE: u64 = 4096;
    let pages = len / PAGE;
    if pages < 10 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{len} bytes is too small for swap"),
        ));
    }
    let id = Uuid::new_v4();
    let mut page = vec![0u8; PAGE as usize];
    page[1024..1028].copy_from_slice(&1u32.to_le_bytes());
    page[1028..1032].copy_from_slice(&((pages - 1) as u32).to_le_bytes());
    page[1036..1052].copy_from_slice(id.as_bytes());
    for (i, c) in label.bytes().take(15).enumerate() {
        page[1052 + i] = c;
    }
    page[4086..4096].copy_from_slice(b"SWAPSPACE2");
    f.write_all_at(&page, offset)?;
    Ok(id)
}

/// Formats `len` bytes at `offset` as FAT (FAT32 from 512 MiB, as fatfs chooses) with
/// `label`; returns the volume serial as blkid prints it.
pub fn make_vfat(f: &File, offset: u64, len: u64, label: &str) -> io::Result<String> {
    let mut l = [b' '; 11];
    for (i, c) in label.bytes().take(11).enumerate() {
        l[i] = c.to_ascii_uppercase();
    }
    let serial = u32::from_le_bytes(Uuid::new_v4().as_bytes()[..4].try_into().unwrap_or([1; 4]));
    fatfs::format_volume(
        Region::new(f, offset, len),
        fatfs::FormatVolumeOptions::new()
            .volume_label(l)
            .volume_id(serial),
    )?;
    Ok(format!("{:04X}-{:04X}", serial >> 16, serial & 0xffff))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::tests_support::which;

    #[test]
    fn swap_and_fat_made_here_are_recognised() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(64 << 20).unwrap();
        let id = make_swap(&f, 1 << 20, 8 << 20, "swap1").unwrap();
        let s = probe(&f, 1 << 20, 8 << 20).unwrap().unwrap();
        assert_eq!((s.kind, s.uuid), ("swap", Some(id.to_string())));
        assert_eq!(s.label.as_deref(), Some("swap1"));
        let serial = make_vfat(&f, 16 << 20, 40 << 20, "efi-part").unwrap();
        let v = probe(&f, 16 << 20, 40 << 20).unwrap().unwrap();
        assert_eq!(v.kind, "vfat");
        assert_eq!(v.uuid, Some(serial));
        assert_eq!(v.label.as_deref(), Some("EFI-PART"));
        assert_eq!(probe(&f, 60 << 20, 4 << 20).unwrap(), None);
    }

    #[test]
    fn ext4_uuids_match_what_mkfs_chose() {
        let Some(mkfs) = which("mkfs.ext4") else {
            eprintln!("mkfs.ext4 not installed: skipped");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("root.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let want = "5a0f3ab9-3b4e-4b8e-9e0c-0d1f2e3a4b5c";
        let ok = std::process::Command::new(mkfs)
            .args(["-q", "-F", "-L", "partroot", "-U", want])
            .arg(&img)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let f = File::open(&img).unwrap();
        let info = probe(&f, 0, 16 << 20).unwrap().unwrap();
        assert_eq!(info.kind, "ext4");
        assert_eq!(info.uuid.as_deref(), Some(want));
        assert_eq!(info.label.as_deref(), Some("partroot"));
    }
}
