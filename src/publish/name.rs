//! Names of published objects. A name is one path segment of safe characters, so it can be
//! joined to a directory or a URL without escaping and can never leave the publish subdir.

use std::fmt;

use uuid::Uuid;

use super::error::PublishError;

/// Longest accepted name: URLs stay short because some BMCs reject long ones.
const MAX_NAME_LEN: usize = 128;

/// A validated object name such as `boot-<node uuid>.iso`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectName(String);

impl ObjectName {
    /// Accepts ASCII letters, digits, `.`, `_` and `-`, starting with a letter or digit.
    pub fn new(name: &str) -> Result<Self, PublishError> {
        check_segment(name, MAX_NAME_LEN).map_err(|reason| PublishError::InvalidName {
            name: name.to_string(),
            reason,
        })?;
        Ok(Self(name.to_string()))
    }

    /// The boot (or deploy/rescue) ISO of a node: `boot-<uuid>.iso`.
    pub fn boot_iso(node: Uuid) -> Self {
        Self(format!("boot-{node}.iso"))
    }

    /// The virtual floppy of a node: `image-<uuid>.img`.
    pub fn floppy(node: Uuid) -> Self {
        Self(format!("image-{node}.img"))
    }

    /// The config drive of a node: `configdrive-<uuid>`.
    pub fn configdrive(node: Uuid) -> Self {
        Self(format!("configdrive-{node}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A subdir is empty (publish at the root) or `/`-separated segments obeying the name rules.
pub(crate) fn validate_subdir(subdir: &str) -> Result<(), String> {
    if subdir.is_empty() {
        return Ok(());
    }
    for segment in subdir.split('/') {
        check_segment(segment, MAX_NAME_LEN)
            .map_err(|reason| format!("segment {segment:?} {reason}"))?;
    }
    Ok(())
}

/// One path segment that needs no escaping in a path or URL and cannot leave its directory.
pub(crate) fn check_segment(s: &str, max_len: usize) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > max_len {
        return Err("is empty or too long");
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("must start with a letter or digit");
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("may contain only ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_follow_ironic() {
        let u = Uuid::parse_str("1be26c0b-03f2-4d2e-ae87-c02d7f33c123").unwrap();
        assert_eq!(
            ObjectName::boot_iso(u).as_str(),
            "boot-1be26c0b-03f2-4d2e-ae87-c02d7f33c123.iso"
        );
        assert_eq!(
            ObjectName::floppy(u).as_str(),
            "image-1be26c0b-03f2-4d2e-ae87-c02d7f33c123.img"
        );
        assert_eq!(
            ObjectName::configdrive(u).as_str(),
            "configdrive-1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
        );
        for n in [ObjectName::boot_iso(u), ObjectName::floppy(u)] {
            assert_eq!(ObjectName::new(n.as_str()).unwrap(), n);
        }
    }

    #[test]
    fn escaping_names_are_refused() {
        for bad in [
            "", "..", ".hidden", "a/b", "../x", "a\\b", "a b", "a?b", "a%2fb", "é.iso", "-x",
        ] {
            let err = ObjectName::new(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        assert!(ObjectName::new(&"a".repeat(129)).is_err());
        assert!(ObjectName::new(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn subdirs() {
        assert!(validate_subdir("").is_ok());
        assert!(validate_subdir("redfish").is_ok());
        assert!(validate_subdir("vmedia/v1").is_ok());
        for bad in ["/abs", "a//b", "a/..", "..", "a/", "x y"] {
            assert!(validate_subdir(bad).is_err(), "{bad}");
        }
    }
}
