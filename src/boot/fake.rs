//! The `fake` boot interface: records every call in the node, writes no files.

use super::{BootError, BootInterface};
use crate::conductor::task::{Task, TaskFuture};

#[derive(Debug, Default)]
pub struct FakeBoot;

impl BootInterface for FakeBoot {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn validate<'a>(&'a self, _task: &'a Task) -> TaskFuture<'a, (), BootError> {
        Box::pin(async { Ok(()) })
    }

    fn prepare_ramdisk<'a>(
        &'a self,
        task: &'a mut Task,
        ramdisk_params: &'a [(String, String)],
    ) -> TaskFuture<'a, (), BootError> {
        Box::pin(async move {
            let params: Vec<String> = ramdisk_params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            task.record_fake_call(&format!("boot.prepare_ramdisk:{}", params.join(" ")));
            Ok(())
        })
    }

    fn clean_up_ramdisk<'a>(&'a self, task: &'a mut Task) -> TaskFuture<'a, (), BootError> {
        Box::pin(async move {
            task.record_fake_call("boot.clean_up_ramdisk");
            Ok(())
        })
    }

    fn prepare_instance<'a>(&'a self, task: &'a mut Task) -> TaskFuture<'a, (), BootError> {
        Box::pin(async move {
            // Record what a real boot config would be switched to: `root=UUID=` for a
            // partition image, the disk id for a whole-disk one (when a deploy reported them).
            let dii = &task.node.driver_internal_info;
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
            task.record_fake_call(&call);
            Ok(())
        })
    }

    fn clean_up_instance<'a>(&'a self, task: &'a mut Task) -> TaskFuture<'a, (), BootError> {
        Box::pin(async move {
            task.record_fake_call("boot.clean_up_instance");
            Ok(())
        })
    }

    fn take_over<'a>(&'a self, task: &'a mut Task) -> TaskFuture<'a, (), BootError> {
        Box::pin(async move {
            task.record_fake_call("boot.take_over");
            Ok(())
        })
    }
}
