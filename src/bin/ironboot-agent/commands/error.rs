//! IPA's error shapes. A failed command carries `command_error` = `{type, code, message,
//! details}` (the class name, its HTTP code, the class's fixed summary, the specifics); an
//! error raised before a command is recorded becomes the HTTP answer
//! `{"faultcode": "Client"|"Server", "faultstring": "<message>: <details>"}`.

use serde_json::{Value, json};

/// One IPA `RESTError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}: {details}")]
pub struct RestError {
    /// IPA's exception class name (`ImageChecksumError`).
    pub kind: &'static str,
    pub code: u16,
    pub message: &'static str,
    pub details: String,
}

fn e(
    kind: &'static str,
    code: u16,
    message: &'static str,
    details: impl Into<String>,
) -> RestError {
    RestError {
        kind,
        code,
        message,
        details: details.into(),
    }
}

impl RestError {
    pub fn invalid_params(d: impl Into<String>) -> Self {
        e(
            "InvalidCommandParamsError",
            400,
            "Invalid command parameters",
            d,
        )
    }

    pub fn invalid_command(d: impl Into<String>) -> Self {
        e("InvalidCommandError", 400, "Invalid command", d)
    }

    pub fn extension_not_found(ext: &str) -> Self {
        e(
            "RequestedObjectNotFoundError",
            404,
            "Not found",
            format!("Extension with id {ext} not found."),
        )
    }

    pub fn busy(command: &str) -> Self {
        e(
            "AgentIsBusy",
            409,
            "Agent is busy",
            format!("executing command {command}"),
        )
    }

    pub fn execution(d: impl Into<String>) -> Self {
        e("CommandExecutionError", 500, "Command execution failed", d)
    }

    pub fn image_download(image_id: &str, msg: impl std::fmt::Display) -> Self {
        e(
            "ImageDownloadError",
            500,
            "Error downloading image",
            format!("Download of image {image_id} failed: {msg}"),
        )
    }

    pub fn image_checksum(image_id: &str, location: &str, expected: &str, got: &str) -> Self {
        e(
            "ImageChecksumError",
            500,
            "Error verifying image checksum",
            format!(
                "Image failed to verify against checksum. location: {location}; image ID: \
                 {image_id}; image checksum: {expected}; verification checksum: {got}"
            ),
        )
    }

    pub fn image_write(device: &str, d: impl std::fmt::Display) -> Self {
        e(
            "ImageWriteError",
            500,
            "Error writing image to device",
            format!("Writing image to device {device} failed: {d}"),
        )
    }

    pub fn invalid_image(d: impl Into<String>) -> Self {
        e(
            "InvalidImage",
            500,
            "The provided image is not valid for use",
            d,
        )
    }

    pub fn device_not_found(d: impl Into<String>) -> Self {
        e(
            "DeviceNotFound",
            404,
            "Error finding the disk or partition device to deploy the image onto",
            d,
        )
    }

    pub fn block_device_erase(d: impl Into<String>) -> Self {
        e(
            "BlockDeviceEraseError",
            500,
            "Error erasing block device",
            d,
        )
    }

    pub fn cleaning(d: impl Into<String>) -> Self {
        e("CleaningError", 500, "Clean step failed", d)
    }

    pub fn deployment(d: impl Into<String>) -> Self {
        e("DeploymentError", 500, "Deploy step failed", d)
    }

    pub fn method_not_found(method: &str) -> Self {
        e(
            "HardwareManagerMethodNotFound",
            500,
            "No HardwareManager found to handle method",
            format!("Could not find method: {method}"),
        )
    }

    pub fn incompatible_hardware(d: impl Into<String>) -> Self {
        e(
            "IncompatibleHardwareMethodError",
            500,
            "HardwareManager method is not compatible with hardware",
            d,
        )
    }

    pub fn version_mismatch(agent: &Value, node: &Value) -> Self {
        e(
            "VersionMismatch",
            409,
            "Hardware managers version mismatch, reload agent with correct version",
            format!("Current versions: {agent}, versions used by ironic: {node}"),
        )
    }

    /// `command_error` of a failed command.
    pub fn to_json(&self) -> Value {
        json!({"type": self.kind, "code": self.code, "message": self.message,
               "details": self.details})
    }

    /// The HTTP body when the error is the answer to a request.
    pub fn fault(&self) -> Value {
        fault(self.code, &self.to_string())
    }
}

/// `{"faultcode", "faultstring"}`: Server for 5xx, Client otherwise.
pub fn fault(code: u16, text: &str) -> Value {
    json!({"faultcode": if code >= 500 { "Server" } else { "Client" }, "faultstring": text})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_ipa() {
        let b = RestError::busy("execute_deploy_step");
        assert_eq!(
            b.fault(),
            json!({"faultcode": "Client",
                   "faultstring": "Agent is busy: executing command execute_deploy_step"})
        );
        let c = RestError::image_checksum("img", "http://x/i", "ab", "cd").to_json();
        assert_eq!(c["type"], "ImageChecksumError");
        assert_eq!(c["code"], 500);
        assert!(
            c["details"]
                .as_str()
                .unwrap()
                .contains("image checksum: ab")
        );
        assert_eq!(RestError::execution("x").fault()["faultcode"], "Server");
    }
}
