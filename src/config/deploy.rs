//! `[deploy]`: where the HTTP root lives and how nodes and BMCs reach it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[deploy]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DeploySettings {
    /// Root served over HTTP; default `<data_dir>/httpboot`.
    pub http_root: Option<PathBuf>,
    /// URL of `http_root` as nodes see it; default `http://<my_ip>:<http port>`.
    pub http_url: Option<String>,
    /// URL given to BMCs for virtual media, when it differs from `http_url`.
    pub external_http_url: Option<String>,
}
