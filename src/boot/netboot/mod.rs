//! What the `pxe` and `ipxe` boot interfaces share: reading the node record, fetching kernels
//! and ramdisks through the image cache, rendering the node's config and laying out its files.
//!
//! The two interfaces differ only in their root (tftp root or http root, see
//! [`Layout::root`]), in how the firmware's loader names files ([`Layout::image_locations`]),
//! in the config format ([`ConfigFormat::select`]) and in the root-level file every node of the
//! interface chains through ([`Flavor::refresh_root`]). [`NetBootInterface`] is generic over
//! that [`Flavor`]; `pxe.rs` and `ipxe.rs` provide the two.
//!
//! Order of work, so a node that boots at any moment finds a consistent set: images are
//! fetched and placed first, then the config is written (atomically), then the MAC links
//! that make firmware find it. Switching to an instance entry writes a new config over the
//! old one before the deploy kernel and ramdisk are removed.
//!
//! What a node's record means here:
//! - boot mode: `instance_info.deploy_boot_mode`, else `properties.capabilities` `boot_mode`,
//!   else the configured default; architecture: `properties.cpu_arch` (default x86_64);
//! - deploy kernel and ramdisk: `driver_info.deploy_kernel` / `deploy_ramdisk` (http(s),
//!   `file://` or an absolute path), fetched through the image cache as boot files;
//! - kernel parameters: `instance_info.kernel_append_params`, else
//!   `driver_info.kernel_append_params`, else `[pxe] kernel_append_params` (`%default%` in a
//!   node value expands to the configured one), then the deploy interface's ramdisk
//!   parameters (`ipa-api-url=...`); `BOOTIF` is added by the config itself, as each
//!   firmware knows the booting NIC;
//! - the instance: a ramdisk boot when `instance_info.capabilities` has `boot_option:ramdisk`;
//!   else a partition image when `driver_internal_info.is_whole_disk_image` is false (or,
//!   before a deploy recorded it, when `instance_info.image_type` is `partition`, or kernel and
//!   ramdisk are both given); else a whole-disk image. `driver_internal_info.root_uuid_or_disk_id`
//!   is the root filesystem UUID (partition) or the disk identifier (whole disk).

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde_json::Value;
use tracing::Instrument;
use uuid::Uuid;

use super::instance::InstanceKind;
use super::layout::{Images, Layout, NodeFile};
use super::render::{BootContext, ConfigFormat, Entry, KernelParams, Renderer};
use super::{Arch, BootError, BootFilesError, BootInterface, BootMetrics, BootMode, NetBoot};
use super::{PxeSettings, render};
use crate::driver::{BootDevice, BootTarget, NodeContext, RamdiskParams};
use crate::images::{ImageCache, ImageError, ImageKind, ImageRequest};
use crate::model::{MacAddress, Node, ProvisionState};

/// What distinguishes `pxe` from `ipxe`.
pub trait Flavor: Send + Sync + 'static {
    const KIND: NetBoot;
    /// Refreshes the root-level file every node of this interface boots through (rewritten
    /// only when its content changed), in case the root was emptied since start.
    fn refresh_root(renderer: &Renderer, layout: &Layout) -> Result<(), BootFilesError>;
}

/// What both interfaces need from the service; built once at start.
#[derive(Debug, Clone)]
pub struct NetBootConfig {
    pub settings: PxeSettings,
    pub renderer: Arc<Renderer>,
    pub layout: Layout,
    pub cache: Arc<ImageCache>,
    /// `http_url` without a trailing slash: where nodes reach the http root.
    pub http_url: String,
    /// Boot mode of nodes that name none (`[agent] default_boot_mode`).
    pub default_boot_mode: BootMode,
}

/// A network boot interface (`pxe` or `ipxe`, by its [`Flavor`]).
pub struct NetBootInterface<F> {
    config: Arc<NetBootConfig>,
    /// `[pxe] kernel_append_params`, parsed once.
    default_params: KernelParams,
    metrics: BootMetrics,
    flavor: PhantomData<fn() -> F>,
}

impl<F> std::fmt::Debug for NetBootInterface<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetBootInterface")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How the node boots, as far as every entry is concerned.
#[derive(Debug, Clone)]
struct NodeBoot {
    mode: BootMode,
    arch: Arch,
    /// The kernel parameters every entry gets (configured or the node's own).
    append: KernelParams,
}

fn text<'a>(fields: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a str> {
    fields
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

impl<F: Flavor> NetBootInterface<F> {
    pub fn new(config: NetBootConfig, metrics: BootMetrics) -> Result<Self, BootFilesError> {
        let default_params = config.settings.default_kernel_params()?;
        Ok(Self {
            config: Arc::new(config),
            default_params,
            metrics,
            flavor: PhantomData,
        })
    }

    fn name() -> &'static str {
        F::KIND.as_str()
    }

    fn invalid_node(reason: impl std::fmt::Display) -> BootError {
        BootError::InvalidNode {
            interface: Self::name(),
            reason: reason.to_string(),
        }
    }

    fn invalid_driver_info(reason: impl std::fmt::Display) -> BootError {
        BootError::InvalidDriverInfo {
            interface: Self::name(),
            reason: reason.to_string(),
        }
    }

    fn failed(
        node: &Node,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> BootError {
        BootError::failed(Self::name(), node, source)
    }

    /// Boot mode, architecture and kernel parameters from the node record.
    fn node_boot(&self, node: &Node) -> Result<NodeBoot, BootError> {
        let mode = node
            .boot_mode(self.config.default_boot_mode)
            .map_err(Self::invalid_node)?;
        let arch = match text(&node.properties, "cpu_arch") {
            Some(a) => a
                .parse::<Arch>()
                .map_err(|e| Self::invalid_node(format!("properties.cpu_arch: {e}")))?,
            None => Arch::X86_64,
        };
        ConfigFormat::select(F::KIND, mode, arch).map_err(Self::invalid_node)?;
        let append = match (
            text(&node.instance_info, "kernel_append_params"),
            text(&node.driver_info, "kernel_append_params"),
        ) {
            (Some(p), _) => KernelParams::parse_with_default(
                "instance_info.kernel_append_params",
                p,
                &self.default_params,
            ),
            (None, Some(p)) => KernelParams::parse_with_default(
                "driver_info.kernel_append_params",
                p,
                &self.default_params,
            ),
            (None, None) => Ok(self.default_params.clone()),
        }
        .map_err(Self::invalid_node)?;
        Ok(NodeBoot { mode, arch, append })
    }

    /// `driver_info.deploy_kernel` and `deploy_ramdisk`, checked as image sources; while the
    /// node is being rescued, `rescue_kernel` and `rescue_ramdisk` when given (else the deploy
    /// ramdisk, which is an agent too).
    fn deploy_hrefs(node: &Node) -> Result<(String, String), BootError> {
        let rescuing = node.provision_state.is_rescuing();
        let (kernel, ramdisk) = if rescuing && text(&node.driver_info, "rescue_kernel").is_some() {
            ("rescue_kernel", "rescue_ramdisk")
        } else {
            ("deploy_kernel", "deploy_ramdisk")
        };
        let get = |key: &str| {
            let href = text(&node.driver_info, key).ok_or_else(|| {
                Self::invalid_driver_info(format!(
                    "{key} is required (http(s) URL, file:// URL or absolute path of the deploy {})",
                    if key.ends_with("kernel") {
                        "kernel"
                    } else {
                        "ramdisk"
                    }
                ))
            })?;
            crate::images::source::Source::parse(href)
                .map_err(|e| Self::invalid_driver_info(format!("{key}: {e}")))?;
            Ok::<_, BootError>(href.to_string())
        };
        Ok((get(kernel)?, get(ramdisk)?))
    }

    /// What the node boots once deployed (see `boot::instance`).
    fn instance_kind(node: &Node, recorded: bool) -> Result<InstanceKind, BootError> {
        super::instance::instance_kind(node, recorded, "over the network")
            .map_err(Self::invalid_node)
    }

    /// `instance_info.ramdisk_kernel_arguments`, the extra command line of a ramdisk boot.
    fn ramdisk_arguments(node: &Node) -> Result<KernelParams, BootError> {
        match text(&node.instance_info, "ramdisk_kernel_arguments") {
            Some(a) => KernelParams::parse("instance_info.ramdisk_kernel_arguments", a)
                .map_err(Self::invalid_node),
            None => Ok(KernelParams::new()),
        }
    }

    /// The MACs of the node's pxe-enabled ports: the names firmware looks its config up by.
    fn boot_macs(ctx: &NodeContext) -> Result<Vec<MacAddress>, BootError> {
        let macs = ctx.pxe_macs();
        if macs.is_empty() {
            return Err(Self::invalid_node(format!(
                "node {} has no port with pxe_enabled=true: firmware finds its boot config by the \
                 MAC of such a port (create one with the MAC the node boots from)",
                ctx.node.ident()
            )));
        }
        Ok(macs)
    }

    /// Runs blocking layout work off the async threads.
    async fn blocking<T, W>(&self, node: &Node, work: W) -> Result<T, BootError>
    where
        T: Send + 'static,
        W: FnOnce(&NetBootConfig) -> Result<T, BootFilesError> + Send + 'static,
    {
        let config = Arc::clone(&self.config);
        tokio::task::spawn_blocking(move || work(&config))
            .await
            .map_err(|e| Self::failed(node, NetBootFailure::Cancelled(e)))?
            .map_err(|e| Self::failed(node, e))
    }

    /// Fetches a kernel and ramdisk through the cache and links them into the node directory.
    async fn place_images(
        &self,
        node: &Node,
        (kernel, ramdisk): (&str, &str),
        (kernel_file, ramdisk_file): (NodeFile, NodeFile),
    ) -> Result<(), BootError> {
        let cache = &self.config.cache;
        let fetch = |href: &str| {
            let request = ImageRequest {
                kind: ImageKind::BootFile,
                ..ImageRequest::new(href)
            };
            async move {
                cache.fetch(&request).await.map_err(|source| {
                    Self::failed(
                        node,
                        NetBootFailure::Fetch {
                            href: request.href.clone(),
                            source,
                        },
                    )
                })
            }
        };
        let (k, r) = tokio::try_join!(fetch(kernel), fetch(ramdisk))?;
        let layout = &self.config.layout;
        for (image, file) in [(&k, kernel_file), (&r, ramdisk_file)] {
            let dest = layout.node_file(F::KIND, node.uuid, file);
            cache.place(image, &dest).await.map_err(|source| {
                Self::failed(
                    node,
                    NetBootFailure::Place {
                        href: image.href.clone(),
                        source,
                    },
                )
            })?;
        }
        tracing::info!(node = %node.uuid, kernel = %kernel, ramdisk = %ramdisk,
            kernel_bytes = k.size, ramdisk_bytes = r.size,
            downloaded = k.downloaded || r.downloaded, "kernel and ramdisk in place");
        Ok(())
    }

    /// A context with nothing but the node's identity and boot facts filled in.
    fn context(node: &Node, boot: &NodeBoot, entry: Entry) -> BootContext {
        BootContext {
            node_uuid: node.uuid,
            interface: F::KIND,
            boot_mode: boot.mode,
            arch: boot.arch,
            entry,
            deploy: None,
            deploy_params: KernelParams::new(),
            instance: None,
            instance_params: KernelParams::new(),
            root_uuid: None,
            disk_id: None,
        }
    }

    fn locations(
        &self,
        node: Uuid,
        mode: BootMode,
        images: Images,
    ) -> Result<render::ImagePair, BootFilesError> {
        self.config.layout.image_locations(
            F::KIND,
            mode,
            node,
            images,
            Some(self.config.http_url.as_str()),
        )
    }

    /// Renders `ctx`, writes it as the node's config and points the MACs at it.
    async fn install_config(
        &self,
        node: &Node,
        ctx: BootContext,
        macs: Vec<MacAddress>,
    ) -> Result<(), BootError> {
        let text = self
            .config
            .renderer
            .render_node_config(&ctx)
            .map_err(|e| Self::failed(node, e))?;
        let uuid = node.uuid;
        let links = self
            .blocking(node, move |c| {
                F::refresh_root(&c.renderer, &c.layout)?;
                c.layout.write_config(F::KIND, uuid, &text)?;
                c.layout.link_macs(F::KIND, uuid, &macs)
            })
            .await?;
        tracing::info!(node = %uuid, entry = ctx.entry.label(), boot_mode = ctx.boot_mode.as_str(),
            arch = ctx.arch.as_str(), links = links.len(), "boot config written");
        Ok(())
    }

    async fn remove_files(&self, node: &Node, files: &'static [NodeFile]) -> Result<(), BootError> {
        let uuid = node.uuid;
        self.blocking(node, move |c| {
            files
                .iter()
                .try_for_each(|f| c.layout.remove_node_file(F::KIND, uuid, *f))
        })
        .await
    }

    /// Removes what a failed prepare placed: `files`, or the whole node (`None`). Its own
    /// failure is logged; the prepare's error is the one the caller reports.
    async fn undo(&self, node: &Node, files: Option<&'static [NodeFile]>) {
        let undone = match files {
            Some(files) => self.remove_files(node, files).await,
            None => self.clean_up(node).await,
        };
        if let Err(e) = undone {
            tracing::warn!(node = %node.uuid, error = %e, "cannot remove the files of a failed prepare");
        }
    }

    async fn clean_up(&self, node: &Node) -> Result<(), BootError> {
        let uuid = node.uuid;
        let report = self
            .blocking(node, move |c| c.layout.clean_up_node(F::KIND, uuid))
            .await?;
        tracing::info!(node = %uuid, links = report.links.len(),
            node_dir_removed = report.node_dir_removed, "boot files removed");
        Ok(())
    }

    async fn prepare_ramdisk_inner(
        &self,
        node_ctx: &NodeContext,
        ramdisk_params: &RamdiskParams,
    ) -> Result<BootTarget, BootError> {
        let node = &node_ctx.node;
        let boot = self.node_boot(node)?;
        let hrefs = Self::deploy_hrefs(node)?;
        let macs = Self::boot_macs(node_ctx)?;
        let mut ctx = Self::context(node, &boot, Entry::Deploy);
        ctx.deploy_params = boot.append.clone();
        for (key, value) in ramdisk_params {
            let value = (!value.is_empty()).then_some(value.as_str());
            ctx.deploy_params
                .push("ramdisk parameters", key, value)
                .map_err(|e| Self::failed(node, e))?;
        }
        ctx.deploy = Some(
            self.locations(node.uuid, boot.mode, Images::Deploy)
                .map_err(|e| Self::failed(node, e))?,
        );
        let placed = async {
            self.place_images(
                node,
                (&hrefs.0, &hrefs.1),
                (NodeFile::DeployKernel, NodeFile::DeployRamdisk),
            )
            .await?;
            self.install_config(node, ctx, macs).await
        }
        .await;
        if let Err(e) = placed {
            // Nothing of a half-prepared deploy may stay reachable: images linked before the
            // failure would be served until the node is undeployed.
            self.undo(node, None).await;
            return Err(e);
        }
        Ok(BootTarget::once(BootDevice::Pxe))
    }

    async fn prepare_instance_inner(
        &self,
        node_ctx: &NodeContext,
    ) -> Result<BootTarget, BootError> {
        let node = &node_ctx.node;
        let boot = self.node_boot(node)?;
        let recorded = super::instance::recorded_root(node);
        let (entry, images) = match Self::instance_kind(node, true)? {
            InstanceKind::WholeDisk if !self.config.settings.enable_netboot_fallback => {
                // Ironic's default: the instance boots from its disk, the network has nothing
                // left to offer this node.
                self.clean_up(node).await?;
                return Ok(BootTarget::persistent(BootDevice::Disk));
            }
            InstanceKind::WholeDisk => (Entry::BootWholeDisk, None),
            InstanceKind::Partition { kernel, ramdisk } => {
                if recorded.is_none() {
                    return Err(Self::failed(node, NetBootFailure::NoRootUuid));
                }
                (Entry::BootPartition, Some((kernel, ramdisk)))
            }
            InstanceKind::Ramdisk { kernel, ramdisk } => {
                (Entry::BootRamdisk, Some((kernel, ramdisk)))
            }
        };
        let macs = Self::boot_macs(node_ctx)?;
        let mut ctx = Self::context(node, &boot, entry);
        match entry {
            Entry::BootWholeDisk => ctx.disk_id = recorded,
            Entry::BootPartition => {
                ctx.root_uuid = recorded;
                ctx.instance_params = boot.append.clone();
            }
            _ => {
                ctx.instance_params = boot.append.clone();
                ctx.instance_params.extend(&Self::ramdisk_arguments(node)?);
            }
        }
        if images.is_some() {
            ctx.instance = Some(
                self.locations(node.uuid, boot.mode, Images::Instance)
                    .map_err(|e| Self::failed(node, e))?,
            );
        }
        let placed = async {
            if let Some((kernel, ramdisk)) = &images {
                self.place_images(
                    node,
                    (kernel, ramdisk),
                    (NodeFile::Kernel, NodeFile::Ramdisk),
                )
                .await?;
            }
            self.install_config(node, ctx, macs).await
        }
        .await;
        if let Err(e) = placed {
            // The instance images this call linked must not outlive its failure.
            if images.is_some() {
                self.undo(node, Some(&[NodeFile::Kernel, NodeFile::Ramdisk]))
                    .await;
            }
            return Err(e);
        }
        // The config no longer names the deploy ramdisk; a whole-disk config needs no images.
        // A whole-disk node with the fallback config still boots over the network first; the
        // config hands it to the disk.
        let target = BootTarget::persistent(BootDevice::Pxe);
        let unused: &'static [NodeFile] = if images.is_some() {
            &[NodeFile::DeployKernel, NodeFile::DeployRamdisk]
        } else {
            &[
                NodeFile::DeployKernel,
                NodeFile::DeployRamdisk,
                NodeFile::Kernel,
                NodeFile::Ramdisk,
            ]
        };
        self.remove_files(node, unused).await?;
        Ok(target)
    }

    /// Runs one operation in a span carrying the node, and counts it.
    async fn observed<T>(
        &self,
        op: &'static str,
        node: Uuid,
        work: impl Future<Output = Result<T, BootError>>,
    ) -> Result<T, BootError> {
        let started = Instant::now();
        let span = tracing::info_span!("boot", interface = Self::name(), op, node = %node);
        let result = work.instrument(span).await;
        self.metrics.observe(
            Self::name(),
            op,
            result.is_ok(),
            started.elapsed().as_secs_f64(),
        );
        if let Err(e) = &result {
            tracing::warn!(node = %node, interface = Self::name(), op, error = %e, "boot operation failed");
        }
        result
    }
}

#[async_trait]
impl<F: Flavor> BootInterface for NetBootInterface<F> {
    fn name(&self) -> &'static str {
        Self::name()
    }

    fn validate(&self, ctx: &NodeContext) -> Result<(), BootError> {
        let node = &ctx.node;
        self.node_boot(node)?;
        Self::deploy_hrefs(node)?;
        if let InstanceKind::Ramdisk { .. } = Self::instance_kind(node, false)? {
            Self::ramdisk_arguments(node)?;
        }
        Self::boot_macs(ctx)?;
        Ok(())
    }

    async fn prepare_ramdisk(
        &self,
        ctx: &mut NodeContext,
        params: &RamdiskParams,
    ) -> Result<BootTarget, BootError> {
        let uuid = ctx.node.uuid;
        self.observed(
            "prepare_ramdisk",
            uuid,
            self.prepare_ramdisk_inner(ctx, params),
        )
        .await
    }

    async fn clean_up_ramdisk(&self, ctx: &mut NodeContext) -> Result<(), BootError> {
        let uuid = ctx.node.uuid;
        self.observed("clean_up", uuid, self.clean_up(&ctx.node))
            .await
    }

    async fn prepare_instance(&self, ctx: &mut NodeContext) -> Result<BootTarget, BootError> {
        let uuid = ctx.node.uuid;
        self.observed("prepare_instance", uuid, self.prepare_instance_inner(ctx))
            .await
    }

    async fn clean_up_instance(&self, ctx: &mut NodeContext) -> Result<(), BootError> {
        let uuid = ctx.node.uuid;
        self.observed("clean_up", uuid, self.clean_up(&ctx.node))
            .await
    }

    async fn take_over(
        &self,
        ctx: &mut NodeContext,
        params: &RamdiskParams,
    ) -> Result<(), BootError> {
        let uuid = ctx.node.uuid;
        self.observed("take_over", uuid, async move {
            // An active node boots its instance from these files; a node waiting for its agent
            // boots the ramdisk from them again whenever it reboots (the `params` of the flow
            // that booted it make the config the one the previous conductor wrote). A node in any
            // other state gets its files when its next operation runs.
            match ctx.node.provision_state {
                state if state.waits_for_agent() => {
                    return self.prepare_ramdisk_inner(ctx, params).await.map(|_| ());
                }
                ProvisionState::Active => {}
                state => {
                    tracing::debug!(node = %uuid, %state,
                        "take over: no boot files to regenerate in this state");
                    return Ok(());
                }
            }
            self.prepare_instance_inner(ctx).await.map(|_| ())
        })
        .await
    }
}

/// Why preparing a node's boot files failed (beyond bad input).
#[derive(Debug, thiserror::Error)]
enum NetBootFailure {
    #[error("cannot fetch {href}: {source}")]
    Fetch {
        href: String,
        #[source]
        source: ImageError,
    },
    #[error("cannot place {href}: {source}")]
    Place {
        href: String,
        #[source]
        source: ImageError,
    },
    #[error("boot file task did not finish: {0}")]
    Cancelled(#[source] tokio::task::JoinError),
    #[error(
        "a partition image boots with root=UUID=<root uuid>, and no root uuid was recorded \
         (driver_internal_info.root_uuid_or_disk_id); deploy the node again"
    )]
    NoRootUuid,
}

#[cfg(test)]
mod tests;
