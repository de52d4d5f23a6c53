//! A byte range of a disk seen as a file of its own (a partition, addressed by offset), so
//! filesystem code (fatfs) and image writers never need the kernel's partition nodes.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

pub struct Region<'a> {
    file: &'a File,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a> Region<'a> {
    pub fn new(file: &'a File, start: u64, len: u64) -> Self {
        Region {
            file,
            start,
            len,
            pos: 0,
        }
    }
}

impl Read for Region<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = self.len.saturating_sub(self.pos);
        let n = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for Region<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.len.saturating_sub(self.pos);
        if room == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("write past the end of a {}-byte region", self.len),
            ));
        }
        let n = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let wrote = self.file.write_at(&buf[..n], self.start + self.pos)?;
        self.pos += wrote as u64;
        Ok(wrote)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Region<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(p) if p <= self.len => {
                self.pos = p;
                Ok(p)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the region",
            )),
        }
    }
}

/// Writes `len` zero bytes at `offset` (1 MiB at a time).
pub fn zero(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let buf = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        file.write_all_at(&buf[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_is_confined() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(100).unwrap();
        let mut r = Region::new(&f, 10, 20);
        r.write_all(&[7u8; 20]).unwrap();
        assert!(r.write(&[1]).is_err());
        assert!(r.seek(SeekFrom::Start(21)).is_err());
        r.seek(SeekFrom::Start(0)).unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, vec![7u8; 20]);
        let mut all = vec![0u8; 100];
        f.read_exact_at(&mut all, 0).unwrap();
        assert_eq!(&all[..10], &[0u8; 10]);
        assert_eq!(&all[30..], &[0u8; 70][..]);
    }
}
