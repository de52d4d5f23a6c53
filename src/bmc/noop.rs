//! The `noop` management interface of the `manual-management` hardware type: for nodes whose
//! boot order the operator sets by hand ("network first, then disk") and keeps that way.
//!
//! As in Ironic, it accepts the two devices a deploy asks for (`pxe` for the deploy ramdisk,
//! `disk` for the instance) and only logs the request: with network first, a node boots the
//! ramdisk while ironboot serves it a deploy config and falls through to its disk once the
//! node is active (ironboot then serves it nothing, or a config that boots the disk). It
//! reports `pxe`, persistent: what the operator was asked to configure.

use async_trait::async_trait;

use super::{ManagementError, ManagementInterface};
use crate::driver::{BootDevice, BootTarget, NodeContext};

const NAME: &str = "noop";
const SUPPORTED: [BootDevice; 2] = [BootDevice::Pxe, BootDevice::Disk];

#[derive(Debug, Default)]
pub struct NoopManagement;

#[async_trait]
impl ManagementInterface for NoopManagement {
    fn name(&self) -> &'static str {
        NAME
    }

    fn validate(&self, _ctx: &NodeContext) -> Result<(), ManagementError> {
        Ok(())
    }

    fn supported_boot_devices(&self, _ctx: &NodeContext) -> Vec<BootDevice> {
        SUPPORTED.to_vec()
    }

    async fn get_boot_device(
        &self,
        _ctx: &mut NodeContext,
    ) -> Result<Option<BootTarget>, ManagementError> {
        Ok(Some(BootTarget::persistent(BootDevice::Pxe)))
    }

    async fn set_boot_device(
        &self,
        ctx: &mut NodeContext,
        target: BootTarget,
    ) -> Result<(), ManagementError> {
        if !SUPPORTED.contains(&target.device) {
            return Err(ManagementError::UnsupportedDevice {
                interface: NAME,
                node: ctx.node.ident(),
                device: target.device,
                supported: SUPPORTED.map(BootDevice::as_str).join(", "),
            });
        }
        tracing::info!(
            node = %ctx.node.uuid,
            device = %target.device,
            persistent = target.persistent,
            "manual management: boot device not set by ironboot; the node must boot from the network first, then disk"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HardwareType, Node};

    fn ctx() -> NodeContext {
        let hw = HardwareType::find("manual-management").unwrap();
        NodeContext::new(
            Node::new(uuid::Uuid::new_v4(), hw, crate::model::now()),
            vec![],
        )
    }

    #[tokio::test]
    async fn accepts_what_a_deploy_asks_for_and_reports_network_first() {
        let mut ctx = ctx();
        let before = ctx.node.clone();
        NoopManagement
            .set_boot_device(&mut ctx, BootTarget::once(BootDevice::Pxe))
            .await
            .unwrap();
        NoopManagement
            .set_boot_device(&mut ctx, BootTarget::persistent(BootDevice::Disk))
            .await
            .unwrap();
        assert_eq!(ctx.node, before, "nothing is recorded in the node");
        assert_eq!(
            NoopManagement.get_boot_device(&mut ctx).await.unwrap(),
            Some(BootTarget::persistent(BootDevice::Pxe))
        );
        let err = NoopManagement
            .set_boot_device(&mut ctx, BootTarget::once(BootDevice::Cdrom))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cdrom") && err.contains("supported: pxe, disk"),
            "{err}"
        );
        NoopManagement.validate(&ctx).unwrap();
    }
}
