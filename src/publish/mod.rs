//! Where built virtual media live so that a BMC can fetch them.
//!
//! Two backends implement [`Publisher`]: [`LocalPublisher`] (the standalone default: a file
//! under ironboot's own HTTP root) and [`SwiftPublisher`] (an object in OpenStack Swift behind
//! a temp URL). [`Publishers`] builds both from `[vmedia]` ([`PublishSettings`]) and picks one
//! per node, honouring a per-node override from driver_info; the [`SelectedPublisher`] it
//! returns records metrics for every call.

pub mod cli;
mod error;
mod local;
mod metrics;
mod name;
mod settings;
pub mod swift;

use std::future::Future;
use std::path::Path;
use std::time::Instant;

use tracing::warn;

pub use self::error::{PublishError, Result};
pub use self::local::LocalPublisher;
pub use self::metrics::PublishMetrics;
pub use self::name::ObjectName;
pub use self::settings::{
    AuthVersion, Backend, Interface, PublishSettings, Secret, SwiftSettings, TempUrlDigest,
};
pub use self::swift::SwiftPublisher;

/// A published file: the URL to hand to the BMC, and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub url: String,
    pub bytes: u64,
}

/// Makes built files fetchable by BMCs.
pub trait Publisher: Send + Sync {
    fn backend(&self) -> Backend;

    /// Publishes the file at `source` (left in place) as `name`, replacing an earlier object
    /// of that name, and returns the URL a BMC can fetch. Nothing half-written is ever visible
    /// under `name`.
    fn publish(
        &self,
        source: &Path,
        name: &ObjectName,
    ) -> impl Future<Output = Result<Published>> + Send;

    /// Removes `name`; an object that is already gone is not an error.
    fn unpublish(&self, name: &ObjectName) -> impl Future<Output = Result<()>> + Send;

    fn exists(&self, name: &ObjectName) -> impl Future<Output = Result<bool>> + Send;
}

/// The publishers configured on this conductor.
#[derive(Debug, Clone)]
pub struct Publishers {
    default: Backend,
    local: LocalPublisher,
    swift: Option<SwiftPublisher>,
    metrics: PublishMetrics,
    /// What a per-node local publisher is built from (a node's own `external_http_url`).
    http_root: std::path::PathBuf,
    subdir: String,
    file_mode: u32,
}

impl Publishers {
    /// `http_root` is the directory ironboot's HTTP server serves and `root_url` the URL of
    /// that directory as BMCs reach it: `[deploy] external_http_url`, else `http_url`.
    pub fn new(
        settings: &PublishSettings,
        http_root: &Path,
        root_url: &str,
        metrics: PublishMetrics,
    ) -> Result<Self> {
        settings.validate()?;
        let local = LocalPublisher::new(http_root, root_url, &settings.subdir, settings.file_mode)?;
        let swift = settings
            .swift
            .clone()
            .map(|s| SwiftPublisher::new(s, &metrics))
            .transpose()?;
        Ok(Self {
            default: settings.publisher,
            local,
            swift,
            metrics,
            http_root: http_root.to_path_buf(),
            subdir: settings.subdir.clone(),
            file_mode: settings.file_mode,
        })
    }

    /// Like [`Publishers::select`], with the local publisher's URLs rooted at `root_url`
    /// when it is given: a node's own `external_http_url`, for a BMC that reaches this
    /// conductor's HTTP root by another address than the other BMCs do.
    pub fn select_for_node(
        &self,
        node_override: Option<&str>,
        root_url: Option<&str>,
    ) -> Result<SelectedPublisher> {
        let mut selected = self.select(node_override)?;
        if let (AnyPublisher::Local(_), Some(url)) = (&selected.inner, root_url) {
            let local = LocalPublisher::new(&self.http_root, url, &self.subdir, self.file_mode)?;
            selected.inner = AnyPublisher::Local(local);
        }
        Ok(selected)
    }

    /// The publisher for one node. `node_override` is the node's own choice from driver_info
    /// (`"local"` or `"swift"`); `None` or an empty string means the configured default.
    pub fn select(&self, node_override: Option<&str>) -> Result<SelectedPublisher> {
        let backend = match node_override.map(str::trim).filter(|s| !s.is_empty()) {
            Some(choice) => choice.parse()?,
            None => self.default,
        };
        let inner = match backend {
            Backend::Local => AnyPublisher::Local(self.local.clone()),
            Backend::Swift => {
                AnyPublisher::Swift(self.swift.clone().ok_or(PublishError::SwiftNotConfigured)?)
            }
        };
        Ok(SelectedPublisher {
            inner,
            metrics: self.metrics.clone(),
        })
    }
}

/// One backend, chosen by [`Publishers::select`], that counts and times every call.
#[derive(Debug, Clone)]
pub struct SelectedPublisher {
    inner: AnyPublisher,
    metrics: PublishMetrics,
}

#[derive(Debug, Clone)]
enum AnyPublisher {
    Local(LocalPublisher),
    Swift(SwiftPublisher),
}

impl SelectedPublisher {
    fn finish<T>(
        &self,
        operation: &'static str,
        name: &ObjectName,
        started: Instant,
        result: &Result<T>,
    ) {
        let backend = self.backend().as_str();
        self.metrics.record(
            backend,
            operation,
            started.elapsed().as_secs_f64(),
            result.is_ok(),
        );
        if let Err(e) = result {
            warn!(backend, operation, %name, error = %e, "media publishing call failed");
        }
    }
}

impl Publisher for SelectedPublisher {
    fn backend(&self) -> Backend {
        match &self.inner {
            AnyPublisher::Local(p) => p.backend(),
            AnyPublisher::Swift(p) => p.backend(),
        }
    }

    async fn publish(&self, source: &Path, name: &ObjectName) -> Result<Published> {
        let started = Instant::now();
        let result = match &self.inner {
            AnyPublisher::Local(p) => p.publish(source, name).await,
            AnyPublisher::Swift(p) => p.publish(source, name).await,
        };
        self.finish("publish", name, started, &result);
        if let Ok(published) = &result {
            self.metrics
                .bytes
                .get_or_create(&metrics::BackendLabels {
                    backend: self.backend().as_str(),
                })
                .inc_by(published.bytes);
        }
        result
    }

    async fn unpublish(&self, name: &ObjectName) -> Result<()> {
        let started = Instant::now();
        let result = match &self.inner {
            AnyPublisher::Local(p) => p.unpublish(name).await,
            AnyPublisher::Swift(p) => p.unpublish(name).await,
        };
        self.finish("unpublish", name, started, &result);
        result
    }

    async fn exists(&self, name: &ObjectName) -> Result<bool> {
        let started = Instant::now();
        let result = match &self.inner {
            AnyPublisher::Local(p) => p.exists(name).await,
            AnyPublisher::Swift(p) => p.exists(name).await,
        };
        self.finish("exists", name, started, &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn swift_settings() -> SwiftSettings {
        SwiftSettings {
            auth_url: "http://127.0.0.1:9/auth/v1.0".into(),
            auth_version: AuthVersion::Tempauth,
            user: "test:tester".into(),
            key: Secret::new("testing"),
            ..Default::default()
        }
    }

    #[test]
    fn selection_honours_default_and_override() {
        let tmp = tempfile::tempdir().unwrap();
        let local_only = Publishers::new(
            &PublishSettings::default(),
            tmp.path(),
            "http://h/",
            PublishMetrics::default(),
        )
        .unwrap();
        assert_eq!(local_only.select(None).unwrap().backend(), Backend::Local);
        assert_eq!(
            local_only.select(Some("")).unwrap().backend(),
            Backend::Local
        );
        let err = local_only.select(Some("swift")).unwrap_err();
        assert!(matches!(err, PublishError::SwiftNotConfigured), "{err}");
        assert!(matches!(
            local_only.select(Some("ftp")).unwrap_err(),
            PublishError::UnknownBackend(_)
        ));

        let settings = PublishSettings {
            publisher: Backend::Swift,
            swift: Some(swift_settings()),
            ..Default::default()
        };
        let both = Publishers::new(
            &settings,
            tmp.path(),
            "http://h/",
            PublishMetrics::default(),
        )
        .unwrap();
        assert_eq!(both.select(None).unwrap().backend(), Backend::Swift);
        assert_eq!(
            both.select(Some("local")).unwrap().backend(),
            Backend::Local
        );
        // A node's own root URL changes where local media are fetched from, not where they lie.
        let p = local_only
            .select_for_node(None, Some("http://10.9.9.9:80/"))
            .unwrap();
        let AnyPublisher::Local(l) = &p.inner else {
            panic!("local expected")
        };
        let name = ObjectName::new("x.iso").unwrap();
        assert_eq!(l.url_of(&name), "http://10.9.9.9:80/redfish/x.iso");
        assert_eq!(l.path_of(&name), tmp.path().join("redfish/x.iso"));
        assert!(local_only.select_for_node(None, Some("ftp://x")).is_err());
    }

    #[tokio::test]
    async fn calls_are_counted_by_backend() {
        let tmp = tempfile::tempdir().unwrap();
        let mut registry = Registry::default();
        let metrics = PublishMetrics::register(&mut registry);
        let publishers = Publishers::new(
            &PublishSettings::default(),
            &tmp.path().join("root"),
            "http://h/",
            metrics,
        )
        .unwrap();
        let p = publishers.select(None).unwrap();
        let src = tmp.path().join("f.img");
        std::fs::write(&src, vec![0u8; 1000]).unwrap();
        let name = ObjectName::new("image-x.img").unwrap();
        p.publish(&src, &name).await.unwrap();
        p.publish(&tmp.path().join("missing"), &name)
            .await
            .unwrap_err();
        p.unpublish(&name).await.unwrap();
        let text = crate::metrics::encode(&registry);
        for want in [
            r#"ironboot_publish_operations_total{backend="local",operation="publish"} 2"#,
            r#"ironboot_publish_failures_total{backend="local",operation="publish"} 1"#,
            r#"ironboot_publish_operations_total{backend="local",operation="unpublish"} 1"#,
            r#"ironboot_publish_bytes_total{backend="local"} 1000"#,
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
    }
}
