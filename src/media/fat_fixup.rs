//! Repairs the `.` and `..` entries that fatfs 0.3.6 writes into every new directory.
//!
//! fatfs 0.3.6 creates a directory's `.` and `..` through its long-file-name path, so the first
//! cluster starts LFN(`.`), `.`, LFN(`..`), `..` (upstream rust-fatfs #117, fixed only on its
//! unreleased master). Linux, mtools, GRUB and OVMF read such directories, but `fsck.fat`
//! reports them, and fsck-clean media are part of what we promise. After unmounting, this walks
//! the image from the root and, in each such directory, moves `.` and `..` into slots 0 and 1
//! and marks slots 2 and 3 deleted. Nothing else moves, so every other entry stays valid.

use std::collections::HashSet;

const ENTRY: usize = 32;
const ATTR_LFN: u8 = 0x0F;
const ATTR_DIR: u8 = 0x10;
const ATTR_VOLUME: u8 = 0x08;
const DELETED: u8 = 0xE5;
const DOT: &[u8; 11] = b".          ";
const DOTDOT: &[u8; 11] = b"..         ";

/// What is wrong with an image the fix-up cannot walk (never expected from fatfs output).
#[derive(Debug, thiserror::Error)]
#[error("FAT image is malformed: {0}")]
pub struct FixupError(&'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FatBits {
    Twelve,
    Sixteen,
    ThirtyTwo,
}

/// The layout facts the walk needs, read from the boot sector.
#[derive(Debug)]
struct Layout {
    bytes_per_sector: usize,
    sectors_per_cluster: usize,
    fat_offset: usize,
    root_offset: usize,
    root_len: usize,
    root_cluster: u32,
    data_offset: usize,
    clusters: u32,
    bits: FatBits,
}

fn le16(img: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([img[at], img[at + 1]]))
}

fn le32(img: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([img[at], img[at + 1], img[at + 2], img[at + 3]])
}

impl Layout {
    fn read(img: &[u8]) -> Result<Self, FixupError> {
        if img.len() < 512 {
            return Err(FixupError("shorter than a boot sector"));
        }
        let bytes_per_sector = le16(img, 11);
        let sectors_per_cluster = usize::from(img[13]);
        let reserved = le16(img, 14);
        let fats = usize::from(img[16]);
        let root_entries = le16(img, 17);
        let total = match le16(img, 19) {
            0 => le32(img, 32) as usize,
            n => n,
        };
        let fat_sectors = match le16(img, 22) {
            0 => le32(img, 36) as usize,
            n => n,
        };
        if bytes_per_sector < 512 || sectors_per_cluster == 0 || fats == 0 {
            return Err(FixupError("boot sector geometry"));
        }
        let root_sectors = (root_entries * ENTRY).div_ceil(bytes_per_sector);
        let first_data = reserved + fats * fat_sectors + root_sectors;
        if total <= first_data || total * bytes_per_sector > img.len() {
            return Err(FixupError("sector counts do not fit the image"));
        }
        let clusters = ((total - first_data) / sectors_per_cluster) as u32;
        let bits = match clusters {
            0..4085 => FatBits::Twelve,
            4085..65525 => FatBits::Sixteen,
            _ => FatBits::ThirtyTwo,
        };
        Ok(Self {
            bytes_per_sector,
            sectors_per_cluster,
            fat_offset: reserved * bytes_per_sector,
            root_offset: (reserved + fats * fat_sectors) * bytes_per_sector,
            root_len: root_sectors * bytes_per_sector,
            root_cluster: if bits == FatBits::ThirtyTwo {
                le32(img, 44)
            } else {
                0
            },
            data_offset: first_data * bytes_per_sector,
            clusters,
            bits,
        })
    }

    fn cluster_len(&self) -> usize {
        self.sectors_per_cluster * self.bytes_per_sector
    }

    fn cluster_offset(&self, cluster: u32) -> usize {
        self.data_offset + (cluster as usize - 2) * self.cluster_len()
    }

    fn valid_cluster(&self, cluster: u32) -> bool {
        (2..self.clusters + 2).contains(&cluster)
    }

    fn next_cluster(&self, img: &[u8], cluster: u32) -> u32 {
        let n = cluster as usize;
        match self.bits {
            FatBits::Twelve => {
                let raw = le16(img, self.fat_offset + n + n / 2) as u32;
                if n % 2 == 1 { raw >> 4 } else { raw & 0xFFF }
            }
            FatBits::Sixteen => le16(img, self.fat_offset + 2 * n) as u32,
            FatBits::ThirtyTwo => le32(img, self.fat_offset + 4 * n) & 0x0FFF_FFFF,
        }
    }

    /// Byte ranges of a directory's clusters, following the FAT chain (cycle-safe).
    fn chain(&self, img: &[u8], first: u32) -> Result<Vec<usize>, FixupError> {
        let mut out = Vec::new();
        let mut cluster = first;
        while self.valid_cluster(cluster) {
            if out.len() > self.clusters as usize {
                return Err(FixupError("cluster chain loops"));
            }
            out.push(self.cluster_offset(cluster));
            cluster = self.next_cluster(img, cluster);
        }
        Ok(out)
    }
}

/// Fixes every directory in the image; returns how many it changed.
pub fn fix_dot_entries(img: &mut [u8]) -> Result<usize, FixupError> {
    let layout = Layout::read(img)?;
    let mut fixed = 0;
    let mut seen = HashSet::new();
    let mut pending: Vec<Vec<(usize, usize)>> = vec![root_region(&layout, img)?];
    while let Some(region) = pending.pop() {
        for first in subdirectories(img, &region) {
            if !layout.valid_cluster(first) || !seen.insert(first) {
                continue;
            }
            let start = layout.cluster_offset(first);
            if layout.cluster_len() >= 4 * ENTRY
                && fix_first_cluster(&mut img[start..start + 4 * ENTRY])
            {
                fixed += 1;
            }
            let len = layout.cluster_len();
            pending.push(
                layout
                    .chain(img, first)?
                    .into_iter()
                    .map(|o| (o, len))
                    .collect(),
            );
        }
    }
    Ok(fixed)
}

fn root_region(layout: &Layout, img: &[u8]) -> Result<Vec<(usize, usize)>, FixupError> {
    if layout.bits == FatBits::ThirtyTwo {
        let len = layout.cluster_len();
        Ok(layout
            .chain(img, layout.root_cluster)?
            .into_iter()
            .map(|o| (o, len))
            .collect())
    } else {
        Ok(vec![(layout.root_offset, layout.root_len)])
    }
}

/// First clusters of the subdirectories listed in a directory's byte ranges.
fn subdirectories(img: &[u8], region: &[(usize, usize)]) -> Vec<u32> {
    let mut out = Vec::new();
    for &(offset, len) in region {
        for entry in img[offset..offset + len].chunks_exact(ENTRY) {
            match entry[0] {
                0 => return out,
                DELETED | b'.' => continue,
                _ => {}
            }
            let attr = entry[11];
            if attr == ATTR_LFN || attr & ATTR_VOLUME != 0 || attr & ATTR_DIR == 0 {
                continue;
            }
            let hi = u32::from(u16::from_le_bytes([entry[20], entry[21]]));
            let lo = u32::from(u16::from_le_bytes([entry[26], entry[27]]));
            out.push(hi << 16 | lo);
        }
    }
    out
}

/// Rewrites LFN(.), ., LFN(..), .. into ., .., deleted, deleted. Returns whether it matched.
fn fix_first_cluster(slots: &mut [u8]) -> bool {
    let name = |i: usize| &slots[i * ENTRY..i * ENTRY + 11];
    let attr = |i: usize| slots[i * ENTRY + 11];
    let matches = attr(0) == ATTR_LFN && name(1) == DOT && attr(2) == ATTR_LFN && name(3) == DOTDOT;
    if !matches {
        return false;
    }
    slots.copy_within(ENTRY..2 * ENTRY, 0);
    slots.copy_within(3 * ENTRY..4 * ENTRY, ENTRY);
    slots[2 * ENTRY] = DELETED;
    slots[3 * ENTRY] = DELETED;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    fn image_with_dirs(size: usize, fat: fatfs::FatType) -> Vec<u8> {
        let mut disk = Cursor::new(vec![0u8; size]);
        fatfs::format_volume(&mut disk, fatfs::FormatVolumeOptions::new().fat_type(fat)).unwrap();
        {
            let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new()).unwrap();
            {
                let root = fs.root_dir();
                root.create_dir("EFI").unwrap();
                let boot = root.create_dir("EFI/BOOT").unwrap();
                boot.create_file("grub.cfg")
                    .unwrap()
                    .write_all(b"set timeout=0\n")
                    .unwrap();
                root.create_dir("openstack").unwrap();
                root.create_dir("openstack/latest").unwrap();
            }
            fs.unmount().unwrap();
        }
        disk.into_inner()
    }

    fn first_slots(img: &[u8], path: &str) -> Vec<[u8; 11]> {
        let layout = Layout::read(img).unwrap();
        let mut region = root_region(&layout, img).unwrap();
        let mut cluster = 0;
        for part in path.split('/') {
            let mut found = None;
            for &(offset, len) in &region {
                for e in img[offset..offset + len].chunks_exact(ENTRY) {
                    if e[11] != ATTR_LFN
                        && e[0] != DELETED
                        && String::from_utf8_lossy(&e[..8]).trim_end() == part
                    {
                        found = Some(u32::from(u16::from_le_bytes([e[26], e[27]])));
                    }
                }
            }
            cluster = found.unwrap();
            let len = layout.cluster_len();
            region = layout
                .chain(img, cluster)
                .unwrap()
                .into_iter()
                .map(|o| (o, len))
                .collect();
        }
        let start = layout.cluster_offset(cluster);
        (0..4)
            .map(|i| {
                img[start + i * ENTRY..start + i * ENTRY + 11]
                    .try_into()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn moves_dot_entries_into_the_first_slots() {
        for (size, fat) in [
            (1_474_560, fatfs::FatType::Fat12),
            (16 << 20, fatfs::FatType::Fat16),
        ] {
            let mut img = image_with_dirs(size, fat);
            // The upstream bug is still there: slot 0 is an LFN entry.
            assert_eq!(first_slots(&img, "EFI/BOOT")[1], *DOT);
            assert_eq!(fix_dot_entries(&mut img).unwrap(), 4);
            for dir in ["EFI", "EFI/BOOT", "OPENST~1", "OPENST~1/LATEST"] {
                let slots = first_slots(&img, dir);
                assert_eq!(slots[0], *DOT, "{dir}");
                assert_eq!(slots[1], *DOTDOT, "{dir}");
                assert_eq!(slots[2][0], DELETED, "{dir}");
                assert_eq!(slots[3][0], DELETED, "{dir}");
            }
            // fatfs still reads the repaired tree, and a second run changes nothing.
            let mut disk = Cursor::new(img.clone());
            let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new()).unwrap();
            let mut cfg = String::new();
            std::io::Read::read_to_string(
                &mut fs.root_dir().open_file("EFI/BOOT/grub.cfg").unwrap(),
                &mut cfg,
            )
            .unwrap();
            assert_eq!(cfg, "set timeout=0\n");
            drop(fs);
            assert_eq!(fix_dot_entries(&mut img).unwrap(), 0);
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(fix_dot_entries(&mut [0u8; 100]).is_err());
        assert!(fix_dot_entries(&mut vec![0u8; 4096]).is_err());
    }
}
