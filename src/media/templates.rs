//! The boot loader configs of boot ISOs, rendered with minijinja from `templates/media/`
//! (compiled in) or from the `template_dir` setting.

use std::path::Path;

use super::MediaError;
use minijinja::{Environment, UndefinedBehavior};

const ISOLINUX: &str = "isolinux.cfg.j2";
const GRUB: &str = "grub.cfg.j2";
const BUILT_IN: [(&str, &str); 2] = [
    (
        ISOLINUX,
        include_str!("../../templates/media/isolinux.cfg.j2"),
    ),
    (GRUB, include_str!("../../templates/media/grub.cfg.j2")),
];

/// What both templates see.
#[derive(Debug)]
pub(crate) struct BootContext<'a> {
    pub kernel: &'a str,
    pub ramdisk: &'a str,
    pub cmdline: &'a str,
    pub grub_args: &'a str,
    pub timeout: u32,
}

pub(crate) struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// Loads the built-in templates, replacing each with `dir/<name>` when that file exists.
    /// A template with a syntax error is refused here, not at the first build.
    pub(crate) fn load(dir: Option<&Path>) -> Result<Self, MediaError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Config files end with a newline; minijinja drops the template's last one by default.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .map_err(|source| template_error("(syntax)", source))?;
        env.set_syntax(syntax);
        for (name, built_in) in BUILT_IN {
            let source = match dir.map(|d| d.join(name)) {
                Some(path) if path.exists() => {
                    std::fs::read_to_string(&path).map_err(|source| MediaError::Input {
                        what: "template",
                        path,
                        source,
                    })?
                }
                _ => built_in.to_owned(),
            };
            env.add_template_owned(name, source)
                .map_err(|source| template_error(name, source))?;
        }
        Ok(Self { env })
    }

    pub(crate) fn isolinux_cfg(&self, ctx: &BootContext<'_>) -> Result<String, MediaError> {
        self.render(ISOLINUX, ctx)
    }

    pub(crate) fn grub_cfg(&self, ctx: &BootContext<'_>) -> Result<String, MediaError> {
        self.render(GRUB, ctx)
    }

    fn render(&self, name: &str, ctx: &BootContext<'_>) -> Result<String, MediaError> {
        self.env
            .get_template(name)
            .and_then(|t| {
                t.render(minijinja::context! {
                    kernel => ctx.kernel,
                    ramdisk => ctx.ramdisk,
                    cmdline => ctx.cmdline,
                    grub_args => ctx.grub_args,
                    timeout => ctx.timeout,
                })
            })
            .map_err(|source| template_error(name, source))
    }
}

fn template_error(name: &str, source: minijinja::Error) -> MediaError {
    MediaError::Template {
        name: name.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(timeout: u32) -> BootContext<'static> {
        BootContext {
            kernel: "/vmlinuz",
            ramdisk: "/initrd",
            cmdline: "console=ttyS0 a=b;c",
            grub_args: "console=ttyS0 'a=b;c'",
            timeout,
        }
    }

    #[test]
    fn isolinux_boots_at_once_or_after_the_timeout() {
        let t = Templates::load(None).unwrap();
        let now = t.isolinux_cfg(&ctx(0)).unwrap();
        assert!(now.contains("DEFAULT ironboot\nPROMPT 0\n"), "{now}");
        assert!(
            now.contains("  KERNEL /vmlinuz\n  INITRD /initrd\n  APPEND console=ttyS0 a=b;c\n")
        );
        assert!(!now.contains("TIMEOUT"));
        let later = t.isolinux_cfg(&ctx(5)).unwrap();
        assert!(later.contains("PROMPT 1\nTIMEOUT 50\n"), "{later}");
    }

    #[test]
    fn grub_cfg_uses_quoted_args_and_finds_the_iso() {
        let cfg = Templates::load(None).unwrap().grub_cfg(&ctx(0)).unwrap();
        assert!(cfg.contains("set timeout=0\n"));
        assert!(
            cfg.contains("  linux /vmlinuz console=ttyS0 'a=b;c'\n  initrd /initrd\n"),
            "{cfg}"
        );
        assert!(cfg.contains(r#"if [ -e "($ironboot_disk)/vmlinuz" ]; then"#));
        assert!(cfg.ends_with("}\n"));
    }

    #[test]
    fn template_dir_overrides_and_bad_templates_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(GRUB), "custom {{ kernel }}\n").unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        assert_eq!(t.grub_cfg(&ctx(0)).unwrap(), "custom /vmlinuz\n");
        assert!(t.isolinux_cfg(&ctx(0)).unwrap().contains("LABEL ironboot"));

        std::fs::write(dir.path().join(ISOLINUX), "{% if %}").unwrap();
        assert!(matches!(
            Templates::load(Some(dir.path())),
            Err(MediaError::Template { .. })
        ));
        std::fs::write(dir.path().join(ISOLINUX), "{{ no_such_variable }}").unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        assert!(t.isolinux_cfg(&ctx(0)).is_err());
    }
}
