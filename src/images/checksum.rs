//! Checksums: which one a request asks for, checksum files, and hashing while streaming.
//!
//! Precedence follows Ironic: `os_hash_algo`/`os_hash_value` win over `checksum`; `algo:value`
//! names its algorithm; a bare value's algorithm is inferred from its length (128 hex digits
//! sha512, 64 sha256, 32 md5 when allowed); a checksum that is a URL points to a SHA256SUMS-style
//! file searched for the image's file name.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use super::error::{ImageError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algo {
    Md5,
    Sha256,
    Sha512,
}

impl Algo {
    pub fn name(self) -> &'static str {
        match self {
            Algo::Md5 => "md5",
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algo::Md5 => 32,
            Algo::Sha256 => 64,
            Algo::Sha512 => 128,
        }
    }
}

impl fmt::Display for Algo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "md5" => Ok(Algo::Md5),
            "sha256" => Ok(Algo::Sha256),
            "sha512" => Ok(Algo::Sha512),
            other => Err(format!("unsupported checksum algorithm {other:?}")),
        }
    }
}

/// A checksum a download must match: algorithm and lowercase hex digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub algo: Algo,
    pub hex: String,
}

/// What a request says about checksums, before any checksum file is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChecksumSpec {
    None,
    Value(Expected),
    /// URL of a checksums file to search for the image's file name.
    File(String),
}

impl ChecksumSpec {
    /// Chooses the checksum from `image_checksum` and `os_hash_algo`/`os_hash_value`.
    pub fn from_request(
        checksum: Option<&str>,
        os_hash_algo: Option<&str>,
        os_hash_value: Option<&str>,
        allow_md5: bool,
    ) -> Result<Self> {
        if let (Some(algo), Some(value)) = (os_hash_algo, os_hash_value)
            && !value.trim().is_empty()
        {
            let algo = algo.parse().map_err(|reason| ImageError::InvalidChecksum {
                value: format!("{algo}:{value}"),
                reason,
            })?;
            return Ok(ChecksumSpec::Value(expected(algo, value, allow_md5)?));
        }
        let Some(raw) = checksum.map(str::trim).filter(|c| !c.is_empty()) else {
            return Ok(ChecksumSpec::None);
        };
        if ["http://", "https://", "file://"]
            .iter()
            .any(|p| raw.starts_with(p))
        {
            return Ok(ChecksumSpec::File(raw.to_string()));
        }
        parse_value(raw, allow_md5).map(ChecksumSpec::Value)
    }
}

/// Parses `algo:value` or a bare hex value whose algorithm follows from its length.
pub fn parse_value(raw: &str, allow_md5: bool) -> Result<Expected> {
    if let Some((algo, value)) = raw.split_once(':') {
        let algo = algo.parse().map_err(|reason| ImageError::InvalidChecksum {
            value: raw.to_string(),
            reason,
        })?;
        return expected(algo, value, allow_md5);
    }
    let algo = match raw.len() {
        128 => Algo::Sha512,
        64 => Algo::Sha256,
        _ => Algo::Md5,
    };
    expected(algo, raw, allow_md5)
}

fn expected(algo: Algo, value: &str, allow_md5: bool) -> Result<Expected> {
    let hex = value.trim().to_ascii_lowercase();
    let bad = |reason: String| ImageError::InvalidChecksum {
        value: format!("{algo}:{value}"),
        reason,
    };
    if algo == Algo::Md5 && !allow_md5 {
        return Err(bad(
            "md5 checksums are disabled (allow_md5_checksum = false)".into(),
        ));
    }
    if hex.len() != algo.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!(
            "{algo} needs {} hex digits, got {} characters",
            algo.hex_len(),
            hex.len()
        )));
    }
    Ok(Expected { algo, hex })
}

/// Finds the checksum for `file_name` in a checksums file.
///
/// Accepts GNU lines (`HEX  name`, `HEX *name`), BSD lines (`SHA256 (name) = HEX`) and a file
/// holding nothing but one digest.
pub fn find_in_checksum_file(
    text: &str,
    file_name: &str,
    url: &str,
    allow_md5: bool,
) -> Result<Expected> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if let [only] = lines.as_slice()
        && !only.contains(char::is_whitespace)
    {
        return parse_value(only, allow_md5);
    }
    for line in lines {
        if let Some((head, hex)) = line.rsplit_once(" = ")
            && let Some((algo, rest)) = head.split_once(" (")
            && rest.strip_suffix(')') == Some(file_name)
        {
            let algo: Algo = algo.parse().map_err(|reason| ImageError::InvalidChecksum {
                value: line.to_string(),
                reason,
            })?;
            return expected(algo, hex, allow_md5);
        }
        if let Some((hex, name)) = line.split_once(char::is_whitespace) {
            let name = name.trim_start();
            let name = name.strip_prefix('*').unwrap_or(name);
            let name = name.strip_prefix("./").unwrap_or(name);
            if name == file_name {
                return parse_value(hex, allow_md5);
            }
        }
    }
    Err(ImageError::ChecksumFileEntry {
        url: url.to_string(),
        file_name: file_name.to_string(),
    })
}

/// Hashes a stream with sha256 (always: it is what agents are told to verify) plus whatever
/// else the request asked for.
pub struct MultiHasher {
    sha256: Sha256,
    md5: Option<Md5>,
    sha512: Option<Sha512>,
}

impl MultiHasher {
    pub fn new(extra: Option<Algo>) -> Self {
        Self {
            sha256: Sha256::new(),
            md5: (extra == Some(Algo::Md5)).then(Md5::new),
            sha512: (extra == Some(Algo::Sha512)).then(Sha512::new),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        if let Some(h) = &mut self.md5 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha512 {
            h.update(data);
        }
    }

    pub fn finish(self) -> BTreeMap<Algo, String> {
        let mut out = BTreeMap::new();
        out.insert(Algo::Sha256, hex::encode(self.sha256.finalize()));
        if let Some(h) = self.md5 {
            out.insert(Algo::Md5, hex::encode(h.finalize()));
        }
        if let Some(h) = self.sha512 {
            out.insert(Algo::Sha512, hex::encode(h.finalize()));
        }
        out
    }
}

/// Hashes a whole file (blocking; call from `spawn_blocking`).
pub fn hash_file(
    path: &std::path::Path,
    extra: Option<Algo>,
) -> std::io::Result<BTreeMap<Algo, String>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = MultiHasher::new(extra);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA256_ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn precedence_and_inference() {
        let md5 = "900150983cd24fb0d6963f7d28e17f72";
        let spec =
            ChecksumSpec::from_request(Some(md5), Some("sha256"), Some(SHA256_ABC), true).unwrap();
        assert_eq!(
            spec,
            ChecksumSpec::Value(Expected {
                algo: Algo::Sha256,
                hex: SHA256_ABC.into()
            })
        );
        let ChecksumSpec::Value(e) =
            ChecksumSpec::from_request(Some(md5), None, None, true).unwrap()
        else {
            panic!()
        };
        assert_eq!(e.algo, Algo::Md5);
        assert!(ChecksumSpec::from_request(Some(md5), None, None, false).is_err());
        let e = parse_value(&format!("SHA256:{}", SHA256_ABC.to_uppercase()), true).unwrap();
        assert_eq!(e.hex, SHA256_ABC);
        assert_eq!(
            parse_value(&"a".repeat(128), true).unwrap().algo,
            Algo::Sha512
        );
        assert!(parse_value("sha256:abcd", true).is_err());
        assert!(parse_value("crc32:abcd", true).is_err());
        assert_eq!(
            ChecksumSpec::from_request(Some("https://h/SHA256SUMS"), None, None, true).unwrap(),
            ChecksumSpec::File("https://h/SHA256SUMS".into())
        );
        assert_eq!(
            ChecksumSpec::from_request(None, None, None, true).unwrap(),
            ChecksumSpec::None
        );
    }

    #[test]
    fn checksum_files() {
        let gnu = format!(
            "# comment\n{}  other.img\n{SHA256_ABC} *disk.qcow2\n",
            "0".repeat(64)
        );
        assert_eq!(
            find_in_checksum_file(&gnu, "disk.qcow2", "u", true)
                .unwrap()
                .hex,
            SHA256_ABC
        );
        let bsd = format!("SHA256 (disk.qcow2) = {SHA256_ABC}\n");
        assert_eq!(
            find_in_checksum_file(&bsd, "disk.qcow2", "u", true)
                .unwrap()
                .algo,
            Algo::Sha256
        );
        assert_eq!(
            find_in_checksum_file(SHA256_ABC, "x", "u", true)
                .unwrap()
                .hex,
            SHA256_ABC
        );
        let e = find_in_checksum_file(&gnu, "missing.img", "http://h/SUMS", true).unwrap_err();
        assert!(e.to_string().contains("missing.img") && e.to_string().contains("http://h/SUMS"));
    }

    #[test]
    fn hasher_computes_requested() {
        let mut h = MultiHasher::new(Some(Algo::Md5));
        h.update(b"a");
        h.update(b"bc");
        let d = h.finish();
        assert_eq!(d[&Algo::Sha256], SHA256_ABC);
        assert_eq!(d[&Algo::Md5], "900150983cd24fb0d6963f7d28e17f72");
        assert!(!d.contains_key(&Algo::Sha512));
    }
}
