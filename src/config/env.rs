//! `IRONBOOT_*` environment variables as configuration keys.

use super::ConfigError;
use crate::settings::SettingError;

/// Sets `table[section][key]` from `IRONBOOT_SECTION__KEY` variables (see the module docs).
pub(super) fn apply(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    const TOP_LEVEL: &[&str] = &["data_dir", "host", "my_ip"];
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("IRONBOOT_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let path: Vec<&str> = match rest.split_once("__") {
            Some((section, key)) if !section.is_empty() && !key.is_empty() => vec![section, key],
            Some(_) => {
                return Err(
                    SettingError::new(name, raw, "expected IRONBOOT_<SECTION>__<KEY>").into(),
                );
            }
            None if TOP_LEVEL.contains(&rest.as_str()) => vec![rest.as_str()],
            // Other IRONBOOT_* variables (IRONBOOT_CONFIG, test switches) are not config keys.
            None => continue,
        };
        let value = parse_value(raw);
        let mut cursor = &mut *table;
        for part in &path[..path.len() - 1] {
            let entry = cursor
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cursor = entry
                .as_table_mut()
                .ok_or_else(|| SettingError::new(name, raw, format!("{part} is not a section")))?;
        }
        cursor.insert(path[path.len() - 1].to_string(), value);
    }
    Ok(())
}

/// A value read as TOML when it parses as TOML (numbers, booleans, arrays), else a string.
fn parse_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}
