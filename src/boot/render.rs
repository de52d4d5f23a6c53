//! Rendering boot configs from minijinja templates.
//!
//! A node's config is rendered whole from a [`BootContext`], with every entry whose inputs are
//! known and `default` pointing at the selected [`Entry`]; switching a node from `deploy` to an
//! instance entry is a new render written over the old file (atomically, by `layout`), never
//! an edit of the rendered text.
//!
//! Template selection: the format follows the interface and boot mode (`pxe` + BIOS =
//! PXELINUX, `pxe` + UEFI = GRUB, `ipxe` = iPXE script). For a format `F` the renderer looks
//! for `F-<arch>-<mode>.j2`, `F-<arch>.j2` and `F.j2`, first among the files of
//! `[pxe] template_dir`, then among the compiled-in templates of `templates/`.
//!
//! Everything that reaches a template from a node (kernel parameters, image locations, root
//! uuid, disk id) is validated first against a conservative character set: no whitespace or
//! control characters, no quotes, no `$`, `;`, `|`, `{`, `}`, `#`, `\` — nothing that PXELINUX,
//! GRUB's or iPXE's script syntax, or minijinja, would read as more than a word.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value, context};
use uuid::Uuid;

use super::{Arch, BootFilesError, BootMode, NetBoot, PxeSettings};

/// The compiled-in templates, by file name.
const BUILTIN_TEMPLATES: &[(&str, &str)] = &[
    ("pxelinux.j2", include_str!("../../templates/pxelinux.j2")),
    ("grub.j2", include_str!("../../templates/grub.j2")),
    (
        "grub-common.j2",
        include_str!("../../templates/grub-common.j2"),
    ),
    ("ipxe.j2", include_str!("../../templates/ipxe.j2")),
    ("boot.ipxe.j2", include_str!("../../templates/boot.ipxe.j2")),
];

/// Template families; an override file must start with one of these names.
const FAMILIES: &[&str] = &["pxelinux", "grub", "grub-common", "ipxe", "boot.ipxe"];

/// Linux's command line limit on x86 and arm64 (COMMAND_LINE_SIZE).
const MAX_CMDLINE: usize = 2048;
/// Longest image location (path or URL) accepted.
const MAX_LOCATION: usize = 1024;

/// The boot entry a node's config selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entry {
    /// The deploy ramdisk (ironic-python-agent).
    Deploy,
    /// Hand the boot back to the local disk.
    BootWholeDisk,
    /// Instance kernel and ramdisk with `root=UUID=<root uuid>`.
    BootPartition,
    /// Instance kernel and ramdisk as the running system (`root=/dev/ram0`).
    BootRamdisk,
}

impl Entry {
    /// The label used in the configs (Ironic's names).
    pub fn label(self) -> &'static str {
        match self {
            Entry::Deploy => "deploy",
            Entry::BootWholeDisk => "boot_whole_disk",
            Entry::BootPartition => "boot_partition",
            Entry::BootRamdisk => "boot_ramdisk",
        }
    }
}

/// The config format a node's firmware reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigFormat {
    Pxelinux,
    Grub,
    Ipxe,
}

impl ConfigFormat {
    /// The format for an interface, boot mode and architecture; PXELINUX and iPXE's BIOS
    /// builds only exist for x86.
    pub fn select(interface: NetBoot, mode: BootMode, arch: Arch) -> Result<Self, BootFilesError> {
        match (interface, mode, arch) {
            (_, BootMode::Bios, Arch::Aarch64) => Err(BootFilesError::Unsupported(format!(
                "boot mode bios on {} (aarch64 boots UEFI only)",
                arch.as_str()
            ))),
            (NetBoot::Pxe, BootMode::Bios, _) => Ok(ConfigFormat::Pxelinux),
            (NetBoot::Pxe, BootMode::Uefi, _) => Ok(ConfigFormat::Grub),
            (NetBoot::Ipxe, _, _) => Ok(ConfigFormat::Ipxe),
        }
    }

    fn family(self) -> &'static str {
        match self {
            ConfigFormat::Pxelinux => "pxelinux",
            ConfigFormat::Grub => "grub",
            ConfigFormat::Ipxe => "ipxe",
        }
    }
}

/// One kernel command-line parameter: `key` or `key=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelParam {
    key: String,
    value: Option<String>,
}

impl KernelParam {
    pub fn key(&self) -> &str {
        &self.key
    }
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }
}

/// A validated list of kernel parameters, rendered space-separated in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelParams(Vec<KernelParam>);

impl KernelParams {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a whitespace-separated command line (`nofb vga=normal`); `field` names where it
    /// came from in errors. Only spaces separate parameters: any other whitespace or control
    /// character (a newline in a node field, say) is refused, not treated as a separator.
    pub fn parse(field: &str, text: &str) -> Result<Self, BootFilesError> {
        let mut params = Self::new();
        for word in text.split(' ').filter(|w| !w.is_empty()) {
            match word.split_once('=') {
                Some((k, v)) => params.push(field, k, Some(v))?,
                None => params.push(field, word, None)?,
            }
        }
        Ok(params)
    }

    /// Like [`KernelParams::parse`], expanding `%default%` to `default` (Ironic's convention
    /// for node-level `kernel_append_params` that extend the configured ones).
    pub fn parse_with_default(
        field: &str,
        text: &str,
        default: &KernelParams,
    ) -> Result<Self, BootFilesError> {
        let mut params = Self::new();
        for word in text.split(' ').filter(|w| !w.is_empty()) {
            if word == "%default%" {
                params.extend(default);
                continue;
            }
            match word.split_once('=') {
                Some((k, v)) => params.push(field, k, Some(v))?,
                None => params.push(field, word, None)?,
            }
        }
        Ok(params)
    }

    /// Appends `key` or `key=value` after validating both.
    pub fn push(
        &mut self,
        field: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), BootFilesError> {
        validate_param_key(field, key)?;
        if let Some(v) = value {
            validate_param_value(field, key, v)?;
        }
        let param = KernelParam {
            key: key.to_string(),
            value: value.map(str::to_string),
        };
        let new_len = self.cmdline_len() + usize::from(!self.0.is_empty()) + param_len(&param);
        if new_len > MAX_CMDLINE {
            return Err(BootFilesError::invalid(
                field,
                key,
                format!("the kernel command line would exceed {MAX_CMDLINE} bytes"),
            ));
        }
        self.0.push(param);
        Ok(())
    }

    /// Appends already-validated parameters.
    pub fn extend(&mut self, other: &KernelParams) {
        self.0.extend(other.0.iter().cloned());
    }

    pub fn iter(&self) -> impl Iterator<Item = &KernelParam> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The parameters as one command-line string.
    pub fn to_cmdline(&self) -> String {
        let mut out = String::with_capacity(self.cmdline_len());
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(&p.key);
            if let Some(v) = &p.value {
                out.push('=');
                out.push_str(v);
            }
        }
        out
    }

    fn cmdline_len(&self) -> usize {
        let seps = self.0.len().saturating_sub(1);
        self.0.iter().map(param_len).sum::<usize>() + seps
    }
}

fn param_len(p: &KernelParam) -> usize {
    p.key.len() + p.value.as_ref().map_or(0, |v| v.len() + 1)
}

/// Keys start with a letter or digit (a leading `-` would read as an option to iPXE's `kernel`)
/// and use letters, digits, `_`, `-`, `.` (`ipa-api-url`, `rd.shell`, `BOOTIF`).
fn validate_param_key(field: &str, key: &str) -> Result<(), BootFilesError> {
    if key.is_empty() {
        return Err(BootFilesError::invalid(field, key, "empty parameter name"));
    }
    if key.len() > 128 {
        return Err(BootFilesError::invalid(
            field,
            key,
            "parameter name longer than 128 bytes",
        ));
    }
    if !key.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(BootFilesError::invalid(
            field,
            key,
            "a parameter name must start with a letter or digit",
        ));
    }
    if let Some((i, c)) = key
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || "_-.".contains(*c)))
    {
        return Err(BootFilesError::invalid(
            field,
            key,
            format!("character {c:?} at byte {i} is not allowed in a parameter name"),
        ));
    }
    Ok(())
}

/// Values: letters, digits and `-_.:/,=+@%~` — URLs without query strings, `ttyS0,115200n8`,
/// `UUID=...`, `ip=` specs. Anything else could end a token or start syntax in some loader.
fn validate_param_value(field: &str, key: &str, value: &str) -> Result<(), BootFilesError> {
    let what = format!("{key}={value}");
    if value.is_empty() {
        return Err(BootFilesError::invalid(
            field,
            &what,
            "empty value after '='",
        ));
    }
    if let Some((i, c)) = value
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || "-_.:/,=+@%~".contains(*c)))
    {
        return Err(BootFilesError::invalid(
            field,
            &what,
            format!("character {c:?} at byte {i} of the value is not allowed"),
        ));
    }
    Ok(())
}

/// Characters refused in locations: whitespace and controls are caught separately; these
/// would be quoting, expansion, comments or command separators in one of the loaders.
const LOCATION_FORBIDDEN: &str = "\"'`\\$;|{}<>#^*[]()!";

/// Validates an image location (a path in a root or an http URL) for use in a config.
pub fn validate_location(field: &str, value: &str) -> Result<(), BootFilesError> {
    if value.is_empty() {
        return Err(BootFilesError::invalid(field, value, "empty location"));
    }
    if value.len() > MAX_LOCATION {
        let start: String = value.chars().take(64).collect();
        return Err(BootFilesError::invalid(
            field,
            &format!("{start}..."),
            format!("location longer than {MAX_LOCATION} bytes"),
        ));
    }
    if value.starts_with('-') {
        return Err(BootFilesError::invalid(
            field,
            value,
            "a location must not start with '-' (it would read as an option)",
        ));
    }
    if let Some((i, c)) = value
        .char_indices()
        .find(|(_, c)| !c.is_ascii_graphic() || LOCATION_FORBIDDEN.contains(*c))
    {
        return Err(BootFilesError::invalid(
            field,
            value,
            format!("character {c:?} at byte {i} is not allowed in a location"),
        ));
    }
    Ok(())
}

/// A filesystem UUID (`root=UUID=...`): hex digits and dashes (FAT volume ids are `ABCD-1234`).
fn validate_root_uuid(value: &str) -> Result<(), BootFilesError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(BootFilesError::invalid(
            "root_uuid",
            value,
            "expected a filesystem UUID (hex digits and '-')",
        ))
    }
}

/// A disk identifier as IPA reports it for whole-disk images (`0x1234abcd`, or a GPT uuid).
fn validate_disk_id(value: &str) -> Result<(), BootFilesError> {
    let hex = value.strip_prefix("0x").unwrap_or(value);
    let ok = !hex.is_empty()
        && value.len() <= 64
        && hex.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(BootFilesError::invalid(
            "disk_id",
            value,
            "expected an MBR signature (0x1234abcd) or a GPT uuid",
        ))
    }
}

/// A kernel and ramdisk pair, as locations the firmware's loader understands: paths relative
/// to the tftp root for PXELINUX, absolute paths in the server root for GRUB, URLs for iPXE.
/// `layout::Layout::image_locations` computes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePair {
    pub kernel: String,
    pub ramdisk: String,
}

/// Everything a node's config is rendered from. Plain data, independent of the node model.
#[derive(Debug, Clone)]
pub struct BootContext {
    pub node_uuid: Uuid,
    pub interface: NetBoot,
    pub boot_mode: BootMode,
    pub arch: Arch,
    /// The entry `default` selects.
    pub entry: Entry,
    /// Deploy kernel and ramdisk; needed for [`Entry::Deploy`].
    pub deploy: Option<ImagePair>,
    /// Deploy ramdisk command line: configured defaults, node params, `ipa-api-url`, ...
    pub deploy_params: KernelParams,
    /// Instance kernel and ramdisk; needed for the partition and ramdisk entries.
    pub instance: Option<ImagePair>,
    /// Extra command line of the instance entries (`ramdisk_kernel_arguments`, ...).
    pub instance_params: KernelParams,
    /// Root filesystem UUID of a partition image; needed for [`Entry::BootPartition`].
    pub root_uuid: Option<String>,
    /// Disk identifier of a whole-disk image; PXELINUX then chains that disk's MBR.
    pub disk_id: Option<String>,
}

impl BootContext {
    /// Checks that the selected entry has its inputs and that every value is safe to render.
    fn validate(&self) -> Result<(), BootFilesError> {
        let entry = self.entry.label();
        match self.entry {
            Entry::Deploy if self.deploy.is_none() => {
                return Err(BootFilesError::MissingInput {
                    entry,
                    what: "the deploy kernel and ramdisk",
                });
            }
            Entry::BootPartition | Entry::BootRamdisk if self.instance.is_none() => {
                return Err(BootFilesError::MissingInput {
                    entry,
                    what: "the instance kernel and ramdisk",
                });
            }
            Entry::BootPartition if self.root_uuid.is_none() => {
                return Err(BootFilesError::MissingInput {
                    entry,
                    what: "the root filesystem uuid",
                });
            }
            _ => {}
        }
        if let Some(d) = &self.deploy {
            validate_location("deploy_kernel", &d.kernel)?;
            validate_location("deploy_ramdisk", &d.ramdisk)?;
        }
        if let Some(i) = &self.instance {
            validate_location("kernel", &i.kernel)?;
            validate_location("ramdisk", &i.ramdisk)?;
        }
        if let Some(r) = &self.root_uuid {
            validate_root_uuid(r)?;
        }
        if let Some(d) = &self.disk_id {
            validate_disk_id(d)?;
        }
        Ok(())
    }
}

/// The name iPXE gives a downloaded image: the last path segment of its URL, which the
/// kernel's EFI stub needs as `initrd=<name>` to find the initrd under UEFI.
fn image_name(location: &str) -> &str {
    let path = location.split(['?', '#']).next().unwrap_or(location);
    path.rsplit('/').next().unwrap_or(path)
}

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

fn template_error(name: &str, e: &minijinja::Error) -> BootFilesError {
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
fn override_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, BootFilesError> {
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

fn is_known_template_stem(stem: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(interface: NetBoot, mode: BootMode, entry: Entry) -> BootContext {
        let mut deploy_params = KernelParams::parse("t", "nofb vga=normal").unwrap();
        deploy_params
            .push("t", "ipa-api-url", Some("http://10.0.2.2:6385"))
            .unwrap();
        BootContext {
            node_uuid: Uuid::parse_str("1be26c0b-03f2-4d2e-ae87-c02d7f33c123").unwrap(),
            interface,
            boot_mode: mode,
            arch: Arch::X86_64,
            entry,
            deploy: Some(ImagePair {
                kernel: "1be26c0b-03f2-4d2e-ae87-c02d7f33c123/deploy_kernel".into(),
                ramdisk: "1be26c0b-03f2-4d2e-ae87-c02d7f33c123/deploy_ramdisk".into(),
            }),
            deploy_params,
            instance: None,
            instance_params: KernelParams::new(),
            root_uuid: None,
            disk_id: None,
        }
    }

    fn renderer() -> Renderer {
        Renderer::new(&PxeSettings::default()).unwrap()
    }

    #[test]
    fn kernel_params_accept_real_world_values() {
        let p = KernelParams::parse(
            "t",
            "console=ttyS0,115200n8 ipa-api-url=http://192.0.2.1:6385 rd.shell BOOTIF=01-aa-bb \
             ip=10.0.0.2::10.0.0.1:255.255.255.0:host:eth0:off root=UUID=ab-cd",
        )
        .unwrap();
        assert_eq!(p.iter().count(), 6);
        assert_eq!(p.iter().nth(2).unwrap().value(), None);
    }

    #[test]
    fn kernel_params_refuse_injection() {
        for bad in [
            "a=b\ninit=/bin/sh",
            "a=b\rc",
            "a=\"b c\"",
            "a='b'",
            "a=b;reboot",
            "a=${net0/ip}",
            "a={{ x }}",
            "a={%x%}",
            "a=b||chain",
            "a=b#c",
            "a=b\\c",
            "a=b\tc",
            "-n=x",
            "=x",
            "a=",
            "kéy=1",
            "a=\u{0}",
        ] {
            let err = KernelParams::parse("node.kernel_append_params", bad)
                .expect_err(bad)
                .to_string();
            assert!(err.contains("node.kernel_append_params"), "{bad}: {err}");
        }
    }

    #[test]
    fn kernel_params_are_bounded_and_expand_default() {
        let long = format!("a={}", "x".repeat(MAX_CMDLINE));
        assert!(KernelParams::parse("t", &long).is_err());
        let default = KernelParams::parse("t", "nofb vga=normal").unwrap();
        let p =
            KernelParams::parse_with_default("t", "console=ttyS0 %default% x", &default).unwrap();
        assert_eq!(p.to_cmdline(), "console=ttyS0 nofb vga=normal x");
    }

    #[test]
    fn locations_refuse_syntax_and_options() {
        for bad in [
            "",
            "-n evil",
            "a b",
            "a\nb",
            "http://x/${mac}",
            "x;y",
            "x\"y",
            "{{x}}",
            "a#b",
        ] {
            assert!(validate_location("deploy_kernel", bad).is_err(), "{bad:?}");
        }
        validate_location(
            "deploy_kernel",
            "http://10.0.2.2:8080/v1/AUTH_t/c/k?temp_url_sig=ab&temp_url_expires=1",
        )
        .unwrap();
    }

    #[test]
    fn entry_inputs_are_required() {
        let r = renderer();
        let mut c = ctx(NetBoot::Pxe, BootMode::Bios, Entry::BootPartition);
        let e = r.render_node_config(&c).unwrap_err().to_string();
        assert!(
            e.contains("boot_partition") && e.contains("instance"),
            "{e}"
        );
        c.instance = Some(ImagePair {
            kernel: "k".into(),
            ramdisk: "r".into(),
        });
        let e = r.render_node_config(&c).unwrap_err().to_string();
        assert!(e.contains("root filesystem uuid"), "{e}");
        c.root_uuid = Some("bad uuid".into());
        assert!(r.render_node_config(&c).is_err());
        c.root_uuid = Some("4f0c3a4e-58c6-4b2b-9d5e-0d6f1c2a3b4c".into());
        let out = r.render_node_config(&c).unwrap();
        assert!(
            out.contains("root=UUID=4f0c3a4e-58c6-4b2b-9d5e-0d6f1c2a3b4c"),
            "{out}"
        );
        assert!(out.contains("DEFAULT boot_partition"), "{out}");
    }

    #[test]
    fn format_selection() {
        assert_eq!(
            ConfigFormat::select(NetBoot::Pxe, BootMode::Bios, Arch::X86_64).unwrap(),
            ConfigFormat::Pxelinux
        );
        assert_eq!(
            ConfigFormat::select(NetBoot::Pxe, BootMode::Uefi, Arch::Aarch64).unwrap(),
            ConfigFormat::Grub
        );
        assert_eq!(
            ConfigFormat::select(NetBoot::Ipxe, BootMode::Uefi, Arch::X86_64).unwrap(),
            ConfigFormat::Ipxe
        );
        assert!(ConfigFormat::select(NetBoot::Pxe, BootMode::Bios, Arch::Aarch64).is_err());
    }

    #[test]
    fn ipxe_names_the_initrd_on_the_kernel_line() {
        let r = renderer();
        let mut c = ctx(NetBoot::Ipxe, BootMode::Uefi, Entry::Deploy);
        c.deploy = Some(ImagePair {
            kernel: "http://192.0.2.1:8080/u/deploy_kernel".into(),
            ramdisk: "http://192.0.2.1:8080/u/deploy_ramdisk?sig=1&exp=2".into(),
        });
        let out = r.render_node_config(&c).unwrap();
        let kernel_line = out
            .lines()
            .find(|l| l.starts_with("kernel "))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            kernel_line.contains(" initrd=deploy_ramdisk "),
            "{kernel_line}"
        );
    }

    #[test]
    fn overrides_win_by_specificity_and_unknown_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("grub.j2"), "generic {{ entry }}\n").unwrap();
        std::fs::write(
            dir.path().join("grub-aarch64-uefi.j2"),
            "arm {{ entry }} {{ arch }}\n",
        )
        .unwrap();
        let settings = PxeSettings {
            template_dir: Some(dir.path().to_path_buf()),
            ..PxeSettings::default()
        };
        let r = Renderer::new(&settings).unwrap();
        let mut c = ctx(NetBoot::Pxe, BootMode::Uefi, Entry::Deploy);
        assert_eq!(r.render_node_config(&c).unwrap(), "generic deploy\n");
        c.arch = Arch::Aarch64;
        assert_eq!(r.render_node_config(&c).unwrap(), "arm deploy aarch64\n");
        // PXELINUX has no override: the built-in one is used.
        c.boot_mode = BootMode::Bios;
        c.arch = Arch::X86_64;
        assert!(r.render_node_config(&c).unwrap().contains("LABEL deploy"));

        std::fs::write(dir.path().join("grub-x86-64.j2"), "typo\n").unwrap();
        let e = Renderer::new(&settings).unwrap_err().to_string();
        assert!(e.contains("grub-x86-64.j2"), "{e}");
    }

    #[test]
    fn broken_override_fails_at_start_and_undefined_variables_fail_at_render() {
        let dir = tempfile::tempdir().unwrap();
        let settings = PxeSettings {
            template_dir: Some(dir.path().to_path_buf()),
            ..PxeSettings::default()
        };
        std::fs::write(dir.path().join("ipxe.j2"), "{% if %}\n").unwrap();
        let e = Renderer::new(&settings).unwrap_err().to_string();
        assert!(e.contains("ipxe.j2"), "{e}");
        std::fs::write(dir.path().join("ipxe.j2"), "{{ no_such_variable }}\n").unwrap();
        let r = Renderer::new(&settings).unwrap();
        let e = r
            .render_node_config(&ctx(NetBoot::Ipxe, BootMode::Bios, Entry::Deploy))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("override/ipxe.j2") && e.contains("undefined"),
            "{e}"
        );
    }

    #[test]
    fn image_names() {
        assert_eq!(image_name("http://h/a/deploy_ramdisk"), "deploy_ramdisk");
        assert_eq!(image_name("http://h/a/r.img?sig=1/2"), "r.img");
        assert_eq!(image_name("uuid/ramdisk"), "ramdisk");
    }
}
