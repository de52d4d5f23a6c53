//! What `redfish-virtual-media` reads from a node, checked without touching anything:
//!
//! - `driver_info.deploy_kernel` + `deploy_ramdisk` (the deploy ISO is built from them, with
//!   the agent's parameters on its kernel command line), or `driver_info.deploy_iso` (the
//!   operator's ISO, published unmodified, with the parameters on a floppy — the iLO way);
//!   `deploy_iso` wins when both are given, as in Ironic; while the node is being rescued,
//!   `rescue_iso` or `rescue_kernel` + `rescue_ramdisk` in their place when given;
//! - `driver_info.config_via_removable` (old name `config_via_floppy`): the floppy with a
//!   built ISO too;
//! - kernel parameters: `instance_info.kernel_append_params`, else
//!   `driver_info.kernel_append_params`, else `[redfish] kernel_append_params` (`%default%`
//!   in a node value expands to the configured ones);
//! - `driver_info.vmedia_publisher` (`local` or `swift`, else `[vmedia] publisher`) and
//!   `driver_info.external_http_url` (the URL this node's BMC reaches the HTTP root by);
//! - the boot mode (`instance_info.deploy_boot_mode`, the `boot_mode` capability, else the
//!   default): which El Torito entry a built ISO gets;
//! - `BOOTIF`: the MAC of the node's first pxe-enabled port (else its first port), when it
//!   has one.

use serde_json::{Map, Value};

use super::NAME;
use crate::bmc::redfish::DriverInfo;
use crate::boot::BootError;
use crate::boot::render::KernelParams;
use crate::driver::NodeContext;
use crate::model::{BootMode, MacAddress, Node};

/// Where the deploy ISO comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployMedia {
    Built { kernel: String, ramdisk: String },
    Prebuilt { iso: String },
}

/// Everything the ramdisk boot of one node depends on.
#[derive(Debug, Clone)]
pub struct RamdiskInputs {
    pub bmc: DriverInfo,
    pub media: DeployMedia,
    /// Publish a floppy with `parameters.txt` too.
    pub floppy: bool,
    pub mode: BootMode,
    /// The kernel parameters before the agent's (built ISOs only).
    pub append: KernelParams,
    pub bootif: Option<MacAddress>,
    pub publishing: Publishing,
}

/// How the node's media are published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publishing {
    /// `driver_info.vmedia_publisher`.
    pub backend: Option<String>,
    /// `driver_info.external_http_url`.
    pub root_url: Option<String>,
}

fn text<'a>(fields: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    fields
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

pub(super) fn invalid_driver_info(reason: impl std::fmt::Display) -> BootError {
    BootError::InvalidDriverInfo {
        interface: NAME,
        reason: reason.to_string(),
    }
}

pub(super) fn invalid_node(reason: impl std::fmt::Display) -> BootError {
    BootError::InvalidNode {
        interface: NAME,
        reason: reason.to_string(),
    }
}

/// An image source in driver_info, checked as such.
fn href(info: &Map<String, Value>, key: &str) -> Result<Option<String>, BootError> {
    let Some(h) = text(info, key) else {
        return Ok(None);
    };
    crate::images::source::Source::parse(h)
        .map_err(|e| invalid_driver_info(format!("{key}: {e}")))?;
    Ok(Some(h.to_string()))
}

/// A boolean in driver_info, given as JSON or as a string (the CLI sends strings).
fn flag(info: &Map<String, Value>, key: &str) -> Result<Option<bool>, BootError> {
    match info.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Some(true)),
            "false" | "0" | "no" | "off" | "" => Ok(Some(false)),
            _ => Err(invalid_driver_info(format!("{key} {s:?} is not a boolean"))),
        },
        Some(other) => Err(invalid_driver_info(format!(
            "{key} {other} is not a boolean"
        ))),
    }
}

/// The agent's media: the deploy ones, or while the node is being rescued the rescue ones
/// when given (`rescue_iso`, or `rescue_kernel` + `rescue_ramdisk`; else the deploy media,
/// whose agent rescues too).
pub fn deploy_media(node: &Node) -> Result<DeployMedia, BootError> {
    let info = &node.driver_info;
    let rescuing = node.provision_state.is_rescuing();
    let given = |k: &str| text(info, &format!("rescue_{k}")).is_some();
    let prefix = if rescuing && (given("iso") || given("kernel")) {
        "rescue"
    } else {
        "deploy"
    };
    if let Some(iso) = href(info, &format!("{prefix}_iso"))? {
        return Ok(DeployMedia::Prebuilt { iso });
    }
    let (kernel_key, ramdisk_key) = (format!("{prefix}_kernel"), format!("{prefix}_ramdisk"));
    match (href(info, &kernel_key)?, href(info, &ramdisk_key)?) {
        (Some(kernel), Some(ramdisk)) => Ok(DeployMedia::Built { kernel, ramdisk }),
        _ => Err(invalid_driver_info(format!(
            "set {kernel_key} and {ramdisk_key} (ironboot builds the {prefix} ISO from them), \
             or {prefix}_iso (an ISO of the agent, used as it is, with its parameters on a \
             floppy)"
        ))),
    }
}

/// The node's kernel parameters before the agent's (or the instance's root).
pub fn append_params(node: &Node, default: &KernelParams) -> Result<KernelParams, BootError> {
    let given = [
        ("instance_info.kernel_append_params", &node.instance_info),
        ("driver_info.kernel_append_params", &node.driver_info),
    ]
    .into_iter()
    .find_map(|(field, fields)| text(fields, "kernel_append_params").map(|t| (field, t)));
    match given {
        Some((field, t)) => {
            KernelParams::parse_with_default(field, t, default).map_err(invalid_node)
        }
        None => Ok(default.clone()),
    }
}

pub fn publishing(node: &Node) -> Result<Publishing, BootError> {
    let info = &node.driver_info;
    let backend = text(info, "vmedia_publisher").map(str::to_string);
    if let Some(b) = &backend {
        b.parse::<crate::publish::Backend>()
            .map_err(|e| invalid_driver_info(format!("vmedia_publisher: {e}")))?;
    }
    let root_url = text(info, "external_http_url").map(str::to_string);
    if let Some(u) = &root_url {
        let ok = reqwest::Url::parse(u)
            .is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.host().is_some());
        if !ok {
            return Err(invalid_driver_info(format!(
                "external_http_url {u:?} must be an http:// or https:// URL with a host"
            )));
        }
    }
    Ok(Publishing { backend, root_url })
}

/// The MAC the agent boots from: the first pxe-enabled port's, else the first port's.
pub fn bootif(ctx: &NodeContext) -> Option<MacAddress> {
    ctx.pxe_macs()
        .into_iter()
        .next()
        .or_else(|| ctx.ports.first().map(|p| p.address.clone()))
}

pub fn boot_mode(node: &Node, default: BootMode) -> Result<BootMode, BootError> {
    node.boot_mode(default).map_err(invalid_node)
}

impl RamdiskInputs {
    /// Reads and checks everything; nothing is fetched or contacted.
    pub fn read(
        ctx: &NodeContext,
        default_append: &KernelParams,
        default_mode: BootMode,
    ) -> Result<RamdiskInputs, BootError> {
        let node = &ctx.node;
        let bmc = DriverInfo::parse(&node.driver_info).map_err(invalid_driver_info)?;
        let media = deploy_media(node)?;
        let removable = match flag(&node.driver_info, "config_via_removable")? {
            Some(v) => v,
            None => flag(&node.driver_info, "config_via_floppy")?.unwrap_or(false),
        };
        Ok(RamdiskInputs {
            bmc,
            floppy: removable || matches!(media, DeployMedia::Prebuilt { .. }),
            media,
            mode: boot_mode(node, default_mode)?,
            append: append_params(node, default_append)?,
            bootif: bootif(ctx),
            publishing: publishing(node)?,
        })
    }

    /// The agent's parameters (Ironic's order): the deploy interface's (`ipa-api-url`), the
    /// token, `boot_method=vmedia`, then `BOOTIF` when known.
    pub fn agent_params(&self, deploy: &[(String, String)], token: &str) -> Vec<(String, String)> {
        let mut params: Vec<(String, String)> = deploy.to_vec();
        params.push(("ipa-agent-token".into(), token.into()));
        params.push(("boot_method".into(), "vmedia".into()));
        if let Some(mac) = &self.bootif {
            params.push(("BOOTIF".into(), mac.as_str().to_string()));
        }
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HardwareType, Port};
    use serde_json::json;

    fn ctx(driver_info: Value) -> NodeContext {
        let mut n = Node::new(
            uuid::Uuid::new_v4(),
            HardwareType::find("redfish").unwrap(),
            crate::model::now(),
        );
        n.driver_info = driver_info.as_object().unwrap().clone();
        NodeContext::new(n, vec![])
    }

    fn defaults() -> KernelParams {
        KernelParams::parse("redfish.kernel_append_params", "nofb vga=normal").unwrap()
    }

    #[test]
    fn built_or_prebuilt_deploy_media() {
        let c = ctx(json!({"redfish_address": "http://127.0.0.1:8000",
            "deploy_kernel": "http://x/k", "deploy_ramdisk": "http://x/r"}));
        let i = RamdiskInputs::read(&c, &defaults(), BootMode::Uefi).unwrap();
        assert!(matches!(i.media, DeployMedia::Built { .. }));
        assert!(!i.floppy);
        assert_eq!(i.append.to_cmdline(), "nofb vga=normal");
        let c = ctx(json!({"redfish_address": "http://127.0.0.1:8000",
            "deploy_iso": "http://x/ipa.iso", "deploy_kernel": "http://x/k"}));
        let i = RamdiskInputs::read(&c, &defaults(), BootMode::Uefi).unwrap();
        assert_eq!(
            i.media,
            DeployMedia::Prebuilt {
                iso: "http://x/ipa.iso".into()
            }
        );
        assert!(i.floppy, "a prebuilt ISO gets its parameters from a floppy");
        let c = ctx(json!({"redfish_address": "http://127.0.0.1:8000",
            "deploy_kernel": "http://x/k", "deploy_ramdisk": "http://x/r",
            "config_via_removable": "true", "kernel_append_params": "%default% console=ttyS0"}));
        let i = RamdiskInputs::read(&c, &defaults(), BootMode::Uefi).unwrap();
        assert!(i.floppy);
        assert_eq!(i.append.to_cmdline(), "nofb vga=normal console=ttyS0");
    }

    #[test]
    fn bad_input_names_the_key() {
        for (info, want) in [
            (json!({"redfish_address": "ftp://bmc"}), "redfish_address"),
            (
                json!({"redfish_address": "http://b", "deploy_kernel": "http://x/k"}),
                "deploy_iso",
            ),
            (
                json!({"redfish_address": "http://b", "deploy_iso": "gopher://x"}),
                "deploy_iso",
            ),
            (
                json!({"redfish_address": "http://b", "deploy_iso": "/x.iso", "config_via_removable": "maybe"}),
                "config_via_removable",
            ),
            (
                json!({"redfish_address": "http://b", "deploy_iso": "/x.iso", "vmedia_publisher": "ftp"}),
                "vmedia_publisher",
            ),
            (
                json!({"redfish_address": "http://b", "deploy_iso": "/x.iso", "external_http_url": "nfs://h/x"}),
                "external_http_url",
            ),
            (
                json!({"redfish_address": "http://b", "deploy_iso": "/x.iso", "kernel_append_params": "a;b"}),
                "kernel_append_params",
            ),
        ] {
            let err = RamdiskInputs::read(&ctx(info.clone()), &defaults(), BootMode::Uefi)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{info}: {err}");
        }
    }

    #[test]
    fn agent_parameters_in_ironic_order() {
        let mut c = ctx(json!({"redfish_address": "http://b", "deploy_iso": "/x.iso"}));
        c.ports.push(Port::new(
            uuid::Uuid::new_v4(),
            c.node.uuid,
            MacAddress::parse("52:54:00:12:34:56").unwrap(),
            crate::model::now(),
        ));
        let i = RamdiskInputs::read(&c, &defaults(), BootMode::Bios).unwrap();
        let deploy = vec![(
            "ipa-api-url".to_string(),
            "http://10.0.0.1:6385".to_string(),
        )];
        let line: Vec<String> = i
            .agent_params(&deploy, "tok")
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(
            line,
            [
                "ipa-api-url=http://10.0.0.1:6385",
                "ipa-agent-token=tok",
                "boot_method=vmedia",
                "BOOTIF=52:54:00:12:34:56"
            ]
        );
    }
}
