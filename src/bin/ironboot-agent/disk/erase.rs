//! Erasing: disk metadata (what `erase_devices_metadata` and a failed image write leave
//! behind: no partition table, no filesystem signature, nothing a firmware or an OS would
//! recognise) and whole devices (`erase_devices`).

use std::fs::File;
use std::io;

use super::region::zero;
use super::table;

const MIB: u64 = 1 << 20;

/// Zeroes the first and last MiB of every partition and of the disk: partition tables (MBR,
/// both GPT copies), and the signatures filesystems, swap, RAID and LVM keep at either end.
pub fn erase_metadata(f: &File, size: u64, sector: u64) -> io::Result<()> {
    if let Ok(Some(t)) = table::read(f, sector) {
        for p in &t.partitions {
            if p.start >= size {
                continue;
            }
            let len = p.size.min(size - p.start);
            zero_ends(f, p.start, len)?;
        }
    }
    zero_ends(f, 0, size)?;
    f.sync_all()?;
    super::reread_partitions(f);
    Ok(())
}

fn zero_ends(f: &File, start: u64, len: u64) -> io::Result<()> {
    let head = len.min(MIB);
    zero(f, start, head)?;
    if len > head {
        let tail = (len - head).min(MIB);
        zero(f, start + len - tail, tail)?;
    }
    Ok(())
}

/// Zeroes the whole device: the kernel's zero-out (fast on thin and virtual disks), else
/// plain writes.
pub fn erase_all(f: &File, size: u64) -> io::Result<()> {
    if !blkzeroout(f, size) {
        zero(f, 0, size)?;
    }
    f.sync_all()?;
    super::reread_partitions(f);
    Ok(())
}

fn blkzeroout(f: &File, size: u64) -> bool {
    use std::os::fd::AsRawFd;
    if f.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
    // BLKZEROOUT = _IO(0x12, 127), argument: [start, length] in bytes.
    const BLKZEROOUT: libc::c_ulong = 0x127f;
    let range: [u64; 2] = [0, size];
    // SAFETY: the ioctl reads two u64 through the pointer, which is valid for the call.
    unsafe { libc::ioctl(f.as_raw_fd(), BLKZEROOUT as _, range.as_ptr()) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn metadata_erase_leaves_no_table_and_no_filesystem() {
        let f = tempfile::tempfile().unwrap();
        let size = 64 * MIB;
        f.set_len(size).unwrap();
        let parts = [table::NewPartition {
            role: table::Role::Swap,
            size: 16 * MIB,
            bootable: false,
            name: "swap",
        }];
        let t = table::write_gpt(&f, size, 512, &parts).unwrap();
        let p = &t.partitions[0];
        crate::disk::fs::make_swap(&f, p.start, p.size, "s").unwrap();
        f.write_all_at(b"payload", 20 * MIB).unwrap();
        erase_metadata(&f, size, 512).unwrap();
        assert!(table::read(&f, 512).unwrap().is_none());
        assert!(
            crate::disk::fs::probe(&f, p.start, p.size)
                .unwrap()
                .is_none()
        );
        let mut tail = vec![1u8; MIB as usize];
        f.read_exact_at(&mut tail, size - MIB).unwrap();
        assert!(tail.iter().all(|b| *b == 0), "backup GPT left");
        let mut mid = [0u8; 7];
        f.read_exact_at(&mut mid, 20 * MIB).unwrap();
        assert_eq!(&mid, b"payload", "only metadata is erased");
        erase_all(&f, size).unwrap();
        f.read_exact_at(&mut mid, 20 * MIB).unwrap();
        assert_eq!(mid, [0u8; 7]);
    }
}
