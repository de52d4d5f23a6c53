//! The configuration: a TOML file and `IRONBOOT_*` variables (the input is the file, then a
//! NUL, then `KEY=VALUE` lines). Anything either loads or is refused with an error; what
//! loads prints (`config show`) to a file that loads back to the same configuration.
#![no_main]

use std::io::Write;

use ironboot::config::{Config, Overrides};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (file, env) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    // A fixed host name and address unless the input sets them: deriving them asks the
    // system (slow, and not what is being fuzzed).
    let fixed = [("IRONBOOT_HOST", "fuzz"), ("IRONBOOT_MY_IP", "192.0.2.1")];
    let env: Vec<(String, String)> = fixed
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .chain(String::from_utf8_lossy(env).lines().map(String::from))
        .collect::<Vec<_>>()
        .iter()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("IRONBOOT_") && *k != "IRONBOOT_CONFIG")
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ironboot.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(file)
        .unwrap();
    // A data directory of our own, so nothing outside the temporary directory is touched.
    let overrides = Overrides {
        data_dir: Some(dir.path().join("data")),
        ..Default::default()
    };
    let Ok(config) = Config::load_with_env(Some(&path), &env, &overrides) else {
        return;
    };
    let shown = dir.path().join("shown.toml");
    std::fs::write(&shown, config.to_toml()).unwrap();
    let again = Config::load_with_env(Some(&shown), &[], &overrides).unwrap_or_else(|e| {
        panic!(
            "config show output does not load: {e}\n{}",
            config.to_toml()
        )
    });
    assert_eq!(again, config, "config show does not round-trip");
});
