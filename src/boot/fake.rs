//! The `fake` boot interface: records every call in the node, writes no files.

use async_trait::async_trait;

use super::{BootError, BootInterface, RamdiskParams};
use crate::driver::{BootDevice, BootTarget, NodeContext};

#[derive(Debug, Default)]
pub struct FakeBoot;

#[async_trait]
impl BootInterface for FakeBoot {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn validate(&self, _ctx: &NodeContext) -> Result<(), BootError> {
        Ok(())
    }

    async fn prepare_ramdisk(
        &self,
        ctx: &mut NodeContext,
        params: &RamdiskParams,
    ) -> Result<BootTarget, BootError> {
        let params: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        ctx.record_fake_call(&format!("boot.prepare_ramdisk:{}", params.join(" ")));
        Ok(BootTarget::once(BootDevice::Pxe))
    }

    async fn clean_up_ramdisk(&self, ctx: &mut NodeContext) -> Result<(), BootError> {
        ctx.record_fake_call("boot.clean_up_ramdisk");
        Ok(())
    }

    async fn prepare_instance(&self, ctx: &mut NodeContext) -> Result<BootTarget, BootError> {
        // Record what a real boot config would be switched to: `root=UUID=` for a partition
        // image, the disk id for a whole-disk one (when a deploy reported them).
        let dii = &ctx.node.driver_internal_info;
        let whole_disk = dii
            .get("is_whole_disk_image")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(true);
        let call = match dii
            .get("root_uuid_or_disk_id")
            .and_then(serde_json::Value::as_str)
        {
            Some(id) if whole_disk => format!("boot.prepare_instance:disk={id}"),
            Some(id) => format!("boot.prepare_instance:root=UUID={id}"),
            None => "boot.prepare_instance".to_string(),
        };
        ctx.record_fake_call(&call);
        Ok(BootTarget::persistent(BootDevice::Disk))
    }

    async fn clean_up_instance(&self, ctx: &mut NodeContext) -> Result<(), BootError> {
        ctx.record_fake_call("boot.clean_up_instance");
        Ok(())
    }

    async fn take_over(
        &self,
        ctx: &mut NodeContext,
        params: &RamdiskParams,
    ) -> Result<(), BootError> {
        let params: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        ctx.record_fake_call(&format!("boot.take_over:{}", params.join(" ")));
        Ok(())
    }
}
