//! The Redfish client: what the `redfish` power and management interfaces and the
//! `redfish-virtual-media` boot interface use to drive a BMC (iLO 5+, iDRAC, XCC, OpenBMC,
//! sushy-tools...).
//!
//! - [`DriverInfo::parse`] reads a node's driver_info (Ironic's keys) without touching the
//!   network: use it in `validate`.
//! - [`Redfish`] is shared by every interface of the conductor: settings, HTTP clients and
//!   the session cache (one session per BMC and user, reused across calls and nodes).
//! - [`Redfish::connect`] finds the node's [`RedfishSystem`]: power ([`RedfishSystem::set_power`]
//!   waits for the new state), boot source override, virtual media.
//! - Every [`RedfishError`] names the BMC and the call, carries the BMC's own messages, and
//!   has an [`ErrorClass`] telling bad driver_info, credentials and missing features apart
//!   from an unreachable BMC.
//!
//! Nothing here logs a password or a session token.

mod client;
mod connect;
pub mod driver_info;
mod error;
pub mod metrics;
mod odata;
mod session;
pub mod settings;
mod system;
mod tls;
mod vmedia;

pub use connect::Redfish;
pub use driver_info::{AuthType, DriverInfo, Secret, VerifyCa};
pub use error::{ErrorClass, RedfishError};
pub use metrics::RedfishMetrics;
pub use session::SessionCache;
pub use settings::RedfishSettings;
pub use system::{
    BootDevice, BootFrequency, BootMode, BootOverride, PowerState, PowerTarget, RedfishSystem,
    ResetType,
};
pub use vmedia::{MediaKind, VirtualMediaSlot};
