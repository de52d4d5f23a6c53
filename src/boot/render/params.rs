//! Kernel parameters and the other node values a config may contain, checked against a
//! conservative character set before anything is rendered.

use crate::boot::BootFilesError;

/// Linux's command line limit on x86 and arm64 (COMMAND_LINE_SIZE).
pub(super) const MAX_CMDLINE: usize = 2048;
/// Longest image location (path or URL) accepted.
pub(super) const MAX_LOCATION: usize = 1024;

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

pub(super) fn param_len(p: &KernelParam) -> usize {
    p.key.len() + p.value.as_ref().map_or(0, |v| v.len() + 1)
}

/// Keys start with a letter or digit (a leading `-` would read as an option to iPXE's `kernel`)
/// and use letters, digits, `_`, `-`, `.` (`ipa-api-url`, `rd.shell`, `BOOTIF`).
pub(super) fn validate_param_key(field: &str, key: &str) -> Result<(), BootFilesError> {
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
pub(super) fn validate_param_value(
    field: &str,
    key: &str,
    value: &str,
) -> Result<(), BootFilesError> {
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
pub(super) const LOCATION_FORBIDDEN: &str = "\"'`\\$;|{}<>#^*[]()!";

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
pub(super) fn validate_root_uuid(value: &str) -> Result<(), BootFilesError> {
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
pub(super) fn validate_disk_id(value: &str) -> Result<(), BootFilesError> {
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
