//! Building a node's media in a scratch directory: the deploy ISO (from the deploy kernel and
//! ramdisk, the agent's parameters on its command line) or the operator's deploy ISO from the
//! image cache, the `parameters.txt` floppy, and the instance boot ISO.
//!
//! Every build is a pure function of its inputs (media builds read no clock, and the ISO
//! publisher id comes from the node's record), so a conductor taking a node over rebuilds the
//! same bytes.

use std::path::{Path, PathBuf};

use tempfile::TempDir;
use uuid::Uuid;

use super::error::VmediaError;
use super::inputs::{DeployMedia, RamdiskInputs};
use super::record::{MediaKind, MediaRecord};
use crate::bmc::redfish::MediaKind as Slot;
use crate::images::{CachedImage, ImageKind, ImageRequest};
use crate::media::{BootSpec, FloppySpec, IsoSpec};
use crate::model::BootMode;

/// One medium ready to publish.
pub struct Built {
    pub kind: MediaKind,
    pub path: PathBuf,
    /// The slot kind it goes into.
    pub slot: Slot,
    /// What errors and logs call it.
    pub what: &'static str,
    /// Keeps a cached image (a prebuilt deploy ISO) from eviction while it is published.
    _pin: Option<CachedImage>,
}

/// The scratch directory of one build; removed (with whatever was not published) on drop.
pub struct Scratch(#[allow(dead_code)] TempDir);

/// Inputs of an instance boot ISO.
pub struct BootIsoInputs {
    pub kernel: String,
    pub ramdisk: String,
    pub cmdline: String,
    pub mode: BootMode,
}

impl super::VirtualMediaBoot {
    /// A kernel, ramdisk or ISO through the image cache (taken as it is: boot files are not
    /// inspected or converted).
    pub(super) async fn fetch(
        &self,
        what: &'static str,
        href: &str,
    ) -> Result<CachedImage, VmediaError> {
        let request = ImageRequest {
            kind: ImageKind::BootFile,
            ..ImageRequest::new(href)
        };
        self.config
            .cache
            .fetch(&request)
            .await
            .map_err(|source| VmediaError::Fetch {
                what,
                href: href.to_string(),
                source: Box::new(source),
            })
    }

    fn scratch(&self, node: Uuid) -> Result<Scratch, VmediaError> {
        let dir = &self.config.work_dir;
        tempfile::Builder::new()
            .prefix(&format!("{node}-"))
            .tempdir_in(dir)
            .map(Scratch)
            .map_err(|source| VmediaError::WorkDir {
                path: dir.clone(),
                source,
            })
    }

    /// The deploy ISO (built, or the prebuilt one) and, when asked for, the floppy.
    pub(super) async fn build_ramdisk_media(
        &self,
        node: Uuid,
        inputs: &RamdiskInputs,
        agent: &[(String, String)],
        record: &MediaRecord,
    ) -> Result<(Scratch, Vec<Built>), VmediaError> {
        let scratch = self.scratch(node)?;
        let mut built = Vec::new();
        match &inputs.media {
            DeployMedia::Built { kernel, ramdisk } => {
                let mut cmdline = inputs.append.clone();
                for (k, v) in agent {
                    cmdline
                        .push("the agent's parameters", k, Some(v))
                        .map_err(VmediaError::Params)?;
                }
                let boot = BootIsoInputs {
                    kernel: kernel.clone(),
                    ramdisk: ramdisk.clone(),
                    cmdline: cmdline.to_cmdline(),
                    mode: inputs.mode,
                };
                let path = scratch.0.path().join("deploy.iso");
                self.build_iso(node, &boot, record, MediaKind::DeployIso, &path)
                    .await?;
                built.push(Built {
                    kind: MediaKind::DeployIso,
                    path,
                    slot: Slot::Cd,
                    what: "the deploy ISO",
                    _pin: None,
                });
            }
            DeployMedia::Prebuilt { iso } => {
                let image = self.fetch("deploy_iso", iso).await?;
                built.push(Built {
                    kind: MediaKind::DeployIso,
                    path: image.path.clone(),
                    slot: Slot::Cd,
                    what: "the deploy ISO (deploy_iso)",
                    _pin: Some(image),
                });
            }
        }
        if inputs.floppy {
            let path = scratch.0.path().join("config.img");
            let spec = FloppySpec {
                params: agent.to_vec(),
                ..FloppySpec::default()
            };
            self.config
                .media
                .build_floppy_async(spec, path.clone())
                .await
                .map_err(|source| VmediaError::Build {
                    what: "the parameters floppy",
                    source,
                })?;
            built.push(Built {
                kind: MediaKind::ConfigFloppy,
                path,
                slot: Slot::Floppy,
                what: "the parameters floppy",
                _pin: None,
            });
        }
        Ok((scratch, built))
    }

    /// The instance boot ISO of a partition image or a ramdisk deploy.
    pub(super) async fn build_boot_iso(
        &self,
        node: Uuid,
        boot: &BootIsoInputs,
        record: &MediaRecord,
    ) -> Result<(Scratch, Built), VmediaError> {
        let scratch = self.scratch(node)?;
        let path = scratch.0.path().join("boot.iso");
        self.build_iso(node, boot, record, MediaKind::BootIso, &path)
            .await?;
        let built = Built {
            kind: MediaKind::BootIso,
            path,
            slot: Slot::Cd,
            what: "the instance boot ISO",
            _pin: None,
        };
        Ok((scratch, built))
    }

    /// A bootable ISO of `boot` at `out`: the El Torito entry of the node's boot mode.
    async fn build_iso(
        &self,
        node: Uuid,
        boot: &BootIsoInputs,
        record: &MediaRecord,
        kind: MediaKind,
        out: &Path,
    ) -> Result<(), VmediaError> {
        let what = match kind {
            MediaKind::BootIso => "the instance boot ISO",
            _ => "the deploy ISO",
        };
        let (kernel, ramdisk) = tokio::try_join!(
            self.fetch("kernel", &boot.kernel),
            self.fetch("ramdisk", &boot.ramdisk)
        )?;
        let spec = IsoSpec {
            boot: Some(BootSpec {
                kernel: kernel.path.clone(),
                ramdisk: ramdisk.path.clone(),
                cmdline: boot.cmdline.clone(),
                bios: boot.mode == BootMode::Bios,
                uefi: boot.mode == BootMode::Uefi,
                hybrid: false,
            }),
            publisher_id: Some(record.publisher_id(node, kind)),
            ..IsoSpec::default()
        };
        let report = self
            .config
            .media
            .build_iso_async(spec, out.to_path_buf(), false)
            .await
            .map_err(|source| VmediaError::Build { what, source })?;
        // The cached kernel and ramdisk stay pinned until the ISO holds their bytes.
        drop((kernel, ramdisk));
        tracing::info!(%node, what, bytes = report.size, elapsed_ms = report.elapsed.as_millis() as u64,
            "virtual media built");
        Ok(())
    }
}
