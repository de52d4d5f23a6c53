//! Just enough ELF (64-bit little-endian, x86_64) for packing the agent: whether it is
//! statically linked, which shared libraries it needs when it is not, and stripping — a
//! program runs from its loadable segments alone, so everything after the last one (debug
//! information, symbol tables, section headers) can be cut off without any tool.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a 64-bit little-endian ELF file: {0}")]
pub struct ElfError(pub String);

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;

struct Phdr {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, ElfError> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| ElfError(format!("truncated at {at}")))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, ElfError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| ElfError(format!("truncated at {at}")))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, ElfError> {
    let s = b
        .get(at..at + 8)
        .ok_or_else(|| ElfError(format!("truncated at {at}")))?;
    let mut x = [0u8; 8];
    x.copy_from_slice(s);
    Ok(u64::from_le_bytes(x))
}

fn phdrs(b: &[u8]) -> Result<Vec<Phdr>, ElfError> {
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return Err(ElfError("bad ELF header".into()));
    }
    let phoff = u64_at(b, 32)? as usize;
    let phentsize = usize::from(u16_at(b, 54)?);
    let phnum = usize::from(u16_at(b, 56)?);
    (0..phnum)
        .map(|i| {
            let at = phoff + i * phentsize;
            Ok(Phdr {
                kind: u32_at(b, at)?,
                offset: u64_at(b, at + 8)?,
                vaddr: u64_at(b, at + 16)?,
                filesz: u64_at(b, at + 32)?,
            })
        })
        .collect()
}

fn c_string(b: &[u8], at: usize) -> Result<String, ElfError> {
    let rest = b
        .get(at..)
        .ok_or_else(|| ElfError(format!("string at {at} outside the file")))?;
    let end = rest.iter().position(|c| *c == 0).unwrap_or(rest.len());
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// What a program needs from the system to run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Linkage {
    /// The dynamic loader (`PT_INTERP`); `None` for a static program.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` library names.
    pub needed: Vec<String>,
}

pub fn linkage(b: &[u8]) -> Result<Linkage, ElfError> {
    let ph = phdrs(b)?;
    let interpreter = ph
        .iter()
        .find(|p| p.kind == PT_INTERP)
        .map(|p| c_string(b, p.offset as usize))
        .transpose()?;
    let Some(dynamic) = ph.iter().find(|p| p.kind == PT_DYNAMIC) else {
        return Ok(Linkage {
            interpreter,
            needed: Vec::new(),
        });
    };
    let mut strtab_vaddr = None;
    let mut needed_offsets = Vec::new();
    for i in 0..(dynamic.filesz / 16) {
        let at = (dynamic.offset + i * 16) as usize;
        let (tag, val) = (u64_at(b, at)?, u64_at(b, at + 8)?);
        match tag {
            0 => break,
            DT_NEEDED => needed_offsets.push(val),
            DT_STRTAB => strtab_vaddr = Some(val),
            _ => {}
        }
    }
    let needed = match strtab_vaddr {
        None => Vec::new(),
        Some(v) => {
            let seg = ph
                .iter()
                .find(|p| p.kind == PT_LOAD && v >= p.vaddr && v < p.vaddr + p.filesz)
                .ok_or_else(|| ElfError("the string table is in no loadable segment".into()))?;
            let strtab = (seg.offset + (v - seg.vaddr)) as usize;
            needed_offsets
                .iter()
                .map(|o| c_string(b, strtab + *o as usize))
                .collect::<Result<_, _>>()?
        }
    };
    Ok(Linkage {
        interpreter,
        needed,
    })
}

/// The program without what follows its last segment, and without section headers.
pub fn strip(b: &[u8]) -> Result<Vec<u8>, ElfError> {
    let ph = phdrs(b)?;
    let phoff = u64_at(b, 32)? as usize;
    let ph_end = phoff + usize::from(u16_at(b, 54)?) * ph.len();
    let end = ph
        .iter()
        .map(|p| (p.offset + p.filesz) as usize)
        .chain([ph_end, 64])
        .max()
        .unwrap_or(b.len())
        .min(b.len());
    let mut out = b[..end].to_vec();
    // e_shoff, e_shnum, e_shstrndx: no section headers any more.
    out[40..48].fill(0);
    out[60..64].fill(0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_binary_itself_is_read_and_stripped() {
        let exe = std::env::current_exe().unwrap();
        let b = std::fs::read(&exe).unwrap();
        let l = linkage(&b).unwrap();
        // A cargo test binary on the gnu target is dynamically linked against libc.
        if let Some(interp) = &l.interpreter {
            assert!(interp.contains("ld-linux"), "{interp}");
            assert!(
                l.needed.iter().any(|n| n.starts_with("libc.so")),
                "{:?}",
                l.needed
            );
        }
        let s = strip(&b).unwrap();
        assert!(s.len() <= b.len());
        assert_eq!(
            linkage(&s).unwrap(),
            l,
            "stripping keeps the program as it was"
        );
        assert!(linkage(b"not elf").is_err());
    }

    #[test]
    fn a_stripped_program_still_runs() {
        use std::os::unix::fs::PermissionsExt;
        let Some(src) = ["/usr/bin/echo", "/bin/echo"]
            .into_iter()
            .find(|p| std::path::Path::new(p).is_file())
        else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("echo");
        std::fs::write(&out, strip(&std::fs::read(src).unwrap()).unwrap()).unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
        let run = std::process::Command::new(&out)
            .arg("still here")
            .output()
            .unwrap();
        assert!(run.status.success());
        assert_eq!(String::from_utf8_lossy(&run.stdout), "still here\n");
    }
}
