//! The `fake` boot interface: records every call in the node, writes no files.

use super::{BootError, BootInterface};
use crate::conductor::task::{Task, TaskFuture};

#[derive(Debug, Default)]
pub struct FakeBoot;

impl BootInterface for FakeBoot {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn validate(&self, _task: &Task) -> Result<(), BootError> {
        Ok(())
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
            task.record_fake_call("boot.prepare_instance");
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
