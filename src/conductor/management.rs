//! What a client asks of a node's interfaces outside a state change: validate every interface,
//! and get, set or list the boot device through the management interface.

use super::{Conductor, ConductorError, Task};
use crate::driver::{BootDevice, BootTarget};
use crate::model::InterfaceKind;
use crate::store::NodeIdent;

/// One interface's verdict: `Ok` or why it cannot work for this node.
pub type Verdict = Result<(), String>;

/// Why an optional kind's do-nothing interface cannot do the kind's job.
fn unsupported(driver: &str, kind: InterfaceKind) -> Verdict {
    Err(format!(
        "Driver {driver} does not support {} (disabled or not implemented).",
        kind.as_str()
    ))
}

impl Conductor {
    /// Runs `f` on the reserved node, saving what the interfaces recorded, then releases it.
    async fn on_node<T>(
        &self,
        ident: &NodeIdent,
        f: impl AsyncFnOnce(&Conductor, &mut Task) -> Result<T, ConductorError>,
    ) -> Result<T, ConductorError> {
        let mut task = self.reserve_for_request(ident).await?;
        let before = task.node.clone();
        let mut result = f(self, &mut task).await;
        if result.is_ok()
            && task.node != before
            && let Err(e) = task.save().await
        {
            result = Err(e.into());
        }
        self.release(task).await;
        result
    }

    /// Every interface kind's verdict for the node, as Ironic's validate reports it.
    pub async fn validate(
        &self,
        ident: &NodeIdent,
    ) -> Result<Vec<(InterfaceKind, Verdict)>, ConductorError> {
        self.on_node(ident, async |c: &Conductor, task: &mut Task| {
            let ifaces = c.interfaces().for_node(&task.node)?;
            let driver = task.node.driver.clone();
            let mut out = Vec::new();
            for kind in InterfaceKind::ALL {
                let name = task.node.interface(kind).to_string();
                let verdict = match kind {
                    InterfaceKind::Boot => ifaces.boot.validate(task).map_err(|e| e.to_string()),
                    InterfaceKind::Deploy => {
                        ifaces.deploy.validate(task).map_err(|e| e.to_string())
                    }
                    InterfaceKind::Power => ifaces.power.validate(task).map_err(|e| e.to_string()),
                    InterfaceKind::Management => {
                        ifaces.management.validate(task).map_err(|e| e.to_string())
                    }
                    // The optional kinds: `fake` and `noop` need nothing; a `no-*` interface
                    // is the kind's absence.
                    _ if name.starts_with("no-") => unsupported(&driver, kind),
                    _ => Ok(()),
                };
                out.push((kind, verdict));
            }
            Ok(out)
        })
        .await
    }

    /// The boot devices the node's management interface can set.
    pub async fn supported_boot_devices(
        &self,
        ident: &NodeIdent,
    ) -> Result<Vec<BootDevice>, ConductorError> {
        self.on_node(ident, async |c: &Conductor, task: &mut Task| {
            let ifaces = c.interfaces().for_node(&task.node)?;
            Ok(ifaces.management.supported_boot_devices(task))
        })
        .await
    }

    /// The device the node boots from next, when the management interface knows it.
    pub async fn get_boot_device(
        &self,
        ident: &NodeIdent,
    ) -> Result<Option<BootTarget>, ConductorError> {
        self.on_node(ident, async |c: &Conductor, task: &mut Task| {
            let ifaces = c.interfaces().for_node(&task.node)?;
            ifaces
                .management
                .get_boot_device(task.ctx())
                .await
                .map_err(|e| ConductorError::InvalidParameter(e.to_string()))
        })
        .await
    }

    /// Sets the boot device, refusing one the management interface does not support.
    pub async fn set_boot_device(
        &self,
        ident: &NodeIdent,
        target: BootTarget,
    ) -> Result<(), ConductorError> {
        self.on_node(ident, async |c: &Conductor, task: &mut Task| {
            let ifaces = c.interfaces().for_node(&task.node)?;
            if !ifaces
                .management
                .supported_boot_devices(task)
                .contains(&target.device)
            {
                return Err(ConductorError::InvalidParameter(format!(
                    "Invalid boot device {} specified.",
                    target.device
                )));
            }
            ifaces
                .management
                .validate(task)
                .map_err(|e| ConductorError::InvalidParameter(e.to_string()))?;
            ifaces
                .management
                .set_boot_device(task.ctx(), target)
                .await
                .map_err(|e| ConductorError::InvalidParameter(e.to_string()))
        })
        .await
    }
}
