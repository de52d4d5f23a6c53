//! The standalone publisher: media appear under ironboot's own HTTP root.
//!
//! `<http_root>/<subdir>/<name>` is a hard link to the built file when both live on one
//! filesystem (no copy, no extra disk), otherwise an atomic copy; either way a BMC never sees a
//! partial file. The URL is `<root_url>/<subdir>/<name>`, short on purpose.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tracing::{debug, info, warn};

use super::error::{PublishError, Result};
use super::name::{ObjectName, validate_subdir};
use super::settings::{Backend, check_base_url};
use super::{Published, Publisher};
use crate::fsutil;

#[derive(Debug, Clone)]
pub struct LocalPublisher {
    dir: PathBuf,
    base_url: String,
    mode: u32,
}

impl LocalPublisher {
    /// `http_root` is the directory ironboot's HTTP server serves and `root_url` the URL of
    /// that directory as BMCs reach it (`external_http_url`, else `http_url`).
    pub fn new(http_root: &Path, root_url: &str, subdir: &str, mode: u32) -> Result<Self> {
        validate_subdir(subdir)
            .map_err(|r| PublishError::Settings(format!("vmedia.subdir = {subdir:?}: {r}")))?;
        check_base_url(root_url)
            .map_err(|r| PublishError::Settings(format!("HTTP root URL {root_url:?}: {r}")))?;
        let root = root_url.trim_end_matches('/');
        let (dir, base_url) = if subdir.is_empty() {
            (http_root.to_path_buf(), root.to_string())
        } else {
            (http_root.join(subdir), format!("{root}/{subdir}"))
        };
        Ok(Self {
            dir,
            base_url,
            mode,
        })
    }

    /// Where `name` is (or would be) published on disk.
    pub fn path_of(&self, name: &ObjectName) -> PathBuf {
        self.dir.join(name.as_str())
    }

    /// The URL a BMC fetches `name` from.
    pub fn url_of(&self, name: &ObjectName) -> String {
        format!("{}/{name}", self.base_url)
    }
}

impl Publisher for LocalPublisher {
    fn backend(&self) -> Backend {
        Backend::Local
    }

    async fn publish(&self, source: &Path, name: &ObjectName) -> Result<Published> {
        let (src, dir, dest, mode) = (
            source.to_path_buf(),
            self.dir.clone(),
            self.path_of(name),
            self.mode,
        );
        let (bytes, copied) = tokio::task::spawn_blocking(move || place(&src, &dir, &dest, mode))
            .await
            .map_err(|e| PublishError::Internal(format!("local publish task: {e}")))??;
        if copied {
            warn!(
                source = %source.display(),
                dir = %self.dir.display(),
                "media copied, not hard-linked: build output and HTTP root are on different filesystems"
            );
        }
        let url = self.url_of(name);
        info!(%name, %url, bytes, "published media locally");
        Ok(Published { url, bytes })
    }

    async fn unpublish(&self, name: &ObjectName) -> Result<()> {
        let path = self.path_of(name);
        let p = path.clone();
        tokio::task::spawn_blocking(move || fsutil::remove_if_exists(&p))
            .await
            .map_err(|e| PublishError::Internal(format!("local unpublish task: {e}")))?
            .map_err(|e| PublishError::io("remove", &path, e))?;
        debug!(%name, "unpublished local media");
        Ok(())
    }

    async fn exists(&self, name: &ObjectName) -> Result<bool> {
        let path = self.path_of(name);
        match tokio::fs::symlink_metadata(&path).await {
            Ok(meta) => Ok(meta.is_file()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(PublishError::io("inspect", path, e)),
        }
    }
}

/// Returns the size and whether the file had to be copied.
fn place(src: &Path, dir: &Path, dest: &Path, mode: u32) -> Result<(u64, bool)> {
    let meta = fs::metadata(src).map_err(|e| PublishError::io("read", src, e))?;
    if !meta.is_file() {
        return Err(PublishError::io(
            "publish",
            src,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        ));
    }
    fsutil::ensure_dir(dir).map_err(|e| PublishError::io("create directory", dir, e))?;
    // A hard link shares the source's inode, so its mode must be right before the link exists.
    if meta.permissions().mode() & 0o777 != mode {
        fs::set_permissions(src, fs::Permissions::from_mode(mode))
            .map_err(|e| PublishError::io("set the mode of", src, e))?;
    }
    let copied = fsutil::link_or_copy_atomic(src, dest)
        .map_err(|e| PublishError::io("place media at", dest, e))?;
    if copied && mode != fsutil::FILE_MODE {
        fs::set_permissions(dest, fs::Permissions::from_mode(mode))
            .map_err(|e| PublishError::io("set the mode of", dest, e))?;
    }
    Ok((meta.len(), copied))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use uuid::Uuid;

    fn setup(subdir: &str, url: &str) -> (tempfile::TempDir, LocalPublisher, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("httproot");
        let publisher = LocalPublisher::new(&root, url, subdir, 0o644).unwrap();
        let src = tmp.path().join("built.iso");
        fs::write(&src, b"iso bytes").unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o600)).unwrap();
        (tmp, publisher, src)
    }

    #[tokio::test]
    async fn publish_links_with_mode_and_short_url() {
        let (tmp, p, src) = setup("redfish", "http://10.0.0.1:8080/");
        let name = ObjectName::boot_iso(Uuid::nil());
        assert!(!p.exists(&name).await.unwrap());
        let published = p.publish(&src, &name).await.unwrap();
        assert_eq!(
            published.url,
            "http://10.0.0.1:8080/redfish/boot-00000000-0000-0000-0000-000000000000.iso"
        );
        assert_eq!(published.bytes, 9);
        let dest = tmp.path().join("httproot/redfish").join(name.as_str());
        assert_eq!(fs::read(&dest).unwrap(), b"iso bytes");
        let meta = fs::metadata(&dest).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o644);
        assert_eq!(meta.ino(), fs::metadata(&src).unwrap().ino());
        let dir_mode = fs::metadata(dest.parent().unwrap()).unwrap().mode() & 0o777;
        assert_eq!(dir_mode, 0o755);
        assert!(p.exists(&name).await.unwrap());

        // Republishing replaces the file atomically and leaves no temp files behind.
        let src2 = tmp.path().join("rebuilt.iso");
        fs::write(&src2, b"new").unwrap();
        p.publish(&src2, &name).await.unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
        assert_eq!(fs::read_dir(dest.parent().unwrap()).unwrap().count(), 1);

        p.unpublish(&name).await.unwrap();
        assert!(!dest.exists());
        assert!(!p.exists(&name).await.unwrap());
        // A second unpublish is fine.
        p.unpublish(&name).await.unwrap();
        assert!(src.exists(), "unpublish must not touch the build output");
    }

    #[tokio::test]
    async fn url_keeps_path_prefix_and_empty_subdir_publishes_at_root() {
        let (tmp, p, src) = setup("", "https://boot.example/media");
        let name = ObjectName::new("configdrive-x").unwrap();
        let published = p.publish(&src, &name).await.unwrap();
        assert_eq!(published.url, "https://boot.example/media/configdrive-x");
        assert!(tmp.path().join("httproot/configdrive-x").is_file());
    }

    #[tokio::test]
    async fn missing_source_is_a_clear_error_and_publishes_nothing() {
        let (tmp, p, _src) = setup("redfish", "http://h/");
        let name = ObjectName::new("boot-x.iso").unwrap();
        let missing = tmp.path().join("nope.iso");
        let err = p.publish(&missing, &name).await.unwrap_err().to_string();
        assert!(err.contains("nope.iso"), "{err}");
        assert!(!p.exists(&name).await.unwrap());
        let err = p.publish(tmp.path(), &name).await.unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn bad_construction_is_refused() {
        let root = Path::new("/srv/http");
        assert!(LocalPublisher::new(root, "http://h/", "../x", 0o644).is_err());
        assert!(LocalPublisher::new(root, "h:8080", "redfish", 0o644).is_err());
    }
}
