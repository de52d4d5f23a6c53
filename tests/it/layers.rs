//! The module map of ARCHITECTURE.md, checked: leaf services never reach up into the
//! conductor, the API or the service wiring; `model` depends on nothing; `driver` only on
//! `model`.

use std::path::{Path, PathBuf};

/// Leaf modules and the crate modules each may not name.
const LEAVES: &[&str] = &[
    "boot", "bmc", "images", "media", "publish", "serve", "agent", "store", "model", "driver",
];
const UPPER: &[&str] = &["conductor", "api", "service", "config"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The crate modules a source text names (`crate::x`), comments included: a doc link to the
/// conductor is a dependency of the reader, if not of the compiler.
fn named_modules(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        found.push(name);
    }
    found
}

fn violations(leaf: &str, file: &Path, text: &str) -> Vec<String> {
    named_modules(text)
        .into_iter()
        .filter(|m| match leaf {
            "model" => m != "model",
            "driver" => m != "model" && m != "driver",
            _ => UPPER.contains(&m.as_str()),
        })
        .map(|m| format!("{} names crate::{m}", file.display()))
        .collect()
}

#[test]
fn leaf_modules_do_not_import_the_layers_above_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut problems = Vec::new();
    for leaf in LEAVES {
        let mut files = Vec::new();
        rust_files(&src.join(leaf), &mut files);
        assert!(!files.is_empty(), "src/{leaf} has no .rs files");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            problems.extend(violations(leaf, &f, &text));
        }
    }
    assert!(
        problems.is_empty(),
        "layering broken (see ARCHITECTURE.md):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_check_sees_what_it_must_refuse() {
    let f = Path::new("src/boot/x.rs");
    assert_eq!(
        violations("boot", f, "use crate::conductor::task::Task;").len(),
        1
    );
    assert_eq!(
        violations("boot", f, "use crate::images::ImageCache;"),
        Vec::<String>::new()
    );
    assert_eq!(violations("model", f, "use crate::store::Store;").len(), 1);
    assert_eq!(
        violations("driver", f, "use crate::boot::BootMode;").len(),
        1
    );
    assert_eq!(
        named_modules("a crate::api::x and crate::service"),
        ["api", "service"]
    );
}
