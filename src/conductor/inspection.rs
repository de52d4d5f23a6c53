//! In-band inspection through the agent (`inspect_interface = agent`).
//!
//! `inspect` boots the agent's ramdisk with `ipa-inspection-callback-url` → `inspect wait`. The
//! agent posts what it found to `POST /v1/continue_inspection` before it looks its node up
//! ([`Conductor::continue_inspection`]): the node moves to `inspecting` and, in the background,
//! its inventory is stored (`GET /v1/nodes/{id}/inventory`), `properties` get `cpu_arch`,
//! `memory_mb` and `local_gb`, ports are created for the MACs the node does not have (PXE-enabled
//! for the NIC it booted from, when the agent says which), the ramdisk boot is removed and the
//! node powered off → `manageable`.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::deploy::DeployError;
use super::task::TaskError;
use super::{Conductor, ConductorError, Task};
use crate::agent::{AgentSession, token};
use crate::model::{Event, MacAddress, Node, Port, PowerState, ProvisionState};
use crate::store::{InventoryRecord, NodeIdent, StoreError};

/// The inspect interface that boots the agent.
pub const AGENT: &str = "agent";
/// Where the agent posts its inventory, below the API's public URL.
pub const CALLBACK_PATH: &str = "/v1/continue_inspection";

const GIB: u64 = 1 << 30;
/// The smallest disk the agent (and Ironic) consider for the root disk.
const MIN_ROOT_DISK: u64 = 4 * GIB;

/// What an agent posted to the inspection callback, checked by the API.
#[derive(Debug, Clone, Default)]
pub struct InspectionReport {
    /// The valid MACs of the inventory's interfaces.
    pub addresses: Vec<MacAddress>,
    /// `?node_uuid=` (API 1.84 and later).
    pub node_uuid: Option<Uuid>,
    /// The agent token, when the agent sent one (IPA 13 sends none: it posts before lookup).
    pub agent_token: Option<String>,
    /// The body without the token: `inventory`, and the plugin data.
    pub data: Map<String, Value>,
}

/// Why inspection failed (becomes `last_error`, the node `inspect failed`).
#[derive(Debug, thiserror::Error)]
pub enum InspectionError {
    #[error("Ramdisk reported error: {0}")]
    Ramdisk(String),
    #[error("the inventory has no cpu.architecture")]
    NoArchitecture,
    #[error(transparent)]
    Conductor(#[from] ConductorError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Task(#[from] TaskError),
}

impl Conductor {
    /// The inspection agent's parameters: where to look up, and where to post the inventory
    /// (also what take over rebuilds a waiting node's ramdisk boot with).
    pub(super) fn inspection_ramdisk_params(&self) -> crate::driver::RamdiskParams {
        let api = self.api_public_url().trim_end_matches('/').to_string();
        vec![
            ("ipa-api-url".to_string(), api.clone()),
            (
                "ipa-inspection-callback-url".to_string(),
                format!("{api}{CALLBACK_PATH}"),
            ),
        ]
    }

    /// Boots the agent for inspection (the node is `inspecting`) → `inspect wait`.
    pub(super) async fn boot_inspection_ramdisk(
        &self,
        task: &mut Task,
    ) -> Result<(), InspectionError> {
        let ifaces = self.interfaces().for_node(&task.node)?;
        // A new agent: a fresh lookup and token.
        AgentSession::wipe(&mut task.node);
        task.save().await?;
        let params = self.inspection_ramdisk_params();
        let target = ifaces
            .boot
            .prepare_ramdisk(task.ctx(), &params)
            .await
            .map_err(DeployError::from)?;
        ifaces.deploy_context().boot_into(task, target).await?;
        task.process_event(Event::Wait).await?;
        tracing::info!(node = %task.node.uuid, "agent booting for inspection");
        Ok(())
    }

    /// `POST /v1/continue_inspection`: the node in `inspect wait` owning one of the report's
    /// addresses (or its `node_uuid`) moves to `inspecting` and the report is processed in the
    /// background. Any other node, or none, is the lookup's "not found"; a report carrying an
    /// agent token that is not the node's is refused with the heartbeat's words, the node
    /// unchanged. With `issue_token` (API 1.84 and later) the answer carries the node and the
    /// agent token as a lookup's would: the real one the first time, `******` afterwards.
    pub async fn continue_inspection(
        self: &Arc<Self>,
        report: InspectionReport,
        issue_token: bool,
    ) -> Result<(Node, Option<String>), ConductorError> {
        let node = self
            .node_of_agent(&report.addresses, report.node_uuid)
            .await?;
        if node.provision_state != ProvisionState::InspectWait {
            tracing::debug!(node = %node.uuid, state = %node.provision_state, "inventory refused: not waiting for inspection");
            return Err(super::ramdisk::not_found());
        }
        let mut task = self.reserve(&NodeIdent::Uuid(node.uuid)).await?;
        let taken = async {
            if task.node.provision_state != ProvisionState::InspectWait {
                return Err(super::ramdisk::not_found());
            }
            let mut session = AgentSession::read(&task.node);
            if let Some(given) = report.agent_token.as_deref()
                && !token::matches(session.agent_secret_token.as_deref(), Some(given))
            {
                tracing::debug!(node = %task.node.uuid, "invalid agent token in an inspection report");
                return Err(super::ramdisk::invalid_token());
            }
            let answer = match (&session.agent_secret_token, issue_token) {
                (_, false) => None,
                (Some(_), true) => Some(token::MASK.to_string()),
                (None, true) => {
                    let t =
                        token::generate().map_err(|e| ConductorError::Conflict(e.to_string()))?;
                    session.agent_secret_token = Some(t.clone());
                    session.write(&mut task.node);
                    Some(t)
                }
            };
            task.process_event(Event::Resume).await?;
            Ok(answer)
        }
        .await;
        let answer = match taken {
            Ok(a) => a,
            Err(e) => {
                self.release(task).await;
                return Err(e);
            }
        };
        let node = task.node.clone();
        let data = report.data;
        self.spawn_operation("inspection", task, move |c, mut task| async move {
            if let Err(e) = c.finish_inspection(&mut task, data).await {
                c.fail_node(
                    &mut task,
                    Event::Fail,
                    format!("Failed to finish inspection: {e}"),
                )
                .await;
            }
            task
        })?;
        Ok((node, answer))
    }

    /// `[auto_discovery]`: enrolls the machine behind `report`, none of whose `addresses` is a
    /// known port, as a new node of hardware type `driver` in `enroll`, with the properties,
    /// ports and inventory an inspection would give it (`plugin_data.auto_discovered`).
    /// A machine with a known MAC is the usual "not found".
    pub async fn discover(
        &self,
        addresses: &[MacAddress],
        driver: &str,
        report: Map<String, Value>,
    ) -> Result<Uuid, ConductorError> {
        let known = self
            .store()
            .list_ports(&crate::store::PortQuery {
                addresses: addresses.to_vec(),
                ..Default::default()
            })
            .await?;
        if !known.is_empty() || addresses.is_empty() {
            return Err(super::ramdisk::not_found());
        }
        let hw = crate::model::HardwareType::find(driver).ok_or_else(|| {
            ConductorError::InvalidParameter(format!("auto_discovery.driver {driver:?} is unknown"))
        })?;
        let (inventory, mut plugin_data) = split_report(report);
        plugin_data["auto_discovered"] = Value::Bool(true);
        let found = properties_from(&inventory, &plugin_data).map_err(|e| {
            ConductorError::InvalidParameter(format!("Invalid inspection data: {e}"))
        })?;
        let now = crate::model::now();
        let mut node = crate::model::Node::new(Uuid::new_v4(), hw, now);
        node.properties.extend(found);
        node.inspection_finished_at = Some(now);
        self.store().create_node(&node).await?;
        let boot = boot_mac(&inventory, &plugin_data);
        for mac in nic_macs(&inventory) {
            let mut port = Port::new(Uuid::new_v4(), node.uuid, mac, now);
            port.pxe_enabled = boot.as_ref() == Some(&port.address);
            if let Err(e) = self.store().create_port(&port).await {
                tracing::warn!(node = %node.uuid, address = %port.address.as_str(), error = %e, "discovery: port not added");
            }
        }
        self.store()
            .save_inventory(&InventoryRecord {
                node_uuid: node.uuid,
                inventory,
                plugin_data,
            })
            .await?;
        tracing::info!(node = %node.uuid, driver, "unknown machine enrolled by auto-discovery");
        Ok(node.uuid)
    }

    async fn finish_inspection(
        &self,
        task: &mut Task,
        report: Map<String, Value>,
    ) -> Result<(), InspectionError> {
        if let Some(err) = report
            .get("error")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
        {
            return Err(InspectionError::Ramdisk(err.to_string()));
        }
        let (inventory, plugin_data) = split_report(report);
        let found = properties_from(&inventory, &plugin_data)?;
        let record = InventoryRecord {
            node_uuid: task.node.uuid,
            inventory,
            plugin_data,
        };
        self.store().save_inventory(&record).await?;
        task.node.properties.extend(found);
        self.add_ports(task, &record.inventory, &record.plugin_data)
            .await?;
        let ifaces = self.interfaces().for_node(&task.node)?;
        ifaces
            .boot
            .clean_up_ramdisk(task.ctx())
            .await
            .map_err(DeployError::from)?;
        ifaces
            .power
            .set_power_state(task.ctx(), PowerState::Off)
            .await
            .map_err(DeployError::from)?;
        AgentSession::wipe(&mut task.node);
        task.node.inspection_started_at = None;
        task.node.inspection_finished_at = Some(crate::model::now());
        task.process_event(Event::Done).await?;
        tracing::info!(node = %task.node.uuid, properties = ?task.node.properties, "inspection finished");
        Ok(())
    }

    /// Ports for the inventory's NICs the node does not have; the booting NIC's port (when the
    /// agent names it) PXE-enabled, the others not. A MAC another node owns is left to it.
    async fn add_ports(
        &self,
        task: &mut Task,
        inventory: &Value,
        plugin_data: &Value,
    ) -> Result<(), InspectionError> {
        let boot_mac = boot_mac(inventory, plugin_data);
        for mac in nic_macs(inventory) {
            let pxe = boot_mac.as_ref() == Some(&mac);
            if let Some(port) = task.ports.iter_mut().find(|p| p.address == mac) {
                if boot_mac.is_some() && port.pxe_enabled != pxe {
                    port.pxe_enabled = pxe;
                    *port = self.store().save_port(port).await?;
                }
                continue;
            }
            let mut port = Port::new(Uuid::new_v4(), task.node.uuid, mac, crate::model::now());
            port.pxe_enabled = pxe;
            match self.store().create_port(&port).await {
                Ok(()) => {
                    tracing::info!(node = %task.node.uuid, address = %port.address.as_str(), pxe, "port created by inspection");
                    task.ports.push(port);
                }
                Err(StoreError::DuplicateMac(m)) => {
                    tracing::warn!(node = %task.node.uuid, address = %m, "inspection: the MAC belongs to another node's port; not added");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// An agent's report split into its inventory and the plugin data kept with it: every other
/// key but the agent's logs, which are large and belong in a log store, not the node's record.
fn split_report(mut report: Map<String, Value>) -> (Value, Value) {
    let inventory = report.remove("inventory").unwrap_or(Value::Null);
    report.remove("logs");
    (inventory, Value::Object(report))
}

/// `cpu_arch`, `memory_mb` and `local_gb` from an agent's inventory: the architecture is
/// required (as Ironic's `architecture` hook requires it); memory when reported; the root disk
/// is the agent's `root_disk` guess, else the smallest disk of at least 4 GiB, and `local_gb`
/// its size in GiB minus one (room for partitioning, as Ironic's default), 0 without one.
pub fn properties_from(
    inventory: &Value,
    plugin_data: &Value,
) -> Result<Map<String, Value>, InspectionError> {
    let mut props = Map::new();
    let arch = inventory
        .pointer("/cpu/architecture")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .ok_or(InspectionError::NoArchitecture)?;
    props.insert("cpu_arch".into(), json!(arch));
    if let Some(mb) = inventory
        .pointer("/memory/physical_mb")
        .and_then(Value::as_u64)
        .filter(|mb| *mb > 0)
    {
        props.insert("memory_mb".into(), json!(mb));
    }
    let root_size = plugin_data
        .pointer("/root_disk/size")
        .and_then(Value::as_u64)
        .or_else(|| {
            inventory
                .get("disks")
                .and_then(Value::as_array)?
                .iter()
                .filter_map(|d| d.get("size").and_then(Value::as_u64))
                .filter(|s| *s >= MIN_ROOT_DISK)
                .min()
        });
    let local_gb = match root_size.map(|s| s / GIB) {
        Some(gb) if gb > 0 => gb - 1,
        _ => 0,
    };
    props.insert("local_gb".into(), json!(local_gb));
    Ok(props)
}

/// The valid MACs of the inventory's NICs (loopback and nameless ones left out).
pub fn nic_macs(inventory: &Value) -> Vec<MacAddress> {
    let mut macs: Vec<MacAddress> = inventory
        .get("interfaces")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|i| {
            i.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty() && n != "lo")
        })
        .filter_map(|i| i.get("mac_address").and_then(Value::as_str))
        .filter_map(|m| MacAddress::parse(m).ok())
        .filter(|m| m.as_str() != "00:00:00:00:00:00")
        .collect();
    macs.dedup();
    macs
}

/// The MAC of the NIC the node booted from: the agent's `boot_interface` (`BOOTIF`, often
/// `01-aa-bb-...`) or `inventory.boot.pxe_interface`.
fn boot_mac(inventory: &Value, plugin_data: &Value) -> Option<MacAddress> {
    let raw = plugin_data
        .get("boot_interface")
        .and_then(Value::as_str)
        .or_else(|| {
            inventory
                .pointer("/boot/pxe_interface")
                .and_then(Value::as_str)
        })?;
    let raw = raw.strip_prefix("01-").unwrap_or(raw).replace('-', ":");
    MacAddress::parse(&raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory() -> Value {
        json!({
            "cpu": {"architecture": "x86_64", "count": 2},
            "memory": {"total": 4_294_967_296u64, "physical_mb": 4096},
            "disks": [
                {"name": "/dev/sda", "size": 2 * GIB},
                {"name": "/dev/sdb", "size": 40 * GIB},
                {"name": "/dev/sdc", "size": 10 * GIB}
            ],
            "interfaces": [
                {"name": "lo", "mac_address": "00:00:00:00:00:00"},
                {"name": "eth0", "mac_address": "52:54:00:00:00:01"},
                {"name": "eth1", "mac_address": "52:54:00:00:00:02"},
                {"name": "bad", "mac_address": "not-a-mac"}
            ],
        })
    }

    #[test]
    fn properties_come_from_the_inventory_as_ironic_sets_them() {
        let p = properties_from(&inventory(), &json!({})).unwrap();
        assert_eq!(p["cpu_arch"], "x86_64");
        assert_eq!(p["memory_mb"], 4096);
        assert_eq!(
            p["local_gb"], 9,
            "smallest disk of 4 GiB or more, minus one"
        );
        let with_guess = json!({"root_disk": {"name": "/dev/sdb", "size": 40 * GIB}});
        assert_eq!(
            properties_from(&inventory(), &with_guess).unwrap()["local_gb"],
            39
        );
        let mut small = inventory();
        small["disks"] = json!([{"name": "/dev/sda", "size": GIB}]);
        assert_eq!(properties_from(&small, &json!({})).unwrap()["local_gb"], 0);
        let mut no_arch = inventory();
        no_arch["cpu"] = json!({"count": 1});
        assert!(matches!(
            properties_from(&no_arch, &json!({})),
            Err(InspectionError::NoArchitecture)
        ));
    }

    #[test]
    fn nics_and_the_boot_nic_are_read_from_the_report() {
        let macs: Vec<String> = nic_macs(&inventory())
            .iter()
            .map(|m| m.as_str().to_string())
            .collect();
        assert_eq!(macs, ["52:54:00:00:00:01", "52:54:00:00:00:02"]);
        let bootif = json!({"boot_interface": "01-52-54-00-00-00-02"});
        assert_eq!(
            boot_mac(&inventory(), &bootif).unwrap().as_str(),
            "52:54:00:00:00:02"
        );
        let mut inv = inventory();
        inv["boot"] = json!({"pxe_interface": "52:54:00:00:00:01"});
        assert_eq!(
            boot_mac(&inv, &json!({})).unwrap().as_str(),
            "52:54:00:00:00:01"
        );
        assert!(boot_mac(&inventory(), &json!({})).is_none());
    }
}
