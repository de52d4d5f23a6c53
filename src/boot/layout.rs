//! Where a node's boot files live under the tftp and http roots, and the links firmware follows.
//!
//! ```text
//! <root>/<node uuid>/config            rendered config (root = tftp root for pxe, http root for ipxe)
//! <root>/<node uuid>/deploy_kernel     deploy kernel and ramdisk (hard links to the image cache)
//! <root>/<node uuid>/deploy_ramdisk
//! <root>/<node uuid>/kernel, ramdisk   instance kernel and ramdisk (partition/ramdisk entries)
//! pxe:  <tftp root>/pxelinux.cfg/01-aa-bb-cc-dd-ee-ff -> ../<uuid>/config   (PXELINUX)
//!       <tftp root>/grub.cfg-01-aa-bb-cc-dd-ee-ff     -> <uuid>/config      (GRUB, its prefix)
//!       <tftp root>/aa:bb:cc:dd:ee:ff.conf            -> <uuid>/config      (GRUB, grub/grub.cfg)
//! ipxe: <http root>/pxelinux.cfg/aa-bb-cc-dd-ee-ff    -> ../<uuid>/config   (boot.ipxe chains it)
//!       <http root>/boot.ipxe
//! both: <root>/grub/grub.cfg (common GRUB config), boot loaders from `loader_file_paths`
//! ```
//!
//! Every file appears atomically (`fsutil`); links are relative so the roots can move. All
//! functions here do blocking file I/O: async callers run them in `spawn_blocking`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::render::ImagePair;
use super::{BootFilesError, BootMode, NetBoot};
use crate::fsutil;
use crate::model::port::MacAddress;

/// Directory of the PXELINUX (tftp) and iPXE (http) per-MAC links.
pub const PXE_CONFIG_SUBDIR: &str = "pxelinux.cfg";
/// The chain script at the top of the http root.
pub const BOOT_IPXE: &str = "boot.ipxe";
/// The common GRUB config, relative to each root.
pub const GRUB_COMMON_CONFIG: &str = "grub/grub.cfg";

/// A node's files under its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeFile {
    Config,
    DeployKernel,
    DeployRamdisk,
    Kernel,
    Ramdisk,
}

impl NodeFile {
    pub fn file_name(self) -> &'static str {
        match self {
            NodeFile::Config => "config",
            NodeFile::DeployKernel => "deploy_kernel",
            NodeFile::DeployRamdisk => "deploy_ramdisk",
            NodeFile::Kernel => "kernel",
            NodeFile::Ramdisk => "ramdisk",
        }
    }
}

/// Which kernel/ramdisk pair a location is wanted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Images {
    Deploy,
    Instance,
}

/// What [`Layout::install_loaders`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoaderReport {
    /// Files written or refreshed (destination paths).
    pub installed: Vec<PathBuf>,
    /// Files already identical at the destination.
    pub unchanged: Vec<PathBuf>,
    /// One line per loader that could not be installed (missing source, read error).
    pub warnings: Vec<String>,
}

/// What [`Layout::clean_up_node`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanUp {
    pub links: Vec<PathBuf>,
    pub node_dir_removed: bool,
}

/// The two boot roots and every path under them.
#[derive(Debug, Clone)]
pub struct Layout {
    tftp_root: PathBuf,
    http_root: PathBuf,
}

impl Layout {
    pub fn new(tftp_root: impl Into<PathBuf>, http_root: impl Into<PathBuf>) -> Self {
        Self {
            tftp_root: tftp_root.into(),
            http_root: http_root.into(),
        }
    }

    /// `<data_dir>/tftpboot` and `<data_dir>/httpboot`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self::new(data_dir.join("tftpboot"), data_dir.join("httpboot"))
    }

    pub fn tftp_root(&self) -> &Path {
        &self.tftp_root
    }

    pub fn http_root(&self) -> &Path {
        &self.http_root
    }

    /// The root an interface's node files live under.
    pub fn root(&self, interface: NetBoot) -> &Path {
        match interface {
            NetBoot::Pxe => &self.tftp_root,
            NetBoot::Ipxe => &self.http_root,
        }
    }

    /// Creates both roots and their link directories.
    pub fn create_roots(&self) -> Result<(), BootFilesError> {
        for root in [&self.tftp_root, &self.http_root] {
            let dir = root.join(PXE_CONFIG_SUBDIR);
            fsutil::ensure_dir(&dir)
                .map_err(|e| BootFilesError::io("create directory", &dir, e))?;
        }
        Ok(())
    }

    pub fn node_dir(&self, interface: NetBoot, node: Uuid) -> PathBuf {
        self.root(interface).join(node.to_string())
    }

    pub fn node_file(&self, interface: NetBoot, node: Uuid, file: NodeFile) -> PathBuf {
        self.node_dir(interface, node).join(file.file_name())
    }

    /// How the node's firmware loader names a kernel/ramdisk pair: relative to the tftp root
    /// for PXELINUX (which resolves names against its own directory), absolute in the server
    /// root for GRUB, and `<http_url>/<uuid>/<file>` for iPXE (which needs `http_url`).
    pub fn image_locations(
        &self,
        interface: NetBoot,
        mode: BootMode,
        node: Uuid,
        images: Images,
        http_url: Option<&str>,
    ) -> Result<ImagePair, BootFilesError> {
        let (kernel, ramdisk) = match images {
            Images::Deploy => (NodeFile::DeployKernel, NodeFile::DeployRamdisk),
            Images::Instance => (NodeFile::Kernel, NodeFile::Ramdisk),
        };
        let prefix = match (interface, mode) {
            (NetBoot::Pxe, BootMode::Bios) => format!("{node}/"),
            (NetBoot::Pxe, BootMode::Uefi) => format!("/{node}/"),
            (NetBoot::Ipxe, _) => {
                let url = http_url.ok_or(BootFilesError::MissingInput {
                    entry: "ipxe",
                    what: "http_url (where nodes reach the http root)",
                })?;
                format!("{}/{node}/", url.trim_end_matches('/'))
            }
        };
        Ok(ImagePair {
            kernel: format!("{prefix}{}", kernel.file_name()),
            ramdisk: format!("{prefix}{}", ramdisk.file_name()),
        })
    }

    /// Writes the node's rendered config atomically (a switch of entry is just a new write).
    pub fn write_config(
        &self,
        interface: NetBoot,
        node: Uuid,
        text: &str,
    ) -> Result<PathBuf, BootFilesError> {
        let dir = self.node_dir(interface, node);
        fsutil::ensure_dir(&dir).map_err(|e| BootFilesError::io("create directory", &dir, e))?;
        let path = dir.join(NodeFile::Config.file_name());
        fsutil::write_atomic(&path, text.as_bytes())
            .map_err(|e| BootFilesError::io("write config", &path, e))?;
        Ok(path)
    }

    /// Places a kernel or ramdisk from `src` (an image cache master) into the node's
    /// directory: a hard link when possible, else a copy. Returns `true` when it copied.
    pub fn place_image(
        &self,
        interface: NetBoot,
        node: Uuid,
        file: NodeFile,
        src: &Path,
    ) -> Result<bool, BootFilesError> {
        if file == NodeFile::Config {
            return Err(BootFilesError::invalid(
                "node file",
                file.file_name(),
                "the config is rendered, not placed",
            ));
        }
        let dir = self.node_dir(interface, node);
        fsutil::ensure_dir(&dir).map_err(|e| BootFilesError::io("create directory", &dir, e))?;
        let dest = dir.join(file.file_name());
        let copied = fsutil::link_or_copy_atomic(src, &dest)
            .map_err(|e| BootFilesError::io("place image from", src, e))?;
        if copied {
            tracing::info!(node = %node, src = %src.display(), dest = %dest.display(),
                "copied image (different filesystem from the cache: uses disk twice)");
        }
        Ok(copied)
    }

    /// Removes one of the node's files if present (e.g. the deploy kernel after deploy).
    pub fn remove_node_file(
        &self,
        interface: NetBoot,
        node: Uuid,
        file: NodeFile,
    ) -> Result<(), BootFilesError> {
        let path = self.node_file(interface, node, file);
        fsutil::remove_if_exists(&path).map_err(|e| BootFilesError::io("remove", &path, e))
    }

    /// The per-MAC links of an interface: (link path relative to the root, link target).
    fn mac_links(interface: NetBoot, node: Uuid, mac: &MacAddress) -> Vec<(PathBuf, PathBuf)> {
        let in_subdir = PathBuf::from(format!("../{node}/config"));
        let at_top = PathBuf::from(format!("{node}/config"));
        let hexhyp = mac.hyphenated();
        match interface {
            NetBoot::Pxe => vec![
                (
                    Path::new(PXE_CONFIG_SUBDIR).join(format!("01-{hexhyp}")),
                    in_subdir,
                ),
                (
                    PathBuf::from(format!("grub.cfg-01-{hexhyp}")),
                    at_top.clone(),
                ),
                (PathBuf::from(format!("{mac}.conf")), at_top),
            ],
            NetBoot::Ipxe => vec![(Path::new(PXE_CONFIG_SUBDIR).join(hexhyp), in_subdir)],
        }
    }

    /// Points every firmware lookup name of `macs` at the node's config, replacing links a
    /// MAC had before (a port moved to this node). Returns the link paths.
    pub fn link_macs(
        &self,
        interface: NetBoot,
        node: Uuid,
        macs: &[MacAddress],
    ) -> Result<Vec<PathBuf>, BootFilesError> {
        let root = self.root(interface);
        let subdir = root.join(PXE_CONFIG_SUBDIR);
        fsutil::ensure_dir(&subdir)
            .map_err(|e| BootFilesError::io("create directory", &subdir, e))?;
        let mut made = Vec::new();
        for mac in macs {
            for (rel, target) in Self::mac_links(interface, node, mac) {
                let link = root.join(rel);
                fsutil::symlink_atomic(&target, &link)
                    .map_err(|e| BootFilesError::io("link", &link, e))?;
                made.push(link);
            }
        }
        Ok(made)
    }

    /// Removes the node's directory and every link that points into it — found by scanning
    /// the link directories, so links of ports deleted since are found too, and a link that
    /// a MAC's new owner has re-pointed is left alone.
    pub fn clean_up_node(&self, interface: NetBoot, node: Uuid) -> Result<CleanUp, BootFilesError> {
        let root = self.root(interface);
        let mut report = CleanUp::default();
        let targets = [
            (
                root.join(PXE_CONFIG_SUBDIR),
                PathBuf::from(format!("../{node}/config")),
            ),
            (root.to_path_buf(), PathBuf::from(format!("{node}/config"))),
        ];
        for (dir, target) in targets {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(BootFilesError::io("read directory", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| BootFilesError::io("read directory", &dir, e))?;
                let path = entry.path();
                let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
                if is_link && fs::read_link(&path).is_ok_and(|t| t == target) {
                    fsutil::remove_if_exists(&path)
                        .map_err(|e| BootFilesError::io("remove link", &path, e))?;
                    report.links.push(path);
                }
            }
        }
        let dir = self.node_dir(interface, node);
        match fs::remove_dir_all(&dir) {
            Ok(()) => report.node_dir_removed = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(BootFilesError::io("remove node directory", &dir, e)),
        }
        report.links.sort();
        Ok(report)
    }

    /// Writes `<http root>/boot.ipxe` when its content differs. Returns `true` if it wrote.
    pub fn write_boot_ipxe(&self, text: &str) -> Result<bool, BootFilesError> {
        write_if_changed(&self.http_root.join(BOOT_IPXE), text.as_bytes())
    }

    /// Writes the common GRUB config into both roots when it differs.
    pub fn write_grub_common(&self, text: &str) -> Result<(), BootFilesError> {
        for root in [&self.tftp_root, &self.http_root] {
            let path = root.join(GRUB_COMMON_CONFIG);
            if let Some(dir) = path.parent() {
                fsutil::ensure_dir(dir)
                    .map_err(|e| BootFilesError::io("create directory", dir, e))?;
            }
            write_if_changed(&path, text.as_bytes())?;
        }
        Ok(())
    }

    /// Copies each boot loader (`dest name -> source path`) into both roots, skipping files
    /// already identical. A missing or unreadable source is a warning: the other loaders
    /// and the service still work, and the operator sees which file to install.
    pub fn install_loaders(&self, loaders: &BTreeMap<String, PathBuf>) -> LoaderReport {
        let mut report = LoaderReport::default();
        for (name, src) in loaders {
            for root in [&self.tftp_root, &self.http_root] {
                let dest = root.join(name);
                match copy_if_changed(src, &dest) {
                    Ok(true) => report.installed.push(dest),
                    Ok(false) => report.unchanged.push(dest),
                    Err(e) => {
                        let line = format!(
                            "boot loader {name}: cannot copy {} to {}: {e}",
                            src.display(),
                            dest.display()
                        );
                        tracing::warn!("{line}");
                        report.warnings.push(line);
                        // The same source fails for the other root too; say it once.
                        break;
                    }
                }
            }
        }
        report
    }
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool, BootFilesError> {
    match fs::read(path) {
        Ok(old) if old == bytes => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(BootFilesError::io("read", path, e)),
    }
    fsutil::write_atomic(path, bytes).map_err(|e| BootFilesError::io("write", path, e))?;
    Ok(true)
}

/// Copies `src` to `dest` atomically unless `dest` already has the same bytes.
fn copy_if_changed(src: &Path, dest: &Path) -> io::Result<bool> {
    let mut input = fs::File::open(src)?;
    let len = input.metadata()?.len();
    if fs::metadata(dest).is_ok_and(|m| m.len() == len) && same_bytes(src, dest)? {
        return Ok(false);
    }
    let mut out = fsutil::AtomicFile::create(dest)?;
    io::copy(&mut input, out.file())?;
    out.flush()?;
    out.commit()?;
    Ok(true)
}

fn same_bytes(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (fs::File::open(a)?, fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123";
    const OTHER: &str = "7f1d7a44-5a0e-4f7c-9f55-2b8f0e3d9a10";

    fn layout() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::in_data_dir(dir.path());
        l.create_roots().unwrap();
        (dir, l)
    }

    fn mac(s: &str) -> MacAddress {
        MacAddress::parse(s).unwrap()
    }

    #[test]
    fn pxe_links_are_relative_and_resolve_to_the_config() {
        let (_d, l) = layout();
        let node: Uuid = NODE.parse().unwrap();
        l.write_config(NetBoot::Pxe, node, "DEFAULT deploy\n")
            .unwrap();
        let links = l
            .link_macs(NetBoot::Pxe, node, &[mac("52:54:00:12:34:56")])
            .unwrap();
        let names: Vec<_> = links
            .iter()
            .map(|p| p.strip_prefix(l.tftp_root()).unwrap().to_path_buf())
            .collect();
        assert_eq!(
            names,
            [
                PathBuf::from("pxelinux.cfg/01-52-54-00-12-34-56"),
                PathBuf::from("grub.cfg-01-52-54-00-12-34-56"),
                PathBuf::from("52:54:00:12:34:56.conf"),
            ]
        );
        for link in &links {
            assert!(fs::read_link(link).unwrap().is_relative());
            assert_eq!(fs::read_to_string(link).unwrap(), "DEFAULT deploy\n");
        }
    }

    #[test]
    fn clean_up_removes_only_this_nodes_files_and_links() {
        let (_d, l) = layout();
        let (a, b): (Uuid, Uuid) = (NODE.parse().unwrap(), OTHER.parse().unwrap());
        let shared = mac("52:54:00:00:00:01");
        for n in [a, b] {
            l.write_config(NetBoot::Ipxe, n, "#!ipxe\n").unwrap();
        }
        l.link_macs(
            NetBoot::Ipxe,
            a,
            &[shared.clone(), mac("52:54:00:00:00:02")],
        )
        .unwrap();
        // The shared MAC's port moved to node b: its link now belongs to b.
        l.link_macs(NetBoot::Ipxe, b, &[shared]).unwrap();
        let report = l.clean_up_node(NetBoot::Ipxe, a).unwrap();
        assert!(report.node_dir_removed);
        assert_eq!(
            report.links,
            [l.http_root().join("pxelinux.cfg/52-54-00-00-00-02")]
        );
        let kept = l.http_root().join("pxelinux.cfg/52-54-00-00-00-01");
        assert_eq!(
            fs::read_link(&kept).unwrap(),
            PathBuf::from(format!("../{b}/config"))
        );
        assert!(l.node_dir(NetBoot::Ipxe, b).join("config").is_file());
        // Idempotent.
        assert_eq!(
            l.clean_up_node(NetBoot::Ipxe, a).unwrap(),
            CleanUp::default()
        );
    }

    #[test]
    fn images_are_linked_and_locations_follow_the_loader() {
        let (d, l) = layout();
        let node: Uuid = NODE.parse().unwrap();
        let master = d.path().join("master");
        fs::write(&master, b"kernel").unwrap();
        assert!(
            !l.place_image(NetBoot::Pxe, node, NodeFile::DeployKernel, &master)
                .unwrap()
        );
        assert_eq!(
            fs::read(l.node_file(NetBoot::Pxe, node, NodeFile::DeployKernel)).unwrap(),
            b"kernel"
        );
        assert!(
            l.place_image(NetBoot::Pxe, node, NodeFile::Config, &master)
                .is_err()
        );
        assert!(
            l.place_image(
                NetBoot::Pxe,
                node,
                NodeFile::Kernel,
                &d.path().join("missing")
            )
            .is_err()
        );

        let loc = |i, m, url| l.image_locations(i, m, node, Images::Deploy, url);
        assert_eq!(
            loc(NetBoot::Pxe, BootMode::Bios, None).unwrap().kernel,
            format!("{NODE}/deploy_kernel")
        );
        assert_eq!(
            loc(NetBoot::Pxe, BootMode::Uefi, None).unwrap().ramdisk,
            format!("/{NODE}/deploy_ramdisk")
        );
        assert_eq!(
            loc(
                NetBoot::Ipxe,
                BootMode::Uefi,
                Some("http://192.0.2.1:8080/")
            )
            .unwrap()
            .kernel,
            format!("http://192.0.2.1:8080/{NODE}/deploy_kernel")
        );
        assert!(loc(NetBoot::Ipxe, BootMode::Bios, None).is_err());
    }

    #[test]
    fn boot_ipxe_is_rewritten_only_on_change() {
        let (_d, l) = layout();
        assert!(l.write_boot_ipxe("#!ipxe\n").unwrap());
        let path = l.http_root().join(BOOT_IPXE);
        let ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
        assert!(!l.write_boot_ipxe("#!ipxe\n").unwrap());
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap()),
            ino
        );
        assert!(l.write_boot_ipxe("#!ipxe\nchain x\n").unwrap());
    }

    #[test]
    fn loaders_are_copied_and_missing_ones_warn() {
        let (d, l) = layout();
        let src = d.path().join("pxelinux.0");
        fs::write(&src, b"loader").unwrap();
        let mut loaders = BTreeMap::new();
        loaders.insert("pxelinux.0".to_string(), src.clone());
        loaders.insert(
            "grubx64.efi".to_string(),
            d.path().join("not-installed.efi"),
        );
        let r = l.install_loaders(&loaders);
        assert_eq!(r.installed.len(), 2);
        assert_eq!(r.warnings.len(), 1);
        assert!(
            r.warnings[0].contains("grubx64.efi") && r.warnings[0].contains("not-installed.efi")
        );
        assert_eq!(
            fs::read(l.http_root().join("pxelinux.0")).unwrap(),
            b"loader"
        );
        let again = l.install_loaders(&loaders);
        assert!(again.installed.is_empty());
        assert_eq!(again.unchanged.len(), 2);
        fs::write(&src, b"loader v2").unwrap();
        assert_eq!(l.install_loaders(&loaders).installed.len(), 2);
        assert_eq!(
            fs::read(l.tftp_root().join("pxelinux.0")).unwrap(),
            b"loader v2"
        );
    }
}
