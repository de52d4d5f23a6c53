//! The `direct` deploy interface: the ironic-python-agent writes the image.
//!
//! `deploy` prepares the ramdisk boot (with `ipa-api-url`) and powers the node on; the node
//! then waits in `wait call-back`. Every heartbeat (recorded by `conductor::ramdisk`) calls
//! [`AgentDeploy::continue_deploy`], which reads the progress persisted in
//! `driver_internal_info` — so a restarted or different conductor continues where the last
//! one stopped — and takes the next step:
//!
//! 1. first heartbeat: `deploy.get_deploy_steps` (keeps `hardware_manager_version`), then
//!    `deploy.execute_deploy_step` `write_image` (async; `deploy_step_index` = 0);
//! 2. later heartbeats: `GET /v1/commands/`; running → wait; failed → fail the deploy;
//!    succeeded → prepare the instance boot (`standby.get_partition_uuids`, the root UUID into
//!    the boot config for partition images, `image.install_bootloader` when asked), tear the
//!    agent down (`standby.power_off`, then the power interface), boot the instance → `active`.

pub mod plan;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::deploy::{DeployContext, DeployError, DeployInterface, StepOutcome};
use super::ramdisk::wipe_agent_session;
use super::task::{Task, TaskFuture};
use crate::agent::{AgentClient, AgentError, AgentMetrics, ClientOptions, CommandStatus};
use crate::config::{AgentSettings, ImageDownloadSource};
use crate::images::{self, ImageCache, ImageFormat, ImageRequest};
use crate::model::node::mask_secrets;
use crate::model::{Event, PowerState};
use plan::{DeployPlan, ImageSource};

const NAME: &str = "direct";
/// The one in-band deploy step ironboot runs on the agent.
const WRITE_IMAGE: &str = "write_image";

/// What the interface needs from the configuration.
#[derive(Debug, Clone)]
pub struct AgentDeployConfig {
    pub settings: AgentSettings,
    /// `ipa-api-url` for the ramdisk.
    pub api_url: String,
    /// `http_url` (no trailing slash): where nodes fetch `<http_root>` files.
    pub http_url: String,
    pub http_root: PathBuf,
    /// Fetches and serves instance images (`image_download_source = "http"`).
    pub cache: Arc<ImageCache>,
    /// Builds config drives given as JSON.
    pub media: Arc<crate::media::MediaBuilder>,
}

pub struct AgentDeploy {
    config: AgentDeployConfig,
    metrics: AgentMetrics,
}

impl AgentDeploy {
    pub fn new(config: AgentDeployConfig, metrics: AgentMetrics) -> AgentDeploy {
        AgentDeploy { config, metrics }
    }

    fn failed(task: &Task, reason: impl std::fmt::Display) -> DeployError {
        DeployError::Failed {
            node: task.node.ident(),
            reason: reason.to_string(),
        }
    }

    fn invalid(reason: impl std::fmt::Display) -> DeployError {
        DeployError::Invalid {
            interface: NAME,
            reason: reason.to_string(),
        }
    }

    /// A client for the agent recorded by the last heartbeat.
    fn client(&self, task: &Task) -> Result<AgentClient, DeployError> {
        let dii = &task.node.driver_internal_info;
        let get = |k: &str| dii.get(k).and_then(Value::as_str);
        let url = get("agent_url").ok_or_else(|| Self::failed(task, "no agent_url recorded"))?;
        let token = get("agent_secret_token")
            .ok_or_else(|| Self::failed(task, "no agent token recorded"))?;
        let s = &self.config.settings;
        let opts = ClientOptions {
            command_timeout: Duration::from_secs(s.command_timeout),
            max_attempts: s.max_command_attempts,
            retry_delay: Duration::from_secs(2),
            require_tls: s.require_tls,
        };
        AgentClient::new(
            url,
            token,
            get("agent_verify_ca"),
            opts,
            Some(self.metrics.clone()),
        )
        .map_err(|e| Self::failed(task, e))
    }

    /// Where the agent downloads the image and how it checks it. With `http` (the default)
    /// the image goes through the cache and is served by ironboot's own HTTP server.
    async fn image_source(
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
            ImageDownloadSource::Http => {
                let checksum = Self::cache_checksum(task, &plan.image_source)?;
                let expected_format = declared_format
                    .map(|f| {
                        f.parse::<ImageFormat>().map_err(|e| {
                            Self::invalid(format!("instance_info.image_disk_format: {e}"))
                        })
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
                    .map_err(|e| Self::failed(task, format!("cannot cache instance image: {e}")))?;
                let served = cache
                    .place_agent_image(&image, &self.config.http_root, &task.node.uuid)
                    .await
                    .map_err(|e| Self::failed(task, format!("cannot serve instance image: {e}")))?;
                tracing::info!(node = %task.node.uuid, source = %plan.image_source,
                    size = image.size, format = ?served.disk_format, converted = image.converted,
                    "instance image cached and served to the agent");
                Ok(ImageSource {
                    url: format!("{}/{}", self.config.http_url, served.url_path),
                    disk_format: served
                        .disk_format
                        .map(|f| f.to_string())
                        .unwrap_or_else(|| "raw".into()),
                    checksum: plan::Checksum {
                        os_hash_algo: Some(served.os_hash_algo.to_string()),
                        os_hash_value: Some(served.os_hash_value),
                        checksum: None,
                    },
                })
            }
        }
    }

    /// The checksum the cache verifies the download against: required for network sources;
    /// optional for local files (the cache computes a sha256 the agent then verifies).
    fn cache_checksum(task: &Task, source: &str) -> Result<plan::Checksum, DeployError> {
        match plan::declared_checksum(&task.node) {
            Ok(c) => Ok(c),
            Err(_) if !is_http_url(source) => Ok(plan::Checksum::default()),
            Err(e) => Err(Self::invalid(e)),
        }
    }

    /// The `node` the agent receives with step commands (secrets masked).
    fn node_for_agent(task: &Task) -> Value {
        let n = &task.node;
        json!({
            "uuid": n.uuid,
            "name": n.name,
            "driver": n.driver,
            "properties": n.properties,
            "instance_info": mask_secrets(&n.instance_info),
            "driver_info": mask_secrets(&n.driver_info),
            "driver_internal_info": mask_secrets(&n.driver_internal_info),
        })
    }

    async fn ports_for_agent(task: &Task) -> Result<Value, DeployError> {
        let ports = task.ports().await?;
        Ok(Value::Array(
            ports
                .iter()
                .map(|p| {
                    json!({"uuid": p.uuid, "address": p.address.as_str(),
                           "pxe_enabled": p.pxe_enabled, "node_uuid": p.node_uuid})
                })
                .collect(),
        ))
    }

    /// The configdrive for the agent: a gzip+base64 ISO or a URL, passed as given. A JSON
    /// drive has already been built into that form by [`AgentDeploy::build_configdrive`].
    fn configdrive(task: &Task) -> Result<Value, DeployError> {
        Self::check_configdrive(task)?;
        match task.node.instance_info.get("configdrive") {
            Some(Value::String(s)) if !s.is_empty() => Ok(json!(s)),
            Some(Value::Object(_)) => Err(Self::failed(
                task,
                "the JSON config drive was not built before write_image",
            )),
            _ => Ok(Value::Null),
        }
    }

    /// Checks `instance_info.configdrive` without building anything (validation).
    fn check_configdrive(task: &Task) -> Result<(), DeployError> {
        match task.node.instance_info.get("configdrive") {
            None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
            Some(Value::Object(spec)) => crate::media::configdrive::files(spec, &task.node.uuid)
                .map(|_| ())
                .map_err(Self::invalid),
            Some(other) => Err(Self::invalid(format!(
                "configdrive must be a string (gzip+base64 ISO or URL) or an object, not {other}"
            ))),
        }
    }

    /// Turns a JSON config drive (`meta_data`, `user_data`, `network_data`, `vendor_data`)
    /// into a gzip+base64 `config-2` ISO in `instance_info.configdrive`, as Ironic does.
    async fn build_configdrive(&self, task: &mut Task) -> Result<(), DeployError> {
        let Some(Value::Object(spec)) = task.node.instance_info.get("configdrive").cloned() else {
            return Ok(());
        };
        let builder = self.config.media.clone();
        let uuid = task.node.uuid;
        let encoded = tokio::task::spawn_blocking(move || {
            crate::media::configdrive::build_encoded(&builder, &spec, &uuid)
        })
        .await
        .map_err(|e| Self::failed(task, format!("config drive build was cancelled: {e}")))?
        .map_err(|e| Self::failed(task, format!("cannot build the config drive: {e}")))?;
        tracing::info!(node = %uuid, bytes = encoded.len(), "config drive built from JSON");
        task.node
            .instance_info
            .insert("configdrive".into(), json!(encoded));
        Ok(())
    }

    /// Sends `write_image` (first heartbeat, or an agent that came back without it).
    async fn start_write_image(
        &self,
        task: &mut Task,
        client: &AgentClient,
    ) -> Result<(), DeployError> {
        let image_info = task
            .node
            .driver_internal_info
            .get("agent_image_info")
            .cloned()
            .ok_or_else(|| Self::failed(task, "no image prepared (agent_image_info missing)"))?;
        let configdrive = Self::configdrive(task)?;
        let params = json!({
            "step": {"interface": "deploy", "step": WRITE_IMAGE, "priority": 80,
                     "reboot_requested": false, "abortable": false,
                     "args": {"image_info": image_info, "configdrive": configdrive}},
            "node": Self::node_for_agent(task),
            "ports": Self::ports_for_agent(task).await?,
            "deploy_version": task.node.driver_internal_info.get("hardware_manager_version").cloned().unwrap_or(Value::Null),
        });
        task.process_event(Event::Resume).await?;
        let sent = client
            .execute("deploy.execute_deploy_step", params, false)
            .await;
        match sent {
            Ok(r) if r.command_status == CommandStatus::Failed => {
                return Err(Self::failed(
                    task,
                    format!("write_image refused by the agent: {}", r.error_text()),
                ));
            }
            Ok(_) => {}
            Err(AgentError::Busy { .. }) => {
                tracing::info!(node = %task.node.uuid, "agent busy; write_image retried on the next heartbeat");
                task.process_event(Event::Wait).await?;
                return Ok(());
            }
            Err(e) => return Err(Self::failed(task, e)),
        }
        task.node
            .driver_internal_info
            .insert("deploy_step_index".into(), json!(0));
        task.node
            .driver_internal_info
            .insert("deploy_steps".into(), json!([WRITE_IMAGE]));
        tracing::info!(node = %task.node.uuid, agent = client.url(), "write_image started on the agent");
        task.process_event(Event::Wait).await?;
        Ok(())
    }

    /// `standby.get_partition_uuids`, the root UUID recorded, the boot loader installed when
    /// asked, and the instance boot prepared through the boot interface.
    async fn prepare_instance_boot(
        &self,
        task: &mut Task,
        ctx: &DeployContext<'_>,
        client: &AgentClient,
        plan: &DeployPlan,
    ) -> Result<(), DeployError> {
        let r = client
            .execute("standby.get_partition_uuids", json!({}), true)
            .await
            .map_err(|e| Self::failed(task, e))?;
        if r.command_status != CommandStatus::Succeeded {
            return Err(Self::failed(
                task,
                format!("get_partition_uuids failed: {}", r.error_text()),
            ));
        }
        let result = r.command_result.unwrap_or(Value::Null);
        let field = |k: &str| {
            result
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(String::from)
        };
        let root = field("root uuid");
        let efi = field("efi system partition uuid");
        let prep = field("PReP Boot partition uuid");
        if !plan.is_whole_disk() && root.is_none() {
            return Err(Self::failed(
                task,
                format!(
                    "the agent wrote the partition image but reported no root partition UUID \
                     (get_partition_uuids returned {result}); the ramdisk needs a working udev \
                     database (udevd running) for lsblk to read filesystem UUIDs, so the boot \
                     config cannot name root=UUID=...; fix the ramdisk or use a whole-disk image"
                ),
            ));
        }
        let dii = &mut task.node.driver_internal_info;
        dii.insert("is_whole_disk_image".into(), json!(plan.is_whole_disk()));
        match &root {
            Some(r) => {
                dii.insert("root_uuid_or_disk_id".into(), json!(r));
            }
            None => {
                dii.remove("root_uuid_or_disk_id");
            }
        }
        task.save().await?;
        tracing::info!(node = %task.node.uuid, root_uuid = ?root, efi = ?efi, "partition UUIDs read from the agent");
        if plan.install_bootloader {
            let params = json!({
                "root_uuid": root, "efi_system_part_uuid": efi, "prep_boot_part_uuid": prep,
                "target_boot_mode": plan.boot_mode.as_str(),
            });
            let s = &self.config.settings;
            let started = client
                .execute("image.install_bootloader", params, false)
                .await
                .map_err(|e| Self::failed(task, e))?;
            let done = if started.command_status == CommandStatus::Running {
                client
                    .wait_for(
                        "install_bootloader",
                        Duration::from_secs(s.command_wait_interval),
                        s.command_wait_attempts,
                    )
                    .await
                    .map_err(|e| Self::failed(task, e))?
            } else {
                started
            };
            if done.command_status != CommandStatus::Succeeded {
                return Err(Self::failed(
                    task,
                    format!("installing the boot loader failed: {}", done.error_text()),
                ));
            }
            tracing::info!(node = %task.node.uuid, "boot loader installed by the agent");
        }
        ctx.boot.prepare_instance(task).await?;
        Ok(())
    }

    /// `standby.power_off`, then the power interface until the node is off (hard off last).
    async fn tear_down_agent(
        &self,
        task: &mut Task,
        ctx: &DeployContext<'_>,
        client: &AgentClient,
    ) -> Result<(), DeployError> {
        if let Err(e) = client.execute("standby.power_off", json!({}), false).await {
            tracing::warn!(node = %task.node.uuid, error = %e, "soft power off through the agent failed; powering off out of band");
        }
        let s = &self.config.settings;
        for _ in 0..s.post_deploy_get_power_state_retries {
            tokio::time::sleep(Duration::from_secs(
                s.post_deploy_get_power_state_retry_interval,
            ))
            .await;
            match ctx.power.get_power_state(task).await {
                Ok(PowerState::Off) => {
                    task.node.power_state = Some(PowerState::Off);
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(node = %task.node.uuid, error = %e, "cannot read the power state")
                }
            }
        }
        tracing::info!(node = %task.node.uuid, "node still on after standby.power_off; hard power off");
        ctx.power.set_power_state(task, PowerState::Off).await?;
        Ok(())
    }

    /// Saves the node, prepares the ramdisk boot (with `ipa-api-url`) and powers it on.
    async fn boot_agent(
        &self,
        task: &mut Task,
        ctx: &DeployContext<'_>,
    ) -> Result<(), DeployError> {
        task.save().await?;
        let params = [("ipa-api-url".to_string(), self.config.api_url.clone())];
        ctx.boot.prepare_ramdisk(task, &params).await?;
        ctx.power.set_power_state(task, PowerState::On).await?;
        task.save().await?;
        Ok(())
    }

    fn plan(&self, task: &Task) -> Result<DeployPlan, DeployError> {
        plan::plan(&task.node, &self.config.settings).map_err(Self::invalid)
    }

    /// The deploy after the agent finished `write_image`.
    async fn finish(
        &self,
        task: &mut Task,
        ctx: &DeployContext<'_>,
        client: &AgentClient,
    ) -> Result<(), DeployError> {
        let plan = self.plan(task)?;
        task.process_event(Event::Resume).await?;
        self.prepare_instance_boot(task, ctx, client, &plan).await?;
        self.remove_agent_image(task).await;
        self.tear_down_agent(task, ctx, client).await?;
        ctx.power.set_power_state(task, PowerState::On).await?;
        wipe_agent_session(&mut task.node);
        task.node.driver_internal_info.remove("agent_image_info");
        task.process_event(Event::Done).await?;
        tracing::info!(node = %task.node.uuid, "deploy finished; instance booting");
        Ok(())
    }

    /// Removes the served copy of the instance image (the agent has written it).
    async fn remove_agent_image(&self, task: &Task) {
        let cache = &self.config.cache;
        if let Err(e) = cache
            .remove_agent_image(&self.config.http_root, &task.node.uuid)
            .await
        {
            tracing::warn!(node = %task.node.uuid, error = %e, "cannot remove served agent image");
        }
    }

    async fn continue_inner(
        &self,
        task: &mut Task,
        ctx: &DeployContext<'_>,
    ) -> Result<(), DeployError> {
        let client = self.client(task)?;
        if !task
            .node
            .driver_internal_info
            .contains_key("hardware_manager_version")
        {
            let params = json!({"node": Self::node_for_agent(task), "ports": Self::ports_for_agent(task).await?});
            let r = match client
                .execute("deploy.get_deploy_steps", params, true)
                .await
            {
                Err(AgentError::Busy { .. }) => return Ok(()),
                other => other.map_err(|e| Self::failed(task, e))?,
            };
            if r.command_status != CommandStatus::Succeeded {
                return Err(Self::failed(
                    task,
                    format!("get_deploy_steps failed: {}", r.error_text()),
                ));
            }
            let result = r.command_result.unwrap_or(Value::Null);
            let dii = &mut task.node.driver_internal_info;
            dii.insert(
                "hardware_manager_version".into(),
                result
                    .get("hardware_manager_version")
                    .cloned()
                    .unwrap_or(Value::Null),
            );
            dii.insert(
                "agent_cached_deploy_steps".into(),
                result.get("deploy_steps").cloned().unwrap_or(Value::Null),
            );
            task.save().await?;
        }
        if task
            .node
            .driver_internal_info
            .get("deploy_step_index")
            .is_none()
        {
            return self.start_write_image(task, &client).await;
        }
        let commands = match client.list_commands().await {
            Err(AgentError::Busy { .. }) => return Ok(()),
            other => other.map_err(|e| Self::failed(task, e))?,
        };
        let Some(last) = commands.last() else {
            tracing::warn!(node = %task.node.uuid, "agent lists no commands (restarted?); sending write_image again");
            return self.start_write_image(task, &client).await;
        };
        if last.command_name == "get_deploy_steps" {
            tracing::warn!(node = %task.node.uuid, "agent came back without write_image (rebooted?); sending it again");
            return self.start_write_image(task, &client).await;
        }
        if last.command_name != "execute_deploy_step" {
            return Err(Self::failed(
                task,
                format!(
                    "the agent's last command is {:?}, not the write_image step ironboot sent",
                    last.command_name
                ),
            ));
        }
        match &last.command_status {
            CommandStatus::Running => {
                tracing::debug!(node = %task.node.uuid, "write_image still running");
                Ok(())
            }
            CommandStatus::Failed => Err(Self::failed(
                task,
                format!("write_image failed on the agent: {}", last.error_text()),
            )),
            CommandStatus::VersionMismatch(s) => Err(Self::failed(
                task,
                format!(
                    "the agent's hardware managers changed since the steps were listed ({s}); deploy again"
                ),
            )),
            CommandStatus::Other(s) => Err(Self::failed(
                task,
                format!("write_image ended in unknown status {s:?}"),
            )),
            CommandStatus::Succeeded => {
                let step = last
                    .command_result
                    .as_ref()
                    .and_then(|r| r.get("deploy_step"))
                    .and_then(|s| s.get("step"))
                    .and_then(Value::as_str);
                if step != Some(WRITE_IMAGE) {
                    return Err(Self::failed(
                        task,
                        format!("the agent finished step {step:?}, expected {WRITE_IMAGE}"),
                    ));
                }
                tracing::info!(node = %task.node.uuid, "write_image succeeded on the agent");
                self.finish(task, ctx, &client).await
            }
        }
    }
}

/// The clean step run through the agent when `[agent] erase_metadata_on_undeploy` is set.
const ERASE_METADATA: &str = "erase_devices_metadata";

impl AgentDeploy {
    /// Cleaning on a heartbeat: list the clean steps, run `erase_devices_metadata`, and when
    /// the agent reports it done, power the node off and drop the ramdisk boot.
    async fn continue_cleaning_inner(
        &self,
        task: &mut Task,
        ctx: &DeployContext<'_>,
    ) -> Result<(), DeployError> {
        let client = self.client(task)?;
        if !task
            .node
            .driver_internal_info
            .contains_key("hardware_manager_version")
        {
            let params = json!({"node": Self::node_for_agent(task), "ports": Self::ports_for_agent(task).await?});
            let r = match client.execute("clean.get_clean_steps", params, true).await {
                Err(AgentError::Busy { .. }) => return Ok(()),
                other => other.map_err(|e| Self::failed(task, e))?,
            };
            let version = r
                .command_result
                .as_ref()
                .and_then(|r| r.get("hardware_manager_version"))
                .cloned()
                .unwrap_or(Value::Null);
            task.node
                .driver_internal_info
                .insert("hardware_manager_version".into(), version);
            task.save().await?;
        }
        if task
            .node
            .driver_internal_info
            .get("clean_step_index")
            .is_none()
        {
            let params = json!({
                "step": {"step": ERASE_METADATA, "priority": 99, "interface": "deploy",
                         "reboot_requested": false, "abortable": true},
                "node": Self::node_for_agent(task),
                "ports": Self::ports_for_agent(task).await?,
                "clean_version": task.node.driver_internal_info.get("hardware_manager_version").cloned().unwrap_or(Value::Null),
            });
            match client
                .execute("clean.execute_clean_step", params, false)
                .await
            {
                Err(AgentError::Busy { .. }) => return Ok(()),
                Err(e) => return Err(Self::failed(task, e)),
                Ok(r) if r.command_status == CommandStatus::Failed => {
                    return Err(Self::failed(
                        task,
                        format!("{ERASE_METADATA} refused: {}", r.error_text()),
                    ));
                }
                Ok(_) => {}
            }
            task.node
                .driver_internal_info
                .insert("clean_step_index".into(), json!(0));
            task.save().await?;
            tracing::info!(node = %task.node.uuid, "disk metadata erase started on the agent");
            return Ok(());
        }
        let commands = client
            .list_commands()
            .await
            .map_err(|e| Self::failed(task, e))?;
        let Some(last) = commands
            .iter()
            .rev()
            .find(|c| c.command_name == "execute_clean_step")
        else {
            return Err(Self::failed(
                task,
                "the agent lists no clean step although one was sent (restarted?)",
            ));
        };
        match &last.command_status {
            CommandStatus::Running => Ok(()),
            CommandStatus::Succeeded => {
                task.process_event(Event::Resume).await?;
                ctx.power.set_power_state(task, PowerState::Off).await?;
                ctx.boot.clean_up_ramdisk(task).await?;
                wipe_agent_session(&mut task.node);
                task.process_event(Event::Done).await?;
                tracing::info!(node = %task.node.uuid, "disk metadata erased; node available");
                Ok(())
            }
            _ => Err(Self::failed(
                task,
                format!(
                    "{ERASE_METADATA} failed on the agent: {}",
                    last.error_text()
                ),
            )),
        }
    }
}

impl DeployInterface for AgentDeploy {
    fn name(&self) -> &'static str {
        NAME
    }

    fn validate(&self, task: &Task) -> Result<(), DeployError> {
        let plan = self.plan(task)?;
        match self.config.settings.image_download_source {
            ImageDownloadSource::Direct => {
                plan::declared_checksum(&task.node).map_err(Self::invalid)?;
            }
            ImageDownloadSource::Http => {
                Self::cache_checksum(task, &plan.image_source)?;
            }
        }
        Self::check_configdrive(task)?;
        Ok(())
    }

    fn deploy<'a>(
        &'a self,
        task: &'a mut Task,
        ctx: DeployContext<'a>,
    ) -> TaskFuture<'a, StepOutcome, DeployError> {
        Box::pin(async move {
            let plan = self.plan(task)?;
            ctx.power.set_power_state(task, PowerState::Off).await?;
            let source = self.image_source(task, &plan).await?;
            self.build_configdrive(task).await?;
            let image_info = plan::image_info(&task.node, &plan, &source, &self.config.settings);
            // A new deploy starts a new agent session: a fresh lookup, token and step list.
            wipe_agent_session(&mut task.node);
            let dii = &mut task.node.driver_internal_info;
            dii.remove("root_uuid_or_disk_id");
            dii.insert("agent_image_info".into(), image_info);
            dii.insert("is_whole_disk_image".into(), json!(plan.is_whole_disk()));
            self.boot_agent(task, &ctx).await?;
            tracing::info!(node = %task.node.uuid, "deploy ramdisk booting; waiting for the agent");
            Ok(StepOutcome::Wait)
        })
    }

    fn continue_deploy<'a>(
        &'a self,
        task: &'a mut Task,
        ctx: DeployContext<'a>,
    ) -> TaskFuture<'a, (), DeployError> {
        Box::pin(async move { self.continue_inner(task, &ctx).await })
    }

    fn prepare_cleaning<'a>(
        &'a self,
        task: &'a mut Task,
        ctx: DeployContext<'a>,
    ) -> TaskFuture<'a, StepOutcome, DeployError> {
        Box::pin(async move {
            if !self.config.settings.erase_metadata_on_undeploy {
                return Ok(StepOutcome::Done);
            }
            wipe_agent_session(&mut task.node);
            self.boot_agent(task, &ctx).await?;
            tracing::info!(node = %task.node.uuid, "agent booting to erase disk metadata");
            Ok(StepOutcome::Wait)
        })
    }

    fn continue_cleaning<'a>(
        &'a self,
        task: &'a mut Task,
        ctx: DeployContext<'a>,
    ) -> TaskFuture<'a, (), DeployError> {
        Box::pin(async move { self.continue_cleaning_inner(task, &ctx).await })
    }

    fn tear_down<'a>(
        &'a self,
        task: &'a mut Task,
        ctx: DeployContext<'a>,
    ) -> TaskFuture<'a, (), DeployError> {
        Box::pin(async move {
            ctx.power.set_power_state(task, PowerState::Off).await?;
            ctx.boot.clean_up_instance(task).await?;
            ctx.boot.clean_up_ramdisk(task).await?;
            self.remove_agent_image(task).await;
            wipe_agent_session(&mut task.node);
            task.node.driver_internal_info.remove("agent_image_info");
            Ok(())
        })
    }

    fn take_over<'a>(
        &'a self,
        task: &'a mut Task,
        ctx: DeployContext<'a>,
    ) -> TaskFuture<'a, (), DeployError> {
        Box::pin(async move {
            ctx.boot.prepare_instance(task).await?;
            Ok(())
        })
    }
}

/// Registers `direct` with the conductor's interfaces.
pub fn register(
    interfaces: &mut super::Interfaces,
    config: AgentDeployConfig,
    metrics: AgentMetrics,
) {
    interfaces.add_deploy(Arc::new(AgentDeploy::new(config, metrics)));
}

fn is_http_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}
