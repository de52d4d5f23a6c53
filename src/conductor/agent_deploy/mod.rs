//! The `direct` deploy interface: the ironic-python-agent writes the image.
//!
//! `deploy` prepares the ramdisk boot (with `ipa-api-url`), sets the boot device and powers the
//! node on; the node then waits in `wait call-back`. Every heartbeat (recorded by
//! `conductor::ramdisk`) calls `continue_deploy`, which reads the progress persisted in the
//! node's [`AgentSession`] — so a restarted or different conductor continues where the last
//! one stopped — and takes the next step ([`deploy_steps`]):
//!
//! 1. first heartbeat: `deploy.get_deploy_steps` (keeps `hardware_manager_version`), then
//!    `deploy.execute_deploy_step` `write_image` (async; `deploy_step_index` = 0);
//! 2. later heartbeats: `GET /v1/commands/`; running → wait; failed → fail the deploy;
//!    succeeded → prepare the instance boot (`standby.get_partition_uuids`, the root UUID into
//!    the boot config for partition images, `image.install_bootloader` when asked), tear the
//!    agent down (`standby.power_off`, then the power interface), boot the instance → `active`.
//!
//! Where the image comes from is [`image`]; config drives are [`configdrive`]; cleaning
//! (automated and manual) is [`clean_steps`].

mod clean_steps;
#[cfg(test)]
mod clean_tests;
mod configdrive;
mod deploy_steps;
mod image;
pub mod plan;
mod rescue;
#[cfg(test)]
mod rescue_tests;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::deploy::{DeployContext, DeployError, DeployInterface, StepOutcome};
use super::task::Task;
use crate::agent::{AgentClient, AgentMetrics, AgentSession, ClientOptions};
use crate::config::{AgentSettings, ImageDownloadSource};
use crate::model::PowerState;
use crate::model::node::mask_secrets;
use plan::DeployPlan;

const NAME: &str = "direct";

/// What the interface needs from the configuration.
#[derive(Debug, Clone)]
pub struct AgentDeployConfig {
    pub settings: AgentSettings,
    /// Priority overrides for automated cleaning.
    pub clean_priorities: crate::conductor::clean_plan::CleanPriorities,
    /// How `erase_devices` erases (handed to the agent in `driver_internal_info`).
    pub erase_params: crate::conductor::clean_plan::EraseParams,
    /// `ipa-api-url` for the ramdisk.
    pub api_url: String,
    /// `http_url` (no trailing slash): where nodes fetch `<http_root>` files.
    pub http_url: String,
    pub http_root: PathBuf,
    /// Fetches and serves instance images (`image_download_source = "http"`).
    pub cache: Arc<crate::images::ImageCache>,
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

    fn failed(
        task: &Task,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> DeployError {
        DeployError::Failed {
            node: task.node.ident(),
            source: source.into(),
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
        let session = AgentSession::read(&task.node);
        let url = session
            .agent_url
            .ok_or_else(|| Self::failed(task, "no agent_url recorded"))?;
        let token = session
            .agent_secret_token
            .ok_or_else(|| Self::failed(task, "no agent token recorded"))?;
        let s = &self.config.settings;
        let opts = ClientOptions {
            command_timeout: s.command_timeout,
            max_attempts: s.max_command_attempts,
            retry_delay: Duration::from_secs(2),
            require_tls: s.require_tls,
        };
        AgentClient::new(
            &url,
            &token,
            session.agent_verify_ca.as_deref(),
            opts,
            Some(self.metrics.clone()),
        )
        .map_err(|e| Self::failed(task, e))
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

    fn ports_for_agent(task: &Task) -> Value {
        Value::Array(
            task.ports
                .iter()
                .map(|p| {
                    json!({"uuid": p.uuid, "address": p.address.as_str(),
                           "pxe_enabled": p.pxe_enabled, "node_uuid": p.node_uuid})
                })
                .collect(),
        )
    }

    fn plan(&self, task: &Task) -> Result<DeployPlan, DeployError> {
        plan::plan(&task.node, &self.config.settings).map_err(Self::invalid)
    }

    /// Saves the node, prepares the ramdisk boot (with `ipa-api-url`), sets the boot device
    /// it asks for and powers the node on.
    async fn boot_agent(
        &self,
        task: &mut Task,
        ctx: &DeployContext<'_>,
    ) -> Result<(), DeployError> {
        task.save().await?;
        let target = ctx
            .boot
            .prepare_ramdisk(task.ctx(), &self.ramdisk_params())
            .await?;
        ctx.boot_into(task, target).await?;
        task.save().await?;
        Ok(())
    }
}

#[async_trait]
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
                image::cache_checksum(task, &plan.image_source)?;
            }
        }
        configdrive::check(task)?;
        Ok(())
    }

    async fn deploy(
        &self,
        task: &mut Task,
        ctx: DeployContext<'_>,
    ) -> Result<StepOutcome, DeployError> {
        let plan = self.plan(task)?;
        ctx.power
            .set_power_state(task.ctx(), PowerState::Off)
            .await?;
        let source = self.image_source(task, &plan).await?;
        self.build_configdrive(task).await?;
        let image_info = plan::image_info(&task.node, &plan, &source, &self.config.settings);
        // A new deploy starts a new agent session: a fresh lookup, token and step list.
        AgentSession::wipe(&mut task.node);
        let dii = &mut task.node.driver_internal_info;
        dii.remove("root_uuid_or_disk_id");
        dii.insert("agent_image_info".into(), image_info);
        dii.insert("is_whole_disk_image".into(), json!(plan.is_whole_disk()));
        self.boot_agent(task, &ctx).await?;
        tracing::info!(node = %task.node.uuid, "deploy ramdisk booting; waiting for the agent");
        Ok(StepOutcome::Wait)
    }

    async fn continue_deploy(
        &self,
        task: &mut Task,
        ctx: DeployContext<'_>,
    ) -> Result<(), DeployError> {
        self.continue_deploy_steps(task, &ctx).await
    }

    async fn prepare_cleaning(
        &self,
        task: &mut Task,
        ctx: DeployContext<'_>,
    ) -> Result<StepOutcome, DeployError> {
        // The steps are the agent's: boot it and plan on its first heartbeat. A new session
        // (fresh lookup and token); the staged steps of a manual clean are kept.
        crate::conductor::verbs::wipe_cleaning_progress(&mut task.node);
        for (key, value) in self.config.erase_params.agent_keys() {
            task.node.driver_internal_info.insert(key.into(), value);
        }
        self.boot_agent(task, &ctx).await?;
        tracing::info!(node = %task.node.uuid, "agent booting for cleaning");
        Ok(StepOutcome::Wait)
    }

    async fn continue_cleaning(
        &self,
        task: &mut Task,
        ctx: DeployContext<'_>,
    ) -> Result<(), DeployError> {
        self.continue_clean_steps(task, &ctx).await
    }

    async fn prepare_rescue(
        &self,
        task: &mut Task,
        ctx: DeployContext<'_>,
    ) -> Result<(), DeployError> {
        self.boot_rescue_agent(task, &ctx).await
    }

    async fn continue_rescue(
        &self,
        task: &mut Task,
        ctx: DeployContext<'_>,
    ) -> Result<(), DeployError> {
        self.finalize_rescue(task, &ctx).await
    }

    async fn tear_down(&self, task: &mut Task, ctx: DeployContext<'_>) -> Result<(), DeployError> {
        ctx.power
            .set_power_state(task.ctx(), PowerState::Off)
            .await?;
        ctx.boot.clean_up_instance(task.ctx()).await?;
        ctx.boot.clean_up_ramdisk(task.ctx()).await?;
        self.remove_agent_image(task).await;
        AgentSession::wipe(&mut task.node);
        task.node.driver_internal_info.remove("agent_image_info");
        Ok(())
    }

    async fn take_over(&self, task: &mut Task, ctx: DeployContext<'_>) -> Result<(), DeployError> {
        ctx.boot.prepare_instance(task.ctx()).await?;
        Ok(())
    }

    fn ramdisk_params(&self) -> crate::driver::RamdiskParams {
        vec![("ipa-api-url".to_string(), self.config.api_url.clone())]
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
