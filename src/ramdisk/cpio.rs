//! The initramfs archive: `newc` cpio (what the kernel unpacks), built reproducibly — entries
//! in path order, parents before children, inode numbers in that order, owner root, one fixed
//! modification time — so the same inputs always give the same bytes.

use std::collections::BTreeMap;

/// One archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Member {
    Dir,
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDevice { major: u32, minor: u32 },
}

/// An archive being assembled; paths are relative (`usr/bin/x`), parents added implicitly.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    members: BTreeMap<String, Member>,
}

fn clean(path: &str) -> String {
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

impl Archive {
    fn parents(&mut self, path: &str) {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let dir = &path[..at + i];
            self.members.entry(dir.to_string()).or_insert(Member::Dir);
            at += i + 1;
        }
    }

    pub fn dir(&mut self, path: &str) {
        let p = clean(path);
        self.parents(&p);
        self.members.entry(p).or_insert(Member::Dir);
    }

    /// Adds (or replaces) a regular file with permission bits `mode` (e.g. 0o755).
    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        let p = clean(path);
        self.parents(&p);
        self.members.insert(p, Member::File { mode, data });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        let p = clean(path);
        self.parents(&p);
        self.members.insert(
            p,
            Member::Symlink {
                target: target.to_string(),
            },
        );
    }

    pub fn char_device(&mut self, path: &str, major: u32, minor: u32) {
        let p = clean(path);
        self.parents(&p);
        self.members.insert(p, Member::CharDevice { major, minor });
    }

    pub fn contains(&self, path: &str) -> bool {
        self.members.contains_key(&clean(path))
    }

    /// Sum of the file contents (what the archive mostly weighs).
    pub fn content_bytes(&self) -> u64 {
        self.members
            .values()
            .map(|m| match m {
                Member::File { data, .. } => data.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// The uncompressed archive; `mtime` for every member.
    pub fn finish(&self, mtime: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, member)) in self.members.iter().enumerate() {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match member {
                Member::Dir => (0o040755, &[], (0, 0)),
                Member::File { mode, data } => (0o100000 | (mode & 0o7777), data, (0, 0)),
                Member::Symlink { target } => (0o120777, target.as_bytes(), (0, 0)),
                Member::CharDevice { major, minor } => (0o020600, &[], (*major, *minor)),
            };
            let nlink = if matches!(member, Member::Dir) { 2 } else { 1 };
            entry(
                &mut out,
                path,
                ino as u32 + 1,
                mode,
                nlink,
                mtime,
                data,
                rdev,
            );
        }
        entry(&mut out, "TRAILER!!!", 0, 0, 1, 0, &[], (0, 0));
        out
    }
}

#[allow(clippy::too_many_arguments)]
fn entry(
    out: &mut Vec<u8>,
    name: &str,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    data: &[u8],
    rdev: (u32, u32),
) {
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        mtime,
        data.len() as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(4), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_ordered_and_reproducible() {
        let build = |order: &[&str]| {
            let mut a = Archive::default();
            for p in order {
                a.file(p, 0o644, p.as_bytes().to_vec());
            }
            a.symlink("init", "usr/bin/agent");
            a.char_device("dev/console", 5, 1);
            a.finish(0)
        };
        let one = build(&["usr/bin/agent", "lib/modules/a.ko", "etc/x"]);
        let two = build(&["etc/x", "usr/bin/agent", "lib/modules/a.ko"]);
        assert_eq!(one, two);
        let text = String::from_utf8_lossy(&one);
        let pos = |n: &str| text.find(&format!("{n}\0")).unwrap();
        assert!(pos("lib") < pos("lib/modules") && pos("lib/modules") < pos("lib/modules/a.ko"));
        assert!(text.ends_with("TRAILER!!!\0\0\0\0") || text.contains("TRAILER!!!"));
        assert_eq!(one.len() % 4, 0);
    }

    #[test]
    fn cpio_reads_it_back() {
        let Some(cpio) = ["/usr/bin/cpio", "/bin/cpio"]
            .iter()
            .find(|p| std::path::Path::new(p).is_file())
        else {
            eprintln!("cpio not installed: skipped the cross-check");
            return;
        };
        let mut a = Archive::default();
        a.file("usr/bin/agent", 0o755, b"#!x".to_vec());
        a.symlink("init", "usr/bin/agent");
        let out = std::process::Command::new(cpio)
            .arg("-t")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(&a.finish(0))?;
                c.wait_with_output()
            })
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            listing.lines().collect::<Vec<_>>(),
            ["init", "usr", "usr/bin", "usr/bin/agent"]
        );
    }
}
