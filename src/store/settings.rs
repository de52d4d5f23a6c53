//! `[database]`: which database holds nodes, ports and conductors.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::settings::SettingError;

/// `[database]` as written in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://<path>`; default `sqlite://<data_dir>/ironboot.sqlite`.
    pub url: Option<String>,
}

/// The database the service opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// The embedded default: one file, one process.
    Sqlite { path: PathBuf },
}

impl DatabaseSettings {
    /// The URL in effect (the default lives in `data_dir`) and the database it names.
    pub fn resolve(&self, data_dir: &Path) -> Result<(String, Database), SettingError> {
        let url = self
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("ironboot.sqlite").display()));
        match url.strip_prefix("sqlite://") {
            Some(p) if !p.is_empty() => {
                let path = PathBuf::from(p);
                Ok((url, Database::Sqlite { path }))
            }
            _ => Err(SettingError::new(
                "database.url",
                &url,
                "only sqlite://<path> is supported by this build",
            )),
        }
    }
}
