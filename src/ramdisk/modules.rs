//! The kernel modules a deploy ramdisk needs to find NICs and disks, with their dependencies
//! in load order. Dependencies come from `modules.dep` (an installed kernel), else from
//! `depmod` run on the unpacked tree, else from each module's `depends=` in `.modinfo` (plain
//! `.ko` files). Modules built into the kernel (`modules.builtin`) need nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::RamdiskError;
use super::kernel::KernelTree;

/// What the agent needs on common servers and virtual machines: buses, NICs, disks, the
/// virtual media floppy.
pub const DEFAULT_MODULES: &[&str] = &[
    // virtual machines (virtio_rng: entropy early, for the TLS key, where no CPU RNG is)
    "virtio_pci",
    "virtio_rng",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    "vmxnet3",
    "vmw_pvscsi",
    // NICs
    "e1000",
    "e1000e",
    "igb",
    "igc",
    "ixgbe",
    "i40e",
    "tg3",
    "bnxt_en",
    "r8169",
    // disks and controllers
    "sd_mod",
    "ahci",
    "ata_piix",
    "nvme",
    "megaraid_sas",
    "mpt3sas",
    "hpsa",
    "smartpqi",
    "floppy",
];

fn module_name(file: &str) -> Option<String> {
    let base = file.rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| base.strip_suffix(ext))?;
    Some(stem.replace('-', "_"))
}

/// Every module file of a tree, by name (relative paths under the tree).
fn index(tree: &Path) -> Result<BTreeMap<String, String>, RamdiskError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![tree.join("kernel")];
    for extra in ["updates", "extra"] {
        if tree.join(extra).is_dir() {
            stack.push(tree.join(extra));
        }
    }
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| RamdiskError::Read {
            path: dir.clone(),
            source,
        })?;
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(tree)
                && let Some(name) = module_name(&rel.to_string_lossy())
            {
                out.insert(name, rel.to_string_lossy().into_owned());
            }
        }
    }
    Ok(out)
}

/// `modules.dep`: relative path → the relative paths it depends on.
fn parse_modules_dep(text: &str) -> BTreeMap<String, Vec<String>> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, deps)| {
            (
                m.trim().to_string(),
                deps.split_whitespace().map(String::from).collect(),
            )
        })
        .collect()
}

/// `depends=` of a plain `.ko` (comma-separated module names).
fn modinfo_depends(bytes: &[u8]) -> Vec<String> {
    let needle = b"\0depends=";
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|at| {
            let rest = &bytes[at + needle.len()..];
            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end])
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.replace('-', "_"))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `modules.dep` with depmod when a tree (an unpacked package) has none.
fn run_depmod(tree: &KernelTree) -> bool {
    if !tree.unpacked {
        return false;
    }
    let Some(root) = tree
        .modules
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
    else {
        return false;
    };
    std::process::Command::new("depmod")
        .arg("-b")
        .arg(root)
        .arg(&tree.release)
        .output()
        .is_ok_and(|o| o.status.success())
        && tree.modules.join("modules.dep").is_file()
}

/// The modules to pack, in load order (each after its dependencies).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleSet {
    /// Paths relative to the module tree (`kernel/drivers/net/virtio_net.ko`).
    pub files: Vec<String>,
    /// Wanted modules found in neither the tree nor the kernel's built-ins.
    pub missing: Vec<String>,
}

/// Resolves `wanted` against the kernel's module tree.
pub fn resolve(tree: &KernelTree, wanted: &[String]) -> Result<ModuleSet, RamdiskError> {
    let by_name = index(&tree.modules)?;
    let builtin: BTreeSet<String> = std::fs::read_to_string(tree.modules.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(module_name)
        .collect();
    let dep_file = tree.modules.join("modules.dep");
    let deps: Option<BTreeMap<String, Vec<String>>> = (dep_file.is_file() || run_depmod(tree))
        .then(|| std::fs::read_to_string(&dep_file).ok())
        .flatten()
        .map(|t| parse_modules_dep(&t));
    let depends_of = |rel: &str| -> Result<Vec<String>, RamdiskError> {
        if let Some(d) = &deps {
            return Ok(d.get(rel).cloned().unwrap_or_default());
        }
        let path: PathBuf = tree.modules.join(rel);
        let bytes = std::fs::read(&path).map_err(|source| RamdiskError::Read { path, source })?;
        Ok(modinfo_depends(&bytes)
            .iter()
            .filter_map(|n| by_name.get(n).cloned())
            .collect())
    };
    let mut set = ModuleSet::default();
    let mut done = BTreeSet::new();
    fn visit(
        rel: &str,
        depth: usize,
        depends_of: &dyn Fn(&str) -> Result<Vec<String>, RamdiskError>,
        done: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) -> Result<(), RamdiskError> {
        if done.contains(rel) {
            return Ok(());
        }
        if depth > 64 {
            return Err(RamdiskError::ModuleLoop(rel.to_string()));
        }
        done.insert(rel.to_string());
        for d in depends_of(rel)? {
            visit(&d, depth + 1, depends_of, done, out)?;
        }
        out.push(rel.to_string());
        Ok(())
    }
    for name in wanted {
        let name = name.replace('-', "_");
        match by_name.get(&name) {
            Some(rel) => visit(rel, 0, &depends_of, &mut done, &mut set.files)?,
            None if builtin.contains(&name) => {}
            None => set.missing.push(name),
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ko(depends: &str) -> Vec<u8> {
        let mut b = b"\x7fELF....license=GPL\0".to_vec();
        b.extend_from_slice(format!("depends={depends}\0").as_bytes());
        b
    }

    fn tree(files: &[(&str, Vec<u8>)], dep: Option<&str>) -> (tempfile::TempDir, KernelTree) {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("lib/modules/6.1.0-test");
        for (rel, data) in files {
            let p = m.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        std::fs::write(m.join("modules.builtin"), "kernel/drivers/scsi/sd_mod.ko\n").unwrap();
        if let Some(d) = dep {
            std::fs::write(m.join("modules.dep"), d).unwrap();
        }
        let t = KernelTree {
            image: dir.path().join("vmlinuz"),
            release: "6.1.0-test".into(),
            modules: m,
            origin: "test".into(),
            unpacked: false,
        };
        (dir, t)
    }

    const NET: &str = "kernel/drivers/net/virtio_net.ko";
    const FAILOVER: &str = "kernel/net/core/failover.ko";
    const NET_FAILOVER: &str = "kernel/drivers/net/net_failover.ko";

    #[test]
    fn dependencies_come_first_from_modinfo() {
        let (_d, t) = tree(
            &[
                (NET, ko("net_failover")),
                (NET_FAILOVER, ko("failover")),
                (FAILOVER, ko("")),
            ],
            None,
        );
        let s = resolve(&t, &["virtio-net".into(), "sd_mod".into(), "nope".into()]).unwrap();
        assert_eq!(s.files, [FAILOVER, NET_FAILOVER, NET]);
        assert_eq!(s.missing, ["nope"]);
    }

    #[test]
    fn modules_dep_wins_when_present() {
        let dep =
            format!("{NET}: {NET_FAILOVER} {FAILOVER}\n{NET_FAILOVER}: {FAILOVER}\n{FAILOVER}:\n");
        let (_d, t) = tree(
            &[(NET, ko("")), (NET_FAILOVER, ko("")), (FAILOVER, ko(""))],
            Some(&dep),
        );
        let s = resolve(&t, &["virtio_net".into()]).unwrap();
        assert_eq!(s.files, [FAILOVER, NET_FAILOVER, NET]);
    }
}
