//! Swift temp URLs: `HMAC(key, "METHOD\nEXPIRES\nPATH")` in hex, where PATH is the object's
//! URL path (`/v1/<account>/<container>/<object>`, no host, no query). Swift's tempurl
//! middleware tells the digest from the hex length, so sha1, sha256 and sha512 need no prefix.

use hmac::{Hmac, KeyInit, Mac};
use reqwest::Url;

use crate::publish::settings::TempUrlDigest;

/// Hex HMAC of `method\nexpires\npath` with `key`.
pub fn signature(
    digest: TempUrlDigest,
    key: &[u8],
    method: &str,
    expires: i64,
    path: &str,
) -> String {
    let message = format!("{method}\n{expires}\n{path}");
    match digest {
        TempUrlDigest::Sha1 => hmac_hex::<sha1::Sha1>(key, message.as_bytes()),
        TempUrlDigest::Sha256 => hmac_hex::<sha2::Sha256>(key, message.as_bytes()),
        TempUrlDigest::Sha512 => hmac_hex::<sha2::Sha512>(key, message.as_bytes()),
    }
}

fn hmac_hex<D>(key: &[u8], message: &[u8]) -> String
where
    D: hmac::EagerHash,
    Hmac<D>: KeyInit + Mac,
{
    // HMAC takes keys of any length (long ones are hashed), so this cannot fail.
    let mut mac = <Hmac<D> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// A GET temp URL for `object_url` (the object's full URL), valid until `expires` (Unix
/// seconds), with `filename=<filename>` appended: some BMCs insist that a media URL ends like
/// a file name, and Swift then also sends a matching Content-Disposition.
pub fn temp_url(
    object_url: &Url,
    key: &[u8],
    digest: TempUrlDigest,
    expires: i64,
    filename: &str,
) -> String {
    let sig = signature(digest, key, "GET", expires, object_url.path());
    let mut url = object_url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.query_pairs_mut()
        .append_pair("temp_url_sig", &sig)
        .append_pair("temp_url_expires", &expires.to_string())
        .append_pair("filename", filename);
    url.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str =
        "/v1/AUTH_test/ironboot_vmedia/boot-1be26c0b-03f2-4d2e-ae87-c02d7f33c123.iso";

    // Expected values computed independently with Python's hmac module:
    //   python3 -c 'import hmac,hashlib
    //   m=b"GET\n1700000000\n/v1/AUTH_test/ironboot_vmedia/boot-1be26c0b-03f2-4d2e-ae87-c02d7f33c123.iso"
    //   for d in ("sha1","sha256","sha512"): print(d, hmac.new(b"secretkey", m, d).hexdigest())'
    const SHA1: &str = "8f4a88e7d2c0c05061e2a0e2a4c997d0b1a10c6b";
    const SHA256: &str = "419aa0b41ed54775a5a8c71de60ec6f6f1f239e6f1f8ac16961deae24c42b675";
    const SHA512: &str = "ce307a3b19567f2d8307812d272c12b58e01ac3b6c0e53dea73872c6a43695e16ab0697b93c487dc0f1d0c581342622b56bd1ed51a162c6e7098ee1b39ea47db";

    #[test]
    fn signature_matches_python_hmac() {
        for (digest, want) in [
            (TempUrlDigest::Sha1, SHA1),
            (TempUrlDigest::Sha256, SHA256),
            (TempUrlDigest::Sha512, SHA512),
        ] {
            assert_eq!(
                signature(digest, b"secretkey", "GET", 1_700_000_000, PATH),
                want,
                "{digest:?}"
            );
        }
    }

    /// Recomputes a fresh vector with python3 when it is installed, so the check does not
    /// rest on constants alone.
    #[test]
    fn signature_matches_python_hmac_live() {
        let key = "k\u{e9}y with spaces";
        let path = "/v1/AUTH_0123abcd/c/configdrive-x";
        let script = format!(
            "import hmac,hashlib,sys; print(hmac.new({key:?}.encode(), b'GET\\n1234567890\\n{path}', hashlib.sha512).hexdigest())"
        );
        let out = match std::process::Command::new("python3")
            .args(["-c", &script])
            .output()
        {
            Ok(out) if out.status.success() => out,
            _ => {
                eprintln!(
                    "python3 not available: live HMAC vector skipped (constants still checked)"
                );
                return;
            }
        };
        let want = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            signature(
                TempUrlDigest::Sha512,
                key.as_bytes(),
                "GET",
                1_234_567_890,
                path
            ),
            want.trim()
        );
    }

    #[test]
    fn url_carries_signature_expiry_and_filename() {
        let object = Url::parse(&format!("http://127.0.0.1:8080{PATH}")).unwrap();
        let url = temp_url(
            &object,
            b"secretkey",
            TempUrlDigest::Sha256,
            1_700_000_000,
            "boot.iso",
        );
        assert_eq!(
            url,
            format!(
                "http://127.0.0.1:8080{PATH}?temp_url_sig={SHA256}&temp_url_expires=1700000000&filename=boot.iso"
            )
        );
    }
}
