//! The HTTP client for a BMC, by how its certificate is checked (`redfish_verify_ca`), and
//! the words for a refused certificate.
//!
//! Clients are shared by every BMC with the same verification (connection pools included);
//! one with a CA bundle is keyed by the bundle's content, so an edited bundle takes effect.

use reqwest::{Certificate, Client};
use sha2::{Digest, Sha256};
use std::error::Error as _;

use super::driver_info::VerifyCa;
use super::error::RedfishError;
use super::settings::RedfishSettings;

/// Redirects followed per call; only to the same host (a session token must not travel).
const MAX_REDIRECTS: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ClientKey {
    System,
    Disabled,
    /// SHA-256 of the bundle's certificates.
    Bundle([u8; 32]),
}

/// What a client is built from: the key, and the certificates of a bundle.
pub(crate) struct Trust {
    pub key: ClientKey,
    certs: Vec<Certificate>,
}

impl Trust {
    /// Reads the CA bundle, if any. A directory contributes every PEM file in it.
    pub fn load(verify: &VerifyCa) -> Result<Trust, RedfishError> {
        let path = match verify {
            VerifyCa::System => {
                return Ok(Trust {
                    key: ClientKey::System,
                    certs: Vec::new(),
                });
            }
            VerifyCa::Disabled => {
                return Ok(Trust {
                    key: ClientKey::Disabled,
                    certs: Vec::new(),
                });
            }
            VerifyCa::Bundle(path) => path,
        };
        let io = |source| RedfishError::CaBundle {
            path: path.clone(),
            source,
        };
        let mut files = Vec::new();
        if path.is_dir() {
            for entry in std::fs::read_dir(path).map_err(io)? {
                let p = entry.map_err(io)?.path();
                if p.is_file() {
                    files.push(p);
                }
            }
            files.sort();
        } else {
            files.push(path.clone());
        }
        let mut hash = Sha256::new();
        let mut certs = Vec::new();
        for file in &files {
            let pem = std::fs::read(file).map_err(io)?;
            // A directory may hold other files (hash links to the same PEMs, READMEs).
            if let Ok(found) = Certificate::from_pem_bundle(&pem)
                && !found.is_empty()
            {
                hash.update(&pem);
                certs.extend(found);
            }
        }
        if certs.is_empty() {
            return Err(RedfishError::DriverInfo {
                key: super::driver_info::VERIFY_CA,
                value: path.display().to_string(),
                reason: "holds no PEM certificate".into(),
            });
        }
        Ok(Trust {
            key: ClientKey::Bundle(hash.finalize().into()),
            certs,
        })
    }

    pub fn build(self, settings: &RedfishSettings, bmc: &str) -> Result<Client, RedfishError> {
        // reqwest is built without a default crypto provider; ring is this crate's choice, and
        // installing it again is harmless (the first one stays).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let redirect = reqwest::redirect::Policy::custom(|attempt| {
            let same_host = attempt
                .previous()
                .first()
                .is_some_and(|first| first.host_str() == attempt.url().host_str());
            if same_host && attempt.previous().len() <= MAX_REDIRECTS {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        let mut builder = Client::builder()
            .connect_timeout(settings.connect_timeout())
            .timeout(settings.request_timeout())
            .redirect(redirect)
            .user_agent(concat!("ironboot/", env!("CARGO_PKG_VERSION")));
        builder = match self.key {
            ClientKey::System => builder,
            ClientKey::Disabled => builder.tls_danger_accept_invalid_certs(true),
            ClientKey::Bundle(_) => builder.tls_certs_only(self.certs),
        };
        builder.build().map_err(|source| RedfishError::Client {
            bmc: bmc.to_string(),
            source,
        })
    }
}

/// What is wrong with the certificate, when `err` is a refused certificate.
pub(crate) fn certificate_problem(err: &reqwest::Error) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(e) = cur {
        if let Some(rustls::Error::InvalidCertificate(ce)) = find_rustls(e) {
            return Some(describe(ce));
        }
        cur = e.source();
    }
    None
}

/// The rustls error in `e`, looking through io::Errors: they wrap it (sometimes twice) and
/// their `source()` skips what they wrap.
fn find_rustls<'a>(mut e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    for _ in 0..8 {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
        e = inner;
    }
    None
}

fn describe(ce: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match ce {
        C::UnknownIssuer => "it is not signed by a CA this conductor trusts".into(),
        C::NotValidForName => "it is not valid for the host name in redfish_address".into(),
        C::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "it is not valid for {expected:?} from redfish_address; it names {}",
            if presented.is_empty() {
                "nothing".to_string()
            } else {
                presented.join(", ")
            }
        ),
        C::Expired | C::ExpiredContext { .. } => "it has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "it is not valid yet".into(),
        C::BadSignature => "its signature does not verify".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn digest_of(path: &Path) -> ClientKey {
        Trust::load(&VerifyCa::Bundle(path.to_path_buf()))
            .map(|t| t.key)
            .unwrap_or(ClientKey::Disabled)
    }

    /// A PEM block around arbitrary bytes: enough for bundle loading, which does not parse
    /// the DER (the TLS handshake does).
    fn pem(seed: u8) -> String {
        use base64::Engine;
        let der: Vec<u8> = (0..200u16).map(|i| (i as u8).wrapping_mul(seed)).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn bundles_are_keyed_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, pem(3)).unwrap();
        let first = digest_of(&file);
        assert!(matches!(first, ClientKey::Bundle(_)));
        // A directory with the same PEM and a stray file gives the same key.
        std::fs::write(dir.path().join("README"), "not a certificate").unwrap();
        assert_eq!(digest_of(dir.path()), first);
        std::fs::write(&file, format!("{}{}", pem(3), pem(5))).unwrap();
        assert_ne!(digest_of(&file), first);
    }

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("empty.pem");
        std::fs::write(&file, "hello").unwrap();
        let e = Trust::load(&VerifyCa::Bundle(file.clone()))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("redfish_verify_ca"), "{e}");
        assert!(e.contains("holds no PEM certificate"), "{e}");
    }
}
