//! The ramdisk boot: a pregenerated agent token, the deploy ISO (and floppy) built and
//! published, the slots emptied and the media inserted — all before the conductor sets the
//! one-time Cd boot and powers the node on. Take over rebuilds the same media with the same
//! token and names and inserts them again.

use crate::agent::AgentSession;
use crate::driver::NodeContext;
use crate::publish::Publisher;

use super::error::VmediaError;
use super::inputs::RamdiskInputs;
use super::record::{MediaKind, MediaRecord};

impl super::VirtualMediaBoot {
    /// A new ramdisk boot: new token, new names. Whatever an earlier preparation of the node
    /// left published goes first.
    pub(super) async fn prepare_ramdisk_media(
        &self,
        ctx: &mut NodeContext,
        inputs: &RamdiskInputs,
        params: &[(String, String)],
    ) -> Result<(), VmediaError> {
        self.unpublish_recorded(ctx).await?;
        let token = AgentSession::pregenerate(&mut ctx.node)?;
        let record = MediaRecord::fresh()?;
        record.write(&mut ctx.node);
        let agent = inputs.agent_params(params, &token);
        self.install_ramdisk_media(ctx, inputs, &agent, record, true)
            .await
    }

    /// Take over of a node whose agent boots (or runs) from virtual media: the same media,
    /// rebuilt here with the token its agent already holds. A node this interface published
    /// nothing for has nothing to regenerate.
    pub(super) async fn take_over_ramdisk_media(
        &self,
        ctx: &mut NodeContext,
        inputs: &RamdiskInputs,
        params: &[(String, String)],
    ) -> Result<(), VmediaError> {
        let record = MediaRecord::read(&ctx.node);
        if record.entry(MediaKind::DeployIso).is_none() {
            tracing::debug!(node = %ctx.node.uuid, "take over: no deploy media was published");
            return Ok(());
        }
        let token = AgentSession::read(&ctx.node)
            .agent_secret_token
            .ok_or(VmediaError::NoToken)?;
        let agent = inputs.agent_params(params, &token);
        self.install_ramdisk_media(ctx, inputs, &agent, record, false)
            .await
    }

    /// Builds (while the BMC is reached and, for a new preparation, emptied), publishes and
    /// inserts. The record in the node names everything published as soon as it is, so a
    /// failure at any later point leaves clean up a complete list.
    async fn install_ramdisk_media(
        &self,
        ctx: &mut NodeContext,
        inputs: &RamdiskInputs,
        agent: &[(String, String)],
        mut record: MediaRecord,
        eject_all: bool,
    ) -> Result<(), VmediaError> {
        let publisher = self.publisher(&inputs.publishing)?;
        let node = ctx.node.uuid;
        let ((_scratch, built), system) = tokio::try_join!(
            self.build_ramdisk_media(node, inputs, agent, &record),
            self.connect_and_eject(&inputs.bmc, eject_all),
        )?;
        let mut urls = Vec::with_capacity(built.len());
        for b in &built {
            let name = record.name(b.kind);
            let published =
                publisher
                    .publish(&b.path, &name)
                    .await
                    .map_err(|source| VmediaError::Publish {
                        what: b.what,
                        source,
                    })?;
            let moved_from = record
                .entry(b.kind)
                .map(|e| e.backend)
                .filter(|old| *old != publisher.backend());
            record.add(b.kind, publisher.backend());
            record.write(&mut ctx.node);
            if let Some(old) = moved_from {
                self.unpublish_from(old, &name).await;
            }
            urls.push(published.url);
        }
        for (b, url) in built.iter().zip(&urls) {
            self.insert(&system, b, url).await?;
        }
        tracing::info!(%node, media = built.len(), backend = %publisher.backend(),
            "virtual media published and inserted");
        Ok(())
    }
}
