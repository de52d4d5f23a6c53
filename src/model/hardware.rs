//! Hardware types (Ironic's `driver`) and the interface kinds a node picks one of each.
//!
//! A hardware type is a declarative entry: the interfaces it offers for the four kinds every
//! deploy uses (boot, deploy, power, management), and for the optional kinds
//! ([`ExtraInterfaces`]) either [`ExtraInterfaces::NONE`] (each kind's do-nothing interface, as a
//! type that does not implement it), [`ExtraInterfaces::AGENT_ON_REQUEST`] (the real machines'
//! types: the agent's inspection and rescue when asked for) or its own sets.

use super::node::NodeError;

/// Every interface kind of Ironic's node model, in the order the API lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InterfaceKind {
    Bios,
    Boot,
    Console,
    Deploy,
    Firmware,
    Inspect,
    Management,
    Network,
    Power,
    Raid,
    Rescue,
    Storage,
    Vendor,
}

impl InterfaceKind {
    pub const ALL: [InterfaceKind; 13] = [
        InterfaceKind::Bios,
        InterfaceKind::Boot,
        InterfaceKind::Console,
        InterfaceKind::Deploy,
        InterfaceKind::Firmware,
        InterfaceKind::Inspect,
        InterfaceKind::Management,
        InterfaceKind::Network,
        InterfaceKind::Power,
        InterfaceKind::Raid,
        InterfaceKind::Rescue,
        InterfaceKind::Storage,
        InterfaceKind::Vendor,
    ];

    /// `bios`, `boot`, ... (the key of `validate` answers and of `enabled_<kind>_interfaces`).
    pub fn as_str(self) -> &'static str {
        match self {
            InterfaceKind::Bios => "bios",
            InterfaceKind::Boot => "boot",
            InterfaceKind::Console => "console",
            InterfaceKind::Deploy => "deploy",
            InterfaceKind::Firmware => "firmware",
            InterfaceKind::Inspect => "inspect",
            InterfaceKind::Management => "management",
            InterfaceKind::Network => "network",
            InterfaceKind::Power => "power",
            InterfaceKind::Raid => "raid",
            InterfaceKind::Rescue => "rescue",
            InterfaceKind::Storage => "storage",
            InterfaceKind::Vendor => "vendor",
        }
    }

    /// The node field: `boot_interface`, ...
    pub fn field(self) -> &'static str {
        match self {
            InterfaceKind::Bios => "bios_interface",
            InterfaceKind::Boot => "boot_interface",
            InterfaceKind::Console => "console_interface",
            InterfaceKind::Deploy => "deploy_interface",
            InterfaceKind::Firmware => "firmware_interface",
            InterfaceKind::Inspect => "inspect_interface",
            InterfaceKind::Management => "management_interface",
            InterfaceKind::Network => "network_interface",
            InterfaceKind::Power => "power_interface",
            InterfaceKind::Raid => "raid_interface",
            InterfaceKind::Rescue => "rescue_interface",
            InterfaceKind::Storage => "storage_interface",
            InterfaceKind::Vendor => "vendor_interface",
        }
    }

    pub fn from_field(field: &str) -> Option<InterfaceKind> {
        Self::ALL.into_iter().find(|k| k.field() == field)
    }
}

/// The interfaces one hardware type offers for one kind, with its default.
#[derive(Debug, Clone, Copy)]
pub struct InterfaceSet {
    pub default: &'static str,
    pub enabled: &'static [&'static str],
}

impl InterfaceSet {
    /// Only the do-nothing interface of a kind (`no-bios`, `noop`, ...).
    pub const fn only(name: &'static str) -> InterfaceSet {
        InterfaceSet {
            default: name,
            enabled: match name.as_bytes() {
                b"noop" => &["noop"],
                b"no-bios" => &["no-bios"],
                b"no-console" => &["no-console"],
                b"no-inspect" => &["no-inspect"],
                b"no-raid" => &["no-raid"],
                b"no-rescue" => &["no-rescue"],
                b"no-vendor" => &["no-vendor"],
                b"no-firmware" => &["no-firmware"],
                _ => &[],
            },
        }
    }

    pub fn check(&self, field: &'static str, value: &str, driver: &str) -> Result<(), NodeError> {
        if self.enabled.contains(&value) {
            Ok(())
        } else {
            Err(NodeError::UnsupportedInterface {
                field,
                value: value.to_string(),
                driver: driver.to_string(),
                allowed: self.enabled.join(", "),
            })
        }
    }
}

/// The optional interface kinds: what a type offers for firmware settings, consoles, inspection,
/// networking, RAID, rescue, storage and vendor passthru.
#[derive(Debug, Clone, Copy)]
pub struct ExtraInterfaces {
    pub bios: InterfaceSet,
    pub console: InterfaceSet,
    pub firmware: InterfaceSet,
    pub inspect: InterfaceSet,
    pub network: InterfaceSet,
    pub raid: InterfaceSet,
    pub rescue: InterfaceSet,
    pub storage: InterfaceSet,
    pub vendor: InterfaceSet,
}

impl ExtraInterfaces {
    /// A type that implements none of the optional kinds: each is its do-nothing interface.
    pub const NONE: ExtraInterfaces = ExtraInterfaces {
        bios: InterfaceSet::only("no-bios"),
        console: InterfaceSet::only("no-console"),
        firmware: InterfaceSet::only("no-firmware"),
        inspect: InterfaceSet::only("no-inspect"),
        network: InterfaceSet::only("noop"),
        raid: InterfaceSet::only("no-raid"),
        rescue: InterfaceSet::only("no-rescue"),
        storage: InterfaceSet::only("noop"),
        vendor: InterfaceSet::only("no-vendor"),
    };

    /// A real machine's type: nothing optional by default, and the agent's inspection and
    /// rescue for the operator who sets `inspect_interface` / `rescue_interface` to `agent`
    /// (they boot the agent through the node's own boot interface, as a deploy does).
    pub const AGENT_ON_REQUEST: ExtraInterfaces = ExtraInterfaces {
        inspect: InterfaceSet {
            default: "no-inspect",
            enabled: &["agent", "no-inspect"],
        },
        rescue: InterfaceSet {
            default: "no-rescue",
            enabled: &["agent", "no-rescue"],
        },
        ..ExtraInterfaces::NONE
    };
}

/// A hardware type (Ironic's `driver`): which interfaces a node of that type may use.
#[derive(Debug, Clone, Copy)]
pub struct HardwareType {
    pub name: &'static str,
    pub boot: InterfaceSet,
    pub deploy: InterfaceSet,
    pub power: InterfaceSet,
    pub management: InterfaceSet,
    pub extras: ExtraInterfaces,
}

/// Every hardware type ironboot knows, in the order the API lists them.
pub const HARDWARE_TYPES: &[HardwareType] = &[
    HardwareType {
        name: "fake-hardware",
        boot: InterfaceSet {
            default: "fake",
            enabled: &["fake", "pxe", "ipxe"],
        },
        deploy: InterfaceSet {
            default: "fake",
            enabled: &["fake", "direct"],
        },
        power: InterfaceSet {
            default: "fake",
            enabled: &["fake", "script"],
        },
        management: InterfaceSet {
            default: "fake",
            enabled: &["fake", "noop"],
        },
        // Ironic's fake-hardware defaults to `fake` (record and succeed) for every optional kind
        // but network and storage, whose do-nothing `noop` is the default.
        extras: ExtraInterfaces {
            bios: InterfaceSet {
                default: "fake",
                enabled: &["fake", "no-bios"],
            },
            console: InterfaceSet {
                default: "fake",
                enabled: &["fake", "no-console"],
            },
            firmware: InterfaceSet {
                default: "fake",
                enabled: &["fake", "no-firmware"],
            },
            inspect: InterfaceSet {
                default: "fake",
                enabled: &["fake", "agent", "no-inspect"],
            },
            network: InterfaceSet::only("noop"),
            raid: InterfaceSet {
                default: "fake",
                enabled: &["fake", "no-raid"],
            },
            rescue: InterfaceSet {
                default: "fake",
                enabled: &["fake", "agent", "no-rescue"],
            },
            storage: InterfaceSet {
                default: "noop",
                enabled: &["noop", "fake"],
            },
            vendor: InterfaceSet {
                default: "fake",
                enabled: &["fake", "no-vendor"],
            },
        },
    },
    // Power and boot device over IPMI (ipmitool), network boot, agent deploy: Bifrost's default.
    HardwareType {
        name: "ipmi",
        boot: InterfaceSet {
            default: "pxe",
            enabled: &["pxe", "ipxe"],
        },
        deploy: InterfaceSet {
            default: "direct",
            enabled: &["direct"],
        },
        power: InterfaceSet {
            default: "ipmitool",
            enabled: &["ipmitool"],
        },
        management: InterfaceSet {
            default: "ipmitool",
            enabled: &["ipmitool"],
        },
        extras: ExtraInterfaces::AGENT_ON_REQUEST,
    },
    // The operator powers the node and sets its boot order by hand: `fake` power records the
    // state asked for, `noop` management logs the device. Ironic's `agent` power (which needs
    // fast track) is not offered.
    HardwareType {
        name: "manual-management",
        boot: InterfaceSet {
            default: "pxe",
            enabled: &["pxe", "ipxe"],
        },
        deploy: InterfaceSet {
            default: "direct",
            enabled: &["direct"],
        },
        power: InterfaceSet {
            default: "fake",
            enabled: &["fake"],
        },
        management: InterfaceSet {
            default: "noop",
            enabled: &["noop", "fake"],
        },
        extras: ExtraInterfaces::AGENT_ON_REQUEST,
    },
    // A Redfish BMC (iLO 5+, iDRAC, XCC, OpenBMC): power and boot device over Redfish, the
    // deploy ramdisk from virtual media by default (Ironic's `redfish` hardware type).
    HardwareType {
        name: "redfish",
        boot: InterfaceSet {
            default: "redfish-virtual-media",
            enabled: &["redfish-virtual-media", "pxe", "ipxe"],
        },
        deploy: InterfaceSet {
            default: "direct",
            enabled: &["direct"],
        },
        power: InterfaceSet {
            default: "redfish",
            enabled: &["redfish"],
        },
        management: InterfaceSet {
            default: "redfish",
            enabled: &["redfish"],
        },
        extras: ExtraInterfaces::AGENT_ON_REQUEST,
    },
];

impl HardwareType {
    pub fn find(name: &str) -> Option<&'static HardwareType> {
        HARDWARE_TYPES.iter().find(|h| h.name == name)
    }

    pub fn names() -> Vec<&'static str> {
        HARDWARE_TYPES.iter().map(|h| h.name).collect()
    }

    /// The interfaces this type offers for `kind`.
    pub fn interfaces(&self, kind: InterfaceKind) -> &InterfaceSet {
        let x = &self.extras;
        match kind {
            InterfaceKind::Boot => &self.boot,
            InterfaceKind::Deploy => &self.deploy,
            InterfaceKind::Power => &self.power,
            InterfaceKind::Management => &self.management,
            InterfaceKind::Bios => &x.bios,
            InterfaceKind::Console => &x.console,
            InterfaceKind::Firmware => &x.firmware,
            InterfaceKind::Inspect => &x.inspect,
            InterfaceKind::Network => &x.network,
            InterfaceKind::Raid => &x.raid,
            InterfaceKind::Rescue => &x.rescue,
            InterfaceKind::Storage => &x.storage,
            InterfaceKind::Vendor => &x.vendor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_is_enabled_and_kinds_round_trip() {
        for hw in HARDWARE_TYPES {
            for kind in InterfaceKind::ALL {
                let set = hw.interfaces(kind);
                assert!(set.enabled.contains(&set.default), "{} {kind:?}", hw.name);
                assert_eq!(InterfaceKind::from_field(kind.field()), Some(kind));
            }
        }
        // A type without extras offers exactly one do-nothing interface for each optional kind.
        for kind in InterfaceKind::ALL {
            if !matches!(
                kind,
                InterfaceKind::Boot
                    | InterfaceKind::Deploy
                    | InterfaceKind::Power
                    | InterfaceKind::Management
            ) {
                let hw = HardwareType {
                    extras: ExtraInterfaces::NONE,
                    ..HARDWARE_TYPES[0]
                };
                let s = hw.interfaces(kind);
                assert_eq!(s.enabled, &[s.default], "{kind:?}");
            }
        }
        // The real machines' types offer the agent's inspection and rescue, off by default.
        for name in ["ipmi", "manual-management", "redfish"] {
            let hw = HardwareType::find(name).unwrap();
            for kind in [InterfaceKind::Inspect, InterfaceKind::Rescue] {
                let s = hw.interfaces(kind);
                assert!(s.enabled.contains(&"agent"), "{name} {kind:?}");
                assert!(s.default.starts_with("no-"), "{name} {kind:?}");
            }
        }
    }
}
