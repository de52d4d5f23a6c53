//! Path confinement of client-supplied names: whatever the name, what opens is a regular file
//! under the root or the cache, never the secret beside them, never a temporary file.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use ironboot::serve::confine::Confinement;
use libfuzzer_sys::fuzz_target;

struct Roots {
    _dir: tempfile::TempDir,
    confinement: Confinement,
    allowed: Vec<PathBuf>,
}

fn roots() -> &'static Roots {
    static ROOTS: OnceLock<Roots> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (root, cache) = (dir.path().join("root"), dir.path().join("cache"));
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(dir.path().join("secret"), b"secret").unwrap();
        std::fs::write(root.join("vmlinuz"), b"k").unwrap();
        std::fs::write(root.join("sub/deeper/file"), b"f").unwrap();
        std::fs::write(root.join(".ironboot-tmp-0a1b-partial"), b"p").unwrap();
        std::fs::write(cache.join("master"), b"m").unwrap();
        for (link, target) in [
            ("escape", "../secret"),
            ("slash", "/"),
            ("cached", "../cache/master"),
            ("sub/up", ".."),
            ("to-temp", ".ironboot-tmp-0a1b-partial"),
            ("loop", "loop"),
        ] {
            std::os::unix::fs::symlink(target, root.join(link)).unwrap();
        }
        let confinement = Confinement::new(&root, std::slice::from_ref(&cache)).unwrap();
        let allowed = vec![root.canonicalize().unwrap(), cache.canonicalize().unwrap()];
        Roots {
            _dir: dir,
            confinement,
            allowed,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let name = String::from_utf8_lossy(data);
    let r = roots();
    if let Ok(opened) = r.confinement.open(&name) {
        let real = &opened.real_path;
        assert!(
            r.allowed.iter().any(|a| real.starts_with(a)),
            "{name:?} opened {real:?} outside the roots"
        );
        assert!(opened.file.metadata().unwrap().is_file());
        assert!(
            !real.to_string_lossy().contains(".ironboot-tmp-"),
            "{name:?} opened a temporary file"
        );
    }
});
