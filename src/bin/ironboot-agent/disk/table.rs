//! MBR (msdos) and GPT partition tables: read, write a new one for a partition image, add a
//! partition at the end of the disk for a config drive (as IPA does after a whole-disk
//! image), and move a GPT's backup to the end of a disk larger than the image it came from.
//!
//! Partitions start on 1 MiB boundaries. GUIDs are stored in GPT's mixed-endian form.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use uuid::Uuid;

const MIB: u64 = 1 << 20;
const GPT_ENTRIES: u64 = 128;
const GPT_ENTRY_SIZE: u64 = 128;
const GPT_HEADER_SIZE: usize = 92;
/// MBR partitions address 32-bit sector numbers.
const MBR_MAX_SECTORS: u64 = 1 << 32;

pub const GUID_LINUX: Uuid = uuid::uuid!("0fc63daf-8483-4772-8e79-3d69d8477de4");
pub const GUID_SWAP: Uuid = uuid::uuid!("0657fd6d-a4ab-43c4-84e5-0933c84b4f4f");
pub const GUID_ESP: Uuid = uuid::uuid!("c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
pub const GUID_BIOS_BOOT: Uuid = uuid::uuid!("21686148-6449-6e6f-744e-656564454649");

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    NoRoom(String),
    #[error("the disk has no partition table (MBR or GPT) to add a partition to")]
    NoTable,
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> TableError {
    move |source| TableError::Io { what, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Msdos,
    Gpt,
}

/// What a partition holds: decides the MBR type byte and the GPT type GUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Linux,
    Swap,
    Efi,
    BiosBoot,
}

impl Role {
    fn mbr_type(self) -> u8 {
        match self {
            Role::Linux | Role::BiosBoot => 0x83,
            Role::Swap => 0x82,
            Role::Efi => 0xef,
        }
    }

    fn guid(self) -> Uuid {
        match self {
            Role::Linux => GUID_LINUX,
            Role::Swap => GUID_SWAP,
            Role::Efi => GUID_ESP,
            Role::BiosBoot => GUID_BIOS_BOOT,
        }
    }
}

/// One partition of a table, in bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    /// 1-based, as the kernel numbers them.
    pub number: u32,
    pub start: u64,
    pub size: u64,
    pub mbr_type: Option<u8>,
    pub type_guid: Option<Uuid>,
    /// GPT's unique partition GUID (PARTUUID).
    pub unique_guid: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub label: Label,
    /// MBR disk signature (also present under a GPT's protective MBR).
    pub mbr_id: u32,
    pub partitions: Vec<Partition>,
}

impl Table {
    /// PARTUUID of a partition as the kernel spells it (`<gpt guid>` or `<mbr id>-<nn>`).
    pub fn partuuid(&self, p: &Partition) -> String {
        match p.unique_guid {
            Some(g) => g.to_string(),
            None => format!("{:08x}-{:02x}", self.mbr_id, p.number),
        }
    }
}

/// A partition to create, in order, from 1 MiB on.
#[derive(Debug, Clone)]
pub struct NewPartition {
    pub role: Role,
    pub size: u64,
    pub bootable: bool,
    pub name: &'static str,
}

fn read_sector(f: &File, lba: u64, sector: u64) -> Result<Vec<u8>, TableError> {
    let mut buf = vec![0u8; sector as usize];
    f.read_exact_at(&mut buf, lba * sector)
        .map_err(io_err("reading the partition table"))?;
    Ok(buf)
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn guid_at(b: &[u8], at: usize) -> Uuid {
    let mut x = [0u8; 16];
    x.copy_from_slice(&b[at..at + 16]);
    Uuid::from_bytes_le(x)
}

/// The MBR disk signature (bytes 440..444): the "root uuid" IPA reports for whole-disk images.
pub fn mbr_disk_id(f: &File) -> Result<u32, TableError> {
    let mut b = [0u8; 4];
    f.read_exact_at(&mut b, 440)
        .map_err(io_err("reading the MBR disk signature"))?;
    Ok(u32::from_le_bytes(b))
}

struct GptHeader {
    backup_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Uuid,
    entries_lba: u64,
    entries: Vec<u8>,
}

fn read_gpt(f: &File, sector: u64) -> Result<Option<GptHeader>, TableError> {
    let h = read_sector(f, 1, sector)?;
    if &h[..8] != b"EFI PART" {
        return Ok(None);
    }
    let num = u64::from(le32(&h, 80));
    let size = u64::from(le32(&h, 84));
    if size != GPT_ENTRY_SIZE || num == 0 || num > 1024 {
        return Ok(None);
    }
    let entries_lba = le64(&h, 72);
    let mut entries = vec![0u8; (num * size) as usize];
    f.read_exact_at(&mut entries, entries_lba * sector)
        .map_err(io_err("reading the GPT entries"))?;
    Ok(Some(GptHeader {
        backup_lba: le64(&h, 32),
        first_usable: le64(&h, 40),
        last_usable: le64(&h, 48),
        disk_guid: guid_at(&h, 56),
        entries_lba,
        entries,
    }))
}

fn gpt_partitions(g: &GptHeader, sector: u64) -> Vec<Partition> {
    g.entries
        .chunks(GPT_ENTRY_SIZE as usize)
        .enumerate()
        .filter(|(_, e)| e[..16].iter().any(|b| *b != 0))
        .map(|(i, e)| {
            let first = le64(e, 32);
            let last = le64(e, 40);
            Partition {
                number: i as u32 + 1,
                start: first * sector,
                size: (last.saturating_sub(first) + 1) * sector,
                mbr_type: None,
                type_guid: Some(guid_at(e, 0)),
                unique_guid: Some(guid_at(e, 16)),
            }
        })
        .collect()
}

/// The disk's partition table, if it has one.
pub fn read(f: &File, sector: u64) -> Result<Option<Table>, TableError> {
    let mbr = read_sector(f, 0, 512.max(sector))?;
    if mbr[510..512] != [0x55, 0xaa] {
        return Ok(None);
    }
    let mbr_id = le32(&mbr, 440);
    let entries: Vec<(usize, &[u8])> = (0..4)
        .map(|i| (i, &mbr[446 + 16 * i..462 + 16 * i]))
        .filter(|(_, e)| e[4] != 0)
        .collect();
    if entries.iter().any(|(_, e)| e[4] == 0xee)
        && let Some(g) = read_gpt(f, sector)?
    {
        return Ok(Some(Table {
            label: Label::Gpt,
            mbr_id,
            partitions: gpt_partitions(&g, sector),
        }));
    }
    let partitions = entries
        .iter()
        .map(|(i, e)| Partition {
            number: *i as u32 + 1,
            start: u64::from(le32(e, 8)) * sector,
            size: u64::from(le32(e, 12)) * sector,
            mbr_type: Some(e[4]),
            type_guid: None,
            unique_guid: None,
        })
        .collect();
    Ok(Some(Table {
        label: Label::Msdos,
        mbr_id,
        partitions,
    }))
}

fn mbr_entry(bootable: bool, kind: u8, start_lba: u64, sectors: u64) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[0] = if bootable { 0x80 } else { 0 };
    // CHS fields unused (LBA addressing): the "beyond CHS" marker.
    e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[4] = kind;
    e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[8..12].copy_from_slice(&(start_lba as u32).to_le_bytes());
    e[12..16].copy_from_slice(&(sectors as u32).to_le_bytes());
    e
}

/// Sequential 1 MiB-aligned extents for `parts`, in sectors, checked against `last_sector`.
fn lay_out(
    parts: &[NewPartition],
    sector: u64,
    last_sector: u64,
) -> Result<Vec<(u64, u64)>, TableError> {
    let align = MIB / sector;
    let mut next = align;
    let mut out = Vec::new();
    for p in parts {
        let count = p.size.div_ceil(sector);
        if next + count - 1 > last_sector {
            return Err(TableError::NoRoom(format!(
                "the partitions need {} MiB but the disk has {} MiB",
                (next + count) * sector / MIB,
                (last_sector + 1) * sector / MIB
            )));
        }
        out.push((next, count));
        next = (next + count).next_multiple_of(align);
    }
    Ok(out)
}

fn random_u32() -> u32 {
    let b = *Uuid::new_v4().as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Writes a new MBR with `parts` (at most four primaries).
pub fn write_msdos(
    f: &File,
    disk_size: u64,
    sector: u64,
    parts: &[NewPartition],
) -> Result<Table, TableError> {
    if parts.len() > 4 {
        return Err(TableError::NoRoom(format!(
            "an msdos label holds four primary partitions, {} are needed (use disk_label gpt)",
            parts.len()
        )));
    }
    let sectors = (disk_size / sector).min(MBR_MAX_SECTORS);
    let extents = lay_out(parts, sector, sectors - 1)?;
    let mut mbr = vec![0u8; 512];
    let mbr_id = random_u32();
    mbr[440..444].copy_from_slice(&mbr_id.to_le_bytes());
    let mut partitions = Vec::new();
    for (i, (p, (start, count))) in parts.iter().zip(extents).enumerate() {
        let e = mbr_entry(p.bootable, p.role.mbr_type(), start, count);
        mbr[446 + 16 * i..462 + 16 * i].copy_from_slice(&e);
        partitions.push(Partition {
            number: i as u32 + 1,
            start: start * sector,
            size: count * sector,
            mbr_type: Some(p.role.mbr_type()),
            type_guid: None,
            unique_guid: None,
        });
    }
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    f.write_all_at(&mbr, 0).map_err(io_err("writing the MBR"))?;
    Ok(Table {
        label: Label::Msdos,
        mbr_id,
        partitions,
    })
}

fn gpt_entry(type_guid: Uuid, unique: Uuid, first: u64, last: u64, name: &str) -> Vec<u8> {
    let mut e = vec![0u8; GPT_ENTRY_SIZE as usize];
    e[0..16].copy_from_slice(&type_guid.to_bytes_le());
    e[16..32].copy_from_slice(&unique.to_bytes_le());
    e[32..40].copy_from_slice(&first.to_le_bytes());
    e[40..48].copy_from_slice(&last.to_le_bytes());
    for (i, u) in name.encode_utf16().take(36).enumerate() {
        e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
    }
    e
}

fn entries_sectors(sector: u64) -> u64 {
    (GPT_ENTRIES * GPT_ENTRY_SIZE).div_ceil(sector)
}

/// Writes the protective MBR (keeping the disk signature), both GPT headers and both entry
/// arrays for a disk of `disk_size` bytes.
fn write_gpt_structures(
    f: &File,
    disk_size: u64,
    sector: u64,
    disk_guid: Uuid,
    entries: &[u8],
    mbr_id: u32,
) -> Result<(), TableError> {
    let total = disk_size / sector;
    let es = entries_sectors(sector);
    let last = total - 1;
    let (first_usable, last_usable) = (2 + es, last - 1 - es);
    let mut mbr = vec![0u8; 512];
    f.read_exact_at(&mut mbr, 0)
        .map_err(io_err("reading the MBR"))?;
    mbr[440..444].copy_from_slice(&mbr_id.to_le_bytes());
    mbr[446..510].fill(0);
    let pmbr = mbr_entry(false, 0xee, 1, (total - 1).min(MBR_MAX_SECTORS - 1));
    mbr[446..462].copy_from_slice(&pmbr);
    mbr[447..450].copy_from_slice(&[0x00, 0x02, 0x00]);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    let entries_crc = crc32fast::hash(entries);
    let header = |current: u64, backup: u64, entries_lba: u64| {
        let mut h = vec![0u8; sector as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&(GPT_HEADER_SIZE as u32).to_le_bytes());
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid.to_bytes_le());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(GPT_ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(GPT_ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..GPT_HEADER_SIZE]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let w = |buf: &[u8], lba: u64| {
        f.write_all_at(buf, lba * sector)
            .map_err(io_err("writing the GPT"))
    };
    w(&mbr, 0)?;
    w(&header(1, last, 2), 1)?;
    w(entries, 2)?;
    w(entries, last - es)?;
    w(&header(last, 1, last - es), last)?;
    Ok(())
}

/// Writes a new GPT with `parts`.
pub fn write_gpt(
    f: &File,
    disk_size: u64,
    sector: u64,
    parts: &[NewPartition],
) -> Result<Table, TableError> {
    let total = disk_size / sector;
    let last_usable = total - 2 - entries_sectors(sector);
    let extents = lay_out(parts, sector, last_usable)?;
    let mut entries = vec![0u8; (GPT_ENTRIES * GPT_ENTRY_SIZE) as usize];
    let mut partitions = Vec::new();
    for (i, (p, (start, count))) in parts.iter().zip(extents).enumerate() {
        let unique = Uuid::new_v4();
        let e = gpt_entry(p.role.guid(), unique, start, start + count - 1, p.name);
        entries[i * 128..(i + 1) * 128].copy_from_slice(&e);
        partitions.push(Partition {
            number: i as u32 + 1,
            start: start * sector,
            size: count * sector,
            mbr_type: None,
            type_guid: Some(p.role.guid()),
            unique_guid: Some(unique),
        });
    }
    let mbr_id = random_u32();
    write_gpt_structures(f, disk_size, sector, Uuid::new_v4(), &entries, mbr_id)?;
    Ok(Table {
        label: Label::Gpt,
        mbr_id,
        partitions,
    })
}

/// Moves a GPT's backup header and entries to the end of the disk (an image written to a
/// larger disk leaves them in the middle), as `sgdisk -e` does. False without a GPT.
pub fn relocate_gpt_backup(f: &File, disk_size: u64, sector: u64) -> Result<bool, TableError> {
    let Some(g) = read_gpt(f, sector)? else {
        return Ok(false);
    };
    let last = disk_size / sector - 1;
    if g.backup_lba == last {
        return Ok(true);
    }
    let mbr_id = mbr_disk_id(f)?;
    write_gpt_structures(f, disk_size, sector, g.disk_guid, &g.entries, mbr_id)?;
    tracing::info!(
        old_backup_lba = g.backup_lba,
        new_backup_lba = last,
        first_usable = g.first_usable,
        entries_lba = g.entries_lba,
        "GPT backup moved to the end of the disk"
    );
    Ok(true)
}

/// Adds a partition of `size` bytes at the end of the disk (IPA's config drive placement:
/// the last `size` bytes; for MBR within the first 2 TiB).
pub fn add_at_end(
    f: &File,
    disk_size: u64,
    sector: u64,
    size: u64,
    name: &'static str,
) -> Result<Partition, TableError> {
    let table = read(f, sector)?.ok_or(TableError::NoTable)?;
    let align = MIB / sector;
    let used_end = table
        .partitions
        .iter()
        .map(|p| (p.start + p.size) / sector)
        .max()
        .unwrap_or(align);
    let count = size.div_ceil(sector);
    match table.label {
        Label::Gpt => {
            relocate_gpt_backup(f, disk_size, sector)?;
            let g = read_gpt(f, sector)?.ok_or(TableError::NoTable)?;
            let start = (g.last_usable + 1).saturating_sub(count) / align * align;
            if start < used_end.max(g.first_usable) {
                return Err(TableError::NoRoom(format!(
                    "no {} MiB free at the end of the disk for the config drive",
                    size / MIB
                )));
            }
            let slot = g
                .entries
                .chunks(128)
                .position(|e| e[..16].iter().all(|b| *b == 0))
                .ok_or_else(|| TableError::NoRoom("the GPT has no free entry".into()))?;
            let unique = Uuid::new_v4();
            let mut entries = g.entries.clone();
            let e = gpt_entry(GUID_LINUX, unique, start, g.last_usable, name);
            entries[slot * 128..(slot + 1) * 128].copy_from_slice(&e);
            write_gpt_structures(f, disk_size, sector, g.disk_guid, &entries, table.mbr_id)?;
            Ok(Partition {
                number: slot as u32 + 1,
                start: start * sector,
                size: (g.last_usable - start + 1) * sector,
                mbr_type: None,
                type_guid: Some(GUID_LINUX),
                unique_guid: Some(unique),
            })
        }
        Label::Msdos => {
            let end = (disk_size / sector).min(MBR_MAX_SECTORS - 1);
            let start = end.saturating_sub(count) / align * align;
            if start < used_end {
                return Err(TableError::NoRoom(format!(
                    "no {} MiB free at the end of the disk for the config drive",
                    size / MIB
                )));
            }
            let mut mbr = read_sector(f, 0, 512)?;
            let slot = (0..4).find(|i| mbr[446 + 16 * i + 4] == 0).ok_or_else(|| {
                TableError::NoRoom(
                    "the disk uses MBR partitioning and already has four primary partitions".into(),
                )
            })?;
            let e = mbr_entry(false, 0x83, start, end - start);
            mbr[446 + 16 * slot..462 + 16 * slot].copy_from_slice(&e);
            f.write_all_at(&mbr, 0).map_err(io_err("writing the MBR"))?;
            Ok(Partition {
                number: slot as u32 + 1,
                start: start * sector,
                size: (end - start) * sector,
                mbr_type: Some(0x83),
                type_guid: None,
                unique_guid: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(mib: u64) -> File {
        let f = tempfile::tempfile().unwrap();
        f.set_len(mib * MIB).unwrap();
        f
    }

    fn parts() -> Vec<NewPartition> {
        vec![
            NewPartition {
                role: Role::Swap,
                size: 8 * MIB,
                bootable: false,
                name: "swap",
            },
            NewPartition {
                role: Role::Linux,
                size: 20 * MIB,
                bootable: true,
                name: "root",
            },
        ]
    }

    #[test]
    fn msdos_tables_round_trip() {
        let f = disk(64);
        let written = write_msdos(&f, 64 * MIB, 512, &parts()).unwrap();
        let back = read(&f, 512).unwrap().unwrap();
        assert_eq!(back, written);
        assert_eq!(back.partitions[0].start, MIB);
        assert_eq!(back.partitions[1].start, 9 * MIB);
        assert_eq!(back.partitions[1].mbr_type, Some(0x83));
        assert_eq!(mbr_disk_id(&f).unwrap(), written.mbr_id);
        let cd = add_at_end(&f, 64 * MIB, 512, 16 * MIB, "config-2").unwrap();
        assert_eq!((cd.number, cd.start + cd.size), (3, 64 * MIB));
        assert_eq!(read(&f, 512).unwrap().unwrap().partitions.len(), 3);
        let e = add_at_end(&f, 64 * MIB, 512, 40 * MIB, "config-2").unwrap_err();
        assert!(matches!(e, TableError::NoRoom(_)), "{e}");
    }

    #[test]
    fn gpt_tables_round_trip_and_grow_with_the_disk() {
        let f = disk(64);
        let written = write_gpt(&f, 64 * MIB, 512, &parts()).unwrap();
        assert_eq!(read(&f, 512).unwrap().unwrap(), written);
        // The "image" goes onto a disk twice its size: the backup moves to the new end.
        f.set_len(128 * MIB).unwrap();
        assert!(relocate_gpt_backup(&f, 128 * MIB, 512).unwrap());
        let mut h = vec![0u8; 512];
        f.read_exact_at(&mut h, 128 * MIB - 512).unwrap();
        assert_eq!(&h[..8], b"EFI PART");
        let crc = le32(&h, 16);
        h[16..20].fill(0);
        assert_eq!(crc32fast::hash(&h[..92]), crc);
        let cd = add_at_end(&f, 128 * MIB, 512, 64 * MIB, "config-2").unwrap();
        assert_eq!(cd.number, 3);
        let back = read(&f, 512).unwrap().unwrap();
        assert_eq!(back.partitions.len(), 3);
        assert_eq!(back.partitions[0], written.partitions[0]);
        assert!(back.partitions[2].start >= 63 * MIB);
    }

    #[test]
    fn gpt_validates_with_sgdisk() {
        if crate::disk::tests_support::which("sgdisk").is_none() {
            eprintln!("sgdisk not installed: skipped the cross-check");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.img");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        f.set_len(64 * MIB).unwrap();
        write_gpt(&f, 64 * MIB, 512, &parts()).unwrap();
        let out = std::process::Command::new("sgdisk")
            .arg("-v")
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("No problems found"), "{text}");
    }

    #[test]
    fn too_many_or_too_big_partitions_are_refused() {
        let f = disk(16);
        assert!(write_msdos(&f, 16 * MIB, 512, &parts()).is_err());
        let five = vec![parts()[0].clone(); 5];
        assert!(write_msdos(&disk(128), 128 * MIB, 512, &five).is_err());
    }
}
