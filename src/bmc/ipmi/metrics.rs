//! Prometheus metrics of the IPMI client (`ironboot_ipmi_*`): one count and one duration per
//! ipmitool run, labelled by command (`power status`, `chassis bootdev`, ...) and outcome
//! (`ok`, `auth_failed`, `unreachable`, `timeout`, `refused`, ...); the soft power offs that
//! ended in a hard one; and boot devices the BMC did not keep.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CommandLabels {
    pub command: &'static str,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CommandOnlyLabels {
    pub command: &'static str,
}

type HistogramFamily = Family<CommandOnlyLabels, Histogram, fn() -> Histogram>;

#[derive(Debug, Clone)]
pub struct IpmiMetrics {
    pub commands: Family<CommandLabels, Counter>,
    pub duration: HistogramFamily,
    pub soft_off_fallbacks: Counter,
    pub boot_device_mismatches: Counter,
}

impl Default for IpmiMetrics {
    fn default() -> Self {
        Self {
            commands: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(crate::metrics::duration_buckets())
            }),
            soft_off_fallbacks: Counter::default(),
            boot_device_mismatches: Counter::default(),
        }
    }
}

impl IpmiMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("ironboot_ipmi");
        r.register(
            "commands",
            "ipmitool runs, by command and outcome (retries count once each)",
            m.commands.clone(),
        );
        r.register(
            "command_duration_seconds",
            "Time taken by one ipmitool run",
            m.duration.clone(),
        );
        r.register(
            "soft_power_off_fallbacks",
            "Soft power offs that timed out and were finished with a hard power off",
            m.soft_off_fallbacks.clone(),
        );
        r.register(
            "boot_device_mismatches",
            "Boot devices the BMC accepted but did not hold when read back",
            m.boot_device_mismatches.clone(),
        );
        m
    }

    pub(crate) fn record(&self, command: &'static str, outcome: &'static str, seconds: f64) {
        self.commands
            .get_or_create(&CommandLabels { command, outcome })
            .inc();
        self.duration
            .get_or_create(&CommandOnlyLabels { command })
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_exposed() {
        let mut reg = Registry::default();
        let m = IpmiMetrics::register(&mut reg);
        m.record("power status", "ok", 0.05);
        m.record("power status", "unreachable", 2.0);
        m.soft_off_fallbacks.inc();
        let text = crate::metrics::encode(&reg);
        for want in [
            r#"ironboot_ipmi_commands_total{command="power status",outcome="ok"} 1"#,
            r#"ironboot_ipmi_commands_total{command="power status",outcome="unreachable"} 1"#,
            r#"ironboot_ipmi_command_duration_seconds_count{command="power status"} 2"#,
            "ironboot_ipmi_soft_power_off_fallbacks_total 1",
            "ironboot_ipmi_boot_device_mismatches_total 0",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
    }
}
