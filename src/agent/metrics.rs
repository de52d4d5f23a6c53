//! Agent client metrics: commands sent, by command and outcome, and how long they took.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub command: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandNameLabel {
    pub command: String,
}

#[derive(Debug, Clone)]
pub struct AgentMetrics {
    commands: Family<CommandLabels, Counter>,
    durations: Family<CommandNameLabel, Histogram>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics {
            commands: Family::default(),
            durations: Family::new_with_constructor(|| {
                Histogram::new(crate::metrics::duration_buckets())
            }),
        }
    }
}

impl AgentMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = AgentMetrics::default();
        registry.register(
            "ironboot_agent_commands",
            "Requests to ironic-python-agent, by command and outcome",
            m.commands.clone(),
        );
        registry.register(
            "ironboot_agent_command_duration_seconds",
            "Time one request to ironic-python-agent took",
            m.durations.clone(),
        );
        m
    }

    pub fn record(&self, command: &str, outcome: &str, seconds: f64) {
        self.commands
            .get_or_create(&CommandLabels {
                command: command.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.durations
            .get_or_create(&CommandNameLabel {
                command: command.to_string(),
            })
            .observe(seconds);
    }
}
