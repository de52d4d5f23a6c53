//! TLS. Auto-TLS as IPA does it: a self-signed ECDSA P-384 certificate made at start (SAN =
//! the advertised IP, CN = the host name), served on the command API and handed to the
//! conductor in every heartbeat (`agent_verify_ca`), which pins exactly that certificate.
//! And the client side for the conductor's API and image servers: the CA bundle of the
//! ramdisk (`/etc/ssl/certs/ca-certificates.crt`), or no verification with `ipa-insecure`.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Where the ramdisk keeps trusted CAs (Debian's path).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot generate the auto-TLS certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot build the TLS server configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The agent's certificate and the server configuration that presents it.
pub struct AutoTls {
    pub pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h != "(none)")
        .unwrap_or_else(|| "ironboot-agent".into())
}

/// Makes the certificate for `ip` (the address the conductor calls back).
pub fn auto_tls(ip: IpAddr) -> Result<AutoTls, TlsError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, host_name());
    params.subject_alt_names = vec![rcgen::SanType::IpAddress(ip)];
    let cert = params.self_signed(&key)?;
    let pem = cert.pem();
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der)?;
    Ok(AutoTls {
        pem,
        server: Arc::new(server),
    })
}

/// Accepts any certificate but still checks the handshake signatures (`ipa-insecure`).
#[derive(Debug)]
struct Insecure(Arc<CryptoProvider>);

impl ServerCertVerifier for Insecure {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client configuration for https URLs.
pub fn client_config(insecure: bool) -> rustls::ClientConfig {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        // Invariant: the ring provider supports the safe default protocol versions.
        .unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3"));
    if insecure {
        return builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Insecure(provider)))
            .with_no_client_auth();
    }
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(certs) = CertificateDer::pem_file_iter(CA_BUNDLE) {
        let (added, ignored) = roots.add_parsable_certificates(certs.filter_map(Result::ok));
        tracing::debug!(added, ignored, bundle = CA_BUNDLE, "trusted CAs loaded");
    }
    builder.with_root_certificates(roots).with_no_client_auth()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_names_the_ip_and_pins_with_ironboots_verifier() {
        let t = auto_tls("10.0.2.15".parse().unwrap()).unwrap();
        assert!(t.pem.starts_with("-----BEGIN CERTIFICATE-----"));
        // The conductor's client accepts it as a pin.
        ironboot::agent::tls::pinned_client_config(&t.pem).unwrap();
        let der = ironboot::agent::tls::parse_pem(&t.pem).unwrap();
        let ip = [10u8, 0, 2, 15];
        assert!(der.windows(4).any(|w| w == ip), "IP SAN missing");
    }
}
