//! Where the agent downloads the instance image from, and how it checks it.
//!
//! With `[agent] image_download_source = "http"` (the default) the image goes through the
//! image cache and is served by ironboot's own HTTP server from
//! `<http_root>/agent_images/<node uuid>`; with `direct` the agent downloads the node's
//! `image_source` itself.

use serde_json::Value;

use super::plan::{self, Checksum, DeployPlan, ImageSource};
use super::{AgentDeploy, is_http_url};
use crate::conductor::deploy::DeployError;
use crate::conductor::task::Task;
use crate::config::ImageDownloadSource;
use crate::images::{self, ImageFormat, ImageRequest};

/// The checksum the cache verifies the download against: required for network sources;
/// optional for local files (the cache computes a sha256 the agent then verifies).
pub(super) fn cache_checksum(task: &Task, source: &str) -> Result<Checksum, DeployError> {
    match plan::declared_checksum(&task.node) {
        Ok(c) => Ok(c),
        Err(_) if !is_http_url(source) => Ok(Checksum::default()),
        Err(e) => Err(AgentDeploy::invalid(e)),
    }
}

/// Why the instance image could not be made available to the agent.
#[derive(Debug, thiserror::Error)]
enum ImageFailure {
    #[error("cannot cache instance image: {0}")]
    Cache(#[source] images::ImageError),
    #[error("cannot serve instance image: {0}")]
    Serve(#[source] images::ImageError),
}

impl AgentDeploy {
    pub(super) async fn image_source(
        &self,
        task: &Task,
        plan: &DeployPlan,
    ) -> Result<ImageSource, DeployError> {
        let declared_format = task
            .node
            .instance_info
            .get("image_disk_format")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        match self.config.settings.image_download_source {
            ImageDownloadSource::Direct => {
                if !is_http_url(&plan.image_source) {
                    return Err(Self::invalid(format!(
                        "image_source {:?} is not an http(s) URL; with [agent] \
                         image_download_source = \"direct\" the agent downloads it itself",
                        plan.image_source
                    )));
                }
                let disk_format = declared_format.ok_or_else(|| {
                    Self::invalid(
                        "instance_info.image_disk_format is required when the agent \
                         downloads from the origin (raw, qcow2, ...)",
                    )
                })?;
                let checksum = plan::declared_checksum(&task.node).map_err(Self::invalid)?;
                Ok(ImageSource {
                    url: plan.image_source.clone(),
                    disk_format: disk_format.to_string(),
                    checksum,
                })
            }
            ImageDownloadSource::Http => self.cached_source(task, plan, declared_format).await,
        }
    }

    /// Fetches the image into the cache and serves it from the http root.
    async fn cached_source(
        &self,
        task: &Task,
        plan: &DeployPlan,
        declared_format: Option<&str>,
    ) -> Result<ImageSource, DeployError> {
        let checksum = cache_checksum(task, &plan.image_source)?;
        let expected_format = declared_format
            .map(|f| {
                f.parse::<ImageFormat>()
                    .map_err(|e| Self::invalid(format!("instance_info.image_disk_format: {e}")))
            })
            .transpose()?;
        let request = ImageRequest {
            href: plan.image_source.clone(),
            checksum: checksum.checksum,
            os_hash_algo: checksum.os_hash_algo,
            os_hash_value: checksum.os_hash_value,
            expected_format,
            kind: images::ImageKind::Instance,
            ..Default::default()
        };
        let cache = &self.config.cache;
        let image = cache
            .fetch(&request)
            .await
            .map_err(|e| Self::failed(task, ImageFailure::Cache(e)))?;
        let served = cache
            .place_agent_image(&image, &self.config.http_root, &task.node.uuid)
            .await
            .map_err(|e| Self::failed(task, ImageFailure::Serve(e)))?;
        tracing::info!(node = %task.node.uuid, source = %plan.image_source,
            size = image.size, format = ?served.disk_format, converted = image.converted,
            "instance image cached and served to the agent");
        Ok(ImageSource {
            url: format!("{}/{}", self.config.http_url, served.url_path),
            disk_format: served
                .disk_format
                .map(|f| f.to_string())
                .unwrap_or_else(|| "raw".into()),
            checksum: Checksum {
                os_hash_algo: Some(served.os_hash_algo.to_string()),
                os_hash_value: Some(served.os_hash_value),
                checksum: None,
            },
        })
    }

    /// Removes the served copy of the instance image (the agent has written it).
    pub(super) async fn remove_agent_image(&self, task: &Task) {
        let cache = &self.config.cache;
        if let Err(e) = cache
            .remove_agent_image(&self.config.http_root, &task.node.uuid)
            .await
        {
            tracing::warn!(node = %task.node.uuid, error = %e, "cannot remove served agent image");
        }
    }
}
