//! The interfaces this conductor has enabled, looked up per node by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::ConductorError;
use super::deploy::{DeployContext, DeployInterface, FakeDeploy};
use crate::bmc::fake::{FakeManagement, FakePower};
use crate::boot::fake::FakeBoot;
use crate::driver::{BootInterface, ManagementInterface, PowerInterface};
use crate::model::{InterfaceKind, Node};

#[derive(Default)]
pub struct Interfaces {
    boot: BTreeMap<&'static str, Arc<dyn BootInterface>>,
    deploy: BTreeMap<&'static str, Arc<dyn DeployInterface>>,
    power: BTreeMap<&'static str, Arc<dyn PowerInterface>>,
    management: BTreeMap<&'static str, Arc<dyn ManagementInterface>>,
}

/// The interfaces of one node.
#[derive(Clone)]
pub struct NodeInterfaces {
    pub boot: Arc<dyn BootInterface>,
    pub deploy: Arc<dyn DeployInterface>,
    pub power: Arc<dyn PowerInterface>,
    pub management: Arc<dyn ManagementInterface>,
}

impl NodeInterfaces {
    pub fn deploy_context(&self) -> DeployContext<'_> {
        DeployContext {
            boot: self.boot.as_ref(),
            power: self.power.as_ref(),
            management: self.management.as_ref(),
        }
    }
}

impl Interfaces {
    /// The `fake` interfaces (always enabled).
    pub fn with_fakes() -> Interfaces {
        let mut i = Interfaces::default();
        i.add_boot(Arc::new(FakeBoot));
        i.add_deploy(Arc::new(FakeDeploy));
        i.add_power(Arc::new(FakePower));
        i.add_management(Arc::new(FakeManagement));
        i
    }

    pub fn add_boot(&mut self, b: Arc<dyn BootInterface>) {
        self.boot.insert(b.name(), b);
    }

    pub fn add_deploy(&mut self, d: Arc<dyn DeployInterface>) {
        self.deploy.insert(d.name(), d);
    }

    pub fn add_power(&mut self, p: Arc<dyn PowerInterface>) {
        self.power.insert(p.name(), p);
    }

    pub fn add_management(&mut self, m: Arc<dyn ManagementInterface>) {
        self.management.insert(m.name(), m);
    }

    /// Which of `names` this conductor has enabled for `kind` (the kinds without
    /// implementations here, the optional ones, are enabled as the hardware type lists them).
    pub fn enabled<'a>(&self, kind: InterfaceKind, names: &[&'a str]) -> Vec<&'a str> {
        let has = |n: &str| match kind {
            InterfaceKind::Boot => self.boot.contains_key(n),
            InterfaceKind::Deploy => self.deploy.contains_key(n),
            InterfaceKind::Power => self.power.contains_key(n),
            InterfaceKind::Management => self.management.contains_key(n),
            _ => true,
        };
        names.iter().copied().filter(|n| has(n)).collect()
    }

    /// The node's interfaces, or an error naming the one this conductor does not have.
    pub fn for_node(&self, node: &Node) -> Result<NodeInterfaces, ConductorError> {
        fn pick<T: ?Sized>(
            map: &BTreeMap<&'static str, Arc<T>>,
            field: &str,
            name: &str,
        ) -> Result<Arc<T>, ConductorError> {
            map.get(name).cloned().ok_or_else(|| {
                let enabled: Vec<&str> = map.keys().copied().collect();
                ConductorError::InvalidParameter(format!(
                    "{field} {name:?} is not enabled on this conductor; enabled: {}",
                    enabled.join(", ")
                ))
            })
        }
        Ok(NodeInterfaces {
            boot: pick(&self.boot, "boot_interface", &node.boot_interface)?,
            deploy: pick(&self.deploy, "deploy_interface", &node.deploy_interface)?,
            power: pick(&self.power, "power_interface", &node.power_interface)?,
            management: pick(
                &self.management,
                "management_interface",
                &node.management_interface,
            )?,
        })
    }
}
