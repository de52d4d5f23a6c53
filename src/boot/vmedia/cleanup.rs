//! Releasing what a node holds: every slot ejected, every medium in its record unpublished
//! (from the backend it went to, local or Swift), the record emptied. Each step is tried
//! whatever the others did; the first failure is reported.

use crate::bmc::redfish::DriverInfo;
use crate::driver::NodeContext;
use crate::publish::{Backend, ObjectName, Publisher, SelectedPublisher};

use super::attach::eject_everything;
use super::error::VmediaError;
use super::inputs::Publishing;
use super::record::MediaRecord;

impl super::VirtualMediaBoot {
    /// The publisher of the node's media.
    pub(super) fn publisher(&self, p: &Publishing) -> Result<SelectedPublisher, VmediaError> {
        self.config
            .publishers
            .select_for_node(p.backend.as_deref(), p.root_url.as_deref())
            .map_err(|source| VmediaError::Publish {
                what: "the node's media (choosing the publisher)",
                source,
            })
    }

    /// Ejects everything and unpublishes everything the node's record lists.
    pub(super) async fn release(&self, ctx: &mut NodeContext) -> Result<(), VmediaError> {
        let ejected = match DriverInfo::parse(&ctx.node.driver_info) {
            Ok(info) => match self.connect(&info).await {
                Ok(system) => eject_everything(&system).await,
                Err(e) => Err(e),
            },
            // Nothing can have been inserted through a BMC address that does not parse.
            Err(_) => Ok(()),
        };
        let unpublished = self.unpublish_recorded(ctx).await;
        ejected.and(unpublished)
    }

    /// Unpublishes every medium the node's record lists; the record keeps what could not be
    /// removed (so a later clean up tries again).
    pub(super) async fn unpublish_recorded(
        &self,
        ctx: &mut NodeContext,
    ) -> Result<(), VmediaError> {
        let mut record = MediaRecord::read(&ctx.node);
        let mut first_error = None;
        for entry in record.published.clone() {
            let name = record.name(entry.kind);
            match self.unpublish(entry.backend, &name).await {
                Ok(()) => record.remove(entry.kind),
                Err(e) => {
                    tracing::warn!(node = %ctx.node.uuid, %name, error = %e, "cannot unpublish");
                    first_error.get_or_insert(e);
                }
            }
        }
        if record.published.is_empty() {
            record = MediaRecord::default();
        }
        record.write(&mut ctx.node);
        first_error.map_or(Ok(()), Err)
    }

    async fn unpublish(&self, backend: Backend, name: &ObjectName) -> Result<(), VmediaError> {
        let unpublish_error = |source| VmediaError::Unpublish {
            name: name.to_string(),
            source,
        };
        let publisher = self
            .config
            .publishers
            .select(Some(backend.as_str()))
            .map_err(unpublish_error)?;
        publisher.unpublish(name).await.map_err(unpublish_error)
    }

    /// Removes `name` from a backend the node no longer publishes to (its media moved when a
    /// conductor with another publisher took it over); a failure is only logged, the medium
    /// now lives elsewhere.
    pub(super) async fn unpublish_from(&self, backend: Backend, name: &ObjectName) {
        if let Err(e) = self.unpublish(backend, name).await {
            tracing::warn!(%name, %backend, error = %e, "cannot remove media from the previous publisher");
        }
    }
}
