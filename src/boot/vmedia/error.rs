//! Why a virtual media operation failed, each naming the step, the input and what to do.
//! Published URLs appear without their query (a Swift temp URL's signature grants access).

use std::path::PathBuf;

use crate::bmc::redfish::Advised;
use crate::images::ImageError;
use crate::media::MediaError;
use crate::publish::PublishError;

#[derive(Debug, thiserror::Error)]
pub enum VmediaError {
    #[error("{step}: {source}")]
    Bmc {
        step: &'static str,
        #[source]
        source: Advised,
    },
    #[error(
        "the BMC could not insert {what} from {url}: {source}; the BMC must be able to fetch \
         that URL: check that it reaches this conductor's HTTP server ([deploy] http_url, or \
         external_http_url for BMCs on another network) or Swift"
    )]
    Insert {
        what: &'static str,
        /// Without its query.
        url: String,
        #[source]
        source: Advised,
    },
    #[error(
        "BMC {bmc}: after inserting {what}, slot {slot} reports image {image:?} (inserted: \
         {inserted:?}) instead of {url}; the BMC did not take the medium"
    )]
    NotHeld {
        bmc: String,
        what: &'static str,
        slot: String,
        url: String,
        image: Option<String>,
        inserted: Option<bool>,
    },
    #[error("cannot fetch {what} {href}: {source}")]
    Fetch {
        what: &'static str,
        href: String,
        /// Boxed, as the other large causes: they would make every `Result` large.
        #[source]
        source: Box<ImageError>,
    },
    #[error("cannot build {what}: {source}")]
    Build {
        what: &'static str,
        #[source]
        source: MediaError,
    },
    #[error("cannot publish {what}: {source}")]
    Publish {
        what: &'static str,
        #[source]
        source: PublishError,
    },
    #[error("cannot unpublish {name}: {source}")]
    Unpublish {
        name: String,
        #[source]
        source: PublishError,
    },
    #[error("cannot prepare the build directory {}: {source}", path.display())]
    WorkDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot put the agent's parameters on the kernel command line: {0}")]
    Params(#[source] crate::boot::BootFilesError),
    #[error(transparent)]
    Token(#[from] crate::agent::token::TokenError),
    #[error(transparent)]
    Name(#[from] super::record::NameError),
    #[error(
        "a partition image boots with root=UUID=<root uuid>, and no root uuid was recorded \
         (driver_internal_info.root_uuid_or_disk_id); deploy the node again"
    )]
    NoRootUuid,
    #[error(
        "the node's agent session has no token to rebuild its deploy media with; deploy the \
         node again"
    )]
    NoToken,
}

/// `url` without its query and fragment.
pub fn redact(url: &str) -> String {
    match url.find(['?', '#']) {
        Some(i) => format!("{}?…", &url[..i]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_url_signatures_stay_out_of_messages() {
        assert_eq!(
            redact("http://swift/v1/AUTH_t/c/deploy-x.iso?temp_url_sig=abc&temp_url_expires=1"),
            "http://swift/v1/AUTH_t/c/deploy-x.iso?…"
        );
        assert_eq!(redact("http://h/redfish/x.iso"), "http://h/redfish/x.iso");
    }
}
