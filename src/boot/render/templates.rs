//! Template lookup (override directory first, then compiled in) and rendering.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value, context};

use crate::boot::{Arch, BootFilesError, BootMode, PxeSettings};

use super::context::image_name;
use super::*;

/// The compiled-in templates, by file name.
pub(super) const BUILTIN_TEMPLATES: &[(&str, &str)] = &[
    (
        "pxelinux.j2",
        include_str!("../../../templates/pxelinux.j2"),
    ),
    ("grub.j2", include_str!("../../../templates/grub.j2")),
    (
        "grub-common.j2",
        include_str!("../../../templates/grub-common.j2"),
    ),
    ("ipxe.j2", include_str!("../../../templates/ipxe.j2")),
    (
        "boot.ipxe.j2",
        include_str!("../../../templates/boot.ipxe.j2"),
    ),
];

/// Template families; an override file must start with one of these names.
pub(super) const FAMILIES: &[&str] = &["pxelinux", "grub", "grub-common", "ipxe", "boot.ipxe"];

/// Renders node configs, `boot.ipxe` and the common GRUB config.
#[derive(Debug)]
pub struct Renderer {
    env: Environment<'static>,
    /// Override template names (`override/<file>`) by file name.
    overrides: BTreeMap<String, PathBuf>,
    ipxe_timeout_ms: u64,
    ipxe_retries: u32,
    ipxe_fallback_script: Option<String>,
}

impl Renderer {
    /// Compiles the built-in templates and every override in `settings.template_dir`; a
    /// template that does not compile is an error here, at start-up, not at a node's boot.
    pub fn new(settings: &PxeSettings) -> Result<Self, BootFilesError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .map_err(|e| template_error("(syntax)", &e))?;
        env.set_syntax(syntax);
        for (name, source) in BUILTIN_TEMPLATES {
            env.add_template_owned(format!("builtin/{name}"), *source)
                .map_err(|e| template_error(name, &e))?;
        }
        let mut overrides = BTreeMap::new();
        if let Some(dir) = &settings.template_dir {
            for (file, path) in override_files(dir)? {
                let source = std::fs::read_to_string(&path)
                    .map_err(|e| BootFilesError::io("read template", &path, e))?;
                env.add_template_owned(format!("override/{file}"), source)
                    .map_err(|e| template_error(&path.display().to_string(), &e))?;
                overrides.insert(file, path);
            }
        }
        Ok(Self {
            env,
            overrides,
            ipxe_timeout_ms: u64::from(settings.ipxe_timeout_secs) * 1000,
            ipxe_retries: settings.ipxe_retries,
            ipxe_fallback_script: settings.ipxe_fallback_script.clone(),
        })
    }

    /// The override files in use, by template file name.
    pub fn overrides(&self) -> &BTreeMap<String, PathBuf> {
        &self.overrides
    }

    /// Renders a node's config (`<root>/<uuid>/config`).
    pub fn render_node_config(&self, ctx: &BootContext) -> Result<String, BootFilesError> {
        ctx.validate()?;
        let format = ConfigFormat::select(ctx.interface, ctx.boot_mode, ctx.arch)?;
        let name = self.select(format.family(), Some((ctx.arch, ctx.boot_mode)))?;
        let deploy = ctx.deploy.as_ref();
        let instance = ctx.instance.as_ref();
        let vars = context! {
            node_uuid => ctx.node_uuid.to_string(),
            interface => ctx.interface.as_str(),
            boot_mode => ctx.boot_mode.as_str(),
            arch => ctx.arch.as_str(),
            entry => ctx.entry.label(),
            deploy_kernel => deploy.map(|d| d.kernel.clone()),
            deploy_ramdisk => deploy.map(|d| d.ramdisk.clone()),
            deploy_ramdisk_name => deploy.map(|d| image_name(&d.ramdisk).to_string()),
            deploy_params => ctx.deploy_params.to_cmdline(),
            kernel => instance.map(|i| i.kernel.clone()),
            ramdisk => instance.map(|i| i.ramdisk.clone()),
            ramdisk_name => instance.map(|i| image_name(&i.ramdisk).to_string()),
            instance_params => ctx.instance_params.to_cmdline(),
            root_uuid => ctx.root_uuid.clone(),
            disk_id => ctx.disk_id.clone(),
            ipxe_timeout_ms => self.ipxe_timeout_ms,
            ipxe_retries => self.ipxe_retries,
        };
        self.render(&name, vars)
    }

    /// Renders `boot.ipxe`, the script at the top of the http root every iPXE client chains.
    pub fn render_boot_ipxe(&self) -> Result<String, BootFilesError> {
        let name = self.select("boot.ipxe", None)?;
        let vars = context! {
            mac_script_dir => "pxelinux.cfg",
            fallback_script => self.ipxe_fallback_script.clone(),
        };
        self.render(&name, vars)
    }

    /// Renders `grub/grub.cfg`, the config GRUB reads first when it finds no per-MAC config
    /// under its prefix: it loads `/<mac>.conf` from the server root.
    pub fn render_grub_common(&self) -> Result<String, BootFilesError> {
        let name = self.select("grub-common", None)?;
        self.render(&name, context! {})
    }

    /// Picks the most specific template: overrides first, then compiled-in.
    fn select(
        &self,
        family: &str,
        variant: Option<(Arch, BootMode)>,
    ) -> Result<String, BootFilesError> {
        let mut candidates = Vec::with_capacity(3);
        if let Some((arch, mode)) = variant {
            candidates.push(format!("{family}-{}-{}.j2", arch.as_str(), mode.as_str()));
            candidates.push(format!("{family}-{}.j2", arch.as_str()));
        }
        candidates.push(format!("{family}.j2"));
        for prefix in ["override", "builtin"] {
            for file in &candidates {
                let name = format!("{prefix}/{file}");
                if self.env.get_template(&name).is_ok() {
                    return Ok(name);
                }
            }
        }
        Err(BootFilesError::Template {
            name: family.to_string(),
            detail: format!("no template found (looked for {})", candidates.join(", ")),
        })
    }

    fn render(&self, name: &str, vars: Value) -> Result<String, BootFilesError> {
        let tmpl = self
            .env
            .get_template(name)
            .map_err(|e| template_error(name, &e))?;
        let mut out = tmpl.render(vars).map_err(|e| template_error(name, &e))?;
        if !out.ends_with('\n') {
            out.push('\n');
        }
        Ok(out)
    }
}

pub(super) fn template_error(name: &str, e: &minijinja::Error) -> BootFilesError {
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    BootFilesError::Template {
        name: name.to_string(),
        detail,
    }
}

/// The `*.j2` files of the override directory that belong to a known family; others are
/// refused so a misspelt override does not silently fall back to the built-in template.
pub(super) fn override_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, BootFilesError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| BootFilesError::io("read template dir", dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| BootFilesError::io("read template dir", dir, e))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = file.strip_suffix(".j2") else {
            continue;
        };
        if !is_known_template_stem(stem) {
            return Err(BootFilesError::invalid(
                "pxe.template_dir file",
                &file,
                format!(
                    "not a known template (families: {}; optionally -<arch>[-<mode>])",
                    FAMILIES.join(", ")
                ),
            ));
        }
        files.push((file, entry.path()));
    }
    files.sort();
    Ok(files)
}

pub(super) fn is_known_template_stem(stem: &str) -> bool {
    let arches = [Arch::X86_64, Arch::Aarch64];
    let modes = [BootMode::Bios, BootMode::Uefi];
    FAMILIES.iter().any(|family| {
        stem == *family
            || arches.iter().any(|a| {
                stem == format!("{family}-{}", a.as_str())
                    || modes
                        .iter()
                        .any(|m| stem == format!("{family}-{}-{}", a.as_str(), m.as_str()))
            })
    })
}
